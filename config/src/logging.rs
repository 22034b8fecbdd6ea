//! The root slog logger: a terminal or JSON drain behind an async channel, filtered
//! by level.
//!
//! Records are formatted on a background thread fed by a bounded channel; when the
//! channel is full, records are dropped and a count of the dropped ones is logged once
//! there is room again, so logging never blocks the caller. Keep the [`LoggerGuard`]
//! alive until the end of `main`: dropping it flushes what is queued.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use slog::{o, Drain, Logger};
use slog_async::{Async, AsyncGuard, OverflowStrategy};

/// Records that may wait for the logging thread before new ones are dropped.
const LOG_CHANNEL_CAPACITY: usize = 4096;

/// Name of the logging thread.
const LOG_THREAD_NAME: &str = "e2ee-log";

/// How log records are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// One human-readable line per record: timestamp, level, message, key-values.
    #[default]
    Term,
    /// One JSON object per line with `ts`, `level`, `msg` and the key-values.
    Json,
}

impl LogFormat {
    /// The name used in flags, files and the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Term => "term",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = ParseLogOptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "term" => Ok(Self::Term),
            "json" => Ok(Self::Json),
            _ => Err(ParseLogOptionError {
                what: "log format",
                value: s.to_owned(),
                expected: "term, json",
            }),
        }
    }
}

/// The least severe level that is logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Peer misbehaviour and worse.
    #[value(alias = "warning")]
    Warn,
    /// Lifecycle events and worse.
    #[default]
    Info,
    /// Per-message events and worse.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The name used in flags, files and the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }

    /// The matching slog level.
    pub fn to_slog(self) -> slog::Level {
        match self {
            Self::Error => slog::Level::Error,
            Self::Warn => slog::Level::Warning,
            Self::Info => slog::Level::Info,
            Self::Debug => slog::Level::Debug,
            Self::Trace => slog::Level::Trace,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = ParseLogOptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" => Ok(Self::Debug),
            "trace" => Ok(Self::Trace),
            _ => Err(ParseLogOptionError {
                what: "log level",
                value: s.to_owned(),
                expected: "error, warn, info, debug, trace",
            }),
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = ParseLogOptionError;

    fn try_from(s: String) -> Result<Self, ParseLogOptionError> {
        s.parse()
    }
}

impl TryFrom<String> for LogLevel {
    type Error = ParseLogOptionError;

    fn try_from(s: String) -> Result<Self, ParseLogOptionError> {
        s.parse()
    }
}

/// A string that names no [`LogFormat`] or [`LogLevel`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`, expected one of: {expected}")]
pub struct ParseLogOptionError {
    /// Which option was being parsed (`log format`, `log level`).
    pub what: &'static str,
    /// The string as given.
    pub value: String,
    /// The accepted names.
    pub expected: &'static str,
}

/// Where log records go.
pub enum LogTarget {
    /// The process's standard error.
    Stderr,
    /// Any writer, e.g. a file or, in tests, a shared buffer.
    Writer(Box<dyn Write + Send>),
}

impl fmt::Debug for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stderr => f.write_str("Stderr"),
            Self::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// Flushes queued records and stops the logging thread when dropped.
///
/// Hold it in `main` until the program ends. Records logged after it is dropped are
/// discarded.
#[must_use = "dropping the guard stops logging; keep it until the end of main"]
pub struct LoggerGuard {
    _guard: AsyncGuard,
}

impl fmt::Debug for LoggerGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoggerGuard")
    }
}

/// Builds the root logger for `format` and `level`, writing to `target`.
///
/// The term format is slog-term's full format (timestamp, level, message,
/// key-values) without colours; the JSON format writes one object per line with
/// `ts` (RFC 3339, UTC), `level` (slog's short names: `ERRO`, `WARN`, `INFO`,
/// `DEBG`, `TRCE`), `msg`, then the logger's and the record's key-values. Write
/// errors are ignored: there is nowhere left to report them.
pub fn build_logger(format: LogFormat, level: LogLevel, target: LogTarget) -> (Logger, LoggerGuard) {
    let writer: Box<dyn Write + Send> = match target {
        LogTarget::Stderr => Box::new(io::stderr()),
        LogTarget::Writer(writer) => writer,
    };
    // Both formats write a record in many small pieces and flush once at its end.
    let writer = BufWriter::new(writer);
    let (drain, guard) = match format {
        LogFormat::Term => {
            let decorator = slog_term::PlainDecorator::new(writer);
            spawn_async(slog_term::FullFormat::new(decorator).build().ignore_res())
        }
        LogFormat::Json => spawn_async(
            slog_json::Json::new(writer)
                .add_default_keys()
                .set_flush(true)
                .build()
                .ignore_res(),
        ),
    };
    // Filter before the channel so records below the level cost no queue slot.
    let drain = drain.filter_level(level.to_slog()).ignore_res();
    (Logger::root(drain, o!()), LoggerGuard { _guard: guard })
}

