//! Starting and stopping a relay: `run` for the binary (stops on SIGINT/SIGTERM) and
//! `spawn` for tests (its own thread and actix system, stopped through the handle).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use e2ee_net::{channel_binding, RelayCertificate, RelayPin};
use e2ee_protocol::codec::FrameCodec;
use e2ee_protocol::frame::{ErrorCode, Frame};
use futures_util::SinkExt;
use rand_core::{OsRng, RngCore};
use slog::{error, info, Logger};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::codec::FramedWrite;

use crate::cluster::ClusterNode;
use crate::committer::{Committer, Expiry, Flush};
use crate::connection::Connection;
use crate::data_dir::{DataDir, RELAY_ID_FILE};
use crate::input::{FrameLimit, InputCodec};
use crate::metrics::{self, Metrics};
use crate::opk_handouts::OpkHandouts;
use crate::output::Output;
use crate::router::{CloseAll, Router};
use crate::settings::{RelaySettings, StoreEngine};
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::store_actor::{SharedStore, StoreActor};
use crate::store_backlog::StoreBacklog;
use crate::tls_link::start_tls_link;
use crate::RelayContext;

/// Loads this relay's id from `relay-id` in the data directory, creating it (owner-only)
/// on first start.
fn relay_id(data_dir: &DataDir) -> io::Result<[u8; 32]> {
    let path = data_dir.path().join(RELAY_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|_| bad_id(&path))?;
            bytes.try_into().map_err(|_| bad_id(&path))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let mut id = [0u8; 32];
            OsRng.fill_bytes(&mut id);
            data_dir
                .write_new_private(RELAY_ID_FILE, hex::encode(id).as_bytes())
                .map_err(|err| file_error(&path, err))?;
            Ok(id)
        }
        Err(err) => Err(file_error(&path, err)),
    }
}

fn bad_id(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} does not hold a 64-digit hex relay id", path.display()),
    )
}

