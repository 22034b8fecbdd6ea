//! Script files: one step per line, for demos and tests.
//!
//! ```text
//! # comment lines and blank lines are ignored
//! wait-peer bob timeout=5000
//! send bob hello bob
//! expect timeout=5000 bob hello alice
//! expect-failure bob tampered
//! verify bob
//! trust bob 12345 67890 12345 67890 12345 67890 12345 67890 12345 67890 12345 67890
//! disconnect
//! sleep 200
//! reconnect
//! print done
//! quit
//! ```
//!
//! Words are separated by whitespace; a text argument is the rest of the line with its
//! inner spacing kept. Peer names are lowercased, then must be valid names. `#` starts a comment only at the beginning of a line, so a
//! message text may contain `#`.

use std::fmt;

use e2ee_protocol::name_claim::validate_name;
use thiserror::Error;

use crate::command::split_word;
use crate::failure::FailureClass;

/// The longest `sleep`, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// The longest `timeout=` of a waiting step, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `send <peer> <text...>`: send a text message.
    Send {
        /// The peer's name.
        peer: String,
        /// The text.
        text: String,
    },
    /// `expect [timeout=<ms>] <peer> <text...>`: wait for a message from `peer` whose
    /// text contains `text`.
    Expect {
        /// The peer's name.
        peer: String,
        /// The text the message must contain.
        text: String,
        /// The step's timeout; `None` uses the `expect_timeout_ms` setting.
        timeout_ms: Option<u64>,
    },
    /// `wait-peer <peer> [timeout=<ms>]`: wait until the peer's name claim and bundle
    /// can be found on the relay.
    WaitPeer {
        /// The peer's name.
        peer: String,
        /// The step's timeout; `None` uses the `expect_timeout_ms` setting.
        timeout_ms: Option<u64>,
    },
    /// `disconnect`: drop the relay connection (and stay offline).
    Disconnect,
    /// `reconnect`: connect to the relay again.
    Reconnect,
    /// `sleep <ms>`: pause, at most [`MAX_SLEEP_MS`].
    Sleep {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// `verify <peer>`: show the safety number with the peer.
    Verify {
        /// The peer's name.
        peer: String,
    },
    /// `trust <peer> <digits>`: keep the key whose safety number is `digits` and mark
    /// it verified (as `/trust`).
    Trust {
        /// The peer's name.
        peer: String,
        /// The safety number (60 digits, spaces allowed), if given.
        digits: Option<String>,
    },
    /// `reject <peer>`: keep the pinned key, reject the pending identity changes.
    Reject {
        /// The peer's name.
        peer: String,
    },
    /// `release-name`: give up our name at the relay's registry; waits for the relay's
    /// confirmation (as `/release-name`).
    ReleaseName,
    /// `claim-name`: claim our name at the relay's registry again; waits until the relay
    /// binds it to us (as `/claim-name`).
    ClaimName,
    /// `expect-failure <peer> <class> [timeout=<ms>]`: wait for a decrypt failure of
    /// this class on a message from `peer`.
    ExpectFailure {
        /// The peer's name.
        peer: String,
        /// The expected failure class.
        class: FailureClass,
        /// The step's timeout; `None` uses the `expect_timeout_ms` setting.
        timeout_ms: Option<u64>,
    },
    /// `group create|add|remove <group> <peer>...`, `group leave <group>`: change a group
    /// (as `/group`); done once the upload is made and queued.
    Group(crate::command::GroupCommand),
    /// `gsend <group> <text...>`: send a text to a group (as `/g`).
    GroupSend {
        /// The group's local name.
        group: String,
        /// The text.
        text: String,
    },
    /// `gexpect [timeout=<ms>] <group> <peer> <text...>`: wait for a text from `peer`
    /// in `group` that contains `text`.
    GroupExpect {
        /// The group's local name.
        group: String,
        /// The sender's name.
        peer: String,
        /// The text the message must contain.
        text: String,
        /// The step's timeout; `None` uses the `expect_timeout_ms` setting.
        timeout_ms: Option<u64>,
    },
    /// `wait-group <group> <members> [timeout=<ms>]`: wait until we are in `group` with
    /// exactly `members` members, us included (0: until we are not in it).
    WaitGroup {
        /// The group's local name.
        group: String,
        /// The member count.
        members: usize,
        /// The step's timeout; `None` uses the `expect_timeout_ms` setting.
        timeout_ms: Option<u64>,
    },
    /// `print <text...>`: print a line (an `info` event).
    Print {
        /// The text.
        text: String,
    },
    /// `quit`: stop the script and the agent (the script succeeded).
    Quit,
}

