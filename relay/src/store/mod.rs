//! The message store behind a trait: [`sqlite::SqliteStore`] (durable, WAL),
//! [`redis::RedisStore`] (durable with AOF `appendfsync always`, shared by several relays)
//! and [`memory::MemoryStore`].
//!
//! Writes come in batches, each committed atomically (one fsync for the whole batch).

pub mod group;
pub mod memory;
pub mod redis;
pub mod sqlite;

use bytes::Bytes;
use e2ee_protocol::frame::ExpiredNotice;
use e2ee_protocol::name_claim::NameClaim;
use thiserror::Error;

use crate::lease::Lease;

/// A 32-byte identity (Ed25519 public key) as the relay sees it: an opaque address.
pub type IdentityBytes = [u8; 32];
/// A sender-chosen message id.
pub type MsgId = [u8; 16];

/// Bytes a stored message counts for beyond its payload, in the per-sender byte quota and
/// the storage budget: its row (recipient, sender, id, time, sequence number) and its
/// index entries, rounded up.
pub const STORED_MESSAGE_OVERHEAD: u64 = 128;

/// What a message with a payload of `payload_len` bytes counts for in the byte quotas.
pub fn stored_size(payload_len: usize) -> u64 {
    u64::try_from(payload_len)
        .unwrap_or(u64::MAX)
        .saturating_add(STORED_MESSAGE_OVERHEAD)
}

/// Unacknowledged messages and the bytes they count for ([`stored_size`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// How many.
    pub messages: u64,
    /// Their stored sizes, summed.
    pub bytes: u64,
}

impl Usage {
    /// `messages` unacknowledged messages whose payloads take `payload_bytes` together.
    pub fn of(messages: u64, payload_bytes: u64) -> Self {
        Self {
            messages,
            bytes: payload_bytes.saturating_add(messages.saturating_mul(STORED_MESSAGE_OVERHEAD)),
        }
    }

    /// Counts one more message of `size` bytes.
    pub fn add(&mut self, size: u64) {
        self.messages = self.messages.saturating_add(1);
        self.bytes = self.bytes.saturating_add(size);
    }

    /// Counts one message of `size` bytes less.
    pub fn remove(&mut self, size: u64) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
    }

    /// Takes away the usage of `other` (messages that expired).
    pub fn subtract(&mut self, other: Usage) {
        self.messages = self.messages.saturating_sub(other.messages);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }
}

/// Which storage bound refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quota {
    /// The recipient's queue holds [`Quotas::queue`] messages.
    RecipientQueue,
    /// The sender has [`Quotas::sender_messages`] unacknowledged messages stored.
    SenderMessages,
    /// The sender's unacknowledged messages would take more than [`Quotas::sender_bytes`].
    SenderBytes,
    /// All unacknowledged messages would take more than [`Quotas::stored_bytes`].
    StorageBudget,
}

impl Quota {
    /// A constant snake_case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Quota::RecipientQueue => "recipient_queue",
            Quota::SenderMessages => "sender_messages",
            Quota::SenderBytes => "sender_bytes",
            Quota::StorageBudget => "storage_budget",
        }
    }
}

/// The bounds a commit checks before it stores a message (docs/PROTOCOL.md 1.9). Only
/// unacknowledged messages count; a message stops counting once its recipient
/// acknowledges it or it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Most unacknowledged messages per recipient.
    pub queue: u64,
    /// Most unacknowledged messages per sender, across all its recipients.
    pub sender_messages: u64,
    /// Most bytes ([`stored_size`]) of one sender's unacknowledged messages.
    pub sender_bytes: u64,
    /// Most bytes ([`stored_size`]) of all unacknowledged messages: the storage budget.
    pub stored_bytes: u64,
}

impl Quotas {
    /// No bound at all.
    pub const UNLIMITED: Quotas = Quotas {
        queue: u64::MAX,
        sender_messages: u64::MAX,
        sender_bytes: u64::MAX,
        stored_bytes: u64::MAX,
    };

