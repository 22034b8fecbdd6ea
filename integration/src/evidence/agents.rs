//! Agents and relays as child processes for the evidence scenarios: an `e2ee-agent
//! --json` whose events are read on a thread and kept in order (so a scenario waits for
//! the event it needs, with a timeout, instead of sleeping), and a relay with an
//! optional adversary mode.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::name_claim::NameClaim;
use rand_core::OsRng;
use serde_json::Value;

use crate::client::RelayClient;
use crate::process::{binary, wait_exit, RelayProcess, ADVERSARIAL_RELAY};

/// Longest wait for any single expected event.
pub const WAIT: Duration = Duration::from_secs(15);
/// Agent log lines kept for error messages.
const STDERR_TAIL: usize = 20;

/// An event and when the harness read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it was read.
    pub at: Instant,
    /// The JSON event.
    pub event: Value,
}

/// How to start an agent.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// `block`, `warn` or `accept`.
    pub policy: Option<String>,
    /// Run this script instead of reading commands from stdin.
    pub script: Option<PathBuf>,
    /// Session recovery off (`recovery.enabled = false`): for scenarios that show what
    /// the ratchet alone does with a message.
    pub no_recovery: bool,
    /// Plain TCP to a relay without TLS ([`start_plaintext_relay`]): for scenarios that
    /// record the frames the relay sees.
    pub plaintext: bool,
}

/// A running `e2ee-agent --json`.
pub struct Agent {
    /// Its name.
    pub name: String,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its identity (hex), from the `started` event.
    pub identity: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Value>,
    events: Vec<Seen>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Agent {
    /// Starts an interactive agent (commands on stdin).
    pub fn start(name: &str, relay: SocketAddr, state_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(name, relay, state_dir, &AgentOptions::default())
    }

    /// Starts an interactive agent that talks plain TCP (to [`start_plaintext_relay`]).
    pub fn start_plaintext(name: &str, relay: SocketAddr, state_dir: &Path) -> anyhow::Result<Self> {
        let options = AgentOptions {
            plaintext: true,
            ..AgentOptions::default()
        };
        Self::start_with(name, relay, state_dir, &options)
    }

    /// Starts an agent and waits for its `started` event.
    pub fn start_with(
        name: &str,
        relay: SocketAddr,
        state_dir: &Path,
        options: &AgentOptions,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(binary("e2ee-agent")?);
        command
            .args(["--name", name, "--relay", &relay.to_string(), "--json"])
            .args(["--log-level", "warn", "--log-format", "json"])
            .arg("--state")
            .arg(state_dir)
            .env("E2EE_AGENT_RECONNECT__MAX_MS", "1000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(policy) = &options.policy {
            command.args(["--identity-policy", policy]);
        }
        if options.no_recovery {
            command.env("E2EE_AGENT_RECOVERY__ENABLED", "false");
        }
        if options.plaintext {
            command.env("E2EE_AGENT_INSECURE_PLAINTEXT", "true");
        }
        match &options.script {
            Some(script) => {
                command.arg("--script").arg(script).stdin(Stdio::null());
            }
            None => {
                command.stdin(Stdio::piped());
            }
        }
        let mut child = command.spawn().context("starting e2ee-agent")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr_pipe = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    if tx.send(value).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() >= STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let mut agent = Self {
            name: name.to_string(),
            state_dir: state_dir.to_path_buf(),
            identity: String::new(),
            stdin: child.stdin.take(),
            child,
            rx,
            events: Vec::new(),
            stderr,
        };
        let started = agent.wait_for("started", WAIT, |e| e["event"] == "started")?;
        agent.identity = started["identity"].as_str().unwrap_or_default().to_string();
        Ok(agent)
    }

    /// Writes one command line to the agent's stdin.
    pub fn command(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{} has no stdin", self.name))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// `/msg peer text`.
    pub fn send_text(&mut self, peer: &str, text: &str) -> anyhow::Result<()> {
        self.command(&format!("/msg {peer} {text}"))
    }

    /// Every event read so far.
    pub fn events(&self) -> &[Seen] {
        &self.events
    }

    /// How many events have been read (a mark for [`Agent::wait_from`]).
    pub fn mark(&mut self) -> usize {
        self.pull();
        self.events.len()
    }

    /// Events matching `pred`, from index `from`.
    pub fn matching(&self, from: usize, pred: impl Fn(&Value) -> bool) -> Vec<&Seen> {
        self.events
            .iter()
            .skip(from)
            .filter(|seen| pred(&seen.event))
            .collect()
    }

    fn pull(&mut self) {
        while let Ok(event) = self.rx.try_recv() {
            self.push(event);
        }
    }

    fn push(&mut self, event: Value) {
        self.events.push(Seen {
            at: Instant::now(),
            event,
        });
    }

    /// The first event matching `pred` (already read or arriving within `timeout`).
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        self.wait_from(0, what, timeout, pred).map(|seen| seen.event)
    }

    /// The first event at index `from` or later matching `pred`, within `timeout`.
    pub fn wait_from(
        &mut self,
        from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Seen> {
        let deadline = Instant::now() + timeout;
        let mut checked = from;
        loop {
            if let Some(seen) = self.events.iter().skip(checked).find(|s| pred(&s.event)) {
                return Ok(seen.clone());
            }
            checked = checked.max(self.events.len());
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(event) => self.push(event),
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: no {what} within {timeout:?}{}", self.name, self.context())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("{}: exited before {what}{}", self.name, self.context())
                }
            }
        }
    }