/// An error reading or writing `path`, naming it.
fn file_error(path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

fn open_store(settings: &RelaySettings, data_dir: &DataDir, node: &str) -> io::Result<Box<dyn Store>> {
    Ok(match settings.store.engine {
        StoreEngine::Memory => Box::new(MemoryStore::new()),
        StoreEngine::Redis => Box::new(
            RedisStore::open(settings.redis_endpoint(), &settings.store.redis_prefix, node)
                .map_err(io::Error::other)?
                .with_handout_limit(
                    settings.limits.opk_handout_capacity,
                    settings.limits.opk_handout_refill_per_hour,
                ),
        ),
        // The error names the file: "cannot open the store /…/relay.db: …".
        StoreEngine::Sqlite => {
            Box::new(SqliteStore::open(data_dir.path(), settings.store.fsync).map_err(io::Error::other)?)
        }
    })
}

/// An error about a setting's value, naming the setting.
fn setting_error(key: &str, value: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{key} = {value:?}: {err}"))
}

/// What a relay runs with beyond its settings: nothing for the `e2ee-relay` binary and
/// for [`spawn`]; with the `adversary` feature, the deliberate misbehaviour the
/// `e2ee-relay-adversary` binary asks for (`run_adversarial`).
#[derive(Debug, Clone, Default)]
pub struct Misbehaviour {
    /// What the adversary does (`mode = off`: nothing).
    #[cfg(feature = "adversary")]
    pub adversary: crate::adversary::AdversarySettings,
}

/// Serves until `shutdown` resolves, then closes every connection with a reason, waits
/// for pending store commits and returns. `bound` learns the listening address.
pub async fn serve(
    settings: RelaySettings,
    misbehaviour: Misbehaviour,
    log: Logger,
    metrics: Arc<Metrics>,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // Without the `adversary` feature there is nothing to misbehave with.
    #[cfg(not(feature = "adversary"))]
    let Misbehaviour {} = misbehaviour;
    settings
        .validate()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let data_dir = DataDir::open(&settings.data_dir).map_err(io::Error::other)?;
    let relay_id = relay_id(&data_dir)?;
    let tls = if settings.insecure_plaintext {
        slog::warn!(
            log,
            "serving plain TCP without TLS (insecure_plaintext): for local benchmarks only"
        );
        None
    } else {
        let (certificate, made) = relay_certificate(&settings, &data_dir)?;
        info!(log, "relay TLS key"; "pin" => %certificate.pin(),
              "certificate" => if settings.tls.cert_file.is_some() { "configured" } else if made { "self-signed, made now" } else { "self-signed" });
        Some(certificate.server_config().map_err(io::Error::other)?)
    };
    // A relay on Redis is a node of a cluster (alone, it is a cluster of one).
    let node = (settings.store.engine == StoreEngine::Redis).then(|| ClusterNode {
        endpoint: settings.redis_endpoint(),
        key_prefix: format!("{{{}}}:", settings.store.redis_prefix),
        name: if settings.store.node_name.is_empty() {
            let mut name = [0u8; 8];
            OsRng.fill_bytes(&mut name);
            hex::encode(name)
        } else {
            settings.store.node_name.clone()
        },
        instance: {
            let mut token = [0u8; 8];
            OsRng.fill_bytes(&mut token);
            hex::encode(token)
        },
    });
    if let Some(node) = &node {
        if !settings.store.node_name.is_empty() {
            let node = node.clone();
            tokio::task::spawn_blocking(move || crate::cluster::presence::claim_node_name(&node))
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?;
        }
    }
    let node_name = node.as_ref().map_or("", |n| n.name.as_str());
    let shared = Arc::new(
        SharedStore::new(
            open_store(&settings, &data_dir, node_name)?,
            settings.quotas(),
            metrics.stored_messages.clone(),
        )
        .map_err(io::Error::other)?,
    );
    if settings.store.engine == StoreEngine::Sqlite {
        metrics.watch_database_files(data_dir.db_size_files());
    }
    // The memory store has nothing to make durable, so group commit would only add
    // thread hand-offs: connections write to it directly.
    let direct = (settings.store.engine == StoreEngine::Memory).then(|| shared.clone());
    let groups = shared.with(|s| Ok(s.supports_groups())).unwrap_or(false);
    let store = SyncArbiter::start(1, move || StoreActor::new(shared.clone()));
    let ttl = Duration::from_secs(settings.limits.message_ttl_secs.max(1));
    let dedup_window = Duration::from_secs(settings.limits.dedup_window_secs.max(1));
    let expiry = Expiry {
        ttl,
        dedup_window,
        every: (ttl.min(dedup_window) / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
    };
    let mut router = Router::new(settings.limits.clone());
    if let Some(node) = node.clone() {
        info!(log, "relay cluster node"; "node" => %node.name, "redis" => %node.endpoint.describe());
        router = router.with_cluster(node, log.clone());
    }
    let routes = router.table();
    let router = router.start();
    // Group commit gets its own event loop, so batching never waits behind connections;
    // it pushes each stored message to its recipient.
    let commit_arbiter = Arbiter::new();
    let commit_routes = routes.clone();
    let backlog = Arc::new(StoreBacklog::new(
        settings.store.max_queued_writes,
        settings.store.max_queued_bytes,
    ));
    let committer = {
        let (store, max_batch, metrics) = (store.clone(), settings.store.max_batch, metrics.clone());
        let (backlog, log) = (backlog.clone(), log.clone());
        Committer::start_in_arbiter(&commit_arbiter.handle(), move |_| {
            Committer::new(store, max_batch, metrics, Some(expiry))
                .with_routes(commit_routes)
                .with_backlog(backlog)
                .with_log(log)
        })
    };

    // The metrics endpoint is up before the relay says it listens: whoever waits for
    // that line (an operator's script, the tests) can scrape at once.
    if let Some(metrics_addr) = &settings.metrics_listen {
        let metrics_listener = TcpListener::bind(metrics_addr)
            .await
            .map_err(|err| setting_error("metrics_listen", metrics_addr, err))?;
        info!(log, "metrics listening"; "addr" => %metrics_listener.local_addr()?);
        actix::spawn(metrics::serve(metrics_listener, metrics.clone()));
    }
    let listener = TcpListener::bind(&settings.listen)
        .await
        .map_err(|err| setting_error("listen", &settings.listen, err))?;
    let addr = listener.local_addr()?;
    info!(log, "relay listening"; "addr" => %addr, "store" => ?settings.store.engine,
          "data_dir" => %settings.data_dir.display());
    bound(addr);
    if settings.summary_interval_secs > 0 {
        let every = Duration::from_secs(settings.summary_interval_secs);
        let (log, metrics) = (log.clone(), metrics.clone());
        actix::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                info!(log, "relay summary";
                    "connections" => metrics.connections_open.get(),
                    "authenticated" => metrics.authenticated.get(),
                    "stored" => metrics.messages_stored.get(),
                    "delivered" => metrics.messages_delivered.get(),
                    "acked" => metrics.messages_acked.get(),
                    "expired" => metrics.messages_expired.get(),
                    "stored_messages" => metrics.stored_messages.get(),
                    "write_queue_len" => metrics.store_queue_depth.get());
            }
        });
    }

    let context = Arc::new(RelayContext {
        limits: settings.limits.clone(),
        relay_id,
        tls,
        metrics: metrics.clone(),
        router: router.clone(),
        routes,
        committer: committer.clone(),
        store,
        direct,
        backlog,
        log: log.clone(),
        opk_handouts: OpkHandouts::new(
            settings.limits.opk_handout_capacity,
            settings.limits.opk_handout_refill_per_hour,
        ),
        kp_handouts: OpkHandouts::new(
            settings.limits.opk_handout_capacity,
            settings.limits.opk_handout_refill_per_hour,
        ),
        lease: settings.names.lease(),
        away_notice: settings.names.away_notice(),
        groups,
        #[cfg(feature = "adversary")]
        adversary: crate::adversary::Adversary::from_settings(&misbehaviour.adversary, &log),
    });

    // Worker arbiters (event-loop threads) for connections; the Router and the accept
    // loop stay on this one.
    let arbiters: Vec<Arbiter> = (0..worker_count(settings.workers))
        .map(|_| Arbiter::new())
        .collect();
    let handles = arbiters.iter().map(Arbiter::handle).collect();
    let accept = accept_loop(listener, context.clone(), handles);
    tokio::select! {
        () = accept => {},
        () = shutdown => {},
    }

    info!(log, "relay shutting down");
    let told = router
        .send(CloseAll {
            code: ErrorCode::ServerShutdown,
            reason: "relay shutting down".into(),
        })
        .await
        .unwrap_or(0);
    // Give connections a moment to write their last frame.
    for _ in 0..50 {
        if metrics.connections_open.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if committer.send(Flush).await.is_err() {
        error!(log, "store flush failed at shutdown");
    }
    for arbiter in arbiters.iter().chain(std::iter::once(&commit_arbiter)) {
        arbiter.stop();
    }
    info!(log, "relay stopped"; "closed_connections" => told);
    Ok(())
}

