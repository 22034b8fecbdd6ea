//! Frame encoding and decoding: known bytes, round trips and malformed bodies.

use bytes::BytesMut;

use super::*;

fn body(frame: &Frame) -> Vec<u8> {
    let mut dst = BytesMut::new();
    frame.encode(&mut dst);
    dst.to_vec()
}

#[test]
fn encodes_challenge_byte_for_byte() {
    let frame = Frame::Challenge {
        relay_id: [0xAA; 32],
        nonce: [0xBB; 32],
    };
    let mut expected = vec![1, 0x01];
    expected.extend_from_slice(&[0xAA; 32]);
    expected.extend_from_slice(&[0xBB; 32]);
    assert_eq!(body(&frame), expected);
}

#[test]
fn encodes_optional_bundle_with_presence_byte() {
    let none = Frame::Bundle {
        request_id: 7,
        bundle: None,
    };
    assert_eq!(body(&none), vec![1, 0x12, 0, 0, 0, 7, 0]);
    let some = Frame::Bundle {
        request_id: 7,
        bundle: Some(vec![9, 9]),
    };
    assert_eq!(body(&some), vec![1, 0x12, 0, 0, 0, 7, 1, 0, 0, 0, 2, 9, 9]);
}

#[test]
fn encodes_expired_and_its_ack_byte_for_byte_and_bounds_the_notices() {
    let notice = ExpiredNotice {
        recipient: [0xAB; 32],
        msg_id: [0xCD; 16],
    };
    let frame = Frame::Expired {
        through: 0x0102,
        notices: vec![notice],
    };
    let mut expected = vec![1, 0x24, 0, 0, 0, 0, 0, 0, 1, 2, 0, 1];
    expected.extend_from_slice(&[0xAB; 32]);
    expected.extend_from_slice(&[0xCD; 16]);
    assert_eq!(body(&frame), expected);
    assert_eq!(frame.encoded_len(), expected.len());
    assert_eq!(Frame::decode(&expected), Ok(frame));
    let ack = Frame::ExpiredAck { through: 7 };
    let bytes = [1, 0x25, 0, 0, 0, 0, 0, 0, 0, 7];
    assert_eq!(body(&ack), bytes);
    assert_eq!(Frame::decode(&bytes), Ok(ack));
    // No notices, or more than the limit: refused on both sides.
    let empty = [1, 0x24, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
    assert!(Frame::decode(&empty).is_err());
    let too_many = Frame::Expired {
        through: 1,
        notices: vec![notice; MAX_EXPIRED_NOTICES + 1],
    };
    assert!(too_many.validate().is_err());
    assert!(Frame::decode(&body(&too_many)).is_err());
    assert!(Frame::Expired {
        through: 1,
        notices: vec![notice; MAX_EXPIRED_NOTICES]
    }
    .validate()
    .is_ok());
}

#[test]
fn encodes_query_away_and_away_byte_for_byte() {
    let query = Frame::QueryAway {
        request_id: 0x0102_0304,
        identity: [0xCC; 32],
    };
    let mut expected = vec![1, 0x1A, 1, 2, 3, 4];
    expected.extend_from_slice(&[0xCC; 32]);
    assert_eq!(body(&query), expected);
    assert_eq!(query.encoded_len(), 38);
    assert_eq!(Frame::decode(&expected), Ok(query));

    let away = Frame::Away {
        request_id: 9,
        away_days: 45,
    };
    let bytes = [1, 0x1B, 0, 0, 0, 9, 0, 0, 0, 45];
    assert_eq!(body(&away), bytes);
    assert_eq!(away.encoded_len(), 10);
    assert_eq!(Frame::decode(&bytes), Ok(away));
    let never = Frame::Away {
        request_id: 9,
        away_days: AWAY_NEVER,
    };
    assert_eq!(body(&never), [1, 0x1B, 0, 0, 0, 9, 0xFF, 0xFF, 0xFF, 0xFF]);
}

#[test]
fn rejects_truncated_and_padded_away_frames() {
    assert!(Frame::decode(&[1, 0x1B, 0, 0, 0, 9, 0, 0, 0]).is_err_and(|e| e.is_incomplete()));
    assert!(matches!(
        Frame::decode(&[1, 0x1B, 0, 0, 0, 9, 0, 0, 0, 45, 0]),
        Err(DecodeError::TrailingBytes { extra: 1 })
    ));
    let mut query = vec![1, 0x1A, 0, 0, 0, 1];
    query.extend_from_slice(&[0; 31]);
    assert!(Frame::decode(&query).is_err_and(|e| e.is_incomplete()));
}

#[test]
fn encodes_error_code_and_reason() {
    let frame = Frame::error(ErrorCode::Replaced, "hi");
    assert_eq!(body(&frame), vec![1, 0x7F, 0, 8, 0, 2, b'h', b'i']);
}

#[test]
fn auth_message_is_context_then_relay_nonce_identity() {
    let msg = auth_message(&[1; 32], &[2; 32], &[3; 32]);
    assert_eq!(msg.len(), 119);
    assert_eq!(&msg[..AUTH_CONTEXT.len()], b"e2ee-chat/relay-auth/v1");
    let rest = &msg[AUTH_CONTEXT.len()..];
    assert_eq!(rest.len(), 96);
    assert!(rest[..32].iter().all(|&b| b == 1));
    assert!(rest[32..64].iter().all(|&b| b == 2));
    assert!(rest[64..].iter().all(|&b| b == 3));
}

#[test]
fn error_constructor_truncates_reason_at_char_boundary() {
    let long = "é".repeat(200); // 400 bytes, two per char
    let frame = Frame::error(ErrorCode::Internal, long);
    let Frame::Error { reason, .. } = &frame else {
        panic!("not an error frame");
    };
    assert_eq!(reason.len(), MAX_REASON_LEN);
    assert_eq!(frame.validate(), Ok(()));
    let odd = format!("a{}", "é".repeat(200));
    let Frame::Error { reason, .. } = Frame::error(ErrorCode::Internal, odd) else {
        panic!("not an error frame");
    };
    assert_eq!(reason.len(), MAX_REASON_LEN - 1);
}

#[test]
fn an_auth_body_is_auth_frame_len_bytes() {
    let auth = Frame::Auth {
        identity: [3; 32],
        signature: [4; 64],
    };
    assert_eq!(AUTH_FRAME_LEN, 98);
    assert_eq!(auth.encoded_len(), AUTH_FRAME_LEN);
    assert_eq!(body(&auth).len(), AUTH_FRAME_LEN);
}

#[test]
fn encodes_invalid_recipient_as_code_16() {
    let frame = Frame::error(ErrorCode::InvalidRecipient, "");
    assert_eq!(body(&frame), vec![1, 0x7F, 0, 16, 0, 0]);
    assert_eq!(ErrorCode::from_u16(16), ErrorCode::InvalidRecipient);
    assert_eq!(ErrorCode::InvalidRecipient.name(), "invalid_recipient");
}

#[test]
fn error_codes_round_trip_through_u16() {
    for code in 0..=u16::MAX {
        assert_eq!(ErrorCode::from_u16(code).to_u16(), code);
    }
    assert_eq!(ErrorCode::from_u16(8), ErrorCode::Replaced);
    assert_eq!(ErrorCode::from_u16(999), ErrorCode::UnknownCode(999));
}

#[test]
fn keeps_unknown_error_codes() {
    let bytes = [1, 0x7F, 0x12, 0x34, 0, 0];
    assert_eq!(
        Frame::decode(&bytes),
        Ok(Frame::Error {
            code: ErrorCode::UnknownCode(0x1234),
            reason: String::new(),
        })
    );
}

#[test]
fn rejects_empty_name() {
    assert_eq!(
        Frame::decode(&[1, 0x16, 0, 0, 0, 1, 0, 0]),
        Err(DecodeError::Invalid {
            field: "name",
            reason: "empty"
        })
    );
}

#[test]
fn rejects_overlong_name_before_reading_it() {
    // 65 declared bytes but none present: the bound is checked first.
    assert!(matches!(
        Frame::decode(&[1, 0x16, 0, 0, 0, 1, 0, 65]),
        Err(DecodeError::TooLong {
            field: "name",
            len: 65,
            max: MAX_NAME_LEN
        })
    ));
}

#[test]
fn rejects_payload_length_over_limit() {
    let mut bytes = vec![1, 0x20];
    bytes.extend_from_slice(&[0; 48]);
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Frame::decode(&bytes),
        Err(DecodeError::TooLong { field: "payload", .. })
    ));
}

