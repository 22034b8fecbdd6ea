//! The interactive agent on a terminal (a pty): the line editor shows a prompt, prints
//! incoming messages above the line being typed (which survives and is sent), takes a
//! pasted 10 KB line whole, keeps logs off the screen, and says goodbye on Ctrl-D.
//! And without a terminal: a line of stdin that is not UTF-8 is reported and skipped,
//! and the lines after it still run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::{binary, RelayProcess};
use expectrl::{Eof, Session, WaitStatus};

const WAIT: Duration = Duration::from_secs(20);
/// What a terminal sends around pasted text once the application has turned
/// bracketed paste on (`ESC [ ? 2004 h`).
const PASTE_START: &str = "\x1b[200~";
const PASTE_END: &str = "\x1b[201~";

/// A relay and bob (a `--json` agent on pipes), bob's name claimed.
fn relay_and_bob(dir: &Path) -> (RelayProcess, AgentProcess) {
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &dir.join("relay")).expect("relay starts");
    let bob = AgentConfig::new("bob", relay.addr, &dir.join("bob"))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .start()
        .expect("bob starts");
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    (relay, bob)
}

/// alice, readable output, on a pty; returns once she is connected and her name is
/// claimed at the relay.
fn alice_on_a_terminal(relay: &RelayProcess, dir: &Path) -> Session {
    alice_on_a_terminal_with(relay, dir, None)
}

/// As [`alice_on_a_terminal`], with `NO_COLOR` set to this value.
fn alice_on_a_terminal_with(relay: &RelayProcess, dir: &Path, no_color: Option<&str>) -> Session {
    let mut command = Command::new(binary("e2ee-agent").expect("agent binary"));
    command.args(["--name", "alice", "--relay", &relay.addr.to_string()]);
    command.arg("--state").arg(dir.join("alice"));
    command.env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50");
    command.env("TERM", "xterm");
    match no_color {
        Some(value) => command.env("NO_COLOR", value),
        None => command.env_remove("NO_COLOR"),
    };
    let mut alice = Session::spawn(command).expect("spawn on a pty");
    alice.set_expect_timeout(Some(WAIT));
    alice.expect("alice> ").expect("a prompt");
    alice.expect("connected to relay").expect("connected");
    relay.wait_log("name claimed", WAIT).expect("alice's name");
    alice
}

/// Waits for `needle` on the screen; what came before it and the needle are added to
/// `screen`.
fn expect_on(alice: &mut Session, needle: &str, screen: &mut String) -> String {
    let found = alice
        .expect(needle)
        .unwrap_or_else(|err| panic!("{needle:?} not on the screen ({err}); so far: {screen:?}"));
    let before = String::from_utf8_lossy(found.before()).to_string();
    screen.push_str(&before);
    screen.push_str(needle);
    before
}

/// Waits for the goodbye and a clean exit; returns the rest of the screen.
fn exits_with_goodbye(mut alice: Session) -> String {
    let mut screen = String::new();
    expect_on(&mut alice, "goodbye", &mut screen);
    let rest = alice.expect(Eof).expect("the agent exits");
    screen.push_str(&String::from_utf8_lossy(rest.before()));
    let status = alice.get_process().wait().expect("exit status");
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    screen
}

#[test]
fn incoming_messages_print_above_the_line_being_typed_which_survives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_relay, mut bob) = relay_and_bob(tmp.path());
    let mut alice = alice_on_a_terminal(&_relay, tmp.path());

    let mut screen = String::new();
    // Half a line typed, then a message arrives.
    alice.send("/msg bob typed while").expect("type");
    expect_on(&mut alice, "typed while", &mut screen);
    bob.send_line("/msg alice incoming while typing")
        .expect("bob sends");
    let before = expect_on(&mut alice, "[bob] incoming while typing", &mut screen);
    assert!(
        before.ends_with("\x1b[1;36m"),
        "a received message is coloured on a terminal: {before:?}"
    );
    // Below it, the prompt and the half-typed line again, intact.
    expect_on(&mut alice, "alice> /msg bob typed while", &mut screen);

    // The rest of the line: the whole line is sent.
    alice.send(" a message\r").expect("type");
    bob.wait_message("alice", "typed while a message", WAIT)
        .expect("the typed line is sent whole");
    alice.send("\x04").expect("Ctrl-D");
    screen.push_str(&exits_with_goodbye(alice));
    // Its acknowledgement comes about when bob shows it, so about when Ctrl-D is read:
    // it is shown all the same (it was lost once, before the editor read on after the
    // last line; that race is not reproduced on demand).
    assert!(screen.contains("-> sent to bob"), "{screen:?}");
    assert!(
        !screen.contains("INFO") && !screen.contains("relay link"),
        "no log line on the screen: {screen:?}"
    );
    let log = std::fs::read_to_string(tmp.path().join("alice/agent.log")).expect("agent.log");
    assert!(log.contains("INFO"), "the logs went to the file: {log}");
}

