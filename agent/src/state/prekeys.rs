//! Prekeys: the in-memory [`PreKeyStore`] with what the relay has yet to store, its
//! rows (`signed_prekeys`, `one_time_prekeys`, `base_keys`), and the prekey methods of
//! [`AgentState`].
//!
//! The store stays in memory (the handshake code of the protocol crate reads it); each
//! prekey operation writes only the rows that changed, computed by comparing the store
//! before and after ([`sync`]), in one transaction, and replaces the memory copy after
//! the commit. A PreKey message deletes its one-time prekey row and adds its base key
//! row in the message's own transaction (`sessions`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::keys::{KeyPair, PrivateKey, PublicKey};
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::prekey::{PreKeyBundle, PreKeyStore, SignedPreKey};
use rand_core::CryptoRngCore;

use super::error::StateError;
use super::values::{key32, private_bytes};
use super::AgentState;
use crate::store::prekeys::NewSignedPreKey;
use crate::store::{Rows, Tx};

/// The prekeys and their publication state.
#[derive(Clone)]
pub(super) struct Prekeys {
    pub(super) store: PreKeyStore,
    /// False until the relay confirmed that it stores the current signed prekey.
    pub(super) signed_published: bool,
    /// One-time prekeys the relay has not confirmed storing yet, oldest first.
    pub(super) unpublished: Vec<PublicKey>,
}

impl Prekeys {
    /// Fresh prekeys, nothing published.
    pub(super) fn generate(
        identity: &IdentityKeyPair,
        one_time: usize,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let store = PreKeyStore::generate(identity, one_time, rng);
        let unpublished = store.bundle(identity.public()).one_time_prekeys;
        Self {
            store,
            signed_published: false,
            unpublished,
        }
    }

    /// Reads the prekey rows; every signed prekey's signature is checked.
    pub(super) fn load(rows: &Rows<'_>, identity: &IdentityKeyPair, path: &Path) -> Result<Self, StateError> {
        let corrupt = |detail: &str| StateError::Corrupt {
            path: path.to_path_buf(),
            detail: detail.to_owned(),
        };
        let mut current = None;
        let mut retired = Vec::new();
        let mut signed_published = false;
        for row in rows.signed_prekeys()? {
            let secret = key32(&row.secret, "signed_prekeys.secret", path)?;
            let pair = KeyPair::from_private(PrivateKey::from_bytes(*secret));
            if pair.public_key().as_bytes() != &row.public {
                return Err(corrupt("a signed prekey does not match its public key"));
            }
            let signature: [u8; 64] = (row.signature.as_slice().try_into())
                .map_err(|_| corrupt("a signed prekey signature is not 64 bytes"))?;
            let key = SignedPreKey::from_stored(pair, signature, row.created_ms);
            key.verify(identity.public())
                .map_err(|_| corrupt("a signed prekey is not signed by the identity"))?;
            match row.retired_ms {
                None => {
                    signed_published = row.published;
                    current = Some(key);
                }
                Some(ms) => retired.push((key, ms)),
            }
        }
        let current = current.ok_or_else(|| corrupt("no current signed prekey"))?;
        let mut one_time = Vec::new();
        let mut unpublished = Vec::new();
        for row in rows.one_time_prekeys()? {
            let secret = key32(&row.secret, "one_time_prekeys.secret", path)?;
            let private = PrivateKey::from_bytes(*secret);
            if private.public_key().as_bytes() != &row.public {
                return Err(corrupt("a one-time prekey does not match its public key"));
            }
            if !row.published {
                unpublished.push(PublicKey::from_bytes(row.public));
            }
            one_time.push((private, row.handed_out_ms));
        }
        let base_keys = (rows.base_keys()?.into_iter())
            .map(|(spk, base)| (PublicKey::from_bytes(spk), PublicKey::from_bytes(base)));
        Ok(Self {
            store: PreKeyStore::from_stored(current, retired, one_time, base_keys),
            signed_published,
            unpublished,
        })
    }

    /// Writes every prekey row (a new or imported state).
    pub(super) fn insert(&self, tx: &Tx<'_>, path: &Path) -> Result<(), StateError> {
        let current = std::iter::once((self.store.current_signed(), None, self.signed_published));
        let retired = (self.store.retired_signed()).map(|(key, ms)| (key, Some(ms), true));
        for (key, retired_ms, published) in current.chain(retired) {
            put_signed(tx, key, retired_ms, published, path)?;
        }
        for (public, private, handed_out) in self.store.one_time_entries() {
            let secret = private_bytes(private, path)?;
            let published = !self.unpublished.contains(public);
            tx.add_one_time_prekey(public.as_bytes(), &secret[..], handed_out, published)?;
        }
        for (spk, base) in self.store.base_keys() {
            tx.record_base_key(spk.as_bytes(), base.as_bytes())?;
        }
        Ok(())
    }
}

