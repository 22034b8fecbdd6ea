//! The agent asks for its state passphrase on a terminal (a pty): twice when the state
//! is new, once to open it; a wrong passphrase is a clear error that changes nothing,
//! and a state sealed under a passphrase asks for it even without `--passphrase-prompt`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2ee_integration::process::binary;
use expectrl::{Eof, Session};

const WAIT: Duration = Duration::from_secs(20);
const PASSPHRASE: &str = "correct horse battery staple";

/// An agent on a pty, its relay unreachable (the state is what is tested).
fn agent(state: &Path, prompt: bool) -> Session {
    let mut command = Command::new(binary("e2ee-agent").expect("agent binary"));
    command.args(["--name", "alice", "--relay", "127.0.0.1:9", "--json"]);
    command.arg("--state").arg(state);
    if prompt {
        command.arg("--passphrase-prompt");
    }
    command.env("E2EE_AGENT_RECONNECT__INITIAL_MS", "1000");
    let mut session = Session::spawn(command).expect("spawn on a pty");
    session.set_expect_timeout(Some(WAIT));
    session
}

fn quit(mut session: Session) {
    session.send_line("/quit").expect("type /quit");
    session.expect(Eof).expect("the agent exits");
}

fn state_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("state.db")).expect("state.db")
}

#[test]
fn the_passphrase_is_asked_on_the_terminal_checked_and_never_echoed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");

    // A new state: asked twice; two different answers create nothing.
    let mut first = agent(&dir, true);
    first.expect("passphrase for the state").expect("asked");
    first.send_line(PASSPHRASE).expect("type");
    first.expect("the same passphrase again").expect("asked again");
    first.send_line("something else").expect("type");
    first.expect("the two passphrases differ").expect("refused");
    first.expect(Eof).expect("exits");
    assert!(!dir.join("state.db").exists(), "nothing was created");

    let mut created = agent(&dir, true);
    created.expect("passphrase for the state").expect("asked");
    created.send_line(PASSPHRASE).expect("type");
    created.expect("the same passphrase again").expect("asked again");
    created.send_line(PASSPHRASE).expect("type");
    let started = created.expect("\"event\":\"started\"").expect("started");
    let before = String::from_utf8_lossy(started.before()).to_string();
    assert!(
        !before.contains(PASSPHRASE),
        "the passphrase was echoed: {before}"
    );
    quit(created);
    assert!(
        !dir.join("state.key").exists(),
        "no key file next to a passphrase state"
    );

    // A wrong passphrase: a clear error, and the database is unchanged.
    let untouched = state_bytes(&dir);
    let mut wrong = agent(&dir, true);
    wrong.expect("passphrase for the state").expect("asked");
    wrong.send_line("not the passphrase").expect("type");
    wrong.expect("wrong passphrase").expect("refused");
    wrong.expect(Eof).expect("exits");
    assert_eq!(
        state_bytes(&dir),
        untouched,
        "a wrong passphrase changed the state"
    );

    // Without --passphrase-prompt, a passphrase state on a terminal asks anyway.
    let mut asked = agent(&dir, false);
    asked
        .expect("passphrase for the state")
        .expect("asked without the flag");
    asked.send_line(PASSPHRASE).expect("type");
    asked.expect("\"event\":\"started\"").expect("opened");
    quit(asked);
}

/// An agent without a terminal (stdin closed) that quits at once.
fn run_without_terminal(state: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(binary("e2ee-agent").expect("agent binary"));
    command.args(["--name", "alice", "--relay", "127.0.0.1:9", "--json"]);
    command.arg("--state").arg(state);
    command.envs(env.iter().copied());
    command.stdin(std::process::Stdio::null());
    command.output().expect("the agent runs")
}

#[test]
fn the_passphrase_can_come_from_the_environment_and_a_wrong_one_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("alice");
    let made = run_without_terminal(&state, &[("E2EE_PASSPHRASE", PASSPHRASE)]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(
        !state.join("state.key").exists(),
        "sealed under the passphrase, no key file"
    );
    let before = state_bytes(&state);
    assert!(
        !before
            .windows(PASSPHRASE.len())
            .any(|w| w == PASSPHRASE.as_bytes()),
        "the passphrase is not stored"
    );

    let wrong = run_without_terminal(&state, &[("E2EE_PASSPHRASE", "not it")]);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("wrong passphrase"), "a clear error: {stderr}");
    assert_eq!(state_bytes(&state), before, "a wrong passphrase changes nothing");

    let missing = run_without_terminal(&state, &[]);
    assert!(!missing.status.success(), "no passphrase, no terminal: refused");

    let again = run_without_terminal(&state, &[("E2EE_PASSPHRASE", PASSPHRASE)]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
