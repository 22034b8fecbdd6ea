//! Hex encodings for keys, ids and bytes in the JSON state files (serde `with` modules).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

fn array<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let text = String::deserialize(d)?;
    let mut out = [0u8; N];
    hex::decode_to_slice(&text, &mut out)
        .map_err(|e| D::Error::custom(format!("expected {} hex characters: {e}", 2 * N)))?;
    Ok(out)
}

pub(crate) mod identity {
    use e2ee_protocol::identity::IdentityKey;

    use super::*;

    pub fn serialize<S: Serializer>(key: &IdentityKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key.as_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IdentityKey, D::Error> {
        IdentityKey::from_bytes(array(d)?).map_err(|_| D::Error::custom("not a valid identity key"))
    }
}

pub(crate) mod msg_id {
    use super::*;

    pub fn serialize<S: Serializer>(id: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(id))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        array(d)
    }
}

pub(crate) mod msg_ids {
    use std::collections::VecDeque;

    use super::*;

    pub fn serialize<S: Serializer>(ids: &VecDeque<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<[u8; 16]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|text| {
                let mut out = [0u8; 16];
                hex::decode_to_slice(&text, &mut out)
                    .map_err(|e| D::Error::custom(format!("message id: expected 32 hex characters: {e}")))?;
                Ok(out)
            })
            .collect()
    }
}

pub(crate) mod public_keys {
    use e2ee_protocol::keys::PublicKey;

    use super::*;

    pub fn serialize<S: Serializer>(keys: &[PublicKey], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(keys.iter().map(|k| hex::encode(k.as_bytes())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PublicKey>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|text| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(&text, &mut out)
                    .map_err(|e| D::Error::custom(format!("public key: expected 64 hex characters: {e}")))?;
                Ok(PublicKey::from_bytes(out))
            })
            .collect()
    }
}

pub(crate) mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(|e| D::Error::custom(format!("hex bytes: {e}")))
    }
}
