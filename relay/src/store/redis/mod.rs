//! The Redis store engine: the relay's messages, prekeys, names and presence in Redis
//! (a single server, or a Redis Cluster), so several relays serve one deployment.
//!
//! Every write of a batch runs in one Lua script (`commit.lua`): a batch is applied
//! atomically, in order, in one round trip, as a SQLite transaction would be. With the
//! server's `appendonly yes` and `appendfsync always`, Redis writes the script's effects
//! to its append-only file and fsyncs it before it answers, so a `SentAck` sent after the
//! commit means the message survives a `kill -9` of Redis (docs/RELAY.md, "Redis").
//!
//! ## Key layout
//! Every key starts with `{<prefix>}:` (default `{e2ee}:`), one hash tag: a deployment's
//! keys live in one cluster slot, so each script touches one slot, as Redis Cluster
//! requires. (A cluster then gives failover to a replica and spreads the relays'
//! pub/sub and connections, not the storage: see docs/RELAY.md.) `R`, `S`, `O` are
//! 32-byte identities, `id` a 16-byte message id.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `seq`, `nseq` | counter | last message / expiry-notice sequence number |
//! | `q:R` | sorted set | R's queue: `S‖id` scored by sequence number |
//! | `m:R` | hash | `S‖id` → payload |
//! | `k` | hash | `S‖id` → `u‖R‖seq:time:size` (unacknowledged) or `a‖R` (acknowledged) |
//! | `x` | sorted set | unacknowledged `S‖id` scored by receive time (expiry) |
//! | `ax` | sorted set | acknowledged `S‖id` scored by receive time (deduplication window) |
//! | `su`, `tot` | hash | per sender `S‖m`, `S‖b`: messages, bytes; total `m`, `b` |
//! | `n:S`, `nt` | sorted set | S's expiry notices `R‖id‖nseq` by nseq; `S‖nseq` by time |
//! | `seen` | hash | identity → last seen (ms) |
//! | `pk:O`, `opk:O`, `opks:O` | hash, list, set | signed prekey, one-time prekeys |
//! | `cl`, `cl_owner`, `cl_stored`, `cl_issued` | hash | name → claim, holder, times |
//! | `names:O`, `auth` | list, hash | O's names; holder → last authentication (ms) |
//! | `presence`, `presence_gen` | hash, counter | identity → `node\0generation` |
//! | `alive:<node>` | string with a TTL | a relay node's heartbeat (crate::cluster::presence) |
//! | `oh:O` | hash with a TTL | O's one-time prekey handout bucket, shared by every relay |
//! | `g:G` | string | group G's record ([`GroupRecord::encode`]: epoch, members) |
//! | `gl:G` | hash | G's commit log: epoch → `S‖id‖commit`, the last [`GROUP_LOG_KEPT`] epochs |
//! | `kp:O`, `kpl:O` | list, string | O's one-time KeyPackages (oldest first), its last resort |
//!
//! `G` is a group id as the MLS header gives it (any bytes). A group member's copy of an
//! upload is a message like any other (`q:R`, `m:R`, `k`, ...), stored under the upload's
//! sender and the copy's fan-out id (`e2ee_protocol::group::fan_out_id`).
//!
//! ## Group writes
//! [`apply_group_write`] decides a group write in Rust, over the group records and log
//! entries read from Redis just before the batch (and the batch's earlier group writes):
//! the fan-out ids are SHA-256, which Redis's Lua does not have. `commit.lua` then
//! applies the decided effects (the copies, the new record, the log entry) in the
//! batch's order, after checking first that every group record read is still the same
//! (a group's log changes only with its record): if another relay's commit changed one
//! in between, the script writes nothing and the relay reads and decides the whole batch
//! again (`GROUP_ATTEMPTS` times at most). Two commits for one epoch are so ordered by
//! Redis, whichever relay received them: the first is stored, the second is stale.
//!
//! Channel `{<prefix>}:relay:<node>` carries a relay node's notices: each message stored
//! for an R present on that node (`D‖R‖S‖id‖seq:time:payload`), and `R‖R‖generation`
//! (R's connection of that generation was replaced on another node).

mod connection;
mod server;

use std::time::Duration;

