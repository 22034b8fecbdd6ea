//! The two encrypted message encodings: PreKey (carries the X3DH fields) and Normal,
//! each in crypto v1 (types 0x01, 0x02) and v2 (0x03, 0x04: salted header),
//! docs/PROTOCOL.md 2.5.

use crate::consts::{
    MAX_MESSAGE_LEN, MSG_TYPE_NORMAL, MSG_TYPE_NORMAL_V2, MSG_TYPE_PREKEY, MSG_TYPE_PREKEY_V2,
    PREKEY_FLAG_OPK, TAG_LEN,
};
use crate::error::DecodeError;
use crate::header::Header;
use crate::identity::IdentityKey;
use crate::keys::PublicKey;
use crate::reader::Reader;

/// `type || flags || IK_A || EK_A || SPK_B || [OPK_B] || header || ct`, type 0x01 (v1)
/// or 0x03 (v2) as the header has no salt or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyMessage {
    /// The initiator's identity key IK_A.
    pub identity: IdentityKey,
    /// The initiator's ephemeral key EK_A.
    pub base_key: PublicKey,
    /// The responder's signed prekey that was used.
    pub signed_prekey: PublicKey,
    /// The responder's one-time prekey that was used, if any.
    pub one_time_prekey: Option<PublicKey>,
    /// The ratchet header and ciphertext.
    pub inner: NormalMessage,
}

/// `type || header || ct`, type 0x02 (v1) or 0x04 (v2) as the header has no salt or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalMessage {
    /// The Double Ratchet header.
    pub header: Header,
    /// Ciphertext || 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Either encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A message that can start a session.
    PreKey(Box<PreKeyMessage>),
    /// A message of an established session.
    Normal(NormalMessage),
}

