//! The report of `e2ee-load group`: how the group was set up, the figures of the run,
//! as a table for people and as JSON.

use super::*;

/// How the group was set up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupSetup {
    /// Commits that made the group (1 unless the Welcome had to be split).
    pub commits: u64,
    /// Members added per commit.
    pub batch: usize,
    /// The largest Welcome uploaded (bytes of the `MLSMessage`).
    pub welcome_bytes: usize,
    /// The largest commit uploaded.
    pub commit_bytes: usize,
    /// Under `--mls`, the size of a Welcome adding every other member at once when it
    /// did not fit `MAX_MLS_MESSAGE_LEN` (then members were added in batches).
    pub welcome_all_at_once_bytes: Option<usize>,
    /// The largest Welcome allowed (`MAX_MLS_MESSAGE_LEN` unless a test lowers it).
    pub max_welcome: usize,
    /// Welcome and commit copies delivered to members (all acknowledged).
    pub setup_copies: u64,
    /// Time to connect, create the group and have every member in it.
    pub setup_s: f64,
}

/// The result of a group run (JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Target label.
    pub target: String,
    /// "headers" (MLS-shaped, no crypto) or "mls".
    pub mode: String,
    /// Group members.
    pub members: usize,
    /// Application payload bytes per upload.
    pub size: usize,
    /// Offered uploads per second.
    pub offered_rate: f64,
    /// Upload time.
    pub duration_s: f64,
    /// Leading time excluded from rates and latency.
    pub warmup_s: f64,
    /// Setup of the group.
    pub setup: GroupSetup,
    /// Uploads written (`GroupSend`).
    pub uploads_sent: u64,
    /// Uploads answered `SentAck`.
    pub uploads_acked: u64,
    /// Uploads answered `GroupEpoch` (none expected: nobody commits during the run).
    pub uploads_epoch_refused: u64,
    /// `SentAck`s per second inside the measured window (after warm-up, until uploading
    /// stopped).
    pub upload_rate: f64,
    /// Copies expected: (N − 1) per acknowledged upload.
    pub copies_expected: u64,
    /// Distinct copies delivered.
    pub copies_delivered: u64,
    /// Copies received per second inside the measured window.
    pub copy_rate: f64,
    /// Copies of acknowledged uploads that never reached their member.
    pub missing: u64,
    /// Copies delivered more than once (same msg_id again).
    pub duplicates: u64,
    /// Copies whose msg_id is not `fan_out_id(upload msg_id, recipient)`, or whose
    /// content or sender does not match.
    pub mismatched: u64,
    /// Copies of uploads that were never acknowledged.
    pub delivered_unacked: u64,
    /// `Deliver` frames received by members in the run (copies and duplicates).
    pub delivers_received: u64,
    /// `DeliveryAck`s the members sent for them.
    pub deliveries_acked: u64,
    /// Bytes of the `MLSMessage`s of acknowledged uploads.
    pub bytes_uploaded: u64,
    /// Bytes of the `Deliver` payloads of the distinct copies.
    pub bytes_delivered: u64,
    /// bytes_delivered / bytes_uploaded (≈ N − 1).
    pub fan_out_factor: f64,
    /// From the upload's intended time to the member's receipt (after decryption under
    /// `--mls`), µs, uploads after warm-up only.
    pub latency_us: Percentiles,
    /// Time from the end of uploading until every copy was in (or the drain gave up).
    pub drain_s: f64,
    /// Relay CPU over the measured window, percent of one core (when its pid is known).
    pub relay_cpu_percent: Option<f64>,
    /// Load generator CPU over the measured window, percent of one core.
    pub generator_cpu_percent: Option<f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Every copy of every acknowledged upload was delivered exactly once, to the right
    /// member under the right id, and acknowledged.
    pub all_delivered_once: bool,
}

pub(super) fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl GroupReport {
    /// A short human table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "group fan-out  target {}  mode {}  members {}  size {} B  duration {:.0}s (warm-up {:.0}s)",
            self.target, self.mode, self.members, self.size, self.duration_s, self.warmup_s
        );
        let st = &self.setup;
        let split = st.welcome_all_at_once_bytes.map_or(String::new(), |b| {
            format!("  (one Welcome for all: {b} B > {} B: split)", st.max_welcome)
        });
        let _ = writeln!(
            s,
            "setup          {} commit(s) of {} members  largest Welcome {} B  commit {} B  {:.2}s{split}",
            st.commits, st.batch, st.welcome_bytes, st.commit_bytes, st.setup_s
        );
        let _ = writeln!(
            s,
            "rate           offered {:.0}/s  uploads acked {:.0}/s  copies delivered {:.0}/s",
            self.offered_rate, self.upload_rate, self.copy_rate
        );
        let _ = writeln!(
            s,
            "latency        p50 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={}, upload → member's receipt{})",
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.count,
            if self.mode == "mls" { " and decryption" } else { "" }
        );
        let _ = writeln!(
            s,
            "uploads        sent {}  acked {}  GroupEpoch {}",
            self.uploads_sent, self.uploads_acked, self.uploads_epoch_refused
        );
        let _ = writeln!(
            s,
            "copies         expected {}  delivered {}  missing {}  duplicates {}  mismatched {}  of unacked uploads {}",
            self.copies_expected,
            self.copies_delivered,
            self.missing,
            self.duplicates,
            self.mismatched,
            self.delivered_unacked
        );
        let _ = writeln!(
            s,
            "acks           Deliver received {}  DeliveryAck sent {}",
            self.delivers_received, self.deliveries_acked
        );
        let _ = writeln!(
            s,
            "bytes          uploaded {}  delivered {}  (× {:.1})",
            self.bytes_uploaded, self.bytes_delivered, self.fan_out_factor
        );
        let cpu = |c: Option<f64>| c.map_or("n/a".to_owned(), |c| format!("{c:.0}%"));
        let _ = writeln!(
            s,
            "cpu            relay {}  generator {}  drain {:.2}s",
            cpu(self.relay_cpu_percent),
            cpu(self.generator_cpu_percent),
            self.drain_s
        );
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors         {:?}", self.errors);
        }
        s.push_str(if self.all_delivered_once {
            "check          every copy of every acknowledged upload delivered once and acknowledged\n"
        } else {
            "check          FAILED: copies missing, duplicated, mismatched or unacknowledged\n"
        });
        s
    }
}

