//! The relay's command-line flags, shared by the `e2ee-relay` binary and the
//! `e2ee-relay-adversary` binary of e2ee-integration (which adds its own `--adversary…`
//! flags): each flag overrides one setting, after the TOML file and the environment.

use std::path::PathBuf;

use clap::Args;
use e2ee_config::{LogFormat, LogLevel, OverrideValue, SettingsError};

use crate::RelaySettings;

/// Every flag of the relay.
#[derive(Args, Debug, Clone)]
pub struct RelayFlags {
    /// TOML settings file (see --print-config for every key and its default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:7300 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the message database and the relay id (created owner-only; one
    /// that others may read is refused).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Lowest log level shown.
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// Serve Prometheus metrics on GET /metrics at this local address, e.g.
    /// 127.0.0.1:9300.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Message store: sqlite (durable, group commit), redis (durable with AOF
    /// `appendfsync always`, shared by a relay cluster; see the `store.redis_*` settings)
    /// or memory.
    #[arg(long, value_name = "ENGINE")]
    pub store: Option<String>,
    /// PEM certificate chain for TLS (with --tls-key); without both, a self-signed
    /// certificate is made on first start and kept in the data directory.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain TCP without TLS (local benchmarks only: the link can be read and
    /// altered on the path; clients must say --insecure-plaintext too).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Print the pin of the relay's TLS key (sha256:..., what clients pin) and exit;
    /// makes the self-signed certificate if there is none yet.
    #[arg(long)]
    pub print_pin: bool,
}

impl RelayFlags {
    /// The settings these flags override, as dotted keys.
    pub fn overrides(&self) -> Vec<(&'static str, OverrideValue)> {
        let mut overrides: Vec<(&'static str, OverrideValue)> = Vec::new();
        if let Some(listen) = &self.listen {
            overrides.push(("listen", listen.as_str().into()));
        }
        if let Some(dir) = &self.data_dir {
            overrides.push(("data_dir", dir.display().to_string().into()));
        }
        if let Some(format) = self.log_format {
            overrides.push(("log_format", format.as_str().into()));
        }
        if let Some(level) = self.log_level {
            overrides.push(("log_level", level.as_str().into()));
        }
        if let Some(addr) = &self.metrics_listen {
            overrides.push(("metrics_listen", addr.as_str().into()));
        }
        if let Some(engine) = &self.store {
            overrides.push(("store.engine", engine.as_str().into()));
        }
        if let Some(path) = &self.tls_cert {
            overrides.push(("tls.cert_file", path.display().to_string().into()));
        }
        if let Some(path) = &self.tls_key {
            overrides.push(("tls.key_file", path.display().to_string().into()));
        }
        if self.insecure_plaintext {
            overrides.push(("insecure_plaintext", true.into()));
        }
        overrides
    }

    /// The effective settings: defaults, the TOML file, `E2EE_RELAY_` environment variables,
    /// then these flags.
    pub fn load(&self) -> Result<RelaySettings, SettingsError> {
        e2ee_config::load(
            self.config.as_deref(),
            e2ee_config::RELAY_ENV_PREFIX,
            &self.overrides(),
        )
    }
}
