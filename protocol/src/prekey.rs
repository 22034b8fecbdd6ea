//! Signed and one-time prekeys: the public bundle a peer fetches, and the owner's store
//! of private prekeys (current and retired signed prekeys, unused one-time prekeys, and
//! the base keys of every handshake accepted under a signed prekey that still exists).
//!
//! Replay rule (`docs/PROTOCOL.md` 2.6): the base key (EK_A) of every accepted PreKey
//! message is kept for as long as the signed prekey it was made against exists, so a
//! PreKey message can never be accepted twice; once its signed prekey is deleted, the
//! message cannot be decrypted at all. The store is sans-IO: the caller passes the
//! time (`now_ms`, ms since the Unix epoch) and decides when to rotate.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::consts::{KEY_LEN, MAX_BUNDLE_OPKS, SIGNATURE_LEN, SPK_SIG_CONTEXT};
use crate::error::{CryptoError, DecodeError};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::keys::{KeyPair, PrivateKey, PublicKey};
use crate::reader::Reader;

/// How many handshakes may be accepted under one signed prekey before its owner should
/// rotate it early ([`PreKeyStore::rotation_due`]): the base keys of accepted handshakes
/// are kept for the signed prekey's whole life, so this bounds what they cost under a
/// flood of handshakes (see [`MAX_RETIRED_SIGNED_PREKEYS`]).
pub const MAX_BASE_KEYS_PER_SIGNED_PREKEY: usize = 10_000;

/// How many retired signed prekeys are kept at most (each until its grace period ends);
/// a rotation past it deletes the oldest early. With the default 7-day rotation and
/// 14-day grace, two are retired at a time; the cap matters only under a handshake
/// flood, where it bounds the remembered base keys to about
/// `(1 + MAX_RETIRED_SIGNED_PREKEYS) × MAX_BASE_KEYS_PER_SIGNED_PREKEY`.
pub const MAX_RETIRED_SIGNED_PREKEYS: usize = 4;

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
    /// When it was made, ms since the Unix epoch (0 in stores written before this was
    /// recorded: such a key is due for rotation at once).
    #[serde(default)]
    created_ms: u64,
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
        Self::new_at(identity, pair, 0)
    }

    /// Signs `pair` with `identity`, made at `created_ms` (ms since the Unix epoch).
    pub fn new_at(identity: &IdentityKeyPair, pair: KeyPair, created_ms: u64) -> Self {
        let signature = identity.sign(&spk_signature_message(pair.public_key()));
        Self {
            pair,
            signature: Signature64::new(signature),
            created_ms,
        }
    }

    /// When it was made, ms since the Unix epoch (0 if unknown).
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The key pair.
    pub fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The signature bytes.
    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        self.signature.bytes()
    }

    /// A signed prekey as stored earlier (`pair`, `signature`, `created_ms` as read
    /// back from storage). The signature is not checked here: check it with
    /// [`SignedPreKey::verify`] against the owner's identity.
    pub fn from_stored(pair: KeyPair, signature: [u8; SIGNATURE_LEN], created_ms: u64) -> Self {
        Self {
            pair,
            signature: Signature64::new(signature),
            created_ms,
        }
    }

    /// Checks the signature over the public key with the owner's `identity`.
    pub fn verify(&self, identity: &IdentityKey) -> Result<(), CryptoError> {
        identity.verify(&spk_signature_message(self.pair.public_key()), &self.signature())
    }
}

/// A retired signed prekey, kept for PreKey messages still in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RetiredSignedPreKey {
    key: SignedPreKey,
    /// When it stopped being current, ms since the Unix epoch.
    retired_ms: u64,
}

/// The owner's private prekeys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoreRepr", into = "StoreRepr")]
pub struct PreKeyStore {
    current: SignedPreKey,
    /// Retired signed prekeys, newest first, at most [`MAX_RETIRED_SIGNED_PREKEYS`].
    retired: Vec<RetiredSignedPreKey>,
    one_time: BTreeMap<PublicKey, PrivateKey>,
    /// One-time prekeys in the order they were made (the relay hands them out in the
    /// order they were published), with when each was first found handed out.
    one_time_order: VecDeque<(PublicKey, Option<u64>)>,
    /// `(signed prekey, base key)` of every accepted handshake whose signed prekey exists.
    base_keys: BTreeSet<(PublicKey, PublicKey)>,
}

