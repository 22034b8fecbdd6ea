//! The tokio-util codec for relay frames: `length u32be || body` on a byte stream.
//!
//! The codec only splits and joins bytes; it owns no socket. The length prefix is checked
//! against the configured maximum as soon as its four bytes are in, so an oversized frame
//! is refused before its body arrives and no buffer ever grows past the maximum.

use bytes::{Buf, BufMut, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::DecodeError;
use crate::frame::{DeliverRef, Frame, LENGTH_PREFIX_LEN, MAX_FRAME_LEN};

/// Why the codec could not read or write a frame. Every error is final for the stream.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The underlying stream failed, or it ended in the middle of a frame.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A length prefix (read or about to be written) exceeds the codec's maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The body length from the prefix (or of the frame being encoded).
        len: usize,
        /// The codec's maximum body length.
        max: usize,
    },
    /// A complete body that does not decode, or a frame to send that breaks a field
    /// limit. Never [`DecodeError::Incomplete`]: a complete body that ends inside a
    /// field is reported as [`DecodeError::Invalid`].
    #[error("malformed frame: {0}")]
    Malformed(DecodeError),
}

/// Splits a byte stream into [`Frame`]s and writes frames with their length prefix.
///
/// The same maximum body length applies to both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec accepting bodies up to `max_frame_len` bytes, capped at [`MAX_FRAME_LEN`].
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: max_frame_len.min(MAX_FRAME_LEN),
        }
    }

    /// The largest body this codec reads or writes.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Changes the largest body this codec reads or writes, capped at [`MAX_FRAME_LEN`].
    ///
    /// The limit is checked against each length prefix as the frame is decoded, so a new
    /// limit applies from the next [`Decoder::decode`] call on, including to a frame whose
    /// prefix is already buffered. A receiver whose state allows only small frames keeps
    /// the limit low until the state changes: the relay reads at most
    /// [`crate::frame::AUTH_FRAME_LEN`] bytes of body until a connection is authenticated
    /// (docs/PROTOCOL.md 1.2), then its configured maximum.
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len.min(MAX_FRAME_LEN);
    }

    fn too_large(&self, len: usize) -> CodecError {
        CodecError::FrameTooLarge {
            len,
            max: self.max_frame_len,
        }
    }
}

impl Default for FrameCodec {
    /// A codec with the hard maximum, [`MAX_FRAME_LEN`].
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX_LEN) else {
            src.reserve(LENGTH_PREFIX_LEN - src.len());
            return Ok(None);
        };
        let mut len_bytes = [0u8; LENGTH_PREFIX_LEN];
        len_bytes.copy_from_slice(prefix);
        let len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
        if len > self.max_frame_len {
            return Err(self.too_large(len));
        }
        // `len` is bounded by the maximum, so this cannot overflow or over-reserve.
        let total = LENGTH_PREFIX_LEN + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX_LEN);
        let body = src.split_to(len);
        match Frame::decode(&body) {
            Ok(frame) => Ok(Some(frame)),
            Err(DecodeError::Incomplete { .. }) => Err(CodecError::Malformed(DecodeError::Invalid {
                field: "frame",
                reason: "body ends inside a field",
            })),
            Err(err) => Err(CodecError::Malformed(err)),
        }
    }
}

impl FrameCodec {
    /// Appends the length prefix for a body of `len` bytes, then the body.
    fn put_frame(
        &self,
        len: usize,
        dst: &mut BytesMut,
        body: impl FnOnce(&mut BytesMut),
    ) -> Result<(), CodecError> {
        if len > self.max_frame_len {
            return Err(self.too_large(len));
        }
        let prefix = u32::try_from(len).map_err(|_| self.too_large(len))?;
        dst.reserve(LENGTH_PREFIX_LEN + len);
        dst.put_u32(prefix);
        body(dst);
        Ok(())
    }
}

impl<'a> Encoder<&'a Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &'a Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        frame.validate().map_err(CodecError::Malformed)?;
        self.put_frame(frame.encoded_len(), dst, |dst| frame.encode(dst))
    }
}

