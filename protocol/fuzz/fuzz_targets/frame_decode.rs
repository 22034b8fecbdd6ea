//! Fuzzes the relay frame decoder and the stream codec.
//!
//! `Frame::decode` gets the whole input as one body; the codec gets the same bytes as a
//! stream, fed in chunks whose sizes come from the input itself. Neither may panic,
//! whatever decodes must re-encode to the same bytes, and the codec must never report
//! "need more bytes" as an error.

#![no_main]

use bytes::BytesMut;
use e2ee_protocol::codec::{CodecError, FrameCodec};
use e2ee_protocol::frame::Frame;
use e2ee_protocol::DecodeError;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    decode_body(data);
    decode_stream(data);
});

fn decode_body(data: &[u8]) {
    if let Ok(frame) = Frame::decode(data) {
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(&again[..], data, "decoding is not canonical");
        assert_eq!(frame.encoded_len(), data.len());
    }
}

fn decode_stream(data: &[u8]) {
    // The first byte picks a small maximum sometimes, to exercise FrameTooLarge.
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let max = if knob & 1 == 0 { 1024 } else { usize::MAX };
    let chunk = usize::from(knob >> 1) + 1;
    let mut codec = FrameCodec::new(max);
    let mut src = BytesMut::new();
    for piece in stream.chunks(chunk) {
        src.extend_from_slice(piece);
        loop {
            match codec.decode(&mut src) {
                Ok(Some(frame)) => {
                    let mut out = BytesMut::new();
                    assert!(
                        codec.encode(&frame, &mut out).is_ok(),
                        "a decoded frame failed to encode"
                    );
                }
                Ok(None) => break,
                Err(CodecError::Malformed(DecodeError::Incomplete { .. })) => {
                    panic!("codec reported a complete body as incomplete")
                }
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&mut src);
}
