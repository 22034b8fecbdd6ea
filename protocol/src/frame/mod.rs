//! Relay wire frames: the messages a client and the relay exchange over one TCP stream.
//!
//! On the stream every frame is `length u32be || body`, where `length` counts the body
//! only. The body is `version u8 (= 1) || type u8 || fields`; [`Frame::encode`] and
//! [`Frame::decode`] handle the body, and [`crate::codec::FrameCodec`] adds the length
//! prefix. Variable-length byte fields are `u32be length || bytes`, strings are
//! `u16be length || UTF-8`, optional values are a presence byte (`0` absent, `1` present,
//! anything else malformed) followed by the value when present. Every length is bounded
//! by a constant of this module. The full layout is in `docs/PROTOCOL.md`.

use crate::consts::{KEY_LEN, SIGNATURE_LEN};
use crate::error::DecodeError;
use crate::group::{MAX_GROUP_MEMBERS, MAX_KEY_PACKAGES, MAX_KEY_PACKAGE_LEN, MAX_MLS_MESSAGE_LEN};
use crate::reader::Reader;

mod debug;
mod decode;
mod deliver_ref;
mod encode;
mod error_code;
#[cfg(test)]
mod tests;

pub use deliver_ref::DeliverRef;
use encode::put_bytes_u32;
pub use error_code::ErrorCode;

/// The version byte every frame body starts with.
pub const FRAME_VERSION: u8 = 1;
/// Length of the length prefix that precedes every body on the stream.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// The hard maximum body length; a codec may be configured lower, never higher.
pub const MAX_FRAME_LEN: usize = 256 * 1024;
/// The largest prekey bundle in `PublishPreKeys` and `Bundle`.
pub const MAX_BUNDLE_LEN: usize = 64 * 1024;
/// The largest signed name claim in `PublishName` and `NameClaim`.
pub const MAX_CLAIM_LEN: usize = 1024;
/// The shortest name in `LookupName`, in bytes.
pub const MIN_NAME_LEN: usize = 1;
/// The longest name in `LookupName`, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The largest message payload in `Send` and `Deliver`.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;
/// The longest reason in an `Error` frame, in UTF-8 bytes.
pub const MAX_REASON_LEN: usize = 256;
/// Length of a message id.
pub const MSG_ID_LEN: usize = 16;
/// Domain separation prefix of the bytes a client signs to authenticate over plain TCP.
pub const AUTH_CONTEXT: &[u8] = b"e2ee-chat/relay-auth/v1";
/// Domain separation prefix of the channel-bound login, over TLS (docs/PROTOCOL.md 1.5).
pub const AUTH_CONTEXT_V2: &[u8] = b"e2ee-chat/relay-auth/v2";
/// Body length of an `Auth` frame (version, type, identity, signature): 98 bytes. The
/// only frame a client may send before it is authenticated, so a relay reads no longer
/// body until then (docs/PROTOCOL.md 1.2, 1.5).
pub const AUTH_FRAME_LEN: usize = 2 + KEY_LEN + SIGNATURE_LEN;
/// The most notices one `Expired` frame carries (48 KiB of notices).
pub const MAX_EXPIRED_NOTICES: usize = 1000;
/// `Features` flag: refusals are sent as `Refused` frames naming the refused request,
/// and a stored `PublishName` is answered `Accepted` (docs/PROTOCOL.md 1.11).
pub const FEATURE_NAMED_REFUSALS: u32 = 1;
/// `away_days` in an `Away` reply for an identity that has never authenticated at the
/// relay (or that the relay has forgotten): `0xFFFF_FFFF`.
pub const AWAY_NEVER: u32 = u32::MAX;