fn put_signed(
    tx: &Tx<'_>,
    key: &SignedPreKey,
    retired_ms: Option<u64>,
    published: bool,
    path: &Path,
) -> Result<(), StateError> {
    let secret = private_bytes(key.pair().private_key(), path)?;
    tx.put_signed_prekey(NewSignedPreKey {
        public: key.pair().public_key().as_bytes(),
        secret: &secret[..],
        signature: &key.signature(),
        created_ms: key.created_ms(),
        retired_ms,
        published,
    })?;
    Ok(())
}

/// Writes the rows that differ between `old` and `new`: signed prekeys deleted (their
/// base keys go with them), retired and added; one-time prekeys deleted, added and
/// newly marked handed out; publication marks. Base keys are added by the messages
/// that accept them, not here.
pub(super) fn sync(tx: &Tx<'_>, old: &Prekeys, new: &Prekeys, path: &Path) -> Result<(), StateError> {
    let signed = |p: &Prekeys| -> BTreeMap<PublicKey, Option<u64>> {
        std::iter::once((*p.store.current_signed().pair().public_key(), None))
            .chain((p.store.retired_signed()).map(|(k, ms)| (*k.pair().public_key(), Some(ms))))
            .collect()
    };
    let (before, after) = (signed(old), signed(new));
    for gone in before.keys().filter(|k| !after.contains_key(k)) {
        tx.delete_signed_prekey(gone.as_bytes())?;
    }
    let old_current = old.store.current_signed().pair().public_key();
    if let Some(Some(retired_ms)) = after.get(old_current) {
        tx.retire_signed_prekey(*retired_ms)?;
    }
    let current = std::iter::once((new.store.current_signed(), None));
    for (key, retired_ms) in current.chain(new.store.retired_signed().map(|(k, ms)| (k, Some(ms)))) {
        if !before.contains_key(key.pair().public_key()) {
            put_signed(tx, key, retired_ms, false, path)?;
        }
    }
    if new.signed_published && !old.signed_published {
        tx.mark_signed_published()?;
    }

    let one_time = |p: &Prekeys| -> BTreeMap<PublicKey, Option<u64>> {
        (p.store.one_time_entries())
            .map(|(k, _, since)| (*k, since))
            .collect()
    };
    let (before, after) = (one_time(old), one_time(new));
    for gone in before.keys().filter(|k| !after.contains_key(k)) {
        tx.delete_one_time_prekey(gone.as_bytes())?;
    }
    let unpublished: BTreeSet<&PublicKey> = new.unpublished.iter().collect();
    for (public, private, since) in new.store.one_time_entries() {
        match before.get(public) {
            None => {
                let secret = private_bytes(private, path)?;
                let published = !unpublished.contains(public);
                tx.add_one_time_prekey(public.as_bytes(), &secret[..], since, published)?;
            }
            Some(None) => {
                if let Some(ms) = since {
                    tx.mark_handed_out(public.as_bytes(), ms)?;
                }
            }
            Some(Some(_)) => {}
        }
    }
    if new.unpublished.is_empty() && !old.unpublished.is_empty() {
        tx.mark_one_time_published()?;
    }
    Ok(())
}

impl AgentState {
    /// Writes `next` (computed from the current prekeys) in one transaction, then
    /// makes it current.
    fn commit_prekeys(&mut self, next: Prekeys) -> Result<(), StateError> {
        let path = self.db.path().to_path_buf();
        let old = &self.prekeys;
        crate::crash_point::reached("prekeys.before_commit");
        self.db.transaction_with(|tx| sync(tx, old, &next, &path))?;
        self.prekeys = next;
        Ok(())
    }

    /// The full bundle: the signed prekey and every unused one-time prekey held. To
    /// publish, use [`AgentState::bundle_to_publish`]: the relay adds one-time prekeys
    /// to those it holds, so one it already handed out must never be published again.
    pub fn bundle(&self) -> PreKeyBundle {
        self.prekeys.store.bundle(self.identity.public())
    }

    /// How many unused one-time prekeys are held (including those the relay has handed
    /// out to peers whose first message has not arrived yet).
    pub fn one_time_count(&self) -> usize {
        self.prekeys.store.one_time_count()
    }

    /// True while the relay has not confirmed storing the signed prekey or some
    /// one-time prekeys: after creation, [`AgentState::replenish`] or
    /// [`AgentState::rotate_signed_prekey`], and after a restart that happened before
    /// the confirmation (`PreKeysStored`).
    pub fn needs_publish(&self) -> bool {
        !self.prekeys.signed_published || !self.prekeys.unpublished.is_empty()
    }

