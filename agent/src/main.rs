//! `e2ee-agent`: flags → settings → logger → [`e2ee_agent::runner::run`].

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use e2ee_agent::line_editor::LineEditor;
use e2ee_agent::log_file::open_log_file;
use e2ee_agent::runner::Driver;
use e2ee_agent::settings::{AgentSettings, IdentityPolicy};
use e2ee_config::{LogFormat, LogLevel, LogTarget, OverrideValue};

/// A headless e2ee-chat agent: end-to-end encrypted messaging with per-peer Double
/// Ratchet sessions, driven interactively from stdin or by a script.
///
/// Settings are layered: built-in defaults, then the TOML file given with --config,
/// then E2EE_AGENT_* environment variables (nested keys with "__"), then these flags.
/// Interactive commands: /msg <peer> <text>, /peers, /verify <peer>,
/// /trust <peer> <digits>, /reject <peer>, /release-name, /claim-name, /help, /quit.
#[derive(Parser, Debug)]
#[command(name = "e2ee-agent", version)]
struct Cli {
    /// TOML settings file (see --print-config for every key).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This agent's name (published, signed by its identity key).
    #[arg(long)]
    name: Option<String>,
    /// Relay address, e.g. 127.0.0.1:7300, or several relays of one cluster separated by
    /// commas (a:7300,b:7300): the next one is used when one cannot be reached.
    #[arg(long, value_name = "ADDR[,ADDR...]")]
    relay: Option<String>,
    /// State directory (the state database and its key file; owner-only).
    #[arg(long = "state", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Seal the state under the passphrase in this file (its first line) instead of
    /// the key file `state.key` in the state directory (env E2EE_AGENT_PASSPHRASE_FILE).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Ask for the passphrase on the terminal (twice for a new state) instead of
    /// reading it from a file. A state sealed under a passphrase is asked for anyway
    /// when stdin is a terminal.
    #[arg(long, conflicts_with = "passphrase_file")]
    passphrase_prompt: bool,
    /// Run the steps of this script file instead of reading stdin.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Print one JSON event per line instead of readable text.
    #[arg(long)]
    json: bool,
    /// What to do when a pinned peer's identity changes.
    #[arg(long, value_name = "POLICY")]
    identity_policy: Option<IdentityPolicy>,
    /// The relay's TLS key pin, sha256:<64 hex digits> (what e2ee-relay --print-pin
    /// prints); without it the key seen on the first connection is pinned.
    #[arg(long, value_name = "PIN")]
    relay_pin: Option<String>,
    /// Trust the relay by certificate authorities instead of a pin: a PEM file of CA
    /// certificates, or `system` for the operating system's (not with --relay-pin).
    #[arg(long, value_name = "FILE|system")]
    relay_ca: Option<String>,
    /// Talk plain TCP to a relay started with --insecure-plaintext (local benchmarks).
    #[arg(long)]
    insecure_plaintext: bool,
    /// Log format (logs go to stderr, or to agent.log in the state directory when
    /// commands are typed in the line editor on a terminal; events go to stdout).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Lowest log level shown.
    #[arg(long, value_enum)]
    log_level: Option<LogLevel>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut overrides: Vec<(&str, OverrideValue)> = Vec::new();
    if let Some(name) = &cli.name {
        overrides.push(("name", name.as_str().into()));
    }
    if let Some(relay) = &cli.relay {
        overrides.push(("relay", relay.as_str().into()));
    }
    if let Some(dir) = &cli.state_dir {
        overrides.push(("state_dir", dir.display().to_string().into()));
    }
    if let Some(file) = &cli.passphrase_file {
        overrides.push(("passphrase_file", file.display().to_string().into()));
    }
    if cli.passphrase_prompt {
        overrides.push(("passphrase_prompt", true.into()));
    }
    if cli.json {
        overrides.push(("json", true.into()));
    }
    if let Some(pin) = &cli.relay_pin {
        overrides.push(("relay_pin", pin.as_str().into()));
    }
    if let Some(ca) = &cli.relay_ca {
        overrides.push(("relay_ca", ca.as_str().into()));
    }
    if cli.insecure_plaintext {
        overrides.push(("insecure_plaintext", true.into()));
    }
    if let Some(policy) = cli.identity_policy {
        overrides.push(("identity_policy", policy.as_str().into()));
    }
    if let Some(format) = cli.log_format {
        overrides.push(("log_format", format.as_str().into()));
    }
    if let Some(level) = cli.log_level {
        overrides.push(("log_level", level.as_str().into()));
    }
    // The test hooks of debug builds and the passphrase are read where they act, not as
    // settings.
    let hooks = [
        e2ee_agent::crash_point::ENV,
        e2ee_agent::store::write_fault::ENV,
        e2ee_agent::passphrase::PASSPHRASE_ENV,
    ];
    let env = std::env::vars_os().filter(|(key, _)| !hooks.iter().any(|hook| key == hook));
    let settings: AgentSettings = e2ee_config::load_with_env(
        cli.config.as_deref(),
        e2ee_config::AGENT_ENV_PREFIX,
        env,
        &overrides,
    )?;
    // What `--print-config` prints is what would run: invalid settings are an error.
    settings.validate()?;
    if cli.print_config {
        let optional = [
            (
                "passphrase_file",
                "the state is sealed under the key file state.key, or E2EE_PASSPHRASE, or a prompt",
            ),
            (
                "relay_pin",
                "the relay's key seen on the first connection is pinned (trust on first use)",
            ),
            (
                "relay_ca",
                "the relay is trusted by its pin, not by certificate authorities",
            ),
        ];
        print!("{}", e2ee_config::to_toml_with_unset(&settings, &optional)?);
        return Ok(());
    }
    // The line editor owns the terminal: logs go to a file in the state directory.
    let (target, log_path) = if LineEditor::wanted(settings.json, cli.script.is_some()) {
        let (file, path) = open_log_file(&settings.state_dir)
            .with_context(|| format!("cannot open the log file in {}", settings.state_dir.display()))?;
        (LogTarget::Writer(Box::new(file)), Some(path))
    } else {
        (LogTarget::Stderr, None)
    };
    let (log, guard) = e2ee_config::build_logger(settings.log_format, settings.log_level, target);
    let driver = match (&cli.script, &log_path) {
        (Some(script), _) => Driver::Script(script),
        (None, Some(log_file)) => Driver::LineEditor { log_file },
        (None, None) => Driver::Stdin,
    };
    let code = e2ee_agent::runner::run(settings, driver, log)?;
    drop(guard);
    std::process::exit(code);
}
