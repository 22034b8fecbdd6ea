//! [`start_tls_link`]: one task that owns a connection's TLS stream and does both its
//! reading and its writing. A TLS stream is not full-duplex safe when split into a read
//! half and a write half polled by two tasks (tokio-rs/tls#40): reading can need to write
//! and takes the write waker, and the writer then misses that the socket became
//! writable. So here one task reads frames and writes what the connection's [`Output`]
//! queues, with the same bounds as the plain TCP writer. Frames go to the connection in
//! batches of what one read brought (at most [`READ_BATCH_FRAMES`] frames, about
//! [`READ_BATCH_BYTES`]), through a channel of one batch, so the connection still paces
//! the reading and handles a burst in one turn, as it does over plain TCP: handing over
//! one frame at a time made it answer, and the link write, one frame per turn (measured:
//! 1.5 writes per delivered message, a quarter of the plain TCP peak).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use e2ee_protocol::codec::CodecError;
use e2ee_protocol::frame::Frame;
use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::input::{FrameLimit, InputCodec, READ_BUFFER_START};
use crate::metrics::Metrics;
use crate::output::{bounded, feed_bounded, Outgoing, Output, OutputCodec, WriterExit, WRITE_BATCH_BYTES};

/// The most frames handed to the connection at once.
pub const READ_BATCH_FRAMES: usize = 64;
/// A batch ends once its frames reach this many bytes (it holds at least one frame).
pub const READ_BATCH_BYTES: usize = 64 * 1024;

/// Frames read in one go, the last possibly the error that ended reading.
type Batch = Vec<Result<Frame, CodecError>>;

/// Reads frames with the connection's [`InputCodec`], writes [`Outgoing`] items.
struct LinkCodec {
    input: InputCodec,
    output: OutputCodec,
}

impl Decoder for LinkCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.input.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.input.decode_eof(src)
    }
}

impl Encoder<Outgoing> for LinkCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.output.encode(item, dst)
    }
}

/// Starts the task for `stream`: returns the connection's output, the end of the task
/// (as the plain writer reports it) and the frames read.
pub fn start_tls_link<S>(
    stream: S,
    limit: FrameLimit,
    budget: usize,
    write_timeout: Duration,
    metrics: Arc<Metrics>,
) -> (
    Output,
    oneshot::Receiver<WriterExit>,
    impl Stream<Item = Result<Frame, CodecError>> + 'static,
)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (output, mut queue) = Output::queued(budget);
    let (done_tx, done_rx) = oneshot::channel();
    let (read_tx, read_rx) = mpsc::channel::<Batch>(1);
    // Set when reading ends (end of stream, or a read error handed over): only then do
    // the frames end. A link that stops because a write timed out or failed says so
    // through `done` alone, as the plain TCP writer does while its reader goes on: were
    // the frames to end too, the connection would take that for the client's end of
    // stream and stop without hearing why (the two arrive together).
    let read_ended = Arc::new(AtomicBool::new(false));
    let ended = read_ended.clone();
    let codec = LinkCodec {
        input: InputCodec::new(limit),
        output: OutputCodec::default(),
    };
    actix::spawn(async move {
        let mut framed = Framed::with_capacity(stream, codec, READ_BUFFER_START);
        framed.set_backpressure_boundary(WRITE_BATCH_BYTES);
        let mut reader = Some(read_tx);
        // Frames read, waiting for room in the channel to the connection.
        let mut held: Option<Batch> = None;
        // The stream ended after the held batch was read.
        let mut eof_after_held = false;
        let exit = loop {
            let can_read = reader.is_some() && held.is_none();
            let can_hand = reader.is_some() && held.is_some();
            let hand = reader.clone();
            tokio::select! {
                item = queue.recv() => {
                    let Some((item, len)) = item else { break WriterExit::Finished };
                    let mut written = len;
                    if let Err(exit) = feed_bounded(&mut framed, item, write_timeout).await {
                        break exit;
                    }
                    let mut failed = None;
                    for _ in 0..256 {
                        let Some((item, len)) = queue.try_recv() else { break };
                        written += len;
                        if let Err(exit) = feed_bounded(&mut framed, item, write_timeout).await {
                            failed = Some(exit);
                            break;
                        }
                    }
                    if let Some(exit) = failed {
                        break exit;
                    }
                    if let Err(exit) = bounded(write_timeout, SinkExt::<Outgoing>::flush(&mut framed)).await {
                        break exit;
                    }
                    queue.written(written, &metrics);
                }
                permit = async move {
                    match hand {
                        Some(tx) => tx.reserve_owned().await.ok(),
                        None => None,
                    }
                }, if can_hand => {
                    match (permit, held.take()) {
                        (Some(permit), Some(batch)) => {
                            let last = eof_after_held || batch.last().is_some_and(Result::is_err);
                            permit.send(batch);
                            if last {
                                read_ended.store(true, Ordering::Release);
                                reader = None;
                            }
                        }
                        // The connection stopped reading for good.
                        _ => reader = None,
                    }
                }
                next = framed.next(), if can_read => match next {
                    Some(first) => {
                        let (batch, eof) = more_read(&mut framed, first);
                        held = Some(batch);
                        eof_after_held = eof;
                    }
                    // End of the stream: the connection's reading ends too.
                    None => {
                        read_ended.store(true, Ordering::Release);
                        reader = None;
                    }
                },
            }
        };
        let _ = done_tx.send(exit);
    });
    let batches = futures_util::stream::unfold(read_rx, move |mut rx| {
        let ended = ended.clone();
        async move {
            match rx.recv().await {
                Some(batch) => Some((futures_util::stream::iter(batch), rx)),
                None if ended.load(Ordering::Acquire) => None,
                // The link stopped for its writing: `done` tells the connection, which
                // stops on it.
                None => std::future::pending().await,
            }
        }
    });
    (output, done_rx, batches.flatten())
}

/// `first` and the frames that follow it without waiting (already in the read buffer,
/// or in the socket now), up to the batch bounds; an error ends the batch. The second
/// value is true if the stream ended right after the batch.
fn more_read<S>(framed: &mut Framed<S, LinkCodec>, first: Result<Frame, CodecError>) -> (Batch, bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut bytes = first.as_ref().map_or(0, Frame::encoded_len);
    let mut batch = vec![first];
    // Nothing after an `Auth` until the connection has handled it: its frame limit
    // (`FrameLimit`) grows then, and what follows is read under the new one.
    let more = |batch: &Batch, bytes: usize| {
        batch.len() < READ_BATCH_FRAMES
            && bytes < READ_BATCH_BYTES
            && matches!(batch.last(), Some(Ok(frame)) if !matches!(frame, Frame::Auth { .. }))
    };
    while more(&batch, bytes) {
        match framed.next().now_or_never() {
            Some(Some(item)) => {
                bytes += item.as_ref().map_or(0, Frame::encoded_len);
                batch.push(item);
            }
            Some(None) => return (batch, true),
            None => break,
        }
    }
    (batch, false)
}
