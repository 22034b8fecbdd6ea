//! The Double Ratchet message header: 40 bytes in crypto v1, 56 in crypto v2 (the v1
//! fields and a random salt), docs/PROTOCOL.md 2.4.

use crate::consts::{HEADER_LEN, HEADER_LEN_V2, SALT_LEN};
use crate::error::DecodeError;
use crate::keys::PublicKey;
use crate::reader::Reader;

/// `DHs_pub(32) || pn u32be || n u32be [|| salt(16)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: PublicKey,
    /// Length of the sender's previous sending chain.
    pub previous_chain_len: u32,
    /// Position of this message in the sender's current chain, from 0.
    pub n: u32,
    /// Crypto v2: 16 random bytes drawn for this message, the HKDF salt of its AEAD key
    /// and nonce, so that a sender whose state was rolled back never encrypts twice
    /// under one key and nonce. `None`: a crypto v1 header (salt of zeros).
    pub salt: Option<[u8; SALT_LEN]>,
}

impl Header {
    /// The header bytes: 40 (v1) or 56 (v2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN_V2);
        out.extend_from_slice(self.ratchet_key.as_bytes());
        out.extend_from_slice(&self.previous_chain_len.to_be_bytes());
        out.extend_from_slice(&self.n.to_be_bytes());
        if let Some(salt) = &self.salt {
            out.extend_from_slice(salt);
        }
        out
    }

    /// Length of [`Header::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        if self.salt.is_some() {
            HEADER_LEN_V2
        } else {
            HEADER_LEN
        }
    }

    /// Reads a header from `reader`: with a salt for crypto v2 (`salted`), without for v1.
    pub fn read(reader: &mut Reader<'_>, salted: bool) -> Result<Self, DecodeError> {
        Ok(Self {
            ratchet_key: PublicKey::from_bytes(reader.array()?),
            previous_chain_len: reader.u32()?,
            n: reader.u32()?,
            salt: if salted { Some(reader.array()?) } else { None },
        })
    }
}