/// The serialized form: also reads the stores written before base keys were kept per
/// signed prekey (`seen_base_keys`, a plain list, kept under both signed prekeys) and
/// before the previous signed prekey had a retirement time.
#[derive(Serialize, Deserialize)]
struct StoreRepr {
    current: SignedPreKey,
    /// Written by earlier releases (one previous signed prekey, no retirement time).
    #[serde(default, skip_serializing)]
    previous: Option<SignedPreKey>,
    #[serde(default)]
    retired: Vec<RetiredSignedPreKey>,
    #[serde(with = "key_map")]
    one_time: BTreeMap<PublicKey, PrivateKey>,
    #[serde(default)]
    one_time_order: VecDeque<(PublicKey, Option<u64>)>,
    #[serde(default, skip_serializing)]
    seen_base_keys: Vec<PublicKey>,
    #[serde(default)]
    base_keys: BTreeSet<(PublicKey, PublicKey)>,
}

impl From<StoreRepr> for PreKeyStore {
    fn from(repr: StoreRepr) -> Self {
        let mut base_keys = repr.base_keys;
        let mut retired = repr.retired;
        if let Some(key) = repr.previous {
            // Retired at an unknown time: counted from the epoch, so it expires at the
            // first maintenance.
            retired.push(RetiredSignedPreKey { key, retired_ms: 0 });
        }
        let signed: Vec<PublicKey> = std::iter::once(&repr.current)
            .chain(retired.iter().map(|r| &r.key))
            .map(|k| *k.pair.public_key())
            .collect();
        for base in repr.seen_base_keys {
            for spk in &signed {
                base_keys.insert((*spk, base));
            }
        }
        // Keys missing from the order (older stores) count as the oldest.
        let mut order: VecDeque<(PublicKey, Option<u64>)> = repr
            .one_time_order
            .into_iter()
            .filter(|(k, _)| repr.one_time.contains_key(k))
            .collect();
        let listed: BTreeSet<PublicKey> = order.iter().map(|(k, _)| *k).collect();
        for key in repr.one_time.keys().rev() {
            if !listed.contains(key) {
                order.push_front((*key, None));
            }
        }
        Self {
            current: repr.current,
            retired,
            one_time: repr.one_time,
            one_time_order: order,
            base_keys,
        }
    }
}

impl From<PreKeyStore> for StoreRepr {
    fn from(store: PreKeyStore) -> Self {
        Self {
            current: store.current,
            previous: None,
            retired: store.retired,
            one_time: store.one_time,
            one_time_order: store.one_time_order,
            seen_base_keys: Vec::new(),
            base_keys: store.base_keys,
        }
    }
}

impl PreKeyStore {
    /// A store with a fresh signed prekey and `one_time` one-time prekeys.
    pub fn generate(identity: &IdentityKeyPair, one_time: usize, rng: &mut impl CryptoRngCore) -> Self {
        Self::generate_at(identity, one_time, rng, 0)
    }

    /// As [`PreKeyStore::generate`], the signed prekey made at `now_ms`.
    pub fn generate_at(
        identity: &IdentityKeyPair,
        one_time: usize,
        rng: &mut impl CryptoRngCore,
        now_ms: u64,
    ) -> Self {
        let signed = SignedPreKey::new_at(identity, KeyPair::generate(rng), now_ms);
        let mut store = Self::from_parts(signed, Vec::new());
        store.generate_one_time(one_time, rng);
        store
    }

