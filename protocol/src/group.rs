//! Group chats over MLS (RFC 9420): what the relay, as the group's delivery service,
//! reads of an MLS message, and how group traffic is addressed (docs/PROTOCOL.md 8).
//!
//! The relay never runs MLS. It reads the plaintext header every MLS handshake and
//! application message carries (RFC 9420 §6: `group_id`, `epoch`, `content_type`) to keep
//! each group's messages in one total order, and it fans one upload out to every member's
//! queue. Members deliver MLS messages to each other inside `Deliver` payloads that start
//! with [`MSG_TYPE_MLS`].

use sha2::{Digest, Sha256};

use crate::error::DecodeError;
use crate::reader::Reader;

/// First byte of a `Deliver` payload that carries an MLS message (`MSG_TYPE_MLS ||
/// MLSMessage`); pairwise messages start with 0x01..=0x05.
pub const MSG_TYPE_MLS: u8 = 0x10;
/// The MLS protocol version this project speaks: `mls10` (RFC 9420 §6).
pub const MLS_VERSION_10: u16 = 1;
/// The one MLS ciphersuite groups use: `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519`
/// (RFC 9420 §17.1, value 0x0003).
pub const MLS_CIPHERSUITE: u16 = 0x0003;
/// The longest group id the relay accepts, in bytes (agents use 16 random bytes).
pub const MAX_GROUP_ID_LEN: usize = 64;
/// The most members a group may have at the relay.
pub const MAX_GROUP_MEMBERS: usize = 1000;
/// The largest MLS message in `GroupSend` and `GroupCommit` (commit and Welcome alike):
/// one byte less than a `Deliver` payload (`frame::MAX_PAYLOAD_LEN`, 64 KiB), which adds
/// [`MSG_TYPE_MLS`].
pub const MAX_MLS_MESSAGE_LEN: usize = 64 * 1024 - 1;
/// The largest KeyPackage (an `MLSMessage` of wire format `mls_key_package`) in
/// `PublishKeyPackages` and `KeyPackage`.
pub const MAX_KEY_PACKAGE_LEN: usize = 2048;
/// The most KeyPackages one `PublishKeyPackages` carries.
pub const MAX_KEY_PACKAGES: usize = 100;
/// Domain separation prefix of [`fan_out_id`].
pub const FAN_OUT_CONTEXT: &[u8] = b"e2ee-chat/group-fan-out/v1";

/// `WireFormat` (RFC 9420 §6): how an `MLSMessage` is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// `mls_public_message` (1): signed, not encrypted.
    PublicMessage,
    /// `mls_private_message` (2): encrypted; group id, epoch and content type in clear.
    PrivateMessage,
    /// `mls_welcome` (3).
    Welcome,
    /// `mls_group_info` (4).
    GroupInfo,
    /// `mls_key_package` (5).
    KeyPackage,
}

impl WireFormat {
    fn from_u16(value: u16) -> Result<Self, DecodeError> {
        Ok(match value {
            1 => WireFormat::PublicMessage,
            2 => WireFormat::PrivateMessage,
            3 => WireFormat::Welcome,
            4 => WireFormat::GroupInfo,
            5 => WireFormat::KeyPackage,
            _ => {
                return Err(DecodeError::Invalid {
                    field: "wire_format",
                    reason: "not an RFC 9420 wire format",
                })
            }
        })
    }
}

/// `ContentType` (RFC 9420 §6) of a handshake or application message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `application` (1): a chat message.
    Application,
    /// `proposal` (2): a proposal, applied only by a later commit.
    Proposal,
    /// `commit` (3): moves the group to the next epoch.
    Commit,
}

/// What the relay reads of a public or private MLS message: its plaintext header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsHeader {
    /// Public or private message.
    pub wire_format: WireFormat,
    /// The group, 1..=[`MAX_GROUP_ID_LEN`] bytes.
    pub group_id: Vec<u8>,
    /// The epoch the message was made in.
    pub epoch: u64,
    /// Application, proposal or commit.
    pub content_type: ContentType,
}

