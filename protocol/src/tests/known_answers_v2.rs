//! Known-answer tests of crypto v2 (`tests/vectors/e2ee-chat-v2.json`, computed by
//! `make_v2_vectors.py` from the v1 vectors without this crate): the salted AEAD, the
//! 56-byte header, the v2 message types, and the session reset request.

use super::known_answers::{bob_store, parties, Vectors};
use super::queue_rng::QueueRng;
use crate::consts::SALT_LEN;
use crate::kdf::RootKey;
use crate::keys::{KeyPair, PrivateKey};
use crate::message::Message;
use crate::prekey::PreKeyBundle;
use crate::session::{receive, Session};
use crate::session_reset::{ResetReason, ResetRequest};

const VECTORS_V2: &str = include_str!("../../tests/vectors/e2ee-chat-v2.json");

fn salt(v2: &Vectors, tag: &str) -> [u8; SALT_LEN] {
    v2.hex(&format!("double_ratchet.{tag}.salt"))
        .try_into()
        .expect("16 bytes")
}

#[test]
fn salted_aead_keys_and_nonces() {
    let v1 = Vectors::load();
    let v2 = Vectors::parse(VECTORS_V2);
    let p = parties(&v1);
    let a0 = KeyPair::from_private(PrivateKey::from_bytes(v1.key("inputs.ratchet_a0_priv")));
    let sk = RootKey::from_bytes(v1.key("x3dh.sk"));
    let (_, chain) = sk.ratchet(&a0.diffie_hellman(p.spk_public()).expect("dh"));
    for (tag, chain) in [("a0", chain.clone()), ("a1", chain.next())] {
        let (key, nonce) = chain.message_key().aead_key_and_nonce(Some(&salt(&v2, tag)));
        assert_eq!(
            key,
            v2.key(&format!("double_ratchet.{tag}.aead_key")),
            "{tag} key"
        );
        assert_eq!(
            nonce.to_vec(),
            v2.hex(&format!("double_ratchet.{tag}.aead_nonce")),
            "{tag} nonce"
        );
    }
}

#[test]
fn v2_sessions_reproduce_full_wire_bytes_and_read_each_other() {
    let v1 = Vectors::load();
    let v2 = Vectors::parse(VECTORS_V2);
    let p = parties(&v1);
    let mut store = bob_store(&p);
    let bundle = PreKeyBundle::decode_verified(&store.bundle(p.bob.public()).encode()).expect("bundle");
    let mut rng_a = QueueRng::new(&[&v1.key("inputs.ek_a_priv"), &v1.key("inputs.ratchet_a0_priv")]);
    let mut alice = Session::initiate(&p.alice, &bundle, &mut rng_a).expect("initiate");
    let wire_a0 =
        (alice.encrypt_with_salt(&v1.hex("inputs.plaintext_a0"), Some(salt(&v2, "a0")))).expect("encrypt a0");
    let wire_a1 =
        (alice.encrypt_with_salt(&v1.hex("inputs.plaintext_a1"), Some(salt(&v2, "a1")))).expect("encrypt a1");
    assert_eq!(wire_a0, v2.hex("double_ratchet.a0.wire_prekey_message"));
    assert_eq!(wire_a1, v2.hex("double_ratchet.a1.wire_prekey_message"));

    let mut rng_b = QueueRng::new(&[&v1.key("inputs.ratchet_b0_priv")]);
    let received = receive(None, &p.bob, &mut store, p.alice.public(), &wire_a0, &mut rng_b).expect("a0");
    assert_eq!(received.decrypted.plaintext, v1.hex("inputs.plaintext_a0"));
    let mut bob = received.new_session.expect("a session was created");
    let received = receive(
        Some(&mut bob),
        &p.bob,
        &mut store,
        p.alice.public(),
        &wire_a1,
        &mut rng_b,
    )
    .expect("a1");
    assert_eq!(received.decrypted.plaintext, v1.hex("inputs.plaintext_a1"));

    let wire_b0 =
        (bob.encrypt_with_salt(&v1.hex("inputs.plaintext_b0"), Some(salt(&v2, "b0")))).expect("encrypt b0");
    assert_eq!(wire_b0, v2.hex("double_ratchet.b0.wire_normal_message"));
    let decoded = Message::decode(&wire_b0).expect("decodes");
    assert_eq!(decoded.header().encode(), v2.hex("double_ratchet.b0.header"));
    let mut rng_a2 = QueueRng::new(&[&[0x42; 32]]);
    let received = receive(
        Some(&mut alice),
        &p.alice,
        &mut store,
        p.bob.public(),
        &wire_b0,
        &mut rng_a2,
    )
    .expect("b0");
    assert_eq!(received.decrypted.plaintext, v1.hex("inputs.plaintext_b0"));
}

#[test]
fn reset_request_bytes() {
    let v1 = Vectors::load();
    let v2 = Vectors::parse(VECTORS_V2);
    let p = parties(&v1);
    let wire = v2.hex("reset_request.wire");
    let request = ResetRequest::decode_verified(&wire).expect("verifies");
    assert_eq!(request.requester, *p.bob.public());
    assert_eq!(request.peer, *p.alice.public());
    assert_eq!(
        request.ratchet_key.as_bytes(),
        &v2.key("reset_request.ratchet_key")
    );
    assert_eq!((request.n, request.reason), (1, ResetReason::ReusedPosition));
    // Ed25519 (RFC 8032) is deterministic: signing again gives the same bytes.
    assert_eq!(request.sign(&p.bob).expect("sign"), wire);
}
