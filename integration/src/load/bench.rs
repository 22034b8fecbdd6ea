//! `e2ee-load bench`: the same workload shape against every target in one run — for
//! each: closed-loop peak, open loop at half that peak, open loop with churn — then
//! idle connections per target, a comparison table, JSON and SVG plots.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use super::idle::{idle, IdleConfig, IdleReport};
use super::plot;
use super::report::{table, LoadReport};
use super::run::{run, ChurnSpec, LoadConfig};
use super::target::{Kind, Server, TargetSpec};

/// The shape of a bench.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Targets, in order.
    pub targets: Vec<TargetSpec>,
    /// The workload (its `rate` is ignored: each target's rates follow from its peak).
    pub load: LoadConfig,
    /// Churn for the availability run.
    pub churn: ChurnSpec,
    /// Idle connections per target (0 = skip).
    pub idle_connections: usize,
    /// How long idle connections are held before memory is read.
    pub idle_hold: Duration,
    /// Where JSON and SVG files go.
    pub out_dir: PathBuf,
}

/// One target's results.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// Label.
    pub target: String,
    /// Closed-loop peak.
    pub peak: LoadReport,
    /// Open loop at half the peak.
    pub half: LoadReport,
    /// Open loop at half the peak with churn.
    pub churn: LoadReport,
    /// Idle connections.
    pub idle: Option<IdleReport>,
}

/// Everything a bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Per target.
    pub targets: Vec<TargetResult>,
    /// The Markdown table printed at the end.
    pub table: String,
}

/// Runs the bench; prints progress lines to stderr.
pub async fn bench(cfg: &BenchConfig) -> anyhow::Result<BenchReport> {
    std::fs::create_dir_all(&cfg.out_dir).with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let mut results = Vec::new();
    for spec in &cfg.targets {
        let label = spec.label();
        eprintln!("== {label}");
        let peak = {
            let server = Server::start(spec, None)?;
            let load = LoadConfig {
                rate: None,
                ..cfg.load.clone()
            };
            run(&load, &server.endpoint()).await?
        };
        eprint!("{}", peak.summary());
        let half_rate = (peak.delivered_rate / 2.0).max(1.0);
        let half = {
            let server = Server::start(spec, None)?;
            let load = LoadConfig {
                rate: Some(half_rate),
                ..cfg.load.clone()
            };
            run(&load, &server.endpoint()).await?
        };
        eprint!("{}", half.summary());
        let churn = {
            let server = Server::start(spec, None)?;
            let load = LoadConfig {
                rate: Some(half_rate),
                churn: Some(cfg.churn),
                ..cfg.load.clone()
            };
            run(&load, &server.endpoint()).await?
        };
        eprint!("{}", churn.summary());
        let idle_report = if cfg.idle_connections > 0 {
            let server = Server::start(spec, None)?;
            // Let the fresh server settle before its baseline memory is read.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let report = idle(
                &IdleConfig {
                    connections: cfg.idle_connections,
                    hold: cfg.idle_hold,
                    spread: cfg.load.spread.max(16),
                    progress: cfg.load.progress,
                },
                &server.endpoint(),
            )
            .await;
            eprint!("{}", report.summary());
            Some(report)
        } else {
            None
        };
        let slug = slug(&label);
        for (name, report) in [("peak", &peak), ("half", &half), ("churn", &churn)] {
            let path = cfg.out_dir.join(format!("{slug}-{name}.svg"));
            if let Err(err) = plot::run_plot(report, &path) {
                eprintln!("plot {} failed: {err:#}", path.display());
            }
        }
        results.push(TargetResult {
            target: label,
            peak,
            half,
            churn,
            idle: idle_report,
        });
    }

    let mut rows: Vec<(String, &LoadReport)> = Vec::new();
    for r in &results {
        rows.push(("peak".into(), &r.peak));
    }
    for r in &results {
        rows.push(("half peak".into(), &r.half));
    }
    for r in &results {
        rows.push((
            format!("churn {:.0}%/{:?}", cfg.churn.share * 100.0, cfg.churn.every),
            &r.churn,
        ));
    }
    let mut text = table(&rows);
    if results.iter().any(|r| r.idle.is_some()) {
        text.push_str("\n| idle connections | held | failed | server RSS before MiB | held MiB | KB per connection |\n|---|---:|---:|---:|---:|---:|\n");
        for r in &results {
            if let Some(i) = &r.idle {
                let _ = writeln!(
                    text,
                    "| {} | {} | {} | {:.1} | {:.1} | {:.2} |",
                    i.target,
                    i.held,
                    i.failed,
                    i.rss_kib_before as f64 / 1024.0,
                    i.rss_kib_held as f64 / 1024.0,
                    i.kb_per_connection
                );
            }
        }
    }
    let peaks: Vec<(String, f64)> = results
        .iter()
        .map(|r| (r.target.clone(), r.peak.delivered_rate))
        .collect();
    let curves: Vec<(String, &LoadReport)> = results
        .iter()
        .map(|r| {
            (
                format!("{} @ {:.0}/s", r.target, r.half.offered_rate.unwrap_or(0.0)),
                &r.half,
            )
        })
        .collect();
    let compare = cfg.out_dir.join("compare.svg");
    if let Err(err) = plot::compare_plot(
        &peaks,
        &curves,
        "latency by percentile at half of each target's peak (open loop, corrected)",
        &compare,
    ) {
        eprintln!("plot {} failed: {err:#}", compare.display());
    }
    Ok(BenchReport {
        targets: results,
        table: text,
    })
}

/// Whether every relay run delivered every acknowledged message.
pub fn relay_kept_its_promise(report: &BenchReport) -> bool {
    report.targets.iter().all(|t| {
        [&t.peak, &t.half, &t.churn]
            .iter()
            .all(|r| r.kind != Kind::Relay || r.all_acked_delivered != Some(false))
    })
}

fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}
