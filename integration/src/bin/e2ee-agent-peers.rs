//! `e2ee-agent-peers`: one agent with many peers against one peer, side by side
//! (see [`e2ee_integration::agent_peers`]). Prints one JSON object per run and the
//! ratios of the per-message cost, many peers over one: wall time per message
//! (`*_time_ratio`, relay and peers included) and the agent's CPU time per message
//! (`*_hub_cpu_ratio`).

use clap::Parser;
use e2ee_integration::agent_peers::{run, PeersConfig};

/// One agent with N live sessions against one session, the same number of messages.
#[derive(Parser, Debug)]
#[command(name = "e2ee-agent-peers", version)]
struct Cli {
    /// Peers with a live session with the agent.
    #[arg(long, default_value_t = 1000)]
    peers: usize,
    /// Texts per peer in each direction (the single-peer run sends peers × this).
    #[arg(long, default_value_t = 2)]
    per_peer: usize,
    /// Runs of each configuration, alternating.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let messages = cli.peers * cli.per_peer;
    let many = PeersConfig {
        peers: cli.peers,
        per_peer: cli.per_peer,
    };
    let one = PeersConfig {
        peers: 1,
        per_peer: messages,
    };
    for _ in 0..cli.repeat {
        let one = run(one, tempfile::tempdir()?.path())?;
        println!("{}", serde_json::to_string(&one)?);
        let many = run(many, tempfile::tempdir()?.path())?;
        println!("{}", serde_json::to_string(&many)?);
        println!(
            "{}",
            serde_json::json!({
                "send_time_ratio": one.send_per_s / many.send_per_s,
                "receive_time_ratio": one.receive_per_s / many.receive_per_s,
                "send_hub_cpu_ratio": many.send_hub_cpu_us / one.send_hub_cpu_us,
                "receive_hub_cpu_ratio": many.receive_hub_cpu_us / one.receive_hub_cpu_us,
            })
        );
    }
    Ok(())
}
