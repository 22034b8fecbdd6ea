//! Error types of the protocol crate.

use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended early; `needed` more bytes are required (at least).
    #[error("incomplete input: {needed} more bytes needed")]
    Incomplete {
        /// How many more bytes are needed, at least.
        needed: usize,
    },
    /// Bytes were left after a complete value.
    #[error("{extra} trailing bytes after a complete value")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
    /// A length field exceeds its protocol limit.
    #[error("field {field} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// The field name.
        field: &'static str,
        /// The declared length.
        len: usize,
        /// The limit for that field.
        max: usize,
    },
    /// A version byte this implementation does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A type byte that is not defined.
    #[error("unknown type 0x{0:02x}")]
    UnknownType(u8),
    /// A field holds a value that is not allowed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl DecodeError {
    /// True when more input could make the value decodable.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, DecodeError::Incomplete { .. })
    }
}

/// Why a cryptographic operation failed. AEAD failures are deliberately opaque.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// The message bytes are malformed.
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    /// A public key fails the v1 key checks (not canonical, small order, not torsion-free).
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A signature (on a signed prekey or elsewhere) does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A Diffie-Hellman output was all zero (non-contributory).
    #[error("non-contributory key agreement")]
    NonContributory,
    /// Authenticated decryption failed: tampered, wrong key or wrong associated data.
    #[error("authentication failed")]
    Aead,
    /// The message's counter is below the chain position and no key is stored for it.
    #[error("duplicate or too old message (chain position {n})")]
    DuplicateOrTooOld {
        /// The counter carried by the message.
        n: u32,
    },
    /// The message's key was discarded: evicted from the skipped-key store (over
    /// `MAX_STORED_SKIPPED_KEYS`) or never derived (a gap over `MAX_SKIP`).
    #[error("message too old: its key was discarded (chain position {n})")]
    TooOld {
        /// The counter carried by the message.
        n: u32,
    },
    /// The message would make the receiver skip more than `MAX_SKIP` keys.
    #[error("message would skip {skip} keys, over the limit")]
    SkipLimit {
        /// How many keys would have been skipped.
        skip: u64,
    },
    /// A PreKey message names a signed prekey this side does not hold.
    #[error("unknown signed prekey")]
    UnknownSignedPreKey,
    /// A PreKey message names a one-time prekey this side does not hold (used or never made).
    #[error("unknown or already used one-time prekey")]
    UnknownOneTimePreKey,
    /// A Normal message arrived for a peer without a session.
    #[error("no session with this peer")]
    NoSession,
    /// A PreKey message claims an identity different from the transport's sender.
    #[error("message identity does not match the sender")]
    IdentityMismatch,
    /// A counter would overflow.
    #[error("chain counter overflow")]
    CounterOverflow,
}
