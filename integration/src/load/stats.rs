//! What a load run counts while it runs: message counters, error kinds, latency
//! histograms (the whole run and the current second), reconnect times, and a ledger of
//! every message's fate so that "every acknowledged message was delivered" is checked
//! message by message, not inferred from totals.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded (µs); larger values are clamped.
const MAX_LATENCY_US: u64 = 600_000_000;

/// A message was sent at least once.
const SENT: u8 = 1;
/// The target acknowledged it.
const ACKED: u8 = 2;
/// It reached its recipient.
const DELIVERED: u8 = 4;
/// The target refused it.
const REFUSED: u8 = 8;

/// Run-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Distinct messages sent.
    pub sent: AtomicU64,
    /// Messages sent again after a reconnect.
    pub retransmitted: AtomicU64,
    /// Distinct messages acknowledged by the target.
    pub acked: AtomicU64,
    /// Distinct messages delivered.
    pub delivered: AtomicU64,
    /// Deliveries of a message already delivered.
    pub duplicates: AtomicU64,
    /// Messages refused by the target.
    pub refused: AtomicU64,
    /// Connections dropped on purpose (churn).
    pub drops: AtomicU64,
    /// Reconnections that authenticated / subscribed again.
    pub reconnects_ok: AtomicU64,
    /// Reconnection attempts that failed (each is retried).
    pub reconnects_failed: AtomicU64,
}

impl Counters {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The fate of each message of one pair, indexed by sequence number.
#[derive(Debug, Default)]
pub struct Ledger {
    flags: Vec<u8>,
}

impl Ledger {
    fn flag(&mut self, seq: u64, bit: u8) -> bool {
        let Ok(index) = usize::try_from(seq) else {
            return false;
        };
        if index >= self.flags.len() {
            self.flags.resize(index + 1, 0);
        }
        let first = self.flags[index] & bit == 0;
        self.flags[index] |= bit;
        first
    }

    /// Marks sent; true the first time.
    pub fn sent(&mut self, seq: u64) -> bool {
        self.flag(seq, SENT)
    }

    /// Marks acknowledged; true the first time.
    pub fn acked(&mut self, seq: u64) -> bool {
        self.flag(seq, ACKED)
    }

    /// Marks delivered; true the first time (false: a duplicate).
    pub fn delivered(&mut self, seq: u64) -> bool {
        self.flag(seq, DELIVERED)
    }

    /// Marks refused.
    pub fn refused(&mut self, seq: u64) {
        self.flag(seq, REFUSED);
    }

    /// (sent, acked and not delivered, sent and not delivered).
    pub fn audit(&self) -> (u64, u64, u64) {
        let mut out = (0, 0, 0);
        for &f in &self.flags {
            if f & SENT != 0 {
                out.0 += 1;
                if f & DELIVERED == 0 {
                    out.2 += 1;
                    if f & ACKED != 0 {
                        out.1 += 1;
                    }
                }
            }
        }
        out
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// A new latency histogram (1 µs .. 10 min, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Latency histograms and error kinds.
pub struct Recorder {
    /// Every measured latency (after warm-up).
    pub total: Histogram<u64>,
    /// Latencies since the last timeline tick.
    pub window: Histogram<u64>,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Time to reconnect after a drop (µs).
    pub recover: Histogram<u64>,
    /// How late the generator sent each open-loop message after its intended time (µs):
    /// its own timer and scheduling delay, already inside the end-to-end latency.
    pub send_lag: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            total: histogram(),
            window: histogram(),
            errors: BTreeMap::new(),
            recover: histogram(),
            send_lag: histogram(),
        }
    }
}

impl Recorder {
    /// Records latencies; `measured` says whether they count in the run's total.
    pub fn record(&mut self, latencies_us: &[u64], measured: bool) {
        for &us in latencies_us {
            let us = us.clamp(1, MAX_LATENCY_US);
            let _ = self.window.record(us);
            if measured {
                let _ = self.total.record(us);
            }
        }
    }

    /// Counts an error.
    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// The shared recorder.
pub type SharedRecorder = Mutex<Recorder>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_finds_acked_messages_that_were_not_delivered() {
        let mut ledger = Ledger::default();
        for seq in 0..4 {
            assert!(ledger.sent(seq));
        }
        assert!(!ledger.sent(0), "second send is a retransmission");
        ledger.acked(0);
        ledger.acked(1);
        assert!(ledger.delivered(0));
        assert!(!ledger.delivered(0), "duplicate");
        ledger.delivered(2);
        assert_eq!(ledger.audit(), (4, 1, 2));
    }
}
