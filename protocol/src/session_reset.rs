//! The session reset request (docs/PROTOCOL.md 2.8): "I cannot read your messages in this
//! chain; start a new session with me and send them again", sent outside the broken
//! session and signed by the requester's identity key.
//!
//! ```text
//! offset size field
//! 0      1    type        0x05
//! 1      1    version     0x01
//! 2      32   requester   Ed25519 identity key of the side that cannot decrypt
//! 34     32   peer        Ed25519 identity key of the sender of the failed message
//! 66     32   ratchet_key the failed message's header DHs_pub (a ratchet key of `peer`)
//! 98     4    n           u32be, the failed message's header n
//! 102    1    reason      see ResetReason
//! 103    64   signature   Ed25519 by `requester` over "e2ee-chat/reset/v1" || bytes 0..103
//! ```
//!
//! It travels as the opaque payload of a relay `Send`, like an encrypted message. The
//! receiver honours it only when `ratchet_key` is one of its own recent ratchet keys in its
//! current session with the requester ([`crate::session::Session::sent_with_ratchet_key`]):
//! a replayed request names a chain of a session that a reset already replaced.

use crate::consts::{KEY_LEN, MSG_TYPE_RESET, RESET_SIG_CONTEXT, SIGNATURE_LEN};
use crate::error::{CryptoError, DecodeError};
use crate::header::Header;
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::keys::PublicKey;
use crate::reader::Reader;

/// The version byte of the reset request layout.
pub const RESET_VERSION: u8 = 0x01;
/// Length of an encoded reset request.
pub const RESET_REQUEST_LEN: usize = SIGNED_LEN + SIGNATURE_LEN;
/// Length of the signed part (everything before the signature).
const SIGNED_LEN: usize = 1 + 1 + 3 * KEY_LEN + 4 + 1;

/// Why the requester could not decrypt (the reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetReason {
    /// 0x01: no session can decrypt it (a Normal message without a session, or a PreKey
    /// message naming a signed or one-time prekey the requester does not hold).
    UnknownSession,
    /// 0x02: its chain position was already used: the sender's state was rolled back.
    ReusedPosition,
    /// 0x03: it would skip more than `MAX_SKIP` message keys in its chain.
    SkipLimit,
    /// 0x04: it did not authenticate under the requester's session (the requester's
    /// state was rolled back, or the message was altered).
    Unauthenticated,
}

impl ResetReason {
    /// The reason byte.
    pub fn byte(self) -> u8 {
        match self {
            Self::UnknownSession => 0x01,
            Self::ReusedPosition => 0x02,
            Self::SkipLimit => 0x03,
            Self::Unauthenticated => 0x04,
        }
    }

    /// The reason of a byte; `None` for an undefined one.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0x01 => Some(Self::UnknownSession),
            0x02 => Some(Self::ReusedPosition),
            0x03 => Some(Self::SkipLimit),
            0x04 => Some(Self::Unauthenticated),
            _ => None,
        }
    }

    /// The snake_case name used in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown_session",
            Self::ReusedPosition => "reused_position",
            Self::SkipLimit => "skip_limit",
            Self::Unauthenticated => "unauthenticated",
        }
    }

    /// The reason a new session would cure, for a decryption error; `None` when a new
    /// session would not help (a malformed message, a message too old to decrypt).
    pub fn of(err: &CryptoError) -> Option<Self> {
        match err {
            CryptoError::NoSession | CryptoError::UnknownSignedPreKey | CryptoError::UnknownOneTimePreKey => {
                Some(Self::UnknownSession)
            }
            CryptoError::DuplicateOrTooOld { .. } => Some(Self::ReusedPosition),
            CryptoError::SkipLimit { .. } => Some(Self::SkipLimit),
            CryptoError::Aead => Some(Self::Unauthenticated),
            _ => None,
        }
    }
}

/// A request by `requester` that `peer` start a new session with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRequest {
    /// The side that cannot decrypt (and signs the request).
    pub requester: IdentityKey,
    /// The side whose message failed (the recipient of the request).
    pub peer: IdentityKey,
    /// The failed message's ratchet key (one of `peer`'s).
    pub ratchet_key: PublicKey,
    /// The failed message's chain position.
    pub n: u32,
    /// Why it failed.
    pub reason: ResetReason,
}

