//! Payload framing and padding: round trips, bucket sizes, and rejection of every
//! malformed plaintext without panicking.

use e2ee_protocol::payload::{
    bucket_for, ContentType, Payload, PayloadError, BUCKETS, MAX_BODY_LEN, MESSAGE_ID_LEN, PAYLOAD_HEADER_LEN,
};
use e2ee_protocol::DecodeError;
use proptest::collection::vec;
use proptest::prelude::*;

const ID: [u8; MESSAGE_ID_LEN] = [0x42; MESSAGE_ID_LEN];

fn control(len: usize) -> Payload {
    Payload::control(ID, 1_700_000_000_000, vec![0x5A; len])
}

fn encode(payload: &Payload) -> Vec<u8> {
    match payload.encode() {
        Ok(bytes) => bytes,
        Err(e) => panic!("encoding a valid payload failed: {e}"),
    }
}

/// Any valid payload: text (UTF-8), receipt (16 bytes) or control (opaque, up to max).
fn any_payload() -> impl Strategy<Value = Payload> {
    let body_len = prop_oneof![
        4 => 0..300usize,
        2 => 0..=MAX_BODY_LEN,
        1 => (MAX_BODY_LEN - 40)..=MAX_BODY_LEN,
    ];
    let text = vec(any::<char>(), 0..2000).prop_map(|chars| chars.into_iter().collect::<String>());
    let ascii_text = body_len.clone().prop_map(|len| "x".repeat(len)).boxed();
    let body = prop_oneof![
        text.prop_map(|t| (ContentType::Text, t.into_bytes())),
        ascii_text.prop_map(|t| (ContentType::Text, t.into_bytes())),
        any::<[u8; 16]>().prop_map(|id| (ContentType::Receipt, id.to_vec())),
        body_len
            .prop_flat_map(|len| vec(any::<u8>(), len))
            .prop_map(|b| (ContentType::Control, b)),
    ];
    (any::<[u8; 16]>(), any::<u64>(), body).prop_map(|(message_id, timestamp_ms, (ct, body))| Payload {
        content_type: ct,
        message_id,
        timestamp_ms,
        body,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trips(payload in any_payload()) {
        let bytes = payload.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(Payload::decode(&bytes), Ok(payload));
    }

    #[test]
    fn every_encoded_length_is_the_smallest_fitting_bucket(payload in any_payload()) {
        let bytes = payload.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(BUCKETS.contains(&bytes.len()));
        prop_assert_eq!(Some(bytes.len()), bucket_for(PAYLOAD_HEADER_LEN + payload.body.len()));
    }

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in vec(any::<u8>(), 0..40_000)) {
        let _ = Payload::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_random_bytes_with_a_valid_prefix(
        content_type in 0u8..5,
        body_len in any::<u32>(),
        rest in vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![1, content_type];
        bytes.extend_from_slice(&[7; 16]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&body_len.to_be_bytes());
        bytes.extend_from_slice(&rest);
        let _ = Payload::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_encodings(
        payload in any_payload(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = payload.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(decoded) = Payload::decode(&bytes) {
            // Whatever decodes must encode again (it obeys every content rule).
            prop_assert!(decoded.encode().is_ok());
        }
    }
}

#[test]
fn every_bucket_boundary_encodes_to_its_bucket() {
    for &bucket in &BUCKETS {
        let fitting = bucket - PAYLOAD_HEADER_LEN;
        assert_eq!(encode(&control(fitting)).len(), bucket);
        if bucket < BUCKETS[BUCKETS.len() - 1] {
            assert_eq!(encode(&control(fitting + 1)).len(), bucket * 2);
        }
    }
    assert_eq!(encode(&control(0)).len(), 64);
}

#[test]
fn accepts_the_largest_body() {
    let payload = control(MAX_BODY_LEN);
    let bytes = encode(&payload);
    assert_eq!(bytes.len(), 32_768);
    assert_eq!(Payload::decode(&bytes), Ok(payload));
}

#[test]
fn rejects_a_body_one_byte_over_the_limit() {
    let expected = Err(PayloadError::BodyTooLong {
        len: MAX_BODY_LEN + 1,
        max: MAX_BODY_LEN,
    });
    assert_eq!(control(MAX_BODY_LEN + 1).encode(), expected);
    let text = "a".repeat(MAX_BODY_LEN + 1);
    assert_eq!(Payload::text(ID, 0, &text).encode(), expected);
}

#[test]
fn rejects_a_declared_body_length_over_the_limit() {
    let mut bytes = encode(&control(MAX_BODY_LEN));
    let declared = u32::try_from(MAX_BODY_LEN + 1).unwrap_or(u32::MAX);
    bytes[26..30].copy_from_slice(&declared.to_be_bytes());
    assert_eq!(
        Payload::decode(&bytes),
        Err(DecodeError::TooLong {
            field: "body",
            len: MAX_BODY_LEN + 1,
            max: MAX_BODY_LEN,
        })
    );
}

#[test]
fn rejects_non_zero_padding() {
    let mut bytes = encode(&control(10));
    let last = bytes.len() - 1;
    bytes[last] = 1;
    assert!(matches!(
        Payload::decode(&bytes),
        Err(DecodeError::Invalid { field: "padding", .. })
    ));
    // The first padding byte too.
    let mut bytes = encode(&control(10));
    bytes[PAYLOAD_HEADER_LEN + 10] = 0x80;
    assert!(matches!(
        Payload::decode(&bytes),
        Err(DecodeError::Invalid { field: "padding", .. })
    ));
}

#[test]
fn rejects_a_total_length_that_is_not_a_bucket() {
    let bytes = encode(&control(10));
    let invalid_length = |bytes: &[u8]| {
        matches!(
            Payload::decode(bytes),
            Err(DecodeError::Invalid { field: "length", .. })
        )
    };
    // One padding byte short, one zero byte extra, and unpadded.
    assert!(invalid_length(&bytes[..bytes.len() - 1]));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(invalid_length(&longer));
    assert!(invalid_length(&bytes[..PAYLOAD_HEADER_LEN + 10]));
    // A huge all-zero tail beyond the largest bucket.
    let mut huge = bytes.clone();
    huge.resize(70_000, 0);
    assert!(invalid_length(&huge));
}

#[test]
fn rejects_trailing_non_zero_bytes_after_a_full_bucket() {
    let mut bytes = encode(&control(10));
    bytes.extend_from_slice(&[0xFF; 64]);
    assert!(matches!(
        Payload::decode(&bytes),
        Err(DecodeError::Invalid { field: "padding", .. })
    ));
}

#[test]
fn accepts_padding_to_a_larger_bucket() {
    let payload = control(10);
    let mut bytes = encode(&payload);
    bytes.resize(1024, 0);
    assert_eq!(Payload::decode(&bytes), Ok(payload));
}

#[test]
fn reports_short_inputs_as_incomplete() {
    assert_eq!(Payload::decode(&[]), Err(DecodeError::Incomplete { needed: 1 }));
    let bytes = encode(&control(40));
    // Cut inside the fixed header.
    assert_eq!(
        Payload::decode(&bytes[..20]),
        Err(DecodeError::Incomplete { needed: 6 })
    );
    // Cut inside the body.
    assert_eq!(
        Payload::decode(&bytes[..PAYLOAD_HEADER_LEN + 15]),
        Err(DecodeError::Incomplete { needed: 25 })
    );
}

#[test]
fn rejects_an_unsupported_version() {
    let mut bytes = encode(&control(1));
    bytes[0] = 2;
    assert_eq!(Payload::decode(&bytes), Err(DecodeError::UnsupportedVersion(2)));
}

#[test]
fn rejects_unknown_content_types() {
    for byte in [0u8, 4, 0x7F, 0xFF] {
        let mut bytes = encode(&control(1));
        bytes[1] = byte;
        assert_eq!(Payload::decode(&bytes), Err(DecodeError::UnknownType(byte)));
    }
}

#[test]
fn rejects_text_that_is_not_utf8() {
    let payload = Payload {
        content_type: ContentType::Text,
        message_id: ID,
        timestamp_ms: 0,
        body: vec![b'o', b'k', 0xFF],
    };
    assert_eq!(
        payload.encode(),
        Err(PayloadError::InvalidUtf8 { valid_up_to: 2 })
    );
    let mut bytes = encode(&control(3));
    bytes[1] = ContentType::Text.as_u8();
    bytes[PAYLOAD_HEADER_LEN..PAYLOAD_HEADER_LEN + 3].copy_from_slice(&payload.body);
    assert!(matches!(
        Payload::decode(&bytes),
        Err(DecodeError::Invalid { field: "body", .. })
    ));
}

#[test]
fn rejects_receipts_that_are_not_one_message_id() {
    for len in [0usize, 15, 17, 32] {
        let payload = Payload {
            content_type: ContentType::Receipt,
            message_id: ID,
            timestamp_ms: 0,
            body: vec![1; len],
        };
        assert_eq!(payload.encode(), Err(PayloadError::ReceiptLength { len }));
        let mut bytes = encode(&control(len));
        bytes[1] = ContentType::Receipt.as_u8();
        assert!(matches!(
            Payload::decode(&bytes),
            Err(DecodeError::Invalid { field: "body", .. })
        ));
    }
}

#[test]
fn accessors_expose_text_and_receipt_target() {
    let text = Payload::text(ID, 5, "héllo");
    assert_eq!(text.as_text(), Some("héllo"));
    assert_eq!(text.receipt_target(), None);
    let receipt = Payload::receipt(ID, 5, [9; 16]);
    assert_eq!(receipt.receipt_target(), Some([9; 16]));
    assert_eq!(receipt.as_text(), None);
    assert_eq!(
        Payload::decode(&encode(&receipt)).map(|p| p.receipt_target()),
        Ok(Some([9; 16]))
    );
}

#[test]
fn content_type_bytes_are_fixed() {
    assert_eq!(ContentType::Text.as_u8(), 1);
    assert_eq!(ContentType::Receipt.as_u8(), 2);
    assert_eq!(ContentType::Control.as_u8(), 3);
    for ct in [ContentType::Text, ContentType::Receipt, ContentType::Control] {
        assert_eq!(ContentType::try_from(u8::from(ct)), Ok(ct));
    }
}
