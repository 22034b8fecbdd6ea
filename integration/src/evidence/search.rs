//! Searching recorded bytes for leaked values. Every [`WINDOW`]-byte window of the
//! haystack goes into a set; a needle is found if any of its windows is in the set, so a
//! partial leak (half a key, a piece of a message) is found as well as a whole one.

use std::collections::HashSet;

/// Bytes per compared window: short enough to catch a partial leak, long enough that
/// random bytes never match by chance (2^-128 per pair).
pub const WINDOW: usize = 16;

/// The searched bytes.
#[derive(Default)]
pub struct Haystack {
    windows: HashSet<u128>,
    /// Haystacks shorter than a window, kept whole.
    short: Vec<Vec<u8>>,
    /// Bytes added.
    pub bytes: usize,
    /// Separate byte strings added.
    pub parts: usize,
}

fn window(bytes: &[u8]) -> u128 {
    let mut array = [0u8; WINDOW];
    array.copy_from_slice(&bytes[..WINDOW]);
    u128::from_le_bytes(array)
}

impl Haystack {
    /// Adds one contiguous byte string (windows do not span two strings).
    pub fn add(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len();
        self.parts += 1;
        if bytes.len() < WINDOW {
            self.short.push(bytes.to_vec());
            return;
        }
        self.windows.extend(bytes.windows(WINDOW).map(window));
    }

    /// True if any `WINDOW`-byte piece of `needle` (the whole needle if shorter) occurs.
    pub fn contains(&self, needle: &[u8]) -> bool {
        if needle.is_empty() {
            return false;
        }
        if needle.len() < WINDOW {
            // Rare (every searched value is at least 16 bytes); a plain scan is enough.
            return self.short.iter().any(|h| contains_slice(h, needle))
                || self
                    .windows
                    .iter()
                    .any(|w| contains_slice(&w.to_le_bytes(), needle));
        }
        needle.windows(WINDOW).any(|w| self.windows.contains(&window(w)))
    }
}

fn contains_slice(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The forms a secret could leak in: raw, lowercase hex, uppercase hex.
pub fn encodings(bytes: &[u8]) -> [Vec<u8>; 3] {
    let lower = hex::encode(bytes);
    let upper = lower.to_uppercase();
    [bytes.to_vec(), lower.into_bytes(), upper.into_bytes()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_and_partial_needles_only() {
        let mut hay = Haystack::default();
        hay.add(b"....the quick brown fox jumps over the lazy dog....");
        hay.add(b"short");
        assert!(hay.contains(b"quick brown fox jumps"));
        assert!(
            hay.contains(b"XXXXXXXXXXXX quick brown fox j XXXXXXXXX"),
            "a 16-byte piece"
        );
        assert!(!hay.contains(b"quick brown cat jumps"));
        assert!(hay.contains(b"short"));
        assert!(!hay.contains(b"dog....short"), "windows do not span two parts");
        assert_eq!(hay.bytes, 56);
    }

    #[test]
    fn secrets_are_searched_raw_and_in_hex() {
        let [raw, lower, upper] = encodings(&[0xab; 4]);
        assert_eq!(raw, vec![0xab; 4]);
        assert_eq!(lower, b"abababab");
        assert_eq!(upper, b"ABABABAB");
    }
}