#[test]
fn a_pasted_10_kb_line_arrives_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_relay, mut bob) = relay_and_bob(tmp.path());
    let mut alice = alice_on_a_terminal(&_relay, tmp.path());

    let text: String = (0..10_240).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    alice
        .send(format!("{PASTE_START}/msg bob {text}{PASTE_END}"))
        .expect("paste");
    alice.send("\r").expect("Enter");
    // Read the screen meanwhile (the pasted line is drawn again, 10 KB): a pty holds
    // only so much output that nobody reads.
    alice.expect("-> sent to bob").expect("sent");
    let got = bob.wait_message("alice", &text, WAIT).expect("the whole line");
    assert_eq!(got["text"].as_str().map(str::len), Some(10_240));

    alice.send("/quit\r").expect("type /quit");
    exits_with_goodbye(alice);
}

#[test]
fn ctrl_d_on_an_empty_line_says_goodbye_and_exits_0() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_relay, _bob) = relay_and_bob(tmp.path());
    let mut alice = alice_on_a_terminal(&_relay, tmp.path());
    alice.send("\x04").expect("Ctrl-D");
    exits_with_goodbye(alice);
}

#[test]
fn no_color_turns_the_colours_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (relay, mut bob) = relay_and_bob(tmp.path());
    let mut alice = alice_on_a_terminal_with(&relay, tmp.path(), Some("1"));
    let mut screen = String::new();
    bob.send_line("/msg alice plain please").expect("bob sends");
    let before = expect_on(&mut alice, "[bob] plain please", &mut screen);
    alice.send("\x04").expect("Ctrl-D");
    screen.push_str(&exits_with_goodbye(alice));
    assert!(!before.ends_with('m'), "no colour before the message: {before:?}");
    assert!(
        !screen.contains("\x1b[1;36m") && !screen.contains("\x1b[2m") && !screen.contains("\x1b[0m"),
        "no colour with NO_COLOR: {screen:?}"
    );
}

#[test]
fn ctrl_c_leaves_the_same_way() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_relay, _bob) = relay_and_bob(tmp.path());
    let mut alice = alice_on_a_terminal(&_relay, tmp.path());
    alice.send("/msg bob never sent").expect("type");
    alice.send("\x03").expect("Ctrl-C");
    exits_with_goodbye(alice);
}

#[test]
fn a_piped_line_that_is_not_utf8_is_reported_and_the_next_line_still_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (relay, mut bob) = relay_and_bob(tmp.path());
    let mut alice = AgentConfig::new("alice", relay.addr, &tmp.path().join("alice"))
        .start()
        .expect("alice starts");
    alice.send_line("/msg bob before").expect("stdin");
    alice.send_bytes(b"/msg bob \xff broken\n").expect("stdin");
    alice.send_line("/msg bob after").expect("stdin");
    let error = alice
        .wait_for("the skipped line", WAIT, |e| {
            e["event"] == "error" && e["message"].as_str().is_some_and(|m| m.contains("UTF-8"))
        })
        .expect("reported");
    assert_eq!(
        error["message"],
        "stdin line 2 is not valid UTF-8 (at byte 10); it was skipped"
    );
    bob.wait_message("alice", "before", WAIT).expect("delivered");
    bob.wait_message("alice", "after", WAIT)
        .expect("the line after the bad one is sent");
    alice.close_stdin();
    let status = alice.wait_exit(WAIT).expect("exits");
    assert!(status.success(), "{status}");
}