/// Type bytes of every frame.
mod ty {
    pub const CHALLENGE: u8 = 0x01;
    pub const AUTH: u8 = 0x02;
    pub const AUTH_OK: u8 = 0x03;
    pub const FEATURES: u8 = 0x04;
    pub const PUBLISH_PREKEYS: u8 = 0x10;
    pub const FETCH_BUNDLE: u8 = 0x11;
    pub const BUNDLE: u8 = 0x12;
    pub const PREKEYS_LOW: u8 = 0x13;
    pub const PREKEYS_STORED: u8 = 0x14;
    pub const PUBLISH_NAME: u8 = 0x15;
    pub const LOOKUP_NAME: u8 = 0x16;
    pub const NAME_CLAIM: u8 = 0x17;
    pub const LOOKUP_IDENTITY: u8 = 0x18;
    pub const RELEASE_NAME: u8 = 0x19;
    pub const QUERY_AWAY: u8 = 0x1A;
    pub const AWAY: u8 = 0x1B;
    pub const SEND: u8 = 0x20;
    pub const SENT_ACK: u8 = 0x21;
    pub const DELIVER: u8 = 0x22;
    pub const DELIVERY_ACK: u8 = 0x23;
    pub const EXPIRED: u8 = 0x24;
    pub const EXPIRED_ACK: u8 = 0x25;
    pub const RATE_LIMITED: u8 = 0x30;
    pub const QUOTA_EXCEEDED: u8 = 0x31;
    pub const QUERY_QUOTA: u8 = 0x32;
    pub const QUOTA: u8 = 0x33;
    pub const REFUSED: u8 = 0x34;
    pub const ACCEPTED: u8 = 0x35;
    pub const GROUP_SEND: u8 = 0x50;
    pub const GROUP_COMMIT: u8 = 0x51;
    pub const GROUP_EPOCH: u8 = 0x52;
    pub const PUBLISH_KEY_PACKAGES: u8 = 0x53;
    pub const KEY_PACKAGE_COUNT: u8 = 0x54;
    pub const FETCH_KEY_PACKAGE: u8 = 0x55;
    pub const KEY_PACKAGE: u8 = 0x56;
    pub const PING: u8 = 0x40;
    pub const PONG: u8 = 0x41;
    pub const ERROR: u8 = 0x7F;
}

/// The bytes a client signs with its Ed25519 identity key to answer a `Challenge` on a
/// TLS connection: `AUTH_CONTEXT_V2 || relay_id || nonce || identity || channel_binding`
/// (151 bytes), where `channel_binding` is the connection's RFC 9266 `tls-exporter`
/// value, so the signature is good on this one connection only.
pub fn channel_bound_auth_message(
    relay_id: &[u8; 32],
    nonce: &[u8; 32],
    identity: &[u8; 32],
    channel_binding: &[u8; 32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUTH_CONTEXT_V2.len() + 4 * KEY_LEN);
    out.extend_from_slice(AUTH_CONTEXT_V2);
    out.extend_from_slice(relay_id);
    out.extend_from_slice(nonce);
    out.extend_from_slice(identity);
    out.extend_from_slice(channel_binding);
    out
}

/// The bytes a client signs with its Ed25519 identity key to answer a `Challenge`:
/// `AUTH_CONTEXT || relay_id || nonce || identity`.
pub fn auth_message(relay_id: &[u8; 32], nonce: &[u8; 32], identity: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(AUTH_CONTEXT.len() + 3 * KEY_LEN);
    out.extend_from_slice(AUTH_CONTEXT);
    out.extend_from_slice(relay_id);
    out.extend_from_slice(nonce);
    out.extend_from_slice(identity);
    out
}

/// A message the relay dropped unread at its TTL: the `recipient` and `msg_id` of the
/// sender's `Send` (docs/PROTOCOL.md 1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExpiredNotice {
    /// The recipient it was for.
    pub recipient: [u8; 32],
    /// The sender's message id.
    pub msg_id: [u8; 16],
}