    /// Waits until `count` events from index `from` on match `pred`; returns them.
    pub fn wait_count(
        &mut self,
        from: usize,
        what: &str,
        count: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Vec<Seen>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Seen> = self
                .events
                .iter()
                .skip(from)
                .filter(|s| pred(&s.event))
                .cloned()
                .collect();
            if found.len() >= count {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(event) => self.push(event),
                Err(_) => bail!(
                    "{}: {} of {count} {what} within {timeout:?}{}",
                    self.name,
                    found.len(),
                    self.context()
                ),
            }
        }
    }

    /// Reads events for `period` (to see that nothing else arrives).
    pub fn settle(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(event) => self.push(event),
                Err(_) => break,
            }
        }
    }

    /// Waits for the relay connection.
    pub fn connected(&mut self) -> anyhow::Result<()> {
        self.wait_for("relay connection", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "connected"
        })
        .map(|_| ())
    }

    /// `/verify peer` and the 60 digits shown.
    pub fn safety_number(&mut self, peer: &str) -> anyhow::Result<String> {
        let mark = self.mark();
        self.command(&format!("/verify {peer}"))?;
        let event = self.wait_from(mark, "safety number", WAIT, |e| {
            e["event"] == "safety_number" && e["peer"] == peer
        })?;
        Ok(event.event["digits"].as_str().unwrap_or_default().to_string())
    }

    /// Ends the agent (`/quit`, or waits for the script to end) and reads its last events.
    pub fn quit(&mut self) -> anyhow::Result<()> {
        if self.stdin.is_some() {
            let _ = self.command("/quit");
            self.stdin = None;
        }
        let status = wait_exit(&mut self.child, WAIT);
        self.settle(Duration::from_millis(50));
        status.map(|_| ())
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.settle(Duration::from_millis(50));
    }

    fn context(&self) -> String {
        let events: Vec<String> = self
            .events
            .iter()
            .rev()
            .take(8)
            .rev()
            .map(|s| s.event.to_string())
            .collect();
        let stderr: Vec<String> = self
            .stderr
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        format!(
            "\n  last events:\n    {}\n  last log lines:\n    {}",
            events.join("\n    "),
            stderr.join("\n    ")
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `event == "message"` with exactly this text.
pub fn is_message(text: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["event"] == "message" && e["text"] == text
}

/// An adversary configuration for a relay.
#[derive(Debug, Clone)]
pub struct AdversaryConfig {
    /// Mode name (`tamper`, `drop`, ...).
    pub mode: &'static str,
    /// Every Nth eligible message.
    pub every: u64,
    /// Smallest eligible payload.
    pub min_len: usize,
    /// Delay / longest hold.
    pub delay_ms: u64,
}

/// Starts `e2ee-relay` without TLS (`insecure_plaintext`), for scenarios that record
/// the link through a proxy and must see the frames the relay itself sees: the
/// end-to-end properties they show do not rest on the link's TLS.
pub fn start_plaintext_relay(data_dir: &Path) -> anyhow::Result<RelayProcess> {
    start_relay_with(data_dir, None, &[("E2EE_RELAY_INSECURE_PLAINTEXT", "true")])
}

/// Starts `e2ee-relay` on a free loopback port, or `e2ee-relay-adversary --adversary
/// MODE` when an adversary is given.
pub fn start_relay(data_dir: &Path, adversary: Option<&AdversaryConfig>) -> anyhow::Result<RelayProcess> {
    start_relay_with(data_dir, adversary, &[])
}

/// [`start_relay`] with extra `E2EE_…` settings, e.g. `("E2EE_RELAY_NAMES__LEASE_SECS", "1")`.
pub fn start_relay_with(
    data_dir: &Path,
    adversary: Option<&AdversaryConfig>,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<RelayProcess> {
    let mut env: Vec<(&str, String)> = vec![("E2EE_RELAY_STORE__FSYNC", "false".into())];
    env.extend(extra_env.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(adversary) = adversary else {
        return RelayProcess::start_with_env("127.0.0.1:0", data_dir, &[], &env);
    };
    let (every, min_len, delay_ms) = (
        adversary.every.to_string(),
        adversary.min_len.to_string(),
        adversary.delay_ms.to_string(),
    );
    let args = [
        "--adversary",
        adversary.mode,
        "--adversary-every",
        &every,
        "--adversary-min-len",
        &min_len,
        "--adversary-delay-ms",
        &delay_ms,
    ];
    RelayProcess::start_program(ADVERSARIAL_RELAY, "127.0.0.1:0", data_dir, &args, &env)
}

/// Relay log lines (JSON) with `msg == "adversary acted"`, as (action, target): the
/// `msg_id` acted on, the `name` whose claim or the `target` identity whose bundle was
/// substituted.
pub fn adversary_actions(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["msg"] == "adversary acted")
        .map(|v| {
            let action = v["action"].as_str().unwrap_or_default().to_string();
            let target = v["msg_id"]
                .as_str()
                .or_else(|| v["name"].as_str())
                .or_else(|| v["target"].as_str())
                .unwrap_or_default()
                .to_string();
            (action, target)
        })
        .collect()
}

/// A current-thread tokio runtime for the async helpers.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Waits until the relay answers a lookup of `name` with a verified claim (the agent
/// publishes its claim right after its prekeys, so its bundle is then stored too).
/// Returns the claimed identity (hex).
pub fn wait_published(relay: SocketAddr, name: &str) -> anyhow::Result<String> {
    wait_bound(relay, name, None)
}

/// [`wait_published`] for a relay without TLS ([`start_plaintext_relay`]).
pub fn wait_published_plaintext(relay: SocketAddr, name: &str) -> anyhow::Result<String> {
    wait_bound_over(relay, name, None, true)
}

/// Waits until the relay's registry binds `name` (to `identity`, hex, when given: the
/// name may still be bound to an earlier holder). Returns the bound identity (hex).
pub fn wait_bound(relay: SocketAddr, name: &str, identity: Option<&str>) -> anyhow::Result<String> {
    wait_bound_over(relay, name, identity, false)
}

fn wait_bound_over(
    relay: SocketAddr,
    name: &str,
    identity: Option<&str>,
    plaintext: bool,
) -> anyhow::Result<String> {
    runtime()?.block_on(async {
        let me = IdentityKeyPair::generate(&mut OsRng);
        let mut client = if plaintext {
            RelayClient::connect_plaintext(relay, me).await?
        } else {
            RelayClient::connect(relay, me).await?
        };
        let deadline = Instant::now() + WAIT;
        for request_id in 1u32.. {
            client
                .send(Frame::LookupName {
                    request_id,
                    name: name.to_string(),
                })
                .await?;
            loop {
                match client.recv(WAIT).await? {
                    Frame::NameClaim { request_id: r, claim } if r == request_id => {
                        if let Some(bytes) = claim {
                            let claim = NameClaim::decode_verified(&bytes)
                                .map_err(|e| anyhow!("invalid claim for {name}: {e}"))?;
                            let bound = hex::encode(claim.identity.as_bytes());
                            if identity.is_none_or(|wanted| wanted == bound) {
                                return Ok(bound);
                            }
                        }
                        break;
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match identity {
            Some(wanted) => bail!("{name} was not bound to {wanted} within {WAIT:?}"),
            None => bail!("{name} did not publish its name within {WAIT:?}"),
        }
    })
}
