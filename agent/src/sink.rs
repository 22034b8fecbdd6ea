//! Where events go: stdout, as readable lines for people or one JSON object per line
//! for bots (`--json`); in the line editor, above the line being typed.

use std::io::Write;
use std::time::Duration;

use crate::event::Event;
use crate::line_editor::EditorPrinter;
use crate::palette::Palette;

/// How long the last lines may take to reach the terminal when the agent stops on an
/// error.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Prints events.
#[derive(Debug, Clone)]
pub struct EventSink {
    json: bool,
    palette: Palette,
    editor: Option<EditorPrinter>,
}

impl EventSink {
    /// JSON lines when `json`, readable text otherwise; to stdout, without colours.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            palette: Palette::PLAIN,
            editor: None,
        }
    }

    /// Readable lines in these colours (not in JSON mode).
    pub fn with_palette(mut self, palette: Palette) -> Self {
        if !self.json {
            self.palette = palette;
        }
        self
    }

    /// Prints through the line editor, above the line being typed.
    pub fn with_editor(mut self, printer: EditorPrinter) -> Self {
        self.editor = Some(printer);
        self
    }

    /// True in JSON mode.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints one event.
    pub fn emit(&self, event: &Event) {
        self.print(&self.render(event));
    }

    /// Prints one event that answers the bot command `id` (its JSON carries the id; a
    /// person's line is the same as without).
    pub fn emit_tagged(&self, event: &Event, id: Option<&serde_json::Value>) {
        match id {
            Some(id) if self.json => self.print(&event.to_json_line_with_id(id)),
            _ => self.emit(event),
        }
    }

    /// The line [`EventSink::emit`] prints for `event` (to prepare it before a step
    /// that must come just before the print: [`EventSink::print`]).
    pub fn render(&self, event: &Event) -> String {
        if self.json {
            event.to_json_line()
        } else {
            self.palette.paint(event, event.to_human())
        }
    }

    /// Prints raw text (human mode only: e.g. a QR code).
    pub fn raw(&self, text: &str) {
        if !self.json {
            self.print(text);
        }
    }

    /// Before the process ends on an error: in the line editor, waits until what was
    /// printed is on the screen and puts the terminal back as it was.
    pub fn close_terminal(&self) {
        if let Some(editor) = &self.editor {
            editor.close_now(CLOSE_WAIT);
        }
    }

    /// Prints a line made by [`EventSink::render`] (or any one line).
    pub fn print(&self, text: &str) {
        if let Some(editor) = &self.editor {
            editor.print(text);
            return;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}