    /// The bundle to send in `PublishPreKeys`: the signed prekey and only the one-time
    /// prekeys the relay has not confirmed storing yet.
    pub fn bundle_to_publish(&self) -> PreKeyBundle {
        let store = &self.prekeys.store;
        let mut bundle = store.bundle(self.identity.public());
        bundle.one_time_prekeys = (self.prekeys.unpublished.iter())
            .filter(|opk| store.one_time_prekey(opk).is_some())
            .copied()
            .collect();
        bundle
    }

    /// Records that the relay stored what [`AgentState::bundle_to_publish`] returned
    /// (`PreKeysStored`). With two publications in flight, the first confirmation
    /// covers both: a lost second one leaves some one-time prekeys unused, never reused.
    pub fn mark_published(&mut self) -> Result<(), StateError> {
        if self.needs_publish() {
            let mut prekeys = self.prekeys.clone();
            prekeys.signed_published = true;
            prekeys.unpublished.clear();
            self.commit_prekeys(prekeys)?;
        }
        Ok(())
    }

    /// Makes enough fresh one-time prekeys that the relay, which says it holds
    /// `relay_remaining` (`PreKeysLow.remaining` or `PreKeysStored.opks`), will hold
    /// `target`; saves them and returns [`AgentState::bundle_to_publish`].
    pub fn replenish(
        &mut self,
        relay_remaining: usize,
        target: usize,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PreKeyBundle, StateError> {
        let missing = target.saturating_sub(relay_remaining);
        if missing > 0 {
            let mut prekeys = self.prekeys.clone();
            let fresh = prekeys.store.generate_one_time(missing, rng);
            prekeys.unpublished.extend(fresh);
            self.commit_prekeys(prekeys)?;
        }
        Ok(self.bundle_to_publish())
    }

    /// Replaces the signed prekey at `now_ms` (the retired one still opens PreKey
    /// messages in flight), saves it and returns [`AgentState::bundle_to_publish`].
    pub fn rotate_signed_prekey(
        &mut self,
        rng: &mut impl CryptoRngCore,
        now_ms: u64,
    ) -> Result<PreKeyBundle, StateError> {
        let mut prekeys = self.prekeys.clone();
        prekeys.store.rotate_signed_at(&self.identity, rng, now_ms);
        prekeys.signed_published = false;
        self.commit_prekeys(prekeys)?;
        Ok(self.bundle_to_publish())
    }

    /// Prekey hygiene at `now_ms`: deletes retired signed prekeys after `grace_ms`
    /// (with the handshakes remembered under them) and rotates the signed prekey when it
    /// is `rotation_ms` old or has accepted too many handshakes. Saved. Returns the
    /// bundle to publish if the signed prekey changed.
    pub fn maintain_signed_prekey(
        &mut self,
        now_ms: u64,
        rotation_ms: u64,
        grace_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Option<PreKeyBundle>, StateError> {
        let mut prekeys = self.prekeys.clone();
        let expired = prekeys.store.expire_retired(now_ms, grace_ms);
        let rotate = prekeys.store.rotation_due(now_ms, rotation_ms);
        if rotate {
            prekeys.store.rotate_signed_at(&self.identity, rng, now_ms);
            prekeys.signed_published = false;
        }
        if expired > 0 || rotate {
            self.commit_prekeys(prekeys)?;
        }
        Ok(rotate.then(|| self.bundle_to_publish()))
    }

    /// Ages out one-time prekeys the relay handed out that no peer used, knowing the
    /// relay holds `relay_holds` (see [`PreKeyStore::age_out_one_time`]). Saved.
    /// Returns how many were deleted.
    pub fn age_out_one_time(
        &mut self,
        relay_holds: usize,
        now_ms: u64,
        grace_ms: u64,
        max_held: usize,
    ) -> Result<usize, StateError> {
        let mut prekeys = self.prekeys.clone();
        let unconfirmed = prekeys.unpublished.len();
        let (marked, deleted) =
            prekeys
                .store
                .age_out_one_time(relay_holds, unconfirmed, now_ms, grace_ms, max_held);
        // Marks of newly found handed-out keys are saved too, so the grace counts from
        // when they were first found, across restarts.
        if marked > 0 || deleted > 0 {
            self.commit_prekeys(prekeys)?;
        }
        Ok(deleted)
    }

    /// How many retired signed prekeys and remembered handshake base keys are held.
    pub fn prekey_counts(&self) -> (usize, usize) {
        (
            self.prekeys.store.retired_signed_prekeys(),
            self.prekeys.store.remembered_base_keys(),
        )
    }

    /// Our signed name claim, to publish to the relay.
    pub fn name_claim(&self, now_ms: u64) -> Result<NameClaim, StateError> {
        Ok(NameClaim::sign(&self.identity, &self.name, now_ms)?)
    }
}

#[cfg(test)]
mod tests {
    use e2ee_protocol::message::Message;
    use e2ee_protocol::name_claim::NameClaim;
    use rand_core::OsRng;

    use super::super::test_util::*;

    #[test]
    fn publishes_only_what_the_relay_has_not_stored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("bob");
        let mut bob = open(&dir, "bob");
        assert!(bob.needs_publish());
        assert_eq!(bob.bundle_to_publish(), bob.bundle(), "first: everything");
        bob.mark_published().expect("published");
        assert!(!bob.needs_publish());
        assert!(bob.bundle_to_publish().one_time_prekeys.is_empty());

        // The relay handed out 3 of 5 and says 2 are left: top it up to 12.
        let held_before = bob.bundle().one_time_prekeys;
        let bundle = bob.replenish(2, 12, &mut OsRng).expect("replenish");
        assert_eq!(bundle.one_time_prekeys.len(), 10, "only the fresh ones");
        assert!(bundle.one_time_prekeys.iter().all(|k| !held_before.contains(k)));
        assert_eq!(bundle.verify(), Ok(()));
        assert_eq!(bob.one_time_count(), 15);
        assert!(bob.needs_publish());

        // Unconfirmed at a restart: published again, the same keys.
        drop(bob);
        let mut bob = open(&dir, "bob");
        assert!(bob.needs_publish());
        assert_eq!(bob.bundle_to_publish(), bundle);
        bob.mark_published().expect("published");
        drop(bob);
        let mut bob = open(&dir, "bob");
        assert!(!bob.needs_publish());
        assert!(bob
            .replenish(40, 12, &mut OsRng)
            .expect("nothing")
            .one_time_prekeys
            .is_empty());

        // A new signed prekey must be published; the old one still opens messages.
        let alice_dir = tmp.path().join("alice");
        let mut alice = open(&alice_dir, "alice");
        let in_flight = send(&mut alice, &bob, "before rotation");
        let rotated = bob.rotate_signed_prekey(&mut OsRng, 1).expect("rotate");
        assert_ne!(rotated.signed_prekey, bundle.signed_prekey);
        assert!(bob.needs_publish());
        assert_eq!(recv_text(&mut bob, &ik(&alice), &in_flight), "before rotation");
    }

    #[test]
    fn a_used_one_time_prekey_is_never_published_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        // Alice fetched a bundle before Bob's first publication was confirmed.
        let m = send(&mut alice, &bob, "early");
        let used = match Message::decode(&m.wire).expect("message") {
            Message::PreKey(p) => p.one_time_prekey.expect("an opk"),
            Message::Normal(_) => panic!("a PreKey message"),
        };
        assert_eq!(recv_text(&mut bob, &ik(&alice), &m), "early");
        assert_eq!(bob.one_time_count(), 4);
        assert!(!bob.bundle_to_publish().one_time_prekeys.contains(&used));
        assert_eq!(bob.bundle_to_publish().one_time_prekeys.len(), 4);
    }