impl NormalMessage {
    fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(&self.ciphertext);
    }

    fn read_body(reader: &mut Reader<'_>, salted: bool) -> Result<Self, DecodeError> {
        let header = Header::read(reader, salted)?;
        let ciphertext = reader.rest();
        if ciphertext.len() < TAG_LEN {
            return Err(DecodeError::Invalid {
                field: "ciphertext",
                reason: "shorter than the authentication tag",
            });
        }
        Ok(Self {
            header,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// True if `wire` starts with the type byte of a PreKey message (v1 or v2): the only
/// messages that can start a session or use a one-time prekey.
pub fn is_prekey_message(wire: &[u8]) -> bool {
    matches!(wire.first(), Some(&(MSG_TYPE_PREKEY | MSG_TYPE_PREKEY_V2)))
}

impl Message {
    /// The Double Ratchet header of either encoding.
    pub fn header(&self) -> &Header {
        match self {
            Message::Normal(m) => &m.header,
            Message::PreKey(m) => &m.inner.header,
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        match self {
            Message::Normal(m) => {
                out.push(if m.header.salt.is_some() {
                    MSG_TYPE_NORMAL_V2
                } else {
                    MSG_TYPE_NORMAL
                });
                m.write_body(&mut out);
            }
            Message::PreKey(m) => {
                out.push(if m.inner.header.salt.is_some() {
                    MSG_TYPE_PREKEY_V2
                } else {
                    MSG_TYPE_PREKEY
                });
                out.push(if m.one_time_prekey.is_some() {
                    PREKEY_FLAG_OPK
                } else {
                    0
                });
                out.extend_from_slice(m.identity.as_bytes());
                out.extend_from_slice(m.base_key.as_bytes());
                out.extend_from_slice(m.signed_prekey.as_bytes());
                if let Some(opk) = &m.one_time_prekey {
                    out.extend_from_slice(opk.as_bytes());
                }
                m.inner.write_body(&mut out);
            }
        }
        out
    }

    /// Length of [`Message::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        match self {
            Message::Normal(m) => 1 + m.header.encoded_len() + m.ciphertext.len(),
            Message::PreKey(m) => {
                let opk = if m.one_time_prekey.is_some() { 32 } else { 0 };
                2 + 96 + opk + m.inner.header.encoded_len() + m.inner.ciphertext.len()
            }
        }
    }

    /// Parses wire bytes. Keys are checked (the identity key fully); the ciphertext
    /// must at least hold a tag.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong {
                field: "message",
                len: bytes.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut reader = Reader::new(bytes);
        match reader.u8()? {
            kind @ (MSG_TYPE_NORMAL | MSG_TYPE_NORMAL_V2) => Ok(Message::Normal(NormalMessage::read_body(
                &mut reader,
                kind == MSG_TYPE_NORMAL_V2,
            )?)),
            kind @ (MSG_TYPE_PREKEY | MSG_TYPE_PREKEY_V2) => {
                let flags = reader.u8()?;
                if flags & !PREKEY_FLAG_OPK != 0 {
                    return Err(DecodeError::Invalid {
                        field: "flags",
                        reason: "reserved bits set",
                    });
                }
                let identity =
                    IdentityKey::from_bytes(reader.array()?).map_err(|_| DecodeError::Invalid {
                        field: "identity",
                        reason: "not a valid Ed25519 public key",
                    })?;
                let base_key = PublicKey::from_bytes(reader.array()?);
                let signed_prekey = PublicKey::from_bytes(reader.array()?);
                let one_time_prekey = if flags & PREKEY_FLAG_OPK != 0 {
                    Some(PublicKey::from_bytes(reader.array()?))
                } else {
                    None
                };
                let inner = NormalMessage::read_body(&mut reader, kind == MSG_TYPE_PREKEY_V2)?;
                Ok(Message::PreKey(Box::new(PreKeyMessage {
                    identity,
                    base_key,
                    signed_prekey,
                    one_time_prekey,
                    inner,
                })))
            }
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_message_type() {
        assert_eq!(Message::decode(&[0x06; 80]), Err(DecodeError::UnknownType(6)));
        // The reset request has its own decoder (`session_reset`).
        assert_eq!(Message::decode(&[0x05; 80]), Err(DecodeError::UnknownType(5)));
    }

    #[test]
    fn a_v2_message_round_trips_with_its_salt_and_v1_bytes_do_not_read_as_v2() {
        let header = Header {
            ratchet_key: PublicKey::from_bytes([7; 32]),
            previous_chain_len: 3,
            n: 9,
            salt: Some([0xA5; 16]),
        };
        let message = Message::Normal(NormalMessage {
            header,
            ciphertext: vec![1; 20],
        });
        let wire = message.encode();
        assert_eq!(wire.len(), 1 + 56 + 20);
        assert_eq!(wire[0], MSG_TYPE_NORMAL_V2);
        assert_eq!(&wire[41..57], &[0xA5; 16]);
        assert_eq!(Message::decode(&wire), Ok(message.clone()));
        let mut as_v1 = wire.clone();
        as_v1[0] = MSG_TYPE_NORMAL;
        let read = Message::decode(&as_v1).expect("decodes as v1");
        assert_eq!(read.header().salt, None);
        assert_ne!(read, message);
    }

    #[test]
    fn rejects_reserved_prekey_flags() {
        assert!(matches!(
            Message::decode(&[0x01, 0x02]),
            Err(DecodeError::Invalid { field: "flags", .. })
        ));
    }

    #[test]
    fn truncated_header_is_incomplete() {
        assert!(Message::decode(&[0x02, 1, 2, 3]).is_err_and(|e| e.is_incomplete()));
    }

    #[test]
    fn rejects_ciphertext_shorter_than_tag() {
        let mut bytes = vec![0x02];
        bytes.extend_from_slice(&[9u8; 40 + 15]);
        assert!(matches!(
            Message::decode(&bytes),
            Err(DecodeError::Invalid {
                field: "ciphertext",
                ..
            })
        ));
    }
}
