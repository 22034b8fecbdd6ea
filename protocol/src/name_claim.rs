//! Signed name claims: an identity key's statement "my name is `name`", published
//! through the relay so that peers can find each other by name.
//!
//! ```text
//! version u8 (= 1) || identity(32) || name_len u8 || name || issued_ms u64be || signature(64)
//! ```
//!
//! `name` is 1..=64 bytes of `[a-z0-9._-]` (so ASCII, lowercase). `signature` is Ed25519
//! by `identity` over [`NAME_CLAIM_CONTEXT`] `|| identity || name_len || name ||
//! issued_ms u64be`. The relay checks the signature and that the claim's identity is the
//! authenticated one; it stores the latest claim per name. A claim only says which key
//! calls itself by a name: whether that key is the person a user means is what pinning
//! and safety numbers decide. See `docs/PROTOCOL.md`, section 5.

use thiserror::Error;

use crate::consts::{KEY_LEN, SIGNATURE_LEN};
use crate::error::{CryptoError, DecodeError};
use crate::frame::{MAX_CLAIM_LEN, MAX_NAME_LEN, MIN_NAME_LEN};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::reader::Reader;

/// Version byte of the claim encoding.
pub const NAME_CLAIM_VERSION: u8 = 1;
/// Domain separation prefix of the claim signature.
pub const NAME_CLAIM_CONTEXT: &[u8] = b"e2ee-chat/name-claim/v1";
/// The longest encoded claim (a name of [`MAX_NAME_LEN`] bytes).
pub const MAX_ENCODED_CLAIM_LEN: usize = 1 + KEY_LEN + 1 + MAX_NAME_LEN + 8 + SIGNATURE_LEN;

// A claim must always fit in the relay's `PublishName` / `NameClaim` frames.
const _: () = assert!(MAX_ENCODED_CLAIM_LEN <= MAX_CLAIM_LEN);
// The name length travels in one byte.
const _: () = assert!(MAX_NAME_LEN <= u8::MAX as usize);

/// Why a name is not a valid agent name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameClaimError {
    /// The name is empty.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {len} bytes, over the limit of {MAX_NAME_LEN}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[a-z0-9._-]`.
    #[error("name contains {ch:?}: only lowercase a-z, digits 0-9, '.', '_' and '-' are allowed")]
    InvalidChar {
        /// The first character that is not allowed.
        ch: char,
    },
}

/// Checks that `name` is a valid agent name: 1..=64 bytes of `[a-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), NameClaimError> {
    if name.is_empty() {
        return Err(NameClaimError::Empty);
    }
    if let Some(ch) = name.chars().find(|&c| !is_name_char(c)) {
        return Err(NameClaimError::InvalidChar { ch });
    }
    // Every allowed character is one byte, so this is also the character count.
    if name.len() > MAX_NAME_LEN {
        return Err(NameClaimError::TooLong { len: name.len() });
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// A name signed by an identity key. Public information: `Debug` shows everything but
/// the signature bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct NameClaim {
    /// The identity that claims the name.
    pub identity: IdentityKey,
    /// The claimed name, valid per [`validate_name`].
    pub name: String,
    /// When the claim was signed, in milliseconds since the Unix epoch (asserted by the
    /// signer; lets a relay prefer the newer of two claims by one identity).
    pub issued_ms: u64,
    /// Ed25519 signature by `identity` over [`NameClaim::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl NameClaim {
    /// Signs a claim of `name` by `identity`. Fails if the name is not valid.
    pub fn sign(identity: &IdentityKeyPair, name: &str, issued_ms: u64) -> Result<Self, NameClaimError> {
        validate_name(name)?;
        let public = *identity.public();
        let signature = identity.sign(&signed_bytes(
            NAME_CLAIM_CONTEXT,
            &public,
            name.as_bytes(),
            issued_ms,
        ));
        Ok(Self {
            identity: public,
            name: name.to_owned(),
            issued_ms,
            signature,
        })
    }

    /// The bytes the signature covers:
    /// `NAME_CLAIM_CONTEXT || identity || name_len u8 || name || issued_ms u64be`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(
            NAME_CLAIM_CONTEXT,
            &self.identity,
            self.name.as_bytes(),
            self.issued_ms,
        )
    }

    /// The wire bytes. A claim whose name was altered past 255 bytes after signing
    /// encodes a truncated length and will not decode.
    pub fn encode(&self) -> Vec<u8> {
        encode_signed(&self.identity, &self.name, self.issued_ms, &self.signature)
    }

    /// Parses wire bytes: the version, a valid identity key, a valid name, and no
    /// trailing bytes. Does not check the signature (see [`NameClaim::decode_verified`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (identity, name, issued_ms, signature) = decode_signed(bytes)?;
        Ok(Self {
            identity,
            name,
            issued_ms,
            signature,
        })
    }

    /// Checks the name and the signature (strict Ed25519).
    pub fn verify(&self) -> Result<(), CryptoError> {
        check_signed_name(&self.name)?;
        self.identity.verify(&self.signed_bytes(), &self.signature)
    }

    /// Decodes and verifies in one step.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, CryptoError> {
        let claim = Self::decode(bytes)?;
        claim.verify()?;
        Ok(claim)
    }
}