    /// Whether a message of `size` bytes may be stored for a recipient whose queue holds
    /// `queue_len` messages, from a sender whose stored messages are `sender`, with
    /// `stored` held in all; if not, the first bound it would break.
    pub fn check(&self, queue_len: u64, sender: Usage, stored: Usage, size: u64) -> Result<(), Quota> {
        if queue_len >= self.queue {
            Err(Quota::RecipientQueue)
        } else if sender.messages >= self.sender_messages {
            Err(Quota::SenderMessages)
        } else if sender.bytes.saturating_add(size) > self.sender_bytes {
            Err(Quota::SenderBytes)
        } else if stored.bytes.saturating_add(size) > self.stored_bytes {
            Err(Quota::StorageBudget)
        } else {
            Ok(())
        }
    }
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The addressed recipient.
    pub recipient: IdentityBytes,
    /// The authenticated sender.
    pub sender: IdentityBytes,
    /// The sender's message id (idempotency key with the sender).
    pub msg_id: MsgId,
    /// When the relay received it (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Opaque ciphertext (shared, not copied, between the store and deliveries).
    pub payload: Bytes,
}

/// A stored message awaiting delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Store order; increases with commit order.
    pub seq: u64,
    /// The sender.
    pub sender: IdentityBytes,
    /// The sender's message id.
    pub msg_id: MsgId,
    /// Receive time (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Opaque ciphertext (shared, not copied, between the store and deliveries).
    pub payload: Bytes,
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Store a message for its recipient.
    Append(NewMessage),
    /// The recipient acknowledged a message: it will not be delivered again.
    Ack {
        /// The acknowledging recipient (only it may remove its messages).
        recipient: IdentityBytes,
        /// The message's sender.
        sender: IdentityBytes,
        /// The message's id.
        msg_id: MsgId,
    },
    /// `identity` was connected at `at_ms` (ms since the epoch), for `QueryAway`
    /// (docs/PROTOCOL.md 1.8): kept as when it was last seen unless the time recorded is
    /// less than `precision_ms` older (so it never goes back, and reconnecting within
    /// the precision writes nothing).
    Seen {
        /// The identity seen.
        identity: IdentityBytes,
        /// When.
        at_ms: u64,
        /// See [`crate::away::AwayNotice::precision_ms`].
        precision_ms: u64,
    },
    /// Drop messages received before `before_ms`, and forget the ids of acknowledged
    /// messages received before `acked_before_ms` (a retransmission of one of those is a
    /// new message).
    Expire {
        /// Cut-off time for every message (ms since the Unix epoch).
        before_ms: u64,
        /// Cut-off time for acknowledged messages (ms since the Unix epoch).
        acked_before_ms: u64,
        /// Expiry notices (docs/PROTOCOL.md 1.6) of messages stored before this are
        /// dropped unread (ms since the Unix epoch; a TTL after they expired).
        notices_before_ms: u64,
    },
    /// An upload to a group: queued for every other member, in the group's one order
    /// (a commit also moves the group to its next epoch), docs/PROTOCOL.md 8.4.
    Group(group::GroupWrite),
    /// `sender` read its expiry notices up to sequence number `through`.
    AckExpired {
        /// Whose notices.
        sender: IdentityBytes,
        /// The last notice read.
        through: u64,
    },
}

impl WriteOp {
    /// The message bytes this write holds while it waits to be committed (the payload of
    /// a message, nothing for other writes).
    pub fn queued_bytes(&self) -> usize {
        match self {
            WriteOp::Append(m) => m.payload.len(),
            WriteOp::Group(g) => {
                g.message.len()
                    + g.commit
                        .as_ref()
                        .and_then(|c| c.welcome.as_ref())
                        .map_or(0, |w| w.len())
            }
            _ => 0,
        }
    }
}

/// The result of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// Stored under this sequence number.
    Appended {
        /// The new message's sequence number.
        seq: u64,
    },
    /// The same (sender, message id) was stored before for the same recipient; nothing
    /// was added.
    Duplicate,
    /// The sender used this message id for another recipient (stored, or acknowledged
    /// within the deduplication window); nothing was added.
    IdReused,
    /// Storing it would break this bound; nothing was added.
    QuotaExceeded(Quota),
    /// The acknowledgement removed a message (false if there was none).
    Acked(bool),
    /// How many messages expired (each now has an expiry notice for its sender).
    Expired(u64),
    /// How many expiry notices an acknowledgement removed.
    NoticesAcked(u64),
    /// A seen time was recorded (or the one recorded was recent enough).
    Seen,
    /// What an upload to a group did.
    Group(group::GroupResult),
}

