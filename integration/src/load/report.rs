//! The result of a run (written as JSON) and its readable forms: a summary and the
//! comparison table of `e2ee-load bench`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::churn::ChurnSpec;
use super::stats::Percentiles;
use super::target::Kind;

/// One second of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Seconds after the epoch (end of the second).
    pub t_s: f64,
    /// Messages sent in that second.
    pub sent: u64,
    /// Messages delivered in that second.
    pub delivered: u64,
    /// Median latency of the messages delivered in that second (µs).
    pub p50_us: u64,
    /// 99th percentile (µs).
    pub p99_us: u64,
    /// Largest (µs).
    pub max_us: u64,
    /// Server RSS at the end of the second (KiB; 0 if unknown).
    pub server_rss_kib: u64,
}

/// Churn results.
#[derive(Debug, Clone, Serialize)]
pub struct Availability {
    /// The churn asked for.
    pub churn: ChurnSpec,
    /// Connections dropped on purpose.
    pub drops: u64,
    /// Reconnections that succeeded.
    pub reconnects_ok: u64,
    /// Reconnection attempts that failed (and were retried).
    pub reconnects_failed: u64,
    /// Time from a drop until the client was authenticated or subscribed again.
    pub recover_us: Percentiles,
    /// Delivered / sent.
    pub delivered_share_of_sent: f64,
    /// Delivered / acknowledged (the relay's promise); absent for NATS (no acks).
    pub delivered_share_of_acked: Option<f64>,
}

/// CPU and memory of the server process.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    /// Its pid.
    pub pid: u32,
    /// CPU over the measured window, percent of one core.
    pub cpu_percent: f64,
    /// RSS at the end of sending (KiB).
    pub rss_kib_end: u64,
    /// Largest RSS seen (KiB).
    pub rss_kib_max: u64,
}

