//! Commands read from stdin when it is not a terminal (a pipe, a file): one per line,
//! read as bytes, so that a line that is not UTF-8 is reported and skipped instead of
//! ending the input.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::input::Input;

/// Numbered lines of a byte stream.
#[derive(Debug)]
pub struct StdinLines<R> {
    reader: R,
    /// Lines read so far (the number of the last one).
    line_no: u64,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> StdinLines<R> {
    /// Lines of `reader` (e.g. a `BufReader` of tokio's stdin).
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line_no: 0,
            buf: Vec::new(),
        }
    }

    /// The next line, without its `\n` (or `\r\n`); [`Input::Skipped`] for a line
    /// that is not UTF-8; [`Input::End`] at the end of input or on a read error. A
    /// last line without `\n` counts.
    pub async fn next(&mut self) -> Input {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf).await {
            Ok(0) => return Input::End,
            Ok(_) => {}
            Err(err) => {
                return Input::Failed(format!("cannot read stdin: {err}"));
            }
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        match std::str::from_utf8(&self.buf) {
            Ok(line) => Input::Line(line.to_owned()),
            Err(err) => Input::Skipped(format!(
                "stdin line {} is not valid UTF-8 (at byte {}); it was skipped",
                self.line_no,
                err.valid_up_to() + 1
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(bytes: &'static [u8]) -> Vec<Input> {
        let mut lines = StdinLines::new(bytes);
        let mut out = Vec::new();
        loop {
            let input = lines.next().await;
            let end = matches!(input, Input::End | Input::Failed(_));
            out.push(input);
            if end {
                return out;
            }
        }
    }

    fn line(text: &str) -> Input {
        Input::Line(text.to_owned())
    }

    #[tokio::test]
    async fn splits_lines_and_strips_crlf() {
        assert_eq!(
            all(b"/msg bob hi\r\n\n/peers\nlast").await,
            vec![
                line("/msg bob hi"),
                line(""),
                line("/peers"),
                line("last"),
                Input::End
            ]
        );
    }

    #[tokio::test]
    async fn skips_a_line_that_is_not_utf8_and_reads_on() {
        assert_eq!(
            all(b"/msg bob one\n/msg carol \xff\n/msg bob two\n").await,
            vec![
                line("/msg bob one"),
                Input::Skipped("stdin line 2 is not valid UTF-8 (at byte 12); it was skipped".to_owned()),
                line("/msg bob two"),
                Input::End,
            ]
        );
    }

    #[tokio::test]
    async fn keeps_a_long_line_whole() {
        let long = format!("/msg bob {}\n", "x".repeat(100_000));
        let bytes: &'static [u8] = Box::leak(long.into_bytes().into_boxed_slice());
        let inputs = all(bytes).await;
        assert!(
            matches!(&inputs[0], Input::Line(l) if l.len() == 100_009),
            "{:?}",
            inputs.len()
        );
    }
}