pub(super) type CpuPair = (Option<ProcSample>, Option<ProcSample>);

pub(super) fn build_report(
    cfg: &GroupConfig,
    endpoint: &Endpoint,
    setup: GroupSetup,
    finished: &[(Member, Tally)],
    drain_s: f64,
    (cpu_start, cpu_end): (CpuPair, CpuPair),
) -> GroupReport {
    let n = finished.len();
    let mut latency = histogram();
    let mut errors = BTreeMap::new();
    let (mut sent, mut acked, mut refused, mut acked_in_window) = (0u64, 0u64, 0u64, 0u64);
    let (mut bytes_up, mut bytes_down) = (0u64, 0u64);
    let (mut copies, mut copies_in_window, mut duplicates, mut mismatched) = (0u64, 0u64, 0u64, 0u64);
    let (mut delivers, mut acks) = (0u64, 0u64);
    let mut acked_uploads: HashMap<u64, usize> = HashMap::new();
    for (member, tally) in finished {
        sent += tally.sent.len() as u64;
        acked += tally.acked.len() as u64;
        refused += tally.epoch_refused;
        acked_in_window += tally.acked_in_window;
        for seq in &tally.acked {
            bytes_up += tally.sent.get(seq).copied().unwrap_or(0) as u64;
            acked_uploads.insert(*seq, member.index);
        }
        copies += tally.copies.len() as u64;
        copies_in_window += tally.copies_in_window;
        duplicates += tally.duplicates;
        mismatched += tally.mismatched;
        delivers += tally.delivers;
        acks += tally.acks;
        bytes_down += tally.bytes_delivered;
        let _ = latency.add(&tally.latency);
        for (kind, count) in &tally.errors {
            *errors.entry(kind.clone()).or_default() += count;
        }
    }
    // Every acknowledged upload, every member but its sender.
    let mut missing = 0u64;
    for (seq, sender) in &acked_uploads {
        for (member, tally) in finished {
            if member.index != *sender && !tally.copies.contains(seq) {
                missing += 1;
            }
        }
    }
    let delivered_unacked = finished
        .iter()
        .map(|(_, t)| t.copies.iter().filter(|s| !acked_uploads.contains_key(s)).count() as u64)
        .sum();
    let window = cfg.duration.saturating_sub(cfg.warmup).as_secs_f64().max(1e-9);
    let cpu = |a: &Option<ProcSample>, b: &Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => Some(ProcSample::cpu_percent(a, b)),
        _ => None,
    };
    let copies_expected = acked * (n as u64 - 1);
    GroupReport {
        target: endpoint.label.clone(),
        mode: if cfg.mls { "mls" } else { "headers" }.into(),
        members: n,
        size: cfg.size,
        offered_rate: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        setup,
        uploads_sent: sent,
        uploads_acked: acked,
        uploads_epoch_refused: refused,
        upload_rate: acked_in_window as f64 / window,
        copies_expected,
        copies_delivered: copies,
        copy_rate: copies_in_window as f64 / window,
        missing,
        duplicates,
        mismatched,
        delivered_unacked,
        delivers_received: delivers,
        deliveries_acked: acks,
        bytes_uploaded: bytes_up,
        bytes_delivered: bytes_down,
        fan_out_factor: if bytes_up == 0 {
            0.0
        } else {
            bytes_down as f64 / bytes_up as f64
        },
        latency_us: Percentiles::of(&latency),
        drain_s,
        relay_cpu_percent: cpu(&cpu_start.0, &cpu_end.0),
        generator_cpu_percent: cpu(&cpu_start.1, &cpu_end.1),
        all_delivered_once: sent > 0
            && acked == sent
            && missing == 0
            && duplicates == 0
            && mismatched == 0
            && copies == copies_expected
            && acks == delivers
            && errors.is_empty(),
        errors,
    }
}
