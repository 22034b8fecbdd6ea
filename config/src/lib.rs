//! Settings and logging shared by the `e2ee-relay` and `e2ee-agent` binaries.
//!
//! | module | holds |
//! |---|---|
//! | [`settings`] | layered loading of a binary's settings struct: defaults → TOML file → `E2EE_RELAY_` / `E2EE_AGENT_` environment → flags ([`load`], [`load_with_env`], [`to_toml`], [`OverrideValue`], [`SettingsError`]) |
//! | [`logging`] | the root slog logger: term or JSON drain, async, filtered by level ([`build_logger`], [`discard_logger`], [`LogFormat`], [`LogLevel`], [`LogTarget`], [`LoggerGuard`]) |
//!
//! # A binary's `main`
//!
//! ```no_run
//! use std::path::PathBuf;
//!
//! use clap::Parser;
//! use e2ee_config::{LogFormat, LogLevel, LogTarget, OverrideValue};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     listen: String,
//!     log_format: LogFormat,
//!     log_level: LogLevel,
//!     limits: Limits,
//! }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Limits {
//!     max_connections: u32,
//! }
//!
//! impl Default for Settings {
//!     fn default() -> Self {
//!         Self {
//!             listen: "127.0.0.1:7000".into(),
//!             log_format: LogFormat::Term,
//!             log_level: LogLevel::Info,
//!             limits: Limits { max_connections: 1024 },
//!         }
//!     }
//! }
//!
//! #[derive(Parser)]
//! struct Cli {
//!     /// TOML config file (must exist when given).
//!     #[arg(long)]
//!     config: Option<PathBuf>,
//!     /// Print the merged settings as TOML and exit.
//!     #[arg(long)]
//!     print_config: bool,
//!     #[arg(long)]
//!     listen: Option<String>,
//!     #[arg(long, value_enum)]
//!     log_format: Option<LogFormat>,
//!     #[arg(long, value_enum)]
//!     log_level: Option<LogLevel>,
//!     #[arg(long)]
//!     max_connections: Option<u32>,
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let cli = Cli::parse();
//!
//!     // Only flags the user gave become overrides, so the lower layers still apply.
//!     let mut overrides: Vec<(&str, OverrideValue)> = Vec::new();
//!     if let Some(listen) = &cli.listen {
//!         overrides.push(("listen", listen.as_str().into()));
//!     }
//!     if let Some(format) = cli.log_format {
//!         overrides.push(("log_format", format.as_str().into()));
//!     }
//!     if let Some(level) = cli.log_level {
//!         overrides.push(("log_level", level.as_str().into()));
//!     }
//!     if let Some(max) = cli.max_connections {
//!         overrides.push(("limits.max_connections", max.into()));
//!     }
//!
//!     let settings: Settings =
//!         e2ee_config::load(cli.config.as_deref(), e2ee_config::ENV_PREFIX, &overrides)?;
//!     if cli.print_config {
//!         print!("{}", e2ee_config::to_toml(&settings)?);
//!         return Ok(());
//!     }
//!
//!     let (log, _guard) =
//!         e2ee_config::build_logger(settings.log_format, settings.log_level, LogTarget::Stderr);
//!     slog::info!(log, "relay starting"; "listen" => &settings.listen);
//!     // run(settings, log) ...; `_guard` flushes the logs when main returns.
//!     Ok(())
//! }
//! ```

pub mod logging;
pub mod settings;

pub use logging::{
    build_logger, discard_logger, LogFormat, LogLevel, LogTarget, LoggerGuard, ParseLogOptionError,
};
pub use settings::{
    load, load_with_env, to_toml, to_toml_with_unset, Layer, OverrideValue, SettingsError, AGENT_ENV_PREFIX,
    ENV_PREFIX, RELAY_ENV_PREFIX,
};
