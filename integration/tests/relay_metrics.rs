//! The relay's Prometheus endpoint on a local port reflects what happened.

use std::io::{Read, Write};
use std::time::Duration;

use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::RelayProcess;
use e2ee_protocol::identity::IdentityKeyPair;
use rand_core::OsRng;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

fn value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_endpoint_counts_connections_and_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let relay = RelayProcess::start(dir.path(), &["--metrics-listen", &metrics_addr]).expect("relay");
    let mut alice = RelayClient::connect(relay.addr, IdentityKeyPair::generate(&mut OsRng))
        .await
        .expect("alice");
    let bob = *IdentityKeyPair::generate(&mut OsRng).public().as_bytes();
    let mut other = Vec::new();
    for n in 0..5 {
        alice
            .send_message(bob, msg_id(n), vec![1, 2, 3], &mut other)
            .await
            .expect("stored");
    }
    let text = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .expect("scrape");
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("# TYPE e2ee_relay_messages_stored_total counter"));
    assert_eq!(value(&text, "e2ee_relay_messages_stored_total"), Some(5));
    assert_eq!(value(&text, "e2ee_relay_authenticated_identities"), Some(1));
    assert_eq!(value(&text, "e2ee_relay_connections_open"), Some(1));
    // Five messages and the time of alice's login (for QueryAway): six writes, in at most
    // as many group commits.
    let batches = value(&text, "e2ee_relay_store_batches_total").expect("batches");
    assert!((1..=6).contains(&batches), "{batches} batches");
}
