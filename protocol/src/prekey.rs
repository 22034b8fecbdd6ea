//! Signed and one-time prekeys: the public bundle a peer fetches, and the owner's store
//! of private prekeys (current and previous signed prekey, unused one-time prekeys).

use std::collections::{BTreeMap, VecDeque};

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::consts::{KEY_LEN, MAX_BUNDLE_OPKS, SIGNATURE_LEN, SPK_SIG_CONTEXT};
use crate::error::{CryptoError, DecodeError};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::keys::{KeyPair, PrivateKey, PublicKey};
use crate::reader::Reader;

/// How many base keys (EK_A) of accepted PreKey messages are remembered, so a replayed
/// PreKey message cannot start a second session.
pub const REMEMBERED_BASE_KEYS: usize = 4096;

/// The bytes the signed-prekey signature covers.
pub fn spk_signature_message(spk: &PublicKey) -> [u8; 53] {
    let mut out = [0u8; 53];
    out[..21].copy_from_slice(SPK_SIG_CONTEXT);
    out[21..].copy_from_slice(spk.as_bytes());
    out
}

/// A peer's public prekey bundle: `IK || SPK || SIG || count u16be || OPK × count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The owner's identity key.
    pub identity: IdentityKey,
    /// The signed prekey.
    pub signed_prekey: PublicKey,
    /// Ed25519 signature by the identity over the signed prekey.
    pub signature: [u8; SIGNATURE_LEN],
    /// One-time prekeys (a fetched bundle carries at most one).
    pub one_time_prekeys: Vec<PublicKey>,
}

impl PreKeyBundle {
    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(KEY_LEN * 2 + SIGNATURE_LEN + 2 + KEY_LEN * self.one_time_prekeys.len());
        out.extend_from_slice(self.identity.as_bytes());
        out.extend_from_slice(self.signed_prekey.as_bytes());
        out.extend_from_slice(&self.signature);
        let count = u16::try_from(self.one_time_prekeys.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for opk in self.one_time_prekeys.iter().take(usize::from(count)) {
            out.extend_from_slice(opk.as_bytes());
        }
        out
    }

    /// Parses wire bytes (structure and identity key only; see [`PreKeyBundle::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let identity = IdentityKey::from_bytes(reader.array()?).map_err(|_| DecodeError::Invalid {
            field: "identity",
            reason: "not a valid Ed25519 public key",
        })?;
        let signed_prekey = PublicKey::from_bytes(reader.array()?);
        let signature = reader.array()?;
        let count = usize::from(reader.u16()?);
        if count > MAX_BUNDLE_OPKS {
            return Err(DecodeError::TooLong {
                field: "one_time_prekeys",
                len: count,
                max: MAX_BUNDLE_OPKS,
            });
        }
        let mut one_time_prekeys = Vec::with_capacity(count);
        for _ in 0..count {
            one_time_prekeys.push(PublicKey::from_bytes(reader.array()?));
        }
        reader.finish()?;
        Ok(Self {
            identity,
            signed_prekey,
            signature,
            one_time_prekeys,
        })
    }

    /// Verifies the signed-prekey signature (strict Ed25519).
    pub fn verify(&self) -> Result<(), CryptoError> {
        self.identity
            .verify(&spk_signature_message(&self.signed_prekey), &self.signature)
    }

    /// Decodes and verifies in one step.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bundle = Self::decode(bytes)?;
        bundle.verify()?;
        Ok(bundle)
    }

    /// A copy carrying only the given one-time prekey (what a relay hands out).
    pub fn with_one_time_prekey(&self, opk: Option<PublicKey>) -> Self {
        Self {
            one_time_prekeys: opk.into_iter().collect(),
            ..self.clone()
        }
    }
}

/// A signed prekey pair with its signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedPreKey {
    pair: KeyPair,
    signature: Signature64,
}

/// A 64-byte signature that serde can carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Signature64 {
    r: [u8; 32],
    s: [u8; 32],
}

impl Signature64 {
    fn new(bytes: [u8; SIGNATURE_LEN]) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&bytes[..32]);
        s.copy_from_slice(&bytes[32..]);
        Self { r, s }
    }

    fn bytes(&self) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }
}