/// One relay wire frame. Fixed-size keys are `[u8; 32]`, signatures `[u8; 64]`,
/// message ids `[u8; 16]`; payloads, bundles and claims are opaque bytes here.
///
/// `Debug` prints the length of opaque byte fields, never their contents.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// 0x01, relay → client, the first frame of every connection.
    Challenge {
        /// The relay's stable 32-byte identifier.
        relay_id: [u8; 32],
        /// A fresh random nonce for this connection.
        nonce: [u8; 32],
    },
    /// 0x02, client → relay: proof of holding `identity`, over [`auth_message`].
    Auth {
        /// The client's Ed25519 identity public key.
        identity: [u8; 32],
        /// Ed25519 signature of [`auth_message`] by `identity`.
        signature: [u8; 64],
    },
    /// 0x03, relay → client: authentication succeeded.
    AuthOk {
        /// How many stored messages await the client; they follow as `Deliver`.
        queued: u32,
    },
    /// 0x10, client → relay: publish (replace) the client's prekey bundle.
    PublishPreKeys {
        /// The bundle in the crypto v1 bundle encoding, at most [`MAX_BUNDLE_LEN`] bytes.
        bundle: Vec<u8>,
    },
    /// 0x11, client → relay: fetch another identity's bundle (consumes one OPK).
    FetchBundle {
        /// Chosen by the client, echoed in the `Bundle` reply.
        request_id: u32,
        /// The identity whose bundle is wanted.
        identity: [u8; 32],
    },
    /// 0x12, relay → client: the reply to `FetchBundle`.
    Bundle {
        /// The `request_id` of the `FetchBundle`.
        request_id: u32,
        /// The bundle (with at most one OPK), or `None` if none is known.
        bundle: Option<Vec<u8>>,
    },
    /// 0x13, relay → client: the client's one-time prekeys are running low.
    PreKeysLow {
        /// One-time prekeys the relay still holds for the client.
        remaining: u32,
    },
    /// 0x14, relay → client: a `PublishPreKeys` is stored.
    PreKeysStored {
        /// One-time prekeys the relay now holds for the client.
        opks: u32,
    },
    /// 0x15, client → relay: publish a signed name claim.
    PublishName {
        /// The signed claim, at most [`MAX_CLAIM_LEN`] bytes.
        claim: Vec<u8>,
    },
    /// 0x16, client → relay: look up the claim for a name.
    LookupName {
        /// Chosen by the client, echoed in the `NameClaim` reply.
        request_id: u32,
        /// The name, [`MIN_NAME_LEN`]..=[`MAX_NAME_LEN`] bytes of UTF-8.
        name: String,
    },
    /// 0x17, relay → client: the reply to `LookupName`, `LookupIdentity` or
    /// `ReleaseName`.
    NameClaim {
        /// The `request_id` of the request it answers.
        request_id: u32,
        /// The stored claim, or `None` if the name (or identity) holds no claim.
        claim: Option<Vec<u8>>,
    },
    /// 0x18, client → relay: the reverse lookup, which name (if any) the registry binds
    /// to an identity. Answered by `NameClaim`.
    LookupIdentity {
        /// Chosen by the client, echoed in the `NameClaim` reply.
        request_id: u32,
        /// The identity key asked about.
        identity: [u8; 32],
    },
    /// 0x19, client → relay: give up a name with a signed release
    /// ([`crate::name_release::NameRelease`]). Answered by an absent `NameClaim` once the
    /// name is free, or refused with `Error(NotOwner)` / `Error(InvalidClaim)`.
    ReleaseName {
        /// Chosen by the client, echoed in the `NameClaim` reply.
        request_id: u32,
        /// The signed release, at most [`MAX_CLAIM_LEN`] bytes.
        release: Vec<u8>,
    },
    /// 0x1A, client → relay: how long an identity has been away from the relay, in
    /// whole days (docs/PROTOCOL.md 1.8). Answered by `Away`.
    QueryAway {
        /// Chosen by the client, echoed in the `Away` reply.
        request_id: u32,
        /// The identity key asked about.
        identity: [u8; 32],
    },
    /// 0x1B, relay → client: the reply to `QueryAway`.
    Away {
        /// The `request_id` of the `QueryAway`.
        request_id: u32,
        /// `0`: the identity is connected to the relay, or was within the relay's
        /// notice period; `1..=0xFFFF_FFFE`: it was last connected that many whole days
        /// ago (at least 1; with a notice period of whole days, at least that many);
        /// [`AWAY_NEVER`]: never, or the relay forgot it.
        away_days: u32,
    },
    /// 0x20, client → relay: store and forward a message to one recipient.
    Send {
        /// The recipient's identity key.
        recipient: [u8; 32],
        /// Sender-chosen id; `(sender, msg_id)` makes retransmissions idempotent.
        msg_id: [u8; 16],
        /// The encrypted message, at most [`MAX_PAYLOAD_LEN`] bytes.
        payload: Vec<u8>,
    },
    /// 0x21, relay → client: the message `msg_id` is durably stored.
    SentAck {
        /// The id from the `Send`.
        msg_id: [u8; 16],
    },
    /// 0x22, relay → client: a message for the client, repeated until acknowledged.
    Deliver {
        /// The authenticated identity that sent it.
        sender: [u8; 32],
        /// The sender's id for the message.
        msg_id: [u8; 16],
        /// When the relay stored it, in milliseconds since the Unix epoch.
        timestamp_ms: u64,
        /// The encrypted message, at most [`MAX_PAYLOAD_LEN`] bytes.
        payload: Vec<u8>,
    },
    /// 0x23, client → relay: a delivered message is received; the relay deletes it.
    DeliveryAck {
        /// The `sender` of the `Deliver`.
        sender: [u8; 32],
        /// The `msg_id` of the `Deliver`.
        msg_id: [u8; 16],
    },
    /// 0x24, relay → client (only after the client's `ExpiredAck { through: 0 }`):
    /// messages the client sent that expired unread at the relay. Sent again on the
    /// next connection until acknowledged.
    Expired {
        /// The relay's sequence number of the last notice here; acknowledge it.
        through: u64,
        /// 1 to [`MAX_EXPIRED_NOTICES`] notices, oldest first.
        notices: Vec<ExpiredNotice>,
    },
    /// 0x25, client → relay: the `Expired` notices up to `through` are read (the relay
    /// deletes them). `through = 0` asks for notices on this connection.
    ExpiredAck {
        /// The `through` of an `Expired` frame, or 0 to ask for notices.
        through: u64,
    },
    /// 0x30, relay → client: a request was refused by the rate limiter.
    RateLimited {
        /// The refused `Send`, or `None` for another request.
        msg_id: Option<[u8; 16]>,
        /// How long to wait before retrying, in milliseconds.
        retry_after_ms: u32,
    },
    /// 0x31, relay → client: a `Send` was refused because the recipient's queue is full.
    QuotaExceeded {
        /// The refused `Send`.
        msg_id: [u8; 16],
        /// Its recipient.
        recipient: [u8; 32],
        /// How long to wait before resending it, in milliseconds (the queue empties
        /// only as its owner reads it, so this is the relay's suggestion, not a promise).
        retry_after_ms: u32,
    },
    /// 0x32, client → relay: ask for the client's send quota.
    QueryQuota,
    /// 0x33, relay → client: the client's send quota (a token bucket).
    Quota {
        /// Tokens left now.
        remaining: u32,
        /// Bucket capacity.
        capacity: u32,
        /// Tokens added per second.
        refill_per_sec: u32,
    },
    /// 0x34, relay → client (only after `Features` with [`FEATURE_NAMED_REFUSALS`]): the
    /// request the client sent as its `request_seq`-th frame on this connection is
    /// refused (docs/PROTOCOL.md 1.11). Every refusal that does not close the connection
    /// takes this form then, in place of `Error`, `RateLimited` and `QuotaExceeded`.
    Refused {
        /// The refused frame's position among the frames the client sent on this
        /// connection, its `Auth` being 0.
        request_seq: u32,
        /// The refused frame's type byte.
        request_type: u8,
        /// Why: [`ErrorCode::RateLimited`] and [`ErrorCode::QuotaExceeded`] may be
        /// retried after `retry_after_ms`; any other code is final for that request.
        code: ErrorCode,
        /// For a retryable code, wait at least this long (ms) before sending the same
        /// request again; 0 otherwise.
        retry_after_ms: u32,
        /// Human-readable detail, at most [`MAX_REASON_LEN`] bytes of UTF-8.
        reason: String,
    },
    /// 0x35, relay → client (only after `Features` with [`FEATURE_NAMED_REFUSALS`]): the
    /// request sent as frame `request_seq`, one that has no reply of its own
    /// (`PublishName`), was carried out.
    Accepted {
        /// As in `Refused`.
        request_seq: u32,
    },
    /// 0x04, client → relay: the optional behaviours the client asks for on this
    /// connection, from its next frame on (bit flags; unknown bits are ignored). Not
    /// answered. A relay of revision 7 or earlier closes the connection with
    /// `Error(Malformed)`.
    Features {
        /// [`FEATURE_NAMED_REFUSALS`], or 0.
        flags: u32,
    },
    /// 0x50, client → relay: an MLS application message or proposal for every other
    /// member of its group (docs/PROTOCOL.md 8.3). Answered `SentAck` once it is in every
    /// member's queue, `GroupEpoch` if the group has moved past its epoch, or refused.
    GroupSend {
        /// Sender-chosen id, as in `Send`.
        msg_id: [u8; 16],
        /// An `MLSMessage` (`PublicMessage` or `PrivateMessage`), at most
        /// [`MAX_MLS_MESSAGE_LEN`] bytes.
        message: Vec<u8>,
    },
    /// 0x51, client → relay: an MLS commit for the group's current epoch, the member list
    /// it leaves, and the Welcome for the members it adds (docs/PROTOCOL.md 8.3). Answered
    /// `SentAck` once the group has moved to the next epoch and every member (old and
    /// added) has it queued, `GroupEpoch` if another commit took the epoch first, or
    /// refused.
    GroupCommit {
        /// Sender-chosen id, as in `Send`.
        msg_id: [u8; 16],
        /// An `MLSMessage` holding a commit, at most [`MAX_MLS_MESSAGE_LEN`] bytes.
        commit: Vec<u8>,
        /// The `MLSMessage` Welcome for `added` (present exactly when `added` is not
        /// empty), at most [`MAX_MLS_MESSAGE_LEN`] bytes.
        welcome: Option<Vec<u8>>,
        /// Every member's identity key after the commit, the sender's included, at most
        /// [`MAX_GROUP_MEMBERS`].
        members: Vec<[u8; 32]>,
        /// The members this commit adds (a subset of `members`), who get the Welcome.
        added: Vec<[u8; 32]>,
    },
    /// 0x52, relay → client: the `GroupSend` or `GroupCommit` `msg_id` was not stored
    /// because its group is at `epoch` now; the client processes what is queued for it
    /// and sends again (docs/PROTOCOL.md 8.4).
    GroupEpoch {
        /// The refused request's id.
        msg_id: [u8; 16],
        /// The group's current epoch at the relay.
        epoch: u64,
    },
    /// 0x53, client → relay: add one-time KeyPackages to the client's directory entry
    /// and, if present, replace its last-resort KeyPackage (docs/PROTOCOL.md 8.2).
    /// Answered by `KeyPackageCount`. With no packages and no last resort it only asks.
    PublishKeyPackages {
        /// Up to [`MAX_KEY_PACKAGES`] KeyPackages, each at most [`MAX_KEY_PACKAGE_LEN`].
        packages: Vec<Vec<u8>>,
        /// The KeyPackage handed out when no one-time one is left (never removed).
        last_resort: Option<Vec<u8>>,
    },
    /// 0x54, relay → client: one-time KeyPackages the relay holds for the client, as the
    /// answer to `PublishKeyPackages`, or unasked when a fetch left fewer than the
    /// relay's low mark.
    KeyPackageCount {
        /// One-time KeyPackages left.
        remaining: u32,
    },
    /// 0x55, client → relay: take one KeyPackage of `identity` (a one-time one while any
    /// is left, which is then removed for good; else the last-resort one).
    FetchKeyPackage {
        /// Chosen by the client, echoed in the `KeyPackage` reply.
        request_id: u32,
        /// Whose KeyPackage.
        identity: [u8; 32],
    },
    /// 0x56, relay → client: the reply to `FetchKeyPackage`.
    KeyPackage {
        /// The `request_id` of the `FetchKeyPackage`.
        request_id: u32,
        /// The KeyPackage, or `None` if the identity has published none.
        package: Option<Vec<u8>>,
    },
    /// 0x40, either direction: liveness check; answered by `Pong` with the same nonce.
    Ping {
        /// Echoed in the `Pong`.
        nonce: u64,
    },
    /// 0x41, either direction: the answer to `Ping`.
    Pong {
        /// The nonce of the `Ping`.
        nonce: u64,
    },
    /// 0x7F, either direction: a refused request or the reason for closing.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail, at most [`MAX_REASON_LEN`] bytes of UTF-8.
        reason: String,
    },
}