/// The wire format of any `MLSMessage` (its first four bytes: version `mls10`, wire
/// format). Errors: [`DecodeError::Incomplete`], or `Invalid` for another version or an
/// unknown wire format.
pub fn wire_format(message: &[u8]) -> Result<WireFormat, DecodeError> {
    let mut r = Reader::new(message);
    if r.u16()? != MLS_VERSION_10 {
        return Err(DecodeError::Invalid {
            field: "version",
            reason: "not mls10",
        });
    }
    WireFormat::from_u16(r.u16()?)
}

/// Reads the header of an `MLSMessage` that is a `PublicMessage` or a `PrivateMessage`
/// (RFC 9420 §6.2, §6.3): `group_id`, `epoch`, and `content_type`. Does not verify or
/// decrypt anything. Errors: a truncated header, a variable-length integer that is not
/// in its shortest form (RFC 9420 §2.1.2), a group id that is empty or longer than
/// [`MAX_GROUP_ID_LEN`], another wire format, an unknown sender or content type.
pub fn read_header(message: &[u8]) -> Result<MlsHeader, DecodeError> {
    let wire_format = wire_format(message)?;
    let mut r = Reader::new(&message[4..]);
    let group_id = read_vector(&mut r, MAX_GROUP_ID_LEN, "group_id")?;
    if group_id.is_empty() {
        return Err(DecodeError::Invalid {
            field: "group_id",
            reason: "empty",
        });
    }
    let epoch = r.u64()?;
    let content_type = match wire_format {
        WireFormat::PublicMessage => {
            // Sender: sender_type u8, then a u32 index for `member` and `external`.
            match r.u8()? {
                1 | 2 => {
                    r.u32()?;
                }
                3 | 4 => {}
                _ => {
                    return Err(DecodeError::Invalid {
                        field: "sender_type",
                        reason: "not an RFC 9420 sender type",
                    })
                }
            }
            read_vector(&mut r, usize::MAX, "authenticated_data")?;
            r.u8()?
        }
        WireFormat::PrivateMessage => r.u8()?,
        _ => {
            return Err(DecodeError::Invalid {
                field: "wire_format",
                reason: "not a public or private message",
            })
        }
    };
    let content_type = match content_type {
        1 => ContentType::Application,
        2 => ContentType::Proposal,
        3 => ContentType::Commit,
        _ => {
            return Err(DecodeError::Invalid {
                field: "content_type",
                reason: "not application, proposal or commit",
            })
        }
    };
    Ok(MlsHeader {
        wire_format,
        group_id: group_id.to_vec(),
        epoch,
        content_type,
    })
}

/// Reads an RFC 9420 §2.1.2 variable-size vector `opaque data<V>`: a length of 1, 2 or
/// 4 bytes (the top two bits of the first byte give the size), in its shortest form.
fn read_vector<'a>(r: &mut Reader<'a>, max: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
    let first = r.u8()?;
    let (len, min) = match first >> 6 {
        0 => (u32::from(first & 0x3f), 0),
        1 => ((u32::from(first & 0x3f) << 8) | u32::from(r.u8()?), 64),
        2 => {
            let rest = r.array::<3>()?;
            (
                (u32::from(first & 0x3f) << 24)
                    | (u32::from(rest[0]) << 16)
                    | (u32::from(rest[1]) << 8)
                    | u32::from(rest[2]),
                16384,
            )
        }
        _ => {
            return Err(DecodeError::Invalid {
                field,
                reason: "length prefix 0b11 is reserved",
            })
        }
    };
    if len < min {
        return Err(DecodeError::Invalid {
            field,
            reason: "length not in its shortest form",
        });
    }
    let len = len as usize;
    if len > max {
        return Err(DecodeError::TooLong { field, len, max });
    }
    r.take(len)
}

