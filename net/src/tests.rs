//! Handshakes between the relay's and a client's configurations, in memory.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::*;

/// Runs a TLS handshake between the two configurations, as `name`.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).map_err(|_| rustls::Error::General("name".into()))?;
    let mut c = ClientConnection::new(client, name)?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        }
        s.read_tls(&mut &buf[..])
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        }
        c.read_tls(&mut &buf[..])
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    Err(rustls::Error::General("handshake did not finish".into()))
}

fn generated() -> (tempfile::TempDir, RelayCertificate) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, made) = RelayCertificate::self_signed_in(dir.path()).expect("generated");
    assert!(made);
    (dir, cert)
}

#[test]
fn a_generated_certificate_is_kept_private_and_keeps_its_pin() {
    let (dir, cert) = generated();
    let key = dir.path().join(relay_certificate::GENERATED_KEY_FILE);
    let mode = std::fs::metadata(&key).expect("key file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (again, made) = RelayCertificate::self_signed_in(dir.path()).expect("reloaded");
    assert!(!made);
    assert_eq!(again.pin(), cert.pin());
}

#[test]
fn the_pinned_key_connects_and_both_ends_get_one_channel_binding_per_connection() {
    let (_dir, cert) = generated();
    let server = cert.server_config().expect("server");
    let (client, seen) = client_config(RelayTrust::Pinned(cert.pin())).expect("client");
    let (c1, s1) = handshake(server.clone(), client.clone(), "127.0.0.1").expect("handshake");
    assert_eq!(seen.get(), Some(cert.pin()));
    assert_eq!(c1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(c1.alpn_protocol(), Some(ALPN));
    let (b_client, b_server) = (
        channel_binding(&c1).expect("cb"),
        channel_binding(&s1).expect("cb"),
    );
    assert_eq!(b_client, b_server, "both ends agree");
    let (c2, _) = handshake(server, client, "127.0.0.1").expect("handshake");
    assert_ne!(
        channel_binding(&c2).expect("cb"),
        b_client,
        "another connection, another value"
    );
}

#[test]
fn another_key_is_refused_and_the_pin_it_showed_is_known() {
    let (_dir, cert) = generated();
    let (_other_dir, other) = generated();
    let (client, seen) = client_config(RelayTrust::Pinned(cert.pin())).expect("client");
    let result = handshake(other.server_config().expect("server"), client, "127.0.0.1");
    assert!(result.is_err());
    assert_eq!(seen.get(), Some(other.pin()), "to name both pins in the error");
}

#[test]
fn trust_on_first_use_accepts_and_records_the_pin() {
    let (_dir, cert) = generated();
    let (client, seen) = client_config(RelayTrust::FirstUse).expect("client");
    handshake(cert.server_config().expect("server"), client, "127.0.0.1").expect("handshake");
    assert_eq!(seen.get(), Some(cert.pin()));
}

#[test]
fn an_operator_certificate_is_checked_against_the_roots_and_the_name() {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["relay.example".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_file, key_file) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, format!("{}{}", leaf.pem(), ca.pem())).expect("write");
    std::fs::write(&key_file, leaf_key.serialize_pem()).expect("write");
    let relay = RelayCertificate::from_files(&cert_file, &key_file).expect("loads");
    let server = relay.server_config().expect("server");

    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let (client, _) = client_config(RelayTrust::Roots(Arc::new(roots))).expect("client");
    handshake(server.clone(), client.clone(), "relay.example").expect("the right name");
    // The same roots read from a PEM file, as the agent's relay_ca setting gives them.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write");
    let (from_file, _) = client_config(RelayTrust::roots_from_pem(&ca_file).expect("roots")).expect("client");
    handshake(server.clone(), from_file, "relay.example").expect("roots from the file");
    assert!(
        handshake(server, client.clone(), "other.example").is_err(),
        "another name"
    );
    let (_d, self_signed) = generated();
    assert!(handshake(
        self_signed.server_config().expect("server"),
        client,
        "relay.example"
    )
    .is_err());
}

#[test]
fn a_ca_file_without_a_certificate_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let err = RelayTrust::roots_from_pem(&empty)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("empty.pem") && err.contains("no certificate"),
        "{err}"
    );
    let missing = dir.path().join("missing.pem");
    let err = RelayTrust::roots_from_pem(&missing)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");
}

#[test]
fn unusable_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let err = RelayCertificate::from_files(&missing, &missing).expect_err("missing");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let err = RelayCertificate::from_files(&empty, &empty).expect_err("empty");
    assert!(err.to_string().contains("empty.pem"), "{err}");
    // A key that is not the certificate's.
    let (gen_dir, _) = generated();
    let other_key = rcgen::KeyPair::generate().expect("key");
    let wrong = dir.path().join("wrong-key.pem");
    std::fs::write(&wrong, other_key.serialize_pem()).expect("write");
    let cert = gen_dir.path().join(relay_certificate::GENERATED_CERT_FILE);
    let err = RelayCertificate::from_files(&cert, &wrong).expect_err("mismatch");
    assert!(matches!(err, NetError::Key(_)), "{err}");
}
