//! Relay frames and their codec: round trips for every variant, splitting at arbitrary
//! points, and rejection of truncated, oversized and malformed input.

use bytes::{BufMut, BytesMut};
use e2ee_protocol::codec::{CodecError, FrameCodec};
use e2ee_protocol::frame::{
    ErrorCode, Frame, MAX_BUNDLE_LEN, MAX_CLAIM_LEN, MAX_FRAME_LEN, MAX_NAME_LEN, MAX_PAYLOAD_LEN,
    MAX_REASON_LEN,
};
use e2ee_protocol::DecodeError;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn msg_id() -> impl Strategy<Value = [u8; 16]> {
    any::<[u8; 16]>()
}

fn signature() -> impl Strategy<Value = [u8; 64]> {
    vec(any::<u8>(), 64).prop_map(|v| {
        let mut out = [0u8; 64];
        out.copy_from_slice(&v);
        out
    })
}

/// Opaque bytes up to `max`, mostly short, sometimes at the limit.
fn bytes_up_to(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..64),
        1 => vec(any::<u8>(), 0..=max),
        1 => Just(vec![0xA5; max]),
    ]
}

/// A string of at most `max` UTF-8 bytes (multi-byte characters included).
fn string_up_to(min_chars: usize, max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), min_chars..=max).prop_map(move |chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    // `from_u16` never yields `UnknownCode` for a defined value, so this covers every
    // code, known and unknown, exactly as a decoder would produce it.
    any::<u16>().prop_map(ErrorCode::from_u16)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (key(), key()).prop_map(|(relay_id, nonce)| Frame::Challenge { relay_id, nonce }),
        (key(), signature()).prop_map(|(identity, signature)| Frame::Auth { identity, signature }),
        any::<u32>().prop_map(|queued| Frame::AuthOk { queued }),
        bytes_up_to(MAX_BUNDLE_LEN).prop_map(|bundle| Frame::PublishPreKeys { bundle }),
        (any::<u32>(), key()).prop_map(|(request_id, identity)| Frame::FetchBundle { request_id, identity }),
        (any::<u32>(), option::of(bytes_up_to(MAX_BUNDLE_LEN)))
            .prop_map(|(request_id, bundle)| Frame::Bundle { request_id, bundle }),
        any::<u32>().prop_map(|remaining| Frame::PreKeysLow { remaining }),
        any::<u32>().prop_map(|opks| Frame::PreKeysStored { opks }),
        bytes_up_to(MAX_CLAIM_LEN).prop_map(|claim| Frame::PublishName { claim }),
        (any::<u32>(), string_up_to(1, MAX_NAME_LEN))
            .prop_map(|(request_id, name)| Frame::LookupName { request_id, name }),
        (any::<u32>(), option::of(bytes_up_to(MAX_CLAIM_LEN)))
            .prop_map(|(request_id, claim)| Frame::NameClaim { request_id, claim }),
        (any::<u32>(), key())
            .prop_map(|(request_id, identity)| Frame::LookupIdentity { request_id, identity }),
        (any::<u32>(), bytes_up_to(MAX_CLAIM_LEN))
            .prop_map(|(request_id, release)| Frame::ReleaseName { request_id, release }),
        (any::<u32>(), key()).prop_map(|(request_id, identity)| Frame::QueryAway { request_id, identity }),
        (any::<u32>(), any::<u32>()).prop_map(|(request_id, away_days)| Frame::Away {
            request_id,
            away_days
        }),
        (key(), msg_id(), bytes_up_to(MAX_PAYLOAD_LEN)).prop_map(|(recipient, msg_id, payload)| {
            Frame::Send {
                recipient,
                msg_id,
                payload,
            }
        }),
        msg_id().prop_map(|msg_id| Frame::SentAck { msg_id }),
        (key(), msg_id(), any::<u64>(), bytes_up_to(MAX_PAYLOAD_LEN)).prop_map(
            |(sender, msg_id, timestamp_ms, payload)| Frame::Deliver {
                sender,
                msg_id,
                timestamp_ms,
                payload
            }
        ),
        (key(), msg_id()).prop_map(|(sender, msg_id)| Frame::DeliveryAck { sender, msg_id }),
        (option::of(msg_id()), any::<u32>()).prop_map(|(msg_id, retry_after_ms)| {
            Frame::RateLimited {
                msg_id,
                retry_after_ms,
            }
        }),
        (msg_id(), key(), any::<u32>()).prop_map(|(msg_id, recipient, retry_after_ms)| {
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            }
        }),
        Just(Frame::QueryQuota),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(remaining, capacity, refill_per_sec)| {
            Frame::Quota {
                remaining,
                capacity,
                refill_per_sec,
            }
        }),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        (error_code(), string_up_to(0, MAX_REASON_LEN))
            .prop_map(|(code, reason)| Frame::Error { code, reason }),
    ]
}

