//! The relay link over TLS 1.3 (docs/PROTOCOL.md 1.0, 1.5) with real processes: a
//! generated certificate pinned on first use, a changed key refused with both pins
//! named, a given pin required, and a login signature that is useless on any other
//! connection (a relay passing on another relay's Challenge gets nothing).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::client::{login_message, open_link, LinkFramed, RelayClient};
use e2ee_integration::process::{binary, RelayProcess};
use e2ee_protocol::frame::{ErrorCode, Frame};
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{SinkExt, StreamExt};
use rand_core::OsRng;

const WAIT: Duration = Duration::from_secs(20);

fn relay_on(listen: &str, dir: &Path) -> RelayProcess {
    RelayProcess::start_for_test(listen, dir).expect("relay starts")
}

fn agent(name: &str, relay: &RelayProcess, dir: &Path, extra_env: &[(&str, &str)]) -> AgentProcess {
    let mut config = AgentConfig::new(name, relay.addr, &dir.join(name))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200");
    for (key, value) in extra_env {
        config = config.env(key, value);
    }
    config.start().expect("agent starts")
}

fn printed_pin(data_dir: &Path) -> String {
    let out = Command::new(binary("e2ee-relay").expect("binary"))
        .args(["--print-pin", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("--print-pin");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn pinned_info(agent: &mut AgentProcess) -> String {
    let info = agent
        .wait_for("the relay's key pinned", WAIT, |e| {
            e["event"] == "info"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("pinned the relay's TLS key"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    info["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn agents_pin_the_generated_key_on_first_use_and_talk_over_tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay_dir = tmp.path().join("relay");
    let relay = relay_on("127.0.0.1:0", &relay_dir);
    let pin = printed_pin(&relay_dir);
    assert!(pin.starts_with("sha256:") && pin.len() == 71, "{pin}");
    let mut bob = agent("bob", &relay, tmp.path(), &[]);
    assert!(pinned_info(&mut bob).contains(&pin));
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", &relay, tmp.path(), &[]);
    assert!(pinned_info(&mut alice).contains(&pin));
    alice.send_line("/msg bob over tls").expect("stdin");
    bob.wait_message("alice", "over tls", WAIT).expect("delivered");
}

#[test]
fn a_changed_relay_key_is_refused_with_both_pins_and_a_given_pin_is_required() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay_dir = tmp.path().join("relay");
    let mut relay = relay_on("127.0.0.1:0", &relay_dir);
    let listen = relay.addr.to_string();
    let old_pin = printed_pin(&relay_dir);
    let mut alice = agent("alice", &relay, tmp.path(), &[]);
    pinned_info(&mut alice);
    alice.close_stdin();
    alice.wait_exit(WAIT).expect("alice stops");

    // The relay comes back with another key.
    relay.kill9().expect("relay stops");
    std::fs::remove_file(relay_dir.join("tls-cert.pem")).expect("rm");
    std::fs::remove_file(relay_dir.join("tls-key.pem")).expect("rm");
    let relay = relay_on(&listen, &relay_dir);
    let new_pin = printed_pin(&relay_dir);
    assert_ne!(old_pin, new_pin);
    let mut alice = agent("alice", &relay, tmp.path(), &[]);
    let error = alice
        .wait_for("the changed key refused", WAIT, |e| {
            e["event"] == "error"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("TLS key changed"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let said = error["message"].as_str().unwrap_or_default();
    assert!(said.contains(&old_pin) && said.contains(&new_pin), "{said}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !alice
            .events_of("connection")
            .iter()
            .any(|e| e["state"] == "connected"),
        "{}",
        alice.report()
    );
    alice.close_stdin();
    alice.wait_exit(WAIT).expect("alice stops");

    // Given the new pin, alice connects (and keeps it).
    let mut alice = agent("alice", &relay, tmp.path(), &[("E2EE_AGENT_RELAY_PIN", &new_pin)]);
    alice
        .wait_for("connected", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "connected"
        })
        .unwrap_or_else(|e| panic!("{e}"));
    alice.close_stdin();
    alice.wait_exit(WAIT).expect("alice stops");
    let mut alice = agent("alice", &relay, tmp.path(), &[]);
    alice
        .wait_for("connected with the kept pin", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "connected"
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Reads the Challenge of a fresh link.
async fn challenged(link: &mut LinkFramed) -> ([u8; 32], [u8; 32]) {
    match link.next().await {
        Some(Ok(Frame::Challenge { relay_id, nonce })) => (relay_id, nonce),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[tokio::test]
async fn a_login_signed_for_one_connection_is_refused_on_another() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay_on("127.0.0.1:0", &tmp.path().join("relay"));
    let victim = IdentityKeyPair::generate(&mut OsRng);
    let me = *victim.public().as_bytes();

    // A man in the middle holds a link to the relay and passes its Challenge on to the
    // victim, whose own TLS connection (to him) has another channel binding.
    let (mut attacker, attacker_binding) = open_link(relay.addr).await.expect("link");
    let (relay_id, nonce) = challenged(&mut attacker).await;
    let (mut victims_link, victims_binding) = open_link(relay.addr).await.expect("link");
    challenged(&mut victims_link).await;
    assert_ne!(attacker_binding, victims_binding);
    let signature = victim.sign(&login_message(&relay_id, &nonce, &me, victims_binding.as_ref()));
    attacker
        .send(Frame::Auth {
            identity: me,
            signature,
        })
        .await
        .expect("send");
    match attacker.next().await {
        Some(Ok(Frame::Error { code, .. })) => assert_eq!(code, ErrorCode::AuthFailed),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    // The unbound login is refused over TLS too.
    let (mut link, _) = open_link(relay.addr).await.expect("link");
    let (relay_id, nonce) = challenged(&mut link).await;
    let signature = victim.sign(&login_message(&relay_id, &nonce, &me, None));
    link.send(Frame::Auth {
        identity: me,
        signature,
    })
    .await
    .expect("send");
    assert!(matches!(
        link.next().await,
        Some(Ok(Frame::Error {
            code: ErrorCode::AuthFailed,
            ..
        }))
    ));
    // Signed for its own connection, the login succeeds.
    RelayClient::connect(relay.addr, victim).await.expect("logs in");
    // A plain TCP client gets no frame from a TLS relay.
    assert!(
        RelayClient::connect_plaintext(relay.addr, IdentityKeyPair::generate(&mut OsRng))
            .await
            .is_err()
    );
}

/// A certificate authority and a relay certificate it signed for 127.0.0.1, written as
/// `ca.pem`, `chain.pem` and `key.pem` in `dir`.
fn ca_signed_certificate(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("chain.pem"), format!("{}{}", leaf.pem(), ca.pem())).expect("write");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write");
}

#[test]
fn an_agent_trusts_a_relay_certificate_signed_by_its_ca_and_refuses_another_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (pki, other) = (tmp.path().join("pki"), tmp.path().join("other-pki"));
    ca_signed_certificate(&pki);
    ca_signed_certificate(&other);
    let chain = pki.join("chain.pem").display().to_string();
    let key = pki.join("key.pem").display().to_string();
    let env = [
        ("E2EE_RELAY_STORE__FSYNC", "false"),
        ("E2EE_RELAY_TLS__CERT_FILE", chain.as_str()),
        ("E2EE_RELAY_TLS__KEY_FILE", key.as_str()),
    ];
    let relay =
        RelayProcess::start_with_env("127.0.0.1:0", &tmp.path().join("relay"), &[], &env).expect("relay");
    let ca = pki.join("ca.pem").display().to_string();
    let mut bob = agent("bob", &relay, tmp.path(), &[("E2EE_AGENT_RELAY_CA", ca.as_str())]);
    relay
        .wait_log("name claimed", WAIT)
        .expect("bob's name, over the CA-checked link");
    let mut alice = agent(
        "alice",
        &relay,
        tmp.path(),
        &[("E2EE_AGENT_RELAY_CA", ca.as_str())],
    );
    alice.send_line("/msg bob checked by a ca").expect("stdin");
    bob.wait_message("alice", "checked by a ca", WAIT)
        .expect("delivered");
    assert!(
        !alice.events_of("info").iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("pinned the relay's TLS key"))),
        "nothing pinned under a CA: {}",
        alice.report()
    );

    // An agent that trusts another authority does not log in: it keeps retrying (the
    // operator may be replacing the certificate) and never connects.
    let wrong = other.join("ca.pem").display().to_string();
    let mut mallory = agent(
        "mallory",
        &relay,
        tmp.path(),
        &[("E2EE_AGENT_RELAY_CA", wrong.as_str())],
    );
    mallory
        .wait_for("a second attempt", WAIT, |e| {
            e["event"] == "connection" && e["attempt"].as_u64().is_some_and(|n| n >= 2)
        })
        .unwrap_or_else(|e| panic!("{e}: {}", mallory.report()));
    assert!(
        !mallory
            .events_of("connection")
            .iter()
            .any(|e| e["state"] == "connected"),
        "{}",
        mallory.report()
    );
}
