//! Known-answer tests: every value of `tests/vectors/e2ee-chat-v1.json`, including the
//! intermediate keys that the public API does not expose.

use serde_json::Value;

use super::queue_rng::QueueRng;
use crate::consts::{
    DR_AEAD_INFO, DR_ROOT_INFO, MAX_SKIP, MAX_STORED_SKIPPED_KEYS, SPK_SIG_CONTEXT, X3DH_INFO,
};
use crate::header::Header;
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kdf::{ChainKey, MessageKey, RootKey};
use crate::keys::{KeyPair, PrivateKey, PublicKey};
use crate::message::Message;
use crate::prekey::{spk_signature_message, PreKeyBundle, PreKeyStore, SignedPreKey};
use crate::session::{receive, Session};
use crate::x3dh;

const VECTORS: &str = include_str!("../../tests/vectors/e2ee-chat-v1.json");

pub(super) struct Vectors(Value);

impl Vectors {
    pub(super) fn load() -> Self {
        Self::parse(VECTORS)
    }

    pub(super) fn parse(json: &str) -> Self {
        Self(serde_json::from_str(json).expect("vector file is JSON"))
    }

    pub(super) fn hex(&self, path: &str) -> Vec<u8> {
        let mut v = &self.0;
        for part in path.split('.') {
            v = &v[part];
        }
        hex::decode(v.as_str().unwrap_or_else(|| panic!("{path} is a string"))).expect("hex")
    }

    pub(super) fn key(&self, path: &str) -> [u8; 32] {
        self.hex(path).try_into().expect("32 bytes")
    }

    fn ascii(&self, path: &str) -> Vec<u8> {
        self.0["constants"][path]
            .as_str()
            .expect("string")
            .as_bytes()
            .to_vec()
    }
}

pub(super) struct Parties {
    pub(super) alice: IdentityKeyPair,
    pub(super) bob: IdentityKeyPair,
    spk: KeyPair,
    opk: KeyPair,
    ek: KeyPair,
}

impl Parties {
    pub(super) fn spk_public(&self) -> &PublicKey {
        self.spk.public_key()
    }
}

pub(super) fn parties(v: &Vectors) -> Parties {
    Parties {
        alice: IdentityKeyPair::from_seed(&v.key("inputs.ik_a_seed")),
        bob: IdentityKeyPair::from_seed(&v.key("inputs.ik_b_seed")),
        spk: KeyPair::from_private(PrivateKey::from_bytes(v.key("inputs.spk_b_priv"))),
        opk: KeyPair::from_private(PrivateKey::from_bytes(v.key("inputs.opk_b_priv"))),
        ek: KeyPair::from_private(PrivateKey::from_bytes(v.key("inputs.ek_a_priv"))),
    }
}

pub(super) fn bob_store(p: &Parties) -> PreKeyStore {
    PreKeyStore::from_parts(SignedPreKey::new(&p.bob, p.spk.clone()), vec![p.opk.clone()])
}

#[test]
fn constants_match() {
    let v = Vectors::load();
    assert_eq!(v.ascii("x3dh_info_ascii"), X3DH_INFO);
    assert_eq!(v.ascii("spk_sig_context_ascii"), SPK_SIG_CONTEXT);
    assert_eq!(v.ascii("dr_root_info_ascii"), DR_ROOT_INFO);
    assert_eq!(v.ascii("dr_aead_info_ascii"), DR_AEAD_INFO);
    assert_eq!(v.0["constants"]["max_skip"].as_u64(), Some(u64::from(MAX_SKIP)));
    assert_eq!(
        v.0["constants"]["max_stored_skipped_keys"].as_u64(),
        Some(MAX_STORED_SKIPPED_KEYS as u64)
    );
}

