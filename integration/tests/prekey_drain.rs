//! A one-time prekey drain against a real agent (`e2ee-agent --json`) and relay process
//! on loopback: ten throwaway identities, each fetching the victim's bundle over several
//! replacing connections. The relay hands out at most its per-target burst of one-time
//! prekeys (docs/PROTOCOL.md 1.9), and the victim's agent keeps at most one new
//! one-time prekey per key handed out (docs/AGENT.md, prekeys).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use e2ee_agent::state::inspect::StateView;
use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::client::RelayClient;
use e2ee_integration::process::RelayProcess;
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::prekey::PreKeyBundle;
use rand_core::OsRng;

const WAIT: Duration = Duration::from_secs(20);
/// One-time prekeys of one identity the relay hands out in a burst
/// (`opk_handout_capacity`): enough to take the victim below the relay's low threshold
/// (10), so that it replenishes.
const CAPACITY: usize = 45;
/// The agent's initial and replenished one-time prekey stock (`prekeys.*` defaults).
const STOCK: usize = 50;
const THROWAWAYS: usize = 10;
const CONNECTIONS_EACH: usize = 3;
const FETCHES_PER_CONNECTION: u32 = 10;

/// The one-time prekeys the agent holds, read from its state database (the agent
/// library's read-only view, opened with the state's key file).
fn local_one_time(state_dir: &Path) -> usize {
    let view = StateView::read(state_dir).expect("state");
    view.prekeys.one_time_count()
}

/// What the throwaway fetchers got: one-time prekeys handed out, bundles without one,
/// and refusals by the rate limiter.
#[derive(Default, Debug)]
struct Drain {
    handed_out: HashSet<[u8; 32]>,
    without: usize,
    limited: usize,
}

async fn drain(relay: std::net::SocketAddr, victim: [u8; 32]) -> Drain {
    let mut got = Drain::default();
    for _ in 0..THROWAWAYS {
        let identity = IdentityKeyPair::generate(&mut OsRng);
        for _ in 0..CONNECTIONS_EACH {
            // The same identity again: each connection replaces the previous one.
            let mut fetcher = RelayClient::connect(relay, identity.clone())
                .await
                .expect("connect");
            for request_id in 0..FETCHES_PER_CONNECTION {
                match fetcher.fetch_bundle(request_id, victim).await.expect("answer") {
                    Frame::Bundle {
                        bundle: Some(bytes), ..
                    } => {
                        let bundle = PreKeyBundle::decode_verified(&bytes).expect("verifies");
                        match bundle.one_time_prekeys.as_slice() {
                            [] => got.without += 1,
                            [opk] => assert!(got.handed_out.insert(*opk.as_bytes()), "handed out twice"),
                            more => panic!("{} one-time prekeys in one bundle", more.len()),
                        }
                    }
                    Frame::RateLimited { .. } => got.limited += 1,
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        }
    }
    got
}

#[test]
fn ten_throwaway_identities_over_replacing_connections_get_a_bounded_share_and_the_victim_state_stays_bounded(
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_with_env(
        "127.0.0.1:0",
        &tmp.path().join("relay"),
        &[],
        &[
            ("E2EE_RELAY_STORE__FSYNC", "false"),
            ("E2EE_RELAY_LIMITS__OPK_HANDOUT_CAPACITY", &CAPACITY.to_string()),
            ("E2EE_RELAY_LIMITS__OPK_HANDOUT_REFILL_PER_HOUR", "120"),
        ],
    )
    .expect("relay starts");
    let bob_dir = tmp.path().join("bob");
    let mut bob: AgentProcess = AgentConfig::new("bob", relay.addr, &bob_dir)
        .start()
        .expect("agent starts");
    let bob_hex = bob.identity(WAIT).expect("identity");
    relay.wait_log("prekeys published", WAIT).expect("bob published");
    assert_eq!(local_one_time(&bob_dir), STOCK);
    let victim: [u8; 32] = hex::decode(&bob_hex).expect("hex").try_into().expect("32 bytes");

    let start = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let got = runtime.block_on(drain(relay.addr, victim));
    let elapsed = start.elapsed();
    let fetches = THROWAWAYS * CONNECTIONS_EACH * FETCHES_PER_CONNECTION as usize;
    println!(
        "{fetches} fetches by {THROWAWAYS} identities over {} connections in {:.1} s: {} one-time prekeys handed out, {} bundles without, {} rate-limited",
        THROWAWAYS * CONNECTIONS_EACH,
        elapsed.as_secs_f64(),
        got.handed_out.len(),
        got.without,
        got.limited
    );
    // 120 an hour: one more every 30 s.
    let allowed = CAPACITY + (elapsed.as_secs() / 30) as usize + 1;
    assert!(
        (CAPACITY..=allowed).contains(&got.handed_out.len()),
        "{got:?} (allowed {allowed})"
    );
    assert_eq!(got.handed_out.len() + got.without + got.limited, fetches);

    // Bob replenishes what was handed out (the relay tells him he runs low); then his
    // local stock holds at most one new key per key handed out.
    let replenished = relay
        .wait_log("prekeys published", WAIT)
        .expect("bob replenished");
    println!("bob's replenishing publication: {replenished}");
    let held = local_one_time(&bob_dir);
    println!("bob holds {held} one-time prekeys (started with {STOCK})");
    assert!(
        held <= STOCK + got.handed_out.len(),
        "bob's state grew to {held} one-time prekeys"
    );
    assert!(bob.events_of("error").is_empty(), "{:?}", bob.events_of("error"));
    bob.send_line("/quit").expect("stdin");
    assert!(bob.wait_exit(WAIT).expect("exits").success());
}
