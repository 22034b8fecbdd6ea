//! CPU time and resident memory of a process, from `/proc` (Linux).

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times (`CLK_TCK`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When it was taken.
    pub at: Instant,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    /// Reads `/proc/<pid>`.
    pub fn of(pid: u32) -> Option<Self> {
        Self::read(&format!("/proc/{pid}"))
    }

    /// Reads `/proc/self`.
    pub fn of_self() -> Option<Self> {
        Self::read("/proc/self")
    }

    fn read(dir: &str) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14, 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Some(Self {
            at: Instant::now(),
            cpu_ticks: utime + stime,
            rss_kib,
        })
    }

    /// CPU use between two readings, in percent of one core.
    pub fn cpu_percent(a: &Self, b: &Self) -> f64 {
        let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / TICKS_PER_SEC / secs * 100.0
    }
}

/// Whole-machine CPU counters from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
pub struct MachineSample {
    /// Ticks spent busy (user, nice, system, irq, softirq, steal), all cores.
    pub busy: u64,
    /// All ticks, all cores.
    pub total: u64,
}

impl MachineSample {
    /// Reads `/proc/stat`.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
        let total = busy + get(3) + get(4);
        Some(Self { busy, total })
    }

    /// Busy CPU between two readings, in percent of one core (200% = two cores busy).
    pub fn busy_percent(a: &Self, b: &Self, cores: usize) -> f64 {
        let total = b.total.saturating_sub(a.total);
        if total == 0 {
            return 0.0;
        }
        b.busy.saturating_sub(a.busy) as f64 / total as f64 * 100.0 * cores as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let sample = ProcSample::of_self().expect("/proc/self");
        assert!(sample.rss_kib > 0);
    }
}
