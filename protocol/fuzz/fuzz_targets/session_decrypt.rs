//! Fuzzes decryption: `session::receive` on an established Alice → Bob session.
//!
//! Set up once, deterministically (fixed seeds and a counter RNG): Alice and Bob have
//! exchanged a few messages both ways, Bob holds stored skipped keys, and a handful of
//! genuine messages from Alice are still on their way to Bob, covering every decryption
//! path: a late PreKey message, late Normal messages (skipped keys), the current chain,
//! a DH ratchet step, and a fresh handshake that replaces the session. Two replays
//! (which must fail) are kept as well.
//!
//! Each input is tried twice on fresh clones of Bob's session and prekey store:
//! 1. as raw message bytes from Alice. Nothing may panic; a success must carry the
//!    header and ciphertext of a genuine pending message and yield its plaintext (the
//!    fuzzer cannot forge, it can only rewrap genuine bytes); a failure must leave the
//!    session unchanged, checked by decrypting a genuine message on the same clones.
//! 2. XORed into one genuine message (the first byte picks which, and whether to cut
//!    it to the mask's length). A success is allowed only if the result is a genuine
//!    message byte for byte (in practice: the mask changed nothing).

#![no_main]

use std::sync::OnceLock;

use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::keys::{KeyPair, PrivateKey};
use e2ee_protocol::message::Message;
use e2ee_protocol::prekey::{PreKeyStore, SignedPreKey};
use e2ee_protocol::session::{receive, Received, Session};
use libfuzzer_sys::fuzz_target;
use rand_core::{CryptoRng, RngCore};

/// A deterministic RNG: splitmix64 over a counter. For fuzzing only.
struct CounterRng(u64);

impl RngCore for CounterRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for CounterRng {}

/// One message sent by Alice, as it stands against Bob's snapshot.
struct Genuine {
    bytes: Vec<u8>,
    /// The Double Ratchet header and ciphertext (`header || ct`), whatever the encoding.
    inner: Vec<u8>,
    /// `Some(plaintext)` if Bob's snapshot decrypts it; `None` for a replay.
    plaintext: Option<Vec<u8>>,
}

struct Fixture {
    alice: IdentityKey,
    bob: IdentityKeyPair,
    /// Bob's session with Alice and his prekeys, as persisted.
    session: Session,
    prekeys: PreKeyStore,
    genuine: Vec<Genuine>,
}

fn pair(byte: u8) -> KeyPair {
    KeyPair::from_private(PrivateKey::from_bytes([byte; 32]))
}

