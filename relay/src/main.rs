//! `e2ee-relay`: flags → settings → logger → [`e2ee_relay::run`].

use std::path::PathBuf;

use clap::Parser;
use e2ee_config::{LogFormat, LogLevel, LogTarget, OverrideValue};
use e2ee_relay::RelaySettings;

/// mimalloc instead of glibc malloc: the relay allocates small buffers on one thread and
/// frees them on another (frames, deliveries, actor messages), where glibc's allocator
/// took a fifth of the relay's CPU in profiles under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The e2ee-chat relay: stores and forwards end-to-end encrypted messages between
/// authenticated identities. It never sees plaintext or secret keys.
///
/// Settings are layered: built-in defaults, then the TOML file given with --config,
/// then E2EE_* environment variables (nested keys with "__", e.g.
/// E2EE_LIMITS__MAX_CONNECTIONS=100), then these flags.
#[derive(Parser, Debug)]
#[command(name = "e2ee-relay", version)]
struct Cli {
    /// TOML settings file (see --print-config for every key and its default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:7300 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory for the message database and the relay id.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Lowest log level shown.
    #[arg(long, value_enum)]
    log_level: Option<LogLevel>,
    /// Serve Prometheus metrics on this local address, e.g. 127.0.0.1:9300.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Message store: sqlite (durable, group commit) or memory.
    #[arg(long, value_name = "ENGINE")]
    store: Option<String>,
    /// Misbehave on purpose, for the security evidence: tamper, drop, duplicate,
    /// reorder, replay, delay, redeliver, relabel or substitute_bundle (see the
    /// [adversary] settings).
    #[arg(long, value_name = "MODE")]
    adversary: Option<String>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut overrides: Vec<(&str, OverrideValue)> = Vec::new();
    if let Some(listen) = &cli.listen {
        overrides.push(("listen", listen.as_str().into()));
    }
    if let Some(dir) = &cli.data_dir {
        overrides.push(("data_dir", dir.display().to_string().into()));
    }
    if let Some(format) = cli.log_format {
        overrides.push(("log_format", format.as_str().into()));
    }
    if let Some(level) = cli.log_level {
        overrides.push(("log_level", level.as_str().into()));
    }
    if let Some(addr) = &cli.metrics_listen {
        overrides.push(("metrics_listen", addr.as_str().into()));
    }
    if let Some(engine) = &cli.store {
        overrides.push(("store.engine", engine.as_str().into()));
    }
    if let Some(mode) = &cli.adversary {
        overrides.push(("adversary.mode", mode.as_str().into()));
    }
    let settings: RelaySettings =
        e2ee_config::load(cli.config.as_deref(), e2ee_config::ENV_PREFIX, &overrides)?;
    if cli.print_config {
        print!("{}", e2ee_config::to_toml(&settings)?);
        return Ok(());
    }
    let (log, _guard) = e2ee_config::build_logger(settings.log_format, settings.log_level, LogTarget::Stderr);
    e2ee_relay::run(settings, log)?;
    Ok(())
}