impl Step {
    /// The step's timeout, or `default_ms` when it gives none (for steps that wait).
    pub fn timeout_or(&self, default_ms: u64) -> u64 {
        match self {
            Self::Expect { timeout_ms, .. }
            | Self::WaitPeer { timeout_ms, .. }
            | Self::ExpectFailure { timeout_ms, .. }
            | Self::GroupExpect { timeout_ms, .. }
            | Self::WaitGroup { timeout_ms, .. } => timeout_ms.unwrap_or(default_ms),
            _ => default_ms,
        }
    }

    /// The step's keyword as written in scripts.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Send { .. } => "send",
            Self::Expect { .. } => "expect",
            Self::WaitPeer { .. } => "wait-peer",
            Self::Disconnect => "disconnect",
            Self::Reconnect => "reconnect",
            Self::Sleep { .. } => "sleep",
            Self::Verify { .. } => "verify",
            Self::Trust { .. } => "trust",
            Self::Reject { .. } => "reject",
            Self::ReleaseName => "release-name",
            Self::ClaimName => "claim-name",
            Self::ExpectFailure { .. } => "expect-failure",
            Self::Group(_) => "group",
            Self::GroupSend { .. } => "gsend",
            Self::GroupExpect { .. } => "gexpect",
            Self::WaitGroup { .. } => "wait-group",
            Self::Print { .. } => "print",
            Self::Quit => "quit",
        }
    }
}

impl fmt::Display for Step {
    /// The canonical script line, which parses back to the same step.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timeout = |t: &Option<u64>| t.map(|ms| format!(" timeout={ms}")).unwrap_or_default();
        match self {
            Self::Send { peer, text } => write!(f, "send {peer} {text}"),
            Self::Expect {
                peer,
                text,
                timeout_ms,
            } => match timeout_ms {
                Some(ms) => write!(f, "expect timeout={ms} {peer} {text}"),
                None => write!(f, "expect {peer} {text}"),
            },
            Self::WaitPeer { peer, timeout_ms } => write!(f, "wait-peer {peer}{}", timeout(timeout_ms)),
            Self::Disconnect => f.write_str("disconnect"),
            Self::Reconnect => f.write_str("reconnect"),
            Self::Sleep { ms } => write!(f, "sleep {ms}"),
            Self::Verify { peer } => write!(f, "verify {peer}"),
            Self::Trust { peer, digits: None } => write!(f, "trust {peer}"),
            Self::Trust {
                peer,
                digits: Some(digits),
            } => write!(f, "trust {peer} {digits}"),
            Self::Reject { peer } => write!(f, "reject {peer}"),
            Self::ReleaseName => f.write_str("release-name"),
            Self::ClaimName => f.write_str("claim-name"),
            Self::ExpectFailure {
                peer,
                class,
                timeout_ms,
            } => write!(f, "expect-failure {peer} {class}{}", timeout(timeout_ms)),
            Self::Group(op) => write!(f, "{}", op.to_string().trim_start_matches('/')),
            Self::GroupSend { group, text } => write!(f, "gsend {group} {text}"),
            Self::GroupExpect {
                group,
                peer,
                text,
                timeout_ms,
            } => match timeout_ms {
                Some(ms) => write!(f, "gexpect timeout={ms} {group} {peer} {text}"),
                None => write!(f, "gexpect {group} {peer} {text}"),
            },
            Self::WaitGroup {
                group,
                members,
                timeout_ms,
            } => write!(f, "wait-group {group} {members}{}", timeout(timeout_ms)),
            Self::Print { text } => write!(f, "print {text}"),
            Self::Quit => f.write_str("quit"),
        }
    }
}

