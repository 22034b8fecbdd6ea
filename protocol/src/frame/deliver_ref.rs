//! [`DeliverRef`]: a `Deliver` frame that borrows its payload.

use bytes::{BufMut, BytesMut};

use super::{max, put_bytes_u32, ty, FRAME_VERSION, MAX_PAYLOAD_LEN, MSG_ID_LEN};
use crate::consts::KEY_LEN;
use crate::error::DecodeError;

/// A `Deliver` frame that borrows its payload. It encodes to exactly the bytes of the
/// equal [`Frame::Deliver`] without copying the payload into one (the relay writes
/// stored messages with it).
#[derive(Debug, Clone, Copy)]
pub struct DeliverRef<'a> {
    /// The authenticated identity that sent it.
    pub sender: &'a [u8; 32],
    /// The sender's id for the message.
    pub msg_id: &'a [u8; 16],
    /// When the relay stored it, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The encrypted message, at most [`MAX_PAYLOAD_LEN`] bytes.
    pub payload: &'a [u8],
}

impl DeliverRef<'_> {
    /// Bytes of the fields for a payload of `payload_len` bytes.
    pub(super) fn fields_len(payload_len: usize) -> usize {
        KEY_LEN + MSG_ID_LEN + 8 + 4 + payload_len
    }

    /// As [`Frame::encoded_len`].
    pub fn encoded_len(&self) -> usize {
        2 + Self::fields_len(self.payload.len())
    }

    /// As [`Frame::validate`].
    pub fn validate(&self) -> Result<(), DecodeError> {
        max("payload", self.payload.len(), MAX_PAYLOAD_LEN)
    }

    /// As [`Frame::encode`].
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u8(FRAME_VERSION);
        dst.put_u8(ty::DELIVER);
        self.encode_fields(dst);
    }

    pub(super) fn encode_fields(&self, dst: &mut BytesMut) {
        dst.put_slice(self.sender);
        dst.put_slice(self.msg_id);
        dst.put_u64(self.timestamp_ms);
        put_bytes_u32(dst, self.payload);
    }
}