/// Limits what an accepted connection's socket keeps unsent to `lowat` bytes
/// (`TCP_NOTSENT_LOWAT`; Linux, elsewhere nothing; 0 leaves the kernel's default).
///
/// Without it the kernel grows a socket's send buffer to megabytes and, once full, wakes
/// a blocked write only when a third of it is free: a client reading a large backlog
/// slowly (but steadily) then shows no progress for seconds, and the writer's write
/// timeout takes it for a client that stopped reading. With it, the kernel keeps at most
/// `lowat` unsent per connection (kernel memory bounded per client), the relay's own
/// output budget holds the rest, and every write completes as soon as the client has
/// read that much.
fn limit_unsent(stream: &TcpStream, lowat: u32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if lowat > 0 {
        let _ = socket2::SockRef::from(stream).set_tcp_notsent_lowat(lowat);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, lowat);
}

async fn accept_loop(listener: TcpListener, context: Arc<RelayContext>, workers: Vec<ArbiterHandle>) {
    let ids = AtomicU64::new(1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors and similar: back off briefly, keep serving.
                slog::warn!(context.log, "accept failed"; "err" => %err);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = context.metrics.connections_open.get();
        if open >= context.limits.max_connections as u64 {
            context.metrics.reject(ErrorCode::TooManyConnections);
            actix::spawn(refuse(stream));
            continue;
        }
        context.metrics.connections_open.inc();
        let _ = stream.set_nodelay(true);
        limit_unsent(&stream, context.limits.notsent_lowat_bytes);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        if workers.is_empty() {
            start_connection(stream, peer, id, context.clone());
            continue;
        }
        // Connections are spread over the worker arbiters; the socket moves to the
        // worker's event loop as a std socket and is registered there.
        let worker = &workers[(id as usize) % workers.len()];
        let for_worker = context.clone();
        let moved = stream.into_std().map(|std| {
            worker.spawn_fn(move || match TcpStream::from_std(std) {
                Ok(stream) => start_connection(stream, peer, id, for_worker),
                Err(_) => for_worker.metrics.connections_open.dec(),
            })
        });
        if !matches!(moved, Ok(true)) {
            context.metrics.connections_open.dec();
        }
    }
}

