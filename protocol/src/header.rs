//! The 40-byte Double Ratchet message header.

use crate::consts::HEADER_LEN;
use crate::error::DecodeError;
use crate::keys::PublicKey;
use crate::reader::Reader;

/// `DHs_pub(32) || pn u32be || n u32be`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: PublicKey,
    /// Length of the sender's previous sending chain.
    pub previous_chain_len: u32,
    /// Position of this message in the sender's current chain, from 0.
    pub n: u32,
}

impl Header {
    /// The 40 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..32].copy_from_slice(self.ratchet_key.as_bytes());
        out[32..36].copy_from_slice(&self.previous_chain_len.to_be_bytes());
        out[36..].copy_from_slice(&self.n.to_be_bytes());
        out
    }

    /// Reads a header from `reader`.
    pub fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            ratchet_key: PublicKey::from_bytes(reader.array()?),
            previous_chain_len: reader.u32()?,
            n: reader.u32()?,
        })
    }
}