    /// A store from given keys (tests and vectors).
    pub fn from_parts(signed: SignedPreKey, one_time: Vec<KeyPair>) -> Self {
        let order = one_time.iter().map(|pair| (*pair.public_key(), None)).collect();
        Self {
            current: signed,
            retired: Vec::new(),
            one_time: one_time
                .into_iter()
                .map(|pair| (*pair.public_key(), pair.private_key().clone()))
                .collect(),
            one_time_order: order,
            base_keys: BTreeSet::new(),
        }
    }

    /// A store rebuilt from its parts as an owner stored them (the inverse of
    /// [`PreKeyStore::current_signed`], [`PreKeyStore::retired_signed`],
    /// [`PreKeyStore::one_time_entries`] and [`PreKeyStore::base_keys`]): the current
    /// signed prekey; the retired ones with when each was retired, newest first (past
    /// [`MAX_RETIRED_SIGNED_PREKEYS`] the oldest are dropped); the one-time prekeys
    /// oldest first, each with when it was first found handed out (a repeated public
    /// key keeps its first place); and the `(signed prekey, base key)` pairs of
    /// accepted handshakes (those under a signed prekey not given are dropped).
    pub fn from_stored(
        current: SignedPreKey,
        retired: Vec<(SignedPreKey, u64)>,
        one_time: Vec<(PrivateKey, Option<u64>)>,
        base_keys: impl IntoIterator<Item = (PublicKey, PublicKey)>,
    ) -> Self {
        let mut retired: Vec<RetiredSignedPreKey> = retired
            .into_iter()
            .map(|(key, retired_ms)| RetiredSignedPreKey { key, retired_ms })
            .collect();
        retired.truncate(MAX_RETIRED_SIGNED_PREKEYS);
        let mut store = Self {
            current,
            retired,
            one_time: BTreeMap::new(),
            one_time_order: VecDeque::new(),
            base_keys: BTreeSet::new(),
        };
        for (private, handed_out) in one_time {
            let public = private.public_key();
            if store.one_time.insert(public, private).is_none() {
                store.one_time_order.push_back((public, handed_out));
            }
        }
        store.base_keys = base_keys
            .into_iter()
            .filter(|(spk, _)| store.signed_prekey(spk).is_some())
            .collect();
        store
    }

    /// The current signed prekey.
    pub fn current_signed(&self) -> &SignedPreKey {
        &self.current
    }