#[test]
fn validate_reports_oversized_fields() {
    let frame = Frame::Send {
        recipient: [0; 32],
        msg_id: [0; 16],
        payload: vec![0; MAX_PAYLOAD_LEN + 1],
    };
    assert!(matches!(
        frame.validate(),
        Err(DecodeError::TooLong { field: "payload", .. })
    ));
    let empty_name = Frame::LookupName {
        request_id: 0,
        name: String::new(),
    };
    assert!(matches!(
        empty_name.validate(),
        Err(DecodeError::Invalid { field: "name", .. })
    ));
}

#[test]
fn largest_valid_frame_fits_hard_maximum() {
    let frame = Frame::Deliver {
        sender: [0; 32],
        msg_id: [0; 16],
        timestamp_ms: 0,
        payload: vec![0; MAX_PAYLOAD_LEN],
    };
    assert!(frame.encoded_len() <= MAX_FRAME_LEN);
}

#[test]
fn debug_hides_opaque_bytes() {
    let frame = Frame::Send {
        recipient: [0; 32],
        msg_id: [0; 16],
        payload: vec![0x5A; 3],
    };
    let shown = format!("{frame:?}");
    assert!(shown.contains("<3 bytes>"), "{shown}");
    assert!(!shown.contains("90"), "{shown}"); // 0x5A = 90
}