fn inner_of(bytes: &[u8]) -> Vec<u8> {
    let header_and_ct = |m: &e2ee_protocol::message::NormalMessage| {
        let mut out = m.header.encode().to_vec();
        out.extend_from_slice(&m.ciphertext);
        out
    };
    match Message::decode(bytes).expect("a genuine message decodes") {
        Message::Normal(m) => header_and_ct(&m),
        Message::PreKey(m) => header_and_ct(&m.inner),
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let mut rng = CounterRng(0x5EED);
    let alice = IdentityKeyPair::from_seed(&[0xA1; 32]);
    let bob = IdentityKeyPair::from_seed(&[0xB0; 32]);
    let (a, b) = (*alice.public(), *bob.public());

    let mut alice_prekeys = PreKeyStore::from_parts(SignedPreKey::new(&alice, pair(0x11)), vec![]);
    let (opk1, opk2) = (pair(0x21), pair(0x22));
    let mut bob_prekeys = PreKeyStore::from_parts(
        SignedPreKey::new(&bob, pair(0x20)),
        vec![opk1.clone(), opk2.clone()],
    );
    let full = bob_prekeys.bundle(&b);

    let recv = |session: Option<&mut Session>,
                me: &IdentityKeyPair,
                store: &mut PreKeyStore,
                from: &IdentityKey,
                bytes: &[u8],
                rng: &mut CounterRng|
     -> Received {
        receive(session, me, store, from, bytes, rng).expect("setup message decrypts")
    };

    // Alice starts with OPK1 and sends two PreKey messages before any reply.
    let mut alice_session = Session::initiate(
        &alice,
        &full.with_one_time_prekey(Some(*opk1.public_key())),
        &mut rng,
    )
    .expect("initiate");
    let a0 = alice_session.encrypt(b"a0", &mut rng).expect("encrypt");
    let a1 = alice_session.encrypt(b"a1 late prekey", &mut rng).expect("encrypt");

    // Bob accepts a0 and replies; Alice reads the reply.
    let Received { new_session, .. } = recv(None, &bob, &mut bob_prekeys, &a, &a0, &mut rng);
    let mut bob_session = new_session.expect("a0 starts Bob's session");
    let b0 = bob_session.encrypt(b"b0", &mut rng).expect("encrypt");
    recv(
        Some(&mut alice_session),
        &alice,
        &mut alice_prekeys,
        &b,
        &b0,
        &mut rng,
    );

    // Alice's second chain; Bob reads only a4, so a1, a2 and a3 become skipped keys.
    let a2 = alice_session.encrypt(b"a2 late", &mut rng).expect("encrypt");
    let a3 = alice_session.encrypt(b"a3 late", &mut rng).expect("encrypt");
    let a4 = alice_session.encrypt(b"a4", &mut rng).expect("encrypt");
    let a5 = alice_session.encrypt(b"a5 current chain", &mut rng).expect("encrypt");
    recv(Some(&mut bob_session), &bob, &mut bob_prekeys, &a, &a4, &mut rng);

    // Bob replies again; Alice's third chain needs a DH step on Bob's side.
    let b1 = bob_session.encrypt(b"b1", &mut rng).expect("encrypt");
    recv(
        Some(&mut alice_session),
        &alice,
        &mut alice_prekeys,
        &b,
        &b1,
        &mut rng,
    );
    let a6 = alice_session.encrypt(b"a6 dh step", &mut rng).expect("encrypt");
    let a7 = alice_session.encrypt(b"a7 dh step and skip", &mut rng).expect("encrypt");

    // A second handshake from Alice (a reinstall, say) with OPK2.
    let mut restart = Session::initiate(
        &alice,
        &full.with_one_time_prekey(Some(*opk2.public_key())),
        &mut rng,
    )
    .expect("initiate");
    let c0 = restart.encrypt(b"c0 new handshake").expect("encrypt");

    let genuine = [
        (a0, None),
        (a1, Some(&b"a1 late prekey"[..])),
        (a2, Some(b"a2 late")),
        (a3, Some(b"a3 late")),
        (a4, None),
        (a5, Some(b"a5 current chain")),
        (a6, Some(b"a6 dh step")),
        (a7, Some(b"a7 dh step and skip")),
        (c0, Some(b"c0 new handshake")),
    ]
    .into_iter()
    .map(|(bytes, plaintext)| Genuine {
        inner: inner_of(&bytes),
        bytes,
        plaintext: plaintext.map(<[u8]>::to_vec),
    })
    .collect::<Vec<_>>();

    let fixture = Fixture {
        alice: a,
        bob,
        session: bob_session,
        prekeys: bob_prekeys,
        genuine,
    };
    // Every genuine message behaves as labelled on a fresh copy of Bob's state.
    for g in &fixture.genuine {
        let (mut session, mut prekeys) = (fixture.session.clone(), fixture.prekeys.clone());
        let result = fixture.receive(&mut session, &mut prekeys, &g.bytes);
        assert_eq!(
            result.ok().map(|r| r.decrypted.plaintext),
            g.plaintext,
            "setup: a genuine message does not behave as labelled"
        );
    }
    fixture
}

impl Fixture {
    fn receive(
        &self,
        session: &mut Session,
        prekeys: &mut PreKeyStore,
        bytes: &[u8],
    ) -> Result<Received, e2ee_protocol::CryptoError> {
        receive(
            Some(session),
            &self.bob,
            prekeys,
            &self.alice,
            bytes,
            &mut CounterRng(7),
        )
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Some((&selector, mask)) = data.split_first() else {
        return;
    };
    let g = &fx.genuine[usize::from(selector) % fx.genuine.len()];

    raw(fx, data, g);
    xored(fx, selector, mask, g);
});

/// The input as message bytes from Alice.
fn raw(fx: &Fixture, data: &[u8], check: &Genuine) {
    let (mut session, mut prekeys) = (fx.session.clone(), fx.prekeys.clone());
    match fx.receive(&mut session, &mut prekeys, data) {
        Ok(received) => {
            let inner = inner_of(data);
            let Some(g) = fx
                .genuine
                .iter()
                .find(|g| g.plaintext.is_some() && g.inner == inner)
            else {
                panic!("decrypted bytes that carry no genuine pending message");
            };
            assert_eq!(
                Some(&received.decrypted.plaintext),
                g.plaintext.as_ref(),
                "a genuine message decrypted to the wrong plaintext"
            );
        }
        Err(_) => {
            // Commit on success: the failure left the state as it was, so a genuine
            // message still behaves exactly as on a fresh copy.
            let again = fx.receive(&mut session, &mut prekeys, &check.bytes);
            assert_eq!(
                again.ok().map(|r| r.decrypted.plaintext),
                check.plaintext,
                "a rejected message changed the session or the prekey store"
            );
        }
    }
}

/// The mask XORed into a genuine message, optionally cut to the mask's length.
fn xored(fx: &Fixture, selector: u8, mask: &[u8], g: &Genuine) {
    let cut = (selector / 16) & 1 == 1;
    let mut bytes = g.bytes.clone();
    if cut {
        bytes.truncate(mask.len());
    }
    if bytes.len() < mask.len() {
        bytes.resize(mask.len(), 0);
    }
    for (b, m) in bytes.iter_mut().zip(mask) {
        *b ^= m;
    }

    let (mut session, mut prekeys) = (fx.session.clone(), fx.prekeys.clone());
    let result = fx.receive(&mut session, &mut prekeys, &bytes);
    if bytes == g.bytes {
        assert_eq!(
            result.ok().map(|r| r.decrypted.plaintext),
            g.plaintext,
            "an unchanged genuine message does not behave as labelled"
        );
    } else if result.is_ok() && !fx.genuine.iter().any(|other| other.bytes == bytes) {
        panic!("a modified genuine message decrypted");
    }
}