impl Frame {
    /// An `Error` frame whose reason is cut (at a character boundary) to
    /// [`MAX_REASON_LEN`] bytes, so it always encodes.
    pub fn error(code: ErrorCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut end = MAX_REASON_LEN;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Frame::Error { code, reason }
    }

    /// The type byte of this frame.
    pub fn type_byte(&self) -> u8 {
        match self {
            Frame::Challenge { .. } => ty::CHALLENGE,
            Frame::Auth { .. } => ty::AUTH,
            Frame::AuthOk { .. } => ty::AUTH_OK,
            Frame::PublishPreKeys { .. } => ty::PUBLISH_PREKEYS,
            Frame::FetchBundle { .. } => ty::FETCH_BUNDLE,
            Frame::Bundle { .. } => ty::BUNDLE,
            Frame::PreKeysLow { .. } => ty::PREKEYS_LOW,
            Frame::PreKeysStored { .. } => ty::PREKEYS_STORED,
            Frame::PublishName { .. } => ty::PUBLISH_NAME,
            Frame::LookupName { .. } => ty::LOOKUP_NAME,
            Frame::NameClaim { .. } => ty::NAME_CLAIM,
            Frame::LookupIdentity { .. } => ty::LOOKUP_IDENTITY,
            Frame::ReleaseName { .. } => ty::RELEASE_NAME,
            Frame::QueryAway { .. } => ty::QUERY_AWAY,
            Frame::Away { .. } => ty::AWAY,
            Frame::Send { .. } => ty::SEND,
            Frame::SentAck { .. } => ty::SENT_ACK,
            Frame::Deliver { .. } => ty::DELIVER,
            Frame::DeliveryAck { .. } => ty::DELIVERY_ACK,
            Frame::Expired { .. } => ty::EXPIRED,
            Frame::ExpiredAck { .. } => ty::EXPIRED_ACK,
            Frame::RateLimited { .. } => ty::RATE_LIMITED,
            Frame::QuotaExceeded { .. } => ty::QUOTA_EXCEEDED,
            Frame::QueryQuota => ty::QUERY_QUOTA,
            Frame::Quota { .. } => ty::QUOTA,
            Frame::Refused { .. } => ty::REFUSED,
            Frame::Accepted { .. } => ty::ACCEPTED,
            Frame::Features { .. } => ty::FEATURES,
            Frame::GroupSend { .. } => ty::GROUP_SEND,
            Frame::GroupCommit { .. } => ty::GROUP_COMMIT,
            Frame::GroupEpoch { .. } => ty::GROUP_EPOCH,
            Frame::PublishKeyPackages { .. } => ty::PUBLISH_KEY_PACKAGES,
            Frame::KeyPackageCount { .. } => ty::KEY_PACKAGE_COUNT,
            Frame::FetchKeyPackage { .. } => ty::FETCH_KEY_PACKAGE,
            Frame::KeyPackage { .. } => ty::KEY_PACKAGE,
            Frame::Ping { .. } => ty::PING,
            Frame::Pong { .. } => ty::PONG,
            Frame::Error { .. } => ty::ERROR,
        }
    }

