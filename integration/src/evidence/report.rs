//! The evidence report: one [`Section`] per property (what was done, what was observed,
//! the checks and the verdict), rendered as `report.md` and `report.json`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Whether a property held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// A check failed or the scenario could not run.
    Fail,
}

impl Verdict {
    /// `PASS` or `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Fail => "FAIL",
        }
    }
}

/// One checked expectation.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub what: String,
    /// What must be observed for the property to hold.
    pub expected: String,
    /// What was observed.
    pub observed: String,
    /// True if it held.
    pub pass: bool,
}

/// One property: what was done, what was observed, the checks and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Short identifier (`confidentiality`, `adversary-tamper`, ...).
    pub id: String,
    /// Heading.
    pub title: String,
    /// The property, in one sentence.
    pub property: String,
    /// The steps taken.
    pub done: Vec<String>,
    /// What was observed, in words and numbers.
    pub observed: Vec<String>,
    /// The checks the verdict rests on.
    pub checks: Vec<Check>,
    /// One line for the verdict table.
    pub summary: String,
    /// Pass only if there is at least one check, every check passed and nothing failed.
    pub verdict: Verdict,
    /// Why the scenario stopped, if it did.
    pub error: Option<String>,
    /// Wall-clock time of the scenario.
    pub duration_ms: u64,
    /// Raw numbers for machines.
    pub data: serde_json::Value,
}

impl Section {
    /// An empty section (verdict fail until checks pass and it is finished).
    pub fn new(id: &str, title: &str, property: &str) -> Self {
        Self {
            id: id.to_string(),
            title: title.to_string(),
            property: property.to_string(),
            done: Vec::new(),
            observed: Vec::new(),
            checks: Vec::new(),
            summary: String::new(),
            verdict: Verdict::Fail,
            error: None,
            duration_ms: 0,
            data: serde_json::Value::Object(Default::default()),
        }
    }

    /// Records a step.
    pub fn did(&mut self, step: impl Into<String>) {
        self.done.push(step.into());
    }

    /// Records an observation.
    pub fn saw(&mut self, observation: impl Into<String>) {
        self.observed.push(observation.into());
    }

    /// Records a check; returns whether it passed.
    pub fn check(
        &mut self,
        what: impl Into<String>,
        expected: impl Into<String>,
        observed: impl Into<String>,
        pass: bool,
    ) -> bool {
        self.checks.push(Check {
            what: what.into(),
            expected: expected.into(),
            observed: observed.into(),
            pass,
        });
        pass
    }

    /// Stores a value under `key` in [`Section::data`].
    pub fn put(&mut self, key: &str, value: impl Serialize) {
        if let serde_json::Value::Object(map) = &mut self.data {
            map.insert(
                key.to_string(),
                serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            );
        }
    }

    /// Settles the verdict.
    pub fn finish(&mut self, elapsed: Duration) {
        self.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let pass = self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.pass);
        self.verdict = if pass { Verdict::Pass } else { Verdict::Fail };
        if self.summary.is_empty() {
            self.summary = match (&self.error, self.checks.iter().find(|c| !c.pass)) {
                (Some(err), _) => format!("scenario failed: {}", first_line(err)),
                (None, Some(check)) => format!("failed: {}", check.what),
                (None, None) => format!("{} checks passed", self.checks.len()),
            };
        }
    }

    /// True if the property held.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the run started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// `full` or `quick`.
    pub mode: String,
    /// Wall-clock time of the whole run.
    pub duration_ms: u64,
    /// True if every section passed.
    pub passed: bool,
    /// Binaries and machine the scenarios ran with.
    pub environment: serde_json::Value,
    /// One per property.
    pub sections: Vec<Section>,
}

impl Report {
    /// The sections that did not pass.
    pub fn failures(&self) -> Vec<&Section> {
        self.sections.iter().filter(|s| !s.passed()).collect()
    }

    /// The verdict table (Markdown).
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("| # | property | verdict | observed | time |\n|---|---|---|---|---|\n");
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | **{}** | {} | {} |",
                i + 1,
                s.title,
                s.verdict.label(),
                cell(&s.summary),
                seconds(s.duration_ms)
            );
        }
        out
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# e2ee-chat security evidence\n");
        let _ = writeln!(
            out,
            "Generated by `make evidence` (`e2ee-evidence`, {} run) on {}, in {}. Every scenario \
             starts real `e2ee-relay` and `e2ee-agent` processes on loopback, in temporary \
             directories, drives the agents through their JSON event interface and checks what \
             they report. The run fails (non-zero exit) if any verdict is FAIL.\n",
            self.mode,
            utc_time(self.started_unix_ms),
            seconds(self.duration_ms)
        );
        let _ = writeln!(
            out,
            "**Overall: {}** ({} of {} properties hold)\n",
            if self.passed { "PASS" } else { "FAIL" },
            self.sections.iter().filter(|s| s.passed()).count(),
            self.sections.len()
        );
        out.push_str(&self.table());
        if let Some(env) = self.environment.as_object() {
            out.push_str("\nEnvironment:");
            for (k, v) in env {
                let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                let _ = write!(out, " {k} `{v}`;");
            }
            out.push('\n');
        }
        for (i, s) in self.sections.iter().enumerate() {
            let _ = writeln!(out, "\n## {}. {}\n", i + 1, s.title);
            let _ = writeln!(out, "**Property.** {}\n", s.property);
            if !s.done.is_empty() {
                out.push_str("**What was done.**\n\n");
                for step in &s.done {
                    let _ = writeln!(out, "- {step}");
                }
                out.push('\n');
            }
            if !s.observed.is_empty() {
                out.push_str("**What was observed.**\n\n");
                for seen in &s.observed {
                    let _ = writeln!(out, "- {seen}");
                }
                out.push('\n');
            }
            if !s.checks.is_empty() {
                out.push_str("| check | expected | observed | result |\n|---|---|---|---|\n");
                for c in &s.checks {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} |",
                        cell(&c.what),
                        cell(&c.expected),
                        cell(&c.observed),
                        if c.pass { "pass" } else { "**FAIL**" }
                    );
                }
                out.push('\n');
            }
            if let Some(err) = &s.error {
                let _ = writeln!(out, "**The scenario stopped:**\n\n```text\n{err}\n```\n");
            }
            let _ = writeln!(
                out,
                "**Verdict: {}** ({})",
                s.verdict.label(),
                seconds(s.duration_ms)
            );
        }
        out
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// A table cell: one line, no pipes.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `1.2 s`.
pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `2024-05-01 12:00:00 UTC` from ms since the Unix epoch.
pub fn utc_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn a_section_passes_only_with_checks_that_all_pass() {
        let mut empty = Section::new("x", "X", "p");
        empty.finish(Duration::ZERO);
        assert!(!empty.passed());
        let mut good = Section::new("x", "X", "p");
        good.check("a", "1", "1", true);
        good.finish(Duration::ZERO);
        assert!(good.passed());
        let mut bad = Section::new("x", "X", "p");
        bad.check("a", "1", "1", true);
        bad.check("b", "1", "2", false);
        bad.finish(Duration::ZERO);
        assert!(!bad.passed());
        assert_eq!(bad.summary, "failed: b");
    }
}