/// Why a reset request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetRequestError {
    /// The bytes do not parse.
    #[error("malformed reset request: {0}")]
    Decode(#[from] DecodeError),
    /// The signature does not verify under the requester's key.
    #[error("reset request: {0}")]
    Crypto(#[from] CryptoError),
}

impl ResetRequest {
    /// The request for a message with `header` from `peer` that `requester` could not
    /// decrypt for `reason`.
    pub fn for_header(
        requester: IdentityKey,
        peer: IdentityKey,
        header: &Header,
        reason: ResetReason,
    ) -> Self {
        Self {
            requester,
            peer,
            ratchet_key: header.ratchet_key,
            n: header.n,
            reason,
        }
    }

    fn signed_part(&self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[0] = MSG_TYPE_RESET;
        out[1] = RESET_VERSION;
        out[2..34].copy_from_slice(self.requester.as_bytes());
        out[34..66].copy_from_slice(self.peer.as_bytes());
        out[66..98].copy_from_slice(self.ratchet_key.as_bytes());
        out[98..102].copy_from_slice(&self.n.to_be_bytes());
        out[102] = self.reason.byte();
        out
    }

    fn signature_message(signed: &[u8; SIGNED_LEN]) -> Vec<u8> {
        [RESET_SIG_CONTEXT, &signed[..]].concat()
    }

    /// The 167 wire bytes, signed with `identity` (which must be the requester's).
    pub fn sign(&self, identity: &IdentityKeyPair) -> Result<Vec<u8>, CryptoError> {
        if identity.public() != &self.requester {
            return Err(CryptoError::IdentityMismatch);
        }
        let signed = self.signed_part();
        let signature = identity.sign(&Self::signature_message(&signed));
        Ok([&signed[..], &signature[..]].concat())
    }

    /// Parses the wire bytes and verifies the signature (strictly) under the requester's
    /// key, which is checked as every identity key (docs/PROTOCOL.md 2.1).
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, ResetRequestError> {
        let mut reader = Reader::new(bytes);
        let kind = reader.u8()?;
        if kind != MSG_TYPE_RESET {
            return Err(DecodeError::UnknownType(kind).into());
        }
        let version = reader.u8()?;
        if version != RESET_VERSION {
            return Err(DecodeError::UnsupportedVersion(version).into());
        }
        let identity = |bytes| {
            IdentityKey::from_bytes(bytes).map_err(|_| DecodeError::Invalid {
                field: "identity",
                reason: "not a valid Ed25519 public key",
            })
        };
        let requester = identity(reader.array()?)?;
        let peer = identity(reader.array()?)?;
        let ratchet_key = PublicKey::from_bytes(reader.array()?);
        let n = reader.u32()?;
        let reason = ResetReason::from_byte(reader.u8()?).ok_or(DecodeError::Invalid {
            field: "reason",
            reason: "undefined reason byte",
        })?;
        let signature: [u8; SIGNATURE_LEN] = reader.array()?;
        reader.finish()?;
        let request = Self {
            requester,
            peer,
            ratchet_key,
            n,
            reason,
        };
        requester.verify(&Self::signature_message(&request.signed_part()), &signature)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> (IdentityKeyPair, ResetRequest) {
        let bob = IdentityKeyPair::from_seed(&[2; 32]);
        let alice = IdentityKeyPair::from_seed(&[1; 32]);
        let request = ResetRequest {
            requester: *bob.public(),
            peer: *alice.public(),
            ratchet_key: PublicKey::from_bytes([9; 32]),
            n: 1010,
            reason: ResetReason::SkipLimit,
        };
        (bob, request)
    }

    #[test]
    fn a_request_round_trips_and_is_167_bytes() -> Result<(), ResetRequestError> {
        let (bob, request) = request();
        let wire = request.sign(&bob)?;
        assert_eq!(wire.len(), RESET_REQUEST_LEN);
        assert_eq!(RESET_REQUEST_LEN, 167);
        assert_eq!(ResetRequest::decode_verified(&wire)?, request);
        Ok(())
    }

    #[test]
    fn every_signed_byte_is_covered_and_trailing_bytes_are_refused() -> Result<(), ResetRequestError> {
        let (bob, request) = request();
        let wire = request.sign(&bob)?;
        for i in 0..wire.len() {
            let mut altered = wire.clone();
            altered[i] ^= 0x01;
            assert!(ResetRequest::decode_verified(&altered).is_err(), "byte {i}");
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert!(ResetRequest::decode_verified(&longer).is_err());
        assert!(ResetRequest::decode_verified(&wire[..wire.len() - 1]).is_err());
        Ok(())
    }

    #[test]
    fn only_the_requester_can_sign() {
        let (_, request) = request();
        let mallory = IdentityKeyPair::from_seed(&[7; 32]);
        assert_eq!(request.sign(&mallory), Err(CryptoError::IdentityMismatch));
    }
}
