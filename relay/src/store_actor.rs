//! The store actor: serves the [`Store`] on a SyncArbiter thread, so blocking database
//! work never runs on the connections' event loop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;
use e2ee_protocol::frame::ExpiredNotice;

use crate::lease::Lease;
use crate::metrics::Gauge;
use crate::store::{
    ClaimOutcome, IdentityBytes, Quotas, ReleaseOutcome, Store, StoreError, StoredBundle, StoredMessage,
    TakenKeyPackage, WriteOp, WriteResult,
};

/// The open store. Only the store thread uses it, except the memory store, which
/// connections also write to directly (see [`crate::committer::commit_direct`]). Every
/// error it returns names the store's file; every commit keeps the gauge of stored
/// messages current.
pub struct SharedStore {
    store: Mutex<Box<dyn Store>>,
    quotas: Quotas,
    path: Option<PathBuf>,
    stored_messages: Gauge,
}

impl SharedStore {
    /// Wraps an open store; messages are stored only within `quotas`. `stored_messages`
    /// is set to the messages the store holds now, then kept current.
    pub fn new(
        mut store: Box<dyn Store>,
        quotas: Quotas,
        stored_messages: Gauge,
    ) -> Result<Self, StoreError> {
        let path = store.path().map(Path::to_path_buf);
        let waiting = store
            .stored_usage()
            .map_err(|err| err.in_file(path.as_deref()))?
            .messages;
        stored_messages.set(waiting);
        Ok(Self {
            store: Mutex::new(store),
            quotas,
            path,
            stored_messages,
        })
    }

    /// The store, locked (unavailable if a thread panicked while holding it).
    pub fn lock(&self) -> Result<MutexGuard<'_, Box<dyn Store>>, StoreError> {
        self.store.lock().map_err(|_| StoreError::Unavailable)
    }

    /// Runs `op` on the locked store; an error names the store's file.
    pub fn with<T>(&self, op: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut store = self.lock()?;
        op(store.as_mut()).map_err(|err| err.in_file(self.path.as_deref()))
    }

    /// Applies writes atomically, in order.
    pub fn commit(&self, ops: &[WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        let (results, held) =
            self.with(|store| Ok((store.commit(ops, &self.quotas)?, store.stored_messages())))?;
        if let Some(held) = held {
            self.stored_messages.set(held);
            return Ok(results);
        }
        let (mut added, mut removed) = (0u64, 0u64);
        for result in &results {
            match result {
                WriteResult::Appended { .. } => added += 1,
                WriteResult::Group(crate::store::group::GroupResult::Stored { queued, .. }) => {
                    added += queued.len() as u64
                }
                WriteResult::Acked(true) => removed += 1,
                WriteResult::Expired(n) => removed += n,
                _ => {}
            }
        }
        self.stored_messages.add(added);
        self.stored_messages.sub(removed);
        Ok(results)
    }
}

/// Serves the message store; one thread.
pub struct StoreActor {
    store: Arc<SharedStore>,
}

impl StoreActor {
    /// Serves `store`.
    pub fn new(store: Arc<SharedStore>) -> Self {
        Self { store }
    }

    /// Runs `op` on the store; an error names the store's file.
    fn with<T>(&self, op: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.store.with(op)
    }
}

impl Actor for StoreActor {
    type Context = SyncContext<Self>;
}

/// Commit a batch of writes in one transaction.
#[derive(Message)]
#[rtype(result = "Result<Vec<WriteResult>, StoreError>")]
pub struct CommitBatch(pub Vec<WriteOp>);

impl Handler<CommitBatch> for StoreActor {
    type Result = Result<Vec<WriteResult>, StoreError>;
    fn handle(&mut self, msg: CommitBatch, _: &mut SyncContext<Self>) -> Self::Result {
        self.store.commit(&msg.0)
    }
}

/// Load part of a recipient's queue.
#[derive(Message)]
#[rtype(result = "Result<Vec<StoredMessage>, StoreError>")]
pub struct LoadPending {
    /// Whose queue.
    pub recipient: IdentityBytes,
    /// Only messages with a larger sequence number.
    pub after: u64,
    /// At most this many.
    pub limit: usize,
    /// Not older than this (ms since the epoch).
    pub not_before_ms: u64,
}

impl Handler<LoadPending> for StoreActor {
    type Result = Result<Vec<StoredMessage>, StoreError>;
    fn handle(&mut self, msg: LoadPending, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.pending(&msg.recipient, msg.after, msg.limit, msg.not_before_ms))
    }
}

/// Load a page of a sender's expiry notices.
#[derive(Message)]
#[rtype(result = "Result<Vec<(u64, ExpiredNotice)>, StoreError>")]
pub struct LoadExpired {
    /// Whose notices.
    pub sender: IdentityBytes,
    /// Only notices with a larger sequence number.
    pub after: u64,
    /// At most this many.
    pub limit: usize,
}