/// A step with the (1-based) line it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptStep {
    /// The line number in the script file, from 1.
    pub line: usize,
    /// The step.
    pub step: Step,
}

/// A line that is not a valid step.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("script line {line}: {message}")]
pub struct ScriptError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a whole script. Fails on the first invalid line, naming it.
pub fn parse_script(text: &str) -> Result<Vec<ScriptStep>, ScriptError> {
    let mut steps = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let step = parse_step(trimmed).map_err(|message| ScriptError { line, message })?;
        steps.push(ScriptStep { line, step });
    }
    Ok(steps)
}

/// Parses one non-blank, non-comment line.
pub fn parse_step(line: &str) -> Result<Step, String> {
    let (keyword, rest) = split_word(line);
    match keyword {
        "send" => {
            let (peer, text) = peer_and_text(rest, "send <peer> <text...>")?;
            Ok(Step::Send { peer, text })
        }
        "expect" => {
            let (timeout_ms, rest) = match split_word(rest) {
                (word, after) if word.starts_with("timeout=") => (Some(parse_timeout(word)?), after),
                _ => (None, rest),
            };
            let (peer, text) = peer_and_text(rest, "expect [timeout=<ms>] <peer> <text...>")?;
            Ok(Step::Expect {
                peer,
                text,
                timeout_ms,
            })
        }
        "wait-peer" => {
            const USAGE: &str = "wait-peer <peer> [timeout=<ms>]";
            let (timeout_ms, words) = take_timeout(rest)?;
            match words.as_slice() {
                [peer] => Ok(Step::WaitPeer {
                    peer: peer_name(peer)?,
                    timeout_ms,
                }),
                [] => Err(format!("missing peer name: usage: {USAGE}")),
                _ => Err(format!("too many arguments: usage: {USAGE}")),
            }
        }
        "expect-failure" => {
            const USAGE: &str = "expect-failure <peer> <class> [timeout=<ms>]";
            let (timeout_ms, words) = take_timeout(rest)?;
            match words.as_slice() {
                [peer, class] => Ok(Step::ExpectFailure {
                    peer: peer_name(peer)?,
                    class: class.parse().map_err(|e| format!("{e}"))?,
                    timeout_ms,
                }),
                [] => Err(format!("missing peer name: usage: {USAGE}")),
                [_] => Err(format!("missing failure class: usage: {USAGE}")),
                _ => Err(format!("too many arguments: usage: {USAGE}")),
            }
        }
        "group" => match crate::command::parse_command(&format!("/group {rest}")) {
            Ok(Some(crate::command::Command::Group(op))) => Ok(Step::Group(op)),
            Ok(_) => Err("usage: group create|add|remove <group> <peer>... | group leave <group>".into()),
            Err(err) => Err(err.to_string().replace("/group", "group")),
        },
        "gsend" => {
            let (group, text) = split_word(rest);
            let group = group_name(group, "gsend <group> <text...>")?;
            if text.is_empty() {
                return Err("missing message text: usage: gsend <group> <text...>".into());
            }
            Ok(Step::GroupSend {
                group,
                text: text.to_owned(),
            })
        }
        "gexpect" => {
            const USAGE: &str = "gexpect [timeout=<ms>] <group> <peer> <text...>";
            let (timeout_ms, rest) = match split_word(rest) {
                (word, after) if word.starts_with("timeout=") => (Some(parse_timeout(word)?), after),
                _ => (None, rest),
            };
            let (group, rest) = split_word(rest);
            let group = group_name(group, USAGE)?;
            let (peer, text) = peer_and_text(rest, USAGE)?;
            Ok(Step::GroupExpect {
                group,
                peer,
                text,
                timeout_ms,
            })
        }
        "wait-group" => {
            const USAGE: &str = "wait-group <group> <members> [timeout=<ms>]";
            let (timeout_ms, words) = take_timeout(rest)?;
            match words.as_slice() {
                [group, members] => Ok(Step::WaitGroup {
                    group: group_name(group, USAGE)?,
                    members: members
                        .parse()
                        .ok()
                        .filter(|n| *n <= e2ee_protocol::group::MAX_GROUP_MEMBERS)
                        .ok_or_else(|| format!("{members:?} is not a member count: usage: {USAGE}"))?,
                    timeout_ms,
                }),
                [] | [_] => Err(format!("missing arguments: usage: {USAGE}")),
                _ => Err(format!("too many arguments: usage: {USAGE}")),
            }
        }
        "disconnect" => no_args(rest, Step::Disconnect),
        "reconnect" => no_args(rest, Step::Reconnect),
        "quit" => no_args(rest, Step::Quit),
        "release-name" => no_args(rest, Step::ReleaseName),
        "claim-name" => no_args(rest, Step::ClaimName),
        "sleep" => {
            let (ms, extra) = split_word(rest);
            if ms.is_empty() {
                return Err("missing duration: usage: sleep <ms>".into());
            }
            if !extra.is_empty() {
                return Err("too many arguments: usage: sleep <ms>".into());
            }
            let ms = parse_ms(ms, "sleep duration")?;
            if ms > MAX_SLEEP_MS {
                return Err(format!("sleep of {ms} ms is over the limit of {MAX_SLEEP_MS} ms"));
            }
            Ok(Step::Sleep { ms })
        }
        "verify" => Ok(Step::Verify {
            peer: single_peer(rest, "verify <peer>")?,
        }),
        "trust" => {
            let (peer, digits) = split_word(rest);
            if peer.is_empty() {
                return Err("missing peer name: usage: trust <peer> <digits>".into());
            }
            if digits.is_empty() {
                return Err(
                    "missing safety number (the 60 digits compared): usage: trust <peer> <digits>".into(),
                );
            }
            let digits = crate::pins::parse_digits(digits).ok_or_else(|| {
                "a safety number is 60 digits (spaces allowed): usage: trust <peer> <digits>".to_string()
            })?;
            Ok(Step::Trust {
                peer: peer_name(peer)?,
                digits: Some(digits),
            })
        }
        "reject" => Ok(Step::Reject {
            peer: single_peer(rest, "reject <peer>")?,
        }),
        "print" => {
            if rest.is_empty() {
                return Err("missing text: usage: print <text...>".into());
            }
            Ok(Step::Print {
                text: rest.to_owned(),
            })
        }
        other => Err(format!(
            "unknown step `{other}` (expected send, expect, wait-peer, disconnect, reconnect, \
             sleep, verify, trust, reject, expect-failure, print or quit)"
        )),
    }
}

