//! Numeric safety numbers for a pair of identities, and their compact QR form.
//!
//! In the spirit of Signal's `NumericFingerprintGenerator`. Each side's fingerprint is
//! an iterated SHA-512 over its Ed25519 identity key and a stable id (the agent's name):
//!
//! ```text
//! h = 0x0000 || identity_key(32) || stable_id      (not hashed)
//! repeat 5200 times: h = SHA-512(h || identity_key)
//! ```
//!
//! The first 30 bytes of `h` give 30 digits (six 5-byte big-endian chunks, each mod
//! 100000, printed as 5 digits). The safety number is both sides' 30 digits in a
//! canonical order (lower first), so both agents show the same 60 digits. The scannable
//! form is `0x01 || first 32 bytes of h` for both sides in the same order (65 bytes).
//! See `docs/PROTOCOL.md` for the byte-exact specification and a Python
//! reference.

use std::cmp::Ordering;

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::error::DecodeError;
use crate::reader::Reader;

/// Version prefix (u16be) of every fingerprint hash input.
pub const FINGERPRINT_VERSION: u16 = 0;
/// Number of SHA-512 iterations after the initial hash.
pub const FINGERPRINT_ITERATIONS: usize = 5200;
/// Length of the identity key hashed into a fingerprint (an Ed25519 public key).
pub const IDENTITY_KEY_LEN: usize = 32;
/// Length of a full fingerprint (one SHA-512 output).
pub const FINGERPRINT_LEN: usize = 64;
/// Fingerprint bytes turned into digits for one side.
pub const DISPLAY_BYTES_PER_SIDE: usize = 30;
/// Digits shown for one side.
pub const DIGITS_PER_SIDE: usize = 30;
/// Digits in a safety number (both sides).
pub const DIGITS_LEN: usize = 2 * DIGITS_PER_SIDE;
/// Version byte of the scannable form.
pub const SCANNABLE_VERSION: u8 = 1;
/// Fingerprint bytes carried per side in the scannable form.
pub const SCANNABLE_FINGERPRINT_LEN: usize = 32;
/// Length of the scannable form: version byte and two fingerprint prefixes.
pub const SCANNABLE_LEN: usize = 1 + 2 * SCANNABLE_FINGERPRINT_LEN;

/// Digits per display group.
const GROUP_LEN: usize = 5;
/// Display groups per line.
const GROUPS_PER_LINE: usize = 4;

/// One side's fingerprint: `FINGERPRINT_ITERATIONS` rounds of SHA-512, starting from
/// `version || identity key || stable id` and appending the identity key each round.
pub fn fingerprint(identity_key: &[u8; IDENTITY_KEY_LEN], stable_id: &[u8]) -> [u8; FINGERPRINT_LEN] {
    // As Signal's NumericFingerprintGenerator: start from the unhashed
    // `version || key || stable id`, then `iterations` times h = SHA-512(h || key).
    let mut h = [0u8; FINGERPRINT_LEN];
    h.copy_from_slice(
        &Sha512::new()
            .chain_update(FINGERPRINT_VERSION.to_be_bytes())
            .chain_update(identity_key)
            .chain_update(stable_id)
            .chain_update(identity_key)
            .finalize(),
    );
    for _ in 1..FINGERPRINT_ITERATIONS {
        let next = Sha512::new()
            .chain_update(h)
            .chain_update(identity_key)
            .finalize();
        h.copy_from_slice(&next);
    }
    h
}

/// The 30 display digits of one side's fingerprint.
fn side_digits(fingerprint: &[u8; FINGERPRINT_LEN]) -> String {
    let mut digits = String::with_capacity(DIGITS_PER_SIDE);
    for chunk in fingerprint[..DISPLAY_BYTES_PER_SIDE].chunks_exact(5) {
        let value = chunk.iter().fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
        digits.push_str(&format!("{:05}", value % 100_000));
    }
    digits
}

/// One side, reduced to what the safety number shows.
struct Side {
    digits: String,
    scannable: [u8; SCANNABLE_FINGERPRINT_LEN],
}

impl Side {
    fn new(identity_key: &[u8; IDENTITY_KEY_LEN], stable_id: &[u8]) -> Self {
        let fp = fingerprint(identity_key, stable_id);
        let mut scannable = [0u8; SCANNABLE_FINGERPRINT_LEN];
        scannable.copy_from_slice(&fp[..SCANNABLE_FINGERPRINT_LEN]);
        Self {
            digits: side_digits(&fp),
            scannable,
        }
    }

    /// Canonical order: by digits, then by the scannable bytes (a tie-break that only
    /// matters if two different fingerprints show the same digits).
    fn canonical_cmp(&self, other: &Side) -> Ordering {
        self.digits
            .cmp(&other.digits)
            .then_with(|| self.scannable.cmp(&other.scannable))
    }
}

