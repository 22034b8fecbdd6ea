//! What a load run talks to: an already running relay, nats-server or redis-server given
//! by URL, or one that `e2ee-load` starts itself on a free loopback port. Only loopback
//! addresses (127.0.0.0/8, ::1) are accepted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::process::RelayProcess;

/// The protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The e2ee-chat relay (store, ack, deliver, delivery ack).
    Relay,
    /// nats-server, core pub/sub (one subject per recipient).
    Nats,
    /// nats-server's JetStream (a file-backed stream and durable consumer per recipient,
    /// acknowledged publishes).
    NatsJetStream,
    /// redis-server pub/sub (one channel per recipient).
    Redis,
    /// redis-server streams (one stream per recipient, `XADD`, `XREADGROUP`, `XACK`).
    RedisStreams,
}

/// A parsed `--target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A server already listening.
    Url {
        /// Its protocol.
        kind: Kind,
        /// Its address (loopback).
        addr: SocketAddr,
    },
    /// A relay started by e2ee-load with the in-memory store.
    RelayMemory,
    /// A relay started by e2ee-load with SQLite and fsync at every group commit.
    RelaySqlite,
    /// A relay started by e2ee-load on a redis-server of its own (AOF, `appendfsync
    /// always`): the Redis store engine of a relay cluster, with one relay.
    RelayRedis,
    /// Two relays on one redis-server (as `RelayRedis`): each pair's sender on one and
    /// recipient on the other, so every message crosses relays; with `--churn`, a client
    /// that reconnects moves to the other relay.
    RelayRedisCross,
    /// Three relays on a 3-primary Redis Cluster (each primary durable like
    /// `RelayRedis`), pairs spread over them as in `RelayRedisCross`.
    RelayRedisCluster,
    /// A nats-server started by e2ee-load.
    Nats,
    /// A nats-server started by e2ee-load with JetStream on file storage, as durable as
    /// the installed version can be told to be (`sync_interval: always` from 2.10 on).
    NatsJetStream,
    /// A redis-server started by e2ee-load.
    Redis,
    /// A redis-server started by e2ee-load with `appendonly yes` and `appendfsync
    /// always`, driven through streams: a durable peer of the relay.
    RedisStreams,
}

impl TargetSpec {
    /// Parses `relay://host:port`, `nats://…`, `redis://…`, or one of `relay-memory`,
    /// `relay-sqlite`, `relay-redis`, `relay-redis-cross`, `nats`, `redis` (started
    /// here).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let spawned = match text {
            "relay-memory" => Some(Self::RelayMemory),
            "relay-sqlite" => Some(Self::RelaySqlite),
            "relay-redis" => Some(Self::RelayRedis),
            "relay-redis-cross" => Some(Self::RelayRedisCross),
            "relay-redis-cluster" => Some(Self::RelayRedisCluster),
            "nats" => Some(Self::Nats),
            "nats-jetstream" => Some(Self::NatsJetStream),
            "redis" => Some(Self::Redis),
            "redis-streams" => Some(Self::RedisStreams),
            _ => None,
        };
        if let Some(spec) = spawned {
            return Ok(spec);
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            anyhow!("target {text:?}: expected relay://, nats://, redis:// or a spawned kind")
        })?;
        let kind = match scheme {
            "relay" => Kind::Relay,
            "nats" => Kind::Nats,
            "nats-jetstream" => Kind::NatsJetStream,
            "redis" => Kind::Redis,
            "redis-streams" => Kind::RedisStreams,
            other => bail!("unknown target scheme {other:?}"),
        };
        let hostport = rest.trim_end_matches('/');
        let addr = hostport
            .to_socket_addrs()
            .with_context(|| format!("resolving {hostport}"))?
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| {
                anyhow!("{hostport} is not a loopback address: load targets must be on 127.0.0.0/8 or ::1")
            })?;
        Ok(Self::Url { kind, addr })
    }

    /// A short name for tables.
    pub fn label(&self) -> String {
        match self {
            Self::Url { kind, addr } => format!("{kind:?}@{addr}").to_lowercase(),
            Self::RelayMemory => "relay (memory)".into(),
            Self::RelaySqlite => "relay (sqlite, fsync)".into(),
            Self::RelayRedis => "relay (redis, appendfsync always)".into(),
            Self::RelayRedisCross => "2 relays on redis (across relays)".into(),
            Self::RelayRedisCluster => "3 relays on a 3-primary redis cluster".into(),
            Self::Nats => "nats-server".into(),
            Self::NatsJetStream => "nats jetstream (file)".into(),
            Self::Redis => "redis-server".into(),
            Self::RedisStreams => "redis streams (appendfsync always)".into(),
        }
    }
}

