//! MLS credentials bound to e2ee-chat identity keys (docs/PROTOCOL.md 8.1).
//!
//! A member's MLS leaf is signed with its own Ed25519 MLS signature key; its
//! `BasicCredential` identity binds that key to the member's e2ee-chat identity:
//!
//! ```text
//! identity = identity_key [32] || binding_signature [64]
//! binding_signature = Ed25519-Sign(identity secret, CREDENTIAL_CONTEXT || mls_signature_key [32])
//! ```
//!
//! so the identity key pinned and verified pairwise (safety numbers) names the group
//! member too, and no one can present another identity's key as theirs.

use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use openmls::prelude::{BasicCredential, Credential};
use thiserror::Error;

/// Domain separation prefix of the binding signature.
pub const CREDENTIAL_CONTEXT: &[u8] = b"e2ee-chat/mls-credential/v1";
/// Length of a credential's identity field: identity key and binding signature.
pub const CREDENTIAL_IDENTITY_LEN: usize = 32 + 64;

/// Why a credential does not name an identity.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CredentialError {
    /// Not a basic credential of [`CREDENTIAL_IDENTITY_LEN`] bytes.
    #[error("the MLS credential is not an e2ee-chat identity binding")]
    Malformed,
    /// The identity key is not a valid Ed25519 key.
    #[error("the MLS credential names an invalid identity key")]
    InvalidIdentity,
    /// The binding signature does not verify for the leaf's signature key.
    #[error("the MLS credential's binding signature does not verify")]
    BadSignature,
    /// A member's renewed leaf names another identity than the member had.
    #[error("a member's renewed MLS leaf names another identity: commit refused")]
    IdentityChanged,
}

/// The bytes the identity key signs to bind `mls_signature_key`.
fn binding_message(mls_signature_key: &[u8]) -> Vec<u8> {
    [CREDENTIAL_CONTEXT, mls_signature_key].concat()
}

/// The credential binding `mls_signature_key` to `identity`.
pub fn bound_credential(identity: &IdentityKeyPair, mls_signature_key: &[u8]) -> Credential {
    let signature = identity.sign(&binding_message(mls_signature_key));
    let mut bytes = Vec::with_capacity(CREDENTIAL_IDENTITY_LEN);
    bytes.extend_from_slice(identity.public().as_bytes());
    bytes.extend_from_slice(&signature);
    BasicCredential::new(bytes).into()
}

/// The identity `credential` binds to the leaf signature key `mls_signature_key`.
pub fn verify_credential(
    credential: &Credential,
    mls_signature_key: &[u8],
) -> Result<IdentityKey, CredentialError> {
    let basic = BasicCredential::try_from(credential.clone()).map_err(|_| CredentialError::Malformed)?;
    let bytes = basic.identity();
    if bytes.len() != CREDENTIAL_IDENTITY_LEN {
        return Err(CredentialError::Malformed);
    }
    let (key, signature) = bytes.split_at(32);
    let mut key_bytes = [0u8; 32];
    key_bytes.copy_from_slice(key);
    let identity = IdentityKey::from_bytes(key_bytes).map_err(|_| CredentialError::InvalidIdentity)?;
    let mut sig = [0u8; 64];
    sig.copy_from_slice(signature);
    identity
        .verify(&binding_message(mls_signature_key), &sig)
        .map_err(|_| CredentialError::BadSignature)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_verifies_for_its_key_only() {
        let alice = IdentityKeyPair::generate(&mut rand_core::OsRng);
        let bob = IdentityKeyPair::generate(&mut rand_core::OsRng);
        let credential = bound_credential(&alice, &[7; 32]);
        assert_eq!(verify_credential(&credential, &[7; 32]), Ok(*alice.public()));
        assert_eq!(
            verify_credential(&credential, &[8; 32]),
            Err(CredentialError::BadSignature),
            "another MLS key"
        );
        // Bob's key with Alice's signature: refused.
        let basic = BasicCredential::try_from(credential).expect("basic");
        let mut forged = basic.identity().to_vec();
        forged[..32].copy_from_slice(bob.public().as_bytes());
        let forged: Credential = BasicCredential::new(forged).into();
        assert_eq!(
            verify_credential(&forged, &[7; 32]),
            Err(CredentialError::BadSignature)
        );
        let short: Credential = BasicCredential::new(b"alice".to_vec()).into();
        assert_eq!(
            verify_credential(&short, &[7; 32]),
            Err(CredentialError::Malformed)
        );
    }
}
