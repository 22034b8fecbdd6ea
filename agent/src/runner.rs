//! Running an agent: open the state, start the Agent and RelayLink actors, then drive
//! them from a script (`--script FILE`) or from interactive commands: lines of stdin,
//! or the line editor when stdin and stdout are terminals.

use std::path::Path;
use std::time::Duration;

use actix::prelude::*;
use rand_core::OsRng;
use slog::Logger;

use crate::agent_actor::{
    AgentActor, Attach, Emit, EmitTagged, Expect, ExpectFailure, GroupOp, Leave, ListGroups, ListPeers,
    Online, Reject, RunCommand, SendGroupText, SendText, SetOwnName, ShowHistory, ShowStatus, Trust, Verify,
    WaitGroup, WaitPeer,
};
use crate::command::{help_text, parse_command, Command};
use crate::event::Event;
use crate::input::{Input, InputSource};
use crate::json_command::{parse_json_command, JsonCommand, JsonCommandError};
use crate::line_editor::LineEditor;
use crate::palette::Palette;
use crate::relay_link::{Backoff, Liveness, RelayLink};
use crate::relay_transport::RelayTransport;
use crate::script::{parse_script, ScriptStep, Step};
use crate::settings::AgentSettings;
use crate::sink::EventSink;
use crate::state::{AgentState, Retention};

/// Longest `sleep` a script may ask for.
const MAX_SLEEP_MS: u64 = 60_000;
/// How long `/release-name` and `/claim-name` wait for the relay's confirmation (ms).
const NAME_TIMEOUT_MS: u64 = 30_000;
/// How long the last lines (the goodbye) may take to reach the terminal on leaving.
const LAST_PRINT_WAIT: Duration = Duration::from_secs(2);

/// What drives the agent.
#[derive(Debug, Clone, Copy)]
pub enum Driver<'a> {
    /// The steps of this script file.
    Script(&'a Path),
    /// Commands from stdin, one per line (a pipe or a file).
    Stdin,
    /// Commands typed in the line editor (stdin and stdout are terminals,
    /// [`LineEditor::wanted`]); the logs go to `log_file`, not to the screen.
    LineEditor {
        /// Where the logs go.
        log_file: &'a Path,
    },
}

/// Runs an agent until the script ends, `/quit`, or stdin closes. Returns the process
/// exit code: 0 on success, 1 when a script step failed, 2 for unusable input (and the
/// agent ends the process with [`crate::agent_actor::EXIT_SYNC_FAILED`], 3, when its
/// state cannot be synced to disk).
pub fn run(settings: AgentSettings, driver: Driver<'_>, log: Logger) -> anyhow::Result<i32> {
    let steps = match driver {
        Driver::Script(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read script {}: {e}", path.display()))?;
            match parse_script(&text) {
                Ok(steps) => Some(steps),
                Err(err) => {
                    eprintln!("{}: {err}", path.display());
                    return Ok(2);
                }
            }
        }
        Driver::Stdin | Driver::LineEditor { .. } => None,
    };
    let mut state = crate::passphrase::open_state(&settings, &mut OsRng)?;
    state.set_retention(Retention {
        history_keep: settings.history.keep as usize,
        send_log_keep: settings.send_log.keep as usize,
        send_log_max_age_ms: settings.send_log.max_age_secs.saturating_mul(1000),
    });
    let mut notices = Vec::new();
    // Started after the passphrase prompt, which needs the terminal as it is.
    let mut input = match driver {
        Driver::Script(_) => None,
        Driver::Stdin => Some(InputSource::stdin()),
        Driver::LineEditor { log_file } => {
            notices.push(format!("logs go to {}", log_file.display()));
            match LineEditor::start(format!("{}> ", settings.name)) {
                Ok(editor) => Some(InputSource::Editor(editor)),
                Err(err) => {
                    notices.push(format!("{err}; reading plain lines"));
                    Some(InputSource::stdin())
                }
            }
        }
    };
    notices.extend(state_notices(&state));
    let transport = if settings.insecure_plaintext {
        RelayTransport::Plain
    } else if let Some(ca) = &settings.relay_ca {
        RelayTransport::Authorities(match ca.as_str() {
            "system" => e2ee_net::RelayTrust::system_roots()?,
            file => e2ee_net::RelayTrust::roots_from_pem(std::path::Path::new(file))?,
        })
    } else {
        let configured: Option<e2ee_net::RelayPin> =
            settings.relay_pin.as_deref().map(str::parse).transpose()?;
        RelayTransport::Tls {
            pin: cluster_pin(&mut state, &settings.relays(), configured)?,
        }
    };
    let system = System::new();
    let code = system.block_on(async move {
        let mut sink = EventSink::new(settings.json).with_palette(Palette::for_stdout());
        if let Some(InputSource::Editor(editor)) = &input {
            sink = sink.with_editor(editor.printer());
        }
        let backoff = Backoff {
            initial: Duration::from_millis(settings.reconnect.initial_ms.max(1)),
            max: Duration::from_millis(settings.reconnect.max_ms.max(1)),
        };
        let relays = settings.relays();
        let identity = state.identity().clone();
        let expect_timeout = settings.expect_timeout_ms;
        let liveness = Liveness {
            interval: Duration::from_millis(settings.heartbeat.interval_ms),
            timeout: Duration::from_millis(settings.heartbeat.timeout_ms),
        };
        let leave_wait = Duration::from_millis(settings.leave_wait_ms);
        let bot = settings.json;
        let agent = AgentActor::new(state, settings, sink, log.clone()).start();
        let link = RelayLink::new(
            relays,
            identity,
            agent.clone().recipient(),
            (backoff, liveness),
            transport,
            log,
        )
        .start();
        agent.do_send(Attach(link));
        for notice in notices {
            agent.do_send(Emit(Event::info(notice)));
        }
        let code = match (steps, &mut input) {
            (Some(steps), _) => run_script(&agent, steps, expect_timeout).await,
            (None, Some(input)) => run_commands(&agent, input, bot).await,
            (None, None) => 0,
        };
        // What was written goes out first (bounded by `leave_wait_ms`); what could not
        // is reported, and what waited for the state's sync is printed and sent.
        let _ = agent.send(Leave { wait: leave_wait }).await;
        if let Some(InputSource::Editor(editor)) = &input {
            editor.close(LAST_PRINT_WAIT);
        }
        code
    });
    System::current().stop();
    Ok(code)
}

