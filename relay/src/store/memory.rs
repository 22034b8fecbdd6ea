//! An in-memory store: the same behaviour as SQLite without durability.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};

use ahash::RandomState;

use super::{IdentityBytes, MsgId, Store, StoreError, StoredBundle, StoredMessage, WriteOp, WriteResult};

/// Shards of the idempotency map. It holds every message id until the TTL, so it grows
/// to millions of entries under load; one map stops the store for a whole rehash (a
/// second at a few million entries, seen as latency spikes). Shards take unequal shares
/// of the ids (weights from 1 to 2), so they fill at different speeds and rehash at
/// different times, each 1/64 of the work.
const KNOWN_SHARDS: usize = 64;
/// Size of the table that maps a hash of an id to its shard.
const SHARD_TABLE: usize = 1024;

/// Where a stored (sender, id) went: (recipient, seq, timestamp). Keys are chosen by
/// clients, so the hasher is keyed (per process, at random) like std's, but faster.
type Known = HashMap<(IdentityBytes, MsgId), (IdentityBytes, u64, u64), RandomState>;

#[derive(Default)]
struct Prekeys {
    signed_prekey: [u8; 32],
    signature: Vec<u8>,
    one_time: VecDeque<[u8; 32]>,
}

/// Messages, acknowledged ids, prekeys and claims in memory.
pub struct MemoryStore {
    next_seq: u64,
    queues: HashMap<IdentityBytes, BTreeMap<u64, StoredMessage>, RandomState>,
    /// Every (sender, id) stored and not yet expired, acknowledged or not.
    known: Vec<Known>,
    /// Hash slot → shard, built with the shards.
    shard_of: Vec<u8>,
    prekeys: HashMap<IdentityBytes, Prekeys>,
    claims: HashMap<String, (IdentityBytes, Vec<u8>)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The shard of the idempotency map that holds `(sender, msg_id)`.
fn shard_of(table: &[u8], sender: &IdentityBytes, msg_id: &MsgId) -> usize {
    // FNV-1a over the id and the start of the sender.
    let hash = msg_id.iter().chain(&sender[..4]).fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    let slot = (hash ^ (hash >> 16)) as usize % SHARD_TABLE;
    usize::from(table[slot])
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        // Shard i gets a share of the table proportional to 64 + i.
        let total: usize = (0..KNOWN_SHARDS).map(|i| KNOWN_SHARDS + i).sum();
        let shard_of = (0..SHARD_TABLE)
            .map(|slot| {
                let mut upto = 0;
                (0..KNOWN_SHARDS)
                    .find(|&i| {
                        upto += (KNOWN_SHARDS + i) * SHARD_TABLE;
                        slot * total < upto
                    })
                    .unwrap_or(KNOWN_SHARDS - 1) as u8
            })
            .collect();
        Self {
            next_seq: 0,
            queues: HashMap::default(),
            known: (0..KNOWN_SHARDS).map(|_| Known::default()).collect(),
            shard_of,
            prekeys: HashMap::new(),
            claims: HashMap::new(),
        }
    }

    fn known(&mut self, sender: &IdentityBytes, msg_id: &MsgId) -> &mut Known {
        &mut self.known[shard_of(&self.shard_of, sender, msg_id)]
    }

    fn apply(&mut self, op: &WriteOp, quota: u64) -> WriteResult {
        match op {
            WriteOp::Append(m) => {
                let queue = self.queues.entry(m.recipient).or_default();
                let shard = &mut self.known[shard_of(&self.shard_of, &m.sender, &m.msg_id)];
                let Entry::Vacant(known) = shard.entry((m.sender, m.msg_id)) else {
                    return WriteResult::Duplicate;
                };
                if queue.len() as u64 >= quota {
                    return WriteResult::QuotaExceeded;
                }
                self.next_seq += 1;
                let seq = self.next_seq;
                known.insert((m.recipient, seq, m.timestamp_ms));
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
                WriteResult::Appended { seq }
            }
            WriteOp::Ack {
                recipient,
                sender,
                msg_id,
            } => match self.known(sender, msg_id).get(&(*sender, *msg_id)).copied() {
                Some((to, seq, _)) if to == *recipient => {
                    let removed = self
                        .queues
                        .get_mut(recipient)
                        .and_then(|q| q.remove(&seq))
                        .is_some();
                    WriteResult::Acked(removed)
                }
                _ => WriteResult::Acked(false),
            },
            WriteOp::Expire { before_ms } => {
                let mut expired = 0;
                for shard in &mut self.known {
                    shard.retain(|_, (recipient, seq, ts)| {
                        if *ts >= *before_ms {
                            return true;
                        }
                        if let Some(queue) = self.queues.get_mut(recipient) {
                            if queue.remove(seq).is_some() {
                                expired += 1;
                            }
                        }
                        false
                    });
                }
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