/// The relay's TLS certificate: the configured files, or the self-signed one kept in
/// the data directory (made now if there is none: the second value).
fn relay_certificate(settings: &RelaySettings, data_dir: &DataDir) -> io::Result<(RelayCertificate, bool)> {
    match (&settings.tls.cert_file, &settings.tls.key_file) {
        (Some(cert), Some(key)) => Ok((
            RelayCertificate::from_files(cert, key).map_err(io::Error::other)?,
            false,
        )),
        _ => RelayCertificate::self_signed_in(data_dir.path()).map_err(io::Error::other),
    }
}

/// The pin of the relay's TLS key (`--print-pin`): of the configured certificate, or of
/// the self-signed one in the data directory, made now if there is none.
pub fn tls_pin(settings: &RelaySettings) -> io::Result<RelayPin> {
    settings
        .validate()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let data_dir = DataDir::open(&settings.data_dir).map_err(io::Error::other)?;
    Ok(relay_certificate(settings, &data_dir)?.0.pin())
}

/// Starts a connection on the current arbiter: over TLS (the handshake first, bounded by
/// the authentication timeout) or plain TCP.
fn start_connection(stream: TcpStream, peer: SocketAddr, id: u64, context: Arc<RelayContext>) {
    let Some(tls) = context.tls.clone() else {
        let (read, write) = stream.into_split();
        return start_connection_over(read, write, peer, id, context, None);
    };
    let timeout = Duration::from_millis(context.limits.auth_timeout_ms);
    actix::spawn(async move {
        let accepted =
            tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(tls).accept(stream)).await;
        let bound = accepted.ok().and_then(Result::ok).and_then(|stream| {
            let binding = channel_binding(stream.get_ref().1).ok()?;
            Some((stream, binding))
        });
        match bound {
            Some((stream, binding)) => {
                // One task reads and writes the TLS stream (a split one can stall).
                let limit = FrameLimit::before_login();
                let (output, done, frames) = start_tls_link(
                    stream,
                    limit.clone(),
                    context.limits.max_pending_output_bytes,
                    Duration::from_millis(context.limits.write_timeout_ms),
                    context.metrics.clone(),
                );
                Connection::create(move |ctx| {
                    ctx.add_stream(frames);
                    Connection::new(id, peer, context, output, done, limit, Some(binding))
                });
            }
            None => {
                context.metrics.tls_handshake_failures.inc();
                context.metrics.connections_open.dec();
            }
        }
    });
}