use ::redis::{Script, Value};
use e2ee_protocol::frame::ExpiredNotice;

pub use self::connection::{connection_to, RedisEndpoint, RedisLink};
pub use self::server::{RedisCluster, RedisServer};
use super::group::{
    apply_group_write, GroupRecord, GroupResult, GroupTables, GroupWrite, Queued, GROUP_LOG_KEPT,
};
use super::{
    claim_issued_ms, ClaimOutcome, IdentityBytes, MsgId, NewMessage, Quota, Quotas, ReleaseOutcome, Store,
    StoreError, StoredBundle, StoredMessage, TakenKeyPackage, Usage, WriteOp, WriteResult,
};
use crate::lease::Lease;

/// The store's Lua scripts, loaded once per Redis server (`EVALSHA`, `EVAL` after a
/// restart emptied the script cache).
struct Scripts {
    commit: Script,
    pending: Script,
    publish_prekeys: Script,
    fetch_bundle: Script,
    put_claim: Script,
    release_claim: Script,
    record_auth: Script,
    last_seen: Script,
    publish_key_packages: Script,
    take_key_package: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            commit: Script::new(include_str!("commit.lua")),
            pending: Script::new(include_str!("pending.lua")),
            publish_prekeys: Script::new(include_str!("publish_prekeys.lua")),
            fetch_bundle: Script::new(include_str!("fetch_bundle.lua")),
            put_claim: Script::new(include_str!("put_claim.lua")),
            release_claim: Script::new(include_str!("release_claim.lua")),
            record_auth: Script::new(include_str!("record_auth.lua")),
            last_seen: Script::new(include_str!("last_seen.lua")),
            publish_key_packages: Script::new(include_str!("publish_key_packages.lua")),
            take_key_package: Script::new(include_str!("take_key_package.lua")),
        }
    }
}

/// Messages, prekeys and names in Redis.
pub struct RedisStore {
    link: RedisLink,
    /// `{prefix}:`, the start of every key.
    prefix: String,
    /// This relay's node name, whose connections need no "message waiting" notice.
    node: String,
    scripts: Scripts,
    /// The messages the deployment held after the last commit (all relays' writes).
    stored_messages: Option<u64>,
    /// One-time prekey handouts per owner shared by every relay: (capacity, refill per
    /// hour); `None`: no shared limit.
    handouts: Option<(u32, u32)>,
}

/// A quota as the scripts take it: -1 for no bound.
fn quota_arg(bound: u64) -> i64 {
    i64::try_from(bound).unwrap_or(-1)
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt(what)
}

fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn u64_of(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(bytes_of(other)?).ok()?.parse().ok(),
    }
}

fn array<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

/// One result string of `commit.lua`.
fn write_result(answer: &str) -> Result<WriteResult, StoreError> {
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| corrupt("commit script answered a bad number"))
    };
    Ok(match answer.split_once(':') {
        None if answer == "D" => WriteResult::Duplicate,
        None if answer == "I" => WriteResult::IdReused,
        None if answer == "S" => WriteResult::Seen,
        Some(("A", seq)) => WriteResult::Appended { seq: number(seq)? },
        Some(("K", n)) => WriteResult::Acked(n == "1"),
        Some(("X", n)) => WriteResult::Expired(number(n)?),
        Some(("N", n)) => WriteResult::NoticesAcked(number(n)?),
        Some(("Q", quota)) => WriteResult::QuotaExceeded(match quota {
            "recipient_queue" => Quota::RecipientQueue,
            "sender_messages" => Quota::SenderMessages,
            "sender_bytes" => Quota::SenderBytes,
            "storage_budget" => Quota::StorageBudget,
            _ => return Err(corrupt("commit script answered an unknown quota")),
        }),
        _ => return Err(corrupt("commit script answered an unknown result")),
    })
}

/// How many times a batch with group writes is decided and tried again while other
/// relays' commits change its groups in between.
const GROUP_ATTEMPTS: usize = 5;

