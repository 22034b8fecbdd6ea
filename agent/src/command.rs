//! Interactive commands: one stdin line becomes one [`Command`].

use std::fmt;

use e2ee_protocol::name_claim::{validate_name, NameClaimError};
use thiserror::Error;

/// One interactive command. Peer names are lowercased and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/msg <peer> <text...>`: send a text message.
    Msg {
        /// The peer's name.
        peer: String,
        /// The text, as typed after the peer name (inner spacing kept).
        text: String,
    },
    /// `/peers`: list pinned peers, with unread counts and last activity.
    Peers,
    /// `/history <peer> [n]`: the last `n` messages with a peer (default
    /// [`HISTORY_DEFAULT`]), from the encrypted store.
    History {
        /// The peer's name.
        peer: String,
        /// How many messages, 1 to [`HISTORY_MAX`].
        count: usize,
    },
    /// `/status`: the relay link (address, how it is trusted, connected or since when
    /// and why not), the outbox and what the relay held at login.
    Status,
    /// `/verify <peer>`: show the safety number (digits and QR code) with a peer.
    Verify {
        /// The peer's name.
        peer: String,
    },
    /// `/trust <peer> <digits>`: keep the key whose safety number is `digits` (60
    /// digits, spaces allowed) and mark it verified: while an identity change is
    /// pending, the new key or the pinned one. The digits are required (they name the
    /// key compared); the field is an `Option` for the agent's message type only.
    Trust {
        /// The peer's name.
        peer: String,
        /// The safety number as typed (checked by the agent), if given.
        digits: Option<String>,
    },
    /// `/reject <peer>`: keep the pinned key and reject the pending identity changes.
    Reject {
        /// The peer's name.
        peer: String,
    },
    /// `/release-name`: give our name up at the relay's registry (signed release); the
    /// agent stops claiming it until `/claim-name`.
    ReleaseName,
    /// `/claim-name`: claim our name at the relay's registry again.
    ClaimName,
    /// `/group create|add|remove|leave ...`: change a group (docs/AGENT.md 2.3).
    Group(GroupCommand),
    /// `/groups`: list our groups with their members and epochs.
    Groups,
    /// `/g <group> <text...>`: send a text to a group.
    GroupMsg {
        /// The group's local name.
        group: String,
        /// The text.
        text: String,
    },
    /// `/help`: show the commands.
    Help,
    /// `/quit`: stop the agent.
    Quit,
}

impl fmt::Display for Command {
    /// The canonical command line, which parses back to the same command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Msg { peer, text } => write!(f, "/msg {peer} {text}"),
            Self::Peers => f.write_str("/peers"),
            Self::History { peer, count } => write!(f, "/history {peer} {count}"),
            Self::Status => f.write_str("/status"),
            Self::Verify { peer } => write!(f, "/verify {peer}"),
            Self::Trust { peer, digits: None } => write!(f, "/trust {peer}"),
            Self::Trust {
                peer,
                digits: Some(digits),
            } => write!(f, "/trust {peer} {digits}"),
            Self::Reject { peer } => write!(f, "/reject {peer}"),
            Self::ReleaseName => f.write_str("/release-name"),
            Self::ClaimName => f.write_str("/claim-name"),
            Self::Group(group) => group.fmt(f),
            Self::Groups => f.write_str("/groups"),
            Self::GroupMsg { group, text } => write!(f, "/g {group} {text}"),
            Self::Help => f.write_str("/help"),
            Self::Quit => f.write_str("/quit"),
        }
    }
}

/// A `/group` subcommand. Group names are 1 to 64 letters, digits, `-`, `_`, `.`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupCommand {
    /// `/group create <group> <peer>...`: a new group with these members and us.
    Create {
        /// The group's name.
        group: String,
        /// The peers added.
        peers: Vec<String>,
    },
    /// `/group add <group> <peer>...`.
    Add {
        /// The group.
        group: String,
        /// The peers added.
        peers: Vec<String>,
    },
    /// `/group remove <group> <peer>...`.
    Remove {
        /// The group.
        group: String,
        /// The peers removed.
        peers: Vec<String>,
    },
    /// `/group leave <group>`.
    Leave {
        /// The group.
        group: String,
    },
    /// `/group update <group>`: renew our keys in the group (post-compromise security).
    Update {
        /// The group.
        group: String,
    },
}

