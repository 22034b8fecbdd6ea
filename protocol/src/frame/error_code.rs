//! [`ErrorCode`]: why an `Error` frame refuses a request or closes a connection
//! (docs/PROTOCOL.md 1.10).

use std::fmt;

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
    /// A `Send` reuses a message id that this sender used for another recipient:
    /// nothing was stored.
    MsgIdReused,
    /// `Refused` only: the request was refused by the rate limiter; send it again after
    /// `retry_after_ms`.
    RateLimited,
    /// `Refused` only: a `Send` was refused because a storage quota is full (the
    /// recipient's queue, the sender's quota or the relay's budget); send it again after
    /// `retry_after_ms`.
    QuotaExceeded,
    /// A group upload from an identity that is not a member of the group
    /// (docs/PROTOCOL.md 8.4).
    NotGroupMember,
    /// A group upload for a group the relay does not know (only a commit made in epoch 0
    /// creates one).
    UnknownGroup,
    /// A group upload whose MLS header, content type, Welcome or member lists are not
    /// what its frame requires.
    InvalidGroupMessage,
    /// The relay's store engine does not keep groups or KeyPackages.
    GroupsUnsupported,
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
            17 => Self::MsgIdReused,
            18 => Self::RateLimited,
            19 => Self::QuotaExceeded,
            20 => Self::NotGroupMember,
            21 => Self::UnknownGroup,
            22 => Self::InvalidGroupMessage,
            23 => Self::GroupsUnsupported,
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
            Self::MsgIdReused => 17,
            Self::RateLimited => 18,
            Self::QuotaExceeded => 19,
            Self::NotGroupMember => 20,
            Self::UnknownGroup => 21,
            Self::InvalidGroupMessage => 22,
            Self::GroupsUnsupported => 23,
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
            Self::MsgIdReused => "msg_id_reused",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
            Self::NotGroupMember => "not_group_member",
            Self::UnknownGroup => "unknown_group",
            Self::InvalidGroupMessage => "invalid_group_message",
            Self::GroupsUnsupported => "groups_unsupported",
            Self::UnknownCode(_) => "unknown",
        }
    }
}

impl ErrorCode {
    /// Whether a request refused with this code may succeed if sent again later
    /// ([`ErrorCode::RateLimited`], [`ErrorCode::QuotaExceeded`]); every other refusal is
    /// final for that request.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::QuotaExceeded)
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
