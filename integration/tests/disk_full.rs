//! A real full disk: bob's state on a small tmpfs that is filled up while he runs.
//! Messages that arrive meanwhile are kept unacknowledged with one clear error and
//! shown, in order and once, when space is back, without a restart; a send fails at
//! once with the real reason and nothing leaves. (The write-fault hook of
//! `agent_crash.rs` makes SQLite refuse writes; here the file system does, `ENOSPC`.)
//!
//! Mounting a tmpfs needs root: without it the test says so on stderr and passes
//! without checking anything.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const TEXTS: usize = 20;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .status()
            .ok()?;
        status.success().then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(28), "ENOSPC expected, got {err}");
                break;
            }
        }
    }
    // The last partial page, byte by byte.
    while file.write(&[0]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    let _ = file.sync_all();
    written
}

fn agent(name: &str, relay: &RelayProcess, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, relay.addr, dir)
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .start()
        .expect("agent starts")
}

fn shown(agent: &mut AgentProcess, prefix: &str) -> Vec<String> {
    (agent.events().iter())
        .filter(|e| e["event"] == "message" && e["text"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn errors_with(agent: &mut AgentProcess, needle: &str) -> Vec<Value> {
    (agent.events_of("error").into_iter())
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
        .collect()
}

#[test]
fn a_full_disk_loses_nothing_reports_once_and_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(fs) = Tmpfs::mount(&tmp.path().join("small"), "8m") else {
        eprintln!("disk_full: skipped, cannot mount a tmpfs here (needs root)");
        return;
    };
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay")).expect("relay starts");
    let mut alice = agent("alice", &relay, &tmp.path().join("alice"));
    let mut bob = agent("bob", &relay, &fs.0.join("bob"));
    for _ in 0..2 {
        relay.wait_log("name claimed", WAIT).expect("both names claimed");
    }
    alice.send_line("/msg bob before").expect("stdin");
    bob.wait_message("alice", "before", WAIT).expect("shown");
    bob.send_line("/msg alice hello").expect("stdin");
    alice.wait_message("bob", "hello", WAIT).expect("shown");

    let filler = fs.0.join("filler");
    let written = fill(&filler);
    assert!(written > 0, "the tmpfs had room to fill");

    // Receive while full.
    let during: Vec<String> = (0..TEXTS).map(|i| format!("during {i:02}")).collect();
    for text in &during {
        alice.send_line(&format!("/msg bob {text}")).expect("stdin");
    }
    let error = bob
        .wait_for("the error about a message", WAIT, |e| {
            e["event"] == "error"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot save a message"))
        })
        .expect("bob reports the failure");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot save a message from alice") && message.contains("no space left on device"),
        "names what could not be saved and why: {message}"
    );

    // Send while full.
    bob.send_line("/msg alice while-full").expect("stdin");
    let failed = bob.wait_event("send_failed", WAIT).expect("the send fails");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot save the message to alice, nothing was sent")
            && reason.contains("no space left on device"),
        "the real reason: {reason}"
    );

    // Space is back: everything kept is shown, in order, once, without a restart.
    std::fs::remove_file(&filler).expect("space is back");
    bob.wait_count("the kept messages", TEXTS, WAIT, |e| {
        e["event"] == "message" && e["text"].as_str().is_some_and(|t| t.starts_with("during "))
    })
    .expect("shown without a restart");
    bob.wait_for("recovery info", WAIT, |e| {
        e["event"] == "info"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("can be written again"))
    })
    .expect("bob reports the recovery");
    assert_eq!(shown(&mut bob, "during "), during, "in order, each once");
    assert_eq!(
        errors_with(&mut bob, "cannot save a message").len(),
        1,
        "one error event for the episode"
    );

    bob.send_line("/msg alice after").expect("stdin");
    alice.wait_message("bob", "after", WAIT).expect("shown");
    assert!(
        shown(&mut alice, "while-full").is_empty(),
        "the failed send never left"
    );
    let failures: Vec<Value> = (bob.events().iter())
        .chain(alice.events().iter())
        .filter(|e| e["event"] == "decrypt_failure")
        .cloned()
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    drop(bob);
    drop(alice);
    drop(relay);
}
