//! An `e2ee-agent --json` child process for tests: its stdout events are parsed on a
//! thread and kept in order, lines can be written to its stdin (interactive mode), and
//! a test waits for the event it needs (with a timeout) instead of sleeping.
//!
//! ```no_run
//! # use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
//! # use std::time::Duration;
//! # fn demo(relay: std::net::SocketAddr, dir: &std::path::Path) -> anyhow::Result<()> {
//! let mut alice = AgentConfig::new("alice", relay, dir).start()?;
//! alice.send_line("/msg bob hello")?;
//! alice.wait_for("sent to bob", Duration::from_secs(10), |e| e["event"] == "sent")?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

use crate::process::{binary, forward_lines};

/// Log lines kept for error reports.
const LOG_TAIL: usize = 40;
/// Events shown in error reports.
const EVENT_TAIL: usize = 30;

/// How to start an agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    name: String,
    relay: String,
    state_dir: PathBuf,
    script: Option<PathBuf>,
    identity_policy: Option<String>,
    env: Vec<(String, String)>,
}

impl AgentConfig {
    /// An interactive agent `name` on `relay` with its state in `state_dir`.
    pub fn new(name: &str, relay: SocketAddr, state_dir: &Path) -> Self {
        Self {
            name: name.to_string(),
            relay: relay.to_string(),
            state_dir: state_dir.to_path_buf(),
            script: None,
            identity_policy: None,
            env: Vec::new(),
        }
    }

    /// `--relay` as given: several addresses separated by commas (the agent fails over
    /// from one to the next), instead of the one address of [`AgentConfig::new`].
    pub fn relays(mut self, relays: &str) -> Self {
        self.relay = relays.to_string();
        self
    }

    /// Runs this script file instead of reading stdin.
    pub fn script(mut self, path: &Path) -> Self {
        self.script = Some(path.to_path_buf());
        self
    }

    /// `--identity-policy` (`block`, `warn` or `accept`).
    pub fn identity_policy(mut self, policy: &str) -> Self {
        self.identity_policy = Some(policy.to_string());
        self
    }

    /// An `E2EE_…` setting in the environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the agent.
    pub fn start(&self) -> anyhow::Result<AgentProcess> {
        AgentProcess::start(self)
    }
}

/// A running `e2ee-agent --json`.
pub struct AgentProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    incoming: mpsc::Receiver<Value>,
    stderr: mpsc::Receiver<String>,
    log_tail: VecDeque<String>,
    events: Vec<Value>,
    taken: Vec<bool>,
    output_closed: bool,
}

impl AgentProcess {
    /// Starts `e2ee-agent --json` as `config` says. Without a script its stdin is a
    /// pipe ([`AgentProcess::send_line`]).
    pub fn start(config: &AgentConfig) -> anyhow::Result<Self> {
        let mut command = Command::new(binary("e2ee-agent")?);
        command
            .envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(["--json", "--log-format", "json", "--log-level", "info"])
            .args(["--name", &config.name, "--relay", &config.relay])
            .arg("--state")
            .arg(&config.state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(policy) = &config.identity_policy {
            command.args(["--identity-policy", policy]);
        }
        match &config.script {
            Some(script) => command.arg("--script").arg(script).stdin(Stdio::null()),
            None => command.stdin(Stdio::piped()),
        };
        let mut child = command
            .spawn()
            .with_context(|| format!("starting e2ee-agent {}", config.name))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Anything that is not one JSON object per line is kept, visibly.
                let event = match serde_json::from_str::<Value>(&line) {
                    Ok(value) if value.is_object() => value,
                    _ => serde_json::json!({ "event": "unparsed_output", "line": line }),
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: config.name.clone(),
            stdin: child.stdin.take(),
            child,
            incoming,
            stderr: forward_lines(stderr),
            log_tail: VecDeque::new(),
            events: Vec::new(),
            taken: Vec::new(),
            output_closed: false,
        })
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to the agent's stdin (interactive mode).
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        self.send_bytes(format!("{line}\n").as_bytes())
    }

    /// Writes raw bytes to the agent's stdin (e.g. a line that is not UTF-8).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin is not a pipe (script mode) or was closed", self.name))?;
        stdin
            .write_all(bytes)
            .with_context(|| format!("{}: writing to stdin", self.name))?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes stdin (end of input: an interactive agent stops).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Every event printed so far, in order (including those a wait returned).
    pub fn events(&mut self) -> &[Value] {
        self.poll();
        &self.events
    }

    /// Every event of one kind printed so far.
    pub fn events_of(&mut self, kind: &str) -> Vec<Value> {
        self.poll();
        self.events
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }

    /// Waits up to `wait` for an event matching `matches` that no earlier wait returned,
    /// and returns it (marked as taken). Events are searched in the order printed, so
    /// waiting for one event does not lose the others. Fails early if the agent exits.
    pub fn wait_for(
        &mut self,
        what: &str,
        wait: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let mut found = None;
        self.wait_until(what, wait, |events, taken| {
            found = (0..events.len()).find(|&i| !taken[i] && matches(&events[i]));
            found.is_some()
        })?;
        let index = found.ok_or_else(|| anyhow!("{}: lost track of {what}", self.name))?;
        self.taken[index] = true;
        Ok(self.events[index].clone())
    }

    /// Waits up to `wait` until at least `count` events printed so far match `matches`
    /// (taken or not; nothing is marked taken) and returns them all.
    pub fn wait_count(
        &mut self,
        what: &str,
        count: usize,
        wait: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let what = format!("{count} x {what}");
        self.wait_until(&what, wait, |events, _| {
            events.iter().filter(|e| matches(e)).count() >= count
        })?;
        Ok(self.events.iter().filter(|e| matches(e)).cloned().collect())
    }

    /// Reads events until `done(events, taken)` holds, the deadline passes or the agent
    /// exits.
    fn wait_until(
        &mut self,
        what: &str,
        wait: Duration,
        mut done: impl FnMut(&[Value], &[bool]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            self.poll();
            if done(&self.events, &self.taken) {
                return Ok(());
            }
            if self.output_closed {
                let report = self.report();
                bail!("{}: exited before {what}\n{report}", self.name);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(event) => self.push(event),
                Err(RecvTimeoutError::Disconnected) => self.output_closed = true,
                Err(RecvTimeoutError::Timeout) => {
                    let report = self.report();
                    bail!("{}: no {what} within {wait:?}\n{report}", self.name)
                }
            }
        }
    }

    /// Waits for the next untaken event of kind `kind`.
    pub fn wait_event(&mut self, kind: &str, wait: Duration) -> anyhow::Result<Value> {
        self.wait_for(&format!("{kind:?} event"), wait, |e| e["event"] == kind)
    }

    /// Waits for a `message` event from `from` whose text is exactly `text`.
    pub fn wait_message(&mut self, from: &str, text: &str, wait: Duration) -> anyhow::Result<Value> {
        self.wait_for(&format!("message {text:?} from {from}"), wait, |e| {
            e["event"] == "message" && e["from"] == from && e["text"] == text
        })
    }

    /// Waits for the `started` event and returns the agent's identity (hex). The event
    /// stays available to other waits.
    pub fn identity(&mut self, wait: Duration) -> anyhow::Result<String> {
        let started = self.wait_count("started event", 1, wait, |e| e["event"] == "started")?;
        started[0]["identity"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: started event without identity", self.name))
    }

    /// Sends SIGKILL, reaps the process and collects what it printed before dying.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        self.finish_output(Duration::from_secs(10))
    }

    /// Waits up to `wait` for the agent to exit and collects all its output.
    pub fn wait_exit(&mut self, wait: Duration) -> anyhow::Result<ExitStatus> {
        let status = match crate::process::wait_exit(&mut self.child, wait) {
            Ok(status) => status,
            Err(err) => bail!("{}: {err}\n{}", self.name.clone(), self.report()),
        };
        self.finish_output(Duration::from_secs(10))?;
        Ok(status)
    }

    /// Reads stdout until it closes (the process, and anything it started, is gone).
    fn finish_output(&mut self, wait: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        while !self.output_closed {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.incoming.recv_timeout(left) {
                Ok(event) => self.push(event),
                Err(RecvTimeoutError::Disconnected) => self.output_closed = true,
                Err(RecvTimeoutError::Timeout) => bail!("{}: stdout still open after exit", self.name),
            }
        }
        Ok(())
    }

    fn poll(&mut self) {
        while let Ok(event) = self.incoming.try_recv() {
            self.push(event);
        }
    }

    fn push(&mut self, event: Value) {
        self.events.push(event);
        self.taken.push(false);
    }

    /// The last events and log lines, for failure messages.
    pub fn report(&mut self) -> String {
        for line in self.stderr.try_iter() {
            if self.log_tail.len() >= LOG_TAIL {
                self.log_tail.pop_front();
            }
            self.log_tail.push_back(line);
        }
        let skip = self.events.len().saturating_sub(EVENT_TAIL);
        let mut out = format!("--- last events of {}:\n", self.name);
        for event in &self.events[skip..] {
            out.push_str(&format!("  {event}\n"));
        }
        out.push_str(&format!("--- last log lines of {}:\n", self.name));
        for line in &self.log_tail {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
