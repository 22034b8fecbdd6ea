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
//! `rustyline` reads a key before an external print that is ready at the same moment,
//! and a text handed to it in the instant the key that ends a `readline` is read stays
//! in its queue until the next `readline`. So the editor never stops reading while the
//! agent runs: after the last line (Ctrl-D, Ctrl-C, `/quit`) it goes on with an empty
//! prompt whose input is ignored (its first turn prints what was left in the queue), and
//! [`LineEditor::close`] ends it: it waits until that last `readline` has begun (the
//! terminal in raw mode: it asks its helper for a hint as it draws the prompt), then
//! until the goodbye is drawn (two invisible probes after it: the editor's queue holds
//! one text, so handing over the second means it has finished the goodbye), then puts
//! the terminal back as it was. Ctrl-C while the agent leaves stops it at once (exit
//! code 130), as a Ctrl-C in a cooked terminal would.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::MemHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Context, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::command::{parse_command, Command};
use crate::input::Input;

/// Lines kept in the input history (in memory, for this run only).
const HISTORY_LINES: usize = 1000;
/// A text for the editor that shows nothing: the cursor goes up a row and comes back
/// down (the editor adds no newline to a text that ends with one).
const PROBE: &str = "\x1b[A\n";
/// What the editor turns on and leaves on if the process ends while it reads:
/// bracketed paste and synchronized output.
const MODES_OFF: &str = "\x1b[?2004l\x1b[?2026l";
/// The exit code after Ctrl-C while the agent leaves (128 + SIGINT, as a shell shows
/// a process that SIGINT ended).
const EXIT_INTERRUPTED: i32 = 130;

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
    /// Answer once everything asked before is drawn (the editor reads its last, empty
    /// line by then).
    Close(mpsc::Sender<()>),
}

/// Prints above the line being edited; cheap to clone, never blocks. It also puts the
/// terminal back as it was (the terminal's settings from before the editor started)
/// before the process ends.
#[derive(Debug, Clone)]
pub struct EditorPrinter {
    lines: mpsc::Sender<ToPrinter>,
    terminal: Option<rustix::termios::Termios>,
    last_line: LastLine,
}

impl EditorPrinter {
    /// Queues `text` (one or more lines, without the final newline) for printing.
    pub fn print(&self, text: &str) {
        // The printer thread ends only with the process.
        let _ = self.lines.send(ToPrinter::Line(text.to_owned()));
    }

    /// For an agent that stops on an error while a command may be half typed: waits
    /// (at most `wait`) until what is queued is drawn, puts the terminal back and moves
    /// below the line being typed, which is left as it is. The process ends next.
    pub fn close_now(&self, wait: Duration) {
        self.put_back(wait);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\r\n").and_then(|()| out.flush());
    }

    /// Waits (at most `wait`) until everything queued is drawn, then puts the terminal
    /// back as it was before the editor.
    fn put_back(&self, wait: Duration) {
        let (done, printed) = mpsc::channel();
        if self.lines.send(ToPrinter::Close(done)).is_ok() {
            let _ = printed.recv_timeout(wait);
        }
        // The editor thread still reads (in raw mode); the process ends next.
        self.last_line.state.closing.store(true, Ordering::SeqCst);
        let stdin = std::io::stdin();
        if let Some(terminal) = &self.terminal {
            let _ =
                rustix::termios::tcsetattr(stdin.as_fd(), rustix::termios::OptionalActions::Now, terminal);
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(MODES_OFF.as_bytes()).and_then(|()| out.flush());
    }
}

/// The running line editor: its lines and its printer.
#[derive(Debug)]
pub struct LineEditor {
    inputs: UnboundedReceiver<Input>,
    printer: EditorPrinter,
}

/// The editor's last `readline`, after the last command: whether it has begun (then
/// the terminal is in raw mode and the editor reads its queue of texts), and whether
/// the agent is closing (then the editor does not begin another).
#[derive(Debug, Clone, Default)]
struct LastLine {
    state: Arc<LastLineState>,
}

#[derive(Debug, Default)]
struct LastLineState {
    /// Set before the last `readline` is called.
    armed: AtomicBool,
    /// Set once it has drawn its prompt.
    begun: Mutex<bool>,
    begun_changed: Condvar,
    /// Set by [`LineEditor::close`].
    closing: AtomicBool,
}

impl LastLine {
    /// Called by the editor as it draws a line (in raw mode).
    fn drawing(&self) {
        if self.state.armed.load(Ordering::SeqCst) {
            if let Ok(mut begun) = self.state.begun.lock() {
                *begun = true;
                self.state.begun_changed.notify_all();
            }
        }
    }

    /// Waits, at most `wait`, until the last `readline` has begun.
    fn wait_begun(&self, wait: Duration) {
        if let Ok(begun) = self.state.begun.lock() {
            let _ = self
                .state
                .begun_changed
                .wait_timeout_while(begun, wait, |begun| !*begun);
        }
    }
}

/// The editor's helper: no completion, hints, colours or validation; it only tells
/// [`LastLine`] when a line is drawn.
#[derive(Debug)]
struct EditorHelper {
    last_line: LastLine,
}

impl Completer for EditorHelper {
    type Candidate = String;
}

impl Hinter for EditorHelper {
    type Hint = String;