impl std::fmt::Debug for NameClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameClaim")
            .field("identity", &self.identity)
            .field("name", &self.name)
            .field("issued_ms", &self.issued_ms)
            .finish_non_exhaustive()
    }
}

/// `version || identity || name_len u8 || name || issued_ms u64be || signature`, the
/// layout shared by claims and releases (section 5.1).
pub(crate) fn encode_signed(
    identity: &IdentityKey,
    name: &str,
    issued_ms: u64,
    signature: &[u8; SIGNATURE_LEN],
) -> Vec<u8> {
    let name = name.as_bytes();
    let mut out = Vec::with_capacity(1 + KEY_LEN + 1 + name.len() + 8 + SIGNATURE_LEN);
    out.push(NAME_CLAIM_VERSION);
    out.extend_from_slice(identity.as_bytes());
    out.push(name_len_byte(name));
    out.extend_from_slice(name);
    out.extend_from_slice(&issued_ms.to_be_bytes());
    out.extend_from_slice(signature);
    out
}

/// Parses the layout of [`encode_signed`]: the version, a valid identity key, a valid
/// name, and no trailing bytes. The signature is not checked.
pub(crate) fn decode_signed(
    bytes: &[u8],
) -> Result<(IdentityKey, String, u64, [u8; SIGNATURE_LEN]), DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != NAME_CLAIM_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let identity = IdentityKey::from_bytes(r.array()?).map_err(|_| DecodeError::Invalid {
        field: "identity",
        reason: "not a valid Ed25519 public key",
    })?;
    let name_len = usize::from(r.u8()?);
    if name_len < MIN_NAME_LEN {
        return Err(DecodeError::Invalid {
            field: "name",
            reason: "name is empty",
        });
    }
    if name_len > MAX_NAME_LEN {
        return Err(DecodeError::TooLong {
            field: "name",
            len: name_len,
            max: MAX_NAME_LEN,
        });
    }
    let name = std::str::from_utf8(r.take(name_len)?)
        .ok()
        .filter(|name| validate_name(name).is_ok())
        .ok_or(DecodeError::Invalid {
            field: "name",
            reason: "only lowercase a-z, digits 0-9, '.', '_' and '-' are allowed",
        })?
        .to_owned();
    let issued_ms = r.u64()?;
    let signature = r.array()?;
    r.finish()?;
    Ok((identity, name, issued_ms, signature))
}

/// Checks that `name` is valid (as a decode error, for `verify`).
pub(crate) fn check_signed_name(name: &str) -> Result<(), CryptoError> {
    validate_name(name).map_err(|_| {
        CryptoError::Decode(DecodeError::Invalid {
            field: "name",
            reason: "not a valid agent name",
        })
    })
}

/// The name length as its wire byte (saturating; a valid name is at most 64 bytes).
fn name_len_byte(name: &[u8]) -> u8 {
    u8::try_from(name.len()).unwrap_or(u8::MAX)
}

/// `context || identity || name_len u8 || name || issued_ms u64be`: what a claim (or a
/// release, under its own context) signs.
pub(crate) fn signed_bytes(context: &[u8], identity: &IdentityKey, name: &[u8], issued_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + KEY_LEN + 1 + name.len() + 8);
    out.extend_from_slice(context);
    out.extend_from_slice(identity.as_bytes());
    out.push(name_len_byte(name));
    out.extend_from_slice(name);
    out.extend_from_slice(&issued_ms.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_claim_fits_the_relay_frame_limit() {
        assert_eq!(MAX_ENCODED_CLAIM_LEN, 170);
        let identity = IdentityKeyPair::from_seed(&[3; 32]);
        let name = "a".repeat(MAX_NAME_LEN);
        let claim = NameClaim::sign(&identity, &name, u64::MAX);
        assert_eq!(claim.map(|c| c.encode().len()), Ok(MAX_ENCODED_CLAIM_LEN));
    }

    #[test]
    fn signed_bytes_follow_the_documented_layout() -> Result<(), NameClaimError> {
        let identity = IdentityKeyPair::from_seed(&[3; 32]);
        let claim = NameClaim::sign(&identity, "bob", 0x0102_0304_0506_0708)?;
        let mut expected = b"e2ee-chat/name-claim/v1".to_vec();
        expected.extend_from_slice(identity.public().as_bytes());
        expected.extend_from_slice(&[3, b'b', b'o', b'b', 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(claim.signed_bytes(), expected);
        Ok(())
    }
}
