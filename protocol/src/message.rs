//! The two encrypted message encodings: PreKey (carries the X3DH fields) and Normal.

use crate::consts::{MAX_MESSAGE_LEN, MSG_TYPE_NORMAL, MSG_TYPE_PREKEY, PREKEY_FLAG_OPK, TAG_LEN};
use crate::error::DecodeError;
use crate::header::Header;
use crate::identity::IdentityKey;
use crate::keys::PublicKey;
use crate::reader::Reader;

/// `0x01 || flags || IK_A || EK_A || SPK_B || [OPK_B] || header || ct`.
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

/// `0x02 || header || ct`.
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

    fn read_body(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let header = Header::read(reader)?;
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

impl Message {
    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        match self {
            Message::Normal(m) => {
                out.push(MSG_TYPE_NORMAL);
                m.write_body(&mut out);
            }
            Message::PreKey(m) => {
                out.push(MSG_TYPE_PREKEY);
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
            Message::Normal(m) => 1 + 40 + m.ciphertext.len(),
            Message::PreKey(m) => {
                2 + 96 + if m.one_time_prekey.is_some() { 32 } else { 0 } + 40 + m.inner.ciphertext.len()
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
            MSG_TYPE_NORMAL => Ok(Message::Normal(NormalMessage::read_body(&mut reader)?)),
            MSG_TYPE_PREKEY => {
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
                let inner = NormalMessage::read_body(&mut reader)?;
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
        assert_eq!(Message::decode(&[0x03; 80]), Err(DecodeError::UnknownType(3)));
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