#[test]
fn encodes_msg_id_reused_as_code_17() {
    let frame = Frame::error(ErrorCode::MsgIdReused, "");
    assert_eq!(body(&frame), vec![1, 0x7F, 0, 17, 0, 0]);
    assert_eq!(ErrorCode::from_u16(17), ErrorCode::MsgIdReused);
    assert_eq!(ErrorCode::MsgIdReused.name(), "msg_id_reused");
}

#[test]
fn encodes_refused_accepted_and_features_byte_for_byte() {
    let refused = Frame::refused(7, 0x20, ErrorCode::QuotaExceeded, 1000, "full");
    assert_eq!(
        body(&refused),
        vec![1, 0x34, 0, 0, 0, 7, 0x20, 0, 19, 0, 0, 0x03, 0xE8, 0, 4, b'f', b'u', b'l', b'l']
    );
    assert_eq!(
        body(&Frame::Accepted { request_seq: 258 }),
        vec![1, 0x35, 0, 0, 1, 2]
    );
    assert_eq!(
        body(&Frame::Features {
            flags: FEATURE_NAMED_REFUSALS
        }),
        vec![1, 0x04, 0, 0, 0, 1]
    );
    for frame in [
        refused,
        Frame::Accepted { request_seq: 1 },
        Frame::Features { flags: u32::MAX },
    ] {
        let bytes = body(&frame);
        assert_eq!(bytes.len(), frame.encoded_len());
        assert_eq!(Frame::decode(&bytes), Ok(frame));
        // A byte short is incomplete, a byte more is trailing: both refused.
        assert!(Frame::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Frame::decode(&padded).is_err());
    }
}

#[test]
fn refused_cuts_its_reason_and_keeps_unknown_codes() {
    let long = "é".repeat(MAX_REASON_LEN);
    let Frame::Refused { reason, .. } = Frame::refused(1, 0x10, ErrorCode::NotOwner, 0, long) else {
        panic!("not a Refused frame");
    };
    assert!(reason.len() <= MAX_REASON_LEN && reason.len() >= MAX_REASON_LEN - 1);
    let bytes = [1, 0x34, 0, 0, 0, 1, 0x20, 0x12, 0x34, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        Frame::decode(&bytes),
        Ok(Frame::Refused {
            code: ErrorCode::UnknownCode(0x1234),
            ..
        })
    ));
}

#[test]
fn only_rate_limits_and_full_quotas_are_retryable() {
    let retryable: Vec<u16> = (0..=u16::MAX)
        .filter(|c| ErrorCode::from_u16(*c).is_retryable())
        .collect();
    assert_eq!(retryable, vec![18, 19]);
}

#[test]
fn requests_are_the_frames_answered_exactly_once() {
    assert!(Frame::QueryQuota.is_request());
    assert!(Frame::PublishName { claim: vec![] }.is_request());
    assert!(!Frame::Ping { nonce: 1 }.is_request());
    assert!(!Frame::ExpiredAck { through: 0 }.is_request());
    assert!(!Frame::DeliveryAck {
        sender: [0; 32],
        msg_id: [0; 16]
    }
    .is_request());
    assert!(!Frame::Features { flags: 1 }.is_request());
}