    fn hint(&self, _line: &str, _pos: usize, _ctx: &Context<'_>) -> Option<String> {
        self.last_line.drawing();
        None
    }
}

impl Highlighter for EditorHelper {}

impl Validator for EditorHelper {}

impl Helper for EditorHelper {}

impl LineEditor {
    /// True when the agent should read commands with the line editor: interactive
    /// (no script), readable output (not `--json`), and stdin and stdout both terminals.
    pub fn wanted(json: bool, script: bool) -> bool {
        !json && !script && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
    }

    /// Starts the editor and printer threads; the editor shows `prompt` at once.
    pub fn start(prompt: String) -> Result<Self, LineEditorError> {
        let terminal = rustix::termios::tcgetattr(std::io::stdin().as_fd()).ok();
        let (ready_tx, ready) = mpsc::channel();
        let (input_tx, inputs) = unbounded_channel();
        let (lines, to_print) = mpsc::channel();
        let last_line = LastLine::default();
        let watch = last_line.clone();
        thread::Builder::new()
            .name("e2ee-line-editor".to_owned())
            .spawn(move || {
                let mut editor = match open_editor(to_print, watch.clone()) {
                    Ok(editor) => {
                        let _ = ready_tx.send(Ok(()));
                        editor
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                read_lines(&mut editor, &prompt, &input_tx, &watch);
            })
            .map_err(LineEditorError::new)?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Self {
                inputs,
                printer: EditorPrinter {
                    lines,
                    terminal,
                    last_line,
                },
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(LineEditorError::new("the editor thread ended")),
        }
    }

    /// The printer for the agent's events.
    pub fn printer(&self) -> EditorPrinter {
        self.printer.clone()
    }

    /// The next line typed; [`Input::End`] after Ctrl-D on an empty line or Ctrl-C.
    /// After it, and after `/quit`, the editor shows an empty prompt and ignores what
    /// is typed while the agent leaves.
    pub async fn next(&mut self) -> Input {
        self.inputs.recv().await.unwrap_or(Input::End)
    }

    /// Waits (at most `wait`) until the editor reads its last, empty line and
    /// everything queued for printing is on the screen, then puts the terminal back as
    /// it was before the editor: the process may end.
    pub fn close(&self, wait: Duration) {
        self.printer.last_line.wait_begun(wait);
        self.printer.put_back(wait);
    }
}

type LineEditorInner = Editor<EditorHelper, MemHistory>;

/// Opens the editor on the terminal and starts the printer thread with its external
/// printer.
fn open_editor(
    to_print: mpsc::Receiver<ToPrinter>,
    last_line: LastLine,
) -> Result<LineEditorInner, LineEditorError> {
    let config = Config::builder()
        .auto_add_history(true)
        .max_history_size(HISTORY_LINES)
        .map_err(LineEditorError::new)?
        .build();
    let history = MemHistory::with_config(&config);
    let mut editor = Editor::with_history(config, history).map_err(LineEditorError::new)?;
    editor.set_helper(Some(EditorHelper { last_line }));
    // Fails when stdin or stdout is not a terminal, or the terminal is not supported.
    let printer = editor.create_external_printer().map_err(LineEditorError::new)?;
    thread::Builder::new()
        .name("e2ee-printer".to_owned())
        .spawn(move || print_lines(printer, to_print))
        .map_err(LineEditorError::new)?;
    Ok(editor)
}

/// The editor thread: reads lines until the end of input or `/quit`, then reads on
/// with an empty prompt, ignoring what is typed, until the process ends (Ctrl-C ends
/// it at once).
fn read_lines(
    editor: &mut LineEditorInner,
    prompt: &str,
    inputs: &UnboundedSender<Input>,
    last_line: &LastLine,
) {
    read_commands(editor, prompt, inputs);
    last_line.state.armed.store(true, Ordering::SeqCst);
    while !last_line.state.closing.load(Ordering::SeqCst) {
        match editor.readline("") {
            Ok(_) | Err(ReadlineError::Eof) => {}
            Err(ReadlineError::Interrupted) => std::process::exit(EXIT_INTERRUPTED),
            // The terminal is gone: nothing more can be drawn.
            Err(_) => return,
        }
    }
}

/// Reads commands until the end of input or `/quit`.
fn read_commands(editor: &mut LineEditorInner, prompt: &str, inputs: &UnboundedSender<Input>) {
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
                if printer.print(text.clone()).is_err() {
                    // The editor is gone: straight to stdout, as it would have done.
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                }
            }
            ToPrinter::Close(done) => {
                // The editor's queue holds one text: once the second probe is in it,
                // the first was taken, so the text before them is drawn.
                let _ = printer.print(PROBE.to_owned());
                let _ = printer.print(PROBE.to_owned());
                let _ = done.send(());
            }
        }
    }
}
