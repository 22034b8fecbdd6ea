//! Smoke tests of the load generator against an in-process relay: a few pairs for a
//! couple of seconds at a low rate, with and without churn and crypto. They check
//! correctness (every acknowledged message delivered), not speed: performance lives in
//! `e2ee-load bench`, never in timed tests.

use std::time::Duration;

use e2ee_integration::load::target::Kind;
use e2ee_integration::load::{run, ChurnSpec, Endpoint, LoadConfig};
use e2ee_integration::process::spawn_relay;
use e2ee_relay::settings::StoreEngine;
use e2ee_relay::RelayHandle;

fn relay(engine: StoreEngine) -> (RelayHandle, tempfile::TempDir) {
    spawn_relay(|settings| {
        settings.store.engine = engine;
        settings.limits.rate_capacity = 100_000;
        settings.limits.request_rate_capacity = 100_000;
        settings.limits.rate_refill_per_sec = 100_000;
    })
    .expect("relay starts")
}

fn endpoint(handle: &RelayHandle) -> Endpoint {
    Endpoint {
        kind: Kind::Relay,
        addr: handle.addr,
        label: "relay (test)".into(),
        pid: None,
        companions: Vec::new(),
        relays: Vec::new(),
    }
}

fn small(rate: f64) -> LoadConfig {
    LoadConfig {
        pairs: 4,
        rate: Some(rate),
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        size: 64,
        drain: Duration::from_secs(10),
        progress: false,
        ..LoadConfig::default()
    }
}

#[tokio::test]
async fn open_loop_run_delivers_every_acknowledged_message() {
    let (handle, _dir) = relay(StoreEngine::Memory);
    let report = run(&small(400.0), &endpoint(&handle)).await.expect("run");
    assert!(report.sent >= 700, "about 800 offered, sent {}", report.sent);
    assert_eq!(report.acked, Some(report.sent));
    assert_eq!(report.delivered, report.sent);
    assert_eq!(report.all_acked_delivered, Some(true));
    assert_eq!(report.undelivered, 0);
    assert!(report.latency_us.count > 0 && report.latency_us.p50 > 0);
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert!(!report.timeline.is_empty());
}

#[tokio::test]
async fn churning_clients_lose_no_acknowledged_message() {
    let (handle, _dir) = relay(StoreEngine::Sqlite);
    let cfg = LoadConfig {
        duration: Duration::from_secs(3),
        churn: Some(ChurnSpec::parse("25%/500ms").expect("churn spec")),
        ..small(400.0)
    };
    let report = run(&cfg, &endpoint(&handle)).await.expect("run");
    let availability = report.availability.as_ref().expect("churn results");
    assert!(availability.drops >= 4, "drops: {}", availability.drops);
    assert!(availability.reconnects_ok >= availability.drops);
    assert_eq!(report.all_acked_delivered, Some(true), "{}", report.summary());
    assert_eq!(
        report.acked,
        Some(report.sent),
        "every send acknowledged in the end"
    );
    assert_eq!(report.delivered, report.sent);
}

#[tokio::test]
async fn e2e_and_closed_loop_runs_decrypt_everything() {
    let (handle, _dir) = relay(StoreEngine::Memory);
    let cfg = LoadConfig {
        pairs: 2,
        e2e: true,
        duration: Duration::from_secs(1),
        ..small(200.0)
    };
    let report = run(&cfg, &endpoint(&handle)).await.expect("e2e run");
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(report.delivered, report.sent);

    let closed = LoadConfig {
        rate: None,
        window: 8,
        duration: Duration::from_secs(1),
        ..small(0.0)
    };
    let report = run(&closed, &endpoint(&handle)).await.expect("closed-loop run");
    assert!(report.delivered > 0);
    assert_eq!(report.all_acked_delivered, Some(true));
}

/// The durable peers the bench compares the relay with, and the relay cluster: Redis
/// streams (XADD acknowledged after the AOF fsync), NATS JetStream (acknowledged
/// publishes, a durable pull consumer per recipient, churned), and two relays on one
/// Redis with churned clients moving between them. Every acknowledged message is
/// delivered.
#[tokio::test]
async fn durable_peers_and_a_two_relay_cluster_deliver_every_acknowledged_message() {
    use e2ee_integration::load::target::{Server, TargetSpec};
    let runs = [
        ("redis-streams", None),
        ("nats-jetstream", Some("25%/500ms")),
        ("relay-redis-cross", Some("25%/500ms")),
    ];
    for (target, churn) in runs {
        let spec = TargetSpec::parse(target).expect("target");
        let server = tokio::task::spawn_blocking(move || Server::start(&spec, None))
            .await
            .expect("join")
            .expect("target starts");
        let cfg = LoadConfig {
            duration: Duration::from_secs(3),
            churn: churn.map(|c| ChurnSpec::parse(c).expect("churn spec")),
            ..small(400.0)
        };
        let report = run(&cfg, &server.endpoint()).await.expect("run");
        assert_eq!(
            report.all_acked_delivered,
            Some(true),
            "{target}: {}",
            report.summary()
        );
        assert_eq!(report.acked, Some(report.sent), "{target}: {}", report.summary());
        assert_eq!(report.delivered, report.sent, "{target}");
        if churn.is_some() {
            let availability = report.availability.as_ref().expect("churn results");
            assert!(availability.drops >= 4, "{target}: drops {}", availability.drops);
        }
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .expect("stopped");
    }
}
