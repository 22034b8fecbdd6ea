//! e2ee-chat protocol: everything two agents and a relay must agree on, without IO.
//!
//! End-to-end layer (docs/PROTOCOL.md 2; crypto v2 sent, v1 still read):
//! - [`consts`]: sizes, labels and limits.
//! - [`identity`]: Ed25519 identity keys, their X25519 forms and the key checks.
//! - [`keys`]: raw X25519 key pairs and the DH with the all-zero check.
//! - [`prekey`]: signed and one-time prekeys, the bundle encoding, the owner's prekey store.
//! - [`x3dh`]: the X3DH key agreement for initiator and responder.
//! - [`kdf`]: root, chain and message keys and their KDFs; the message AEAD.
//! - [`header`]: the Double Ratchet header (40 bytes in v1, 56 with the v2 salt).
//! - [`message`]: PreKey and Normal message encodings.
//! - [`session`]: the Double Ratchet session with commit-on-success.
//! - [`session_reset`]: the signed request for a new session, sent outside a broken one.
//! - [`safety_number`]: numeric safety numbers and their compact QR form.
//! - [`name`]: agent names, the characters and length allowed.
//! - [`name_claim`]: a name signed by an identity key, published through the relay.
//!
//! Relay wire and application framing:
//! - [`frame`]: relay frames (auth, prekeys, send/deliver/acks, errors).
//! - [`codec`]: the tokio-util `Decoder`/`Encoder` for frames.
//! - [`payload`]: content framing and padding inside the encryption.
//! - [`group`]: group chats over MLS (RFC 9420): the header the relay reads, fan-out ids.
//!
//! Plumbing: [`reader`] (checked decoding) and [`error`].

pub mod codec;
pub mod consts;
pub mod error;
pub mod frame;
pub mod group;
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
pub mod session_reset;
pub mod signed_name;
pub mod x3dh;

pub use error::{CryptoError, DecodeError};

#[cfg(test)]
mod tests;
