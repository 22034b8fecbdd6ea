//! A dead link is noticed: alice reaches the relay through a proxy that, on command,
//! stops passing bytes on the connections it holds without closing them (a half-open
//! connection: no error, no end of stream). Alice pings after a quiet
//! `heartbeat.interval_ms`, gives the connection up when nothing comes back within
//! `heartbeat.timeout_ms`, reconnects, and receives what was sent to her meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;

const WAIT: Duration = Duration::from_secs(20);

/// A TCP proxy whose open connections can be frozen: they stop forwarding in both
/// directions and stay open. Connections accepted later forward normally.
struct FreezingProxy {
    addr: SocketAddr,
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    stop: Arc<AtomicBool>,
}

impl FreezingProxy {
    fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (flags, stopped) = (frozen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let flag = Arc::new(AtomicBool::new(false));
                        flags.lock().expect("flags").push(flag.clone());
                        pipe(&client, &server, flag.clone(), stopped.clone());
                        pipe(&server, &client, flag, stopped.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self { addr, frozen, stop }
    }

    /// Freezes every connection open now.
    fn freeze(&self) {
        for flag in self.frozen.lock().expect("flags").iter() {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies `from` → `to` until the stream ends, or stops forwarding (and holds both
/// sockets open, reading and dropping nothing) once `frozen` is set.
fn pipe(from: &TcpStream, to: &TcpStream, frozen: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let (mut from, mut to) = (from.try_clone().expect("clone"), to.try_clone().expect("clone"));
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if frozen.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if !frozen.load(Ordering::Relaxed) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    });
}

fn agent(name: &str, relay: SocketAddr, dir: &std::path::Path) -> AgentProcess {
    AgentConfig::new(name, relay, &dir.join(name))
        .env("E2EE_AGENT_HEARTBEAT__INTERVAL_MS", "300")
        .env("E2EE_AGENT_HEARTBEAT__TIMEOUT_MS", "300")
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

#[test]
fn a_half_open_link_is_noticed_and_the_agent_reconnects_and_receives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay")).expect("relay starts");
    let proxy = FreezingProxy::start(relay.addr);
    let mut bob = agent("bob", relay.addr, tmp.path());
    let mut alice = agent("alice", proxy.addr, tmp.path());
    for _ in 0..2 {
        relay.wait_log("name claimed", WAIT).expect("names claimed");
    }
    alice.send_line("/msg bob hello").expect("stdin");
    bob.wait_message("alice", "hello", WAIT).expect("a session");

    proxy.freeze();
    let frozen_at = Instant::now();
    bob.send_line("/msg alice while the link was dead")
        .expect("stdin");
    alice
        .wait_for("reconnecting", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "reconnecting"
        })
        .expect("the dead link is noticed");
    alice
        .wait_message("bob", "while the link was dead", WAIT)
        .expect("received over the new connection");
    eprintln!("dead link noticed {:?} after it froze", frozen_at.elapsed());
}

/// Copies `from` to `to` with its modes (a state directory is refused when others can
/// read it).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a failed");
}

#[test]
fn two_copies_of_one_state_are_reported_and_do_not_fight() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay")).expect("relay starts");
    let mut alice = agent("alice", relay.addr, tmp.path());
    alice.wait_event("connection", WAIT).expect("connects");
    alice.send_line("/quit").expect("stdin");
    alice.wait_exit(WAIT).expect("exits");
    copy_dir(&tmp.path().join("alice"), &tmp.path().join("copy"));

    let mut first = agent("alice", relay.addr, tmp.path());
    first.wait_event("connection", WAIT).expect("connects");
    let mut copy = AgentConfig::new("alice", relay.addr, &tmp.path().join("copy"))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("the copy starts");
    copy.wait_event("connection", WAIT).expect("the copy connects");
    let reported = first
        .wait_for("the replacement reported", WAIT, |e| {
            e["event"] == "error"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("another agent authenticated with this identity"))
        })
        .expect("reported");
    eprintln!("{}", reported["message"]);
    // With fast reconnection (50 ms) two copies that replaced each other would log in
    // dozens of times in a second; the replaced one stays offline.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        first
            .events_of("connection")
            .iter()
            .filter(|e| e["state"] == "connected")
            .count()
            == 1,
        "the replaced copy did not connect again: {:?}",
        first.events_of("connection")
    );
    assert!(
        first
            .events_of("connection")
            .iter()
            .all(|e| e["state"] != "reconnecting"),
        "{:?}",
        first.events_of("connection")
    );
    assert_eq!(
        copy.events_of("connection").len(),
        1,
        "the newer copy stays connected"
    );
}