/// Relay settings that a load run needs: limits raised so that the run measures the
/// relay, not its abuse protection.
pub const RELAY_LOAD_ENV: &[(&str, &str)] = &[
    ("E2EE_RELAY_LIMITS__RATE_CAPACITY", "1000000000"),
    ("E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC", "1000000000"),
    ("E2EE_RELAY_LIMITS__REQUEST_RATE_CAPACITY", "1000000000"),
    ("E2EE_RELAY_LIMITS__REQUEST_RATE_REFILL_PER_SEC", "1000000000"),
    ("E2EE_RELAY_LIMITS__MAX_PENDING_OUTPUT_BYTES", "67108864"),
    ("E2EE_RELAY_LIMITS__QUEUE_QUOTA", "100000000"),
    ("E2EE_RELAY_LIMITS__ACK_RATE_CAPACITY", "1000000000"),
    ("E2EE_RELAY_LIMITS__ACK_RATE_REFILL_PER_SEC", "1000000000"),
    ("E2EE_RELAY_LIMITS__SENDER_QUOTA_MESSAGES", "100000000"),
    ("E2EE_RELAY_LIMITS__SENDER_QUOTA_BYTES", "1000000000000"),
    ("E2EE_RELAY_STORE__MAX_STORED_BYTES", "1000000000000"),
    ("E2EE_RELAY_LIMITS__MAX_CONNECTIONS", "200000"),
    ("E2EE_RELAY_LIMITS__MAX_UNACKED", "4096"),
    ("E2EE_RELAY_SUMMARY_INTERVAL_SECS", "0"),
];

/// Whether relay targets speak plain TCP instead of TLS (`e2ee-load --insecure-plaintext`).
static RELAY_PLAINTEXT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Relay targets without TLS: relays started here serve plain TCP and clients speak it.
pub fn set_relay_plaintext(plaintext: bool) {
    RELAY_PLAINTEXT.store(plaintext, std::sync::atomic::Ordering::Relaxed);
}

/// True if relay targets speak plain TCP ([`set_relay_plaintext`]).
pub fn relay_plaintext() -> bool {
    RELAY_PLAINTEXT.load(std::sync::atomic::Ordering::Relaxed)
}

/// A running target; a server started here is stopped when this is dropped.
pub struct Server {
    /// Protocol.
    pub kind: Kind,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id, when known (for CPU and memory figures).
    pub pid: Option<u32>,
    /// Label for reports.
    pub label: String,
    relay: Option<RelayProcess>,
    /// Further relays of a cluster target.
    others: Vec<RelayProcess>,
    /// The redis-server under a `relay-redis` target (stopped after the relays).
    store: Option<e2ee_relay::store::redis::RedisServer>,
    /// The Redis Cluster under a `relay-redis-cluster` target.
    store_cluster: Option<e2ee_relay::store::redis::RedisCluster>,
    child: Option<Child>,
    data_dir: Option<PathBuf>,
}