impl fmt::Display for GroupCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create { group, peers } => write!(f, "/group create {group} {}", peers.join(" ")),
            Self::Add { group, peers } => write!(f, "/group add {group} {}", peers.join(" ")),
            Self::Remove { group, peers } => write!(f, "/group remove {group} {}", peers.join(" ")),
            Self::Leave { group } => write!(f, "/group leave {group}"),
            Self::Update { group } => write!(f, "/group update {group}"),
        }
    }
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// The line does not start with `/`.
    #[error("unknown input: use /msg <peer> <text> (see /help)")]
    NotACommand,
    /// `/something` that is not a command.
    #[error("unknown command /{0} (see /help)")]
    Unknown(String),
    /// A required argument is missing.
    #[error("missing {what}: usage: {usage}")]
    MissingArgument {
        /// What is missing (`peer name`, `message text`).
        what: &'static str,
        /// The command's usage line.
        usage: &'static str,
    },
    /// Arguments after a command that takes fewer.
    #[error("too many arguments: usage: {usage}")]
    TooManyArguments {
        /// The command's usage line.
        usage: &'static str,
    },
    /// The count after `/history <peer>` is not a number from 1 to [`HISTORY_MAX`].
    #[error("the number of messages is 1 to {HISTORY_MAX}: usage: {USAGE_HISTORY}")]
    BadCount,
    /// The digits after `/trust <peer>` are not a safety number.
    #[error("a safety number is 60 digits (spaces allowed): usage: {USAGE_TRUST}")]
    BadSafetyNumber,
    /// The group name is not valid.
    #[error("invalid group name {0:?}: 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidGroup(String),
    /// The peer name is not a valid agent name.
    #[error("invalid peer name {name:?}: {source}")]
    InvalidPeer {
        /// The name as typed.
        name: String,
        /// What is wrong with it.
        #[source]
        source: NameClaimError,
    },
}

const USAGE_MSG: &str = "/msg <peer> <text>";
const USAGE_VERIFY: &str = "/verify <peer>";
const USAGE_TRUST: &str = "/trust <peer> <digits>";
const USAGE_REJECT: &str = "/reject <peer>";
const USAGE_HISTORY: &str = "/history <peer> [n]";
const USAGE_GROUP: &str = "/group create|add|remove <group> <peer>... | /group leave|update <group>";
const USAGE_G: &str = "/g <group> <text>";

/// Messages `/history <peer>` shows without a count.
pub const HISTORY_DEFAULT: usize = 20;
/// The most messages one `/history` shows.
pub const HISTORY_MAX: usize = 1000;

/// The help text shown by `/help` (several lines, no trailing newline).
pub fn help_text() -> &'static str {
    "commands:\n\
     \x20 /msg <peer> <text>   send an end-to-end encrypted message to <peer>\n\
     \x20 /peers               list known peers (verified, session, unread, last activity)\n\
     \x20 /history <peer> [n]  show the last n messages with <peer> (default 20)\n\
     \x20 /status              the relay link, the outbox and what waits at the relay\n\
     \x20 /verify <peer>       show the safety number and QR code shared with <peer>;\n\
     \x20                      compare it with the peer in person or over a trusted channel\n\
     \x20 /trust <peer> <digits>\n\
     \x20                      keep the key of <peer> whose safety number you compared\n\
     \x20                      (type its 60 digits) and mark it verified; while an\n\
     \x20                      identity change is pending this picks the pinned or new key\n\
     \x20 /reject <peer>       keep the pinned key of <peer>, reject its identity change\n\
     \x20                      and delete the messages held from the new key unread\n\
     \x20 /group create <group> <peer>...\n\
     \x20                      start a group chat (MLS) with these peers\n\
     \x20 /group add|remove <group> <peer>...\n\
     \x20                      add or remove members\n\
     \x20 /group leave <group> leave a group\n\
     \x20 /group update <group>\n\
     \x20                      renew your keys in <group> (after a suspected compromise)\n\
     \x20 /groups              list your groups, their members and epochs\n\
     \x20 /g <group> <text>    send a message to every member of <group>\n\
     \x20 /help                show this help\n\
     \x20 /quit                stop the agent"
}

