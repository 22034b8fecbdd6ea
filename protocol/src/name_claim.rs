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

use crate::consts::{KEY_LEN, SIGNATURE_LEN};
use crate::frame::{MAX_CLAIM_LEN, MAX_NAME_LEN};
pub use crate::name::{validate_name, NameClaimError};
pub use crate::signed_name::NAME_CLAIM_VERSION;
use crate::signed_name::{SignedName, Statement};
/// Domain separation prefix of the claim signature.
pub const NAME_CLAIM_CONTEXT: &[u8] = b"e2ee-chat/name-claim/v1";
/// The longest encoded claim (a name of [`MAX_NAME_LEN`] bytes).
pub const MAX_ENCODED_CLAIM_LEN: usize = 1 + KEY_LEN + 1 + MAX_NAME_LEN + 8 + SIGNATURE_LEN;

// A claim must always fit in the relay's `PublishName` / `NameClaim` frames.
const _: () = assert!(MAX_ENCODED_CLAIM_LEN <= MAX_CLAIM_LEN);
// The name length travels in one byte.
const _: () = assert!(MAX_NAME_LEN <= u8::MAX as usize);

/// The statement "my name is `name`" ([`NAME_CLAIM_CONTEXT`]).
#[derive(Debug)]
pub enum Claim {}

impl Statement for Claim {
    const CONTEXT: &'static [u8] = NAME_CLAIM_CONTEXT;
    const NAME: &'static str = "NameClaim";
}

/// A name signed by an identity key: "my name is `name`".
pub type NameClaim = SignedName<Claim>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKeyPair;

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