impl Server {
    /// Connects to or starts the target.
    pub fn start(spec: &TargetSpec, server_pid: Option<u32>) -> anyhow::Result<Self> {
        let label = spec.label();
        let bare = |kind, addr| Self {
            kind,
            addr,
            pid: server_pid,
            label: label.clone(),
            relay: None,
            others: Vec::new(),
            store: None,
            store_cluster: None,
            child: None,
            data_dir: None,
        };
        match spec {
            TargetSpec::Url { kind, addr } => Ok(bare(*kind, *addr)),
            TargetSpec::RelayMemory
            | TargetSpec::RelaySqlite
            | TargetSpec::RelayRedis
            | TargetSpec::RelayRedisCross
            | TargetSpec::RelayRedisCluster => {
                let dir = scratch_dir("relay")?;
                let mut env: Vec<(&str, &str)> = RELAY_LOAD_ENV.to_vec();
                env.push(("E2EE_RELAY_STORE__FSYNC", "true"));
                let (mut redis, mut redis_cluster) = (None, None);
                let store = match spec {
                    TargetSpec::RelayMemory => "memory",
                    TargetSpec::RelaySqlite => "sqlite",
                    TargetSpec::RelayRedisCluster => {
                        let cluster = e2ee_relay::store::redis::RedisCluster::start(&dir.join("redis"), 3)?;
                        let config = format!(
                            "[store]\nredis_urls = {:?}\nredis_cluster = true\n",
                            cluster.urls()
                        );
                        std::fs::write(dir.join("relay.toml"), config)?;
                        redis_cluster = Some(cluster);
                        "redis"
                    }
                    _ => {
                        let server = e2ee_relay::store::redis::RedisServer::start(&dir.join("redis"))?;
                        std::fs::write(
                            dir.join("relay.toml"),
                            format!("[store]\nredis_urls = [{:?}]\n", server.url()),
                        )?;
                        redis = Some(server);
                        "redis"
                    }
                };
                let on_redis = store == "redis";
                let config = on_redis.then(|| dir.join("relay.toml").display().to_string());
                let mut args = vec!["--store", store];
                if let Some(config) = &config {
                    args.extend(["--config", config.as_str()]);
                }
                if relay_plaintext() {
                    args.push("--insecure-plaintext");
                }
                let relay = RelayProcess::start_with_env("127.0.0.1:0", &dir, &args, &env)?;
                let mut server = bare(Kind::Relay, relay.addr);
                server.pid = Some(relay.child.id());
                server.relay = Some(relay);
                let more = match spec {
                    TargetSpec::RelayRedisCross => 1,
                    TargetSpec::RelayRedisCluster => 2,
                    _ => 0,
                };
                for n in 0..more {
                    let data = dir.join(format!("relay-{}", n + 2));
                    server
                        .others
                        .push(RelayProcess::start_with_env("127.0.0.1:0", &data, &args, &env)?);
                }
                server.store = redis;
                server.store_cluster = redis_cluster;
                server.data_dir = Some(dir);
                Ok(server)
            }
            TargetSpec::NatsJetStream => {
                let port = free_port()?;
                let dir = scratch_dir("jetstream")?;
                let binary = find_binary("nats-server")?;
                let (config, fsync) = jetstream_config(&binary, &dir)?;
                let child = Command::new(binary)
                    .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-c"])
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting nats-server with JetStream")?;
                let mut server = Self::started(bare(Kind::NatsJetStream, local(port)), child)?;
                server.label = format!("nats jetstream (file, {fsync})");
                server.data_dir = Some(dir);
                Ok(server)
            }
            TargetSpec::Nats => {
                let port = free_port()?;
                let child = Command::new(find_binary("nats-server")?)
                    .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting nats-server")?;
                Self::started(bare(Kind::Nats, local(port)), child)
            }
            TargetSpec::Redis | TargetSpec::RedisStreams => {
                let streams = *spec == TargetSpec::RedisStreams;
                let port = free_port()?;
                let dir = scratch_dir("redis")?;
                let (appendonly, kind) = if streams {
                    ("yes", Kind::RedisStreams)
                } else {
                    ("no", Kind::Redis)
                };
                let child = Command::new(find_binary("redis-server")?)
                    .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                    .args([
                        "--save",
                        "",
                        "--appendonly",
                        appendonly,
                        "--appendfsync",
                        "always",
                    ])
                    .args(["--protected-mode", "no"])
                    .args([
                        "--client-output-buffer-limit",
                        "pubsub 0 0 0",
                        "--maxclients",
                        "100000",
                    ])
                    .arg("--dir")
                    .arg(&dir)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting redis-server")?;
                let mut server = Self::started(bare(kind, local(port)), child)?;
                server.data_dir = Some(dir);
                Ok(server)
            }
        }
    }

