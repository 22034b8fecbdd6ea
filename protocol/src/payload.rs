//! The application payload: the Double Ratchet plaintext, framed and padded.
//!
//! ```text
//! version u8 (= 1) || content_type u8 || message_id [16] || timestamp_ms u64be
//!   || body_len u32be || body || padding (zero bytes)
//! ```
//!
//! The whole plaintext is padded with zero bytes to the smallest of the [`BUCKETS`]
//! that holds it, so every ciphertext of a given message kind has one of ten sizes.
//! A receiver accepts any bucket size, checks that the padding is all zero and rejects
//! every other length. See `docs/PROTOCOL.md` for the byte-exact specification.

use std::fmt;

use thiserror::Error;

use crate::error::DecodeError;
use crate::reader::Reader;

/// Version byte of the payload framing.
pub const PAYLOAD_VERSION: u8 = 1;
/// Length of a message id.
pub const MESSAGE_ID_LEN: usize = 16;
/// Length of the fixed part before the body:
/// `version(1) || content_type(1) || message_id(16) || timestamp_ms(8) || body_len(4)`.
pub const PAYLOAD_HEADER_LEN: usize = 1 + 1 + MESSAGE_ID_LEN + 8 + 4;
/// The padded plaintext sizes, smallest first. Every encoded payload is exactly one of them.
pub const BUCKETS: [usize; 10] = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768];
/// The largest padded plaintext (the largest bucket).
pub const MAX_PAYLOAD_LEN: usize = BUCKETS[BUCKETS.len() - 1];
/// The largest body: what fits in the largest bucket after the header.
pub const MAX_BODY_LEN: usize = MAX_PAYLOAD_LEN - PAYLOAD_HEADER_LEN;

/// The smallest bucket that holds `len` bytes, or `None` when `len` exceeds the largest.
pub fn bucket_for(len: usize) -> Option<usize> {
    BUCKETS.iter().copied().find(|&bucket| bucket >= len)
}

/// What the body of a payload means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ContentType {
    /// A chat message; the body is UTF-8 text.
    Text = 1,
    /// A read/delivery receipt; the body is the 16-byte id of the acknowledged message.
    Receipt = 2,
    /// An application control message; the body is opaque to this crate.
    Control = 3,
}

impl ContentType {
    /// The wire byte of this content type.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl From<ContentType> for u8 {
    fn from(content_type: ContentType) -> u8 {
        content_type.as_u8()
    }
}

impl TryFrom<u8> for ContentType {
    type Error = DecodeError;

