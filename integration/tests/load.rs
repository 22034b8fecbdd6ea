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

/// The group fan-out benchmark, both modes (MLS-shaped headers and real MLS), on a
/// short run with 10 members: every copy of every acknowledged upload reaches each of
/// the 9 other members exactly once and is acknowledged. The last run lowers the
/// largest Welcome so that members are added in several commits.
#[tokio::test]
async fn group_fan_out_delivers_every_copy_exactly_once() {
    use e2ee_integration::load::group::{group, GroupConfig};
    let (handle, _dir) = relay(StoreEngine::Sqlite);
    for (mls, max_welcome) in [(false, 65_535), (true, 65_535), (true, 4_000)] {
        let cfg = GroupConfig {
            members: 10,
            rate: 50.0,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
            size: 64,
            mls,
            drain: Duration::from_secs(20),
            max_welcome,
        };
        let report = group(&cfg, &endpoint(&handle)).await.expect("group run");
        let summary = report.summary();
        if max_welcome < 65_535 {
            assert!(report.setup.commits > 1, "{summary}");
            assert!(
                report.setup.welcome_all_at_once_bytes > Some(max_welcome),
                "{summary}"
            );
            assert!(report.setup.welcome_bytes <= max_welcome, "{summary}");
        } else {
            assert_eq!(report.setup.commits, 1, "{summary}");
            assert_eq!(report.setup.setup_copies, 9, "{summary}");
        }
        assert!(report.uploads_sent >= 45, "{summary}");
        assert_eq!(report.uploads_acked, report.uploads_sent, "{summary}");
        assert_eq!(report.missing, 0, "{summary}");
        assert_eq!(report.duplicates, 0, "{summary}");
        assert_eq!(report.mismatched, 0, "{summary}");
        assert_eq!(report.copies_expected, 9 * report.uploads_acked, "{summary}");
        assert_eq!(report.copies_delivered, report.copies_expected, "{summary}");
        assert_eq!(report.deliveries_acked, report.delivers_received, "{summary}");
        assert!(report.errors.is_empty(), "{summary}");
        assert!(report.all_delivered_once, "{summary}");
        assert!(report.bytes_delivered > 8 * report.bytes_uploaded, "{summary}");
    }
}
