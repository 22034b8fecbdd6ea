//! A connection's read side: the frame codec over a read buffer that starts small and
//! grows once reads fill it. tokio-util gives every reader 8 KiB up front, which is most
//! of what an idle connection costs; a busy one is better served by a large buffer
//! (fewer reads for many small frames), so the buffer grows the first time a read fills
//! it and keeps that size.

use bytes::BytesMut;
use e2ee_protocol::codec::{CodecError, FrameCodec};
use e2ee_protocol::frame::Frame;
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

/// Read buffer of a new connection.
pub const READ_BUFFER_START: usize = 512;
/// Read buffer once the connection has filled the small one.
pub const READ_BUFFER_BUSY: usize = 16 * 1024;

/// [`FrameCodec`] that enlarges the read buffer of busy connections.
#[derive(Debug, Clone, Copy)]
pub struct InputCodec {
    frames: FrameCodec,
}

impl InputCodec {
    /// Frames of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            frames: FrameCodec::new(max_frame_len),
        }
    }

    /// A framed reader over `read` with the small starting buffer.
    pub fn reader<R: AsyncRead>(read: R, max_frame_len: usize) -> FramedRead<R, Self> {
        FramedRead::with_capacity(read, Self::new(max_frame_len), READ_BUFFER_START)
    }
}

impl Decoder for InputCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if src.len() == src.capacity() && src.capacity() < READ_BUFFER_BUSY {
            // The last read filled the buffer: more is waiting in the socket.
            src.reserve(READ_BUFFER_BUSY - src.len());
        }
        self.frames.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.frames.decode_eof(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use tokio_util::codec::Encoder;

    #[test]
    fn grows_only_when_a_read_filled_the_buffer() {
        let mut codec = InputCodec::new(1024);
        let mut wire = BytesMut::new();
        FrameCodec::default()
            .encode(Frame::Ping { nonce: 1 }, &mut wire)
            .expect("encode");
        let mut small = BytesMut::with_capacity(READ_BUFFER_START);
        small.put_slice(&wire);
        assert_eq!(
            codec.decode(&mut small).expect("decode"),
            Some(Frame::Ping { nonce: 1 })
        );
        assert!(
            small.capacity() < READ_BUFFER_BUSY,
            "a lone frame does not grow the buffer"
        );

        let mut full = BytesMut::with_capacity(wire.len());
        full.put_slice(&wire);
        assert_eq!(full.len(), full.capacity());
        assert_eq!(
            codec.decode(&mut full).expect("decode"),
            Some(Frame::Ping { nonce: 1 })
        );
        assert!(full.capacity() >= READ_BUFFER_BUSY - wire.len());
    }
}
