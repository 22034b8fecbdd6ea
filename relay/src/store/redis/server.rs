//! A throwaway `redis-server` on a loopback port, for tests, `make cluster` trials and
//! benchmarks: durable like a production setting (AOF, `appendfsync always`), its files in
//! a directory of the caller's, stopped (by its process id) when dropped.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process this program started.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// How long a new server may take to answer `PING`.
const START_WAIT: Duration = Duration::from_secs(10);

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) on a free loopback port, keeping its AOF in
    /// `dir` (created if missing), with `appendonly yes` and `appendfsync always`.
    ///
    /// # Errors
    /// When `redis-server` is not installed (the error says how to install it) or does
    /// not answer within 10 s.
    pub fn start(dir: &Path) -> io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        Self::start_on(dir, port)
    }

    /// As [`RedisServer::start`], on `port` (to restart a server where it was).
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_on(dir: &Path, port: u16) -> io::Result<Self> {
        Self::start_with(dir, port, &[])
    }

    /// As [`RedisServer::start_on`], with more `redis-server` arguments.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with(dir: &Path, port: u16, extra: &[&str]) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
            .args(["--protected-mode", "no", "--logfile", "redis.log"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot start redis-server ({err}); install it: apt-get install redis-server"),
                )
            })?;
        let mut server = Self {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let ping = super::connection::connection_to(&self.url(), Duration::from_secs(1))
                .and_then(|mut conn| ::redis::cmd("PING").query::<String>(&mut conn));
            match ping {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    return Err(io::Error::other(format!(
                        "redis-server on port {} did not answer: {err} (see {})",
                        self.port,
                        self.dir.join("redis.log").display()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(io::Error::other(format!(
                    "redis-server on port {} exited at start ({status}); see {}",
                    self.port,
                    self.dir.join("redis.log").display()
                )));
            }
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (`SIGKILL`): what it acknowledged is in its AOF.
    ///
    /// # Errors
    /// When the process cannot be signalled.
    pub fn kill9(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// What makes a [`RedisServer`] a cluster node.
const CLUSTER_NODE_ARGS: &[&str] = &["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"];

/// A throwaway Redis Cluster of `n` primaries (no replicas) on loopback ports, each
/// durable like [`RedisServer`], made with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) cluster-enabled servers under `dir` and joins them.
    ///
    /// # Errors
    /// When a server does not start, `redis-cli` is missing or fails, or the cluster is
    /// not `cluster_state:ok` within 10 s.
    pub fn start(dir: &Path, n: usize) -> io::Result<Self> {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let node_dir = dir.join(format!("node-{i}"));
            nodes.push(RedisServer::start_with(&node_dir, port, CLUSTER_NODE_ARGS)?);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| io::Error::new(err.kind(), format!("cannot run redis-cli ({err})")))?;
        if !created.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stdout)
            )));
        }
        let cluster = Self { nodes };
        let deadline = Instant::now() + START_WAIT;
        loop {
            let ok = cluster.nodes.iter().all(|node| {
                super::connection::connection_to(&node.url(), Duration::from_secs(1))
                    .and_then(|mut conn| ::redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(
                    "the Redis Cluster did not reach cluster_state:ok",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every running node's process id.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(RedisServer::pid).collect()
    }

    /// Every node's `redis://` address.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Kills node `i` at once (`SIGKILL`) and starts it again on its port and files; it
    /// rejoins the cluster from its `nodes.conf`, with what its AOF holds.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn restart9(&mut self, i: usize) -> io::Result<()> {
        let node = &mut self.nodes[i];
        node.kill9()?;
        let (dir, port) = (node.dir.clone(), node.port);
        *node = RedisServer::start_with(&dir, port, CLUSTER_NODE_ARGS)?;
        Ok(())
    }

    /// The index of the node that serves the slot of the keys under `{prefix}`.
    ///
    /// # Errors
    /// When the cluster cannot be asked.
    pub fn node_of(&self, prefix: &str) -> io::Result<usize> {
        let ask = |node: &RedisServer| -> ::redis::RedisResult<(i64, Vec<::redis::Value>)> {
            let mut conn = super::connection::connection_to(&node.url(), Duration::from_secs(2))?;
            let slot: i64 = ::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("{{{prefix}}}"))
                .query(&mut conn)?;
            let slots: Vec<::redis::Value> = ::redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
            Ok((slot, slots))
        };
        let (slot, ranges) = ask(&self.nodes[0]).map_err(io::Error::other)?;
        for range in ranges {
            let ::redis::Value::Array(parts) = range else {
                continue;
            };
            let number = |v: Option<&::redis::Value>| match v {
                Some(::redis::Value::Int(n)) => *n,
                _ => -1,
            };
            let (from, to) = (number(parts.first()), number(parts.get(1)));
            let port = match parts.get(2) {
                Some(::redis::Value::Array(primary)) => number(primary.get(1)),
                _ => -1,
            };
            if (from..=to).contains(&slot) {
                if let Some(i) = self.nodes.iter().position(|n| i64::from(n.port) == port) {
                    return Ok(i);
                }
            }
        }
        Err(io::Error::other(format!(
            "no node serves the slot of {{{prefix}}}"
        )))
    }
}