/// A KeyPackage handed out ([`Store::take_key_package`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenKeyPackage {
    /// The KeyPackage.
    pub package: Vec<u8>,
    /// True for a one-time KeyPackage (now removed), false for the last-resort one.
    pub one_time: bool,
    /// One-time KeyPackages left.
    pub remaining: u32,
}

/// A stored prekey bundle split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// Signed prekey public key.
    pub signed_prekey: [u8; 32],
    /// Its signature (64 bytes).
    pub signature: Vec<u8>,
    /// The one-time prekey handed out with this fetch, if one was asked for and any was
    /// left.
    pub one_time_prekey: Option<[u8; 32]>,
    /// One-time prekeys left after this fetch.
    pub remaining: u32,
}

/// What storing a name claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The name was free or already the claimer's; the claim is stored.
    Stored,
    /// The name was another identity's whose lease had run out; it is the claimer's now.
    TakenOver {
        /// The identity that held it.
        from: IdentityBytes,
    },
    /// Another identity holds the name and its lease runs; nothing was stored.
    HeldByAnother,
}

/// What a release of a name did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The claim is deleted; the name is free.
    Released,
    /// The name is not held by the releasing identity (free, or another's).
    NotHeld,
    /// The stored claim was issued after the release: the release is older than the
    /// claim it would remove, and nothing was deleted.
    OlderThanClaim {
        /// `issued_ms` of the stored claim.
        claim_issued_ms: u64,
    },
}

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The data directory could not be prepared.
    #[error("store io error: {0}")]
    Io(#[from] std::io::Error),
    /// Redis could not be reached or refused a command; the relay refuses writes with a
    /// retry until it answers again.
    #[error("redis {endpoint}: {reason}")]
    Redis {
        /// The Redis address(es) the relay uses.
        endpoint: String,
        /// What failed (the client's or server's message).
        reason: String,
    },
    /// Stored data is not what the relay wrote.
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
    /// The store is not available (it failed to open).
    #[error("store unavailable")]
    Unavailable,
    /// The database file could not be opened or prepared.
    #[error("cannot open the store {path}: {reason}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// What failed (the database's own message).
        reason: String,
    },
    /// An error of the store kept in a file, naming the file.
    #[error("store {path}: {source}")]
    InFile {
        /// The database file.
        path: std::path::PathBuf,
        /// The error.
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// This error, naming the store's file `path` (when it has one and the error does
    /// not name it already).
    pub fn in_file(self, path: Option<&std::path::Path>) -> Self {
        match (path, self) {
            (_, err @ (StoreError::Open { .. } | StoreError::InFile { .. })) => err,
            (Some(path), err) => StoreError::InFile {
                path: path.to_path_buf(),
                source: Box::new(err),
            },
            (None, err) => err,
        }
    }

    /// The underlying reason, without the words "database error" around it.
    fn reason(&self) -> String {
        match self {
            StoreError::Database(err) => err.to_string(),
            StoreError::Io(err) => err.to_string(),
            other => other.to_string(),
        }
    }
}