/// Starts the Connection actor (and its writer task) over a plain TCP stream's halves.
fn start_connection_over<R, W>(
    read: R,
    write: W,
    peer: SocketAddr,
    id: u64,
    context: Arc<RelayContext>,
    binding: Option<[u8; 32]>,
) where
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
{
    let (output, done) = Output::start(
        write,
        context.limits.max_pending_output_bytes,
        Duration::from_millis(context.limits.write_timeout_ms),
        context.metrics.clone(),
    );
    let limit = FrameLimit::before_login();
    Connection::create(move |ctx| {
        ctx.add_stream(InputCodec::reader(read, limit.clone()));
        Connection::new(id, peer, context, output, done, limit, binding)
    });
}

/// Connection worker threads: the setting, or one per CPU when it is 0. A count of 1
/// keeps every connection on the main arbiter.
fn worker_count(setting: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = if setting == 0 { cpus } else { setting };
    if wanted <= 1 {
        0
    } else {
        wanted
    }
}

async fn refuse(stream: TcpStream) {
    let mut framed = FramedWrite::new(stream, FrameCodec::default());
    let frame = Frame::error(ErrorCode::TooManyConnections, "relay at its connection limit");
    let _ = tokio::time::timeout(Duration::from_secs(2), framed.send(frame)).await;
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives as soon as the relay
/// reports that it listens still stops it cleanly (call it inside the runtime).
fn termination() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        match (term, int) {
            (Some(mut term), Some(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Runs a relay in this thread until SIGINT or SIGTERM.
pub fn run(settings: RelaySettings, log: Logger) -> io::Result<()> {
    run_with(settings, Misbehaviour::default(), log)
}

/// Runs a relay that misbehaves as `adversary` says, in this thread until SIGINT or
/// SIGTERM (the `e2ee-relay-adversary` binary, for the security evidence).
#[cfg(feature = "adversary")]
pub fn run_adversarial(
    settings: RelaySettings,
    adversary: crate::adversary::AdversarySettings,
    log: Logger,
) -> io::Result<()> {
    run_with(settings, Misbehaviour { adversary }, log)
}

fn run_with(settings: RelaySettings, misbehaviour: Misbehaviour, log: Logger) -> io::Result<()> {
    let system = System::new();
    let metrics = Metrics::new();
    let result = system.block_on(async {
        let shutdown = termination();
        serve(settings, misbehaviour, log, metrics, |_| {}, shutdown).await
    });
    System::current().stop();
    result
}

/// A relay running in its own thread (for tests and embedding).
pub struct RelayHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl RelayHandle {
    /// Shuts the relay down gracefully and waits for it.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("relay thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Starts a relay in a new thread and returns once it listens.
pub fn spawn(settings: RelaySettings, log: Logger) -> io::Result<RelayHandle> {
    let metrics = Metrics::new();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread_metrics = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("e2ee-relay".into())
        .spawn(move || {
            let system = System::new();
            let bound = move |addr| {
                let _ = bound_tx.send(addr);
            };
            let shutdown = async {
                let _ = stop_rx.await;
            };
            let misbehaviour = Misbehaviour::default();
            let result = system.block_on(serve(
                settings,
                misbehaviour,
                log,
                thread_metrics,
                bound,
                shutdown,
            ));
            System::current().stop();
            result
        })?;
    match bound_rx.recv() {
        Ok(addr) => Ok(RelayHandle {
            addr,
            metrics,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Err(_) => Err(thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("relay thread panicked")))
            .err()
            .unwrap_or_else(|| io::Error::other("relay stopped before listening"))),
    }
}