/// The message id under which one group message is queued for one recipient:
/// `SHA-256(FAN_OUT_CONTEXT || msg_id || recipient)[..16]`. A resent upload maps to the
/// same ids, so the relay's duplicate check holds per recipient; distinct recipients
/// get distinct ids, so one upload never collides with itself (docs/PROTOCOL.md 8.3).
pub fn fan_out_id(msg_id: &[u8; 16], recipient: &[u8; 32]) -> [u8; 16] {
    let digest = Sha256::new()
        .chain_update(FAN_OUT_CONTEXT)
        .chain_update(msg_id)
        .chain_update(recipient)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The `Deliver` payload that carries `message`: `MSG_TYPE_MLS || message`.
pub fn mls_payload(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + message.len());
    out.push(MSG_TYPE_MLS);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(group_id: &[u8], epoch: u64, content_type: u8) -> Vec<u8> {
        let mut m = vec![0, 1, 0, 2, group_id.len() as u8];
        m.extend_from_slice(group_id);
        m.extend_from_slice(&epoch.to_be_bytes());
        m.push(content_type);
        m.extend_from_slice(&[0, 0, 0]);
        m
    }

    #[test]
    fn a_private_message_header_is_read() {
        let header = read_header(&private(b"0123456789abcdef", 7, 3)).expect("header");
        assert_eq!(header.wire_format, WireFormat::PrivateMessage);
        assert_eq!(header.group_id, b"0123456789abcdef");
        assert_eq!(header.epoch, 7);
        assert_eq!(header.content_type, ContentType::Commit);
    }

    #[test]
    fn a_public_message_header_skips_sender_and_authenticated_data() {
        let mut m = vec![0, 1, 0, 1, 2, b'g', b'1'];
        m.extend_from_slice(&3u64.to_be_bytes());
        m.extend_from_slice(&[1, 0, 0, 0, 4]); // member, leaf 4
        m.extend_from_slice(&[0x40, 0x40]); // 64 bytes of authenticated data, 2-byte length
        m.extend_from_slice(&[9; 64]);
        m.push(2);
        let header = read_header(&m).expect("header");
        assert_eq!(header.epoch, 3);
        assert_eq!(header.content_type, ContentType::Proposal);
    }

    #[test]
    fn bad_headers_are_refused() {
        // another version, a welcome, an empty group id, unknown content type, a
        // non-minimal length, a group id over the limit, truncation at every byte
        let mut other_version = private(b"g", 1, 1);
        other_version[1] = 2;
        let mut welcome = private(b"g", 1, 1);
        welcome[3] = 3;
        let non_minimal = {
            let mut m = vec![0, 1, 0, 2, 0x40, 0x01, b'g'];
            m.extend_from_slice(&1u64.to_be_bytes());
            m.push(1);
            m
        };
        let long = private(&[7; 65], 1, 1);
        for bad in [
            other_version,
            welcome,
            private(b"", 1, 1),
            private(b"g", 1, 4),
            private(b"g", 1, 0),
            non_minimal,
            long,
        ] {
            assert!(read_header(&bad).is_err(), "{bad:?}");
        }
        let good = private(b"group", 2, 1);
        for cut in 0..good.len() - 3 {
            assert!(read_header(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn fan_out_ids_differ_per_recipient_and_repeat_per_upload() {
        let a = fan_out_id(&[1; 16], &[2; 32]);
        assert_eq!(a, fan_out_id(&[1; 16], &[2; 32]));
        assert_ne!(a, fan_out_id(&[1; 16], &[3; 32]));
        assert_ne!(a, fan_out_id(&[4; 16], &[2; 32]));
        // The known answer of docs/PROTOCOL.md 8.3.
        assert_eq!(
            a,
            [
                0x6a, 0x0b, 0x40, 0xc2, 0x0e, 0x9a, 0x34, 0x0a, 0x83, 0xc8, 0x78, 0x5d, 0x43, 0x6b, 0x2c,
                0x48
            ]
        );
    }
}