/// What to tell the user about the state when the agent starts.
/// The TLS pin the link requires of every relay in `relays` (the relays of one list are
/// one cluster serving one key), kept in the state under each address: `configured`
/// (`relay_pin`) replaces what was pinned before; else the pin stored under any of the
/// addresses, which must all agree (a list of relays pinned to different keys is an
/// error at start, naming them); else none (the first key seen is pinned).
pub fn cluster_pin(
    state: &mut AgentState,
    relays: &[String],
    configured: Option<e2ee_net::RelayPin>,
) -> anyhow::Result<Option<e2ee_net::RelayPin>> {
    let mut stored = Vec::with_capacity(relays.len());
    for relay in relays {
        stored.push(state.relay_pin(relay)?);
    }
    let pin = match configured {
        Some(pin) => Some(pin),
        None => {
            let mut pinned = relays.iter().zip(&stored).filter_map(|(r, p)| p.map(|p| (r, p)));
            let first = pinned.next();
            if let Some((relay, pin)) = first {
                if let Some((other, other_pin)) = pinned.find(|(_, p)| *p != pin) {
                    anyhow::bail!(
                        "the relays of the list are pinned to different TLS keys ({relay}: {pin}, \
                         {other}: {other_pin}); the relays of one list must serve one key: if they do, \
                         start with --relay-pin and the key e2ee-relay --print-pin prints"
                    );
                }
            }
            first.map(|(_, pin)| pin)
        }
    };
    if let Some(pin) = pin {
        for (relay, was) in relays.iter().zip(stored) {
            if was != Some(pin) {
                state.set_relay_pin(relay, pin)?;
            }
        }
    }
    Ok(pin)
}

fn state_notices(state: &AgentState) -> Vec<String> {
    let mut notices = Vec::new();
    if state.was_imported() {
        notices.push(format!(
            "imported the state files of the earlier release into {}/state.db",
            state.dir().display()
        ));
    }
    if !state.passphrase_protected() {
        notices.push(format!(
            "the state in {} is protected by file permissions only (key file state.key); \
             use --passphrase-file to seal it under a passphrase",
            state.dir().display()
        ));
    }
    notices
}

async fn run_script(agent: &Addr<AgentActor>, steps: Vec<ScriptStep>, default_timeout: u64) -> i32 {
    for ScriptStep { line, step } in steps {
        let _ = agent
            .send(Emit(Event::ScriptStep {
                line,
                step: step.to_string(),
            }))
            .await;
        let result = run_step(agent, &step, default_timeout).await;
        if let Err(message) = result {
            let _ = agent
                .send(Emit(Event::error(format!(
                    "script line {line} ({}) failed: {message}",
                    step.keyword()
                ))))
                .await;
            let _ = agent.send(Emit(Event::ScriptDone { ok: false })).await;
            return 1;
        }
        if matches!(step, Step::Quit) {
            break;
        }
    }
    let _ = agent.send(Emit(Event::ScriptDone { ok: true })).await;
    0
}

