//! Relay wire frames: the messages a client and the relay exchange over one TCP stream.
//!
//! On the stream every frame is `length u32be || body`, where `length` counts the body
//! only. The body is `version u8 (= 1) || type u8 || fields`; [`Frame::encode`] and
//! [`Frame::decode`] handle the body, and [`crate::codec::FrameCodec`] adds the length
//! prefix. Variable-length byte fields are `u32be length || bytes`, strings are
//! `u16be length || UTF-8`, optional values are a presence byte (`0` absent, `1` present,
//! anything else malformed) followed by the value when present. Every length is bounded
//! by a constant of this module. The full layout is in `docs/PROTOCOL.md`.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::consts::{KEY_LEN, SIGNATURE_LEN};
use crate::error::DecodeError;
use crate::reader::Reader;

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
/// Domain separation prefix of the bytes a client signs to authenticate.
pub const AUTH_CONTEXT: &[u8] = b"e2ee-chat/relay-auth/v1";
/// Body length of an `Auth` frame (version, type, identity, signature): 98 bytes. The
/// only frame a client may send before it is authenticated, so a relay reads no longer
/// body until then (docs/PROTOCOL.md 1.2, 1.5).
pub const AUTH_FRAME_LEN: usize = 2 + KEY_LEN + SIGNATURE_LEN;
/// `away_days` in an `Away` reply for an identity that has never authenticated at the
/// relay (or that the relay has forgotten): `0xFFFF_FFFF`.
pub const AWAY_NEVER: u32 = u32::MAX;

/// Type bytes of every frame.
mod ty {
    pub const CHALLENGE: u8 = 0x01;
    pub const AUTH: u8 = 0x02;
    pub const AUTH_OK: u8 = 0x03;
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
    pub const RATE_LIMITED: u8 = 0x30;
    pub const QUOTA_EXCEEDED: u8 = 0x31;
    pub const QUERY_QUOTA: u8 = 0x32;
    pub const QUOTA: u8 = 0x33;
    pub const PING: u8 = 0x40;
    pub const PONG: u8 = 0x41;
    pub const ERROR: u8 = 0x7F;
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

/// Why the sender of an `Error` frame is rejecting a request or closing the connection.
///
/// Codes this version does not know are kept as [`ErrorCode::UnknownCode`] so a newer
/// peer's errors still decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A frame could not be decoded.
    Malformed,
    /// A frame other than `Auth` arrived before authentication.
    NotAuthenticated,
    /// The `Auth` signature does not verify.
    AuthFailed,
    /// No `Auth` arrived within the authentication timeout.
    AuthTimeout,
    /// A length prefix exceeds the maximum frame length.
    FrameTooLarge,
    /// A well-formed frame that is not allowed in this direction or state.
    Unexpected,
    /// A bundle or claim belongs to an identity other than the authenticated one.
    NotOwner,
    /// Another connection authenticated as the same identity and took over.
    Replaced,
    /// The client does not read its frames fast enough.
    SlowConsumer,
    /// No frame arrived within the idle timeout.
    IdleTimeout,
    /// The relay is shutting down.
    ServerShutdown,
    /// The relay holds its maximum number of connections.
    TooManyConnections,
    /// The relay failed internally (for example its store).
    Internal,
    /// A published prekey bundle is not a valid bundle.
    InvalidBundle,
    /// A published name claim is not a valid claim.
    InvalidClaim,
    /// A `Send` names a recipient that is not a valid identity key.
    InvalidRecipient,
    /// A code this version does not define, kept for forward compatibility.
    /// Never holds one of the defined codes when produced by [`ErrorCode::from_u16`].
    UnknownCode(u16),
}

impl ErrorCode {
    /// The code for a wire value; undefined values become [`ErrorCode::UnknownCode`].
    pub fn from_u16(code: u16) -> Self {
        match code {
            1 => Self::Malformed,
            2 => Self::NotAuthenticated,
            3 => Self::AuthFailed,
            4 => Self::AuthTimeout,
            5 => Self::FrameTooLarge,
            6 => Self::Unexpected,
            7 => Self::NotOwner,
            8 => Self::Replaced,
            9 => Self::SlowConsumer,
            10 => Self::IdleTimeout,
            11 => Self::ServerShutdown,
            12 => Self::TooManyConnections,
            13 => Self::Internal,
            14 => Self::InvalidBundle,
            15 => Self::InvalidClaim,
            16 => Self::InvalidRecipient,
            other => Self::UnknownCode(other),
        }
    }