    /// What a run is pointed at: this server (every relay of a cluster target).
    pub fn endpoint(&self) -> super::run::Endpoint {
        let relays = match &self.relay {
            Some(first) if !self.others.is_empty() => std::iter::once(first.addr)
                .chain(self.others.iter().map(|r| r.addr))
                .collect(),
            _ => Vec::new(),
        };
        let mut companions: Vec<(String, u32)> = (self.others.iter().enumerate())
            .map(|(i, r)| (format!("relay {}", i + 2), r.child.id()))
            .collect();
        if let Some(redis) = &self.store {
            companions.extend(redis.pid().map(|pid| ("redis-server".to_owned(), pid)));
        }
        if let Some(cluster) = &self.store_cluster {
            for (i, pid) in cluster.pids().into_iter().enumerate() {
                companions.push((format!("redis node {}", i + 1), pid));
            }
        }
        super::run::Endpoint {
            kind: self.kind,
            addr: self.addr,
            label: self.label.clone(),
            pid: self.pid,
            companions,
            relays,
        }
    }

    fn started(mut server: Self, child: Child) -> anyhow::Result<Self> {
        server.pid = Some(child.id());
        server.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("{} did not start listening on {}", server.label, server.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.relay.take());
        self.others.clear();
        drop(self.store.take());
        drop(self.store_cluster.take());
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The JetStream configuration file for a server keeping its streams in `dir`, with
/// the strongest fsync setting `binary`'s version offers, and that setting in words.
fn jetstream_config(binary: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<(PathBuf, String)> {
    let version = Command::new(binary)
        .arg("--version")
        .output()
        .context("asking nats-server its version")?;
    let text = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    // "nats-server: v2.9.10"
    let numbers: Vec<u32> = text
        .rsplit('v')
        .next()
        .unwrap_or("")
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    let per_write = numbers.len() >= 2 && (numbers[0], numbers[1]) >= (2, 10);
    let (sync, fsync) = if per_write {
        (
            "  sync_interval: always\n",
            format!("{text}, sync_interval always"),
        )
    } else {
        (
            "",
            format!("{text}: no per-write fsync setting before 2.10; its default fsyncs every 2 min"),
        )
    };
    let config = dir.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "jetstream {{\n  store_dir: {:?}\n{sync}}}\n",
            dir.display().to_string()
        ),
    )?;
    Ok((config, fsync))
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A fresh directory under the system temp dir.
fn scratch_dir(what: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("e2ee-load-{what}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A server binary on PATH or in the Debian locations.
fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("{name} not found: install it (`apt-get install {name}`) or run `make bench-relay`")
        })
}

/// Connections per source address when the spread is chosen automatically: well under
/// the ~28 000 ephemeral ports of one address, leaving room for reconnects under churn.
pub const CONNECTIONS_PER_SOURCE: usize = 10_000;

/// How many source addresses `connections` connections need (at most 250).
pub fn auto_spread(connections: usize) -> usize {
    connections.div_ceil(CONNECTIONS_PER_SOURCE).clamp(1, 250)
}

/// The source address for the `index`th connection: spread over 127.0.0.1..=127.0.0.N so
/// that many connections do not exhaust one address's ephemeral ports.
pub fn source_ip(target: &SocketAddr, index: usize, spread: usize) -> Option<IpAddr> {
    match target.ip() {
        IpAddr::V4(v4) if v4.is_loopback() && spread > 1 => {
            let host = 1 + (index % spread.min(250)) as u8;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)))
        }
        _ => None,
    }
}

/// Connects from `source` (if any) to `target`, with `TCP_NODELAY`.
pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<tokio::net::TcpStream> {
    let stream = match source {
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target).await?
        }
        None => tokio::net::TcpStream::connect(target).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_connections_get_more_source_addresses() {
        assert_eq!(auto_spread(0), 1);
        assert_eq!(auto_spread(100), 1);
        assert_eq!(auto_spread(10_000), 1);
        assert_eq!(auto_spread(10_001), 2);
        assert_eq!(auto_spread(40_000), 4);
        assert_eq!(auto_spread(10_000_000), 250, "loopback offers 250 of them here");
    }

    #[test]
    fn accepts_only_loopback_urls() {
        assert!(matches!(
            TargetSpec::parse("nats://127.0.0.1:4222"),
            Ok(TargetSpec::Url { kind: Kind::Nats, .. })
        ));
        assert_eq!(
            TargetSpec::parse("relay-memory").ok(),
            Some(TargetSpec::RelayMemory)
        );
        assert!(TargetSpec::parse("redis://10.0.0.1:6379").is_err());
        assert!(TargetSpec::parse("ftp://127.0.0.1:1").is_err());
    }
}
