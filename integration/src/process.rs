//! Starting the relay and agent binaries as child processes, for tests that need real
//! processes (kill -9, signals, stdin).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

/// Path of a workspace binary next to the running test executable
/// (`target/<profile>/deps/test-…` → `target/<profile>/<name>`).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first (`cargo build --workspace --bins`, which `make test` does)",
            path.display()
        );
    }
    Ok(path)
}

/// The relay binary.
pub const RELAY: &str = "e2ee-relay";

/// The relay built with its deliberate-misbehaviour mode (`--adversary MODE`), a binary
/// of this package: the `e2ee-relay` binary has no such mode.
pub const ADVERSARIAL_RELAY: &str = "e2ee-relay-adversary";

/// A relay child process.
pub struct RelayProcess {
    /// The child.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl RelayProcess {
    /// Starts `e2ee-relay` on a free loopback port with `data_dir` and extra args, and
    /// waits until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0", data_dir, extra)
    }

    /// Starts on a given address.
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(listen, data_dir, extra, &[])
    }

    /// Starts on `listen` for a test: without fsync (a test does not need the relay's
    /// durability against a power loss; `kill -9` loses nothing either way).
    pub fn start_for_test(listen: &str, data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(listen, data_dir, &[], &[("E2EE_RELAY_STORE__FSYNC", "false")])
    }

    /// Starts with extra `E2EE_…` environment settings.
    pub fn start_with_env(
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_program(RELAY, listen, data_dir, extra, env)
    }

    /// Starts `program`: [`RELAY`], or [`ADVERSARIAL_RELAY`] (whose extra flags include
    /// `--adversary MODE`).
    pub fn start_program(
        program: &str,
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary(program)?)
            .envs(env.iter().copied())
            .args(["--listen", listen, "--log-format", "json", "--log-level", "info"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let lines = forward_lines(stderr);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines
                .recv_timeout(left)
                .context("relay did not report its address")?;
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if value["msg"] == "relay listening" {
                let addr = value["addr"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no addr in {line}"))?
                    .parse()?;
                return Ok(Self { child, addr, lines });
            }
        }
    }

    /// Log lines (JSON) printed since the last call.
    pub fn drain_log(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits for a log line whose `msg` is `msg`.
    pub fn wait_log(&self, msg: &str, wait: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("no log line {msg:?}"))?;
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                if value["msg"] == msg {
                    return Ok(value);
                }
            }
        }
    }

    /// Sends SIGKILL.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for the exit status (bounded).
    pub fn terminate(&mut self, wait: Duration) -> anyhow::Result<std::process::ExitStatus> {
        signal(self.child.id(), "TERM")?;
        wait_exit(&mut self.child, wait)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name with `kill` (no libc binding needed).
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// Polls a child for its exit within `wait`.
pub fn wait_exit(child: &mut Child, wait: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            bail!("process did not exit within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Forwards a child's stderr lines into a channel from a thread.
pub fn forward_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Resident set size of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A relay inside this process (for tests with in-process clients) on a free loopback
/// port, its data in a fresh temporary directory (kept alive by the returned handle):
/// defaults, no periodic summary, no fsync, then `tune`.
pub fn spawn_relay(
    tune: impl FnOnce(&mut e2ee_relay::RelaySettings),
) -> anyhow::Result<(e2ee_relay::RelayHandle, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut settings = e2ee_relay::RelaySettings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        summary_interval_secs: 0,
        ..e2ee_relay::RelaySettings::default()
    };
    settings.store.fsync = false;
    tune(&mut settings);
    let handle = e2ee_relay::spawn(settings, e2ee_config::discard_logger())?;
    Ok((handle, dir))
}

/// Copies a directory tree (an agent's state directory) as a backup tool would, the
/// copy private to its owner (directories 0700, files with their permissions).
pub fn copy_private_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_private_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying to {}", target.display()))?;
        }
    }
    Ok(())
}
