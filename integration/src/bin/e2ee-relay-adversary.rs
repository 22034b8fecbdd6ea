//! `e2ee-relay-adversary`: the relay with its deliberate-misbehaviour mode, for the
//! security evidence (`make evidence`) and the tests. Flags → settings → logger →
//! [`e2ee_relay::server::run_adversarial`]. Never deploy it: with `--adversary MODE` it
//! tampers with, drops, replays or substitutes what it relays, on purpose.

use clap::Parser;
use e2ee_config::LogTarget;
use e2ee_relay::adversary::AdversarySettings;
use e2ee_relay::flags::RelayFlags;
use serde::Serialize;

/// The e2ee-chat relay built with its adversary mode (a test tool: never deploy it).
///
/// Every flag and setting of e2ee-relay, plus --adversary MODE and its parameters.
#[derive(Parser, Debug)]
#[command(name = "e2ee-relay-adversary", version)]
struct Cli {
    #[command(flatten)]
    flags: RelayFlags,
    #[command(flatten)]
    adversary: AdversarySettings,
}

/// The `[adversary]` section printed after the relay's settings.
#[derive(Serialize)]
struct Printed<'a> {
    adversary: &'a AdversarySettings,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.flags.load()?;
    if cli.flags.print_config {
        print!("{}", e2ee_config::to_toml(&settings)?);
        print!(
            "\n{}",
            e2ee_config::to_toml(&Printed {
                adversary: &cli.adversary
            })?
        );
        return Ok(());
    }
    let (log, _guard) = e2ee_config::build_logger(settings.log_format, settings.log_level, LogTarget::Stderr);
    e2ee_relay::server::run_adversarial(settings, cli.adversary, log)?;
    Ok(())
}