    /// The retired signed prekeys, newest first, each with when it was retired (ms
    /// since the Unix epoch).
    pub fn retired_signed(&self) -> impl Iterator<Item = (&SignedPreKey, u64)> + '_ {
        self.retired.iter().map(|r| (&r.key, r.retired_ms))
    }

    /// The unused one-time prekeys, oldest first, each with its private key and when
    /// it was first found handed out (see [`PreKeyStore::age_out_one_time`]).
    pub fn one_time_entries(&self) -> impl Iterator<Item = (&PublicKey, &PrivateKey, Option<u64>)> + '_ {
        self.one_time_order
            .iter()
            .filter_map(|(public, since)| self.one_time.get(public).map(|private| (public, private, *since)))
    }

    /// The `(signed prekey, base key)` pairs of the accepted handshakes remembered.
    pub fn base_keys(&self) -> impl Iterator<Item = &(PublicKey, PublicKey)> + '_ {
        self.base_keys.iter()
    }

    /// Adds `count` fresh one-time prekeys and returns their public keys, oldest first.
    pub fn generate_one_time(&mut self, count: usize, rng: &mut impl CryptoRngCore) -> Vec<PublicKey> {
        (0..count)
            .map(|_| {
                let pair = KeyPair::generate(rng);
                let public = *pair.public_key();
                self.one_time.insert(public, pair.private_key().clone());
                self.one_time_order.push_back((public, None));
                public
            })
            .collect()
    }

    /// Replaces the signed prekey (untimed; see [`PreKeyStore::rotate_signed_at`]).
    pub fn rotate_signed(&mut self, identity: &IdentityKeyPair, rng: &mut impl CryptoRngCore) {
        self.rotate_signed_at(identity, rng, 0);
    }

    /// Replaces the signed prekey at `now_ms`. The old one stays usable (for PreKey
    /// messages in flight) until [`PreKeyStore::expire_retired`] deletes it; past
    /// [`MAX_RETIRED_SIGNED_PREKEYS`] the oldest retired one is deleted now, with the
    /// base keys accepted under it.
    pub fn rotate_signed_at(
        &mut self,
        identity: &IdentityKeyPair,
        rng: &mut impl CryptoRngCore,
        now_ms: u64,
    ) {
        let next = SignedPreKey::new_at(identity, KeyPair::generate(rng), now_ms);
        let retired = std::mem::replace(&mut self.current, next);
        self.retired.insert(
            0,
            RetiredSignedPreKey {
                key: retired,
                retired_ms: now_ms,
            },
        );
        while self.retired.len() > MAX_RETIRED_SIGNED_PREKEYS {
            if let Some(old) = self.retired.pop() {
                self.forget_base_keys_of(*old.key.pair.public_key());
            }
        }
    }

    /// True when the current signed prekey is older than `max_age_ms` at `now_ms`, or
    /// has accepted [`MAX_BASE_KEYS_PER_SIGNED_PREKEY`] handshakes.
    pub fn rotation_due(&self, now_ms: u64, max_age_ms: u64) -> bool {
        let current = *self.current.pair.public_key();
        let accepted = self.base_keys.iter().filter(|(spk, _)| *spk == current).count();
        now_ms.saturating_sub(self.current.created_ms) >= max_age_ms
            || accepted >= MAX_BASE_KEYS_PER_SIGNED_PREKEY
    }

    /// Deletes the retired signed prekeys (and the base keys accepted under them) that
    /// have been retired for `grace_ms` at `now_ms`. Returns how many were deleted.
    pub fn expire_retired(&mut self, now_ms: u64, grace_ms: u64) -> usize {
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| now_ms.saturating_sub(r.retired_ms) >= grace_ms);
        self.retired = kept;
        for old in &expired {
            self.forget_base_keys_of(*old.key.pair.public_key());
        }
        expired.len()
    }

    /// How many retired signed prekeys are kept.
    pub fn retired_signed_prekeys(&self) -> usize {
        self.retired.len()
    }

    fn forget_base_keys_of(&mut self, spk: PublicKey) {
        self.base_keys.retain(|(s, _)| *s != spk);
    }

    /// The full public bundle to publish (all unused one-time prekeys).
    pub fn bundle(&self, identity: &IdentityKey) -> PreKeyBundle {
        PreKeyBundle {
            identity: *identity,
            signed_prekey: *self.current.pair.public_key(),
            signature: self.current.signature(),
            one_time_prekeys: self.one_time_order.iter().map(|(k, _)| *k).collect(),
        }
    }

    /// The signed prekey pair with this public key, current or retired.
    pub fn signed_prekey(&self, public: &PublicKey) -> Option<&KeyPair> {
        std::iter::once(&self.current)
            .chain(self.retired.iter().map(|r| &r.key))
            .map(SignedPreKey::pair)
            .find(|pair| pair.public_key() == public)
    }

    /// The private one-time prekey with this public key, if unused.
    pub fn one_time_prekey(&self, public: &PublicKey) -> Option<&PrivateKey> {
        self.one_time.get(public)
    }

    /// Deletes a one-time prekey for good; true if it was there.
    pub fn remove_one_time(&mut self, public: &PublicKey) -> bool {
        self.one_time_order.retain(|(k, _)| k != public);
        self.one_time.remove(public).is_some()
    }

    /// How many unused one-time prekeys are held.
    pub fn one_time_count(&self) -> usize {
        self.one_time.len()
    }

    /// Ages out one-time prekeys that the relay has handed out but no peer used.
    ///
    /// `relay_holds` is how many the relay says it still holds (`PreKeysStored`,
    /// `PreKeysLow`); `unconfirmed` how many of the newest it has not confirmed storing.
    /// The relay hands them out oldest first, so all but the newest `relay_holds +
    /// unconfirmed` have been handed out: each is marked at `now_ms` when first found
    /// so, and deleted once marked for `grace_ms` (a peer's first message using it has
    /// had that long to arrive). Beyond `max_held`, the oldest handed-out ones are
    /// deleted at once. Returns how many were newly found handed out and how many were
    /// deleted (the store changed if either is non-zero).
    pub fn age_out_one_time(
        &mut self,
        relay_holds: usize,
        unconfirmed: usize,
        now_ms: u64,
        grace_ms: u64,
        max_held: usize,
    ) -> (usize, usize) {
        let keep_fresh = relay_holds.saturating_add(unconfirmed);
        let handed_out = self.one_time_order.len().saturating_sub(keep_fresh);
        let mut doomed = Vec::new();
        let mut newly_marked = 0;
        let mut excess = self.one_time_order.len().saturating_sub(max_held);
        for (key, since) in self.one_time_order.iter_mut().take(handed_out) {
            if since.is_none() {
                newly_marked += 1;
            }
            let marked = *since.get_or_insert(now_ms);
            if excess > 0 || now_ms.saturating_sub(marked) >= grace_ms {
                excess = excess.saturating_sub(1);
                doomed.push(*key);
            }
        }
        for key in &doomed {
            self.remove_one_time(key);
        }
        (newly_marked, doomed.len())
    }

    /// True if a PreKey message with this base key was already accepted under this
    /// signed prekey.
    pub fn has_seen_base_key(&self, signed_prekey: &PublicKey, base_key: &PublicKey) -> bool {
        self.base_keys.contains(&(*signed_prekey, *base_key))
    }

    /// Remembers the base key of a PreKey message accepted under `signed_prekey`, for as
    /// long as that signed prekey exists.
    pub fn remember_base_key(&mut self, signed_prekey: PublicKey, base_key: PublicKey) {
        self.base_keys.insert((signed_prekey, base_key));
    }

    /// How many base keys are remembered (under the current and retired signed prekeys).
    pub fn remembered_base_keys(&self) -> usize {
        self.base_keys.len()
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

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    #[test]
    fn a_store_rebuilt_from_its_parts_is_the_same_store() {
        let identity = IdentityKeyPair::generate(&mut OsRng);
        let mut store = PreKeyStore::generate_at(&identity, 4, &mut OsRng, 10);
        store.rotate_signed_at(&identity, &mut OsRng, 20);
        store.remember_base_key(*store.current.pair.public_key(), PublicKey::from_bytes([7; 32]));
        store.age_out_one_time(2, 0, 30, 1_000, 100);
        let rebuilt = PreKeyStore::from_stored(
            store.current_signed().clone(),
            store.retired_signed().map(|(k, ms)| (k.clone(), ms)).collect(),
            (store.one_time_entries())
                .map(|(_, private, since)| (private.clone(), since))
                .collect(),
            store.base_keys().copied(),
        );
        assert_eq!(rebuilt.bundle(identity.public()), store.bundle(identity.public()));
        assert_eq!(rebuilt.bundle(identity.public()).verify(), Ok(()));
        assert_eq!(
            rebuilt
                .one_time_entries()
                .map(|(k, _, s)| (*k, s))
                .collect::<Vec<_>>(),
            store
                .one_time_entries()
                .map(|(k, _, s)| (*k, s))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            rebuilt.retired_signed().map(|(_, ms)| ms).collect::<Vec<_>>(),
            [20]
        );
        assert_eq!(rebuilt.remembered_base_keys(), 1);
        for (key, _) in rebuilt.retired_signed() {
            assert_eq!(key.verify(identity.public()), Ok(()));
        }
        // Base keys under a signed prekey that is not given are dropped.
        let stray = (PublicKey::from_bytes([1; 32]), PublicKey::from_bytes([2; 32]));
        let alone = PreKeyStore::from_stored(store.current_signed().clone(), Vec::new(), Vec::new(), [stray]);
        assert_eq!(alone.remembered_base_keys(), 0);
        let other = IdentityKeyPair::generate(&mut OsRng);
        assert!(store.current_signed().verify(other.public()).is_err());
    }
}
