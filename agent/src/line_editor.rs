//! The line editor of the interactive agent on a terminal (`rustyline`): a prompt,
//! editing, input history (in memory only: typed lines hold message texts, so nothing
//! is written to disk), long lines and pastes kept whole (the terminal is in raw mode,
//! so its 4096-byte limit on cooked lines does not apply), and every event printed
//! *above* the line being typed, which stays as it is.
//!
//! Two threads: the editor thread blocks in `readline` and hands each line to the
//! runner; the printer thread takes the lines to print (from the agent's
//! [`crate::sink::EventSink`], through an [`EditorPrinter`]) and hands them to the
//! editor's external printer, which draws them above the prompt while a line is being
//! edited and writes them straight to stdout otherwise. The agent never waits for the
//! terminal: a print only queues the line.
//!
//! Known gap: `rustyline` reads a key before an external print that is ready at the
//! same moment, and a line that is handed to it in the instant the key that ends a
//! `readline` is read stays in its queue until the next `readline`. After an ordinary
//! line that is at once (the editor reads again right away); after the last one
//! (Ctrl-D, Ctrl-C, `/quit`) there is no next `readline`, so such a line is lost from
//! the screen. The editor gives no way to drain its queue or to end a `readline` from
//! outside.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::history::MemHistory;
use rustyline::{Config, Editor, ExternalPrinter};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::command::{parse_command, Command};
use crate::input::Input;

/// Lines kept in the input history (in memory, for this run only).
const HISTORY_LINES: usize = 1000;

/// The line editor could not be started (e.g. the terminal is not supported).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the line editor: {reason}")]
pub struct LineEditorError {
    /// Why.
    pub reason: String,
}

impl LineEditorError {
    fn new(reason: impl ToString) -> Self {
        Self {
            reason: reason.to_string(),
        }
    }
}

/// What the printer thread is asked to do.
#[derive(Debug)]
enum ToPrinter {
    /// Print this (one or more lines, without the final newline).
    Line(String),
    /// Answer once everything asked before is printed.
    Flush(mpsc::Sender<()>),
}

/// Prints above the line being edited; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct EditorPrinter {
    lines: mpsc::Sender<ToPrinter>,
}

impl EditorPrinter {
    /// Queues `text` (one or more lines, without the final newline) for printing.
    pub fn print(&self, text: &str) {
        // The printer thread ends only with the process.
        let _ = self.lines.send(ToPrinter::Line(text.to_owned()));
    }
}

/// The running line editor: its lines, and its printer.
#[derive(Debug)]
pub struct LineEditor {
    inputs: UnboundedReceiver<Input>,
    printer: EditorPrinter,
}

impl LineEditor {
    /// True when the agent should read commands with the line editor: interactive
    /// (no script), readable output (not `--json`), and stdin and stdout both terminals.
    pub fn wanted(json: bool, script: bool) -> bool {
        !json && !script && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
    }

    /// Starts the editor and printer threads; the editor shows `prompt` at once.
    pub fn start(prompt: String) -> Result<Self, LineEditorError> {
        let (ready_tx, ready) = mpsc::channel();
        let (input_tx, inputs) = unbounded_channel();
        let (lines, to_print) = mpsc::channel();
        thread::Builder::new()
            .name("e2ee-line-editor".to_owned())
            .spawn(move || {
                let mut editor = match open_editor(to_print) {
                    Ok(editor) => {
                        let _ = ready_tx.send(Ok(()));
                        editor
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                read_lines(&mut editor, &prompt, &input_tx);
            })
            .map_err(LineEditorError::new)?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Self {
                inputs,
                printer: EditorPrinter { lines },
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(LineEditorError::new("the editor thread ended")),
        }
    }

    /// The printer for the agent's events.
    pub fn printer(&self) -> EditorPrinter {
        self.printer.clone()
    }

    /// The next line typed; [`Input::End`] after Ctrl-D on an empty line or Ctrl-C,
    /// and after `/quit` (the editor stops reading at once, so the terminal is back in
    /// its normal mode while the agent leaves).
    pub async fn next(&mut self) -> Input {
        self.inputs.recv().await.unwrap_or(Input::End)
    }

    /// Waits (at most `wait`) until everything queued for printing is printed.
    pub fn flush(&self, wait: Duration) {
        let (done, printed) = mpsc::channel();
        if self.printer.lines.send(ToPrinter::Flush(done)).is_ok() {
            let _ = printed.recv_timeout(wait);
        }
    }
}

type LineEditorInner = Editor<(), MemHistory>;

/// Opens the editor on the terminal and starts the printer thread with its external
/// printer.
fn open_editor(to_print: mpsc::Receiver<ToPrinter>) -> Result<LineEditorInner, LineEditorError> {
    let config = Config::builder()
        .auto_add_history(true)
        .max_history_size(HISTORY_LINES)
        .map_err(LineEditorError::new)?
        .build();
    let history = MemHistory::with_config(&config);
    let mut editor = Editor::with_history(config, history).map_err(LineEditorError::new)?;
    // Fails when stdin or stdout is not a terminal, or the terminal is not supported.
    let printer = editor.create_external_printer().map_err(LineEditorError::new)?;
    thread::Builder::new()
        .name("e2ee-printer".to_owned())
        .spawn(move || print_lines(printer, to_print))
        .map_err(LineEditorError::new)?;
    Ok(editor)
}

/// The editor thread: reads lines until the end of input or `/quit`.
fn read_lines(editor: &mut LineEditorInner, prompt: &str, inputs: &UnboundedSender<Input>) {
    loop {
        let input = match editor.readline(prompt) {
            Ok(line) => Input::Line(line),
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => Input::End,
            Err(err) => Input::Failed(format!("cannot read the terminal: {err}")),
        };
        let last = match &input {
            Input::Line(line) => matches!(parse_command(line), Ok(Some(Command::Quit))),
            Input::Skipped(_) => false,
            Input::Failed(_) | Input::End => true,
        };
        if inputs.send(input).is_err() || last {
            return;
        }
    }
}

/// The printer thread. While a line is edited the editor draws each text above it;
/// otherwise (and once the editor is gone) the external printer writes to stdout.
fn print_lines<P: ExternalPrinter>(mut printer: P, to_print: mpsc::Receiver<ToPrinter>) {
    for request in to_print {
        match request {
            ToPrinter::Line(mut text) => {
                text.push('\n');
                if let Err(err) = printer.print(text.clone()) {
                    // The editor is gone: straight to stdout, as it would have done.
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                    let _ = err;
                }
            }
            ToPrinter::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
