//! Signed name claims through the public API: round trip, tampering, name rules,
//! strict decoding.

use e2ee_protocol::frame::MAX_CLAIM_LEN;
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::name_claim::{validate_name, NameClaim, NameClaimError, MAX_ENCODED_CLAIM_LEN};
use e2ee_protocol::{CryptoError, DecodeError};
use proptest::prelude::*;

fn alice() -> IdentityKeyPair {
    IdentityKeyPair::from_seed(&[0xA1; 32])
}

fn claim(name: &str) -> NameClaim {
    NameClaim::sign(&alice(), name, 1_700_000_000_000).expect("a valid name")
}

#[test]
fn round_trips_and_verifies() {
    let claim = claim("alice");
    let bytes = claim.encode();
    assert_eq!(bytes.len(), 1 + 32 + 1 + 5 + 8 + 64);
    assert_eq!(bytes[0], 1);
    assert_eq!(&bytes[1..33], alice().public().as_bytes());
    assert_eq!(bytes[33], 5);
    assert_eq!(&bytes[34..39], b"alice");
    assert_eq!(&bytes[39..47], &1_700_000_000_000u64.to_be_bytes());

    let decoded = NameClaim::decode(&bytes).expect("decode");
    assert_eq!(decoded, claim);
    assert_eq!(decoded.verify(), Ok(()));
    assert_eq!(NameClaim::decode_verified(&bytes), Ok(claim));
}

#[test]
fn every_tampered_byte_fails() {
    let bytes = claim("bob.the-builder_2").encode();
    for i in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        assert!(
            NameClaim::decode_verified(&tampered).is_err(),
            "a flipped bit at byte {i} was accepted"
        );
    }
}

#[test]
fn tampered_issued_time_fails_with_bad_signature() {
    let mut bytes = claim("carol").encode();
    let at = 1 + 32 + 1 + 5 + 7;
    bytes[at] ^= 0x80;
    let decoded = NameClaim::decode(&bytes).expect("still well formed");
    assert_eq!(decoded.verify(), Err(CryptoError::BadSignature));
}

#[test]
fn claim_by_another_identity_fails() {
    let mut forged = claim("alice");
    forged.identity = *IdentityKeyPair::from_seed(&[0xB0; 32]).public();
    assert_eq!(forged.verify(), Err(CryptoError::BadSignature));
    assert!(NameClaim::decode_verified(&forged.encode()).is_err());
}

#[test]
fn renamed_claim_fails() {
    let mut renamed = claim("alice");
    renamed.name = "alicf".into();
    assert_eq!(renamed.verify(), Err(CryptoError::BadSignature));
}

#[test]
fn rejects_bad_names_when_signing() {
    let cases: [(&str, NameClaimError); 7] = [
        ("", NameClaimError::Empty),
        ("Alice", NameClaimError::InvalidChar { ch: 'A' }),
        ("al ice", NameClaimError::InvalidChar { ch: ' ' }),
        ("bob/1", NameClaimError::InvalidChar { ch: '/' }),
        ("zoë", NameClaimError::InvalidChar { ch: 'ë' }),
        ("tab\t", NameClaimError::InvalidChar { ch: '\t' }),
        (&"x".repeat(65), NameClaimError::TooLong { len: 65 }),
    ];
    for (name, expected) in cases {
        assert_eq!(validate_name(name), Err(expected.clone()), "{name:?}");
        assert_eq!(NameClaim::sign(&alice(), name, 0), Err(expected), "{name:?}");
    }
    for ok in ["a", "alice", "bob-2", "c.d_e", "0", &"x".repeat(64)] {
        assert_eq!(validate_name(ok), Ok(()), "{ok:?}");
    }
}

#[test]
fn rejects_bad_names_when_decoding() {
    let good = claim("alice").encode();
    // Same length, one uppercase letter.
    let mut upper = good.clone();
    upper[34] = b'A';
    assert!(matches!(
        NameClaim::decode(&upper),
        Err(DecodeError::Invalid { field: "name", .. })
    ));
    // Invalid UTF-8.
    let mut binary = good.clone();
    binary[34] = 0xFF;
    assert!(matches!(
        NameClaim::decode(&binary),
        Err(DecodeError::Invalid { field: "name", .. })
    ));
    // Empty name.
    let mut empty = good[..33].to_vec();
    empty.push(0);
    empty.extend_from_slice(&good[39..]);
    assert!(matches!(
        NameClaim::decode(&empty),
        Err(DecodeError::Invalid { field: "name", .. })
    ));
    // Name length over the limit.
    let mut long = good[..33].to_vec();
    long.push(65);
    long.extend_from_slice(&[b'a'; 65]);
    long.extend_from_slice(&good[39..]);
    assert_eq!(
        NameClaim::decode(&long),
        Err(DecodeError::TooLong {
            field: "name",
            len: 65,
            max: 64
        })
    );
}

#[test]
fn rejects_trailing_bytes() {
    let mut bytes = claim("alice").encode();
    bytes.push(0);
    assert_eq!(
        NameClaim::decode(&bytes),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
    assert!(NameClaim::decode_verified(&bytes).is_err());
}

#[test]
fn rejects_truncation_as_incomplete() {
    let bytes = claim("alice").encode();
    for len in 0..bytes.len() {
        let err = NameClaim::decode(&bytes[..len]).expect_err("truncated");
        assert!(err.is_incomplete(), "length {len}: {err:?}");
    }
}

#[test]
fn rejects_other_versions_and_invalid_identity() {
    let mut bytes = claim("alice").encode();
    bytes[0] = 2;
    assert_eq!(NameClaim::decode(&bytes), Err(DecodeError::UnsupportedVersion(2)));

    let mut small_order = claim("alice").encode();
    small_order[1..33].copy_from_slice(&[0; 32]);
    small_order[1] = 1;
    assert!(matches!(
        NameClaim::decode(&small_order),
        Err(DecodeError::Invalid {
            field: "identity",
            ..
        })
    ));
}

#[test]
fn max_claim_fits_in_a_relay_frame() {
    let longest = claim(&"z".repeat(64)).encode();
    assert_eq!(longest.len(), MAX_ENCODED_CLAIM_LEN);
    assert!(longest.len() <= MAX_CLAIM_LEN);
}

proptest! {
    #[test]
    fn any_valid_name_round_trips(name in "[a-z0-9._-]{1,64}", issued in any::<u64>()) {
        let claim = NameClaim::sign(&alice(), &name, issued).expect("valid name");
        let bytes = claim.encode();
        prop_assert!(bytes.len() <= MAX_CLAIM_LEN);
        prop_assert_eq!(NameClaim::decode_verified(&bytes), Ok(claim));
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = NameClaim::decode_verified(&bytes);
    }
}

/// The example of `docs/PROTOCOL.md`, section 5.5 (Ed25519 signatures are deterministic).
#[test]
fn matches_the_documented_example() {
    let identity = IdentityKeyPair::from_seed(&[3; 32]);
    let claim = NameClaim::sign(&identity, "bob", 0x0102_0304_0506_0708).expect("valid name");
    let expected = concat!(
        "01",
        "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1",
        "03626f62",
        "0102030405060708",
        "1e09c6cf393fe083bd5917f8f56d995c5e1ce1b19b32e2bd61b93ec4a6b1baca",
        "4d94bc3a90eeb74c8f0f94222b79e224b4f460ec127aad9fb52eea412c20310b",
    );
    assert_eq!(hex::encode(claim.encode()), expected);
    assert_eq!(claim.encode().len(), 109);
}
