//! A connection's bounded output: frames go to a writer task through a channel, and the
//! bytes not yet handed to the socket are counted, so the relay can refuse to buffer
//! more than the configured budget for a peer that does not read. Stored messages are
//! written only while the output is below half its budget
//! ([`Output::has_room_for_deliveries`]); the connection waits for the writer to drain it
//! ([`Output::drained`]) before it writes more, so a large stored queue is paced by the
//! client's reading, and a client that leaves it undrained for the write timeout is cut
//! off.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use e2ee_protocol::codec::{CodecError, FrameCodec};
use e2ee_protocol::frame::{Frame, LENGTH_PREFIX_LEN};
use futures_util::{Sink, SinkExt};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::codec::{Encoder, Framed, FramedWrite};

use crate::metrics::Metrics;
use crate::router::Delivery;

/// What a connection writes: a frame, or a stored message, written as a `Deliver` frame
/// straight from its shared payload buffer (no copy into an owned frame).
pub enum Outgoing {
    /// Any frame.
    Frame(Frame),
    /// A stored message for the client.
    Deliver(Delivery),
}

impl Outgoing {
    /// Encoded length, length prefix included.
    fn wire_len(&self) -> usize {
        LENGTH_PREFIX_LEN
            + match self {
                Outgoing::Frame(frame) => frame.encoded_len(),
                Outgoing::Deliver(delivery) => delivery.frame().encoded_len(),
            }
    }
}

/// Encodes [`Outgoing`] items with the protocol's frame codec.
#[derive(Default)]
pub(crate) struct OutputCodec(FrameCodec);

impl Encoder<Outgoing> for OutputCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Outgoing, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Outgoing::Frame(frame) => self.0.encode(&frame, dst),
            Outgoing::Deliver(delivery) => self.0.encode(delivery.frame(), dst),
        }
    }
}

/// Initial capacity of a connection's write buffer (tokio-util's default is 8 KiB).
pub const WRITE_BUFFER_START: usize = 1024;
/// Bytes gathered before a write is forced while frames keep coming (one syscall for
/// many small frames).
pub const WRITE_BATCH_BYTES: usize = 32 * 1024;

/// Why the writer task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterExit {
    /// The connection closed its side; every frame was written.
    Finished,
    /// Writing failed (the peer is gone).
    Failed,
    /// The peer did not take the bytes within the write timeout.
    TimedOut,
}

/// Runs one write of the writer task within `limit`.
pub(crate) async fn bounded(
    limit: Duration,
    write: impl Future<Output = Result<(), CodecError>>,
) -> Result<(), WriterExit> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriterExit::Failed),
        Err(_) => Err(WriterExit::TimedOut),
    }
}

/// A framed sink whose write buffer can be inspected ([`feed_bounded`]).
pub(crate) trait WriteBuffer {
    /// Bytes encoded and not yet handed to the stream below.
    fn buffered(&self) -> usize;
    /// The buffer size at which `poll_ready` starts writing (its backpressure boundary).
    fn boundary(&self) -> usize;
}

impl<T, U> WriteBuffer for FramedWrite<T, U> {
    fn buffered(&self) -> usize {
        self.write_buffer().len()
    }

    fn boundary(&self) -> usize {
        self.backpressure_boundary()
    }
}

impl<T, U> WriteBuffer for Framed<T, U> {
    fn buffered(&self) -> usize {
        self.write_buffer().len()
    }

    fn boundary(&self) -> usize {
        self.backpressure_boundary()
    }
}

/// Queues `item` in `sink`'s write buffer; once the buffer has reached its boundary, it
/// is first flushed (written out and the stream below flushed) within `limit`.
///
/// Not `bounded(limit, sink.feed(item))`: a framed sink's `poll_ready` writes only while
/// its own buffer is over the boundary. Over TLS the buffer passes whole into rustls and
/// the flush of the TLS stream is what waits for the socket; polled again, `poll_ready`
/// finds its buffer empty and is ready, although nothing more reached the socket. The
/// timeout's own wake-up is such a poll, and `tokio::time::timeout` polls the future
/// before its deadline: the feed then completed when its timer fired (every write timeout)
/// instead of timing out, and a TLS client that never reads was never cut off. A flush
/// polls the stream below every time, so it completes only once the bytes are written.
pub(crate) async fn feed_bounded<S>(sink: &mut S, item: Outgoing, limit: Duration) -> Result<(), WriterExit>
where
    S: Sink<Outgoing, Error = CodecError> + WriteBuffer + Unpin,
{
    if sink.buffered() >= sink.boundary() {
        bounded(limit, SinkExt::<Outgoing>::flush(sink)).await?;
    }
    // Below the boundary: `poll_ready` is ready at once, this only encodes.
    bounded(limit, sink.feed(item)).await
}

/// The budget for pending output was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// Bytes pending when the frame was refused.
    pub pending: usize,
}

/// The sending side of a connection's output.
pub struct Output {
    tx: mpsc::UnboundedSender<(Outgoing, usize)>,
    pending: Arc<AtomicUsize>,
    budget: usize,
    /// Told by the writer task after each flush.
    flushed: Arc<Notify>,
}

