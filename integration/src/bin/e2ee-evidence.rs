//! `e2ee-evidence`: runs every security scenario against real relay and agent processes
//! on loopback and writes `report.md` and `report.json`; exits 1 if any verdict fails.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use e2ee_integration::evidence::{self, Options, SCENARIOS};

/// Security evidence for e2ee-chat: confidentiality on the wire, an adversarial relay,
/// forward secrecy, post-compromise healing, recovery after a restore from backup, MITM
/// detection, relay availability and group membership secrecy.
/// The relay and agent binaries are taken from this binary's directory.
#[derive(Parser, Debug)]
#[command(name = "e2ee-evidence", version)]
struct Cli {
    /// Directory for report.md and report.json.
    #[arg(long, value_name = "DIR", default_value = "evidence")]
    out: PathBuf,
    /// Shorter scenarios (what the integration test runs).
    #[arg(long)]
    quick: bool,
    /// Only these scenario groups (comma-separated): confidentiality, adversary, secrecy, recovery,
    /// mitm, impersonation, availability, groups.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Keep agent states, relay data and the stolen copy in this directory.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(unknown) = cli.only.iter().find(|o| !SCENARIOS.contains(&o.as_str())) {
        anyhow::bail!("unknown scenario {unknown:?}; known: {}", SCENARIOS.join(", "));
    }
    let options = Options {
        quick: cli.quick,
        only: cli.only,
        keep_dir: cli.keep,
    };
    eprintln!(
        "e2ee-evidence: running {} scenarios ({} run)...",
        if options.only.is_empty() {
            "all".to_string()
        } else {
            options.only.join(", ")
        },
        if options.quick { "quick" } else { "full" }
    );
    let report = evidence::run(&options)?;
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let md = cli.out.join("report.md");
    let json = cli.out.join("report.json");
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    println!("{}", report.table());
    for failed in report.failures() {
        println!("FAIL {}: {}", failed.id, failed.summary);
        if let Some(err) = &failed.error {
            println!("{err}");
        }
    }
    println!(
        "{} ({:.1} s): {} and {}",
        if report.passed { "PASS" } else { "FAIL" },
        report.duration_ms as f64 / 1000.0,
        md.display(),
        json.display()
    );
    if !report.passed {
        std::process::exit(1);
    }
    Ok(())
}
