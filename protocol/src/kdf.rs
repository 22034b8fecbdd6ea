//! The key schedule: root key, chain key and message key, with KDF_RK, KDF_CK and the
//! per-message AEAD (XChaCha20-Poly1305 keyed and nonced from the message key, and in
//! crypto v2 from the header's random salt too), docs/PROTOCOL.md 2.4.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::consts::{DR_AEAD_INFO, DR_AEAD_INFO_V2, DR_ROOT_INFO, KEY_LEN, NONCE_LEN, SALT_LEN, TAG_LEN};
use crate::error::CryptoError;
use crate::keys::{Secret32, SharedSecret};

/// HKDF-SHA256 with an output length fixed at compile time.
pub(crate) fn hkdf_sha256<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; N] {
    const { assert!(N <= 255 * 32, "HKDF-SHA256 output too long") };
    let mut okm = [0u8; N];
    match Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, &mut okm) {
        Ok(()) => okm,
        Err(_) => unreachable!("HKDF output length is checked at compile time"),
    }
}

/// HMAC-SHA256 of a one-byte message.
fn hmac_byte(key: &[u8; KEY_LEN], byte: u8) -> [u8; KEY_LEN] {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(&[byte]);
    mac.finalize().into_bytes().into()
}

/// The root key of a Double Ratchet session (the X3DH output SK to begin with).
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RootKey(Secret32);

impl RootKey {
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Secret32(bytes))
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }

    /// KDF_RK: mixes a DH output into the root key, giving the next root key and a
    /// new chain key.
    pub fn ratchet(&self, dh: &SharedSecret) -> (RootKey, ChainKey) {
        let mut out: [u8; 64] = hkdf_sha256(&self.0 .0, dh.as_bytes(), DR_ROOT_INFO);
        let mut rk = [0u8; KEY_LEN];
        let mut ck = [0u8; KEY_LEN];
        rk.copy_from_slice(&out[..KEY_LEN]);
        ck.copy_from_slice(&out[KEY_LEN..]);
        out.zeroize();
        (RootKey(Secret32(rk)), ChainKey(Secret32(ck)))
    }
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey([redacted])")
    }
}

/// A sending or receiving chain key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChainKey(Secret32);

impl ChainKey {
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }

    /// KDF_CK: the message key for this chain position (`HMAC(ck, 0x01)`).
    pub fn message_key(&self) -> MessageKey {
        MessageKey(Secret32(hmac_byte(&self.0 .0, 0x01)))
    }

    /// KDF_CK: the chain key of the next position (`HMAC(ck, 0x02)`).
    pub fn next(&self) -> ChainKey {
        ChainKey(Secret32(hmac_byte(&self.0 .0, 0x02)))
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey([redacted])")
    }
}

/// A single-use message key.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageKey(Secret32);

/// The AEAD key and nonce derived from one message key.
struct AeadParams {
    key: [u8; KEY_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Drop for AeadParams {
    fn drop(&mut self) {
        self.key.zeroize();
        self.nonce.zeroize();
    }
}

impl MessageKey {
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }

    /// v1 (`salt` None): `HKDF(salt = 0x00×32, ikm = MK, info = "e2ee-chat/dr/v1/aead",
    /// L = 56)`; v2: `HKDF(salt = the header's 16-byte salt, ikm = MK, info =
    /// "e2ee-chat/dr/v2/aead", L = 56)`. Key = okm[0..32], nonce = okm[32..56].
    fn aead_params(&self, salt: Option<&[u8; SALT_LEN]>) -> AeadParams {
        let mut okm: [u8; KEY_LEN + NONCE_LEN] = match salt {
            None => hkdf_sha256(&[0u8; KEY_LEN], &self.0 .0, DR_AEAD_INFO),
            Some(salt) => hkdf_sha256(salt, &self.0 .0, DR_AEAD_INFO_V2),
        };
        let mut params = AeadParams {
            key: [0; KEY_LEN],
            nonce: [0; NONCE_LEN],
        };
        params.key.copy_from_slice(&okm[..KEY_LEN]);
        params.nonce.copy_from_slice(&okm[KEY_LEN..]);
        okm.zeroize();
        params
    }

    #[cfg(test)]
    pub(crate) fn aead_key_and_nonce(
        &self,
        salt: Option<&[u8; SALT_LEN]>,
    ) -> ([u8; KEY_LEN], [u8; NONCE_LEN]) {
        let p = self.aead_params(salt);
        (p.key, p.nonce)
    }

    /// Encrypts `plaintext` with `aad`, consuming the key: ciphertext || 16-byte tag.
    /// `salt` is the header's (v2) or `None` (v1).
    pub fn seal(
        self,
        salt: Option<&[u8; SALT_LEN]>,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let params = self.aead_params(salt);
        XChaCha20Poly1305::new((&params.key).into())
            .encrypt(XNonce::from_slice(&params.nonce), Payload { msg: plaintext, aad })
            .map_err(|_| CryptoError::Aead)
    }

    /// Decrypts and authenticates `ciphertext` (ciphertext || tag) with `aad`; `salt`
    /// is the header's (v2) or `None` (v1).
    pub fn open(
        &self,
        salt: Option<&[u8; SALT_LEN]>,
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if ciphertext.len() < TAG_LEN {
            return Err(CryptoError::Aead);
        }
        let params = self.aead_params(salt);
        XChaCha20Poly1305::new((&params.key).into())
            .decrypt(
                XNonce::from_slice(&params.nonce),
                Payload { msg: ciphertext, aad },
            )
            .map_err(|_| CryptoError::Aead)
    }
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKey([redacted])")
    }
}