impl Handler<LoadExpired> for StoreActor {
    type Result = Result<Vec<(u64, ExpiredNotice)>, StoreError>;
    fn handle(&mut self, msg: LoadExpired, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.expired_notices(&msg.sender, msg.after, msg.limit))
    }
}

/// Count a recipient's queue.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct QueueLen(pub IdentityBytes);

impl Handler<QueueLen> for StoreActor {
    type Result = Result<u64, StoreError>;
    fn handle(&mut self, msg: QueueLen, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.queue_len(&msg.0))
    }
}

/// Publish prekeys for their owner.
#[derive(Message)]
#[rtype(result = "Result<u32, StoreError>")]
pub struct PublishPrekeys {
    /// The owner (the authenticated identity).
    pub owner: IdentityBytes,
    /// Signed prekey.
    pub signed_prekey: [u8; 32],
    /// Its signature.
    pub signature: Vec<u8>,
    /// One-time prekeys to add.
    pub one_time: Vec<[u8; 32]>,
    /// Cap on one-time prekeys held.
    pub max_prekeys: u32,
}

impl Handler<PublishPrekeys> for StoreActor {
    type Result = Result<u32, StoreError>;
    fn handle(&mut self, m: PublishPrekeys, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| {
            s.publish_prekeys(
                &m.owner,
                &m.signed_prekey,
                &m.signature,
                &m.one_time,
                m.max_prekeys,
            )
        })
    }
}

/// Fetch a bundle, consuming one one-time prekey if allowed to.
#[derive(Message)]
#[rtype(result = "Result<Option<StoredBundle>, StoreError>")]
pub struct FetchBundle {
    /// Whose bundle.
    pub owner: IdentityBytes,
    /// Whether the bundle may carry (and so use up) a one-time prekey.
    pub take_one_time: bool,
}

impl Handler<FetchBundle> for StoreActor {
    type Result = Result<Option<StoredBundle>, StoreError>;
    fn handle(&mut self, msg: FetchBundle, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.fetch_bundle(&msg.owner, msg.take_one_time))
    }
}

/// Add an owner's KeyPackages (docs/PROTOCOL.md 8.2).
#[derive(Message)]
#[rtype(result = "Result<u32, StoreError>")]
pub struct PublishKeyPackages {
    /// The owner (the authenticated identity).
    pub owner: IdentityBytes,
    /// One-time KeyPackages to add.
    pub packages: Vec<Vec<u8>>,
    /// A new last-resort KeyPackage.
    pub last_resort: Option<Vec<u8>>,
    /// Cap on one-time KeyPackages held.
    pub max_held: u32,
}

impl Handler<PublishKeyPackages> for StoreActor {
    type Result = Result<u32, StoreError>;
    fn handle(&mut self, m: PublishKeyPackages, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.publish_key_packages(&m.owner, &m.packages, m.last_resort.as_deref(), m.max_held))
    }
}

/// Take one KeyPackage of an owner: a one-time one while any is left and `one_time`,
/// else its last-resort one.
#[derive(Message)]
#[rtype(result = "Result<Option<TakenKeyPackage>, StoreError>")]
pub struct TakeKeyPackage {
    /// Whose KeyPackage.
    pub owner: IdentityBytes,
    /// Whether a one-time KeyPackage may be used up.
    pub one_time: bool,
}

impl Handler<TakeKeyPackage> for StoreActor {
    type Result = Result<Option<TakenKeyPackage>, StoreError>;
    fn handle(&mut self, m: TakeKeyPackage, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.take_key_package(&m.owner, m.one_time))
    }
}

/// Record an identity's authentication (for the lease of its names).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordAuth {
    /// The authenticated identity.
    pub identity: IdentityBytes,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

impl Handler<RecordAuth> for StoreActor {
    type Result = Result<(), StoreError>;
    fn handle(&mut self, msg: RecordAuth, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.record_auth(&msg.identity, msg.at_ms))
    }
}

/// When an identity was last seen (ms since the epoch), `None` if never.
#[derive(Message)]
#[rtype(result = "Result<Option<u64>, StoreError>")]
pub struct LastSeen(pub IdentityBytes);

impl Handler<LastSeen> for StoreActor {
    type Result = Result<Option<u64>, StoreError>;
    fn handle(&mut self, msg: LastSeen, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.last_seen(&msg.0))
    }
}

/// Count one-time prekeys held for an owner.
#[derive(Message)]
#[rtype(result = "Result<Option<u32>, StoreError>")]
pub struct PrekeyCount(pub IdentityBytes);