#[test]
fn identity_keys_and_their_x25519_forms() {
    let v = Vectors::load();
    let p = parties(&v);
    assert_eq!(p.alice.public().as_bytes(), &v.key("x3dh.ik_a_ed25519_pub"));
    assert_eq!(p.bob.public().as_bytes(), &v.key("x3dh.ik_b_ed25519_pub"));
    assert_eq!(
        p.alice.x25519_private().public_key().as_bytes(),
        &v.key("x3dh.ik_a_x25519_pub")
    );
    assert_eq!(
        p.bob.x25519_private().public_key().as_bytes(),
        &v.key("x3dh.ik_b_x25519_pub")
    );
    assert_eq!(
        p.alice.public().to_x25519().as_bytes(),
        &v.key("x3dh.ik_a_x25519_pub")
    );
    assert_eq!(
        p.bob.public().to_x25519().as_bytes(),
        &v.key("x3dh.ik_b_x25519_pub")
    );
    // The clamped scalar: X25519 clamps, so compare after clamping our stored scalar.
    let mut a = p.alice.signing_scalar_for_tests();
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    assert_eq!(a, v.key("x3dh.ik_a_x25519_priv_clamped"));
    let mut b = p.bob.signing_scalar_for_tests();
    b[0] &= 248;
    b[31] &= 127;
    b[31] |= 64;
    assert_eq!(b, v.key("x3dh.ik_b_x25519_priv_clamped"));
}

#[test]
fn prekeys_signature_and_bundle() {
    let v = Vectors::load();
    let p = parties(&v);
    assert_eq!(p.spk.public_key().as_bytes(), &v.key("x3dh.spk_b_pub"));
    assert_eq!(p.opk.public_key().as_bytes(), &v.key("x3dh.opk_b_pub"));
    assert_eq!(p.ek.public_key().as_bytes(), &v.key("x3dh.ek_a_pub"));
    assert_eq!(
        spk_signature_message(p.spk.public_key()).to_vec(),
        v.hex("x3dh.spk_sig_message")
    );
    let signed = SignedPreKey::new(&p.bob, p.spk.clone());
    assert_eq!(signed.signature().to_vec(), v.hex("x3dh.spk_b_sig_rfc8032"));
    let bundle = bob_store(&p).bundle(p.bob.public());
    assert_eq!(bundle.encode(), v.hex("x3dh.bundle_b_wire"));
    let decoded = PreKeyBundle::decode_verified(&v.hex("x3dh.bundle_b_wire")).expect("bundle verifies");
    assert_eq!(decoded, bundle);
}

#[test]
fn x3dh_dh_values_and_shared_secrets() {
    let v = Vectors::load();
    let p = parties(&v);
    let spk = PublicKey::from_bytes(v.key("x3dh.spk_b_pub"));
    let opk = PublicKey::from_bytes(v.key("x3dh.opk_b_pub"));
    let dh1 = p.alice.diffie_hellman(&spk).expect("dh1");
    let dh2 = p.ek.diffie_hellman(&p.bob.public().to_x25519()).expect("dh2");
    let dh3 = p.ek.diffie_hellman(&spk).expect("dh3");
    let dh4 = p.ek.diffie_hellman(&opk).expect("dh4");
    assert_eq!(dh1.as_bytes(), &v.key("x3dh.dh1"));
    assert_eq!(dh2.as_bytes(), &v.key("x3dh.dh2"));
    assert_eq!(dh3.as_bytes(), &v.key("x3dh.dh3"));
    assert_eq!(dh4.as_bytes(), &v.key("x3dh.dh4"));
    let mut ikm = vec![0xff; 32];
    for dh in [&dh1, &dh2, &dh3, &dh4] {
        ikm.extend_from_slice(dh.as_bytes());
    }
    assert_eq!(ikm, v.hex("x3dh.kdf_ikm"));

    let bundle = bob_store(&p).bundle(p.bob.public());
    let out = x3dh::initiate(&p.alice, &bundle, &p.ek).expect("initiate");
    assert_eq!(out.shared_secret.bytes(), &v.key("x3dh.sk"));
    assert_eq!(out.one_time_prekey, Some(opk));
    let without = bundle.with_one_time_prekey(None);
    let out = x3dh::initiate(&p.alice, &without, &p.ek).expect("initiate without opk");
    assert_eq!(out.shared_secret.bytes(), &v.key("x3dh.sk_without_opk"));

    let sk_b = x3dh::respond(
        &p.bob,
        &p.spk,
        Some(p.opk.private_key()),
        p.alice.public(),
        p.ek.public_key(),
    )
    .expect("respond");
    assert_eq!(sk_b.bytes(), &v.key("x3dh.sk"));
    let sk_b = x3dh::respond(&p.bob, &p.spk, None, p.alice.public(), p.ek.public_key()).expect("respond");
    assert_eq!(sk_b.bytes(), &v.key("x3dh.sk_without_opk"));
    assert_eq!(
        x3dh::associated_data(p.alice.public(), p.bob.public()).to_vec(),
        v.hex("x3dh.ad")
    );
}