/// A peer name as written, lowercased and validated.
fn peer_name(word: &str) -> Result<String, String> {
    let name = word.to_lowercase();
    validate_name(&name).map_err(|e| format!("invalid peer name {word:?}: {e}"))?;
    Ok(name)
}

fn peer_and_text(rest: &str, usage: &str) -> Result<(String, String), String> {
    let (peer, text) = split_word(rest);
    if peer.is_empty() {
        return Err(format!("missing peer name: usage: {usage}"));
    }
    let peer = peer_name(peer)?;
    if text.is_empty() {
        return Err(format!("missing text: usage: {usage}"));
    }
    Ok((peer, text.to_owned()))
}

fn single_peer(rest: &str, usage: &str) -> Result<String, String> {
    let (peer, extra) = split_word(rest);
    if peer.is_empty() {
        return Err(format!("missing peer name: usage: {usage}"));
    }
    if !extra.is_empty() {
        return Err(format!("too many arguments: usage: {usage}"));
    }
    peer_name(peer)
}

fn no_args(rest: &str, step: Step) -> Result<Step, String> {
    if rest.is_empty() {
        Ok(step)
    } else {
        Err(format!("`{}` takes no arguments", step.keyword()))
    }
}

fn parse_ms(word: &str, what: &str) -> Result<u64, String> {
    word.parse::<u64>()
        .map_err(|_| format!("invalid {what} {word:?}: expected a whole number of milliseconds"))
}

/// A group name argument.
fn group_name(word: &str, usage: &str) -> Result<String, String> {
    if word.is_empty() {
        return Err(format!("missing group name: usage: {usage}"));
    }
    crate::group::validate_group_name(word).map_err(|e| e.to_string())?;
    Ok(word.to_owned())
}

