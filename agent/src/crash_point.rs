//! Crash points for tests: named places between the statements of receiving, sending and
//! prekey upkeep where a debug build of the agent can be made to abort, as `kill -9`
//! would stop it, so that tests can check what the state guarantees after each step.
//!
//! `E2EE_CRASH_AT=<point>[:<n>]` makes the process abort (`std::process::abort`, no
//! destructor, no flush: SIGABRT) the `n`th time (default 1) `<point>` is reached. Just
//! before aborting it writes one line to stderr: `crash point <point>:<n> reached`.
//! The variable is read only in debug builds (`cfg(debug_assertions)`, as the
//! integration tests build the binaries): in a release build [`reached`] is an empty
//! inline function and the variable means nothing.
//!
//! The points, in the order a message passes them ([`POINTS`]):
//!
//! | point | where |
//! |---|---|
//! | `receive.before_commit` | a delivered message decrypted, in memory only: nothing committed |
//! | `receive.after_commit` | the session, the received ids, the used one-time prekey, the message to show committed; no event printed, no `DeliveryAck` |
//! | `receive.after_show` | the text recorded as shown and its `message` event printed (its receipt encrypted, not sent); no `DeliveryAck` |
//! | `send.before_commit` | a message encrypted in memory; nothing committed, nothing sent |
//! | `send.after_commit` | the advanced sending chain and the outbox entry committed; the `Send` frame not handed to the relay link |
//! | `send.before_sent_ack` | the relay's `SentAck` arrived; the outbox entry not yet removed, no `sent` event |
//! | `prekeys.before_commit` | new prekeys (replenish, rotation, age-out, publication mark) computed; nothing committed |
//! | `prekeys.after_replenish` | fresh one-time prekeys committed; not published |
//! | `prekeys.after_rotation` | a new signed prekey committed; not published |
//!
//! Receive points count every decrypted message (texts, receipts); send points count
//! every encrypted message (texts and the receipts sent for received texts).

/// Every crash point, in the order of the table above.
pub const POINTS: &[&str] = &[
    "receive.before_commit",
    "receive.after_commit",
    "receive.after_show",
    "send.before_commit",
    "send.after_commit",
    "send.before_sent_ack",
    "prekeys.before_commit",
    "prekeys.after_replenish",
    "prekeys.after_rotation",
];

/// The environment variable that selects a crash point (debug builds only).
pub const ENV: &str = "E2EE_CRASH_AT";

/// Marks crash point `point` (one of [`POINTS`]): aborts the process if `E2EE_CRASH_AT`
/// selects it and this is the selected time it is reached.
#[cfg(debug_assertions)]
pub fn reached(point: &'static str) {
    debug_assert!(POINTS.contains(&point), "unknown crash point {point}");
    armed::reached(point);
}

/// Marks crash point `point`: nothing in a release build.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn reached(_point: &'static str) {}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The selected point and on which time it aborts.
    struct Selected {
        point: String,
        at: u64,
        count: AtomicU64,
    }

    fn selected() -> Option<&'static Selected> {
        static SELECTED: OnceLock<Option<Selected>> = OnceLock::new();
        SELECTED
            .get_or_init(|| std::env::var(super::ENV).ok().and_then(|v| parse(&v)))
            .as_ref()
    }

    fn parse(value: &str) -> Option<Selected> {
        let (point, at) = match value.trim().split_once(':') {
            Some((point, n)) => (point, n.parse().ok()?),
            None => (value.trim(), 1),
        };
        Some(Selected {
            point: point.to_owned(),
            at,
            count: AtomicU64::new(0),
        })
    }

    pub(super) fn reached(point: &str) {
        let Some(selected) = selected() else {
            return;
        };
        if selected.point != point {
            return;
        }
        let n = selected.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == selected.at {
            eprintln!("crash point {point}:{n} reached");
            std::process::abort();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_a_point_with_and_without_a_count() {
            let s = parse("receive.after_commit:3").expect("parses");
            assert_eq!((s.point.as_str(), s.at), ("receive.after_commit", 3));
            let s = parse("send.after_commit").expect("parses");
            assert_eq!((s.point.as_str(), s.at), ("send.after_commit", 1));
            assert!(parse("send.after_commit:x").is_none());
        }
    }
}
