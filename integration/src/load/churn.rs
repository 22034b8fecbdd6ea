//! `--churn`: which share of the clients is dropped how often, and the duration syntax
//! of the load generator's flags.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

/// `--churn P/INTERVAL`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ChurnSpec {
    /// Share of all clients dropped each interval (0..=1).
    pub share: f64,
    /// Time between drops.
    pub every: Duration,
}

impl ChurnSpec {
    /// Parses `20%/3s` (or `0.2/3s`).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (share, every) = text
            .split_once('/')
            .ok_or_else(|| anyhow!("--churn wants SHARE/INTERVAL, e.g. 20%/3s"))?;
        let share = match share.strip_suffix('%') {
            Some(pct) => pct.trim().parse::<f64>()? / 100.0,
            None => share.trim().parse::<f64>()?,
        };
        if !(0.0..=1.0).contains(&share) {
            bail!("churn share must be between 0% and 100%");
        }
        let every = parse_duration(every)?;
        if every < Duration::from_millis(100) {
            bail!("churn interval must be at least 100ms");
        }
        Ok(Self { share, every })
    }
}

/// Parses `10s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("bad duration {text:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => bail!("unknown duration unit {other:?}"),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        bail!("duration {text:?} out of range");
    }
    Ok(Duration::from_secs_f64(secs))
}