/// CPU of one of the target's other processes (a further relay, a Redis server).
#[derive(Debug, Clone, Serialize)]
pub struct CompanionStats {
    /// What it is.
    pub label: String,
    /// Its pid.
    pub pid: u32,
    /// CPU over the measured window, percent of one core.
    pub cpu_percent: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Target label.
    pub target: String,
    /// Target protocol.
    pub kind: Kind,
    /// "open" (fixed rate) or "closed (--max)".
    pub mode: String,
    /// Pairs.
    pub pairs: usize,
    /// Client connections.
    pub connections: usize,
    /// Payload size (plaintext size under --e2e).
    pub size: usize,
    /// Real crypto.
    pub e2e: bool,
    /// Closed loop window per pair.
    pub window: Option<usize>,
    /// Sending time.
    pub duration_s: f64,
    /// Leading part excluded from rates and latency.
    pub warmup_s: f64,
    /// Time to connect and set up every pair.
    pub setup_s: f64,
    /// Time spent waiting for outstanding messages after sending.
    pub drain_s: f64,
    /// Offered total rate (open loop).
    pub offered_rate: Option<f64>,
    /// Sent per second over the measured window.
    pub sent_rate: f64,
    /// Delivered per second over the measured window.
    pub delivered_rate: f64,
    /// Distinct messages sent.
    pub sent: u64,
    /// Distinct messages acknowledged (None: the target has no acks).
    pub acked: Option<u64>,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Duplicate deliveries (redelivery after reconnects).
    pub duplicates: u64,
    /// Messages sent again after a reconnect.
    pub retransmitted: u64,
    /// Messages refused by the target.
    pub refused: u64,
    /// Sent but never delivered.
    pub undelivered: u64,
    /// Acknowledged but never delivered (must be 0 for the relay).
    pub acked_not_delivered: Option<u64>,
    /// Whether every acknowledged message was delivered (relay only: the one target
    /// whose acknowledgement promises delivery).
    pub all_acked_delivered: Option<bool>,
    /// Open loop: how late the generator itself sent messages after their intended time
    /// (timer granularity and scheduling; part of the latency above).
    pub send_lag_us: Percentiles,
    /// End-to-end latency from the intended send time (µs), measured window only.
    pub latency_us: Percentiles,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Churn results.
    pub availability: Option<Availability>,
    /// Server CPU and memory.
    pub server: Option<ServerStats>,
    /// The load generator's own CPU (percent of one core).
    pub loadgen_cpu_percent: Option<f64>,
    /// The whole machine's busy CPU over the measured window (percent of one core).
    pub machine_busy_percent: Option<f64>,
    /// The target's other processes (further relays, Redis under relays).
    pub companions: Vec<CompanionStats>,
    /// CPU used by other processes than the target's and the load generator over the
    /// window: a noisy neighbour makes a run slower and says so here.
    pub other_cpu_percent: Option<f64>,
    /// Per-second figures.
    pub timeline: Vec<TimelinePoint>,
    /// (percentile, latency µs) points of the whole-run histogram.
    pub histogram: Vec<(f64, u64)>,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl LoadReport {
    /// A readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "target {}  mode {}  pairs {}  size {} B{}  duration {:.0}s (warm-up {:.0}s)",
            self.target,
            self.mode,
            self.pairs,
            self.size,
            if self.e2e { "  e2e" } else { "" },
            self.duration_s,
            self.warmup_s
        );
        let offered = self
            .offered_rate
            .map_or("max".to_owned(), |r| format!("{r:.0}/s"));
        let _ = writeln!(
            s,
            "rate     offered {offered}  sent {:.0}/s  delivered {:.0}/s",
            self.sent_rate, self.delivered_rate
        );
        let _ = writeln!(
            s,
            "latency  p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={}, from intended send time)",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.count
        );
        let acked = self.acked.map_or("n/a".to_owned(), |a| a.to_string());
        let _ = writeln!(
            s,
            "messages sent {}  acked {acked}  delivered {}  undelivered {}  duplicates {}  retransmitted {}  refused {}",
            self.sent, self.delivered, self.undelivered, self.duplicates, self.retransmitted, self.refused
        );
        match self.all_acked_delivered {
            Some(true) => s.push_str("check    every acknowledged message was delivered\n"),
            Some(false) => {
                let _ = writeln!(
                    s,
                    "check    FAILED: {} acknowledged messages were not delivered",
                    self.acked_not_delivered.unwrap_or(0)
                );
            }
            None => match self.acked_not_delivered {
                Some(lost) => {
                    let _ = writeln!(
                        s,
                        "check    no delivery promise (a PUBLISH reply counts subscribers): {lost} published messages were not delivered"
                    );
                }
                None => {
                    s.push_str("check    the target does not acknowledge messages (no delivery promise)\n")
                }
            },
        }
        if let Some(a) = &self.availability {
            let _ = writeln!(
                s,
                "churn    {:.0}% every {:?}: drops {}  reconnects ok {} failed {}  recover p50 {} ms max {} ms  delivered/sent {:.4}{}",
                a.churn.share * 100.0,
                a.churn.every,
                a.drops,
                a.reconnects_ok,
                a.reconnects_failed,
                ms(a.recover_us.p50),
                ms(a.recover_us.max),
                a.delivered_share_of_sent,
                a.delivered_share_of_acked
                    .map_or(String::new(), |x| format!("  delivered/acked {x:.4}"))
            );
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "errors   {}", list.join(" "));
        }
        if let Some(sv) = &self.server {
            let per_msg = if self.delivered_rate > 0.0 {
                sv.cpu_percent / 100.0 * 1e6 / self.delivered_rate
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "server   pid {}  cpu {:.0}% ({per_msg:.1} µs cpu per delivered message)  rss {} MiB (max {} MiB)",
                sv.pid,
                sv.cpu_percent,
                sv.rss_kib_end / 1024,
                sv.rss_kib_max / 1024
            );
        }
        for c in &self.companions {
            let per_msg = if self.delivered_rate > 0.0 {
                c.cpu_percent / 100.0 * 1e6 / self.delivered_rate
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "  + {} pid {}  cpu {:.0}% ({per_msg:.1} µs cpu per delivered message)",
                c.label, c.pid, c.cpu_percent
            );
        }
        if let Some(cpu) = self.loadgen_cpu_percent {
            let lag = &self.send_lag_us;
            let _ = write!(s, "loadgen  cpu {cpu:.0}%");
            if lag.count > 0 {
                let _ = write!(
                    s,
                    "  send lag p50 {} ms p99 {} ms (in the latency above)",
                    ms(lag.p50),
                    ms(lag.p99)
                );
            }
            if let Some(other) = self.other_cpu_percent {
                let _ = write!(s, "  other processes {other:.0}% cpu");
            }
            s.push('\n');
        }
        s
    }
}

impl LoadReport {
    /// CPU of all the target's processes (server and companions) per delivered message,
    /// in µs.
    pub fn target_cpu_us_per_message(&self) -> Option<f64> {
        let server = self.server.as_ref()?.cpu_percent;
        let all = server + self.companions.iter().map(|c| c.cpu_percent).sum::<f64>();
        (self.delivered_rate > 0.0).then(|| all / 100.0 * 1e6 / self.delivered_rate)
    }
}

/// A Markdown table comparing runs.
pub fn table(rows: &[(String, &LoadReport)]) -> String {
    let mut s = String::from(
        "| run | target | mode | offered/s | delivered/s | p50 ms | p99 ms | p99.9 ms | max ms | acked lost | undelivered | server CPU | target CPU µs/msg | loadgen CPU | other CPU | server RSS MiB |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, r) in rows {
        let l = &r.latency_us;
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            if r.offered_rate.is_some() { "open" } else { "max" },
            r.offered_rate.map_or("-".to_owned(), |x| format!("{x:.0}")),
            r.delivered_rate,
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            r.acked_not_delivered.map_or("n/a".to_owned(), |x| x.to_string()),
            r.undelivered,
            r.server
                .as_ref()
                .map_or("-".to_owned(), |x| format!("{:.0}%", x.cpu_percent)),
            r.target_cpu_us_per_message()
                .map_or("-".to_owned(), |x| format!("{x:.1}")),
            r.loadgen_cpu_percent
                .map_or("-".to_owned(), |x| format!("{x:.0}%")),
            r.other_cpu_percent.map_or("-".to_owned(), |x| format!("{x:.0}%")),
            r.server
                .as_ref()
                .map_or("-".to_owned(), |x| (x.rss_kib_max / 1024).to_string()),
        );
    }
    s
}