impl Handler<PrekeyCount> for StoreActor {
    type Result = Result<Option<u32>, StoreError>;
    fn handle(&mut self, msg: PrekeyCount, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.prekey_count(&msg.0))
    }
}

/// Store a name claim.
#[derive(Message)]
#[rtype(result = "Result<ClaimOutcome, StoreError>")]
pub struct PutClaim {
    /// The claimed name.
    pub name: String,
    /// The claiming identity.
    pub owner: IdentityBytes,
    /// The signed claim bytes.
    pub claim: Vec<u8>,
    /// Now (ms since the epoch).
    pub now_ms: u64,
    /// The lease of a name whose holder stops authenticating.
    pub lease: Lease,
}

impl Handler<PutClaim> for StoreActor {
    type Result = Result<ClaimOutcome, StoreError>;
    fn handle(&mut self, m: PutClaim, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.put_claim(&m.name, &m.owner, &m.claim, m.now_ms, m.lease))
    }
}

/// Look up a name claim.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StoreError>")]
pub struct GetClaim(pub String);

impl Handler<GetClaim> for StoreActor {
    type Result = Result<Option<Vec<u8>>, StoreError>;
    fn handle(&mut self, msg: GetClaim, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.get_claim(&msg.0))
    }
}

/// Look up the claim an identity holds (the reverse lookup).
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StoreError>")]
pub struct ClaimOf(pub IdentityBytes);

impl Handler<ClaimOf> for StoreActor {
    type Result = Result<Option<Vec<u8>>, StoreError>;
    fn handle(&mut self, msg: ClaimOf, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.claim_of(&msg.0))
    }
}

/// Delete a claim, given a verified release of it.
#[derive(Message)]
#[rtype(result = "Result<ReleaseOutcome, StoreError>")]
pub struct ReleaseClaim {
    /// The released name.
    pub name: String,
    /// The releasing identity (the release's signer, the connection's identity).
    pub owner: IdentityBytes,
    /// When the release was issued (ms since the epoch, as signed).
    pub issued_ms: u64,
}

impl Handler<ReleaseClaim> for StoreActor {
    type Result = Result<ReleaseOutcome, StoreError>;
    fn handle(&mut self, m: ReleaseClaim, _: &mut SyncContext<Self>) -> Self::Result {
        self.with(|s| s.release_claim(&m.name, &m.owner, m.issued_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::sqlite::SqliteStore;
    use crate::store::NewMessage;

    fn append(recipient: u8, n: u8, ts: u64) -> WriteOp {
        WriteOp::Append(NewMessage {
            recipient: [recipient; 32],
            sender: [9; 32],
            msg_id: [n; 16],
            timestamp_ms: ts,
            payload: vec![1, 2, 3].into(),
        })
    }

    #[test]
    fn the_stored_messages_gauge_follows_appends_acks_and_expiry() {
        let gauge = Gauge::default();
        let shared =
            SharedStore::new(Box::new(MemoryStore::new()), Quotas::UNLIMITED, gauge.clone()).expect("new");
        assert_eq!(gauge.get(), 0);
        shared
            .commit(&[
                append(1, 1, 10),
                append(1, 2, 10),
                append(2, 3, 5_000),
                append(2, 3, 5_000),
            ])
            .expect("commit");
        assert_eq!(gauge.get(), 3, "the duplicate is not counted");
        let ack = |n: u8| WriteOp::Ack {
            recipient: [1; 32],
            sender: [9; 32],
            msg_id: [n; 16],
        };
        shared.commit(&[ack(1), ack(1), ack(7)]).expect("acks");
        assert_eq!(gauge.get(), 2, "one message acknowledged, once");
        let expire = WriteOp::Expire {
            before_ms: 1_000,
            acked_before_ms: 1_000,
            notices_before_ms: 0,
        };
        shared.commit(&[expire]).expect("expiry");
        assert_eq!(gauge.get(), 1, "message 2 expired, message 3 still waits");
    }

    #[test]
    fn the_stored_messages_gauge_starts_from_what_the_store_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path(), false).expect("open");
            let shared = SharedStore::new(Box::new(store), Quotas::UNLIMITED, Gauge::default()).expect("new");
            shared
                .commit(&[append(1, 1, 10), append(1, 2, 10)])
                .expect("commit");
        }
        let gauge = Gauge::default();
        let store = SqliteStore::open(dir.path(), false).expect("reopen");
        let shared = SharedStore::new(Box::new(store), Quotas::UNLIMITED, gauge.clone()).expect("new");
        assert_eq!(gauge.get(), 2);
        let err = shared
            .with(|_| Err::<(), _>(StoreError::Corrupt("test")))
            .expect_err("an error");
        assert!(
            err.to_string()
                .contains(&dir.path().join("relay.db").display().to_string()),
            "{err}"
        );
    }
}