impl SignedPreKey {
    /// Signs `pair` with `identity`.
    pub fn new(identity: &IdentityKeyPair, pair: KeyPair) -> Self {
        let signature = identity.sign(&spk_signature_message(pair.public_key()));
        Self {
            pair,
            signature: Signature64::new(signature),
        }
    }

    /// The key pair.
    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The signature bytes.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        self.signature.bytes()
    }
}

/// The owner's private prekeys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreKeyStore {
    current: SignedPreKey,
    previous: Option<SignedPreKey>,
    #[serde(with = "key_map")]
    one_time: BTreeMap<PublicKey, PrivateKey>,
    seen_base_keys: VecDeque<PublicKey>,
}

impl PreKeyStore {
    /// A store with a fresh signed prekey and `one_time` one-time prekeys.
    pub fn generate(identity: &IdentityKeyPair, one_time: usize, rng: &mut impl CryptoRngCore) -> Self {
        let mut store = Self::from_parts(SignedPreKey::new(identity, KeyPair::generate(rng)), Vec::new());
        store.generate_one_time(one_time, rng);
        store
    }

    /// A store from given keys (tests and vectors).
    pub fn from_parts(signed: SignedPreKey, one_time: Vec<KeyPair>) -> Self {
        Self {
            current: signed,
            previous: None,
            one_time: one_time
                .into_iter()
                .map(|pair| (*pair.public_key(), pair.private_key().clone()))
                .collect(),
            seen_base_keys: VecDeque::new(),
        }
    }

    /// Adds `count` fresh one-time prekeys and returns their public keys.
    pub fn generate_one_time(&mut self, count: usize, rng: &mut impl CryptoRngCore) -> Vec<PublicKey> {
        (0..count)
            .map(|_| {
                let pair = KeyPair::generate(rng);
                let public = *pair.public_key();
                self.one_time.insert(public, pair.private_key().clone());
                public
            })
            .collect()
    }

    /// Replaces the signed prekey; the old one stays usable as "previous".
    pub fn rotate_signed(&mut self, identity: &IdentityKeyPair, rng: &mut impl CryptoRngCore) {
        let next = SignedPreKey::new(identity, KeyPair::generate(rng));
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }

    /// The full public bundle to publish (all unused one-time prekeys).
    pub fn bundle(&self, identity: &IdentityKey) -> PreKeyBundle {
        PreKeyBundle {
            identity: *identity,
            signed_prekey: *self.current.pair.public_key(),
            signature: self.current.signature(),
            one_time_prekeys: self.one_time.keys().copied().collect(),
        }
    }

    /// The signed prekey pair with this public key, current or previous.
    pub fn signed_prekey(&self, public: &PublicKey) -> Option<&KeyPair> {
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .map(SignedPreKey::pair)
            .find(|pair| pair.public_key() == public)
    }

    /// The private one-time prekey with this public key, if unused.
    pub fn one_time_prekey(&self, public: &PublicKey) -> Option<&PrivateKey> {
        self.one_time.get(public)
    }

    /// Deletes a one-time prekey for good; true if it was there.
    pub fn remove_one_time(&mut self, public: &PublicKey) -> bool {
        self.one_time.remove(public).is_some()
    }

    /// How many unused one-time prekeys are held.
    pub fn one_time_count(&self) -> usize {
        self.one_time.len()
    }

    /// True if a PreKey message with this base key was already accepted.
    pub fn has_seen_base_key(&self, base_key: &PublicKey) -> bool {
        self.seen_base_keys.contains(base_key)
    }

    /// Remembers the base key of an accepted PreKey message.
    pub fn remember_base_key(&mut self, base_key: PublicKey) {
        if self.seen_base_keys.len() >= REMEMBERED_BASE_KEYS {
            self.seen_base_keys.pop_front();
        }
        self.seen_base_keys.push_back(base_key);
    }
}

/// Serializes the one-time prekey map as a list of pairs (JSON maps need string keys).
mod key_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::keys::{PrivateKey, PublicKey};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<PublicKey, PrivateKey>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<PublicKey, PrivateKey>, D::Error> {
        Ok(Vec::<(PublicKey, PrivateKey)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}
