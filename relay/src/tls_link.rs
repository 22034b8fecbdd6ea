//! [`start_tls_link`]: one task that owns a connection's TLS stream and does both its
//! reading and its writing. A TLS stream is not full-duplex safe when split into a read
//! half and a write half polled by two tasks (tokio-rs/tls#40): reading can need to write
//! and takes the write waker, and the writer then misses that the socket became
//! writable. So here one task reads frames (handed to the connection through a channel
//! of one, so the connection still paces its reading) and writes what the connection's
//! [`Output`] queues, with the same bounds as the plain TCP writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use e2ee_protocol::codec::CodecError;
use e2ee_protocol::frame::Frame;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::input::{FrameLimit, InputCodec, READ_BUFFER_START};
use crate::metrics::Metrics;
use crate::output::{bounded, feed_bounded, Outgoing, Output, OutputCodec, WriterExit, WRITE_BATCH_BYTES};

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
    let (read_tx, read_rx) = mpsc::channel::<Result<Frame, CodecError>>(1);
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
        // A frame read, waiting for room in the channel to the connection.
        let mut held: Option<Result<Frame, CodecError>> = None;
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
                        (Some(permit), Some(item)) => {
                            let last = item.is_err();
                            permit.send(item);
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
                    Some(item) => held = Some(item),
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
    let frames = futures_util::stream::unfold(read_rx, move |mut rx| {
        let ended = ended.clone();
        async move {
            match rx.recv().await {
                Some(item) => Some((item, rx)),
                None if ended.load(Ordering::Acquire) => None,
                // The link stopped for its writing: `done` tells the connection, which
                // stops on it.
                None => std::future::pending().await,
            }
        }
    });
    (output, done_rx, frames)
}