fn body(frame: &Frame) -> Vec<u8> {
    let mut dst = BytesMut::new();
    frame.encode(&mut dst);
    dst.to_vec()
}

fn wire(frame: &Frame) -> Vec<u8> {
    let mut dst = BytesMut::new();
    FrameCodec::default()
        .encode(frame, &mut dst)
        .expect("valid frame encodes");
    dst.to_vec()
}

/// A frame body with the given type byte and fields.
fn raw_body(ty: u8, fields: &[u8]) -> Vec<u8> {
    let mut out = vec![1, ty];
    out.extend_from_slice(fields);
    out
}

/// Feeds `bytes` to a fresh codec in the given chunks, collecting every frame.
fn decode_in_chunks(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, CodecError> {
    let mut codec = FrameCodec::default();
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    for cut in cuts {
        src.extend_from_slice(&bytes[start..cut]);
        start = cut;
        while let Some(frame) = codec.decode(&mut src)? {
            frames.push(frame);
        }
    }
    assert!(src.is_empty(), "bytes left in the codec buffer");
    Ok(frames)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let bytes = body(&frame);
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        prop_assert_eq!(frame.validate(), Ok(()));
        prop_assert_eq!(Frame::decode(&bytes), Ok(frame));
    }

    #[test]
    fn every_frame_round_trips_through_codec_split_anywhere(
        frames in vec(frame(), 1..4),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let mut bytes = Vec::new();
        for frame in &frames {
            bytes.extend_from_slice(&wire(frame));
        }
        prop_assert_eq!(decode_in_chunks(&bytes, &cuts).expect("decodes"), frames);
    }

    #[test]
    fn truncated_body_is_incomplete(frame in frame(), cut in any::<usize>()) {
        let bytes = body(&frame);
        let cut = cut % bytes.len();
        prop_assert!(
            matches!(Frame::decode(&bytes[..cut]), Err(DecodeError::Incomplete { .. })),
            "cut at {} of {}", cut, bytes.len()
        );
    }

    #[test]
    fn truncated_stream_waits_for_more(frame in frame(), cut in any::<usize>()) {
        let bytes = wire(&frame);
        let cut = cut % bytes.len();
        let mut src = BytesMut::from(&bytes[..cut]);
        prop_assert!(matches!(FrameCodec::default().decode(&mut src), Ok(None)));
    }

    #[test]
    fn appended_bytes_are_trailing(frame in frame(), extra in vec(any::<u8>(), 1..16)) {
        let mut bytes = body(&frame);
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(
            Frame::decode(&bytes),
            Err(DecodeError::TrailingBytes { extra: extra.len() })
        );
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(frame) = Frame::decode(&bytes) {
            // The encoding is canonical: whatever decodes re-encodes to the same bytes.
            prop_assert_eq!(body(&frame), bytes);
        }
    }

    #[test]
    fn decoding_random_bodies_with_valid_header_never_panics(
        ty in any::<u8>(),
        fields in vec(any::<u8>(), 0..256),
    ) {
        let bytes = raw_body(ty, &fields);
        if let Ok(frame) = Frame::decode(&bytes) {
            prop_assert_eq!(body(&frame), bytes);
        }
    }

    #[test]
    fn codec_on_random_stream_never_panics(
        bytes in vec(any::<u8>(), 0..1024),
        cuts in vec(any::<usize>(), 0..8),
    ) {
        let mut codec = FrameCodec::new(512);
        let mut src = BytesMut::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        'feed: for cut in cuts {
            src.extend_from_slice(&bytes[start..cut]);
            start = cut;
            loop {
                match codec.decode(&mut src) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(CodecError::Malformed(DecodeError::Incomplete { .. })) => {
                        prop_assert!(false, "codec reported Incomplete as an error");
                    }
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

#[test]
fn rejects_trailing_bytes() {
    let mut bytes = body(&Frame::Ping { nonce: 5 });
    bytes.push(0);
    assert_eq!(
        Frame::decode(&bytes),
        Err(DecodeError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn rejects_trailing_bytes_through_codec() {
    let mut src = BytesMut::new();
    src.put_u32(11);
    src.put_slice(&[1, 0x40, 0, 0, 0, 0, 0, 0, 0, 5, 0xFF]);
    assert!(matches!(
        FrameCodec::default().decode(&mut src),
        Err(CodecError::Malformed(DecodeError::TrailingBytes { extra: 1 }))
    ));
}

#[test]
fn rejects_unknown_type() {
    assert_eq!(
        Frame::decode(&raw_body(0x5F, &[])),
        Err(DecodeError::UnknownType(0x5F))
    );
}

#[test]
fn rejects_unknown_version() {
    let mut bytes = body(&Frame::QueryQuota);
    bytes[0] = 2;
    assert_eq!(Frame::decode(&bytes), Err(DecodeError::UnsupportedVersion(2)));
}

#[test]
fn checks_version_before_type() {
    assert_eq!(Frame::decode(&[0, 0xEE]), Err(DecodeError::UnsupportedVersion(0)));
}

#[test]
fn empty_body_is_incomplete() {
    assert!(matches!(Frame::decode(&[]), Err(DecodeError::Incomplete { .. })));
}

#[test]
fn empty_body_through_codec_is_malformed() {
    let mut src = BytesMut::new();
    src.put_u32(0);
    assert!(matches!(
        FrameCodec::default().decode(&mut src),
        Err(CodecError::Malformed(DecodeError::Invalid { .. }))
    ));
}

#[test]
fn rejects_invalid_presence_byte() {
    for (ty, field) in [(0x12, "bundle"), (0x17, "claim")] {
        let bytes = raw_body(ty, &[0, 0, 0, 1, 2]);
        assert!(
            matches!(Frame::decode(&bytes), Err(DecodeError::Invalid { field: f, .. }) if f == field),
            "type 0x{ty:02x}"
        );
    }
    let mut fields = vec![7];
    fields.extend_from_slice(&[0; 16 + 4]);
    assert!(matches!(
        Frame::decode(&raw_body(0x30, &fields)),
        Err(DecodeError::Invalid { field: "msg_id", .. })
    ));
}

#[test]
fn rejects_non_utf8_name() {
    let bytes = raw_body(0x16, &[0, 0, 0, 1, 0, 2, 0xC3, 0x28]);
    assert!(matches!(
        Frame::decode(&bytes),
        Err(DecodeError::Invalid { field: "name", .. })
    ));
}

#[test]
fn rejects_non_utf8_reason() {
    let bytes = raw_body(0x7F, &[0, 1, 0, 1, 0xFF]);
    assert!(matches!(
        Frame::decode(&bytes),
        Err(DecodeError::Invalid { field: "reason", .. })
    ));
}

#[test]
fn rejects_name_longer_than_limit() {
    let name = "n".repeat(MAX_NAME_LEN + 1);
    let mut fields = vec![0, 0, 0, 1];
    fields.extend_from_slice(&u16::try_from(name.len()).expect("short name").to_be_bytes());
    fields.extend_from_slice(name.as_bytes());
    assert!(matches!(
        Frame::decode(&raw_body(0x16, &fields)),
        Err(DecodeError::TooLong { field: "name", .. })
    ));
}

#[test]
fn rejects_bundle_longer_than_limit() {
    let len = u32::try_from(MAX_BUNDLE_LEN + 1).expect("fits u32");
    assert!(matches!(
        Frame::decode(&raw_body(0x10, &len.to_be_bytes())),
        Err(DecodeError::TooLong { field: "bundle", .. })
    ));
}

#[test]
fn rejects_oversized_length_prefix_before_body_arrives() {
    let mut codec = FrameCodec::new(1024);
    let mut src = BytesMut::new();
    src.put_u32(1025);
    assert!(matches!(
        codec.decode(&mut src),
        Err(CodecError::FrameTooLarge { len: 1025, max: 1024 })
    ));
}

#[test]
fn rejects_length_prefix_over_hard_maximum() {
    let mut src = BytesMut::new();
    src.put_u32(u32::MAX);
    let err = FrameCodec::default()
        .decode(&mut src)
        .expect_err("oversized prefix is refused");
    assert!(matches!(
        err,
        CodecError::FrameTooLarge {
            max: MAX_FRAME_LEN,
            ..
        }
    ));
    // No buffer was grown for the announced length.
    assert!(src.capacity() < MAX_FRAME_LEN);
}

#[test]
fn waits_for_length_prefix() {
    let mut src = BytesMut::from(&[0u8, 0, 0][..]);
    assert!(matches!(FrameCodec::default().decode(&mut src), Ok(None)));
    assert_eq!(src.len(), 3);
}

#[test]
fn stream_ending_mid_frame_is_an_io_error() {
    let bytes = wire(&Frame::Ping { nonce: 1 });
    let mut src = BytesMut::from(&bytes[..bytes.len() - 1]);
    assert!(matches!(
        FrameCodec::default().decode_eof(&mut src),
        Err(CodecError::Io(_))
    ));
}

#[test]
fn encodes_length_prefix_then_body() {
    let frame = Frame::Pong { nonce: 0x0102 };
    let bytes = wire(&frame);
    assert_eq!(&bytes[..4], &[0, 0, 0, 10]);
    assert_eq!(&bytes[4..], &body(&frame)[..]);
}

#[test]
fn encodes_owned_and_borrowed_frames_alike() {
    let frame = Frame::SentAck { msg_id: [3; 16] };
    let mut owned = BytesMut::new();
    FrameCodec::default()
        .encode(frame.clone(), &mut owned)
        .expect("valid frame encodes");
    assert_eq!(owned.to_vec(), wire(&frame));
}

#[test]
fn decodes_back_to_back_frames_from_one_buffer() {
    let a = Frame::Ping { nonce: 1 };
    let b = Frame::AuthOk { queued: 3 };
    let mut src = BytesMut::new();
    src.extend_from_slice(&wire(&a));
    src.extend_from_slice(&wire(&b));
    let mut codec = FrameCodec::default();
    assert_eq!(codec.decode(&mut src).expect("decodes"), Some(a));
    assert_eq!(codec.decode(&mut src).expect("decodes"), Some(b));
    assert_eq!(codec.decode(&mut src).expect("decodes"), None);
}

#[test]
fn kind_names_are_distinct() {
    let frames = [
        Frame::Challenge {
            relay_id: [0; 32],
            nonce: [0; 32],
        },
        Frame::Auth {
            identity: [0; 32],
            signature: [0; 64],
        },
        Frame::AuthOk { queued: 0 },
        Frame::PublishPreKeys { bundle: vec![] },
        Frame::FetchBundle {
            request_id: 0,
            identity: [0; 32],
        },
        Frame::Bundle {
            request_id: 0,
            bundle: None,
        },
        Frame::PreKeysLow { remaining: 0 },
        Frame::PreKeysStored { opks: 0 },
        Frame::PublishName { claim: vec![] },
        Frame::LookupName {
            request_id: 0,
            name: "a".into(),
        },
        Frame::NameClaim {
            request_id: 0,
            claim: None,
        },
        Frame::LookupIdentity {
            request_id: 0,
            identity: [0; 32],
        },
        Frame::ReleaseName {
            request_id: 0,
            release: vec![],
        },
        Frame::QueryAway {
            request_id: 0,
            identity: [0; 32],
        },
        Frame::Away {
            request_id: 0,
            away_days: 0,
        },
        Frame::Send {
            recipient: [0; 32],
            msg_id: [0; 16],
            payload: vec![],
        },
        Frame::SentAck { msg_id: [0; 16] },
        Frame::Deliver {
            sender: [0; 32],
            msg_id: [0; 16],
            timestamp_ms: 0,
            payload: vec![],
        },
        Frame::DeliveryAck {
            sender: [0; 32],
            msg_id: [0; 16],
        },
        Frame::RateLimited {
            msg_id: None,
            retry_after_ms: 0,
        },
        Frame::QuotaExceeded {
            msg_id: [0; 16],
            recipient: [0; 32],
            retry_after_ms: 0,
        },
        Frame::QueryQuota,
        Frame::Quota {
            remaining: 0,
            capacity: 0,
            refill_per_sec: 0,
        },
        Frame::Ping { nonce: 0 },
        Frame::Pong { nonce: 0 },
        Frame::Error {
            code: ErrorCode::Internal,
            reason: String::new(),
        },
    ];
    let mut kinds: Vec<&str> = frames.iter().map(Frame::kind).collect();
    let mut types: Vec<u8> = frames.iter().map(Frame::type_byte).collect();
    kinds.sort_unstable();
    kinds.dedup();
    types.sort_unstable();
    types.dedup();
    assert_eq!(kinds.len(), frames.len());
    assert_eq!(types.len(), frames.len());
}