/// The safety number of a pair of identities: the same on both sides.
///
/// It is public information (derived from public keys), so `Debug` shows it; equality
/// is constant time.
#[derive(Clone, Debug)]
pub struct SafetyNumber {
    digits: String,
    scannable: [u8; SCANNABLE_LEN],
}

impl SafetyNumber {
    /// Computes the safety number of the local and the remote identity.
    ///
    /// Swapping local and remote gives the same result.
    pub fn compute(
        local_ik: &[u8; IDENTITY_KEY_LEN],
        local_id: &[u8],
        remote_ik: &[u8; IDENTITY_KEY_LEN],
        remote_id: &[u8],
    ) -> SafetyNumber {
        let local = Side::new(local_ik, local_id);
        let remote = Side::new(remote_ik, remote_id);
        let (first, second) = match local.canonical_cmp(&remote) {
            Ordering::Greater => (remote, local),
            Ordering::Less | Ordering::Equal => (local, remote),
        };

        let mut digits = String::with_capacity(DIGITS_LEN);
        digits.push_str(&first.digits);
        digits.push_str(&second.digits);

        let mut scannable = [0u8; SCANNABLE_LEN];
        scannable[0] = SCANNABLE_VERSION;
        scannable[1..1 + SCANNABLE_FINGERPRINT_LEN].copy_from_slice(&first.scannable);
        scannable[1 + SCANNABLE_FINGERPRINT_LEN..].copy_from_slice(&second.scannable);

        SafetyNumber { digits, scannable }
    }

    /// The 60 ASCII digits, ungrouped.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The digits for display: 12 groups of 5, separated by spaces, 4 groups per line,
    /// lines separated by `\n` (no trailing newline).
    pub fn display_groups(&self) -> String {
        let mut out = String::with_capacity(DIGITS_LEN + DIGITS_LEN / GROUP_LEN);
        for (i, group) in self.digits.as_bytes().chunks(GROUP_LEN).enumerate() {
            if i > 0 {
                out.push(if i % GROUPS_PER_LINE == 0 { '\n' } else { ' ' });
            }
            // The digits are ASCII, so every chunk is one group of characters.
            out.extend(group.iter().map(|&b| char::from(b)));
        }
        out
    }

    /// The compact form for a QR code:
    /// `0x01 || fingerprint_first[0..32] || fingerprint_second[0..32]` (65 bytes).
    pub fn scannable(&self) -> Vec<u8> {
        self.scannable.to_vec()
    }

    /// Compares digits typed or pasted by a user, in constant time.
    ///
    /// ASCII whitespace is ignored, so the grouped form matches too.
    pub fn matches_digits(&self, digits: &str) -> bool {
        let candidate: Vec<u8> = digits.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        bool::from(candidate.as_slice().ct_eq(self.digits.as_bytes()))
    }

    /// Compares a scanned compact form, in constant time.
    ///
    /// Fails when `scanned` is not a version-1 scannable form of the right length;
    /// otherwise returns whether it is this safety number.
    pub fn matches_scanned(&self, scanned: &[u8]) -> Result<bool, DecodeError> {
        let mut r = Reader::new(scanned);
        let version = r.u8()?;
        if version != SCANNABLE_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let fingerprints = r.take(2 * SCANNABLE_FINGERPRINT_LEN)?;
        r.finish()?;
        Ok(bool::from(fingerprints.ct_eq(&self.scannable[1..])))
    }
}

impl PartialEq for SafetyNumber {
    fn eq(&self, other: &Self) -> bool {
        // The scannable bytes determine the digits, so comparing them suffices.
        bool::from(self.scannable.ct_eq(&other.scannable))
    }
}

impl Eq for SafetyNumber {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_digits_reduce_each_chunk_mod_100000() {
        let mut fp = [0u8; FINGERPRINT_LEN];
        // First chunk 0x00_0000_0001 -> 00001; second 0xFF_FFFF_FFFF -> 1099511627775 % 100000.
        fp[4] = 1;
        fp[5..10].copy_from_slice(&[0xFF; 5]);
        let digits = side_digits(&fp);
        assert_eq!(&digits[..10], "0000127775");
        assert_eq!(&digits[10..], "00000000000000000000");
    }

    #[test]
    fn groups_digits_in_three_lines_of_four() {
        let sn = SafetyNumber::compute(&[1; 32], b"a", &[2; 32], b"b");
        let groups = sn.display_groups();
        let lines: Vec<&str> = groups.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.split(' ').count() == 4));
        assert_eq!(groups.replace([' ', '\n'], ""), sn.digits());
    }
}
