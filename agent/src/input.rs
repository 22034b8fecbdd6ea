//! Where interactive commands come from: the line editor on a terminal, or lines of
//! stdin otherwise, both read as a sequence of [`Input`]s.

use tokio::io::{BufReader, Stdin};

use crate::line_editor::LineEditor;
use crate::stdin_lines::StdinLines;

/// One item of interactive input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line, without its line ending.
    Line(String),
    /// A line that could not be used; the message says which and why. Reading goes on.
    Skipped(String),
    /// Reading failed; the message says why. No more input follows.
    Failed(String),
    /// The end of input: end of file, Ctrl-D or Ctrl-C in the line editor.
    End,
}

/// The source of interactive commands.
#[derive(Debug)]
pub enum InputSource {
    /// Lines of stdin (a pipe or a file).
    Stdin(StdinLines<BufReader<Stdin>>),
    /// The line editor (stdin and stdout are terminals).
    Editor(LineEditor),
}

impl InputSource {
    /// Lines of the process's stdin.
    pub fn stdin() -> Self {
        Self::Stdin(StdinLines::new(BufReader::new(tokio::io::stdin())))
    }

    /// The next input; [`Input::End`] or [`Input::Failed`] is the last.
    pub async fn next(&mut self) -> Input {
        match self {
            Self::Stdin(lines) => lines.next().await,
            Self::Editor(editor) => editor.next().await,
        }
    }
}
