//! The relay's Prometheus endpoint on a local port reflects what happened.

use std::io::{Read, Write};
use std::time::Duration;

use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::RelayProcess;
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_relay::metrics::CONTENT_TYPE;
use rand_core::OsRng;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn request(port: u16, head: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

fn scrape(port: u16) -> String {
    request(port, "GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
}

/// Scrapes until `name` reads `expected` (bounded), and returns the last scrape.
async fn wait_value(port: u16, name: &'static str, expected: u64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = tokio::task::spawn_blocking(move || scrape(port))
            .await
            .expect("scrape");
        if value(&text, name) == Some(expected) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // OpenMetrics: the family is typed without `_total`, its sample carries it.
    assert!(text.contains("# TYPE e2ee_relay_messages_stored counter"));
    assert_eq!(value(&text, "e2ee_relay_messages_stored_total"), Some(5));
    assert_eq!(value(&text, "e2ee_relay_authenticated_identities"), Some(1));
    assert_eq!(value(&text, "e2ee_relay_connections_open"), Some(1));
    // Five messages and the time of alice's login (for QueryAway): six writes, in at most
    // as many group commits.
    let batches = value(&text, "e2ee_relay_store_batches_total").expect("batches");
    assert!((1..=6).contains(&batches), "{batches} batches");
}

#[tokio::test]
async fn serves_the_metrics_path_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let _relay = RelayProcess::start(dir.path(), &["--metrics-listen", &metrics_addr]).expect("relay");
    let answers = tokio::task::spawn_blocking(move || {
        [
            scrape(port),
            request(port, "GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"),
            request(port, "GET /metrics/x HTTP/1.1\r\nhost: localhost\r\n\r\n"),
            request(port, "POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
        ]
    })
    .await
    .expect("requests");
    assert!(answers[0].starts_with("HTTP/1.1 200 OK"), "{}", answers[0]);
    assert!(
        answers[0].contains(&format!("content-type: {CONTENT_TYPE}")),
        "{}",
        answers[0]
    );
    assert!(answers[0].ends_with("# EOF\n"), "{}", answers[0]);
    for other in &answers[1..3] {
        assert!(other.starts_with("HTTP/1.1 404 Not Found"), "{other}");
        assert!(!other.contains("e2ee_relay_"), "{other}");
    }
    assert!(
        answers[3].starts_with("HTTP/1.1 405 Method Not Allowed"),
        "{}",
        answers[3]
    );
}

/// The stored backlog and the database size come from the store, so a restarted relay
/// reports the messages a previous run left waiting (the counters start again at 0).
#[tokio::test]
async fn after_a_restart_the_stored_backlog_gauge_shows_the_messages_still_waiting() {
    const WAITING: u64 = 7;
    let dir = tempfile::tempdir().expect("tempdir");
    let bob = IdentityKeyPair::generate(&mut OsRng);
    let bob_key = *bob.public().as_bytes();
    {
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut relay = RelayProcess::start(dir.path(), &["--metrics-listen", &metrics_addr]).expect("relay");
        let mut alice = RelayClient::connect(relay.addr, IdentityKeyPair::generate(&mut OsRng))
            .await
            .expect("alice");
        let mut other = Vec::new();
        for n in 0..WAITING {
            alice
                .send_message(bob_key, msg_id(n), vec![7; 100], &mut other)
                .await
                .expect("stored");
        }
        let text = wait_value(port, "e2ee_relay_stored_messages", WAITING).await;
        assert_eq!(
            value(&text, "e2ee_relay_stored_messages"),
            Some(WAITING),
            "{text}"
        );
        assert!(text.contains("# TYPE e2ee_relay_stored_messages gauge"), "{text}");
        let status = relay.terminate(Duration::from_secs(10)).expect("stops");
        assert!(status.success(), "{status}");
    }

    let port = free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let _relay_again =
        RelayProcess::start(dir.path(), &["--metrics-listen", &metrics_addr]).expect("restart");
    let relay_addr = _relay_again.addr;
    let text = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .expect("scrape");
    assert_eq!(
        value(&text, "e2ee_relay_stored_messages"),
        Some(WAITING),
        "{text}"
    );
    assert_eq!(
        value(&text, "e2ee_relay_messages_stored_total"),
        Some(0),
        "a new run"
    );
    let db_bytes = value(&text, "e2ee_relay_database_bytes").expect("database size");
    assert!(db_bytes >= 4096, "{db_bytes} bytes");

    // Bob collects and acknowledges them: the backlog drains to zero.
    let mut bob = RelayClient::connect(relay_addr, bob).await.expect("bob");
    let got = bob
        .receive_messages(WAITING as usize, Duration::from_secs(10))
        .await
        .expect("delivered");
    assert_eq!(got.len() as u64, WAITING);
    let text = wait_value(port, "e2ee_relay_stored_messages", 0).await;
    assert_eq!(value(&text, "e2ee_relay_stored_messages"), Some(0), "{text}");
    assert_eq!(
        value(&text, "e2ee_relay_messages_acked_total"),
        Some(WAITING),
        "{text}"
    );
}
