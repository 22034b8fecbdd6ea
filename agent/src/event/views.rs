//! The answers to `/history` and `/status` ([`HistoryLine`], [`LinkStatus`]) and how they
//! read for people; times are shown in UTC.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::sanitize;

/// One message of a conversation, as `/history` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// True for a message we sent, false for one we received.
    pub sent: bool,
    /// The text.
    pub text: String,
    /// When it was written (the sender's timestamp), ms since the Unix epoch.
    pub at_ms: u64,
    /// The end-to-end message id, hex.
    pub msg_id: String,
}

/// The relay link as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The relay address in use: connected to, or (when not connected) the last one
    /// tried.
    pub relay: String,
    /// Every relay address configured, in the order they are tried, when there are
    /// several (absent for one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// How the relay is trusted: `pinned sha256:…`, `pin on first use`,
    /// `certificate authorities` or `plain TCP (no TLS)`.
    pub trust: String,
    /// True while a connection is up.
    pub connected: bool,
    /// Since when it is connected, or not connected, ms since the Unix epoch.
    pub since_ms: u64,
    /// Why the last connection ended or could not be made (when not connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Messages written but not yet stored at the relay.
    pub outbox: usize,
    /// Messages the relay held for us when this connection (or the last one) logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at_login: Option<u32>,
}

/// `ms` since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC, proleptic Gregorian).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): H. Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The lines of `/history` with `peer`.
pub fn history_human(peer: &str, messages: &[HistoryLine]) -> String {
    if messages.is_empty() {
        return format!("* no messages with {peer} in the history");
    }
    let mut out = format!("* the last {} messages with {peer} (UTC):", messages.len());
    for line in messages {
        let who = if line.sent { "you" } else { peer };
        let _ = write!(out, "\n  {}  [{who}] {}", utc(line.at_ms), sanitize(&line.text));
    }
    out
}

/// The lines of `/status`.
pub fn status_human(status: &LinkStatus) -> String {
    let mut out = format!("* relay {} ({})", status.relay, status.trust);
    if !status.relays.is_empty() {
        let _ = write!(
            out,
            "\n* relays: {} (the next one is tried when one cannot be reached)",
            status.relays.join(", ")
        );
    }
    if status.connected {
        let _ = write!(out, "\n* connected since {} UTC", utc(status.since_ms));
    } else {
        let why = status
            .reason
            .as_ref()
            .map_or(String::new(), |r| format!(": {}", sanitize(r)));
        let _ = write!(out, "\n* not connected since {} UTC{why}", utc(status.since_ms));
    }
    let _ = write!(out, "\n* outbox: {} not yet stored at the relay", status.outbox);
    if let Some(queued) = status.queued_at_login {
        let _ = write!(out, "\n* at login the relay held {queued} messages for us");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_are_right_across_leap_years_and_centuries() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_083_199_000), "2026-11-30 23:59:59");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01 00:00:00");
    }

    #[test]
    fn history_names_who_wrote_and_escapes_the_text() {
        let lines = [
            HistoryLine {
                sent: false,
                text: "hi\u{1b}[2J".into(),
                at_ms: 0,
                msg_id: "00".into(),
            },
            HistoryLine {
                sent: true,
                text: "hello".into(),
                at_ms: 1000,
                msg_id: "01".into(),
            },
        ];
        assert_eq!(
            history_human("bob", &lines),
            "* the last 2 messages with bob (UTC):\n  1970-01-01 00:00:00  [bob] hi\\u{1b}[2J\n  \
             1970-01-01 00:00:01  [you] hello"
        );
        assert_eq!(history_human("bob", &[]), "* no messages with bob in the history");
    }
}