impl<'a> Encoder<DeliverRef<'a>> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, deliver: DeliverRef<'a>, dst: &mut BytesMut) -> Result<(), CodecError> {
        deliver.validate().map_err(CodecError::Malformed)?;
        self.put_frame(deliver.encoded_len(), dst, |dst| deliver.encode(dst))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        <Self as Encoder<&Frame>>::encode(self, &frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_deliver_encodes_to_the_bytes_of_the_owned_one() {
        for len in [0, 1, 256, crate::frame::MAX_PAYLOAD_LEN] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = Frame::Deliver {
                sender: [7; 32],
                msg_id: [9; 16],
                timestamp_ms: 0x0102_0304_0506_0708,
                payload: payload.clone(),
            };
            let borrowed = DeliverRef {
                sender: &[7; 32],
                msg_id: &[9; 16],
                timestamp_ms: 0x0102_0304_0506_0708,
                payload: &payload,
            };
            let (mut owned, mut by_ref) = (BytesMut::new(), BytesMut::new());
            FrameCodec::default().encode(&frame, &mut owned).expect("owned");
            FrameCodec::default()
                .encode(borrowed, &mut by_ref)
                .expect("borrowed");
            assert_eq!(owned, by_ref, "payload of {len} bytes");
            assert_eq!(borrowed.encoded_len(), frame.encoded_len());
        }
        let long = vec![0; crate::frame::MAX_PAYLOAD_LEN + 1];
        let borrowed = DeliverRef {
            sender: &[7; 32],
            msg_id: &[9; 16],
            timestamp_ms: 0,
            payload: &long,
        };
        let refused = FrameCodec::default().encode(borrowed, &mut BytesMut::new());
        assert!(matches!(refused, Err(CodecError::Malformed(_))), "{refused:?}");
    }

    #[test]
    fn caps_configured_maximum_at_hard_limit() {
        assert_eq!(FrameCodec::new(usize::MAX).max_frame_len(), MAX_FRAME_LEN);
        assert_eq!(FrameCodec::new(1000).max_frame_len(), 1000);
        assert_eq!(FrameCodec::default().max_frame_len(), MAX_FRAME_LEN);
    }

    #[test]
    fn a_raised_limit_applies_to_a_frame_already_announced() {
        let mut codec = FrameCodec::new(crate::frame::AUTH_FRAME_LEN);
        let mut wire = BytesMut::new();
        FrameCodec::default()
            .encode(Frame::PublishName { claim: vec![7; 200] }, &mut wire)
            .expect("encode");
        let mut src = BytesMut::from(&wire[..LENGTH_PREFIX_LEN]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(CodecError::FrameTooLarge { len: 206, max: 98 })
        ));
        codec.set_max_frame_len(1024);
        src.extend_from_slice(&wire[LENGTH_PREFIX_LEN..]);
        assert_eq!(
            codec.decode(&mut src).expect("decodes"),
            Some(Frame::PublishName { claim: vec![7; 200] })
        );
        codec.set_max_frame_len(usize::MAX);
        assert_eq!(
            codec.max_frame_len(),
            MAX_FRAME_LEN,
            "never above the hard maximum"
        );
    }

    #[test]
    fn a_lowered_limit_refuses_before_reserving_the_body() {
        let mut codec = FrameCodec::default();
        codec.set_max_frame_len(crate::frame::AUTH_FRAME_LEN);
        let mut src = BytesMut::with_capacity(8);
        src.put_u32(128 * 1024);
        assert!(matches!(
            codec.decode(&mut src),
            Err(CodecError::FrameTooLarge {
                len: 131_072,
                max: 98
            })
        ));
        assert!(src.capacity() < 1024, "nothing reserved for the body");
    }

    #[test]
    fn reserves_no_more_than_the_announced_frame() {
        let mut codec = FrameCodec::new(1000);
        let mut src = BytesMut::new();
        src.put_u32(900);
        assert!(matches!(codec.decode(&mut src), Ok(None)));
        assert!(src.capacity() >= LENGTH_PREFIX_LEN + 900);
        assert!(src.capacity() < 64 * 1024);
    }

    #[test]
    fn reports_body_cut_inside_a_field_as_malformed() {
        let mut codec = FrameCodec::default();
        let mut src = BytesMut::new();
        src.put_u32(3);
        src.put_slice(&[1, 0x40, 0]); // Ping needs 8 nonce bytes
        assert!(matches!(
            codec.decode(&mut src),
            Err(CodecError::Malformed(DecodeError::Invalid { .. }))
        ));
    }

    #[test]
    fn refuses_to_encode_frame_over_configured_maximum() {
        let mut codec = FrameCodec::new(100);
        let frame = Frame::PublishName { claim: vec![0; 200] };
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(&frame, &mut dst),
            Err(CodecError::FrameTooLarge { max: 100, .. })
        ));
        assert!(dst.is_empty());
    }

    #[test]
    fn refuses_to_encode_field_over_its_limit() {
        let mut codec = FrameCodec::default();
        let frame = Frame::PublishName {
            claim: vec![0; crate::frame::MAX_CLAIM_LEN + 1],
        };
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(frame, &mut dst),
            Err(CodecError::Malformed(DecodeError::TooLong { .. }))
        ));
        assert!(dst.is_empty());
    }
}