    #[test]
    fn name_claim_is_signed_by_the_identity() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let alice = open(tmp.path(), "alice");
        let claim = alice.name_claim(42).expect("claim");
        assert_eq!(
            (claim.name.as_str(), claim.identity, claim.issued_ms),
            ("alice", ik(&alice), 42)
        );
        assert_eq!(NameClaim::decode_verified(&claim.encode()), Ok(claim));
    }

    #[test]
    fn prekey_changes_are_written_as_rows_and_survive_a_restart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("bob");
        let mut bob = open(&dir, "bob");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        bob.mark_published().expect("published");
        let m = send(&mut alice, &bob, "hi");
        assert_eq!(recv_text(&mut bob, &ik(&alice), &m), "hi");
        bob.rotate_signed_prekey(&mut OsRng, 1_000).expect("rotate");
        bob.replenish(0, 7, &mut OsRng).expect("replenish");
        let aged = bob.age_out_one_time(7, 2_000, 10, 100).expect("age out");
        assert_eq!(aged, 0);
        let before = (bob.bundle(), bob.bundle_to_publish(), bob.prekey_counts());
        assert_eq!(before.2, (1, 1), "one retired signed prekey, one base key");
        drop(bob);
        let mut bob = open(&dir, "bob");
        assert_eq!(
            (bob.bundle(), bob.bundle_to_publish(), bob.prekey_counts()),
            before
        );
        // The retired signed prekey expires with its base key.
        let rotated = bob
            .maintain_signed_prekey(10_000, u64::MAX, 5_000, &mut OsRng)
            .expect("maintain");
        assert!(rotated.is_none());
        assert_eq!(bob.prekey_counts(), (0, 0));
        drop(bob);
        let bob = open(&dir, "bob");
        assert_eq!(bob.prekey_counts(), (0, 0));
        assert_eq!(bob.bundle().verify(), Ok(()));
    }
}