    /// The wire value of this code.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Malformed => 1,
            Self::NotAuthenticated => 2,
            Self::AuthFailed => 3,
            Self::AuthTimeout => 4,
            Self::FrameTooLarge => 5,
            Self::Unexpected => 6,
            Self::NotOwner => 7,
            Self::Replaced => 8,
            Self::SlowConsumer => 9,
            Self::IdleTimeout => 10,
            Self::ServerShutdown => 11,
            Self::TooManyConnections => 12,
            Self::Internal => 13,
            Self::InvalidBundle => 14,
            Self::InvalidClaim => 15,
            Self::InvalidRecipient => 16,
            Self::UnknownCode(code) => code,
        }
    }

    /// A constant snake_case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotAuthenticated => "not_authenticated",
            Self::AuthFailed => "auth_failed",
            Self::AuthTimeout => "auth_timeout",
            Self::FrameTooLarge => "frame_too_large",
            Self::Unexpected => "unexpected",
            Self::NotOwner => "not_owner",
            Self::Replaced => "replaced",
            Self::SlowConsumer => "slow_consumer",
            Self::IdleTimeout => "idle_timeout",
            Self::ServerShutdown => "server_shutdown",
            Self::TooManyConnections => "too_many_connections",
            Self::Internal => "internal",
            Self::InvalidBundle => "invalid_bundle",
            Self::InvalidClaim => "invalid_claim",
            Self::InvalidRecipient => "invalid_recipient",
            Self::UnknownCode(_) => "unknown",
        }
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        Self::from_u16(code)
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> Self {
        code.to_u16()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.to_u16())
    }
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
            Frame::RateLimited { .. } => ty::RATE_LIMITED,
            Frame::QuotaExceeded { .. } => ty::QUOTA_EXCEEDED,
            Frame::QueryQuota => ty::QUERY_QUOTA,
            Frame::Quota { .. } => ty::QUOTA,
            Frame::Ping { .. } => ty::PING,
            Frame::Pong { .. } => ty::PONG,
            Frame::Error { .. } => ty::ERROR,
        }
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
            Frame::RateLimited { .. } => "rate_limited",
            Frame::QuotaExceeded { .. } => "quota_exceeded",
            Frame::QueryQuota => "query_quota",
            Frame::Quota { .. } => "quota",
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
            Frame::RateLimited { msg_id, .. } => 1 + msg_id.map_or(0, |_| MSG_ID_LEN) + U32,
            Frame::QuotaExceeded { .. } => MSG_ID_LEN + KEY_LEN + U32,
            Frame::QueryQuota => 0,
            Frame::Quota { .. } => 3 * U32,
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
            Frame::Error { reason, .. } => max("reason", reason.len(), MAX_REASON_LEN),
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

/// A `Deliver` frame that borrows its payload. It encodes to exactly the bytes of the
/// equal [`Frame::Deliver`] without copying the payload into one (the relay writes
/// stored messages with it).
#[derive(Debug, Clone, Copy)]
pub struct DeliverRef<'a> {
    /// The authenticated identity that sent it.
    pub sender: &'a [u8; 32],
    /// The sender's id for the message.
    pub msg_id: &'a [u8; 16],
    /// When the relay stored it, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The encrypted message, at most [`MAX_PAYLOAD_LEN`] bytes.
    pub payload: &'a [u8],
}

impl DeliverRef<'_> {
    /// Bytes of the fields for a payload of `payload_len` bytes.
    fn fields_len(payload_len: usize) -> usize {
        KEY_LEN + MSG_ID_LEN + 8 + 4 + payload_len
    }

    /// As [`Frame::encoded_len`].
    pub fn encoded_len(&self) -> usize {
        2 + Self::fields_len(self.payload.len())
    }

    /// As [`Frame::validate`].
    pub fn validate(&self) -> Result<(), DecodeError> {
        max("payload", self.payload.len(), MAX_PAYLOAD_LEN)
    }

    /// As [`Frame::encode`].
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u8(FRAME_VERSION);
        dst.put_u8(ty::DELIVER);
        self.encode_fields(dst);
    }

    fn encode_fields(&self, dst: &mut BytesMut) {
        dst.put_slice(self.sender);
        dst.put_slice(self.msg_id);
        dst.put_u64(self.timestamp_ms);
        put_bytes_u32(dst, self.payload);
    }
}

/// A field longer than its limit.
fn max(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        return Err(DecodeError::TooLong { field, len, max });
    }
    Ok(())
}