fn spawn_async<D>(drain: D) -> (Async, AsyncGuard)
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    Async::new(drain)
        .chan_size(LOG_CHANNEL_CAPACITY)
        .overflow_strategy(OverflowStrategy::DropAndReport)
        .thread_name(LOG_THREAD_NAME.to_owned())
        .build_with_guard()
}

/// A logger that drops every record, for tests and library callers that don't log.
pub fn discard_logger() -> Logger {
    Logger::root(slog::Discard, o!())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::{debug, info, trace, warn};
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back after the logger is gone.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("buffer lock").clone()).expect("utf-8 logs")
        }
    }

    /// Logs with `f`, then drops the logger and the guard so every record is written.
    fn capture(format: LogFormat, level: LogLevel, f: impl FnOnce(&Logger)) -> String {
        let buf = SharedBuf::default();
        let (log, guard) = build_logger(format, level, LogTarget::Writer(Box::new(buf.clone())));
        f(&log);
        drop(log);
        drop(guard);
        buf.text()
    }

    fn json_lines(text: &str) -> Vec<serde_json::Value> {
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }

    #[test]
    fn json_logger_writes_one_object_per_line_with_key_values() {
        let text = capture(LogFormat::Json, LogLevel::Info, |log| {
            let log = log.new(o!("conn_id" => 7u64));
            info!(log, "connection accepted"; "peer" => "127.0.0.1:9000");
            warn!(log, "frame too large"; "len" => 70_000usize, "reason" => "limit");
        });
        let lines = json_lines(&text);
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["msg"], "connection accepted");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["conn_id"], 7);
        assert_eq!(lines[0]["peer"], "127.0.0.1:9000");
        assert!(lines[0]["ts"].is_string(), "{text}");
        assert_eq!(lines[1]["msg"], "frame too large");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["len"], 70_000);
        assert_eq!(lines[1]["reason"], "limit");
    }

    #[test]
    fn level_filter_drops_debug_at_info() {
        let text = capture(LogFormat::Json, LogLevel::Info, |log| {
            debug!(log, "message received"; "msg_id" => 1);
            info!(log, "relay started");
        });
        let lines = json_lines(&text);
        assert_eq!(lines.len(), 1, "{text}");
        assert_eq!(lines[0]["msg"], "relay started");
    }

    #[test]
    fn trace_level_keeps_trace_records() {
        let text = capture(LogFormat::Json, LogLevel::Trace, |log| {
            trace!(log, "frame decoded");
            debug!(log, "message received");
        });
        assert_eq!(json_lines(&text).len(), 2, "{text}");
    }

    #[test]
    fn term_logger_writes_message_and_key_values() {
        let text = capture(LogFormat::Term, LogLevel::Debug, |log| {
            debug!(log, "message received"; "msg_id" => 42);
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("DEBG"), "{text}");
        assert!(text.contains("message received"), "{text}");
        assert!(text.contains("msg_id: 42"), "{text}");
    }

    #[test]
    fn discard_logger_accepts_records() {
        let log = discard_logger();
        info!(log, "ignored"; "len" => 1);
    }

    #[test]
    fn log_options_parse_from_strings() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("TERM".parse::<LogFormat>(), Ok(LogFormat::Term));
        assert_eq!("warning".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!("trace".parse::<LogLevel>(), Ok(LogLevel::Trace));
        let err = "loud".parse::<LogLevel>().expect_err("not a level");
        assert_eq!(
            err.to_string(),
            "invalid log level `loud`, expected one of: error, warn, info, debug, trace"
        );
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn log_options_round_trip_through_serde_and_display() {
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            let json = serde_json::to_string(&level).expect("serialize");
            assert_eq!(json, format!("\"{level}\""));
            assert_eq!(serde_json::from_str::<LogLevel>(&json).expect("parse"), level);
            assert_eq!(level.to_string().parse::<LogLevel>(), Ok(level));
        }
        for format in [LogFormat::Term, LogFormat::Json] {
            let json = serde_json::to_string(&format).expect("serialize");
            assert_eq!(json, format!("\"{format}\""));
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
    }
}