async fn run_step(agent: &Addr<AgentActor>, step: &Step, default_timeout: u64) -> Result<(), String> {
    let mailbox = |_| "agent stopped".to_string();
    match step {
        Step::Send { peer, text } => agent
            .send(SendText {
                peer: peer.clone(),
                text: text.clone(),
            })
            .await
            .map_err(mailbox)?
            .map(|_| ()),
        Step::Expect { peer, text, .. } => agent
            .send(Expect {
                peer: peer.clone(),
                text: text.clone(),
                timeout_ms: step.timeout_or(default_timeout),
            })
            .await
            .map_err(mailbox)?,
        Step::ExpectFailure { peer, class, .. } => agent
            .send(ExpectFailure {
                peer: peer.clone(),
                class: *class,
                timeout_ms: step.timeout_or(default_timeout),
            })
            .await
            .map_err(mailbox)?,
        Step::WaitPeer { peer, .. } => agent
            .send(WaitPeer {
                peer: peer.clone(),
                timeout_ms: step.timeout_or(default_timeout),
            })
            .await
            .map_err(mailbox)?,
        Step::Disconnect => agent.send(Online(false)).await.map_err(mailbox),
        Step::Reconnect => agent.send(Online(true)).await.map_err(mailbox),
        Step::Sleep { ms } => {
            tokio::time::sleep(Duration::from_millis((*ms).min(MAX_SLEEP_MS))).await;
            Ok(())
        }
        Step::Verify { peer } => agent
            .send(Verify { peer: peer.clone() })
            .await
            .map_err(mailbox)?
            .map(|_| ()),
        Step::Trust { peer, digits } => agent
            .send(Trust {
                peer: peer.clone(),
                digits: digits.clone(),
            })
            .await
            .map_err(mailbox)?,
        Step::Reject { peer } => agent.send(Reject { peer: peer.clone() }).await.map_err(mailbox)?,
        Step::ReleaseName | Step::ClaimName => agent
            .send(SetOwnName {
                claim: matches!(step, Step::ClaimName),
                timeout_ms: default_timeout,
            })
            .await
            .map_err(mailbox)?,
        Step::Group(op) => agent.send(GroupOp(op.clone())).await.map_err(mailbox)?,
        Step::GroupSend { group, text } => agent
            .send(SendGroupText {
                group: group.clone(),
                text: text.clone(),
            })
            .await
            .map_err(mailbox)?,
        Step::GroupExpect {
            group, peer, text, ..
        } => agent
            .send(Expect {
                peer: format!("{group}/{peer}"),
                text: text.clone(),
                timeout_ms: step.timeout_or(default_timeout),
            })
            .await
            .map_err(mailbox)?,
        Step::WaitGroup { group, members, .. } => agent
            .send(WaitGroup {
                group: group.clone(),
                members: *members,
                timeout_ms: step.timeout_or(default_timeout),
            })
            .await
            .map_err(mailbox)?,
        Step::Print { text } => agent.send(Emit(Event::info(text.clone()))).await.map_err(mailbox),
        Step::Quit => Ok(()),
    }
}

/// Runs one bot command (a JSON line, `bot` mode): `true` to leave (`quit`).
async fn run_json_command(agent: &Addr<AgentActor>, line: &str) -> bool {
    match parse_json_command(line) {
        Err(JsonCommandError { id, reason }) => {
            let _ = agent.send(EmitTagged(Event::error(reason), id)).await;
            false
        }
        Ok(JsonCommand {
            command: Command::Quit,
            ..
        }) => true,
        Ok(JsonCommand { id, command }) => {
            if let Ok(Err(reason)) = agent
                .send(RunCommand {
                    command,
                    id: id.clone(),
                })
                .await
            {
                let _ = agent.send(EmitTagged(Event::error(reason), id)).await;
            }
            false
        }
    }
}

