//! `e2ee-load`: flags → a load run, an idle-connection run, a side-by-side bench or a
//! group fan-out run
//! (see [`e2ee_integration::load`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use e2ee_integration::load::bench::{bench, relay_kept_its_promise, BenchConfig};
use e2ee_integration::load::group::{group, GroupConfig};
use e2ee_integration::load::idle::{idle, IdleConfig};
use e2ee_integration::load::run::parse_duration;
use e2ee_integration::load::target::{auto_spread, Server, TargetSpec};
use e2ee_integration::load::{plot, run, ChurnSpec, LoadConfig};

/// Load generator for the e2ee-chat relay, with NATS and Redis pub/sub for comparison.
/// Loopback targets only.
#[derive(Parser, Debug)]
#[command(name = "e2ee-load", version)]
struct Cli {
    /// Worker threads of the load generator (1 leaves the other core to the server).
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    /// Relay targets without TLS: a relay started here serves plain TCP
    /// (--insecure-plaintext) and clients speak it (to compare with TLS).
    #[arg(long, global = true)]
    insecure_plaintext: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One run: N pairs sending at a fixed total rate (or --max), optional churn.
    Run(RunArgs),
    /// Hold many idle authenticated connections and report server memory per connection.
    Idle(IdleArgs),
    /// Relay (memory, sqlite), nats-server and redis-server, same workload, one table.
    Bench(BenchArgs),
    /// One group of N members on a relay started here: fan-out rate, latency to every
    /// member, and an audit of every copy (MLS-shaped headers, or real MLS with --mls).
    Group(GroupArgs),
}