fn check_message_keys(v: &Vectors, tag: &str, chain: &ChainKey) -> (MessageKey, ChainKey) {
    let mk = chain.message_key();
    let next = chain.next();
    assert_eq!(
        mk.bytes(),
        &v.key(&format!("double_ratchet.{tag}.mk")),
        "{tag} mk"
    );
    assert_eq!(
        next.bytes(),
        &v.key(&format!("double_ratchet.{tag}.ck_next")),
        "{tag} ck_next"
    );
    let (key, nonce) = mk.aead_key_and_nonce(None);
    assert_eq!(
        key,
        v.key(&format!("double_ratchet.{tag}.aead_key")),
        "{tag} aead key"
    );
    assert_eq!(
        nonce.to_vec(),
        v.hex(&format!("double_ratchet.{tag}.aead_nonce")),
        "{tag} nonce"
    );
    (mk, next)
}

#[test]
fn double_ratchet_key_schedule() {
    let v = Vectors::load();
    let p = parties(&v);
    let a0 = KeyPair::from_private(PrivateKey::from_bytes(v.key("inputs.ratchet_a0_priv")));
    let b0 = KeyPair::from_private(PrivateKey::from_bytes(v.key("inputs.ratchet_b0_priv")));
    assert_eq!(
        a0.public_key().as_bytes(),
        &v.key("double_ratchet.ratchet_a0_pub")
    );
    assert_eq!(
        b0.public_key().as_bytes(),
        &v.key("double_ratchet.ratchet_b0_pub")
    );

    let sk = RootKey::from_bytes(v.key("x3dh.sk"));
    let dh = a0.diffie_hellman(p.spk.public_key()).expect("dh");
    assert_eq!(dh.as_bytes(), &v.key("double_ratchet.dh_a0_spk_b"));
    let (rk1, cks_a) = sk.ratchet(&dh);
    assert_eq!(rk1.bytes(), &v.key("double_ratchet.rk1"));
    assert_eq!(cks_a.bytes(), &v.key("double_ratchet.cks_a_0"));

    let ad = x3dh::associated_data(p.alice.public(), p.bob.public());
    let mut chain = cks_a;
    for (tag, n, pt) in [
        ("a0", 0u32, "inputs.plaintext_a0"),
        ("a1", 1, "inputs.plaintext_a1"),
    ] {
        let (mk, next) = check_message_keys(&v, tag, &chain);
        let header = Header {
            ratchet_key: *a0.public_key(),
            previous_chain_len: 0,
            n,
            salt: None,
        };
        assert_eq!(
            header.encode().to_vec(),
            v.hex(&format!("double_ratchet.{tag}.header"))
        );
        let mut aad = ad.to_vec();
        aad.extend_from_slice(&header.encode());
        if tag == "a0" {
            assert_eq!(aad, v.hex("double_ratchet.a0.aead_aad"));
        }
        let ct = mk.seal(None, &aad, &v.hex(pt)).expect("seal");
        assert_eq!(ct, v.hex(&format!("double_ratchet.{tag}.ciphertext")));
        chain = next;
    }

    // Bob: receiving chain from SPK, then his first sending chain from b0.
    let dh_recv = p.spk.diffie_hellman(a0.public_key()).expect("dh");
    let (rk_b1, ckr_b) = sk.ratchet(&dh_recv);
    assert_eq!(rk_b1.bytes(), &v.key("double_ratchet.rk1"));
    assert_eq!(ckr_b.bytes(), &v.key("double_ratchet.cks_a_0"));
    let dh = b0.diffie_hellman(a0.public_key()).expect("dh");
    assert_eq!(dh.as_bytes(), &v.key("double_ratchet.dh_b0_a0"));
    let (rk2, cks_b) = rk_b1.ratchet(&dh);
    assert_eq!(rk2.bytes(), &v.key("double_ratchet.rk2"));
    assert_eq!(cks_b.bytes(), &v.key("double_ratchet.cks_b_0"));
    let (mk, _) = check_message_keys(&v, "b0", &cks_b);
    let header = Header {
        ratchet_key: *b0.public_key(),
        previous_chain_len: 0,
        n: 0,
        salt: None,
    };
    assert_eq!(header.encode().to_vec(), v.hex("double_ratchet.b0.header"));
    let mut aad = ad.to_vec();
    aad.extend_from_slice(&header.encode());
    assert_eq!(
        mk.seal(None, &aad, &v.hex("inputs.plaintext_b0")).expect("seal"),
        v.hex("double_ratchet.b0.ciphertext")
    );
}

