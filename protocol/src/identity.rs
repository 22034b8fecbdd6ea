//! Ed25519 identity keys: the local key pair (from a 32-byte seed) and a peer's
//! validated public key, with their X25519 forms as CRYPTO-V1 defines them.

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::consts::{KEY_LEN, SIGNATURE_LEN};
use crate::error::CryptoError;
use crate::keys::{PrivateKey, PublicKey, Secret32, SharedSecret};

/// A peer's (or our own) Ed25519 identity public key, checked on construction:
/// it decompresses, is canonical, is not of small order and is torsion-free.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "[u8; 32]", into = "[u8; 32]")]
pub struct IdentityKey {
    bytes: [u8; KEY_LEN],
    key: VerifyingKey,
}

impl IdentityKey {
    /// Validates 32 bytes as an identity key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, CryptoError> {
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .ok_or(CryptoError::InvalidPublicKey)?;
        if point.compress().to_bytes() != bytes || point.is_small_order() || !point.is_torsion_free() {
            return Err(CryptoError::InvalidPublicKey);
        }
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| CryptoError::InvalidPublicKey)?;
        Ok(Self { bytes, key })
    }

    /// The 32-byte Ed25519 public key.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The X25519 form of this key (birational map).
    pub fn to_x25519(&self) -> PublicKey {
        PublicKey::from_bytes(self.key.to_montgomery().to_bytes())
    }

    /// Verifies an Ed25519 signature strictly.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<(), CryptoError> {
        let signature = Signature::from_bytes(signature);
        self.key
            .verify_strict(message, &signature)
            .map_err(|_| CryptoError::BadSignature)
    }

    /// A short hex fingerprint for logs and listings (first 8 bytes).
    pub fn short(&self) -> String {
        self.bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl PartialEq for IdentityKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for IdentityKey {}

impl std::hash::Hash for IdentityKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

/// Maps and sets of identity keys can be searched by the 32 bytes (equality and hash are
/// those of the bytes), without validating them again.
impl std::borrow::Borrow<[u8; KEY_LEN]> for IdentityKey {
    fn borrow(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl TryFrom<[u8; KEY_LEN]> for IdentityKey {
    type Error = CryptoError;
    fn try_from(bytes: [u8; KEY_LEN]) -> Result<Self, Self::Error> {
        Self::from_bytes(bytes)
    }
}

impl From<IdentityKey> for [u8; KEY_LEN] {
    fn from(key: IdentityKey) -> Self {
        key.bytes
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", self.short())
    }
}

/// Our own identity: the Ed25519 key pair made from a secret 32-byte seed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "IdentitySeed", into = "IdentitySeed")]
pub struct IdentityKeyPair {
    signing: SigningKey,
    public: IdentityKey,
}

/// The persisted form of an identity: its seed only.
#[derive(Serialize, Deserialize)]
struct IdentitySeed {
    seed: Secret32,
}

impl IdentityKeyPair {
    /// Draws a fresh identity.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = [0u8; KEY_LEN];
        rng.fill_bytes(&mut seed);
        let pair = Self::from_seed(&seed);
        seed.zeroize();
        pair
    }

    /// Makes the identity for an RFC 8032 seed.
    pub fn from_seed(seed: &[u8; KEY_LEN]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let bytes = signing.verifying_key().to_bytes();
        let public = IdentityKey {
            bytes,
            key: signing.verifying_key(),
        };
        Self { signing, public }
    }

    /// The public identity key.
    pub fn public(&self) -> &IdentityKey {
        &self.public
    }

    /// Signs `message` (RFC 8032, deterministic).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// The X25519 private scalar: the clamped first half of SHA-512(seed).
    pub fn x25519_private(&self) -> PrivateKey {
        let mut scalar = self.signing.to_scalar_bytes();
        let key = PrivateKey::from_bytes(scalar);
        scalar.zeroize();
        key
    }

    /// X25519 between our identity key and `their` key.
    pub fn diffie_hellman(&self, their: &PublicKey) -> Result<SharedSecret, CryptoError> {
        self.x25519_private().diffie_hellman(their)
    }
}

#[cfg(test)]
impl IdentityKeyPair {
    pub(crate) fn signing_scalar_for_tests(&self) -> [u8; KEY_LEN] {
        self.signing.to_scalar_bytes()
    }
}

impl From<IdentitySeed> for IdentityKeyPair {
    fn from(stored: IdentitySeed) -> Self {
        Self::from_seed(&stored.seed.0)
    }
}

impl From<IdentityKeyPair> for IdentitySeed {
    fn from(pair: IdentityKeyPair) -> Self {
        IdentitySeed {
            seed: Secret32(pair.signing.to_bytes()),
        }
    }
}

impl std::fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_small_order_identity_key() {
        // The identity point (0, 1) encodes as 0x01 followed by zeros.
        let mut bytes = [0u8; 32];
        bytes[0] = 1;
        assert_eq!(IdentityKey::from_bytes(bytes), Err(CryptoError::InvalidPublicKey));
    }

    #[test]
    fn rejects_non_canonical_identity_key() {
        // y = p (2^255 - 19) is the non-canonical encoding of y = 0.
        let mut bytes = [0xffu8; 32];
        bytes[0] = 0xed;
        bytes[31] = 0x7f;
        assert_eq!(IdentityKey::from_bytes(bytes), Err(CryptoError::InvalidPublicKey));
    }

    #[test]
    fn identity_survives_serde_round_trip() {
        let pair = IdentityKeyPair::from_seed(&[9; 32]);
        let json = serde_json::to_string(&pair).unwrap_or_default();
        let back: IdentityKeyPair =
            serde_json::from_str(&json).unwrap_or_else(|_| IdentityKeyPair::from_seed(&[0; 32]));
        assert_eq!(back.public(), pair.public());
    }
}