/// Reads and runs interactive commands until the end of input or `/quit`. A line that
/// cannot be used (not UTF-8) is reported and skipped: nothing but the end of input or
/// `/quit` ends the loop. In `bot` mode (`--json`) a line starting with `{` is a JSON
/// command.
async fn run_commands(agent: &Addr<AgentActor>, input: &mut InputSource, bot: bool) -> i32 {
    let _ = agent.send(Emit(Event::info("type /help for commands"))).await;
    loop {
        let line = match input.next().await {
            Input::Line(line) => line,
            Input::Skipped(message) => {
                let _ = agent.send(Emit(Event::error(message))).await;
                continue;
            }
            Input::Failed(message) => {
                let _ = agent.send(Emit(Event::error(message))).await;
                break;
            }
            Input::End => break,
        };
        if bot && line.trim_start().starts_with('{') {
            if run_json_command(agent, &line).await {
                break;
            }
            continue;
        }
        let command = match parse_command(&line) {
            Ok(Some(command)) => command,
            Ok(None) => continue,
            Err(err) => {
                let _ = agent.send(Emit(Event::error(err.to_string()))).await;
                continue;
            }
        };
        let outcome: Result<(), String> = match command {
            Command::Msg { peer, text } => {
                // Queued now, so messages go out in the order typed. Its outcome is
                // reported by the agent, once (`sent`, `deferred` or `send_failed`).
                agent.do_send(SendText { peer, text });
                Ok(())
            }
            Command::Peers => agent.send(ListPeers).await.map_err(|e| e.to_string()),
            Command::Groups => agent.send(ListGroups).await.map_err(|e| e.to_string()),
            Command::GroupMsg { group, text } => agent
                .send(SendGroupText { group, text })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
            Command::Group(op) => {
                // Adding members waits for their KeyPackages: awaited in a task.
                let done = agent.send(GroupOp(op));
                let agent = agent.clone();
                actix::spawn(async move {
                    if let Ok(Err(reason)) = done.await {
                        let _ = agent.send(Emit(Event::error(reason))).await;
                    }
                });
                Ok(())
            }
            Command::Status => agent.send(ShowStatus).await.map_err(|e| e.to_string()),
            Command::History { peer, count } => agent
                .send(ShowHistory { peer, count })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
            Command::Verify { peer } => agent
                .send(Verify { peer })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map(|_| ())),
            Command::Trust { peer, digits } => agent
                .send(Trust { peer, digits })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
            Command::Reject { peer } => agent
                .send(Reject { peer })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
            Command::ReleaseName | Command::ClaimName => {
                // The answer waits for the relay: awaited in a task, as /msg.
                let set = agent.send(SetOwnName {
                    claim: command == Command::ClaimName,
                    timeout_ms: NAME_TIMEOUT_MS,
                });
                let agent = agent.clone();
                actix::spawn(async move {
                    if let Ok(Err(reason)) = set.await {
                        let _ = agent.send(Emit(Event::error(reason))).await;
                    }
                });
                Ok(())
            }
            Command::Help => agent
                .send(Emit(Event::Help {
                    text: help_text().to_string(),
                }))
                .await
                .map_err(|e| e.to_string()),
            Command::Quit => break,
        };
        if let Err(message) = outcome {
            let _ = agent.send(Emit(Event::error(message))).await;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use e2ee_net::RelayPin;

    use super::*;

    fn pin(byte: &str) -> RelayPin {
        format!("sha256:{}", byte.repeat(32)).parse().expect("pin")
    }

    #[test]
    fn the_relays_of_a_list_share_one_pin_kept_under_each_address() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut state = AgentState::open(&tmp.path().join("alice"), "alice", 5, &mut OsRng).expect("state");
        let (a, b, c) = (
            "10.0.0.1:7300".to_string(),
            "10.0.0.2:7300".to_string(),
            "10.0.0.3:7300".to_string(),
        );
        // Nothing pinned yet: the first key seen will be.
        assert_eq!(
            cluster_pin(&mut state, &[a.clone(), b.clone()], None).expect("pin"),
            None
        );
        // A pin kept for one address (a single relay used before) holds for the list.
        state.set_relay_pin(&a, pin("ab")).expect("save");
        let relays = [a.clone(), b.clone()];
        assert_eq!(
            cluster_pin(&mut state, &relays, None).expect("pin"),
            Some(pin("ab"))
        );
        assert_eq!(
            state.relay_pin(&b).expect("read"),
            Some(pin("ab")),
            "kept under B too"
        );
        // Different pins kept for two addresses of a list: an error naming both.
        state.set_relay_pin(&c, pin("cd")).expect("save");
        let err = cluster_pin(&mut state, &[a.clone(), c.clone()], None)
            .expect_err("two keys")
            .to_string();
        assert!(err.contains(&a) && err.contains(&c), "{err}");
        // A given pin replaces them all.
        let given = cluster_pin(&mut state, &[a.clone(), c.clone()], Some(pin("ef"))).expect("pin");
        assert_eq!(given, Some(pin("ef")));
        assert_eq!(state.relay_pin(&a).expect("read"), Some(pin("ef")));
        assert_eq!(state.relay_pin(&c).expect("read"), Some(pin("ef")));
        assert_eq!(
            state.relay_pin(&b).expect("read"),
            Some(pin("ab")),
            "not in the list"
        );
    }
}
