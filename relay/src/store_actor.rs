//! The store actor: serves the [`Store`] on a SyncArbiter thread, so blocking database
//! work never runs on the connections' event loop.

use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;

use crate::lease::Lease;
use crate::store::{
    ClaimOutcome, IdentityBytes, Quotas, ReleaseOutcome, Store, StoreError, StoredBundle, StoredMessage,
    WriteOp, WriteResult,
};

/// The open store. Only the store thread uses it, except the memory store, which
/// connections also write to directly (see [`crate::committer::commit_direct`]).
pub struct SharedStore {
    store: Mutex<Box<dyn Store>>,
    quotas: Quotas,
}

impl SharedStore {
    /// Wraps an open store; messages are stored only within `quotas`.
    pub fn new(store: Box<dyn Store>, quotas: Quotas) -> Self {
        Self {
            store: Mutex::new(store),
            quotas,
        }
    }

    /// The store, locked (unavailable if a thread panicked while holding it).
    pub fn lock(&self) -> Result<MutexGuard<'_, Box<dyn Store>>, StoreError> {
        self.store.lock().map_err(|_| StoreError::Unavailable)
    }

    /// Applies writes atomically, in order.
    pub fn commit(&self, ops: &[WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        self.lock()?.commit(ops, &self.quotas)
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

    fn store(&self) -> Result<MutexGuard<'_, Box<dyn Store>>, StoreError> {
        self.store.lock()
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
        self.store()?
            .pending(&msg.recipient, msg.after, msg.limit, msg.not_before_ms)
    }
}

/// Count a recipient's queue.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct QueueLen(pub IdentityBytes);

impl Handler<QueueLen> for StoreActor {
    type Result = Result<u64, StoreError>;
    fn handle(&mut self, msg: QueueLen, _: &mut SyncContext<Self>) -> Self::Result {
        self.store()?.queue_len(&msg.0)
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
        self.store()?.publish_prekeys(
            &m.owner,
            &m.signed_prekey,
            &m.signature,
            &m.one_time,
            m.max_prekeys,
        )
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
        self.store()?.fetch_bundle(&msg.owner, msg.take_one_time)
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
        self.store()?.record_auth(&msg.identity, msg.at_ms)
    }
}

/// When an identity was last seen (ms since the epoch), `None` if never.
#[derive(Message)]
#[rtype(result = "Result<Option<u64>, StoreError>")]
pub struct LastSeen(pub IdentityBytes);

impl Handler<LastSeen> for StoreActor {
    type Result = Result<Option<u64>, StoreError>;
    fn handle(&mut self, msg: LastSeen, _: &mut SyncContext<Self>) -> Self::Result {
        self.store()?.last_seen(&msg.0)
    }
}

/// Count one-time prekeys held for an owner.
#[derive(Message)]
#[rtype(result = "Result<Option<u32>, StoreError>")]
pub struct PrekeyCount(pub IdentityBytes);

impl Handler<PrekeyCount> for StoreActor {
    type Result = Result<Option<u32>, StoreError>;
    fn handle(&mut self, msg: PrekeyCount, _: &mut SyncContext<Self>) -> Self::Result {
        self.store()?.prekey_count(&msg.0)
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
        self.store()?
            .put_claim(&m.name, &m.owner, &m.claim, m.now_ms, m.lease)
    }
}

/// Look up a name claim.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StoreError>")]
pub struct GetClaim(pub String);

impl Handler<GetClaim> for StoreActor {
    type Result = Result<Option<Vec<u8>>, StoreError>;
    fn handle(&mut self, msg: GetClaim, _: &mut SyncContext<Self>) -> Self::Result {
        self.store()?.get_claim(&msg.0)
    }
}

/// Look up the claim an identity holds (the reverse lookup).
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, StoreError>")]
pub struct ClaimOf(pub IdentityBytes);

impl Handler<ClaimOf> for StoreActor {
    type Result = Result<Option<Vec<u8>>, StoreError>;
    fn handle(&mut self, msg: ClaimOf, _: &mut SyncContext<Self>) -> Self::Result {
        self.store()?.claim_of(&msg.0)
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
        self.store()?.release_claim(&m.name, &m.owner, m.issued_ms)
    }
}
