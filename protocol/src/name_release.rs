//! Signed name releases: an identity key's statement "I give up the name `name`", sent
//! to the relay (`ReleaseName`) so the name can be claimed by another identity.
//!
//! ```text
//! version u8 (= 1) || identity(32) || name_len u8 || name || issued_ms u64be || signature(64)
//! ```
//!
//! The layout is that of a name claim (`docs/PROTOCOL.md` 5.1); the signature is Ed25519
//! by `identity` over [`NAME_RELEASE_CONTEXT`] `|| identity || name_len || name ||
//! issued_ms u64be`, so a claim can never be taken for a release or the other way round.
//! The relay frees the name only if `identity` holds it and `issued_ms` is not older
//! than the claim it holds, so an old release cannot undo a later claim. See
//! `docs/PROTOCOL.md`, section 5.6.

use crate::consts::SIGNATURE_LEN;
use crate::error::{CryptoError, DecodeError};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::name_claim::{
    check_signed_name, decode_signed, encode_signed, signed_bytes, validate_name, NameClaimError,
};

/// Domain separation prefix of the release signature.
pub const NAME_RELEASE_CONTEXT: &[u8] = b"e2ee-chat/name-release/v1";

/// A release of `name` signed by `identity`. Public information.
#[derive(Clone, PartialEq, Eq)]
pub struct NameRelease {
    /// The identity that gives the name up.
    pub identity: IdentityKey,
    /// The released name, valid per [`validate_name`].
    pub name: String,
    /// When the release was signed, ms since the Unix epoch (asserted by the signer).
    pub issued_ms: u64,
    /// Ed25519 signature by `identity` over [`NameRelease::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl NameRelease {
    /// Signs a release of `name` by `identity`. Fails if the name is not valid.
    pub fn sign(identity: &IdentityKeyPair, name: &str, issued_ms: u64) -> Result<Self, NameClaimError> {
        validate_name(name)?;
        let public = *identity.public();
        let signature = identity.sign(&signed_bytes(
            NAME_RELEASE_CONTEXT,
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
    /// `NAME_RELEASE_CONTEXT || identity || name_len u8 || name || issued_ms u64be`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(
            NAME_RELEASE_CONTEXT,
            &self.identity,
            self.name.as_bytes(),
            self.issued_ms,
        )
    }

    /// The wire bytes (the layout of a claim).
    pub fn encode(&self) -> Vec<u8> {
        encode_signed(&self.identity, &self.name, self.issued_ms, &self.signature)
    }

    /// Parses wire bytes; does not check the signature (see [`NameRelease::decode_verified`]).
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
        let release = Self::decode(bytes)?;
        release.verify()?;
        Ok(release)
    }
}

impl std::fmt::Debug for NameRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameRelease")
            .field("identity", &self.identity)
            .field("name", &self.name)
            .field("issued_ms", &self.issued_ms)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name_claim::NameClaim;

    #[test]
    fn a_release_verifies_and_round_trips() -> Result<(), NameClaimError> {
        let identity = IdentityKeyPair::from_seed(&[3; 32]);
        let release = NameRelease::sign(&identity, "bob", 7)?;
        assert_eq!(NameRelease::decode_verified(&release.encode()), Ok(release));
        Ok(())
    }

    #[test]
    fn a_claim_is_not_a_release_and_a_release_is_not_a_claim() -> Result<(), NameClaimError> {
        let identity = IdentityKeyPair::from_seed(&[3; 32]);
        let claim = NameClaim::sign(&identity, "bob", 7)?;
        let release = NameRelease::sign(&identity, "bob", 7)?;
        // Same layout, different signature contexts.
        assert_eq!(claim.encode().len(), release.encode().len());
        assert!(NameRelease::decode_verified(&claim.encode()).is_err());
        assert!(NameClaim::decode_verified(&release.encode()).is_err());
        Ok(())
    }
}