/// What `commit.lua` does for one group write, as [`apply_group_write`] decided it.
#[derive(Default)]
struct GroupEffects {
    /// Per copy: `m` (the message) or `w` (the welcome), recipient, fan-out id.
    copies: Vec<u8>,
    /// The group's new record, encoded.
    record: Option<Vec<u8>>,
    /// The epoch whose commit is logged, and the one dropped from the log then.
    logged: Option<(u64, Option<u64>)>,
}

/// A group write decided: its result (with the copies' sequence numbers still to come)
/// and its effects.
struct GroupPlan {
    result: GroupResult,
    effects: GroupEffects,
}

/// The group tables of a batch as read from Redis before it runs, with the batch's
/// earlier group writes applied: [`apply_group_write`] decides each write over them.
struct PlannedGroups<'a> {
    store: &'a mut RedisStore,
    /// Each group read, with its record as read (what `commit.lua` checks).
    read: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Each group read, as the batch's earlier writes left it.
    records: std::collections::HashMap<Vec<u8>, Option<GroupRecord>>,
    /// Log entries the batch's earlier writes made.
    logged: std::collections::HashMap<(Vec<u8>, u64), (IdentityBytes, MsgId)>,
    /// The message of the write being decided (its copies' payload, unless a welcome).
    message: bytes::Bytes,
    /// The effects of the write being decided.
    effects: GroupEffects,
    /// The quotas group copies are held to (checked against the counters as Redis holds
    /// them before the batch: relays committing at the same moment may each pass a
    /// bound the other's batch then fills).
    quotas: Quotas,
}

impl<'a> PlannedGroups<'a> {
    fn new(store: &'a mut RedisStore, quotas: Quotas) -> Self {
        Self {
            store,
            quotas,
            read: Vec::new(),
            records: std::collections::HashMap::new(),
            logged: std::collections::HashMap::new(),
            message: bytes::Bytes::new(),
            effects: GroupEffects::default(),
        }
    }

    fn plan(&mut self, write: &GroupWrite) -> Result<GroupPlan, StoreError> {
        self.message = write.message.clone();
        self.effects = GroupEffects::default();
        let quotas = self.quotas;
        let result = apply_group_write(self, write, &quotas)?;
        Ok(GroupPlan {
            result,
            effects: std::mem::take(&mut self.effects),
        })
    }
}

impl GroupTables for PlannedGroups<'_> {
    fn group(&mut self, group_id: &[u8]) -> Result<Option<GroupRecord>, StoreError> {
        if let Some(record) = self.records.get(group_id) {
            return Ok(record.clone());
        }
        let key = self.store.key_of("g:", group_id);
        let stored: Option<Vec<u8>> = self.store.command(::redis::cmd("GET").arg(key).clone())?;
        let record = stored.as_deref().map(GroupRecord::decode).transpose()?;
        self.read.push((group_id.to_vec(), stored));
        self.records.insert(group_id.to_vec(), record.clone());
        Ok(record)
    }

    fn put_group(&mut self, group_id: &[u8], record: &GroupRecord) -> Result<(), StoreError> {
        self.records.insert(group_id.to_vec(), Some(record.clone()));
        self.effects.record = Some(record.encode());
        Ok(())
    }

    fn logged_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
    ) -> Result<Option<(IdentityBytes, MsgId)>, StoreError> {
        if let Some(entry) = self.logged.get(&(group_id.to_vec(), epoch)) {
            return Ok(Some(*entry));
        }
        let key = self.store.key_of("gl:", group_id);
        let entry: Option<Vec<u8>> = self
            .store
            .command(::redis::cmd("HGET").arg(key).arg(epoch.to_string()).clone())?;
        entry
            .map(|e| {
                let sender = e.get(..32).and_then(array).ok_or(corrupt("group log entry"))?;
                let msg_id = e.get(32..48).and_then(array).ok_or(corrupt("group log entry"))?;
                Ok((sender, msg_id))
            })
            .transpose()
    }

    fn log_commit(
        &mut self,
        group_id: &[u8],
        epoch: u64,
        sender: &IdentityBytes,
        msg_id: &MsgId,
        _commit: &[u8],
    ) -> Result<(), StoreError> {
        self.logged.insert((group_id.to_vec(), epoch), (*sender, *msg_id));
        self.effects.logged = Some((epoch, epoch.checked_sub(GROUP_LOG_KEPT)));
        Ok(())
    }

    /// Noted for `commit.lua`, which stores it (or finds it stored before): the sequence
    /// number is filled in from its answer.
    fn append(&mut self, message: &NewMessage) -> Result<WriteResult, StoreError> {
        let kind = if message.payload == self.message {
            b'm'
        } else {
            b'w'
        };
        self.effects.copies.push(kind);
        self.effects.copies.extend_from_slice(&message.recipient);
        self.effects.copies.extend_from_slice(&message.msg_id);
        Ok(WriteResult::Appended { seq: 0 })
    }

    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError> {
        Store::queue_len(self.store, recipient)
    }

    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError> {
        Store::sender_usage(self.store, sender)
    }

    fn stored_usage(&mut self) -> Result<Usage, StoreError> {
        Store::stored_usage(self.store)
    }
}