/// What a message store must do.
pub trait Store: Send {
    /// The file the store keeps its data in (`None` for the memory store), named in
    /// its errors.
    fn path(&self) -> Option<&std::path::Path> {
        None
    }
    /// The unacknowledged messages the store held after the last commit, when it knows
    /// better than counting this relay's own writes (a store shared by several relays);
    /// `None`: count them.
    fn stored_messages(&self) -> Option<u64> {
        None
    }
    /// Whether the engine stores group writes and KeyPackages (docs/PROTOCOL.md 8); a
    /// relay on one that does not refuses the group frames.
    fn supports_groups(&self) -> bool {
        true
    }
    /// Applies the writes atomically, in order; a message is stored only within `quotas`.
    fn commit(&mut self, ops: &[WriteOp], quotas: &Quotas) -> Result<Vec<WriteResult>, StoreError>;
    /// `sender`'s unacknowledged messages, across all recipients.
    fn sender_usage(&mut self, sender: &IdentityBytes) -> Result<Usage, StoreError>;
    /// All unacknowledged messages.
    fn stored_usage(&mut self) -> Result<Usage, StoreError>;
    /// Up to `limit` unacknowledged messages for `recipient` with `seq > after`, in order,
    /// not older than `not_before_ms`.
    fn pending(
        &mut self,
        recipient: &IdentityBytes,
        after: u64,
        limit: usize,
        not_before_ms: u64,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Up to `limit` expiry notices for `sender` with a sequence number above `after`,
    /// oldest first, each with its sequence number.
    fn expired_notices(
        &mut self,
        sender: &IdentityBytes,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ExpiredNotice)>, StoreError>;
    /// How many unacknowledged messages await `recipient`.
    fn queue_len(&mut self, recipient: &IdentityBytes) -> Result<u64, StoreError>;
    /// Replaces the signed prekey and adds one-time prekeys (up to `max_prekeys` held).
    /// Returns the one-time prekeys now held.
    fn publish_prekeys(
        &mut self,
        owner: &IdentityBytes,
        signed_prekey: &[u8; 32],
        signature: &[u8],
        one_time: &[[u8; 32]],
        max_prekeys: u32,
    ) -> Result<u32, StoreError>;
    /// The owner's bundle. With `take_one_time` it carries at most one one-time prekey,
    /// which is removed for good; without, none, and every one-time prekey stays.
    fn fetch_bundle(
        &mut self,
        owner: &IdentityBytes,
        take_one_time: bool,
    ) -> Result<Option<StoredBundle>, StoreError>;
    /// One-time prekeys held for `owner` (None if it never published).
    fn prekey_count(&mut self, owner: &IdentityBytes) -> Result<Option<u32>, StoreError>;
    /// Adds `owner`'s one-time KeyPackages (up to `max_held` held; the rest are dropped)
    /// and, when given, replaces its last-resort KeyPackage. Returns the one-time
    /// KeyPackages now held (docs/PROTOCOL.md 8.2).
    fn publish_key_packages(
        &mut self,
        owner: &IdentityBytes,
        packages: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        max_held: u32,
    ) -> Result<u32, StoreError>;
    /// Takes `owner`'s oldest one-time KeyPackage (removed for good) when `one_time`
    /// and one is left, else a copy of its last-resort one. `None` if there is neither.
    fn take_key_package(
        &mut self,
        owner: &IdentityBytes,
        one_time: bool,
    ) -> Result<Option<TakenKeyPackage>, StoreError>;
    /// Records that `identity` authenticated at `at_ms`, for the lease of the names it
    /// holds (an identity that holds none has nothing to record).
    fn record_auth(&mut self, identity: &IdentityBytes, at_ms: u64) -> Result<(), StoreError>;
    /// When `identity` was last seen (ms since the epoch), as [`WriteOp::Seen`] recorded
    /// it; `None` if never (or forgotten).
    fn last_seen(&mut self, identity: &IdentityBytes) -> Result<Option<u64>, StoreError>;
    /// Stores `owner`'s claim of `name` at `now_ms`: if the name is free or `owner`'s, or
    /// its holder's `lease` has run out (then `owner` takes it over).
    fn put_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        claim: &[u8],
        now_ms: u64,
        lease: Lease,
    ) -> Result<ClaimOutcome, StoreError>;
    /// The claim stored for a name.
    fn get_claim(&mut self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The reverse lookup: the claim `identity` stored last among the names it holds.
    fn claim_of(&mut self, identity: &IdentityBytes) -> Result<Option<Vec<u8>>, StoreError>;
    /// Deletes `owner`'s claim of `name`, given a verified release of it issued at
    /// `issued_ms`: only if `owner` holds the name and the stored claim was not issued
    /// after the release.
    fn release_claim(
        &mut self,
        name: &str,
        owner: &IdentityBytes,
        issued_ms: u64,
    ) -> Result<ReleaseOutcome, StoreError>;
}

/// `issued_ms` of a stored claim (the relay stores only claims that decoded and verified).
pub(crate) fn claim_issued_ms(claim: &[u8]) -> Result<u64, StoreError> {
    NameClaim::decode(claim)
        .map(|c| c.issued_ms)
        .map_err(|_| StoreError::Corrupt("stored name claim does not decode"))
}

/// Whether a release issued at `release_issued_ms` may delete the stored `claim`.
pub(crate) fn release_of(claim: &[u8], release_issued_ms: u64) -> Result<ReleaseOutcome, StoreError> {
    let claim_issued_ms = claim_issued_ms(claim)?;
    Ok(if release_issued_ms < claim_issued_ms {
        ReleaseOutcome::OlderThanClaim { claim_issued_ms }
    } else {
        ReleaseOutcome::Released
    })
}

/// Runs the same behavioural checks against any engine.
#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
pub(crate) mod group_contract;
