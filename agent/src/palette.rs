//! Modest colours for readable events on a terminal: received messages stand out from
//! the agent's own notices, errors and warnings from both. Only when stdout is a
//! terminal and `NO_COLOR` is not set (<https://no-color.org>); never in `--json`.

use std::io::IsTerminal;

use crate::event::Event;

/// Bold cyan: a received message.
const MESSAGE: &str = "\x1b[1;36m";
/// Red: an error.
const ERROR: &str = "\x1b[31m";
/// Yellow: something else that needs attention (the lines marked `!`).
const ATTENTION: &str = "\x1b[33m";
/// Dim: the agent's own status and progress (`*`, `->`).
const NOTICE: &str = "\x1b[2m";
/// Back to the terminal's normal style.
const RESET: &str = "\x1b[0m";

/// Whether and how readable lines are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    enabled: bool,
}

impl Palette {
    /// No colours.
    pub const PLAIN: Self = Self { enabled: false };

    /// Colours when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Self {
            enabled: !no_color && std::io::stdout().is_terminal(),
        }
    }

    /// True when lines are coloured.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// `line`, the readable form of `event`, in the event's colour.
    pub fn paint(&self, event: &Event, line: String) -> String {
        if !self.enabled {
            return line;
        }
        let colour = match event {
            Event::Message { .. } => MESSAGE,
            Event::Error { .. } => ERROR,
            _ if line.starts_with('!') => ATTENTION,
            _ => NOTICE,
        };
        format!("{colour}{line}{RESET}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_leaves_lines_alone() {
        let event = Event::error("boom");
        assert_eq!(
            Palette::PLAIN.paint(&event, "! error: boom".into()),
            "! error: boom"
        );
    }

    #[test]
    fn messages_errors_and_notices_get_different_colours() {
        let palette = Palette { enabled: true };
        let error = palette.paint(&Event::error("boom"), "! error: boom".into());
        let info = palette.paint(&Event::info("hello"), "* hello".into());
        assert_eq!(error, "\x1b[31m! error: boom\x1b[0m");
        assert_eq!(info, "\x1b[2m* hello\x1b[0m");
    }
}
