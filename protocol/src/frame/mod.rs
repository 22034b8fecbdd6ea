//! Relay wire frames: the messages a client and the relay exchange over one TCP stream.
//!
//! On the stream every frame is `length u32be || body`, where `length` counts the body
//! only. The body is `version u8 (= 1) || type u8 || fields`; [`Frame::encode`] and
//! [`Frame::decode`] handle the body, and [`crate::codec::FrameCodec`] adds the length
//! prefix. Variable-length byte fields are `u32be length || bytes`, strings are
//! `u16be length || UTF-8`, optional values are a presence byte (`0` absent, `1` present,
//! anything else malformed) followed by the value when present. Every length is bounded
//! by a constant of this module. The full layout is in `docs/PROTOCOL.md`.

use bytes::{BufMut, BytesMut};

use crate::consts::{KEY_LEN, SIGNATURE_LEN};
use crate::error::DecodeError;
use crate::reader::Reader;

mod debug;
mod deliver_ref;
mod error_code;
#[cfg(test)]
mod tests;

pub use deliver_ref::DeliverRef;
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
            Frame::Ping { .. } => "ping",
            Frame::Pong { .. } => "pong",
            Frame::Error { .. } => "error",
        }
    }

    /// The length of the encoded body (version and type bytes included, length prefix
    /// excluded): exactly what [`Frame::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        const U32: usize = 4;
        const U64: usize = 8;
        let fields = match self {
            Frame::Challenge { .. } => 2 * KEY_LEN,
            Frame::Auth { .. } => KEY_LEN + SIGNATURE_LEN,
            Frame::AuthOk { .. } => U32,
            Frame::PublishPreKeys { bundle } => U32 + bundle.len(),
            Frame::FetchBundle { .. } => U32 + KEY_LEN,
            Frame::Bundle { bundle, .. } => U32 + 1 + bundle.as_ref().map_or(0, |b| U32 + b.len()),
            Frame::PreKeysLow { .. } => U32,
            Frame::PreKeysStored { .. } => U32,
            Frame::PublishName { claim } => U32 + claim.len(),
            Frame::LookupName { name, .. } => U32 + 2 + name.len(),
            Frame::NameClaim { claim, .. } => U32 + 1 + claim.as_ref().map_or(0, |c| U32 + c.len()),
            Frame::LookupIdentity { .. } => U32 + KEY_LEN,
            Frame::ReleaseName { release, .. } => U32 + U32 + release.len(),
            Frame::QueryAway { .. } => U32 + KEY_LEN,
            Frame::Away { .. } => U32 + U32,
            Frame::Send { payload, .. } => KEY_LEN + MSG_ID_LEN + U32 + payload.len(),
            Frame::SentAck { .. } => MSG_ID_LEN,
            Frame::Deliver { payload, .. } => DeliverRef::fields_len(payload.len()),
            Frame::DeliveryAck { .. } => KEY_LEN + MSG_ID_LEN,
            Frame::Expired { notices, .. } => U64 + 2 + notices.len() * (KEY_LEN + MSG_ID_LEN),
            Frame::ExpiredAck { .. } => U64,
            Frame::RateLimited { msg_id, .. } => 1 + msg_id.map_or(0, |_| MSG_ID_LEN) + U32,
            Frame::QuotaExceeded { .. } => MSG_ID_LEN + KEY_LEN + U32,
            Frame::QueryQuota => 0,
            Frame::Quota { .. } => 3 * U32,
            Frame::Refused { reason, .. } => U32 + 1 + 2 + U32 + 2 + reason.len(),
            Frame::Accepted { .. } | Frame::Features { .. } => U32,
            Frame::Ping { .. } | Frame::Pong { .. } => U64,
            Frame::Error { reason, .. } => 2 + 2 + reason.len(),
        };
        2 + fields
    }

    /// Checks every field against its limit, exactly as [`Frame::decode`] would on the
    /// receiving side. [`Frame::encode`] does not check; the codec calls this first.
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Frame::PublishPreKeys { bundle } => max("bundle", bundle.len(), MAX_BUNDLE_LEN),
            Frame::Bundle {
                bundle: Some(bundle), ..
            } => max("bundle", bundle.len(), MAX_BUNDLE_LEN),
            Frame::PublishName { claim }
            | Frame::NameClaim {
                claim: Some(claim), ..
            } => max("claim", claim.len(), MAX_CLAIM_LEN),
            Frame::ReleaseName { release, .. } => max("release", release.len(), MAX_CLAIM_LEN),
            Frame::LookupName { name, .. } => {
                max("name", name.len(), MAX_NAME_LEN)?;
                check_name_not_empty(name.as_bytes())
            }
            Frame::Send { payload, .. } | Frame::Deliver { payload, .. } => {
                max("payload", payload.len(), MAX_PAYLOAD_LEN)
            }
            Frame::Error { reason, .. } | Frame::Refused { reason, .. } => {
                max("reason", reason.len(), MAX_REASON_LEN)
            }
            Frame::Expired { notices, .. } => {
                max("notices", notices.len(), MAX_EXPIRED_NOTICES)?;
                check_notices_not_empty(notices.len())
            }
            _ => Ok(()),
        }
    }

    /// Appends the body (`version || type || fields`, no length prefix) to `dst`.
    ///
    /// Does not check field limits: a frame that fails [`Frame::validate`] encodes to
    /// bytes the peer rejects. [`crate::codec::FrameCodec`] validates before encoding.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u8(FRAME_VERSION);
        dst.put_u8(self.type_byte());
        match self {
            Frame::Challenge { relay_id, nonce } => {
                dst.put_slice(relay_id);
                dst.put_slice(nonce);
            }
            Frame::Auth { identity, signature } => {
                dst.put_slice(identity);
                dst.put_slice(signature);
            }
            Frame::AuthOk { queued } => dst.put_u32(*queued),
            Frame::PublishPreKeys { bundle } => put_bytes_u32(dst, bundle),
            Frame::FetchBundle { request_id, identity } => {
                dst.put_u32(*request_id);
                dst.put_slice(identity);
            }
            Frame::Bundle { request_id, bundle } => {
                dst.put_u32(*request_id);
                put_optional_bytes(dst, bundle.as_deref());
            }
            Frame::PreKeysLow { remaining } => dst.put_u32(*remaining),
            Frame::PreKeysStored { opks } => dst.put_u32(*opks),
            Frame::PublishName { claim } => put_bytes_u32(dst, claim),
            Frame::LookupName { request_id, name } => {
                dst.put_u32(*request_id);
                put_bytes_u16(dst, name.as_bytes());
            }
            Frame::NameClaim { request_id, claim } => {
                dst.put_u32(*request_id);
                put_optional_bytes(dst, claim.as_deref());
            }
            Frame::LookupIdentity { request_id, identity } => {
                dst.put_u32(*request_id);
                dst.put_slice(identity);
            }
            Frame::ReleaseName { request_id, release } => {
                dst.put_u32(*request_id);
                put_bytes_u32(dst, release);
            }
            Frame::QueryAway { request_id, identity } => {
                dst.put_u32(*request_id);
                dst.put_slice(identity);
            }
            Frame::Away {
                request_id,
                away_days,
            } => {
                dst.put_u32(*request_id);
                dst.put_u32(*away_days);
            }
            Frame::Send {
                recipient,
                msg_id,
                payload,
            } => {
                dst.put_slice(recipient);
                dst.put_slice(msg_id);
                put_bytes_u32(dst, payload);
            }
            Frame::SentAck { msg_id } => dst.put_slice(msg_id),
            Frame::Deliver {
                sender,
                msg_id,
                timestamp_ms,
                payload,
            } => DeliverRef {
                sender,
                msg_id,
                timestamp_ms: *timestamp_ms,
                payload,
            }
            .encode_fields(dst),
            Frame::DeliveryAck { sender, msg_id } => {
                dst.put_slice(sender);
                dst.put_slice(msg_id);
            }
            Frame::Expired { through, notices } => {
                dst.put_u64(*through);
                dst.put_u16(u16::try_from(notices.len()).unwrap_or(u16::MAX));
                for notice in notices {
                    dst.put_slice(&notice.recipient);
                    dst.put_slice(&notice.msg_id);
                }
            }
            Frame::ExpiredAck { through } => dst.put_u64(*through),
            Frame::RateLimited {
                msg_id,
                retry_after_ms,
            } => {
                match msg_id {
                    Some(id) => {
                        dst.put_u8(1);
                        dst.put_slice(id);
                    }
                    None => dst.put_u8(0),
                }
                dst.put_u32(*retry_after_ms);
            }
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            } => {
                dst.put_slice(msg_id);
                dst.put_slice(recipient);
                dst.put_u32(*retry_after_ms);
            }
            Frame::QueryQuota => {}
            Frame::Quota {
                remaining,
                capacity,
                refill_per_sec,
            } => {
                dst.put_u32(*remaining);
                dst.put_u32(*capacity);
                dst.put_u32(*refill_per_sec);
            }
            Frame::Refused {
                request_seq,
                request_type,
                code,
                retry_after_ms,
                reason,
            } => {
                dst.put_u32(*request_seq);
                dst.put_u8(*request_type);
                dst.put_u16(code.to_u16());
                dst.put_u32(*retry_after_ms);
                put_bytes_u16(dst, reason.as_bytes());
            }
            Frame::Accepted { request_seq } => dst.put_u32(*request_seq),
            Frame::Features { flags } => dst.put_u32(*flags),
            Frame::Ping { nonce } | Frame::Pong { nonce } => dst.put_u64(*nonce),
            Frame::Error { code, reason } => {
                dst.put_u16(code.to_u16());
                put_bytes_u16(dst, reason.as_bytes());
            }
        }
    }

    /// Decodes one complete body (`version || type || fields`, no length prefix).
    ///
    /// Returns [`DecodeError::Incomplete`] only when `body` is a strict prefix of some
    /// valid body; every other failure is a distinct, final error. Never panics.
    pub fn decode(body: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(body);
        let version = r.u8()?;
        if version != FRAME_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let frame = match r.u8()? {
            ty::CHALLENGE => Frame::Challenge {
                relay_id: r.array()?,
                nonce: r.array()?,
            },
            ty::AUTH => Frame::Auth {
                identity: r.array()?,
                signature: r.array()?,
            },
            ty::AUTH_OK => Frame::AuthOk { queued: r.u32()? },
            ty::PUBLISH_PREKEYS => Frame::PublishPreKeys {
                bundle: r.bytes_u32(MAX_BUNDLE_LEN, "bundle")?.to_vec(),
            },
            ty::FETCH_BUNDLE => Frame::FetchBundle {
                request_id: r.u32()?,
                identity: r.array()?,
            },
            ty::BUNDLE => Frame::Bundle {
                request_id: r.u32()?,
                bundle: read_optional_bytes(&mut r, MAX_BUNDLE_LEN, "bundle")?,
            },
            ty::PREKEYS_LOW => Frame::PreKeysLow { remaining: r.u32()? },
            ty::PREKEYS_STORED => Frame::PreKeysStored { opks: r.u32()? },
            ty::PUBLISH_NAME => Frame::PublishName {
                claim: r.bytes_u32(MAX_CLAIM_LEN, "claim")?.to_vec(),
            },
            ty::LOOKUP_NAME => {
                let request_id = r.u32()?;
                let raw = r.bytes_u16(MAX_NAME_LEN, "name")?;
                check_name_not_empty(raw)?;
                Frame::LookupName {
                    request_id,
                    name: utf8(raw, "name")?,
                }
            }
            ty::NAME_CLAIM => Frame::NameClaim {
                request_id: r.u32()?,
                claim: read_optional_bytes(&mut r, MAX_CLAIM_LEN, "claim")?,
            },
            ty::LOOKUP_IDENTITY => Frame::LookupIdentity {
                request_id: r.u32()?,
                identity: r.array()?,
            },
            ty::RELEASE_NAME => Frame::ReleaseName {
                request_id: r.u32()?,
                release: r.bytes_u32(MAX_CLAIM_LEN, "release")?.to_vec(),
            },
            ty::QUERY_AWAY => Frame::QueryAway {
                request_id: r.u32()?,
                identity: r.array()?,
            },
            ty::AWAY => Frame::Away {
                request_id: r.u32()?,
                away_days: r.u32()?,
            },
            ty::SEND => Frame::Send {
                recipient: r.array()?,
                msg_id: r.array()?,
                payload: r.bytes_u32(MAX_PAYLOAD_LEN, "payload")?.to_vec(),
            },
            ty::SENT_ACK => Frame::SentAck { msg_id: r.array()? },
            ty::DELIVER => Frame::Deliver {
                sender: r.array()?,
                msg_id: r.array()?,
                timestamp_ms: r.u64()?,
                payload: r.bytes_u32(MAX_PAYLOAD_LEN, "payload")?.to_vec(),
            },
            ty::DELIVERY_ACK => Frame::DeliveryAck {
                sender: r.array()?,
                msg_id: r.array()?,
            },
            ty::EXPIRED => {
                let through = r.u64()?;
                let count = usize::from(r.u16()?);
                max("notices", count, MAX_EXPIRED_NOTICES)?;
                check_notices_not_empty(count)?;
                let mut notices = Vec::with_capacity(count);
                for _ in 0..count {
                    notices.push(ExpiredNotice {
                        recipient: r.array()?,
                        msg_id: r.array()?,
                    });
                }
                Frame::Expired { through, notices }
            }
            ty::EXPIRED_ACK => Frame::ExpiredAck { through: r.u64()? },
            ty::RATE_LIMITED => {
                let msg_id = if read_presence(&mut r, "msg_id")? {
                    Some(r.array()?)
                } else {
                    None
                };
                Frame::RateLimited {
                    msg_id,
                    retry_after_ms: r.u32()?,
                }
            }
            ty::QUOTA_EXCEEDED => Frame::QuotaExceeded {
                msg_id: r.array()?,
                recipient: r.array()?,
                retry_after_ms: r.u32()?,
            },
            ty::QUERY_QUOTA => Frame::QueryQuota,
            ty::QUOTA => Frame::Quota {
                remaining: r.u32()?,
                capacity: r.u32()?,
                refill_per_sec: r.u32()?,
            },
            ty::REFUSED => {
                let request_seq = r.u32()?;
                let request_type = r.u8()?;
                let code = ErrorCode::from_u16(r.u16()?);
                let retry_after_ms = r.u32()?;
                let raw = r.bytes_u16(MAX_REASON_LEN, "reason")?;
                Frame::Refused {
                    request_seq,
                    request_type,
                    code,
                    retry_after_ms,
                    reason: utf8(raw, "reason")?,
                }
            }
            ty::ACCEPTED => Frame::Accepted {
                request_seq: r.u32()?,
            },
            ty::FEATURES => Frame::Features { flags: r.u32()? },
            ty::PING => Frame::Ping { nonce: r.u64()? },
            ty::PONG => Frame::Pong { nonce: r.u64()? },
            ty::ERROR => {
                let code = ErrorCode::from_u16(r.u16()?);
                let raw = r.bytes_u16(MAX_REASON_LEN, "reason")?;
                Frame::Error {
                    code,
                    reason: utf8(raw, "reason")?,
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

/// A field longer than its limit.
pub(super) fn max(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        return Err(DecodeError::TooLong { field, len, max });
    }
    Ok(())
}

pub(super) fn put_bytes_u32(dst: &mut BytesMut, bytes: &[u8]) {
    // Lengths past u32 cannot pass `validate`; saturate instead of wrapping.
    dst.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    dst.put_slice(bytes);
}

fn put_bytes_u16(dst: &mut BytesMut, bytes: &[u8]) {
    dst.put_u16(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
    dst.put_slice(bytes);
}

fn put_optional_bytes(dst: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            dst.put_u8(1);
            put_bytes_u32(dst, bytes);
        }
        None => dst.put_u8(0),
    }
}

fn read_presence(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid {
            field,
            reason: "presence byte is neither 0 nor 1",
        }),
    }
}

fn read_optional_bytes(
    r: &mut Reader<'_>,
    max: usize,
    field: &'static str,
) -> Result<Option<Vec<u8>>, DecodeError> {
    if read_presence(r, field)? {
        Ok(Some(r.bytes_u32(max, field)?.to_vec()))
    } else {
        Ok(None)
    }
}

fn utf8(raw: &[u8], field: &'static str) -> Result<String, DecodeError> {
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(DecodeError::Invalid {
            field,
            reason: "not valid UTF-8",
        }),
    }
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