/// Splits off the first whitespace-delimited word; the rest keeps its inner spacing
/// and is trimmed at the start.
pub(crate) fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(at) => (&s[..at], s[at..].trim_start()),
        None => (s, ""),
    }
}

fn peer_arg(word: &str, usage: &'static str) -> Result<String, CommandError> {
    if word.is_empty() {
        return Err(CommandError::MissingArgument {
            what: "peer name",
            usage,
        });
    }
    // Names are lowercase; accept what a user types in any case.
    let name = word.to_lowercase();
    validate_name(&name).map_err(|source| CommandError::InvalidPeer {
        name: word.to_owned(),
        source,
    })?;
    Ok(name)
}

/// A command taking exactly one peer argument.
fn single_peer(rest: &str, usage: &'static str) -> Result<String, CommandError> {
    let (peer, extra) = split_word(rest);
    let peer = peer_arg(peer, usage)?;
    if !extra.is_empty() {
        return Err(CommandError::TooManyArguments { usage });
    }
    Ok(peer)
}

fn no_args(rest: &str, command: Command, usage: &'static str) -> Result<Command, CommandError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::TooManyArguments { usage })
    }
}

fn group_arg(word: &str, usage: &'static str) -> Result<String, CommandError> {
    if word.is_empty() {
        return Err(CommandError::MissingArgument {
            what: "group name",
            usage,
        });
    }
    crate::group::validate_group_name(word).map_err(|_| CommandError::InvalidGroup(word.to_owned()))?;
    Ok(word.to_owned())
}

fn group_command(rest: &str) -> Result<GroupCommand, CommandError> {
    let (verb, rest) = split_word(rest);
    let (group, rest) = split_word(rest);
    if verb.is_empty() {
        return Err(CommandError::MissingArgument {
            what: "create, add, remove or leave",
            usage: USAGE_GROUP,
        });
    }
    let group = group_arg(group, USAGE_GROUP)?;
    let removing = verb == "remove";
    let peers = || -> Result<Vec<String>, CommandError> {
        let peers: Vec<String> = rest
            .split_whitespace()
            .map(|p| match p.strip_prefix('#') {
                // A member without a name, by the label `/groups` shows: `#` and hex.
                Some(hex)
                    if removing
                        && !hex.is_empty()
                        && hex.len() <= 64
                        && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    Ok(p.to_ascii_lowercase())
                }
                _ => peer_arg(p, USAGE_GROUP),
            })
            .collect::<Result<_, _>>()?;
        if peers.is_empty() {
            return Err(CommandError::MissingArgument {
                what: "peer name",
                usage: USAGE_GROUP,
            });
        }
        Ok(peers)
    };
    Ok(match verb {
        "create" => GroupCommand::Create {
            group,
            peers: peers()?,
        },
        "add" => GroupCommand::Add {
            group,
            peers: peers()?,
        },
        "remove" => GroupCommand::Remove {
            group,
            peers: peers()?,
        },
        "leave" if rest.is_empty() => GroupCommand::Leave { group },
        "update" if rest.is_empty() => GroupCommand::Update { group },
        "leave" | "update" => return Err(CommandError::TooManyArguments { usage: USAGE_GROUP }),
        other => return Err(CommandError::Unknown(format!("group {other}"))),
    })
}

