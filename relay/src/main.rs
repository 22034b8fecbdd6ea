//! `e2ee-relay`: flags → settings → logger → [`e2ee_relay::run`].

use clap::Parser;
use e2ee_config::LogTarget;
use e2ee_relay::flags::RelayFlags;

/// mimalloc instead of glibc malloc: the relay allocates small buffers on one thread and
/// frees them on another (frames, deliveries, actor messages), where glibc's allocator
/// took a fifth of the relay's CPU in profiles under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The e2ee-chat relay: stores and forwards end-to-end encrypted messages between
/// authenticated identities. It never sees plaintext or secret keys.
///
/// Settings are layered: built-in defaults, then the TOML file given with --config,
/// then E2EE_RELAY_* environment variables (nested keys with "__", e.g.
/// E2EE_RELAY_LIMITS__MAX_CONNECTIONS=100), then these flags.
#[derive(Parser, Debug)]
#[command(name = "e2ee-relay", version)]
struct Cli {
    #[command(flatten)]
    flags: RelayFlags,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = cli.flags.load()?;
    if cli.flags.print_pin {
        println!("{}", e2ee_relay::tls_pin(&settings)?);
        return Ok(());
    }
    if cli.flags.print_config {
        // What is printed is what would run: invalid settings are an error here too.
        settings.validate()?;
        let optional = [("metrics_listen", "no metrics endpoint")];
        print!("{}", e2ee_config::to_toml_with_unset(&settings, &optional)?);
        return Ok(());
    }
    let (log, _guard) = e2ee_config::build_logger(settings.log_format, settings.log_level, LogTarget::Stderr);
    e2ee_relay::run(settings, log)?;
    Ok(())
}
