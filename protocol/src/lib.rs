//! e2ee-chat protocol: everything two agents and a relay must agree on, without IO.
//!
//! Crypto v1 (byte-exact to `CRYPTO-V1.md`):
//! - [`consts`]: sizes, labels and limits.
//! - [`identity`]: Ed25519 identity keys, their X25519 forms and the key checks.
//! - [`keys`]: raw X25519 key pairs and the DH with the all-zero check.
//! - [`prekey`]: signed and one-time prekeys, the bundle encoding, the owner's prekey store.
//! - [`x3dh`]: the X3DH key agreement for initiator and responder.
//! - [`kdf`]: root, chain and message keys and the v1 KDFs; the message AEAD.
//! - [`header`]: the 40-byte Double Ratchet header.
//! - [`message`]: PreKey and Normal message encodings.
//! - [`session`]: the Double Ratchet session with commit-on-success.
//! - [`safety_number`]: numeric safety numbers and their compact QR form.
//! - [`name`]: agent names, the characters and length allowed.
//! - [`name_claim`]: a name signed by an identity key, published through the relay.
//!
//! Relay wire and application framing:
//! - [`frame`]: relay frames (auth, prekeys, send/deliver/acks, errors).
//! - [`codec`]: the tokio-util `Decoder`/`Encoder` for frames.
//! - [`payload`]: content framing and padding inside the encryption.
//!
//! Plumbing: [`reader`] (checked decoding) and [`error`].

pub mod codec;
pub mod consts;
pub mod error;
pub mod frame;
pub mod header;
pub mod identity;
pub mod kdf;
pub mod keys;
pub mod message;
pub mod name;
pub mod name_claim;
pub mod name_release;
pub mod payload;
pub mod prekey;
pub mod reader;
pub mod safety_number;
pub mod session;
pub mod signed_name;
pub mod x3dh;

pub use error::{CryptoError, DecodeError};

#[cfg(test)]
mod tests;
