//! Recipients of Sends must be valid identity keys (docs/PROTOCOL.md 1.6): the relay
//! checks each as the protocol checks any identity key ([`IdentityKey::from_bytes`]: it
//! decompresses to a curve point, is canonical, not of small order and torsion-free),
//! so nothing is stored for an address no client can ever authenticate as. The check
//! costs a scalar multiplication, so each connection remembers the few keys it has
//! accepted last (a client writes to a few peers many times).

use std::collections::HashSet;

use e2ee_protocol::identity::IdentityKey;

use crate::store::IdentityBytes;

/// Valid keys remembered per connection; past it the set starts again.
const REMEMBERED: usize = 64;

/// A connection's check of recipient keys.
#[derive(Debug, Default)]
pub struct RecipientCheck {
    valid: HashSet<IdentityBytes, ahash::RandomState>,
}

impl RecipientCheck {
    /// Whether `recipient` is a valid identity key.
    pub fn is_valid(&mut self, recipient: &IdentityBytes) -> bool {
        if self.valid.contains(recipient) {
            return true;
        }
        if IdentityKey::from_bytes(*recipient).is_err() {
            return false;
        }
        if self.valid.len() >= REMEMBERED {
            self.valid.clear();
        }
        self.valid.insert(*recipient);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2ee_protocol::identity::IdentityKeyPair;

    fn bytes(hex_key: &str) -> IdentityBytes {
        hex::decode(hex_key).expect("hex").try_into().expect("32 bytes")
    }

    #[test]
    fn refuses_small_order_non_canonical_torsioned_and_off_curve_keys() {
        let mut check = RecipientCheck::default();
        let identity_point = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        let non_canonical = {
            let mut b = [0xffu8; 32];
            b[0] = 0xed;
            b[31] = 0x7f;
            b
        };
        let refused = [
            ([0u8; 32], "all zero: a point of order 4"),
            (identity_point, "the neutral point"),
            (non_canonical, "y = p, a non-canonical encoding"),
            (
                bytes("0200000000000000000000000000000000000000000000000000000000000000"),
                "y = 2 is not on the curve",
            ),
            (
                bytes("5e2a648325bc9a8f481c735248eda873674ff86f0a74835f61c4b8e2eb0a4879"),
                "a valid key plus a point of order 8",
            ),
        ];
        for (key, what) in refused {
            assert!(!check.is_valid(&key), "{what}");
        }
        assert!(check.valid.is_empty(), "nothing invalid is remembered");
    }

    #[test]
    fn accepts_identity_keys_and_remembers_a_bounded_number() {
        let mut check = RecipientCheck::default();
        let keys: Vec<IdentityBytes> = (0..=REMEMBERED as u8)
            .map(|n| *IdentityKeyPair::from_seed(&[n; 32]).public().as_bytes())
            .collect();
        for key in &keys {
            assert!(check.is_valid(key));
            assert!(check.is_valid(key), "again, from memory");
        }
        assert!(check.valid.len() <= REMEMBERED);
        assert!(
            check.valid.contains(&keys[REMEMBERED]),
            "the last one is remembered"
        );
    }
}
