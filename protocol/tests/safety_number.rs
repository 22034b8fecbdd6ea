//! Safety numbers: symmetric, sensitive to every input, pinned by an independent
//! Python computation.

use e2ee_protocol::safety_number::{SafetyNumber, DIGITS_LEN, SCANNABLE_LEN, SCANNABLE_VERSION};
use e2ee_protocol::DecodeError;

/// `bytes(range(1, 33))`: Alice's identity key in the known-answer test.
fn alice_ik() -> [u8; 32] {
    std::array::from_fn(|i| (i + 1) as u8)
}

/// `bytes(range(33, 65))`: Bob's identity key in the known-answer test.
fn bob_ik() -> [u8; 32] {
    std::array::from_fn(|i| (i + 33) as u8)
}

fn alice_bob() -> SafetyNumber {
    SafetyNumber::compute(&alice_ik(), b"alice", &bob_ik(), b"bob")
}

// Regenerate with (Python 3, standard library only):
// python3 -c "import hashlib as H,functools as F;fp=lambda k,i:F.reduce(lambda h,_:H.sha512(h+k).digest(),range(5200),b'\0\0'+k+i);d=lambda h:''.join('%05d'%(int.from_bytes(h[j:j+5],'big')%100000) for j in range(0,30,5));a=fp(bytes(range(1,33)),b'alice');b=fp(bytes(range(33,65)),b'bob');s=sorted([(d(a),a[:32]),(d(b),b[:32])]);print(s[0][0]+s[1][0]);print((b'\x01'+s[0][1]+s[1][1]).hex())"
const KAT_DIGITS: &str = "332745901648805446787381166701502870491601503678906921213192";
const KAT_SCANNABLE_HEX: &str = "0199e1c4479a490f5ff32815464cc2454e710298c62ebb918cf3c6bdc285eda029dcbcd17b2f0f1b98c0149d83d469dfc71429ae922967dc97fcd81c880908b3cd";

#[test]
fn matches_the_python_known_answer() {
    let sn = alice_bob();
    assert_eq!(sn.digits(), KAT_DIGITS);
    assert_eq!(hex::encode(sn.scannable()), KAT_SCANNABLE_HEX);
    assert_eq!(
        sn.display_groups(),
        "33274 59016 48805 44678\n73811 66701 50287 04916\n01503 67890 69212 13192"
    );
}

#[test]
fn is_the_same_on_both_sides() {
    let alice_view = alice_bob();
    let bob_view = SafetyNumber::compute(&bob_ik(), b"bob", &alice_ik(), b"alice");
    assert_eq!(alice_view, bob_view);
    assert_eq!(alice_view.digits(), bob_view.digits());
    assert_eq!(alice_view.scannable(), bob_view.scannable());
    assert_eq!(bob_view.matches_scanned(&alice_view.scannable()), Ok(true));
}

#[test]
fn digits_are_sixty_ascii_digits() {
    let sn = alice_bob();
    assert_eq!(sn.digits().len(), DIGITS_LEN);
    assert!(sn.digits().bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(sn.scannable().len(), SCANNABLE_LEN);
    assert_eq!(sn.scannable()[0], SCANNABLE_VERSION);
}

#[test]
fn differs_when_either_identity_key_differs_in_one_bit() {
    let base = alice_bob();
    for byte in [0usize, 13, 31] {
        for bit in [0u8, 7] {
            let mut ik = alice_ik();
            ik[byte] ^= 1 << bit;
            let changed = SafetyNumber::compute(&ik, b"alice", &bob_ik(), b"bob");
            assert_ne!(changed, base);
            assert_ne!(changed.digits(), base.digits());
            assert!(!changed.matches_digits(base.digits()));

            let mut ik = bob_ik();
            ik[byte] ^= 1 << bit;
            let changed = SafetyNumber::compute(&alice_ik(), b"alice", &ik, b"bob");
            assert_ne!(changed, base);
            assert_ne!(changed.digits(), base.digits());
            assert_eq!(changed.matches_scanned(&base.scannable()), Ok(false));
        }
    }
}

#[test]
fn differs_when_a_stable_id_differs() {
    let base = alice_bob();
    let cases = [
        SafetyNumber::compute(&alice_ik(), b"alicf", &bob_ik(), b"bob"),
        SafetyNumber::compute(&alice_ik(), b"alice", &bob_ik(), b"bob "),
        SafetyNumber::compute(&alice_ik(), b"", &bob_ik(), b"bob"),
        // Same keys, names swapped between them.
        SafetyNumber::compute(&alice_ik(), b"bob", &bob_ik(), b"alice"),
    ];
    for changed in cases {
        assert_ne!(changed, base);
        assert_ne!(changed.digits(), base.digits());
    }
}

#[test]
fn matches_digits_typed_with_or_without_grouping() {
    let sn = alice_bob();
    assert!(sn.matches_digits(KAT_DIGITS));
    assert!(sn.matches_digits(&sn.display_groups()));
    assert!(sn.matches_digits(" 33274 59016 48805 44678 73811 66701\n50287 04916 01503 67890 69212 13192\n"));
    assert!(!sn.matches_digits(&KAT_DIGITS[..59]));
    assert!(!sn.matches_digits(&format!("{KAT_DIGITS}0")));
    assert!(!sn.matches_digits(&KAT_DIGITS.replace('3', "4")));
    assert!(!sn.matches_digits(""));
}

#[test]
fn matches_scanned_checks_version_and_length() {
    let sn = alice_bob();
    let scanned = sn.scannable();
    assert_eq!(sn.matches_scanned(&scanned), Ok(true));

    let mut wrong_version = scanned.clone();
    wrong_version[0] = 2;
    assert_eq!(
        sn.matches_scanned(&wrong_version),
        Err(DecodeError::UnsupportedVersion(2))
    );
    assert_eq!(
        sn.matches_scanned(&scanned[..64]),
        Err(DecodeError::Incomplete { needed: 1 })
    );
    assert_eq!(
        sn.matches_scanned(&[]),
        Err(DecodeError::Incomplete { needed: 1 })
    );
    let mut longer = scanned.clone();
    longer.push(0);
    assert_eq!(
        sn.matches_scanned(&longer),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );

    let mut tampered = scanned;
    tampered[64] ^= 1;
    assert_eq!(sn.matches_scanned(&tampered), Ok(false));
}
