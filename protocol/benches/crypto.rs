//! Criterion benchmarks of the crypto core: X3DH session set-up (both sides), encrypt +
//! decrypt of a 256-byte message in an established chain, and one DH ratchet step.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::message::Message;
use e2ee_protocol::prekey::PreKeyStore;
use e2ee_protocol::session::{receive, Session};
use rand_core::OsRng;

struct Pair {
    alice_id: IdentityKeyPair,
    bob_id: IdentityKeyPair,
    bob_prekeys: PreKeyStore,
    alice: Session,
    bob: Session,
}

fn established() -> Pair {
    let alice_id = IdentityKeyPair::generate(&mut OsRng);
    let bob_id = IdentityKeyPair::generate(&mut OsRng);
    let mut bob_prekeys = PreKeyStore::generate(&bob_id, 1, &mut OsRng);
    let bundle = bob_prekeys.bundle(bob_id.public());
    let mut alice = Session::initiate(&alice_id, &bundle, &mut OsRng).expect("initiate");
    let first = alice.encrypt(b"hello", &mut OsRng).expect("encrypt");
    let mut bob = receive(
        None,
        &bob_id,
        &mut bob_prekeys,
        alice_id.public(),
        &first,
        &mut OsRng,
    )
    .expect("accept")
    .new_session
    .expect("session");
    // One reply, so both sides are past the handshake and send Normal messages.
    let reply = bob.encrypt(b"hi", &mut OsRng).expect("encrypt");
    receive(
        Some(&mut alice),
        &alice_id,
        &mut bob_prekeys,
        bob_id.public(),
        &reply,
        &mut OsRng,
    )
    .expect("reply");
    Pair {
        alice_id,
        bob_id,
        bob_prekeys,
        alice,
        bob,
    }
}

fn x3dh_setup(c: &mut Criterion) {
    let alice_id = IdentityKeyPair::generate(&mut OsRng);
    let bob_id = IdentityKeyPair::generate(&mut OsRng);
    c.bench_function("x3dh_setup_both_sides", |b| {
        b.iter_batched(
            || PreKeyStore::generate(&bob_id, 1, &mut OsRng),
            |mut prekeys| {
                let bundle = prekeys.bundle(bob_id.public());
                let mut alice = Session::initiate(&alice_id, &bundle, &mut OsRng).expect("initiate");
                let first = alice.encrypt(b"hello", &mut OsRng).expect("encrypt");
                receive(None, &bob_id, &mut prekeys, alice_id.public(), &first, &mut OsRng).expect("accept")
            },
            BatchSize::SmallInput,
        )
    });
}

fn encrypt_decrypt_256(c: &mut Criterion) {
    let mut pair = established();
    let body = [0x61u8; 256];
    c.bench_function("encrypt_decrypt_256b_in_chain", |b| {
        b.iter(|| {
            let wire = pair.alice.encrypt(&body, &mut OsRng).expect("encrypt");
            let Ok(Message::Normal(m)) = Message::decode(&wire) else {
                unreachable!("after a reply alice sends normal messages")
            };
            pair.bob.decrypt(&m, &mut OsRng).expect("decrypt")
        })
    });
}

/// Crypto v1 (key and nonce from the message key alone) against v2 (a random salt per
/// message, drawn from the OS, feeds the key and nonce), side by side.
fn encrypt_decrypt_256_v1_vs_v2(c: &mut Criterion) {
    let body = [0x61u8; 256];
    let mut group = c.benchmark_group("encrypt_decrypt_256b");
    for (name, v2) in [("v1", false), ("v2", true)] {
        let mut pair = established();
        group.bench_function(name, |b| {
            b.iter(|| {
                let wire = if v2 {
                    pair.alice.encrypt(&body, &mut OsRng)
                } else {
                    pair.alice.encrypt_with_salt(&body, None)
                }
                .expect("encrypt");
                let Ok(Message::Normal(m)) = Message::decode(&wire) else {
                    unreachable!("after a reply alice sends normal messages")
                };
                pair.bob.decrypt(&m, &mut OsRng).expect("decrypt")
            })
        });
    }
    group.finish();
}

fn dh_ratchet_step(c: &mut Criterion) {
    let mut pair = established();
    c.bench_function("dh_ratchet_step_round_trip", |b| {
        b.iter(|| {
            // Each direction change is one DH ratchet step on the receiving side.
            let wire = pair.bob.encrypt(b"ping", &mut OsRng).expect("encrypt");
            receive(
                Some(&mut pair.alice),
                &pair.alice_id,
                &mut pair.bob_prekeys,
                pair.bob_id.public(),
                &wire,
                &mut OsRng,
            )
            .expect("alice decrypts");
            let wire = pair.alice.encrypt(b"pong", &mut OsRng).expect("encrypt");
            receive(
                Some(&mut pair.bob),
                &pair.bob_id,
                &mut pair.bob_prekeys,
                pair.alice_id.public(),
                &wire,
                &mut OsRng,
            )
            .expect("bob decrypts")
        })
    });
}

criterion_group!(
    benches,
    x3dh_setup,
    encrypt_decrypt_256,
    encrypt_decrypt_256_v1_vs_v2,
    dh_ratchet_step
);
criterion_main!(benches);
