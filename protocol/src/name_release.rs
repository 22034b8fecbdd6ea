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

use crate::signed_name::{SignedName, Statement};

/// Domain separation prefix of the release signature.
pub const NAME_RELEASE_CONTEXT: &[u8] = b"e2ee-chat/name-release/v1";

/// The statement "I give up the name `name`" ([`NAME_RELEASE_CONTEXT`]).
#[derive(Debug)]
pub enum Release {}

impl Statement for Release {
    const CONTEXT: &'static [u8] = NAME_RELEASE_CONTEXT;
    const NAME: &'static str = "NameRelease";
}

/// A release of `name` signed by `identity`. Public information.
pub type NameRelease = SignedName<Release>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKeyPair;
    use crate::name_claim::{NameClaim, NameClaimError};

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
