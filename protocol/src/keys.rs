//! Raw X25519 key pairs, the Diffie-Hellman function with its all-zero check, and the
//! secret-byte newtype every secret key is built on.

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::consts::KEY_LEN;
use crate::error::CryptoError;

/// 32 secret bytes, wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret32(pub(crate) [u8; KEY_LEN]);

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An X25519 public key (a signed prekey, one-time prekey, ephemeral or ratchet key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps 32 bytes. Any value is accepted; a low-order key is caught by the DH check.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// An X25519 private key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrivateKey(Secret32);

impl PrivateKey {
    /// Draws a fresh private key from `rng` (32 bytes; clamping happens at use).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        let key = Self(Secret32(bytes));
        bytes.zeroize();
        key
    }

    /// Wraps raw private key bytes (as in the test vectors).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Secret32(bytes))
    }

    /// Computes the matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(DalekPublic::from(&StaticSecret::from(self.0 .0)).to_bytes())
    }

    /// X25519 with `their` public key; an all-zero output aborts.
    pub fn diffie_hellman(&self, their: &PublicKey) -> Result<SharedSecret, CryptoError> {
        let shared = StaticSecret::from(self.0 .0).diffie_hellman(&DalekPublic::from(their.0));
        if !shared.was_contributory() {
            return Err(CryptoError::NonContributory);
        }
        Ok(SharedSecret(Secret32(shared.to_bytes())))
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

/// The output of one X25519 agreement.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret(Secret32);

impl SharedSecret {
    /// The shared bytes, for feeding into a KDF.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret([redacted])")
    }
}

/// An X25519 key pair with its public half cached.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyPair {
    private: PrivateKey,
    public: PublicKey,
}

impl KeyPair {
    /// Generates a fresh key pair.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self::from_private(PrivateKey::generate(rng))
    }

    /// Completes a key pair from its private half.
    pub fn from_private(private: PrivateKey) -> Self {
        let public = private.public_key();
        Self { private, public }
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The private half.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private
    }

    /// X25519 with `their` public key.
    pub fn diffie_hellman(&self, their: &PublicKey) -> Result<SharedSecret, CryptoError> {
        self.private.diffie_hellman(their)
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_low_order_public_key() {
        let pair = KeyPair::from_private(PrivateKey::from_bytes([7; 32]));
        let zero = PublicKey::from_bytes([0; 32]);
        assert!(matches!(
            pair.diffie_hellman(&zero),
            Err(CryptoError::NonContributory)
        ));
    }

    #[test]
    fn debug_prints_no_private_bytes() {
        let pair = KeyPair::from_private(PrivateKey::from_bytes([0xab; 32]));
        let shown = format!("{pair:?} {:?}", pair.private_key());
        assert!(!shown.contains("ab, ab") && !shown.contains("abab"));
    }
}