/// Parses `timeout=<ms>` (1..=[`MAX_TIMEOUT_MS`]).
fn parse_timeout(word: &str) -> Result<u64, String> {
    let value = word.strip_prefix("timeout=").unwrap_or(word);
    let ms = parse_ms(value, "timeout")?;
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(format!("timeout must be 1..={MAX_TIMEOUT_MS} ms, got {ms}"));
    }
    Ok(ms)
}

/// Splits a line of words into an optional `timeout=<ms>` (anywhere) and the rest.
fn take_timeout(rest: &str) -> Result<(Option<u64>, Vec<&str>), String> {
    let mut timeout = None;
    let mut words = Vec::new();
    for word in rest.split_whitespace() {
        if word.starts_with("timeout=") {
            if timeout.is_some() {
                return Err("timeout given twice".into());
            }
            timeout = Some(parse_timeout(word)?);
        } else {
            words.push(word);
        }
    }
    Ok((timeout, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Step, String> {
        parse_step(line)
    }

    fn err(line: &str) -> String {
        one(line).expect_err(line)
    }

    #[test]
    fn parses_send_and_keeps_text_spacing() {
        assert_eq!(
            one("send bob hello   there # not a comment"),
            Ok(Step::Send {
                peer: "bob".into(),
                text: "hello   there # not a comment".into()
            })
        );
        assert!(err("send").contains("missing peer name"));
        assert!(err("send bob").contains("missing text"));
        assert!(err("send b/b hi").contains("invalid peer name"));
        assert_eq!(
            one("send Bob Hi"),
            Ok(Step::Send {
                peer: "bob".into(),
                text: "Hi".into()
            })
        );
    }

    #[test]
    fn parses_expect_with_and_without_timeout() {
        assert_eq!(
            one("expect bob hi there"),
            Ok(Step::Expect {
                peer: "bob".into(),
                text: "hi there".into(),
                timeout_ms: None
            })
        );
        assert_eq!(
            one("expect timeout=5000 bob hi there"),
            Ok(Step::Expect {
                peer: "bob".into(),
                text: "hi there".into(),
                timeout_ms: Some(5000)
            })
        );
        // A timeout anywhere else is part of the text.
        assert_eq!(
            one("expect bob timeout=5000"),
            Ok(Step::Expect {
                peer: "bob".into(),
                text: "timeout=5000".into(),
                timeout_ms: None
            })
        );
        assert!(err("expect timeout=abc bob hi").contains("invalid timeout"));
        assert!(err("expect timeout=0 bob hi").contains("timeout must be"));
        assert!(err("expect timeout=600001 bob hi").contains("timeout must be"));
        assert!(err("expect timeout=10 bob").contains("missing text"));
        assert!(err("expect").contains("missing peer name"));
    }

    #[test]
    fn parses_wait_peer() {
        assert_eq!(
            one("wait-peer bob"),
            Ok(Step::WaitPeer {
                peer: "bob".into(),
                timeout_ms: None
            })
        );
        assert_eq!(
            one("wait-peer bob timeout=250"),
            Ok(Step::WaitPeer {
                peer: "bob".into(),
                timeout_ms: Some(250)
            })
        );
        assert!(err("wait-peer").contains("missing peer name"));
        assert!(err("wait-peer bob carol").contains("too many arguments"));
        assert!(err("wait-peer bob timeout=1 timeout=2").contains("twice"));
    }

    #[test]
    fn parses_argument_free_steps() {
        assert_eq!(one("disconnect"), Ok(Step::Disconnect));
        assert_eq!(one("reconnect"), Ok(Step::Reconnect));
        assert_eq!(one("quit"), Ok(Step::Quit));
        assert!(err("disconnect now").contains("takes no arguments"));
        assert!(err("quit 1").contains("takes no arguments"));
    }

    #[test]
    fn parses_bounded_sleep() {
        assert_eq!(one("sleep 250"), Ok(Step::Sleep { ms: 250 }));
        assert_eq!(one("sleep 60000"), Ok(Step::Sleep { ms: 60_000 }));
        assert!(err("sleep 60001").contains("over the limit"));
        assert!(err("sleep").contains("missing duration"));
        assert!(err("sleep -1").contains("invalid sleep duration"));
        assert!(err("sleep 1.5").contains("invalid sleep duration"));
        assert!(err("sleep 1 2").contains("too many arguments"));
    }

    #[test]
    fn parses_verify_and_trust() {
        assert_eq!(one("verify bob"), Ok(Step::Verify { peer: "bob".into() }));
        assert!(one("trust bob").is_err(), "digits are required");
        assert_eq!(
            one(&format!("trust bob {}", "12345 ".repeat(12))),
            Ok(Step::Trust {
                peer: "bob".into(),
                digits: Some("12345".repeat(12))
            })
        );
        assert_eq!(one("reject bob"), Ok(Step::Reject { peer: "bob".into() }));
        assert_eq!(one("release-name"), Ok(Step::ReleaseName));
        assert_eq!(one("claim-name"), Ok(Step::ClaimName));
        assert!(err("verify").contains("missing peer name"));
        assert!(err("trust bob carol").contains("60 digits"));
    }

    #[test]
    fn parses_expect_failure() {
        assert_eq!(
            one("expect-failure bob tampered"),
            Ok(Step::ExpectFailure {
                peer: "bob".into(),
                class: FailureClass::Tampered,
                timeout_ms: None
            })
        );
        assert_eq!(
            one("expect-failure bob skip_limit timeout=3000"),
            Ok(Step::ExpectFailure {
                peer: "bob".into(),
                class: FailureClass::SkipLimit,
                timeout_ms: Some(3000)
            })
        );
        assert!(err("expect-failure bob").contains("missing failure class"));
        assert!(err("expect-failure bob sneaky").contains("unknown failure class"));
        assert!(err("expect-failure bob duplicate extra").contains("too many arguments"));
    }

    #[test]
    fn parses_print() {
        assert_eq!(
            one("print  phase 2 ok"),
            Ok(Step::Print {
                text: "phase 2 ok".into()
            })
        );
        assert!(err("print").contains("missing text"));
    }

    #[test]
    fn skips_comments_and_blank_lines_and_numbers_lines() {
        let script = "# demo\n\n  send bob hi\n   # indented comment\nquit\n";
        assert_eq!(
            parse_script(script),
            Ok(vec![
                ScriptStep {
                    line: 3,
                    step: Step::Send {
                        peer: "bob".into(),
                        text: "hi".into()
                    }
                },
                ScriptStep {
                    line: 5,
                    step: Step::Quit
                },
            ])
        );
        assert_eq!(parse_script(""), Ok(Vec::new()));
    }

    #[test]
    fn rejects_unknown_steps_with_the_line_number() {
        let e = parse_script("send bob hi\n\nshout bob hi\n").expect_err("unknown step");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown step `shout`"));
        assert!(e.to_string().starts_with("script line 3: "));
        let e = parse_script("sleep 1\nsleep forever\n").expect_err("bad sleep");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn display_parses_back() {
        let script = "send bob a  b\nexpect bob x\nexpect timeout=9 bob y z\nwait-peer bob\n\
                      wait-peer bob timeout=7\ndisconnect\nreconnect\nsleep 5\nverify bob\ntrust bob 111111111111111111111111111111111111111111111111111111111111\n\
                      expect-failure bob unknown_session\nexpect-failure bob duplicate timeout=3\n\
                      print hello\nquit\n";
        let steps = parse_script(script).expect("parses");
        assert_eq!(steps.len(), 14);
        for s in steps {
            assert_eq!(parse_step(&s.step.to_string()), Ok(s.step.clone()), "{}", s.step);
        }
    }

    #[test]
    fn timeout_or_uses_the_default() {
        assert_eq!(one("expect bob hi").map(|s| s.timeout_or(10)), Ok(10));
        assert_eq!(one("wait-peer bob timeout=3").map(|s| s.timeout_or(10)), Ok(3));
        assert_eq!(one("quit").map(|s| s.timeout_or(10)), Ok(10));
    }
}
