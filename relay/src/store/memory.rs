//! An in-memory store: the same behaviour as SQLite without durability.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};

use e2ee_protocol::frame::ExpiredNotice;

use ahash::RandomState;

use super::group::{apply_group_write, GroupRecord, GroupResult, GroupTables, GROUP_LOG_KEPT};
use super::{
    release_of, stored_size, ClaimOutcome, IdentityBytes, MsgId, NewMessage, Quotas, ReleaseOutcome, Store,
    StoreError, StoredBundle, StoredMessage, TakenKeyPackage, Usage, WriteOp, WriteResult,
};
use crate::lease::Lease;

/// Shards of the idempotency maps. Acknowledged ids are kept until the TTL, so under
/// load they grow to millions of entries; one map stops the store for a whole rehash (a
/// second at a few million entries, seen as latency spikes). Shards take unequal shares
/// of the ids (weights from 1 to 2), so they fill at different speeds and rehash at
/// different times, each 1/64 of the work.
const KNOWN_SHARDS: usize = 64;
/// Size of the table that maps a hash of an id to its shard.
const SHARD_TABLE: usize = 1024;

/// Where a stored, unacknowledged (sender, id) went: (recipient, seq, timestamp). Keys
/// are chosen by clients, so the hasher is keyed (per process, at random) like std's,
/// but faster.
type Unacked = HashMap<(IdentityBytes, MsgId), (IdentityBytes, u64, u64), RandomState>;

/// An acknowledged (sender, id), remembered only to refuse it again: a 128-bit keyed
/// hash of it (keys random per process). Two different ids share one with a chance of
/// about n / 2^128 for n ids held; an entry is 32 bytes (with a keyed hash of the
/// recipient, to tell a reuse of the id for another recipient apart) against about 100
/// for the id with its routing, so the map that grows with traffic stays small and in
/// cache.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint(u64, u64);

impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Hashes a [`Fingerprint`] to its first half, which is already a keyed hash.
#[derive(Default, Clone, Copy)]
struct FirstHalf(u64);

impl std::hash::Hasher for FirstHalf {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; this keeps any other input well mixed all the same.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Acknowledged ids → the message's timestamp (for expiry) and a keyed hash of its
/// recipient.
type Acked = HashMap<Fingerprint, (u64, u64), std::hash::BuildHasherDefault<FirstHalf>>;

/// One shard of the idempotency maps.
#[derive(Default)]
struct Known {
    unacked: Unacked,
    acked: Acked,
}

/// A recipient's queue in storage order (sequence numbers only grow). Acknowledging
/// leaves a hole; holes at the front are dropped at once (clients acknowledge mostly in
/// order), the rest when they outnumber the messages held.
#[derive(Default)]
struct Queue {
    slots: VecDeque<(u64, Option<StoredMessage>)>,
    live: usize,
}

impl Queue {
    fn push(&mut self, message: StoredMessage) {
        self.slots.push_back((message.seq, Some(message)));
        self.live += 1;
    }

    /// Removes the message stored under `seq`; `None` if it is not held.
    fn remove(&mut self, seq: u64) -> Option<StoredMessage> {
        let i = self.slots.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        let removed = self.slots[i].1.take()?;
        self.live -= 1;
        while matches!(self.slots.front(), Some((_, None))) {
            self.slots.pop_front();
        }
        let holes = self.slots.len() - self.live;
        if holes > 64 && holes > self.live {
            self.slots.retain(|(_, m)| m.is_some());
        }
        Some(removed)
    }

    /// Messages with a larger sequence number than `after`, in order.
    fn after(&self, after: u64) -> impl Iterator<Item = &StoredMessage> {
        let start = match self.slots.binary_search_by_key(&after, |(s, _)| *s) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.slots.range(start..).filter_map(|(_, m)| m.as_ref())
    }

