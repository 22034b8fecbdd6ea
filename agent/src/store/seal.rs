//! Sealing of secret values at rest: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03)
//! under the [`StateKey`], each value bound to its place in the database.
//!
//! A sealed value is `version (1 byte) || nonce (24 bytes, random) || ciphertext || tag
//! (16 bytes)`. The associated data is the version byte followed by the value's place
//! ([`place`]: the table name and the row key), so a sealed value copied into another
//! row or table does not open. The 192-bit random nonce makes nonce reuse under one
//! key negligible for any number of values a state will ever seal.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use zeroize::Zeroizing;

use super::state_key::StateKey;

/// The format version of sealed values.
pub const SEAL_VERSION: u8 = 1;
/// XChaCha20 nonce length, bytes.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length, bytes.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext: version, nonce, tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Domain separation for the places of this store.
const PLACE_CONTEXT: &[u8] = b"e2ee-agent-state\0";

/// Why a value could not be sealed or opened.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    /// The value is shorter than a sealed empty plaintext.
    #[error("sealed value is {len} bytes, shorter than the {SEAL_OVERHEAD}-byte minimum")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// The first byte is not a known format version.
    #[error("unknown sealed value format version {0}")]
    UnknownVersion(u8),
    /// Authentication failed: wrong key, another place, or altered bytes (one opaque
    /// error for all three).
    #[error("sealed value does not open (wrong key, another place, or altered)")]
    Rejected,
    /// The plaintext is longer than XChaCha20-Poly1305 can seal (about 256 GiB).
    #[error("value too long to seal")]
    TooLong,
}

/// The place of a value: `"e2ee-agent-state\0" || len(table) (1 byte) || table ||
/// row key`. The table name is length-prefixed and the row key is the rest, so two
/// different places never give the same bytes. Table names are at most 255 bytes.
pub fn place(table: &str, row_key: &[u8]) -> Vec<u8> {
    let table = table.as_bytes();
    let table = &table[..table.len().min(usize::from(u8::MAX))];
    let mut out = Vec::with_capacity(PLACE_CONTEXT.len() + 1 + table.len() + row_key.len());
    out.extend_from_slice(PLACE_CONTEXT);
    out.push(u8::try_from(table.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(table);
    out.extend_from_slice(row_key);
    out
}

fn cipher(key: &StateKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(Key::from_slice(key.bytes()))
}

fn aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(aad);
    out
}

/// Seals `plaintext` under `key` for the place `aad` (see [`place`]) with a fresh random
/// nonce. The result is [`SEAL_OVERHEAD`] bytes longer than the plaintext.
///
/// Errors: [`SealError::TooLong`] only.
pub fn seal(key: &StateKey, aad_bytes: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher(key)
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &aad(aad_bytes),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(|_| SealError::TooLong)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a value sealed by [`seal`] under `key` for the same place `aad`. The plaintext
/// comes back in a zeroizing buffer.
///
/// Errors: [`SealError::Truncated`], [`SealError::UnknownVersion`], and
/// [`SealError::Rejected`] for a wrong key, another place or any altered byte.
pub fn open(key: &StateKey, aad_bytes: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(SealError::Truncated { len: sealed.len() });
    }
    if sealed[0] != SEAL_VERSION {
        return Err(SealError::UnknownVersion(sealed[0]));
    }
    let (nonce, rest) = sealed[1..].split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    cipher(key)
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &aad(aad_bytes),
            &mut plaintext[..],
            chacha20poly1305::Tag::from_slice(tag),
        )
        .map_err(|_| SealError::Rejected)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> StateKey {
        StateKey::from_bytes([byte; 32])
    }

    fn sealed(plaintext: &[u8]) -> Vec<u8> {
        seal(&key(1), &place("sessions", b"peer-a"), plaintext).expect("seal")
    }

    #[test]
    fn round_trips_and_adds_the_stated_overhead() {
        for plaintext in [&b""[..], b"x", &[0x5a; 4096]] {
            let sealed = sealed(plaintext);
            assert_eq!(sealed.len(), plaintext.len() + SEAL_OVERHEAD);
            assert_eq!(sealed[0], SEAL_VERSION);
            let opened = open(&key(1), &place("sessions", b"peer-a"), &sealed).expect("open");
            assert_eq!(&opened[..], plaintext);
        }
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let (a, b) = (sealed(b"same"), sealed(b"same"));
        assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_a_wrong_key() {
        assert_eq!(
            open(&key(2), &place("sessions", b"peer-a"), &sealed(b"secret")),
            Err(SealError::Rejected)
        );
    }

    #[test]
    fn rejects_a_value_moved_to_another_row_or_table() {
        let sealed = sealed(b"secret");
        assert_eq!(
            open(&key(1), &place("sessions", b"peer-b"), &sealed),
            Err(SealError::Rejected)
        );
        assert_eq!(
            open(&key(1), &place("archived_sessions", b"peer-a"), &sealed),
            Err(SealError::Rejected)
        );
    }

    #[test]
    fn places_are_unambiguous() {
        // Moving bytes between the table name and the row key changes the place.
        assert_ne!(place("ab", b"c"), place("a", b"bc"));
        assert_ne!(place("", b"x"), place("x", b""));
    }

    #[test]
    fn rejects_truncated_values() {
        let sealed = sealed(b"secret");
        for len in [0, 1, SEAL_OVERHEAD - 1] {
            assert_eq!(
                open(&key(1), &place("sessions", b"peer-a"), &sealed[..len]),
                Err(SealError::Truncated { len })
            );
        }
        // Long enough to parse, but the tag is now made of ciphertext bytes.
        assert_eq!(
            open(
                &key(1),
                &place("sessions", b"peer-a"),
                &sealed[..sealed.len() - 1]
            ),
            Err(SealError::Rejected)
        );
    }

    #[test]
    fn rejects_any_flipped_bit() {
        let sealed = sealed(b"secret");
        for byte in 1..sealed.len() {
            for bit in [0x01, 0x80] {
                let mut altered = sealed.clone();
                altered[byte] ^= bit;
                assert_eq!(
                    open(&key(1), &place("sessions", b"peer-a"), &altered),
                    Err(SealError::Rejected),
                    "byte {byte}"
                );
            }
        }
    }

    #[test]
    fn rejects_an_unknown_version() {
        let mut altered = sealed(b"secret");
        altered[0] = 2;
        assert_eq!(
            open(&key(1), &place("sessions", b"peer-a"), &altered),
            Err(SealError::UnknownVersion(2))
        );
    }
}