#[derive(Args, Debug, Clone)]
struct Workload {
    /// Sender/recipient pairs (2 connections each).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Payload size in bytes (the plaintext size under --e2e).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// How long to send, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Leading time excluded from rates and latency.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Closed loop: messages in flight per pair.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Run the real crypto (X3DH + Double Ratchet) on every message.
    #[arg(long)]
    e2e: bool,
    /// Longest wait for outstanding messages after sending stops.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    drain: Duration,
    /// Spread client connections over source addresses 127.0.0.1..=N [default: one
    /// address per 10 000 connections].
    #[arg(long)]
    spread: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl Workload {
    fn config(&self) -> LoadConfig {
        LoadConfig {
            pairs: self.pairs,
            rate: None,
            window: self.window,
            duration: self.duration,
            warmup: self.warmup,
            size: self.size,
            churn: None,
            e2e: self.e2e,
            drain: self.drain,
            progress: !self.no_progress,
            spread: self.spread.unwrap_or_else(|| auto_spread(2 * self.pairs)),
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// relay://HOST:PORT, nats://HOST:PORT, redis://HOST:PORT, or relay-memory,
    /// relay-sqlite, relay-redis, relay-redis-cross, relay-redis-cluster, nats, nats-jetstream,
    /// redis, redis-streams to start one on
    /// a free loopback port.
    #[arg(long, default_value = "relay-memory")]
    target: String,
    /// Total offered rate, messages per second (open loop).
    #[arg(long, default_value_t = 10_000.0, conflicts_with = "max")]
    rate: f64,
    /// Closed loop: send as fast as the window allows, to find the peak.
    #[arg(long)]
    max: bool,
    /// SHARE/INTERVAL of clients dropped abruptly and reconnected, e.g. 20%/3s.
    #[arg(long, value_parser = ChurnSpec::parse)]
    churn: Option<ChurnSpec>,
    /// Pid of an external server, for its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot here.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    workload: Workload,
}

#[derive(Args, Debug)]
struct IdleArgs {
    /// Target (see `run --target`).
    #[arg(long, default_value = "relay-memory")]
    target: String,
    /// Connections to open.
    #[arg(long, default_value_t = 20_000)]
    connections: usize,
    /// How long to hold them before reading memory.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    hold: Duration,
    /// Spread over source addresses 127.0.0.1..=N.
    #[arg(long, default_value_t = 16)]
    spread: usize,
    /// Pid of an external server.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Comma-separated targets.
    #[arg(long, default_value = "relay-memory,relay-sqlite,nats,redis")]
    targets: String,
    /// Churn of the availability run.
    #[arg(long, default_value = "20%/3s", value_parser = ChurnSpec::parse)]
    churn: ChurnSpec,
    /// Idle connections per target (0 skips).
    #[arg(long, default_value_t = 20_000)]
    idle_connections: usize,
    /// How long idle connections are held.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    idle_hold: Duration,
    /// Directory for bench.json and the SVG plots.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    #[command(flatten)]
    workload: Workload,
}

#[derive(Args, Debug)]
struct GroupArgs {
    /// relay-memory or relay-sqlite (started here), or relay://HOST:PORT.
    #[arg(long, default_value = "relay-sqlite")]
    target: String,
    /// Members of the group, each a client connection.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Total uploads per second (open loop), senders taking turns over the members.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Application payload bytes per upload (the text under --mls).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// How long to upload, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Leading time excluded from rates and latency.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Longest wait for outstanding acks and copies after uploading stops.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain: Duration,
    /// Real MLS (OpenMLS through the agent's GroupBook) instead of MLS-shaped headers.
    #[arg(long)]
    mls: bool,
    /// Pid of an external relay.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn write_json(path: &PathBuf, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn main_async(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Cmd::Run(args) => {
            let server = Server::start(&TargetSpec::parse(&args.target)?, args.server_pid)?;
            let mut cfg = args.workload.config();
            cfg.rate = (!args.max).then_some(args.rate);
            cfg.churn = args.churn;
            let report = run(&cfg, &server.endpoint()).await?;
            print!("{}", report.summary());
            if let Some(path) = &args.json {
                write_json(path, &report)?;
            }
            if let Some(path) = &args.plot {
                plot::run_plot(&report, path)?;
            }
            Ok(report.all_acked_delivered != Some(false))
        }
        Cmd::Group(args) => {
            let server = Server::start(&TargetSpec::parse(&args.target)?, args.server_pid)?;
            let cfg = GroupConfig {
                members: args.members,
                rate: args.rate,
                duration: args.duration,
                warmup: args.warmup,
                size: args.size,
                mls: args.mls,
                drain: args.drain,
                ..GroupConfig::default()
            };
            let report = group(&cfg, &server.endpoint()).await?;
            print!("{}", report.summary());
            if let Some(path) = &args.json {
                write_json(path, &report)?;
            }
            Ok(report.all_delivered_once)
        }
        Cmd::Idle(args) => {
            let server = Server::start(&TargetSpec::parse(&args.target)?, args.server_pid)?;
            let cfg = IdleConfig {
                connections: args.connections,
                hold: args.hold,
                spread: args.spread,
                progress: !args.no_progress,
            };
            let report = idle(&cfg, &server.endpoint()).await;
            print!("{}", report.summary());
            if let Some(path) = &args.json {
                write_json(path, &report)?;
            }
            Ok(report.failed == 0)
        }
        Cmd::Bench(args) => {
            let targets = args
                .targets
                .split(',')
                .map(|t| TargetSpec::parse(t.trim()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let cfg = BenchConfig {
                targets,
                load: args.workload.config(),
                churn: args.churn,
                idle_connections: args.idle_connections,
                idle_hold: args.idle_hold,
                out_dir: args.out.clone(),
            };
            let report = bench(&cfg).await?;
            println!("\n{}", report.table);
            write_json(&args.out.join("bench.json"), &report)?;
            println!(
                "results: {}/bench.json, plots: {}/*.svg",
                args.out.display(),
                args.out.display()
            );
            Ok(relay_kept_its_promise(&report))
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    e2ee_integration::load::target::set_relay_plaintext(cli.insecure_plaintext);
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    let ok = runtime.block_on(main_async(cli))?;
    if !ok {
        bail!("the run failed its check (see above)");
    }
    Ok(())
}