    fn len(&self) -> usize {
        self.live
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }
}

#[derive(Default)]
struct Prekeys {
    signed_prekey: [u8; 32],
    signature: Vec<u8>,
    one_time: VecDeque<[u8; 32]>,
}

/// A stored name claim.
struct Claim {
    owner: IdentityBytes,
    bytes: Vec<u8>,
    /// When it was stored (ms since the epoch).
    stored_ms: u64,
}

/// An identity that holds names.
#[derive(Default)]
struct Holder {
    /// Its names, the one stored last at the end.
    names: Vec<String>,
    /// Its last authentication while holding a name (ms since the epoch).
    last_auth_ms: Option<u64>,
}

/// One owner's KeyPackages: one-time ones, oldest first, and the last-resort one.
type KeyPackages = (VecDeque<Vec<u8>>, Option<Vec<u8>>);

/// Messages, acknowledged ids, prekeys and claims in memory.
pub struct MemoryStore {
    next_seq: u64,
    queues: HashMap<IdentityBytes, Queue, RandomState>,
    /// Every (sender, id) stored and not yet expired, acknowledged or not.
    known: Vec<Known>,
    /// The keys of [`Fingerprint`]s.
    fingerprint_keys: (RandomState, RandomState),
    /// Hash slot → shard, built with the shards.
    shard_of: Vec<u8>,
    prekeys: HashMap<IdentityBytes, Prekeys>,
    claims: HashMap<String, Claim>,
    /// The reverse of `claims`: only identities that hold a name are here.
    holders: HashMap<IdentityBytes, Holder>,
    /// When each identity that ever authenticated was last seen (ms since the epoch).
    seen: HashMap<IdentityBytes, u64>,
    /// Unacknowledged messages per sender (only senders that have some).
    senders: HashMap<IdentityBytes, Usage, RandomState>,
    /// All unacknowledged messages.
    stored: Usage,
    /// Expiry notices per sender: sequence number → (notice, the message's time).
    notices: HashMap<IdentityBytes, BTreeMap<u64, (ExpiredNotice, u64)>>,
    next_notice: u64,
    /// Groups (docs/PROTOCOL.md 8.4) and the (sender, id) of each epoch's commit.
    groups: HashMap<Vec<u8>, GroupRecord>,
    group_log: HashMap<Vec<u8>, BTreeMap<u64, (IdentityBytes, MsgId)>>,
    /// One-time KeyPackages, oldest first, and the last-resort one, per owner.
    key_packages: HashMap<IdentityBytes, KeyPackages>,
}

/// Counts a message removed (acknowledged or expired) from its sender's usage and the
/// total.
fn uncount(senders: &mut HashMap<IdentityBytes, Usage, RandomState>, stored: &mut Usage, m: &StoredMessage) {
    let size = stored_size(m.payload.len());
    stored.remove(size);
    if let Entry::Occupied(mut usage) = senders.entry(m.sender) {
        usage.get_mut().remove(size);
        if usage.get().messages == 0 {
            usage.remove();
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The [`Fingerprint`] of `(sender, msg_id)` under `keys`.
fn fingerprint(keys: &(RandomState, RandomState), sender: &IdentityBytes, msg_id: &MsgId) -> Fingerprint {
    let (a, b) = keys;
    Fingerprint(a.hash_one((sender, msg_id)), b.hash_one((sender, msg_id)))
}

/// The answer to a (sender, id) seen before: a duplicate for the same recipient, a
/// reuse of the id for another.
fn same_recipient(same: bool) -> WriteResult {
    if same {
        WriteResult::Duplicate
    } else {
        WriteResult::IdReused
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
            fingerprint_keys: (RandomState::new(), RandomState::new()),
            shard_of,
            prekeys: HashMap::new(),
            claims: HashMap::new(),
            holders: HashMap::new(),
            seen: HashMap::new(),
            senders: HashMap::default(),
            stored: Usage::default(),
            notices: HashMap::new(),
            next_notice: 0,
            groups: HashMap::new(),
            group_log: HashMap::new(),
            key_packages: HashMap::new(),
        }
    }

    /// Takes `name` off `owner`'s names (and forgets `owner` when it holds none left).
    fn unbind(&mut self, owner: &IdentityBytes, name: &str) {
        if let Entry::Occupied(mut holder) = self.holders.entry(*owner) {
            holder.get_mut().names.retain(|n| n != name);
            if holder.get().names.is_empty() {
                holder.remove();
            }
        }
    }

    /// Adds `name` as the name `owner` stored last.
    fn bind(&mut self, owner: &IdentityBytes, name: &str) {
        let holder = self.holders.entry(*owner).or_default();
        holder.names.retain(|n| n != name);
        holder.names.push(name.to_owned());
    }

    fn apply(&mut self, op: &WriteOp, quotas: &Quotas) -> WriteResult {
        match op {
            WriteOp::Append(m) => {
                let fingerprint = fingerprint(&self.fingerprint_keys, &m.sender, &m.msg_id);
                let queue = self.queues.entry(m.recipient).or_default();
                let shard = &mut self.known[shard_of(&self.shard_of, &m.sender, &m.msg_id)];
                if let Some((_, earlier)) = shard.acked.get(&fingerprint) {
                    // (The recipient is hashed only for an id seen before.)
                    return same_recipient(*earlier == self.fingerprint_keys.0.hash_one(m.recipient));
                }
                let unacked = match shard.unacked.entry((m.sender, m.msg_id)) {
                    Entry::Occupied(earlier) => return same_recipient(earlier.get().0 == m.recipient),
                    Entry::Vacant(unacked) => unacked,
                };
                let size = stored_size(m.payload.len());
                let sender = self.senders.get(&m.sender).copied().unwrap_or_default();
                if let Err(quota) = quotas.check(queue.len() as u64, sender, self.stored, size) {
                    return WriteResult::QuotaExceeded(quota);
                }
                self.senders.entry(m.sender).or_default().add(size);
                self.stored.add(size);
                self.next_seq += 1;
                let seq = self.next_seq;
                unacked.insert((m.recipient, seq, m.timestamp_ms));
                queue.push(StoredMessage {
                    seq,
                    sender: m.sender,
                    msg_id: m.msg_id,
                    timestamp_ms: m.timestamp_ms,
                    payload: m.payload.clone(),
                });
                WriteResult::Appended { seq }
            }
            WriteOp::Ack {
                recipient,
                sender,
                msg_id,
            } => {
                let shard = &mut self.known[shard_of(&self.shard_of, sender, msg_id)];
                match shard.unacked.entry((*sender, *msg_id)) {
                    Entry::Occupied(entry) if entry.get().0 == *recipient => {
                        let (_, seq, ts) = entry.remove();
                        let fingerprint = fingerprint(&self.fingerprint_keys, sender, msg_id);
                        let recipient_hash = self.fingerprint_keys.0.hash_one(recipient);
                        shard.acked.insert(fingerprint, (ts, recipient_hash));
                        let removed = self.queues.get_mut(recipient).and_then(|q| q.remove(seq));
                        if let Some(m) = &removed {
                            uncount(&mut self.senders, &mut self.stored, m);
                        }
                        WriteResult::Acked(removed.is_some())
                    }
                    _ => WriteResult::Acked(false),
                }
            }
            WriteOp::Expire {
                before_ms,
                acked_before_ms,
                notices_before_ms,
            } => {
                let mut dropped = Vec::new();
                for shard in &mut self.known {
                    shard.unacked.retain(|_, (recipient, seq, ts)| {
                        if *ts >= *before_ms {
                            return true;
                        }
                        if let Some(m) = self.queues.get_mut(recipient).and_then(|q| q.remove(*seq)) {
                            uncount(&mut self.senders, &mut self.stored, &m);
                            dropped.push((m.seq, *recipient, m));
                        }
                        false
                    });
                    shard.acked.retain(|_, (ts, _)| *ts >= *acked_before_ms);
                }
                self.queues.retain(|_, q| !q.is_empty());
                for notices in self.notices.values_mut() {
                    notices.retain(|_, (_, ts)| *ts >= *notices_before_ms);
                }
                // Notices in store order, as the SQLite engine writes them.
                dropped.sort_unstable_by_key(|(seq, _, _)| *seq);
                let expired = dropped.len() as u64;
                for (_, recipient, m) in dropped {
                    self.next_notice += 1;
                    let notice = ExpiredNotice {
                        recipient,
                        msg_id: m.msg_id,
                    };
                    let of_sender = self.notices.entry(m.sender).or_default();
                    of_sender.insert(self.next_notice, (notice, m.timestamp_ms));
                }
                self.notices.retain(|_, n| !n.is_empty());
                WriteResult::Expired(expired)
            }
            WriteOp::AckExpired { sender, through } => {
                let mut removed = 0;
                if let Entry::Occupied(mut notices) = self.notices.entry(*sender) {
                    let kept = notices.get_mut().split_off(&through.saturating_add(1));
                    removed = notices.get().len() as u64;
                    if kept.is_empty() {
                        notices.remove();
                    } else {
                        *notices.get_mut() = kept;
                    }
                }
                WriteResult::NoticesAcked(removed)
            }
            WriteOp::Seen {
                identity,
                at_ms,
                precision_ms,
            } => {
                let seen = self.seen.entry(*identity).or_insert(*at_ms);
                if *seen < at_ms.saturating_sub(*precision_ms) {
                    *seen = *at_ms;
                }
                WriteResult::Seen
            }
            WriteOp::Group(write) => match apply_group_write(self, write, quotas) {
                Ok(result) => WriteResult::Group(result),
                Err(_) => WriteResult::Group(GroupResult::Invalid("the group write failed")),
            },
        }
    }
}

impl GroupTables for MemoryStore {
    fn group(&mut self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
        Ok(self.groups.get(group_id).cloned())
    }

    fn put_group(&mut self, group_id: &[u8], record: &GroupRecord) -> Result<(), StoreError> {
        self.groups.insert(group_id.to_vec(), record.clone());
        Ok(())
    }

    fn logged_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<Option<(IdentityBytes, MsgId)>, StoreError> {
        Ok(self
            .group_log
            .get(group_id)
            .and_then(|log| log.get(&epoch))
            .copied())
    }

    fn log_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
        sender: &IdentityBytes,
        msg_id: &MsgId,
        _commit: &[u8],
    ) -> Result<(), StoreError> {
        let log = self.group_log.entry(group_id.to_vec()).or_default();
        log.insert(epoch, (*sender, *msg_id));
        while log.len() as u64 > GROUP_LOG_KEPT {
            log.pop_first();
        }
        Ok(())
    }

    fn append(&mut self, message: &NewMessage) -> Result<WriteResult, StoreError> {
        Ok(self.apply(&WriteOp::Append(message.clone()), &Quotas::UNLIMITED))
    }

    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError> {
        Store::queue_len(self, recipient)
    }

    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError> {
        Store::sender_usage(self, sender)
    }

    fn stored_usage(&mut self) -> Result<Usage, StoreError> {
        Store::stored_usage(self)
    }
}

impl Store for MemoryStore {
    fn publish_key_packages(
        &mut self,
        owner: &IdentityBytes,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_held: u32,
    ) -> Result<u32, StoreError> {
        let (held, kept_last_resort) = self.key_packages.entry(*owner).or_default();
        for package in packages {
            if held.len() as u64 >= u64::from(max_held) {
                break;
            }
            held.push_back(package.clone());
        }
        if let Some(package) = last_resort {
            *kept_last_resort = Some(package.to_vec());
        }
        Ok(u32::try_from(held.len()).unwrap_or(u32::MAX))
    }

    fn take_key_package(
        &mut self,
        owner: &IdentityBytes,
        one_time: bool,
    ) -> Result<Option<TakenKeyPackage>, StoreError> {
        let Some((held, last_resort)) = self.key_packages.get_mut(owner) else {
            return Ok(None);
        };
        let taken = match one_time.then(|| held.pop_front()).flatten() {
            Some(package) => Some((package, true)),
            None => last_resort.clone().map(|p| (p, false)),
        };
        Ok(taken.map(|(package, one_time)| TakenKeyPackage {
            package,
            one_time,
            remaining: u32::try_from(held.len()).unwrap_or(u32::MAX),
        }))
    }

    fn commit(&mut self, ops: &[WriteOp], quotas: &Quotas) -> Result<Vec<WriteResult>, StoreError> {
        Ok(ops.iter().map(|op| self.apply(op, quotas)).collect())
    }

    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError> {
        Ok(self.senders.get(sender).copied().unwrap_or_default())
    }

    fn stored_usage(&mut self) -> Result<Usage, StoreError> {
        Ok(self.stored)
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
                q.after(after)
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

    fn expired_notices(
        &mut self,
        sender: &IdentityBytes,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ExpiredNotice)>, StoreError> {
        Ok(self
            .notices
            .get(sender)
            .map(|n| {
                n.range(after.saturating_add(1)..)
                    .take(limit)
                    .map(|(seq, (notice, _))| (*seq, *notice))
                    .collect()
            })
            .unwrap_or_default())
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

    fn fetch_bundle(
        &mut self,
        owner: &IdentityBytes,
        take_one_time: bool,
    ) -> Result<Option<StoredBundle>, StoreError> {
        Ok(self.prekeys.get_mut(owner).map(|p| {
            let one_time_prekey = if take_one_time {
                p.one_time.pop_front()
            } else {
                None
            };
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

    fn record_auth(&mut self, identity: &IdentityBytes, at_ms: u64) -> Result<(), StoreError> {
        if let Some(holder) = self.holders.get_mut(identity) {
            holder.last_auth_ms = Some(holder.last_auth_ms.map_or(at_ms, |t| t.max(at_ms)));
        }
        Ok(())
    }

    fn last_seen(&mut self, identity: &IdentityBytes) -> Result<Option<u64>, StoreError> {
        Ok(self.seen.get(identity).copied())
    }

    fn put_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        claim: &[u8],
        now_ms: u64,
        lease: Lease,
    ) -> Result<ClaimOutcome, StoreError> {
        let outcome = match self.claims.get(name) {
            None => ClaimOutcome::Stored,
            Some(held) if held.owner == *owner => ClaimOutcome::Stored,
            Some(held) => {
                let last_auth = self.holders.get(&held.owner).and_then(|h| h.last_auth_ms);
                if !lease.expired(now_ms, held.stored_ms, last_auth) {
                    return Ok(ClaimOutcome::HeldByAnother);
                }
                let from = held.owner;
                self.unbind(&from, name);
                ClaimOutcome::TakenOver { from }
            }
        };
        // One name per identity: a claim of another name frees the previous one.
        let others: Vec<String> = self
            .holders
            .get(owner)
            .map(|h| h.names.iter().filter(|n| *n != name).cloned().collect())
            .unwrap_or_default();
        for other in others {
            self.claims.remove(&other);
            if let Some(holder) = self.holders.get_mut(owner) {
                holder.names.retain(|n| *n != other);
            }
        }
        self.claims.insert(
            name.to_owned(),
            Claim {
                owner: *owner,
                bytes: claim.to_vec(),
                stored_ms: now_ms,
            },
        );
        self.bind(owner, name);
        Ok(outcome)
    }

    fn get_claim(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.claims.get(name).map(|c| c.bytes.clone()))
    }

    fn claim_of(&mut self, identity: &IdentityBytes) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .holders
            .get(identity)
            .and_then(|h| h.names.last())
            .and_then(|name| self.claims.get(name))
            .map(|c| c.bytes.clone()))
    }

    fn release_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        issued_ms: u64,
    ) -> Result<ReleaseOutcome, StoreError> {
        let outcome = match self.claims.get(name) {
            Some(held) if held.owner == *owner => release_of(&held.bytes, issued_ms)?,
            _ => return Ok(ReleaseOutcome::NotHeld),
        };
        if outcome == ReleaseOutcome::Released {
            self.claims.remove(name);
            self.unbind(owner, name);
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::{Queue, StoredMessage};

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            sender: [1; 32],
            msg_id: [seq as u8; 16],
            timestamp_ms: 0,
            payload: vec![seq as u8].into(),
        }
    }

    fn seqs(queue: &Queue, after: u64) -> Vec<u64> {
        queue.after(after).map(|m| m.seq).collect()
    }

    #[test]
    fn a_queue_keeps_order_through_acknowledgements_in_any_order() {
        let mut queue = Queue::default();
        for seq in (2..=400).step_by(2) {
            queue.push(message(seq));
        }
        assert_eq!(queue.len(), 200);
        assert!(queue.remove(3).is_none(), "never stored");
        assert_eq!(queue.remove(10).map(|m| m.seq), Some(10));
        assert!(queue.remove(10).is_none(), "already removed");
        let expected: Vec<u64> = [6, 8].into_iter().chain((12..=400).step_by(2)).collect();
        assert_eq!(seqs(&queue, 4), expected);
        assert_eq!(seqs(&queue, 9)[0], 12, "after a number between two stored ones");
        // Remove everything but the first message: the holes behind it are compacted.
        for seq in (4..=400).step_by(2) {
            queue.remove(seq);
        }
        assert_eq!(queue.len(), 1);
        assert!(
            queue.slots.len() <= 66,
            "{} slots for one message",
            queue.slots.len()
        );
        assert_eq!(seqs(&queue, 0), vec![2]);
        assert!(queue.remove(2).is_some());
        assert!(queue.is_empty());
        assert!(queue.slots.is_empty(), "holes at the front are dropped");
        queue.push(message(500));
        assert_eq!(seqs(&queue, 400), vec![500]);
    }

    #[test]
    fn memory_store_meets_the_store_contract() {
        super::super::contract::check(&mut super::MemoryStore::new());
    }

    #[test]
    fn memory_store_meets_the_group_contract() {
        super::super::group_contract::check(&mut super::MemoryStore::new());
    }

    #[test]
    fn memory_store_meets_the_quota_contract() {
        super::super::contract::check_quotas(&mut super::MemoryStore::new());
    }
}
