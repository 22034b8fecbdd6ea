//! Decrypt failures, classified: every message that does not decrypt is reported with
//! one of these classes, never dropped silently.

use std::fmt;
use std::str::FromStr;

use e2ee_protocol::session_reset::ResetReason;
use e2ee_protocol::CryptoError;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a received message was not shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// A duplicate or replay: a message id already received from this peer (a relay
    /// redelivery), or a ratchet message whose key was already used
    /// (`CryptoError::DuplicateOrTooOld`; that also covers a key discarded so long ago
    /// that the session no longer remembers discarding it).
    Duplicate,
    /// Too old: the message's key was discarded, evicted from the 2000 stored skipped
    /// keys or never derived because its gap was over 1000 (`CryptoError::TooOld`).
    TooOld,
    /// The message would skip more message keys than allowed (`MAX_SKIP`).
    SkipLimit,
    /// The message does not authenticate: altered bytes, a forged signature, crafted
    /// keys, or a PreKey message whose identity is not the relay-authenticated sender.
    Tampered,
    /// No session can decrypt it: a Normal message without a session, or a PreKey
    /// message naming a signed or one-time prekey this agent does not hold (any more).
    UnknownSession,
    /// The bytes do not parse: the message encoding, or the payload inside a message
    /// that did decrypt.
    Malformed,
    /// The sender's identity key is not the one pinned for its name, and the identity
    /// policy refused it.
    IdentityChanged,
}

impl FailureClass {
    /// Every class, in declaration order.
    pub const ALL: [FailureClass; 7] = [
        Self::Duplicate,
        Self::TooOld,
        Self::SkipLimit,
        Self::Tampered,
        Self::UnknownSession,
        Self::Malformed,
        Self::IdentityChanged,
    ];

    /// The snake_case name used in events, scripts and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::TooOld => "too_old",
            Self::SkipLimit => "skip_limit",
            Self::Tampered => "tampered",
            Self::UnknownSession => "unknown_session",
            Self::Malformed => "malformed",
            Self::IdentityChanged => "identity_changed",
        }
    }

    /// The class of a crypto error on the receive path.
    pub fn of(err: &CryptoError) -> Self {
        match err {
            CryptoError::DuplicateOrTooOld { .. } => Self::Duplicate,
            CryptoError::TooOld { .. } => Self::TooOld,
            CryptoError::SkipLimit { .. } => Self::SkipLimit,
            CryptoError::Aead
            | CryptoError::BadSignature
            | CryptoError::IdentityMismatch
            | CryptoError::InvalidPublicKey
            | CryptoError::NonContributory
            | CryptoError::CounterOverflow => Self::Tampered,
            CryptoError::NoSession | CryptoError::UnknownSignedPreKey | CryptoError::UnknownOneTimePreKey => {
                Self::UnknownSession
            }
            CryptoError::Decode(_) => Self::Malformed,
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`FailureClass`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown failure class `{0}`, expected one of: duplicate, too_old, skip_limit, \
     tampered, unknown_session, malformed, identity_changed"
)]
pub struct ParseFailureClassError(pub String);

impl FromStr for FailureClass {
    type Err = ParseFailureClassError;

    /// Accepts the snake_case names, and `-` in place of `_` (`skip-limit`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|class| class.as_str() == wanted)
            .ok_or_else(|| ParseFailureClassError(s.to_owned()))
    }
}

/// A received message that was not shown, with its class.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{class}: {detail}")]
pub struct DecryptFailure {
    /// The class.
    pub class: FailureClass,
    /// A short description (never key material or plaintext).
    pub detail: String,
    /// True when the message id was already received and processed: a relay
    /// redelivery after a crash or a lost `DeliveryAck`. The caller acknowledges it to
    /// the relay and need not report it as an attack.
    pub redelivery: bool,
    /// The reason to ask the sender for a new session, when a new session would cure
    /// the failure (docs/PROTOCOL.md 2.8); `None` otherwise.
    pub cure: Option<ResetReason>,
}

impl DecryptFailure {
    /// A failure of `class` with a description.
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        Self {
            class,
            detail: detail.into(),
            redelivery: false,
            cure: None,
        }
    }

    /// A relay redelivery of a message id already processed.
    pub fn redelivery() -> Self {
        Self {
            redelivery: true,
            ..Self::new(
                FailureClass::Duplicate,
                "message id already received (relay redelivery)",
            )
        }
    }
}

impl From<CryptoError> for DecryptFailure {
    fn from(err: CryptoError) -> Self {
        Self {
            cure: ResetReason::of(&err),
            ..Self::new(FailureClass::of(&err), err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use e2ee_protocol::DecodeError;

    use super::*;

    #[test]
    fn maps_every_crypto_error() {
        let cases = [
            (CryptoError::DuplicateOrTooOld { n: 3 }, FailureClass::Duplicate),
            (CryptoError::TooOld { n: 3 }, FailureClass::TooOld),
            (CryptoError::SkipLimit { skip: 1001 }, FailureClass::SkipLimit),
            (CryptoError::Aead, FailureClass::Tampered),
            (CryptoError::BadSignature, FailureClass::Tampered),
            (CryptoError::IdentityMismatch, FailureClass::Tampered),
            (CryptoError::InvalidPublicKey, FailureClass::Tampered),
            (CryptoError::NonContributory, FailureClass::Tampered),
            (CryptoError::CounterOverflow, FailureClass::Tampered),
            (CryptoError::NoSession, FailureClass::UnknownSession),
            (CryptoError::UnknownSignedPreKey, FailureClass::UnknownSession),
            (CryptoError::UnknownOneTimePreKey, FailureClass::UnknownSession),
            (
                CryptoError::Decode(DecodeError::UnknownType(9)),
                FailureClass::Malformed,
            ),
        ];
        for (err, class) in cases {
            let failure = DecryptFailure::from(err.clone());
            assert_eq!(failure.class, class, "{err:?}");
            assert_eq!(failure.detail, err.to_string());
            assert!(!failure.redelivery);
        }
    }

    #[test]
    fn names_round_trip_through_serde_display_and_from_str() {
        for class in FailureClass::ALL {
            let json = serde_json::to_string(&class).expect("serialize");
            assert_eq!(json, format!("\"{class}\""));
            assert_eq!(serde_json::from_str::<FailureClass>(&json).ok(), Some(class));
            assert_eq!(class.as_str().parse::<FailureClass>(), Ok(class));
        }
        assert_eq!("skip-limit".parse::<FailureClass>(), Ok(FailureClass::SkipLimit));
        assert!("tamper".parse::<FailureClass>().is_err());
    }

    #[test]
    fn displays_class_and_detail() {
        let failure = DecryptFailure::from(CryptoError::Aead);
        assert_eq!(failure.to_string(), "tampered: authentication failed");
        assert!(DecryptFailure::redelivery().redelivery);
    }
}
