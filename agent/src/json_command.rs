//! [`JsonCommand`]: bot mode's input (docs/AGENT.md 4.1). With `--json`, a stdin line
//! that starts with `{` is one JSON command, `{"id": 7, "cmd": "send", "peer": "bob",
//! "text": "two\nlines"}`; the events it causes carry its `id` (a number or a string,
//! chosen by the bot), in the manner of a JSON-RPC request id. A line that is not a
//! valid command is answered with one `error` event (with the `id` when it could be
//! read), never by leaving.

use serde::Deserialize;
use serde_json::Value;

use crate::command::{Command, HISTORY_DEFAULT, HISTORY_MAX};

/// A bot's command and the id its events carry.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCommand {
    /// The bot's id for the command, echoed in the events it causes.
    pub id: Option<Value>,
    /// What to do.
    pub command: Command,
}

/// Why a line is not a command: the reason, and the `id` if it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCommandError {
    /// The command's id, if the line held one.
    pub id: Option<Value>,
    /// What is wrong.
    pub reason: String,
}

/// Every field any command takes; which ones a command needs is checked per command.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    /// Read before, from the raw value; listed so that it is not an unknown field.
    #[serde(default, rename = "id")]
    _id: Option<Value>,
    cmd: String,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    digits: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    peers: Option<Vec<String>>,
}

