//! The security evidence runner behind `make evidence` (`e2ee-evidence`) and the
//! `evidence` integration test: each scenario starts real relay and agent processes on
//! loopback, makes something happen (a recorded conversation, a misbehaving relay, a
//! stolen state directory, a man in the middle, an impostor, churn and garbage), checks
//! what the agents report and returns one report [`Section`] per property.
//!
//! - [`confidentiality`]: the wire (through a recording proxy) and the relay's disk hold
//!   no plaintext and no secret key.
//! - [`adversarial`]: tamper, drop, duplicate, reorder, replay, delay.
//! - [`secrecy`]: forward secrecy and post-compromise healing, shown by decrypting the
//!   recorded ciphertexts with a stolen copy of an agent's state.
//! - [`recovery`]: a state restored from an old copy reuses no key and nonce, and both
//!   agents heal the conversation with reset requests.
//! - [`mitm`]: a relay substituting its own bundle and claims: safety numbers differ, a
//!   pinned identity triggers the identity-change policy.
//! - [`impersonation`]: a second identity calling itself by a held name, a relay
//!   substituting a verified contact, a name re-claimed after its lease, fresh messages
//!   relabelled with an already-seen relay message id.
//! - [`availability`]: the relay keeps serving through churn, crashes and garbage.
//! - [`groups`]: group membership secrecy (removed and added members) and member
//!   identities, with the agents' MLS group library and a stolen copy of its storage.
//!
//! Helpers: [`agents`] (agent and relay processes), [`state_files`] (reading a state
//! directory from outside), [`search`] (windowed byte search), [`report`].

pub mod adversarial;
pub mod agents;
pub mod availability;
pub mod confidentiality;
pub mod groups;
pub mod impersonation;
pub mod mitm;
pub mod recovery;
pub mod report;
pub mod search;
pub mod secrecy;
pub mod state_files;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use report::{Report, Section, Verdict};

/// The scenario groups, in report order.
pub const SCENARIOS: [&str; 8] = [
    "confidentiality",
    "adversary",
    "secrecy",
    "recovery",
    "mitm",
    "impersonation",
    "availability",
    "groups",
];

/// How much to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Shorter scenarios (the integration test).
    pub quick: bool,
    /// Run only these scenario groups (all when empty).
    pub only: Vec<String>,
    /// Keep the work directory (agent states, relay data) here instead of a temporary one.
    pub keep_dir: Option<PathBuf>,
}

impl Options {
    /// Every scenario at full length.
    pub fn full() -> Self {
        Self {
            quick: false,
            only: Vec::new(),
            keep_dir: None,
        }
    }

    /// Every scenario, shortened.
    pub fn quick() -> Self {
        Self {
            quick: true,
            ..Self::full()
        }
    }
}

/// Sizes that differ between the full run and the quick one.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// True for the quick run.
    pub quick: bool,
}

impl Scale {
    /// `quick` in the quick run, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Runs the body of one section, turning an error or a panic into a failed verdict.
pub fn guarded(mut section: Section, body: impl FnOnce(&mut Section) -> anyhow::Result<()>) -> Section {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| body(&mut section)));
    if let Some(error) = failure(outcome) {
        section.error = Some(error);
    }
    section.finish(started.elapsed());
    section
}

/// The error text of a scenario body that failed or panicked.
pub fn failure(outcome: std::thread::Result<anyhow::Result<()>>) -> Option<String> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(format!("{err:#}")),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .map(|s| format!("panic: {s}"))
                .unwrap_or_else(|| "panic".into()),
        ),
    }
}

/// Short hex for reports: the first 8 bytes.
pub fn short(hex_text: &str) -> &str {
    hex_text.get(..16).unwrap_or(hex_text)
}

/// Runs the selected scenarios and assembles the report.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let temp = tempfile::Builder::new()
        .prefix("e2ee-evidence-")
        .tempdir()
        .context("creating a work directory")?;
    let work: &Path = match &options.keep_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir
        }
        None => temp.path(),
    };
    let scale = Scale { quick: options.quick };
    let selected = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    let mut sections = Vec::new();
    for name in SCENARIOS {
        if !selected(name) {
            continue;
        }
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        match name {
            "confidentiality" => sections.push(confidentiality::run(scale, &dir)),
            "adversary" => sections.extend(adversarial::run(scale, &dir)),
            "secrecy" => sections.extend(secrecy::run(scale, &dir)),
            "recovery" => sections.push(recovery::run(scale, &dir)),
            "mitm" => sections.push(mitm::run(scale, &dir)),
            "impersonation" => sections.extend(impersonation::run(scale, &dir)),
            "availability" => sections.push(availability::run(scale, &dir)),
            "groups" => sections.extend(groups::run(scale)),
            _ => {}
        }
    }
    let environment = serde_json::json!({
        "relay": crate::process::binary("e2ee-relay").map(|p| p.display().to_string()).unwrap_or_default(),
        "agent": crate::process::binary("e2ee-agent").map(|p| p.display().to_string()).unwrap_or_default(),
        "os": std::env::consts::OS,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    Ok(Report {
        started_unix_ms,
        mode: if options.quick { "quick" } else { "full" }.into(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        passed: !sections.is_empty() && sections.iter().all(Section::passed),
        environment,
        sections,
    })
}

/// Median and maximum of some durations, in ms.
pub fn median_max(values: &[Duration]) -> (u64, u64) {
    let mut ms: Vec<u64> = values.iter().map(|d| d.as_millis() as u64).collect();
    ms.sort_unstable();
    let median = ms.get(ms.len() / 2).copied().unwrap_or(0);
    (median, ms.last().copied().unwrap_or(0))
}