fn put_bytes_u32(dst: &mut BytesMut, bytes: &[u8]) {
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

fn check_name_not_empty(raw: &[u8]) -> Result<(), DecodeError> {
    if raw.len() < MIN_NAME_LEN {
        return Err(DecodeError::Invalid {
            field: "name",
            reason: "empty",
        });
    }
    Ok(())
}

/// Debug helper: fixed-size ids and keys as lowercase hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Debug helper: opaque bytes as their length only.
struct Len(usize);

impl fmt::Debug for Len {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

fn opt_len(bytes: &Option<Vec<u8>>) -> Option<Len> {
    bytes.as_ref().map(|b| Len(b.len()))
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Challenge { relay_id, nonce } => f
                .debug_struct("Challenge")
                .field("relay_id", &Hex(relay_id))
                .field("nonce", &Hex(nonce))
                .finish(),
            Frame::Auth { identity, signature } => f
                .debug_struct("Auth")
                .field("identity", &Hex(identity))
                .field("signature", &Hex(signature))
                .finish(),
            Frame::AuthOk { queued } => f.debug_struct("AuthOk").field("queued", queued).finish(),
            Frame::PublishPreKeys { bundle } => f
                .debug_struct("PublishPreKeys")
                .field("bundle", &Len(bundle.len()))
                .finish(),
            Frame::FetchBundle { request_id, identity } => f
                .debug_struct("FetchBundle")
                .field("request_id", request_id)
                .field("identity", &Hex(identity))
                .finish(),
            Frame::Bundle { request_id, bundle } => f
                .debug_struct("Bundle")
                .field("request_id", request_id)
                .field("bundle", &opt_len(bundle))
                .finish(),
            Frame::PreKeysLow { remaining } => f
                .debug_struct("PreKeysLow")
                .field("remaining", remaining)
                .finish(),
            Frame::PreKeysStored { opks } => f.debug_struct("PreKeysStored").field("opks", opks).finish(),
            Frame::PublishName { claim } => f
                .debug_struct("PublishName")
                .field("claim", &Len(claim.len()))
                .finish(),
            Frame::LookupName { request_id, name } => f
                .debug_struct("LookupName")
                .field("request_id", request_id)
                .field("name", name)
                .finish(),
            Frame::NameClaim { request_id, claim } => f
                .debug_struct("NameClaim")
                .field("request_id", request_id)
                .field("claim", &opt_len(claim))
                .finish(),
            Frame::LookupIdentity { request_id, identity } => f
                .debug_struct("LookupIdentity")
                .field("request_id", request_id)
                .field("identity", &Hex(identity))
                .finish(),
            Frame::ReleaseName { request_id, release } => f
                .debug_struct("ReleaseName")
                .field("request_id", request_id)
                .field("release", &Len(release.len()))
                .finish(),
            Frame::QueryAway { request_id, identity } => f
                .debug_struct("QueryAway")
                .field("request_id", request_id)
                .field("identity", &Hex(identity))
                .finish(),
            Frame::Away {
                request_id,
                away_days,
            } => f
                .debug_struct("Away")
                .field("request_id", request_id)
                .field("away_days", away_days)
                .finish(),
            Frame::Send {
                recipient,
                msg_id,
                payload,
            } => f
                .debug_struct("Send")
                .field("recipient", &Hex(recipient))
                .field("msg_id", &Hex(msg_id))
                .field("payload", &Len(payload.len()))
                .finish(),
            Frame::SentAck { msg_id } => f.debug_struct("SentAck").field("msg_id", &Hex(msg_id)).finish(),
            Frame::Deliver {
                sender,
                msg_id,
                timestamp_ms,
                payload,
            } => f
                .debug_struct("Deliver")
                .field("sender", &Hex(sender))
                .field("msg_id", &Hex(msg_id))
                .field("timestamp_ms", timestamp_ms)
                .field("payload", &Len(payload.len()))
                .finish(),
            Frame::DeliveryAck { sender, msg_id } => f
                .debug_struct("DeliveryAck")
                .field("sender", &Hex(sender))
                .field("msg_id", &Hex(msg_id))
                .finish(),
            Frame::RateLimited {
                msg_id,
                retry_after_ms,
            } => f
                .debug_struct("RateLimited")
                .field("msg_id", &msg_id.as_ref().map(|id| Hex(id)))
                .field("retry_after_ms", retry_after_ms)
                .finish(),
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            } => f
                .debug_struct("QuotaExceeded")
                .field("msg_id", &Hex(msg_id))
                .field("recipient", &Hex(recipient))
                .field("retry_after_ms", retry_after_ms)
                .finish(),
            Frame::QueryQuota => f.write_str("QueryQuota"),
            Frame::Quota {
                remaining,
                capacity,
                refill_per_sec,
            } => f
                .debug_struct("Quota")
                .field("remaining", remaining)
                .field("capacity", capacity)
                .field("refill_per_sec", refill_per_sec)
                .finish(),
            Frame::Ping { nonce } => f.debug_struct("Ping").field("nonce", nonce).finish(),
            Frame::Pong { nonce } => f.debug_struct("Pong").field("nonce", nonce).finish(),
            Frame::Error { code, reason } => f
                .debug_struct("Error")
                .field("code", code)
                .field("reason", reason)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &Frame) -> Vec<u8> {
        let mut dst = BytesMut::new();
        frame.encode(&mut dst);
        dst.to_vec()
    }

    #[test]
    fn encodes_challenge_byte_for_byte() {
        let frame = Frame::Challenge {
            relay_id: [0xAA; 32],
            nonce: [0xBB; 32],
        };
        let mut expected = vec![1, 0x01];
        expected.extend_from_slice(&[0xAA; 32]);
        expected.extend_from_slice(&[0xBB; 32]);
        assert_eq!(body(&frame), expected);
    }

    #[test]
    fn encodes_optional_bundle_with_presence_byte() {
        let none = Frame::Bundle {
            request_id: 7,
            bundle: None,
        };
        assert_eq!(body(&none), vec![1, 0x12, 0, 0, 0, 7, 0]);
        let some = Frame::Bundle {
            request_id: 7,
            bundle: Some(vec![9, 9]),
        };
        assert_eq!(body(&some), vec![1, 0x12, 0, 0, 0, 7, 1, 0, 0, 0, 2, 9, 9]);
    }

    #[test]
    fn encodes_query_away_and_away_byte_for_byte() {
        let query = Frame::QueryAway {
            request_id: 0x0102_0304,
            identity: [0xCC; 32],
        };
        let mut expected = vec![1, 0x1A, 1, 2, 3, 4];
        expected.extend_from_slice(&[0xCC; 32]);
        assert_eq!(body(&query), expected);
        assert_eq!(query.encoded_len(), 38);
        assert_eq!(Frame::decode(&expected), Ok(query));

        let away = Frame::Away {
            request_id: 9,
            away_days: 45,
        };
        let bytes = [1, 0x1B, 0, 0, 0, 9, 0, 0, 0, 45];
        assert_eq!(body(&away), bytes);
        assert_eq!(away.encoded_len(), 10);
        assert_eq!(Frame::decode(&bytes), Ok(away));
        let never = Frame::Away {
            request_id: 9,
            away_days: AWAY_NEVER,
        };
        assert_eq!(body(&never), [1, 0x1B, 0, 0, 0, 9, 0xFF, 0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn rejects_truncated_and_padded_away_frames() {
        assert!(Frame::decode(&[1, 0x1B, 0, 0, 0, 9, 0, 0, 0]).is_err_and(|e| e.is_incomplete()));
        assert!(matches!(
            Frame::decode(&[1, 0x1B, 0, 0, 0, 9, 0, 0, 0, 45, 0]),
            Err(DecodeError::TrailingBytes { extra: 1 })
        ));
        let mut query = vec![1, 0x1A, 0, 0, 0, 1];
        query.extend_from_slice(&[0; 31]);
        assert!(Frame::decode(&query).is_err_and(|e| e.is_incomplete()));
    }

    #[test]
    fn encodes_error_code_and_reason() {
        let frame = Frame::error(ErrorCode::Replaced, "hi");
        assert_eq!(body(&frame), vec![1, 0x7F, 0, 8, 0, 2, b'h', b'i']);
    }

    #[test]
    fn auth_message_is_context_then_relay_nonce_identity() {
        let msg = auth_message(&[1; 32], &[2; 32], &[3; 32]);
        assert_eq!(msg.len(), 119);
        assert_eq!(&msg[..AUTH_CONTEXT.len()], b"e2ee-chat/relay-auth/v1");
        let rest = &msg[AUTH_CONTEXT.len()..];
        assert_eq!(rest.len(), 96);
        assert!(rest[..32].iter().all(|&b| b == 1));
        assert!(rest[32..64].iter().all(|&b| b == 2));
        assert!(rest[64..].iter().all(|&b| b == 3));
    }

    #[test]
    fn error_constructor_truncates_reason_at_char_boundary() {
        let long = "é".repeat(200); // 400 bytes, two per char
        let frame = Frame::error(ErrorCode::Internal, long);
        let Frame::Error { reason, .. } = &frame else {
            panic!("not an error frame");
        };
        assert_eq!(reason.len(), MAX_REASON_LEN);
        assert_eq!(frame.validate(), Ok(()));
        let odd = format!("a{}", "é".repeat(200));
        let Frame::Error { reason, .. } = Frame::error(ErrorCode::Internal, odd) else {
            panic!("not an error frame");
        };
        assert_eq!(reason.len(), MAX_REASON_LEN - 1);
    }

    #[test]
    fn an_auth_body_is_auth_frame_len_bytes() {
        let auth = Frame::Auth {
            identity: [3; 32],
            signature: [4; 64],
        };
        assert_eq!(AUTH_FRAME_LEN, 98);
        assert_eq!(auth.encoded_len(), AUTH_FRAME_LEN);
        assert_eq!(body(&auth).len(), AUTH_FRAME_LEN);
    }

    #[test]
    fn encodes_invalid_recipient_as_code_16() {
        let frame = Frame::error(ErrorCode::InvalidRecipient, "");
        assert_eq!(body(&frame), vec![1, 0x7F, 0, 16, 0, 0]);
        assert_eq!(ErrorCode::from_u16(16), ErrorCode::InvalidRecipient);
        assert_eq!(ErrorCode::InvalidRecipient.name(), "invalid_recipient");
    }

    #[test]
    fn error_codes_round_trip_through_u16() {
        for code in 0..=u16::MAX {
            assert_eq!(ErrorCode::from_u16(code).to_u16(), code);
        }
        assert_eq!(ErrorCode::from_u16(8), ErrorCode::Replaced);
        assert_eq!(ErrorCode::from_u16(999), ErrorCode::UnknownCode(999));
    }

    #[test]
    fn keeps_unknown_error_codes() {
        let bytes = [1, 0x7F, 0x12, 0x34, 0, 0];
        assert_eq!(
            Frame::decode(&bytes),
            Ok(Frame::Error {
                code: ErrorCode::UnknownCode(0x1234),
                reason: String::new(),
            })
        );
    }

    #[test]
    fn rejects_empty_name() {
        assert_eq!(
            Frame::decode(&[1, 0x16, 0, 0, 0, 1, 0, 0]),
            Err(DecodeError::Invalid {
                field: "name",
                reason: "empty"
            })
        );
    }

    #[test]
    fn rejects_overlong_name_before_reading_it() {
        // 65 declared bytes but none present: the bound is checked first.
        assert!(matches!(
            Frame::decode(&[1, 0x16, 0, 0, 0, 1, 0, 65]),
            Err(DecodeError::TooLong {
                field: "name",
                len: 65,
                max: MAX_NAME_LEN
            })
        ));
    }

    #[test]
    fn rejects_payload_length_over_limit() {
        let mut bytes = vec![1, 0x20];
        bytes.extend_from_slice(&[0; 48]);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Frame::decode(&bytes),
            Err(DecodeError::TooLong { field: "payload", .. })
        ));
    }

    #[test]
    fn validate_reports_oversized_fields() {
        let frame = Frame::Send {
            recipient: [0; 32],
            msg_id: [0; 16],
            payload: vec![0; MAX_PAYLOAD_LEN + 1],
        };
        assert!(matches!(
            frame.validate(),
            Err(DecodeError::TooLong { field: "payload", .. })
        ));
        let empty_name = Frame::LookupName {
            request_id: 0,
            name: String::new(),
        };
        assert!(matches!(
            empty_name.validate(),
            Err(DecodeError::Invalid { field: "name", .. })
        ));
    }

    #[test]
    fn largest_valid_frame_fits_hard_maximum() {
        let frame = Frame::Deliver {
            sender: [0; 32],
            msg_id: [0; 16],
            timestamp_ms: 0,
            payload: vec![0; MAX_PAYLOAD_LEN],
        };
        assert!(frame.encoded_len() <= MAX_FRAME_LEN);
    }

    #[test]
    fn debug_hides_opaque_bytes() {
        let frame = Frame::Send {
            recipient: [0; 32],
            msg_id: [0; 16],
            payload: vec![0x5A; 3],
        };
        let shown = format!("{frame:?}");
        assert!(shown.contains("<3 bytes>"), "{shown}");
        assert!(!shown.contains("90"), "{shown}"); // 0x5A = 90
    }
}
