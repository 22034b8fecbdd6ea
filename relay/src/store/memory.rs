//! An in-memory store: the same behaviour as SQLite without durability.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::{IdentityBytes, MsgId, Store, StoreError, StoredBundle, StoredMessage, WriteOp, WriteResult};

#[derive(Default)]
struct Prekeys {
    signed_prekey: [u8; 32],
    signature: Vec<u8>,
    one_time: VecDeque<[u8; 32]>,
}

/// Messages, acknowledged ids, prekeys and claims in memory.
#[derive(Default)]
pub struct MemoryStore {
    next_seq: u64,
    queues: HashMap<IdentityBytes, BTreeMap<u64, StoredMessage>>,
    /// Every (sender, id) stored and not yet expired, acknowledged or not.
    known: HashMap<(IdentityBytes, MsgId), (IdentityBytes, u64, u64)>,
    prekeys: HashMap<IdentityBytes, Prekeys>,
    claims: HashMap<String, (IdentityBytes, Vec<u8>)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn apply(&mut self, op: &WriteOp, quota: u64) -> WriteResult {
        match op {
            WriteOp::Append(m) => {
                if self.known.contains_key(&(m.sender, m.msg_id)) {
                    return WriteResult::Duplicate;
                }
                let queue = self.queues.entry(m.recipient).or_default();
                if queue.len() as u64 >= quota {
                    return WriteResult::QuotaExceeded;
                }
                self.next_seq += 1;
                let seq = self.next_seq;
                queue.insert(
                    seq,
                    StoredMessage {
                        seq,
                        sender: m.sender,
                        msg_id: m.msg_id,
                        timestamp_ms: m.timestamp_ms,
                        payload: m.payload.clone(),
                    },
                );
                self.known
                    .insert((m.sender, m.msg_id), (m.recipient, seq, m.timestamp_ms));
                WriteResult::Appended { seq }
            }
            WriteOp::Ack {
                recipient,
                sender,
                msg_id,
            } => match self.known.get(&(*sender, *msg_id)) {
                Some((to, seq, _)) if to == recipient => {
                    let removed = self
                        .queues
                        .get_mut(recipient)
                        .and_then(|q| q.remove(seq))
                        .is_some();
                    WriteResult::Acked(removed)
                }
                _ => WriteResult::Acked(false),
            },
            WriteOp::Expire { before_ms } => {
                let mut expired = 0;
                let mut dead = HashSet::new();
                for ((sender, id), (recipient, seq, ts)) in &self.known {
                    if ts < before_ms {
                        if let Some(queue) = self.queues.get_mut(recipient) {
                            if queue.remove(seq).is_some() {
                                expired += 1;
                            }
                        }
                        dead.insert((*sender, *id));
                    }
                }
                self.known.retain(|k, _| !dead.contains(k));
                self.queues.retain(|_, q| !q.is_empty());
                WriteResult::Expired(expired)
            }
        }
    }
}

impl Store for MemoryStore {
    fn commit(&mut self, ops: &[WriteOp], queue_quota: u64) -> Result<Vec<WriteResult>, StoreError> {
        Ok(ops.iter().map(|op| self.apply(op, queue_quota)).collect())
    }

    fn pending(
        &mut self,
        recipient: &IdentityBytes,
        after: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self
            .queues
            .get(recipient)
            .map(|q| {
                q.range(after.saturating_add(1)..)
                    .map(|(_, m)| m)
                    .filter(|m| m.timestamp_ms >= not_before_ms)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError> {
        Ok(self.queues.get(recipient).map_or(0, |q| q.len() as u64))
    }

    fn publish_prekeys(
        &mut self,
        owner: &IdentityBytes,
        signed_prekey: &[u8; 32],
        signature: &[u8],
        one_time: &[[u8; 32]],
        max_prekeys: u32,
    ) -> Result<u32, StoreError> {
        let entry = self.prekeys.entry(*owner).or_default();
        entry.signed_prekey = *signed_prekey;
        entry.signature = signature.to_vec();
        for opk in one_time {
            if entry.one_time.len() >= max_prekeys as usize {
                break;
            }
            if !entry.one_time.contains(opk) {
                entry.one_time.push_back(*opk);
            }
        }
        Ok(entry.one_time.len() as u32)
    }

    fn fetch_bundle(&mut self, owner: &IdentityBytes) -> Result<Option<StoredBundle>, StoreError> {
        Ok(self.prekeys.get_mut(owner).map(|p| {
            let one_time_prekey = p.one_time.pop_front();
            StoredBundle {
                signed_prekey: p.signed_prekey,
                signature: p.signature.clone(),
                one_time_prekey,
                remaining: p.one_time.len() as u32,
            }
        }))
    }

    fn prekey_count(&mut self, owner: &IdentityBytes) -> Result<Option<u32>, StoreError> {
        Ok(self.prekeys.get(owner).map(|p| p.one_time.len() as u32))
    }

    fn put_claim(&mut self, name: &str, owner: &IdentityBytes, claim: &[u8]) -> Result<bool, StoreError> {
        match self.claims.get(name) {
            Some((holder, _)) if holder != owner => Ok(false),
            _ => {
                self.claims.insert(name.to_owned(), (*owner, claim.to_vec()));
                Ok(true)
            }
        }
    }

    fn get_claim(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.claims.get(name).map(|(_, claim)| claim.clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_meets_the_store_contract() {
        super::super::contract::check(&mut super::MemoryStore::new());
    }
}