    /// A `Refused` frame for the request `request_seq` of type `request_type`, its
    /// reason cut like [`Frame::error`]'s.
    pub fn refused(
        request_seq: u32,
        request_type: u8,
        code: ErrorCode,
        retry_after_ms: u32,
        reason: impl Into<String>,
    ) -> Self {
        let Frame::Error { reason, .. } = Frame::error(code, reason) else {
            unreachable!("Frame::error makes an Error")
        };
        Frame::Refused {
            request_seq,
            request_type,
            code,
            retry_after_ms,
            reason,
        }
    }

    /// Whether this client frame is a request the relay answers exactly once (its reply,
    /// `Accepted` or `Refused`, docs/PROTOCOL.md 1.11), and so worth remembering by its
    /// position until then.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Frame::PublishPreKeys { .. }
                | Frame::FetchBundle { .. }
                | Frame::PublishName { .. }
                | Frame::LookupName { .. }
                | Frame::LookupIdentity { .. }
                | Frame::ReleaseName { .. }
                | Frame::QueryAway { .. }
                | Frame::Send { .. }
                | Frame::QueryQuota
                | Frame::GroupSend { .. }
                | Frame::GroupCommit { .. }
                | Frame::PublishKeyPackages { .. }
                | Frame::FetchKeyPackage { .. }
        )
    }

    /// A constant snake_case name of the frame type, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Challenge { .. } => "challenge",
            Frame::Auth { .. } => "auth",
            Frame::AuthOk { .. } => "auth_ok",
            Frame::PublishPreKeys { .. } => "publish_prekeys",
            Frame::FetchBundle { .. } => "fetch_bundle",
            Frame::Bundle { .. } => "bundle",
            Frame::PreKeysLow { .. } => "prekeys_low",
            Frame::PreKeysStored { .. } => "prekeys_stored",
            Frame::PublishName { .. } => "publish_name",
            Frame::LookupName { .. } => "lookup_name",
            Frame::NameClaim { .. } => "name_claim",
            Frame::LookupIdentity { .. } => "lookup_identity",
            Frame::ReleaseName { .. } => "release_name",
            Frame::QueryAway { .. } => "query_away",
            Frame::Away { .. } => "away",
            Frame::Send { .. } => "send",
            Frame::SentAck { .. } => "sent_ack",
            Frame::Deliver { .. } => "deliver",
            Frame::DeliveryAck { .. } => "delivery_ack",
            Frame::Expired { .. } => "expired",
            Frame::ExpiredAck { .. } => "expired_ack",
            Frame::RateLimited { .. } => "rate_limited",
            Frame::QuotaExceeded { .. } => "quota_exceeded",
            Frame::QueryQuota => "query_quota",
            Frame::Quota { .. } => "quota",
            Frame::Refused { .. } => "refused",
            Frame::Accepted { .. } => "accepted",
            Frame::Features { .. } => "features",
            Frame::GroupSend { .. } => "group_send",
            Frame::GroupCommit { .. } => "group_commit",
            Frame::GroupEpoch { .. } => "group_epoch",
            Frame::PublishKeyPackages { .. } => "publish_key_packages",
            Frame::KeyPackageCount { .. } => "key_package_count",
            Frame::FetchKeyPackage { .. } => "fetch_key_package",
            Frame::KeyPackage { .. } => "key_package",
            Frame::Ping { .. } => "ping",
            Frame::Pong { .. } => "pong",
            Frame::Error { .. } => "error",
        }
    }
}

/// A field longer than its limit.
pub(super) fn max(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        return Err(DecodeError::TooLong { field, len, max });
    }
    Ok(())
}

fn check_notices_not_empty(count: usize) -> Result<(), DecodeError> {
    if count == 0 {
        return Err(DecodeError::Invalid {
            field: "notices",
            reason: "empty",
        });
    }
    Ok(())
}

fn check_name_not_empty(raw: &[u8]) -> Result<(), DecodeError> {
    if raw.len() < MIN_NAME_LEN {
        return Err(DecodeError::Invalid {
            field: "name",
            reason: "empty",
        });
    }
    Ok(())
}
