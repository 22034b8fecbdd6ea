//! A connection's read side: the frame codec over a read buffer that starts small and
//! grows once reads fill it. tokio-util gives every reader 8 KiB up front, which is most
//! of what an idle connection costs; a busy one is better served by a large buffer
//! (fewer reads for many small frames), so the buffer grows the first time a read fills
//! it and keeps that size.
//!
//! The largest frame accepted depends on the connection's state: until it is
//! authenticated the only valid frame is `Auth`, so no longer body is read then
//! ([`FrameLimit::before_login`]); the connection raises the limit once it has
//! authenticated (docs/PROTOCOL.md 1.2). The buffer does not grow before that either.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use e2ee_protocol::codec::{CodecError, FrameCodec};
use e2ee_protocol::frame::{Frame, AUTH_FRAME_LEN};
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

/// Read buffer of a new connection.
pub const READ_BUFFER_START: usize = 512;
/// Read buffer once the connection has filled the small one.
pub const READ_BUFFER_BUSY: usize = 16 * 1024;

/// The largest frame body a connection reads now, shared between the connection, which
/// sets it, and its reader, which checks every length prefix against it.
#[derive(Debug, Clone)]
pub struct FrameLimit(Arc<AtomicUsize>);

impl FrameLimit {
    /// The limit of a new connection: an `Auth` frame's body,
    /// [`e2ee_protocol::frame::AUTH_FRAME_LEN`] bytes.
    pub fn before_login() -> Self {
        Self(Arc::new(AtomicUsize::new(AUTH_FRAME_LEN)))
    }

    /// Sets the limit, from the next frame on.
    pub fn set(&self, max_frame_len: usize) {
        self.0.store(max_frame_len, Ordering::Relaxed);
    }

    /// The limit now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// [`FrameCodec`] that enlarges the read buffer of busy connections and reads frames up
/// to the connection's [`FrameLimit`].
#[derive(Debug, Clone)]
pub struct InputCodec {
    frames: FrameCodec,
    limit: FrameLimit,
}

impl InputCodec {
    /// Frames of at most `limit` bytes, whatever it is when each frame is read.
    pub fn new(limit: FrameLimit) -> Self {
        Self {
            frames: FrameCodec::new(limit.get()),
            limit,
        }
    }

    /// A framed reader over `read` with the small starting buffer.
    pub fn reader<R: AsyncRead>(read: R, limit: FrameLimit) -> FramedRead<R, Self> {
        FramedRead::with_capacity(read, Self::new(limit), READ_BUFFER_START)
    }
}

impl Decoder for InputCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let max = self.limit.get();
        self.frames.set_max_frame_len(max);
        if src.len() == src.capacity() && src.capacity() < READ_BUFFER_BUSY && max > READ_BUFFER_START {
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

    fn limited(max: usize) -> InputCodec {
        let limit = FrameLimit::before_login();
        limit.set(max);
        InputCodec::new(limit)
    }

    #[test]
    fn grows_only_when_a_read_filled_the_buffer() {
        let mut codec = limited(1024);
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

    #[test]
    fn reads_no_body_longer_than_auth_before_login_and_then_up_to_the_limit_set() {
        let limit = FrameLimit::before_login();
        let mut codec = InputCodec::new(limit.clone());
        let mut src = BytesMut::with_capacity(READ_BUFFER_START);
        src.put_u32(128 * 1024);
        src.put_slice(&[0; READ_BUFFER_START - 4]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(CodecError::FrameTooLarge {
                len: 131_072,
                max: AUTH_FRAME_LEN
            })
        ));
        assert!(src.capacity() < READ_BUFFER_BUSY, "no growth before login");

        let mut wire = BytesMut::new();
        let auth = Frame::Auth {
            identity: [1; 32],
            signature: [2; 64],
        };
        FrameCodec::default()
            .encode(auth.clone(), &mut wire)
            .expect("encode");
        let mut codec = InputCodec::new(FrameLimit::before_login());
        let mut src = wire.clone();
        assert_eq!(codec.decode(&mut src).expect("an Auth fits"), Some(auth));

        let mut codec = InputCodec::new(limit.clone());
        let name = Frame::PublishName { claim: vec![3; 500] };
        let mut wire = BytesMut::new();
        FrameCodec::default()
            .encode(name.clone(), &mut wire)
            .expect("encode");
        let mut src = wire.clone();
        assert!(matches!(
            codec.decode(&mut src),
            Err(CodecError::FrameTooLarge { .. })
        ));
        limit.set(128 * 1024);
        let mut src = wire;
        assert_eq!(codec.decode(&mut src).expect("after login"), Some(name));
    }
}