    fn try_from(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            1 => Ok(ContentType::Text),
            2 => Ok(ContentType::Receipt),
            3 => Ok(ContentType::Control),
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

/// Why a payload could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    /// The body does not fit in the largest bucket.
    #[error("body is {len} bytes, over the limit of {max}")]
    BodyTooLong {
        /// The body length.
        len: usize,
        /// The limit, [`MAX_BODY_LEN`].
        max: usize,
    },
    /// A [`ContentType::Text`] body is not valid UTF-8.
    #[error("text body is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the longest valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// A [`ContentType::Receipt`] body is not exactly one message id.
    #[error("receipt body is {len} bytes, expected {MESSAGE_ID_LEN}")]
    ReceiptLength {
        /// The body length.
        len: usize,
    },
}

/// One application message, as it lives inside the encryption.
///
/// `Debug` prints the body length only, never the body (it is plaintext).
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    /// What the body means.
    pub content_type: ContentType,
    /// The sender's id for this message, echoed by receipts.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// The sender's clock when the message was written, in ms since the Unix epoch.
    /// Asserted by the sender, not verified.
    pub timestamp_ms: u64,
    /// The content: UTF-8 text, a 16-byte message id, or opaque control bytes.
    pub body: Vec<u8>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("content_type", &self.content_type)
            .field("message_id", &self.message_id)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Payload {
    /// A text message.
    pub fn text(message_id: [u8; MESSAGE_ID_LEN], timestamp_ms: u64, text: &str) -> Self {
        Self {
            content_type: ContentType::Text,
            message_id,
            timestamp_ms,
            body: text.as_bytes().to_vec(),
        }
    }

    /// A receipt acknowledging the message whose id is `acknowledged`.
    pub fn receipt(
        message_id: [u8; MESSAGE_ID_LEN],
        timestamp_ms: u64,
        acknowledged: [u8; MESSAGE_ID_LEN],
    ) -> Self {
        Self {
            content_type: ContentType::Receipt,
            message_id,
            timestamp_ms,
            body: acknowledged.to_vec(),
        }
    }

    /// A control message with an opaque body.
    pub fn control(message_id: [u8; MESSAGE_ID_LEN], timestamp_ms: u64, body: Vec<u8>) -> Self {
        Self {
            content_type: ContentType::Control,
            message_id,
            timestamp_ms,
            body,
        }
    }

    /// The text of a [`ContentType::Text`] payload, `None` for other types or invalid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self.content_type {
            ContentType::Text => std::str::from_utf8(&self.body).ok(),
            _ => None,
        }
    }

    /// The acknowledged message id of a [`ContentType::Receipt`] payload.
    pub fn receipt_target(&self) -> Option<[u8; MESSAGE_ID_LEN]> {
        match self.content_type {
            ContentType::Receipt => self.body.as_slice().try_into().ok(),
            _ => None,
        }
    }

    /// Checks the body against its content type and the size limit.
    fn check(&self) -> Result<(), PayloadError> {
        if self.body.len() > MAX_BODY_LEN {
            return Err(PayloadError::BodyTooLong {
                len: self.body.len(),
                max: MAX_BODY_LEN,
            });
        }
        match self.content_type {
            ContentType::Text => {
                std::str::from_utf8(&self.body).map_err(|e| PayloadError::InvalidUtf8 {
                    valid_up_to: e.valid_up_to(),
                })?;
            }
            ContentType::Receipt if self.body.len() != MESSAGE_ID_LEN => {
                return Err(PayloadError::ReceiptLength { len: self.body.len() });
            }
            ContentType::Receipt | ContentType::Control => {}
        }
        Ok(())
    }

    /// Frames and pads the payload to the smallest bucket that holds it.
    ///
    /// Fails when the body is over [`MAX_BODY_LEN`], a text body is not UTF-8, or a
    /// receipt body is not exactly [`MESSAGE_ID_LEN`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        self.check()?;
        let too_long = || PayloadError::BodyTooLong {
            len: self.body.len(),
            max: MAX_BODY_LEN,
        };
        let padded_len = bucket_for(PAYLOAD_HEADER_LEN + self.body.len()).ok_or_else(too_long)?;
        let body_len = u32::try_from(self.body.len()).map_err(|_| too_long())?;

        let mut out = Vec::with_capacity(padded_len);
        out.push(PAYLOAD_VERSION);
        out.push(self.content_type.as_u8());
        out.extend_from_slice(&self.message_id);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&self.body);
        out.resize(padded_len, 0);
        Ok(out)
    }

    /// Parses a decrypted plaintext.
    ///
    /// Checks, in order: the version, the content type, that the body length is at most
    /// [`MAX_BODY_LEN`] and present ([`DecodeError::Incomplete`] otherwise), that the
    /// padding is all zero, that the total length is one of the [`BUCKETS`], and that
    /// the body fits its content type. Bytes after the body are padding, so extra input
    /// shows up as non-zero padding or a length that is not a bucket.
    pub fn decode(bytes: &[u8]) -> Result<Payload, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PAYLOAD_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let content_type = ContentType::try_from(r.u8()?)?;
        let message_id = r.array::<MESSAGE_ID_LEN>()?;
        let timestamp_ms = r.u64()?;
        let body = r.bytes_u32(MAX_BODY_LEN, "body")?;
        let padding = r.rest();

        if padding.iter().any(|&b| b != 0) {
            return Err(DecodeError::Invalid {
                field: "padding",
                reason: "padding is not all zero",
            });
        }
        if !BUCKETS.contains(&bytes.len()) {
            return Err(DecodeError::Invalid {
                field: "length",
                reason: "total length is not a padding bucket",
            });
        }
        match content_type {
            ContentType::Text if std::str::from_utf8(body).is_err() => {
                return Err(DecodeError::Invalid {
                    field: "body",
                    reason: "text is not valid UTF-8",
                });
            }
            ContentType::Receipt if body.len() != MESSAGE_ID_LEN => {
                return Err(DecodeError::Invalid {
                    field: "body",
                    reason: "receipt is not a 16-byte message id",
                });
            }
            _ => {}
        }

        Ok(Payload {
            content_type,
            message_id,
            timestamp_ms,
            body: body.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_len_and_max_body_are_consistent() {
        assert_eq!(PAYLOAD_HEADER_LEN, 30);
        assert_eq!(MAX_BODY_LEN, 32_738);
        assert_eq!(bucket_for(PAYLOAD_HEADER_LEN + MAX_BODY_LEN), Some(32_768));
    }

    #[test]
    fn picks_the_smallest_bucket() {
        assert_eq!(bucket_for(0), Some(64));
        assert_eq!(bucket_for(64), Some(64));
        assert_eq!(bucket_for(65), Some(128));
        assert_eq!(bucket_for(32_768), Some(32_768));
        assert_eq!(bucket_for(32_769), None);
    }

    #[test]
    fn encodes_a_text_message_byte_exact() -> Result<(), PayloadError> {
        let bytes = Payload::text([0xAA; 16], 0x0102_0304_0506_0708, "hi").encode()?;
        let mut expected = vec![0x01, 0x01];
        expected.extend_from_slice(&[0xAA; 16]);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"hi");
        expected.resize(64, 0);
        assert_eq!(bytes, expected);
        Ok(())
    }

    #[test]
    fn debug_does_not_print_the_body() {
        let debug = format!("{:?}", Payload::text([0; 16], 0, "secret words"));
        assert!(!debug.contains("secret"));
        assert!(debug.contains("body_len: 12"));
    }
}