#[test]
fn sessions_reproduce_full_wire_bytes() {
    let v = Vectors::load();
    let p = parties(&v);
    let mut store = bob_store(&p);
    let bundle = PreKeyBundle::decode_verified(&store.bundle(p.bob.public()).encode()).expect("bundle");

    let mut rng_a = QueueRng::new(&[&v.key("inputs.ek_a_priv"), &v.key("inputs.ratchet_a0_priv")]);
    let mut alice = Session::initiate(&p.alice, &bundle, &mut rng_a).expect("initiate");
    assert_eq!(alice.root_key().bytes(), &v.key("double_ratchet.rk1"));
    assert_eq!(
        alice.sending_chain().map(|c| *c.bytes()),
        Some(v.key("double_ratchet.cks_a_0"))
    );
    let wire_a0 = alice
        .encrypt_with_salt(&v.hex("inputs.plaintext_a0"), None)
        .expect("encrypt a0");
    let wire_a1 = alice
        .encrypt_with_salt(&v.hex("inputs.plaintext_a1"), None)
        .expect("encrypt a1");
    assert_eq!(wire_a0, v.hex("double_ratchet.a0.wire_prekey_message"));
    assert_eq!(wire_a1, v.hex("double_ratchet.a1.wire_prekey_message"));

    let mut rng_b = QueueRng::new(&[&v.key("inputs.ratchet_b0_priv")]);
    let received =
        receive(None, &p.bob, &mut store, p.alice.public(), &wire_a0, &mut rng_b).expect("b gets a0");
    assert_eq!(received.decrypted.plaintext, v.hex("inputs.plaintext_a0"));
    let mut bob = received.new_session.expect("a session was created");
    assert_eq!(store.one_time_count(), 0, "the used one-time prekey is deleted");
    let received = receive(
        Some(&mut bob),
        &p.bob,
        &mut store,
        p.alice.public(),
        &wire_a1,
        &mut rng_b,
    )
    .expect("a1");
    assert_eq!(received.decrypted.plaintext, v.hex("inputs.plaintext_a1"));
    assert!(received.new_session.is_none(), "a1 belongs to the same session");

    let wire_b0 = bob
        .encrypt_with_salt(&v.hex("inputs.plaintext_b0"), None)
        .expect("encrypt b0");
    assert_eq!(wire_b0, v.hex("double_ratchet.b0.wire_normal_message"));
    assert!(matches!(Message::decode(&wire_b0), Ok(Message::Normal(_))));

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
    assert_eq!(received.decrypted.plaintext, v.hex("inputs.plaintext_b0"));
    assert!(
        !alice.awaiting_reply(),
        "after a reply alice sends normal messages"
    );
    let next = alice
        .encrypt_with_salt(b"after the reply", None)
        .expect("encrypt");
    assert_eq!(next[0], crate::consts::MSG_TYPE_NORMAL);
}

#[test]
fn python_generated_bundle_verifies() {
    let v = Vectors::load();
    let wire = v.hex("python_generated_bundle.bundle_wire");
    let bundle = PreKeyBundle::decode_verified(&wire).expect("independent bundle verifies");
    assert_eq!(
        bundle.identity.as_bytes(),
        &v.key("python_generated_bundle.identity_key")
    );
    assert_eq!(
        bundle.signed_prekey.as_bytes(),
        &v.key("python_generated_bundle.signed_pre_key")
    );
    assert_eq!(
        bundle.signature.to_vec(),
        v.hex("python_generated_bundle.signed_pre_key_sig")
    );
    assert_eq!(
        spk_signature_message(&bundle.signed_prekey).to_vec(),
        v.hex("python_generated_bundle.sig_message")
    );
    let seeded = IdentityKeyPair::from_seed(&v.key("python_generated_bundle.ik_seed"));
    assert_eq!(seeded.public(), &bundle.identity);
    assert_eq!(bundle.encode(), wire);

    let mut tampered = wire.clone();
    tampered[32 + 32 + 5] ^= 1;
    assert!(PreKeyBundle::decode_verified(&tampered).is_err());
    let _ = IdentityKey::from_bytes(v.key("python_generated_bundle.identity_key")).expect("valid key");
}