/// Parses one line of bot input.
pub fn parse_json_command(line: &str) -> Result<JsonCommand, JsonCommandError> {
    let value: Value = serde_json::from_str(line).map_err(|err| JsonCommandError {
        id: None,
        reason: format!("not a JSON command: {err}"),
    })?;
    let id = value.get("id").cloned().filter(|id| !id.is_null());
    let fail = |reason: String| JsonCommandError {
        id: id.clone(),
        reason,
    };
    if let Some(id) = &id {
        if !(id.is_number() || id.is_string()) {
            return Err(fail("`id` must be a number or a string".into()));
        }
    }
    let fields: Fields = serde_json::from_value(value).map_err(|err| fail(format!("bad command: {err}")))?;
    let peer = |fields: &Fields| -> Result<String, JsonCommandError> {
        let peer = (fields.peer.as_deref())
            .ok_or_else(|| fail(format!("`{}` needs `peer`", fields.cmd)))?
            .to_lowercase();
        e2ee_protocol::name_claim::validate_name(&peer)
            .map_err(|err| fail(format!("invalid peer name {peer:?}: {err}")))?;
        Ok(peer)
    };
    let command = match fields.cmd.as_str() {
        "send" => {
            let text = fields.text.clone().unwrap_or_default();
            if text.is_empty() {
                return Err(fail("`send` needs a non-empty `text`".into()));
            }
            Command::Msg {
                peer: peer(&fields)?,
                text,
            }
        }
        "peers" => Command::Peers,
        "status" => Command::Status,
        "history" => {
            let count = match fields.count {
                None => HISTORY_DEFAULT,
                Some(n) => usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=HISTORY_MAX).contains(n))
                    .ok_or_else(|| fail(format!("`count` is 1 to {HISTORY_MAX}")))?,
            };
            Command::History {
                peer: peer(&fields)?,
                count,
            }
        }
        "verify" => Command::Verify { peer: peer(&fields)? },
        "trust" => {
            let digits = (fields.digits.as_deref())
                .and_then(crate::pins::parse_digits)
                .ok_or_else(|| fail("`trust` needs `digits`: the 60 digits compared".into()))?;
            Command::Trust {
                peer: peer(&fields)?,
                digits: Some(digits),
            }
        }
        "reject" => Command::Reject { peer: peer(&fields)? },
        "group-create" | "group-add" | "group-remove" | "group-leave" | "group-update" | "gsend" => {
            let group =
                (fields.group.clone()).ok_or_else(|| fail(format!("`{}` needs `group`", fields.cmd)))?;
            crate::group::validate_group_name(&group).map_err(|e| fail(e.to_string()))?;
            let peers = || -> Result<Vec<String>, JsonCommandError> {
                let peers: Vec<String> = (fields.peers.clone().unwrap_or_default().iter())
                    .map(|p| {
                        let p = p.to_lowercase();
                        e2ee_protocol::name_claim::validate_name(&p)
                            .map_err(|err| fail(format!("invalid peer name {p:?}: {err}")))?;
                        Ok(p)
                    })
                    .collect::<Result<_, _>>()?;
                if peers.is_empty() {
                    return Err(fail(format!("`{}` needs a non-empty `peers` list", fields.cmd)));
                }
                Ok(peers)
            };
            use crate::command::GroupCommand;
            match fields.cmd.as_str() {
                "group-create" => Command::Group(GroupCommand::Create {
                    group,
                    peers: peers()?,
                }),
                "group-add" => Command::Group(GroupCommand::Add {
                    group,
                    peers: peers()?,
                }),
                "group-remove" => Command::Group(GroupCommand::Remove {
                    group,
                    peers: peers()?,
                }),
                "group-leave" => Command::Group(GroupCommand::Leave { group }),
                "group-update" => Command::Group(GroupCommand::Update { group }),
                _ => {
                    let text = fields.text.clone().unwrap_or_default();
                    if text.is_empty() {
                        return Err(fail("`gsend` needs a non-empty `text`".into()));
                    }
                    Command::GroupMsg { group, text }
                }
            }
        }
        "groups" => Command::Groups,
        "claim-name" => Command::ClaimName,
        "release-name" => Command::ReleaseName,
        "help" => Command::Help,
        "quit" => Command::Quit,
        other => return Err(fail(format!("unknown cmd {other:?}"))),
    };
    Ok(JsonCommand { id, command })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_send_keeps_its_newlines_and_its_id() {
        let parsed = parse_json_command(r#"{"id": 7, "cmd": "send", "peer": "Bob", "text": "two\nlines"}"#);
        assert_eq!(
            parsed,
            Ok(JsonCommand {
                id: Some(json!(7)),
                command: Command::Msg {
                    peer: "bob".into(),
                    text: "two\nlines".into()
                }
            })
        );
        let parsed = parse_json_command(r#"{"id": "a-1", "cmd": "history", "peer": "bob", "count": 3}"#);
        assert_eq!(
            parsed.map(|c| (c.id, c.command)),
            Ok((
                Some(json!("a-1")),
                Command::History {
                    peer: "bob".into(),
                    count: 3
                }
            ))
        );
        assert_eq!(parse_json_command(r#"{"cmd": "status"}"#).map(|c| c.id), Ok(None));
    }

    #[test]
    fn bad_commands_say_why_and_keep_the_id_they_could_read() {
        let cases = [
            (
                r#"{"id": 1, "cmd": "send", "peer": "bob"}"#,
                Some(json!(1)),
                "text",
            ),
            (
                r#"{"id": 2, "cmd": "send", "text": "hi"}"#,
                Some(json!(2)),
                "peer",
            ),
            (r#"{"id": 3, "cmd": "fly"}"#, Some(json!(3)), "unknown cmd"),
            (
                r#"{"id": 4, "cmd": "peers", "colour": "red"}"#,
                Some(json!(4)),
                "colour",
            ),
            (
                r#"{"id": 5, "cmd": "history", "peer": "bob", "count": 0}"#,
                Some(json!(5)),
                "count",
            ),
            (
                r#"{"id": [1], "cmd": "peers"}"#,
                Some(json!([1])),
                "number or a string",
            ),
            (
                r#"{"id": 6, "cmd": "send", "peer": "b b", "text": "x"}"#,
                Some(json!(6)),
                "invalid peer",
            ),
            (
                r#"{"id": 8, "cmd": "trust", "peer": "bob", "digits": "12"}"#,
                Some(json!(8)),
                "60 digits",
            ),
            (r#"{"id": 9, "cmd": "send""#, None, "not a JSON command"),
            ("[1, 2]", None, "bad command"),
        ];
        for (line, id, why) in cases {
            let err = parse_json_command(line).expect_err(line);
            assert_eq!(err.id, id, "{line}");
            assert!(err.reason.contains(why), "{line}: {}", err.reason);
        }
    }
}