#[test]
fn encodes_group_frames_byte_for_byte() {
    let send = Frame::GroupSend {
        msg_id: [1; 16],
        message: vec![9, 8],
    };
    let mut expected = vec![1, 0x50];
    expected.extend_from_slice(&[1; 16]);
    expected.extend_from_slice(&[0, 0, 0, 2, 9, 8]);
    assert_eq!(body(&send), expected);

    let commit = Frame::GroupCommit {
        msg_id: [2; 16],
        commit: vec![7],
        welcome: Some(vec![6, 6]),
        members: vec![[3; 32], [4; 32]],
        added: vec![[4; 32]],
    };
    let mut expected = vec![1, 0x51];
    expected.extend_from_slice(&[2; 16]);
    expected.extend_from_slice(&[0, 0, 0, 1, 7, 1, 0, 0, 0, 2, 6, 6, 0, 2]);
    expected.extend_from_slice(&[3; 32]);
    expected.extend_from_slice(&[4; 32]);
    expected.extend_from_slice(&[0, 1]);
    expected.extend_from_slice(&[4; 32]);
    assert_eq!(body(&commit), expected);

    let epoch = Frame::GroupEpoch {
        msg_id: [5; 16],
        epoch: 258,
    };
    let mut expected = vec![1, 0x52];
    expected.extend_from_slice(&[5; 16]);
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(body(&epoch), expected);

    let publish = Frame::PublishKeyPackages {
        packages: vec![vec![1], vec![2, 3]],
        last_resort: Some(vec![4]),
    };
    assert_eq!(
        body(&publish),
        vec![1, 0x53, 0, 2, 0, 1, 1, 0, 2, 2, 3, 1, 0, 1, 4]
    );
    assert_eq!(
        body(&Frame::KeyPackageCount { remaining: 3 }),
        vec![1, 0x54, 0, 0, 0, 3]
    );
    let mut expected = vec![1, 0x55, 0, 0, 0, 9];
    expected.extend_from_slice(&[6; 32]);
    assert_eq!(
        body(&Frame::FetchKeyPackage {
            request_id: 9,
            identity: [6; 32]
        }),
        expected
    );
    let none = Frame::KeyPackage {
        request_id: 9,
        package: None,
    };
    assert_eq!(body(&none), vec![1, 0x56, 0, 0, 0, 9, 0]);

    for frame in [send, commit, epoch, publish, none] {
        let bytes = body(&frame);
        assert_eq!(Frame::decode(&bytes).expect("decodes"), frame);
        assert_eq!(bytes.len(), frame.encoded_len());
        for cut in 0..bytes.len() {
            assert!(Frame::decode(&bytes[..cut]).is_err(), "{frame:?} cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Frame::decode(&padded).is_err(), "{frame:?} with a trailing byte");
    }
}

#[test]
fn group_frames_are_bounded_and_the_largest_fits() {
    use crate::group::*;
    assert_eq!(
        MAX_MLS_MESSAGE_LEN + 1,
        MAX_PAYLOAD_LEN,
        "an MLS message and its tag fill a Deliver"
    );
    let too_many = Frame::GroupCommit {
        msg_id: [0; 16],
        commit: vec![0; 1],
        welcome: None,
        members: vec![[0; 32]; MAX_GROUP_MEMBERS + 1],
        added: vec![],
    };
    assert!(too_many.validate().is_err());
    assert!(Frame::decode(&body(&too_many)).is_err());
    let packages = Frame::PublishKeyPackages {
        packages: vec![vec![0; MAX_KEY_PACKAGE_LEN + 1]],
        last_resort: None,
    };
    assert!(packages.validate().is_err());
    assert!(Frame::decode(&body(&packages)).is_err());
    let largest_commit = Frame::GroupCommit {
        msg_id: [0; 16],
        commit: vec![0; MAX_MLS_MESSAGE_LEN],
        welcome: Some(vec![0; MAX_MLS_MESSAGE_LEN]),
        members: vec![[0; 32]; MAX_GROUP_MEMBERS],
        added: vec![[0; 32]; MAX_GROUP_MEMBERS],
    };
    let largest_publish = Frame::PublishKeyPackages {
        packages: vec![vec![0; MAX_KEY_PACKAGE_LEN]; MAX_KEY_PACKAGES],
        last_resort: Some(vec![0; MAX_KEY_PACKAGE_LEN]),
    };
    for frame in [largest_commit, largest_publish] {
        assert!(frame.validate().is_ok());
        assert!(frame.encoded_len() <= MAX_FRAME_LEN);
        assert_eq!(Frame::decode(&body(&frame)).expect("decodes"), frame);
    }
    assert!(Frame::GroupSend {
        msg_id: [0; 16],
        message: vec![]
    }
    .is_request());
}