/// A group write's result from its plan and `commit.lua`'s answer for it
/// (`G:` and, per copy, its sequence number, `D` or `I`).
fn group_result(plan: GroupPlan, answer: &str) -> Result<WriteResult, StoreError> {
    let copies = answer.strip_prefix("G:").ok_or(corrupt(
        "commit script answered no group result for a group write",
    ))?;
    let copies: Vec<&str> = if copies.is_empty() {
        Vec::new()
    } else {
        copies.split(',').collect()
    };
    Ok(WriteResult::Group(match plan.result {
        GroupResult::Stored { epoch, queued } => {
            if copies.len() != queued.len() {
                return Err(corrupt("commit script answered another number of group copies"));
            }
            let mut stored = Vec::with_capacity(queued.len());
            for (copy, answer) in queued.into_iter().zip(copies) {
                match answer {
                    // Queued by an earlier upload of the same message.
                    "D" => {}
                    seq => stored.push(Queued {
                        seq: seq
                            .parse()
                            .map_err(|_| corrupt("a group copy was neither stored nor a duplicate"))?,
                        ..copy
                    }),
                }
            }
            GroupResult::Stored {
                epoch,
                queued: stored,
            }
        }
        other if copies.is_empty() => other,
        _ => {
            return Err(corrupt(
                "commit script stored copies of a group write it should not",
            ))
        }
    }))
}

impl RedisStore {
    /// Connects to `endpoint` (checked for durability, see [`RedisLink::open`]) as relay
    /// node `node`, with keys under `{prefix}:`.
    ///
    /// # Errors
    /// [`StoreError::Redis`] when Redis cannot be reached or does not fsync every write
    /// while the endpoint requires it.
    pub fn open(endpoint: RedisEndpoint, prefix: &str, node: &str) -> Result<Self, StoreError> {
        Ok(Self {
            link: RedisLink::open(endpoint)?,
            prefix: format!("{{{prefix}}}:"),
            node: node.to_owned(),
            scripts: Scripts::new(),
            stored_messages: None,
            handouts: None,
        })
    }

    /// Limits the one-time prekeys fetches may take of one owner, across every relay on
    /// this Redis, to a bucket of `capacity` refilled by `refill_per_hour` an hour (the
    /// relay's `limits.opk_handout_*`, which each relay also applies on its own).
    pub fn with_handout_limit(mut self, capacity: u32, refill_per_hour: u32) -> Self {
        self.handouts = Some((capacity, refill_per_hour));
        self
    }

    /// The key `name` of this deployment.
    fn key(&self, name: &str) -> Vec<u8> {
        let mut key = self.prefix.clone().into_bytes();
        key.extend_from_slice(name.as_bytes());
        key
    }

    /// The key `name` followed by the bytes `of` (e.g. `q:` and a recipient).
    fn key_of(&self, name: &str, of: &[u8]) -> Vec<u8> {
        let mut key = self.key(name);
        key.extend_from_slice(of);
        key
    }

    /// Runs `script` with the anchor key (the slot) and `args` after the prefix.
    fn run(&mut self, script: fn(&Scripts) -> &Script, args: &[&[u8]]) -> Result<Value, StoreError> {
        let anchor = self.key("seq");
        let prefix = self.prefix.clone();
        let scripts = &self.scripts;
        self.link.with(|con| {
            let mut call = script(scripts).key(&anchor);
            call.arg(prefix.as_bytes());
            for arg in args {
                call.arg(*arg);
            }
            call.invoke(con)
        })
    }