/// The writer's side of an [`Output`] whose writes another task performs (the TLS link,
/// which reads and writes one stream in one task: `crate::tls_link`).
pub(crate) struct OutputQueue {
    rx: mpsc::UnboundedReceiver<(Outgoing, usize)>,
    pending: Arc<AtomicUsize>,
    flushed: Arc<Notify>,
}

impl OutputQueue {
    /// The next item, or `None` once the [`Output`] is gone.
    pub(crate) async fn recv(&mut self) -> Option<(Outgoing, usize)> {
        self.rx.recv().await
    }

    /// An item already queued, if any.
    pub(crate) fn try_recv(&mut self) -> Option<(Outgoing, usize)> {
        self.rx.try_recv().ok()
    }

    /// `bytes` were handed to the socket.
    pub(crate) fn written(&self, bytes: usize, metrics: &Metrics) {
        self.pending.fetch_sub(bytes, Ordering::Relaxed);
        self.flushed.notify_waiters();
        metrics.bytes_out.add(bytes as u64);
    }
}

impl Output {
    /// An output whose writes the returned queue's owner performs.
    pub(crate) fn queued(budget: usize) -> (Self, OutputQueue) {
        let (tx, rx) = mpsc::unbounded_channel::<(Outgoing, usize)>();
        let pending = Arc::new(AtomicUsize::new(0));
        let flushed = Arc::new(Notify::new());
        let queue = OutputQueue {
            rx,
            pending: pending.clone(),
            flushed: flushed.clone(),
        };
        (
            Self {
                tx,
                pending,
                budget,
                flushed,
            },
            queue,
        )
    }

    /// Starts the writer task for `sink`; the receiver resolves when the task ends.
    pub fn start<W>(
        sink: W,
        budget: usize,
        write_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> (Self, oneshot::Receiver<WriterExit>)
    where
        W: AsyncWrite + Unpin + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Outgoing, usize)>();
        let pending = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = oneshot::channel();
        let counter = pending.clone();
        let flushed = Arc::new(Notify::new());
        let notify = flushed.clone();
        actix::spawn(async move {
            // Small to start: an idle connection should cost little memory; the buffer
            // grows to whatever a burst needs.
            let mut framed = FramedWrite::with_capacity(sink, OutputCodec::default(), WRITE_BUFFER_START);
            framed.set_backpressure_boundary(WRITE_BATCH_BYTES);
            let exit = loop {
                let Some((frame, len)) = rx.recv().await else {
                    break WriterExit::Finished;
                };
                let mut written = len;
                // Feeding writes to the socket once the buffer passes its boundary, so it
                // is bounded in time like the flush.
                if let Err(exit) = feed_bounded(&mut framed, frame, write_timeout).await {
                    break exit;
                }
                // Coalesce whatever is queued into one flush.
                let mut failed = None;
                for _ in 0..256 {
                    let Ok((frame, len)) = rx.try_recv() else { break };
                    written += len;
                    if let Err(exit) = feed_bounded(&mut framed, frame, write_timeout).await {
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
                counter.fetch_sub(written, Ordering::Relaxed);
                notify.notify_waiters();
                metrics.bytes_out.add(written as u64);
            };
            let _ = done_tx.send(exit);
        });
        (
            Self {
                tx,
                pending,
                budget,
                flushed,
            },
            done_rx,
        )
    }

    /// Whether stored messages may be written now: the output is below half its budget,
    /// which leaves the other half for answers and for one more message of any size.
    pub fn has_room_for_deliveries(&self) -> bool {
        self.pending_bytes() < self.budget / 2
    }

    /// Resolves once the output is below half its budget again (never, if the writer
    /// has stopped: the connection stops with it).
    pub fn drained(&self) -> impl Future<Output = ()> + 'static {
        let (pending, flushed, level) = (self.pending.clone(), self.flushed.clone(), self.budget / 2);
        async move {
            loop {
                let notified = flushed.notified();
                tokio::pin!(notified);
                // Registered before the check, so a flush in between is not missed.
                notified.as_mut().enable();
                if pending.load(Ordering::Relaxed) < level {
                    return;
                }
                notified.await;
            }
        }
    }

    /// Bytes queued but not yet handed to the socket.
    pub fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Queues a frame or a message unless that would exceed the budget.
    pub fn send(&self, item: Outgoing) -> Result<(), OverBudget> {
        let len = item.wire_len();
        let pending = self.pending_bytes();
        if pending + len > self.budget {
            return Err(OverBudget { pending });
        }
        self.push(item, len);
        Ok(())
    }

    /// Queues a frame whatever the budget (the last frame before closing).
    pub fn send_final(&self, frame: Frame) {
        let item = Outgoing::Frame(frame);
        let len = item.wire_len();
        self.push(item, len);
    }

    fn push(&self, item: Outgoing, len: usize) {
        self.pending.fetch_add(len, Ordering::Relaxed);
        if self.tx.send((item, len)).is_err() {
            self.pending.fetch_sub(len, Ordering::Relaxed);
        }
    }
}