/// Parses one input line. A blank line gives `Ok(None)`; trailing newline and
/// surrounding whitespace are ignored (inner spacing of a message text is kept).
pub fn parse_command(line: &str) -> Result<Option<Command>, CommandError> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let Some(body) = line.strip_prefix('/') else {
        return Err(CommandError::NotACommand);
    };
    let (name, rest) = split_word(body);
    let command = match name {
        "msg" => {
            let (peer, text) = split_word(rest);
            let peer = peer_arg(peer, USAGE_MSG)?;
            if text.is_empty() {
                return Err(CommandError::MissingArgument {
                    what: "message text",
                    usage: USAGE_MSG,
                });
            }
            Command::Msg {
                peer,
                text: text.to_owned(),
            }
        }
        "peers" => no_args(rest, Command::Peers, "/peers")?,
        "status" => no_args(rest, Command::Status, "/status")?,
        "history" => {
            let (peer, count) = split_word(rest);
            let peer = peer_arg(peer, USAGE_HISTORY)?;
            let (count, extra) = split_word(count);
            if !extra.is_empty() {
                return Err(CommandError::TooManyArguments { usage: USAGE_HISTORY });
            }
            let count = match count {
                "" => HISTORY_DEFAULT,
                n => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=HISTORY_MAX).contains(n))
                    .ok_or(CommandError::BadCount)?,
            };
            Command::History { peer, count }
        }
        "verify" => Command::Verify {
            peer: single_peer(rest, USAGE_VERIFY)?,
        },
        "trust" => {
            let (peer, digits) = split_word(rest);
            let peer = peer_arg(peer, USAGE_TRUST)?;
            // The digits are required: they name the key the user compared, so a key
            // that changed since (or was never compared) cannot be verified by mistake.
            if digits.is_empty() {
                return Err(CommandError::MissingArgument {
                    what: "safety number (the 60 digits you compared)",
                    usage: USAGE_TRUST,
                });
            }
            let digits = crate::pins::parse_digits(digits).ok_or(CommandError::BadSafetyNumber)?;
            Command::Trust {
                peer,
                digits: Some(digits),
            }
        }
        "reject" => Command::Reject {
            peer: single_peer(rest, USAGE_REJECT)?,
        },
        "group" => Command::Group(group_command(rest)?),
        "groups" => no_args(rest, Command::Groups, "/groups")?,
        "g" => {
            let (group, text) = split_word(rest);
            let group = group_arg(group, USAGE_G)?;
            if text.is_empty() {
                return Err(CommandError::MissingArgument {
                    what: "message text",
                    usage: USAGE_G,
                });
            }
            Command::GroupMsg {
                group,
                text: text.to_owned(),
            }
        }
        "release-name" => no_args(rest, Command::ReleaseName, "/release-name")?,
        "claim-name" => no_args(rest, Command::ClaimName, "/claim-name")?,
        "help" => no_args(rest, Command::Help, "/help")?,
        "quit" | "exit" => no_args(rest, Command::Quit, "/quit")?,
        other => return Err(CommandError::Unknown(other.to_owned())),
    };
    Ok(Some(command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<Command>, CommandError> {
        parse_command(line)
    }

    #[test]
    fn parses_group_commands_and_refuses_bad_ones() {
        assert_eq!(
            parse("/group create team Bob carol"),
            Ok(Some(Command::Group(GroupCommand::Create {
                group: "team".into(),
                peers: vec!["bob".into(), "carol".into()]
            })))
        );
        assert_eq!(
            parse("/group leave team"),
            Ok(Some(Command::Group(GroupCommand::Leave { group: "team".into() })))
        );
        assert_eq!(
            parse("/g team hello  all"),
            Ok(Some(Command::GroupMsg {
                group: "team".into(),
                text: "hello  all".into()
            }))
        );
        assert_eq!(parse("/groups"), Ok(Some(Command::Groups)));
        assert_eq!(
            parse("/group remove team #0C793fcdb37cd9c6"),
            Ok(Some(Command::Group(GroupCommand::Remove {
                group: "team".into(),
                peers: vec!["#0c793fcdb37cd9c6".into()]
            })))
        );
        assert!(
            parse("/group add team #0c793fcdb37cd9c6").is_err(),
            "added by name only"
        );
        for bad in [
            "/group",
            "/group create",
            "/group create team",
            "/group add t@am bob",
            "/group remove team b#b",
            "/group leave team bob",
            "/group rename team x",
            "/g team",
            "/groups x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for command in [
            "/group create team bob carol",
            "/group add team dave",
            "/group remove team bob",
            "/group leave team",
            "/group update team",
            "/g team hi there",
            "/groups",
        ] {
            let parsed = parse(command).expect("parses").expect("a command");
            assert_eq!(parsed.to_string(), command);
        }
    }

    #[test]
    fn lowercases_peer_names() {
        assert_eq!(
            parse("/msg Bob Hi There"),
            Ok(Some(Command::Msg {
                peer: "bob".into(),
                text: "Hi There".into()
            }))
        );
        assert_eq!(
            parse(&format!("/trust CAROL {}", "1".repeat(60))),
            Ok(Some(Command::Trust {
                peer: "carol".into(),
                digits: Some("1".repeat(60))
            }))
        );
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse("/msg bob hello  there\n"),
            Ok(Some(Command::Msg {
                peer: "bob".into(),
                text: "hello  there".into()
            }))
        );
        assert_eq!(parse("/peers"), Ok(Some(Command::Peers)));
        assert_eq!(parse("/release-name"), Ok(Some(Command::ReleaseName)));
        assert_eq!(parse(" /claim-name "), Ok(Some(Command::ClaimName)));
        assert!(matches!(
            parse("/release-name bob"),
            Err(CommandError::TooManyArguments { .. })
        ));
        assert_eq!(
            parse("  /verify carol "),
            Ok(Some(Command::Verify { peer: "carol".into() }))
        );
        assert!(
            matches!(parse("/trust dave-2"), Err(CommandError::MissingArgument { .. })),
            "digits are required"
        );
        assert_eq!(
            parse(&format!("/trust dave-2 {}", "67890 ".repeat(12))),
            Ok(Some(Command::Trust {
                peer: "dave-2".into(),
                digits: Some("67890".repeat(12))
            }))
        );
        assert_eq!(parse("/trust dave-2 12345"), Err(CommandError::BadSafetyNumber));
        assert_eq!(
            parse("/reject Bob"),
            Ok(Some(Command::Reject { peer: "bob".into() }))
        );
        assert_eq!(parse("/help"), Ok(Some(Command::Help)));
        assert_eq!(parse("/quit"), Ok(Some(Command::Quit)));
        assert_eq!(parse("/exit"), Ok(Some(Command::Quit)));
    }

    #[test]
    fn blank_lines_are_nothing() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("  \t\n"), Ok(None));
    }

    #[test]
    fn plain_text_is_rejected_with_a_hint() {
        let err = parse("hello bob").expect_err("not a command");
        assert_eq!(err, CommandError::NotACommand);
        assert_eq!(
            err.to_string(),
            "unknown input: use /msg <peer> <text> (see /help)"
        );
    }

    #[test]
    fn reports_missing_and_extra_arguments() {
        assert_eq!(
            parse("/msg"),
            Err(CommandError::MissingArgument {
                what: "peer name",
                usage: USAGE_MSG
            })
        );
        let err = parse("/msg bob   ").expect_err("no text");
        assert_eq!(err.to_string(), "missing message text: usage: /msg <peer> <text>");
        assert!(matches!(
            parse("/verify"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            parse("/trust"),
            Err(CommandError::MissingArgument { .. })
        ));
        assert!(matches!(
            parse("/verify bob now"),
            Err(CommandError::TooManyArguments { .. })
        ));
        assert!(matches!(
            parse("/peers all"),
            Err(CommandError::TooManyArguments { .. })
        ));
        assert!(matches!(
            parse("/quit now"),
            Err(CommandError::TooManyArguments { .. })
        ));
    }

    #[test]
    fn rejects_unknown_commands_and_bad_names() {
        assert_eq!(parse("/send bob hi"), Err(CommandError::Unknown("send".into())));
        assert_eq!(parse("/"), Err(CommandError::Unknown(String::new())));
        assert!(matches!(
            parse("/msg b@b hi"),
            Err(CommandError::InvalidPeer { .. })
        ));
        assert!(matches!(
            parse("/verify bob!"),
            Err(CommandError::InvalidPeer { .. })
        ));
    }

    #[test]
    fn display_parses_back() {
        for line in [
            "/msg bob hi  you",
            "/peers",
            "/verify a",
            "/trust b 111111111111111111111111111111111111111111111111111111111111",
            "/help",
            "/quit",
        ] {
            let command = parse(line).ok().flatten().expect("parses");
            assert_eq!(parse(&command.to_string()), Ok(Some(command)));
        }
    }

    #[test]
    fn help_mentions_every_command() {
        for name in ["/msg", "/peers", "/verify", "/trust", "/help", "/quit"] {
            assert!(help_text().contains(name), "{name}");
        }
    }
}
