//! [`SignedName`]: an identity key's signed statement about a name, the one layout of
//! name claims ([`crate::name_claim::NameClaim`]) and name releases
//! ([`crate::name_release::NameRelease`]), which differ only in the context their
//! signature covers (docs/PROTOCOL.md 5.1 and 5.6):
//!
//! ```text
//! version u8 (= 1) || identity(32) || name_len u8 || name || issued_ms u64be || signature(64)
//! signed: context || identity || name_len u8 || name || issued_ms u64be
//! ```

use std::marker::PhantomData;

use crate::consts::{KEY_LEN, SIGNATURE_LEN};
use crate::error::{CryptoError, DecodeError};
use crate::frame::{MAX_NAME_LEN, MIN_NAME_LEN};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::name::{validate_name, NameClaimError};
use crate::reader::Reader;

/// Version byte of the signed name encoding (claims and releases).
pub const NAME_CLAIM_VERSION: u8 = 1;

/// What a [`SignedName`] states: its signature context and its name in `Debug`.
pub trait Statement {
    /// Domain separation prefix of the signature.
    const CONTEXT: &'static [u8];
    /// The type's name in `Debug` output.
    const NAME: &'static str;
}

/// A name signed by an identity key under the context of `S`. Public information:
/// `Debug` shows everything but the signature bytes.
pub struct SignedName<S: Statement> {
    /// The identity that makes the statement.
    pub identity: IdentityKey,
    /// The name, valid per [`validate_name`].
    pub name: String,
    /// When it was signed, in milliseconds since the Unix epoch (asserted by the signer;
    /// lets a relay order two statements of one identity).
    pub issued_ms: u64,
    /// Ed25519 signature by `identity` over [`SignedName::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
    statement: PhantomData<S>,
}

impl<S: Statement> SignedName<S> {
    /// Signs the statement about `name` by `identity`. Fails if the name is not valid.
    pub fn sign(identity: &IdentityKeyPair, name: &str, issued_ms: u64) -> Result<Self, NameClaimError> {
        validate_name(name)?;
        let public = *identity.public();
        let signature = identity.sign(&signed_bytes(S::CONTEXT, &public, name.as_bytes(), issued_ms));
        Ok(Self::new(public, name.to_owned(), issued_ms, signature))
    }

    fn new(identity: IdentityKey, name: String, issued_ms: u64, signature: [u8; SIGNATURE_LEN]) -> Self {
        Self {
            identity,
            name,
            issued_ms,
            signature,
            statement: PhantomData,
        }
    }

    /// The bytes the signature covers:
    /// `context || identity || name_len u8 || name || issued_ms u64be`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(S::CONTEXT, &self.identity, self.name.as_bytes(), self.issued_ms)
    }

    /// The wire bytes. A name altered past 255 bytes after signing encodes a truncated
    /// length and will not decode.
    pub fn encode(&self) -> Vec<u8> {
        encode_signed(&self.identity, &self.name, self.issued_ms, &self.signature)
    }

    /// Parses wire bytes: the version, a valid identity key, a valid name, and no
    /// trailing bytes. Does not check the signature (see [`SignedName::decode_verified`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (identity, name, issued_ms, signature) = decode_signed(bytes)?;
        Ok(Self::new(identity, name, issued_ms, signature))
    }

    /// Checks the name and the signature (strict Ed25519).
    pub fn verify(&self) -> Result<(), CryptoError> {
        check_signed_name(&self.name)?;
        self.identity.verify(&self.signed_bytes(), &self.signature)
    }

    /// Decodes and verifies in one step.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, CryptoError> {
        let signed = Self::decode(bytes)?;
        signed.verify()?;
        Ok(signed)
    }
}

// Not derived: a derive would require `S` itself to be `Clone`, `PartialEq`...
impl<S: Statement> Clone for SignedName<S> {
    fn clone(&self) -> Self {
        Self::new(self.identity, self.name.clone(), self.issued_ms, self.signature)
    }
}

impl<S: Statement> PartialEq for SignedName<S> {
    fn eq(&self, other: &Self) -> bool {
        (self.identity, &self.name, self.issued_ms, self.signature)
            == (other.identity, &other.name, other.issued_ms, other.signature)
    }
}

impl<S: Statement> Eq for SignedName<S> {}

impl<S: Statement> std::fmt::Debug for SignedName<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(S::NAME)
            .field("identity", &self.identity)
            .field("name", &self.name)
            .field("issued_ms", &self.issued_ms)
            .finish_non_exhaustive()
    }
}

/// `version || identity || name_len u8 || name || issued_ms u64be || signature`, the
/// layout shared by claims and releases (section 5.1).
fn encode_signed(
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
fn decode_signed(bytes: &[u8]) -> Result<(IdentityKey, String, u64, [u8; SIGNATURE_LEN]), DecodeError> {
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
fn check_signed_name(name: &str) -> Result<(), CryptoError> {
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
fn signed_bytes(context: &[u8], identity: &IdentityKey, name: &[u8], issued_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + KEY_LEN + 1 + name.len() + 8);
    out.extend_from_slice(context);
    out.extend_from_slice(identity.as_bytes());
    out.push(name_len_byte(name));
    out.extend_from_slice(name);
    out.extend_from_slice(&issued_ms.to_be_bytes());
    out
}