    fn command<T: ::redis::FromRedisValue>(&mut self, cmd: ::redis::Cmd) -> Result<T, StoreError> {
        self.link.with(|con| cmd.query(con))
    }

    /// One try at a batch: `None` when a group it read changed before it ran (nothing
    /// was written; decide it again).
    fn try_commit(
        &mut self,
        ops: &[WriteOp],
        quotas: &Quotas,
    ) -> Result<Option<Vec<WriteResult>>, StoreError> {
        // Group writes first decided over their groups as Redis holds them now.
        let mut plans: Vec<Option<GroupPlan>> = Vec::with_capacity(ops.len());
        let mut read = Vec::new();
        if ops.iter().any(|op| matches!(op, WriteOp::Group(_))) {
            let mut groups = PlannedGroups::new(self, *quotas);
            for op in ops {
                plans.push(match op {
                    WriteOp::Group(write) => Some(groups.plan(write)?),
                    _ => None,
                });
            }
            read = groups.read;
        } else {
            plans.resize_with(ops.len(), || None);
        }
        // The numbers of the batch as text, in order; every other argument (payloads
        // above all) is passed by reference, not copied.
        let mut numbers: Vec<String> = [
            quotas.queue,
            quotas.sender_messages,
            quotas.sender_bytes,
            quotas.stored_bytes,
        ]
        .iter()
        .map(|q| quota_arg(*q).to_string())
        .chain([read.len().to_string()])
        .collect();
        for (op, plan) in ops.iter().zip(&plans) {
            match op {
                WriteOp::Group(write) => {
                    let logged = plan.as_ref().and_then(|p| p.effects.logged);
                    numbers.extend([
                        write.timestamp_ms.to_string(),
                        logged.map(|(epoch, _)| epoch.to_string()).unwrap_or_default(),
                        logged
                            .and_then(|(_, dropped)| dropped)
                            .map(|epoch| epoch.to_string())
                            .unwrap_or_default(),
                    ]);
                }
                WriteOp::Append(m) => numbers.push(m.timestamp_ms.to_string()),
                WriteOp::Ack { .. } => {}
                WriteOp::Seen {
                    at_ms, precision_ms, ..
                } => numbers.extend([at_ms.to_string(), precision_ms.to_string()]),
                WriteOp::Expire {
                    before_ms,
                    acked_before_ms,
                    notices_before_ms,
                } => numbers.extend([before_ms, acked_before_ms, notices_before_ms].map(u64::to_string)),
                WriteOp::AckExpired { through, .. } => numbers.push(through.to_string()),
            }
        }
        let mut number = numbers.iter().map(String::as_bytes);
        let mut next = || number.next().unwrap_or_default();
        let node = self.node.clone();
        let mut args: Vec<&[u8]> = vec![node.as_bytes(), next(), next(), next(), next(), next()];
        for (group_id, record) in &read {
            args.extend([group_id.as_slice(), record.as_deref().unwrap_or_default()]);
        }
        for (op, plan) in ops.iter().zip(&plans) {
            match op {
                WriteOp::Append(m) => args.extend([
                    b"A".as_slice(),
                    &m.recipient,
                    &m.sender,
                    &m.msg_id,
                    next(),
                    &m.payload,
                ]),
                WriteOp::Ack {
                    recipient,
                    sender,
                    msg_id,
                } => args.extend([b"K".as_slice(), recipient, sender, msg_id]),
                WriteOp::Seen { identity, .. } => args.extend([b"S".as_slice(), identity, next(), next()]),
                WriteOp::Expire { .. } => args.extend([b"E".as_slice(), next(), next(), next()]),
                WriteOp::AckExpired { sender, .. } => args.extend([b"N".as_slice(), sender, next()]),
                WriteOp::Group(write) => {
                    let effects = &plan
                        .as_ref()
                        .ok_or(corrupt("a group write was not decided"))?
                        .effects;
                    let welcome = write
                        .commit
                        .as_ref()
                        .and_then(|c| c.welcome.as_deref())
                        .unwrap_or_default();
                    args.extend([
                        b"G".as_slice(),
                        &write.group_id,
                        &write.sender,
                        &write.msg_id,
                        next(),
                        &write.message,
                        welcome,
                        &effects.copies,
                        effects.record.as_deref().unwrap_or_default(),
                        next(),
                        next(),
                    ]);
                }
            }
        }
        let Value::Array(answers) = self.run(|s| &s.commit, &args)? else {
            return Err(corrupt("commit script did not answer a list"));
        };
        if let [retry] = &answers[..] {
            if bytes_of(retry) == Some(b"R") {
                return Ok(None);
            }
        }
        let total = answers
            .last()
            .and_then(bytes_of)
            .and_then(|t| t.strip_prefix(b"T:"))
            .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok());
        if answers.len() != ops.len() + 1 || total.is_none() {
            return Err(corrupt("commit script answered a result per write and the total"));
        }
        self.link.wait_replicas()?;
        self.stored_messages = total;
        answers[..ops.len()]
            .iter()
            .zip(plans)
            .map(|(a, plan)| {
                let text = bytes_of(a)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .ok_or(corrupt("commit script answered a non-string"))?;
                match plan {
                    Some(plan) => group_result(plan, text),
                    None => write_result(text),
                }
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

impl Store for RedisStore {
    fn stored_messages(&self) -> Option<u64> {
        self.stored_messages
    }

    fn commit(&mut self, ops: &[WriteOp], quotas: &Quotas) -> Result<Vec<WriteResult>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        for _ in 0..GROUP_ATTEMPTS {
            if let Some(results) = self.try_commit(ops, quotas)? {
                return Ok(results);
            }
        }
        Err(self.link.endpoint().error(format!(
            "the batch's groups changed under it {GROUP_ATTEMPTS} times in a row (other relays' commits)"
        )))
    }

    fn publish_key_packages(
        &mut self,
        owner: &IdentityBytes,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_held: u32,
    ) -> Result<u32, StoreError> {
        let most = max_held.to_string();
        let (replace, last_resort): (&[u8], &[u8]) = match last_resort {
            Some(package) => (b"1", package),
            None => (b"0", b""),
        };
        let mut args: Vec<&[u8]> = vec![owner, most.as_bytes(), replace, last_resort];
        args.extend(packages.iter().map(Vec::as_slice));
        let held = self.run(|s| &s.publish_key_packages, &args)?;
        u64_of(&held)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(corrupt("KeyPackage script answered a bad count"))
    }

    fn take_key_package(
        &mut self,
        owner: &IdentityBytes,
        one_time: bool,
    ) -> Result<Option<TakenKeyPackage>, StoreError> {
        let flag: &[u8] = if one_time { b"1" } else { b"0" };
        match self.run(|s| &s.take_key_package, &[owner, flag])? {
            Value::Nil | Value::Boolean(false) => Ok(None),
            Value::Array(parts) => {
                let [package, left, kind] = &parts[..] else {
                    return Err(corrupt("KeyPackage script answered a short result"));
                };
                Ok(Some(TakenKeyPackage {
                    package: bytes_of(package).ok_or(corrupt("stored KeyPackage"))?.to_vec(),
                    remaining: u64_of(left)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(corrupt("stored KeyPackage count"))?,
                    one_time: u64_of(kind) == Some(1),
                }))
            }
            _ => Err(corrupt(
                "KeyPackage script answered neither a KeyPackage nor nothing",
            )),
        }
    }

    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError> {
        let su = self.key("su");
        let (m, b) = ([&sender[..], b"m"].concat(), [&sender[..], b"b"].concat());
        let (messages, bytes): (Option<u64>, Option<u64>) =
            self.command(::redis::cmd("HMGET").arg(su).arg(m).arg(b).clone())?;
        Ok(Usage {
            messages: messages.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        })
    }

    fn stored_usage(&mut self) -> Result<Usage, StoreError> {
        let tot = self.key("tot");
        let (messages, bytes): (Option<u64>, Option<u64>) =
            self.command(::redis::cmd("HMGET").arg(tot).arg("m").arg("b").clone())?;
        Ok(Usage {
            messages: messages.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        })
    }

    fn pending(
        &mut self,
        recipient: &IdentityBytes,
        after: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let (after, limit, not_before) = (after.to_string(), limit.to_string(), not_before_ms.to_string());
        let args: [&[u8]; 4] = [
            recipient,
            after.as_bytes(),
            limit.as_bytes(),
            not_before.as_bytes(),
        ];
        let Value::Array(flat) = self.run(|s| &s.pending, &args)? else {
            return Err(corrupt("pending script did not answer a list"));
        };
        flat.chunks(4)
            .map(|row| {
                let [seq, key, ts, payload] = row else {
                    return Err(corrupt("pending script answered a short row"));
                };
                let key = bytes_of(key).ok_or(corrupt("stored message key"))?;
                let (sender, msg_id) = key.split_at_checked(32).ok_or(corrupt("stored message key"))?;
                Ok(StoredMessage {
                    seq: u64_of(seq).ok_or(corrupt("stored sequence number"))?,
                    sender: array(sender).ok_or(corrupt("stored sender"))?,
                    msg_id: array::<16>(msg_id).ok_or(corrupt("stored message id"))? as MsgId,
                    timestamp_ms: u64_of(ts).ok_or(corrupt("stored receive time"))?,
                    payload: bytes_of(payload)
                        .ok_or(corrupt("stored payload"))?
                        .to_vec()
                        .into(),
                })
            })
            .collect()
    }

    fn expired_notices(
        &mut self,
        sender: &IdentityBytes,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ExpiredNotice)>, StoreError> {
        let key = self.key_of("n:", sender);
        let flat: Vec<(Vec<u8>, u64)> = self.command(
            ::redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg(format!("({after}"))
                .arg("+inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .clone(),
        )?;
        flat.into_iter()
            .map(|(member, seq)| {
                let recipient = member.get(..32).and_then(array).ok_or(corrupt("stored notice"))?;
                let msg_id = member
                    .get(32..48)
                    .and_then(array)
                    .ok_or(corrupt("stored notice"))?;
                Ok((seq, ExpiredNotice { recipient, msg_id }))
            })
            .collect()
    }

    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError> {
        let key = self.key_of("q:", recipient);
        self.command(::redis::cmd("ZCARD").arg(key).clone())
    }

    fn publish_prekeys(
        &mut self,
        owner: &IdentityBytes,
        signed_prekey: &[u8; 32],
        signature: &[u8],
        one_time: &[[u8; 32]],
        max_prekeys: u32,
    ) -> Result<u32, StoreError> {
        let most = max_prekeys.to_string();
        let mut args: Vec<&[u8]> = vec![owner, signed_prekey, signature, most.as_bytes()];
        args.extend(one_time.iter().map(|k| k.as_slice()));
        let held = self.run(|s| &s.publish_prekeys, &args)?;
        u64_of(&held)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(corrupt("prekey script answered a bad count"))
    }

    fn fetch_bundle(
        &mut self,
        owner: &IdentityBytes,
        take_one_time: bool,
    ) -> Result<Option<StoredBundle>, StoreError> {
        let take: &[u8] = if take_one_time { b"1" } else { b"0" };
        let (capacity, refill) = self.handouts.unwrap_or((0, 0));
        let (capacity, refill, now) = (
            capacity.to_string(),
            refill.to_string(),
            crate::now_ms().to_string(),
        );
        let args: [&[u8]; 5] = [
            owner,
            take,
            capacity.as_bytes(),
            refill.as_bytes(),
            now.as_bytes(),
        ];
        match self.run(|s| &s.fetch_bundle, &args)? {
            Value::Nil | Value::Boolean(false) => Ok(None),
            Value::Array(parts) => {
                let [spk, sig, opk, left] = &parts[..] else {
                    return Err(corrupt("bundle script answered a short bundle"));
                };
                let opk = bytes_of(opk).ok_or(corrupt("stored one-time prekey"))?;
                Ok(Some(StoredBundle {
                    signed_prekey: bytes_of(spk)
                        .and_then(array)
                        .ok_or(corrupt("stored signed prekey"))?,
                    signature: bytes_of(sig).ok_or(corrupt("stored signature"))?.to_vec(),
                    one_time_prekey: if opk.is_empty() {
                        None
                    } else {
                        Some(array(opk).ok_or(corrupt("stored one-time prekey"))?)
                    },
                    remaining: u64_of(left)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(corrupt("stored prekey count"))?,
                }))
            }
            _ => Err(corrupt("bundle script answered neither a bundle nor nothing")),
        }
    }

    fn prekey_count(&mut self, owner: &IdentityBytes) -> Result<Option<u32>, StoreError> {
        let (pk, opk) = (self.key_of("pk:", owner), self.key_of("opk:", owner));
        let published: bool = self.command(::redis::cmd("EXISTS").arg(pk).clone())?;
        if !published {
            return Ok(None);
        }
        let held: u32 = self.command(::redis::cmd("LLEN").arg(opk).clone())?;
        Ok(Some(held))
    }

    fn record_auth(&mut self, identity: &IdentityBytes, at_ms: u64) -> Result<(), StoreError> {
        let at = at_ms.to_string();
        self.run(|s| &s.record_auth, &[identity, at.as_bytes()])?;
        Ok(())
    }

    /// As the trait says, and `now` while the identity is connected to any relay of the
    /// cluster that is alive: every relay answers QueryAway the same way.
    fn last_seen(&mut self, identity: &IdentityBytes) -> Result<Option<u64>, StoreError> {
        match self.run(|s| &s.last_seen, &[identity])? {
            Value::Nil | Value::Boolean(false) => Ok(None),
            value => match bytes_of(&value) {
                Some(b"now") => Ok(Some(crate::now_ms())),
                _ => u64_of(&value).map(Some).ok_or(corrupt("stored seen time")),
            },
        }
    }

    fn put_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        claim: &[u8],
        now_ms: u64,
        lease: Lease,
    ) -> Result<ClaimOutcome, StoreError> {
        let (now, lease, issued) = (
            now_ms.to_string(),
            lease.ms().to_string(),
            claim_issued_ms(claim)?.to_string(),
        );
        let args: [&[u8]; 6] = [
            name.as_bytes(),
            owner,
            claim,
            now.as_bytes(),
            lease.as_bytes(),
            issued.as_bytes(),
        ];
        let answer = self.run(|s| &s.put_claim, &args)?;
        match bytes_of(&answer).ok_or(corrupt("claim script answered a non-string"))? {
            b"S" => Ok(ClaimOutcome::Stored),
            b"H" => Ok(ClaimOutcome::HeldByAnother),
            [b'T', from @ ..] => Ok(ClaimOutcome::TakenOver {
                from: array(from).ok_or(corrupt("stored name holder"))?,
            }),
            _ => Err(corrupt("claim script answered an unknown outcome")),
        }
    }

    fn get_claim(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key("cl");
        self.command(::redis::cmd("HGET").arg(key).arg(name).clone())
    }

    fn claim_of(&mut self, identity: &IdentityBytes) -> Result<Option<Vec<u8>>, StoreError> {
        let names = self.key_of("names:", identity);
        let last: Option<Vec<u8>> = self.command(::redis::cmd("LINDEX").arg(names).arg(-1).clone())?;
        let Some(name) = last else { return Ok(None) };
        let key = self.key("cl");
        self.command(::redis::cmd("HGET").arg(key).arg(name).clone())
    }

    fn release_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        issued_ms: u64,
    ) -> Result<ReleaseOutcome, StoreError> {
        let issued = issued_ms.to_string();
        let answer = self.run(|s| &s.release_claim, &[name.as_bytes(), owner, issued.as_bytes()])?;
        match bytes_of(&answer).ok_or(corrupt("release script answered a non-string"))? {
            b"R" => Ok(ReleaseOutcome::Released),
            b"N" => Ok(ReleaseOutcome::NotHeld),
            [b'O', ms @ ..] => Ok(ReleaseOutcome::OlderThanClaim {
                claim_issued_ms: std::str::from_utf8(ms)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(corrupt("stored claim time"))?,
            }),
            _ => Err(corrupt("release script answered an unknown outcome")),
        }
    }
}

/// How long a Redis command may take before the store reports Redis unavailable.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests;
