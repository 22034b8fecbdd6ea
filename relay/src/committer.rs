//! Group commit: writes from every connection queue here; while one batch is being
//! committed the next one accumulates, so under load many messages share one fsync and
//! at light load a write is committed at once. Once a batch is durable, every message
//! it stored is pushed to its recipient (if connected) from here, so a push never
//! depends on the sender's connection still being open when its store completes.
//!
//! The memory store skips all this: a connection commits its writes itself with
//! [`commit_direct`] and pushes what it stored at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{error, Logger};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::router::{Delivery, RouteTable};
use crate::store::group::GroupResult;
use crate::store::{IdentityBytes, WriteOp, WriteResult};
use crate::store_actor::{CommitBatch, SharedStore, StoreActor};
use crate::store_backlog::StoreBacklog;

/// A write's outcome as the committer reports it.
pub type WriteOutcome = Result<WriteResult, CommitError>;

/// Why a write was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The store failed; the batch was rolled back.
    #[error("store failure: {0}")]
    Store(String),
    /// The store actor is gone.
    #[error("store unavailable")]
    Unavailable,
}

/// A connection's channel of outcomes: each item holds the outcomes of consecutive
/// writes of one batch, and items come in the order of the writes.
pub type Outcomes = mpsc::UnboundedSender<Vec<WriteOutcome>>;

/// Where a write's outcome goes.
enum Reply {
    /// One answer (the Committer's own expiry runs).
    Once(oneshot::Sender<WriteOutcome>),
    /// A connection's stream of outcomes.
    Stream(Outcomes),
}

/// Answers each write of a batch, one message per run of consecutive writes from the
/// same connection. Receivers that have gone are fine: the writes are committed.
fn answer(replies: Vec<Reply>, outcomes: Vec<WriteOutcome>) {
    let mut run: Option<(Outcomes, Vec<WriteOutcome>)> = None;
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        match reply {
            Reply::Once(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Stream(tx) => match &mut run {
                Some((current, list)) if current.same_channel(&tx) => list.push(outcome),
                _ => {
                    if let Some((current, list)) = run.replace((tx, vec![outcome])) {
                        let _ = current.send(list);
                    }
                }
            },
        }
    }
    if let Some((current, list)) = run {
        let _ = current.send(list);
    }
}

/// How long an expiry notice nobody asked for is kept at least, after its message
/// expired (PROTOCOL.md 1.6): a sender that is offline for a while still learns of it.
pub const MIN_NOTICE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// When stored messages expire and acknowledged ids are forgotten.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// Unacknowledged messages older than this are dropped.
    pub ttl: Duration,
    /// Acknowledged ids of messages older than this are forgotten (at most `ttl`).
    pub dedup_window: Duration,
    /// How often expiry runs.
    pub every: Duration,
}

impl Expiry {
    /// The expiry write at `now_ms`.
    pub fn op(&self, now_ms: u64) -> WriteOp {
        let ago = |d: Duration| now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        WriteOp::Expire {
            before_ms: ago(self.ttl),
            acked_before_ms: ago(self.dedup_window.min(self.ttl)),
            notices_before_ms: ago(self.ttl.saturating_add(self.ttl.max(MIN_NOTICE_RETENTION))),
        }
    }
}

/// Collects writes and commits them in batches.
pub struct Committer {
    store: Addr<StoreActor>,
    pending: Vec<(WriteOp, Reply)>,
    in_flight: bool,
    max_batch: usize,
    metrics: Arc<Metrics>,
    expire: Option<Expiry>,
    /// Writes queued so far, and how many of them are done (committed or failed).
    queued: u64,
    done: u64,
    /// [`Flush`] requests: each resolves once `done` reaches its mark.
    flush_waiters: VecDeque<(u64, oneshot::Sender<()>)>,
    routes: Option<Arc<RouteTable>>,
    /// The bound on connections' writes waiting here, counted out as they are done.
    backlog: Option<Arc<StoreBacklog>>,
    /// Where failed commits are logged (their error names the store's file).
    log: Option<Logger>,
}

impl Committer {
    /// A committer in front of `store`; with `expiry`, it expires old messages and
    /// forgets old acknowledged ids.
    pub fn new(
        store: Addr<StoreActor>,
        max_batch: usize,
        metrics: Arc<Metrics>,
        expiry: Option<Expiry>,
    ) -> Self {
        Self {
            store,
            pending: Vec::new(),
            in_flight: false,
            max_batch: max_batch.max(1),
            metrics,
            expire: expiry,
            queued: 0,
            done: 0,
            flush_waiters: VecDeque::new(),
            routes: None,
            backlog: None,
            log: None,
        }
    }

    /// Logs failed commits to `log`.
    pub fn with_log(mut self, log: Logger) -> Self {
        self.log = Some(log);
        self
    }

    /// Counts the connections' writes out of `backlog` once they are committed.
    pub fn with_backlog(mut self, backlog: Arc<StoreBacklog>) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Pushes every stored message to its recipient through `routes` once committed.
    pub fn with_routes(mut self, routes: Arc<RouteTable>) -> Self {
        self.routes = Some(routes);
        self
    }

    /// Queues one write and starts a batch if none is in flight.
    fn enqueue(&mut self, op: WriteOp, reply: Reply, ctx: &mut Context<Self>) {
        self.pending.push((op, reply));
        self.added(1, ctx);
    }

    /// Queues a connection's writes, answered in order on `outcomes`.
    fn enqueue_all(&mut self, ops: Vec<WriteOp>, outcomes: &Outcomes, ctx: &mut Context<Self>) {
        let n = ops.len();
        self.pending
            .extend(ops.into_iter().map(|op| (op, Reply::Stream(outcomes.clone()))));
        self.added(n, ctx);
    }

    /// Counts `n` newly queued writes and starts a batch if none is in flight.
    fn added(&mut self, n: usize, ctx: &mut Context<Self>) {
        self.queued += n as u64;
        self.metrics.store_queue_depth.set(self.pending.len() as u64);
        self.flush(ctx);
    }

    /// Counts `n` writes as done and answers the [`Flush`] requests they complete.
    fn finished(&mut self, n: usize) {
        self.done += n as u64;
        while let Some((mark, _)) = self.flush_waiters.front() {
            if *mark > self.done {
                break;
            }
            if let Some((_, waiter)) = self.flush_waiters.pop_front() {
                let _ = waiter.send(());
            }
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight || self.pending.is_empty() {
            return;
        }
        let take = self.pending.len().min(self.max_batch);
        let batch: Vec<_> = self.pending.drain(..take).collect();
        let (ops, replies): (Vec<WriteOp>, Vec<_>) = batch.into_iter().unzip();
        let pushes: Vec<Option<Push>> = match self.routes {
            Some(_) => ops.iter().map(push_of).collect(),
            None => Vec::new(),
        };
        // The connections' writes (not the Committer's own expiry runs), as they were
        // counted into the backlog.
        let (from_connections, queued_bytes) = ops
            .iter()
            .zip(&replies)
            .filter(|(_, reply)| matches!(reply, Reply::Stream(_)))
            .fold((0, 0), |(n, bytes), (op, _)| (n + 1, bytes + op.queued_bytes()));
        self.in_flight = true;
        self.metrics.store_batches.inc();
        self.metrics.store_batch_writes.add(ops.len() as u64);
        self.metrics.store_queue_depth.set(self.pending.len() as u64);
        ctx.spawn(
            self.store
                .send(CommitBatch(ops))
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.in_flight = false;
                    let count = replies.len();
                    let committed = match res {
                        Ok(committed) => committed.map_err(|err| CommitError::Store(err.to_string())),
                        Err(_) => Err(CommitError::Unavailable),
                    };
                    if let (Err(err), Some(log)) = (&committed, &act.log) {
                        error!(log, "store commit failed"; "err" => %err, "batch_len" => count);
                    }
                    answer(replies, settle(act.routes.as_deref(), pushes, committed, count));
                    if let Some(backlog) = &act.backlog {
                        backlog.done(from_connections, queued_bytes);
                    }
                    act.finished(count);
                    act.flush(ctx);
                }),
        );
    }
}

/// The outcome of each of a commit's `count` writes, once every message it stored is
/// pushed (with its sequence number) to its recipient through `routes`.
fn settle(
    routes: Option<&RouteTable>,
    pushes: Vec<Option<Push>>,
    committed: Result<Vec<WriteResult>, CommitError>,
    count: usize,
) -> Vec<WriteOutcome> {
    match committed {
        Ok(results) => {
            if let Some(routes) = routes {
                // One list per batch (not one per write: this runs for every message).
                let mut deliveries = Vec::with_capacity(results.len());
                for (push, result) in pushes.into_iter().zip(&results) {
                    match (push, result) {
                        (Some(Push::One(recipient, mut delivery)), WriteResult::Appended { seq }) => {
                            delivery.seq = *seq;
                            deliveries.push((recipient, delivery));
                        }
                        (
                            Some(Push::Group { sender, timestamp_ms }),
                            WriteResult::Group(GroupResult::Stored { queued, .. }),
                        ) => deliveries.extend(queued.iter().map(|q| {
                            (
                                q.recipient,
                                Delivery {
                                    seq: q.seq,
                                    sender,
                                    msg_id: q.msg_id,
                                    timestamp_ms,
                                    payload: q.payload.clone(),
                                },
                            )
                        })),
                        _ => {}
                    }
                }
                routes.route_all(deliveries);
            }
            results.into_iter().map(Ok).collect()
        }
        Err(err) => vec![Err(err); count],
    }
}

/// Commits a connection's writes itself, without group commit: for the memory store,
/// which has nothing to make durable, so a trip through the Committer and the store
/// thread would only add four thread hand-offs per write. The stored messages are
/// pushed to their recipients as after a group commit; the outcomes are returned in
/// order.
pub fn commit_direct(
    store: &SharedStore,
    routes: &RouteTable,
    metrics: &Metrics,
    ops: Vec<WriteOp>,
) -> Vec<WriteOutcome> {
    metrics.store_batches.inc();
    metrics.store_batch_writes.add(ops.len() as u64);
    let pushes = ops.iter().map(push_of).collect();
    let committed = store
        .commit(&ops)
        .map_err(|err| CommitError::Store(err.to_string()));
    settle(Some(routes), pushes, committed, ops.len())
}

/// What a committed write pushes to connected recipients.
enum Push {
    /// A stored message for its recipient (its sequence number is filled in after the
    /// commit).
    One(IdentityBytes, Delivery),
    /// The copies of a group upload the commit queued, from `sender`.
    Group {
        /// The uploader.
        sender: IdentityBytes,
        /// When the relay received it.
        timestamp_ms: u64,
    },
}

/// The push for a stored message (its sequence number is filled in after the commit).
fn push_of(op: &WriteOp) -> Option<Push> {
    match op {
        WriteOp::Group(g) => Some(Push::Group {
            sender: g.sender,
            timestamp_ms: g.timestamp_ms,
        }),
        WriteOp::Append(m) => Some(Push::One(
            m.recipient,
            Delivery {
                seq: 0,
                sender: m.sender,
                msg_id: m.msg_id,
                timestamp_ms: m.timestamp_ms,
                payload: m.payload.clone(),
            },
        )),
        _ => None,
    }
}

impl Actor for Committer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 16);
        if let Some(expiry) = self.expire {
            ctx.run_interval(expiry.every, move |act, ctx| {
                let (tx, rx) = oneshot::channel();
                act.enqueue(expiry.op(crate::now_ms()), Reply::Once(tx), ctx);
                let metrics = act.metrics.clone();
                actix::spawn(async move {
                    if let Ok(Ok(WriteResult::Expired(n))) = rx.await {
                        metrics.messages_expired.add(n);
                    }
                });
            });
        }
    }
}

/// Commit a connection's writes (those read in one burst), in order. Each outcome is
/// sent on `outcomes` once its batch is durable, in the order of `ops` and of earlier
/// batches from the same sender. The writes are committed even when the receiver has
/// gone: a connection that closed right after a client's DeliveryAck must not lose that
/// acknowledgement (the message would be delivered again).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteBatch {
    /// The writes, oldest first.
    pub ops: Vec<WriteOp>,
    /// Where their outcomes go.
    pub outcomes: Outcomes,
}

impl Handler<WriteBatch> for Committer {
    type Result = ();

    fn handle(&mut self, msg: WriteBatch, ctx: &mut Context<Self>) {
        self.enqueue_all(msg.ops, &msg.outcomes, ctx);
    }
}

/// Resolves once every write queued before it is done (committed, or failed and
/// answered), however many are queued after it. Used at shutdown, and by a connection
/// before it reads its identity's stored queue, so that acknowledgements its previous
/// connection sent are applied first and those messages are not delivered again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Committer {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.flush_waiters.push_back((self.queued, tx));
        self.finished(0);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notices_before(ttl: Duration, now_ms: u64) -> u64 {
        let expiry = Expiry {
            ttl,
            dedup_window: ttl,
            every: Duration::from_secs(1),
        };
        match expiry.op(now_ms) {
            WriteOp::Expire {
                notices_before_ms, ..
            } => notices_before_ms,
            other => panic!("not an expiry: {other:?}"),
        }
    }

    #[test]
    fn a_notice_outlives_its_message_by_a_ttl_and_at_least_a_day() {
        let now = 10 * 24 * 3600 * 1000;
        let day = 24 * 3600 * 1000;
        // A TTL of one second (tests): notices are kept a day after their message expired.
        assert_eq!(notices_before(Duration::from_secs(1), now), now - 1000 - day);
        // The default TTL of seven days: notices are kept another seven days.
        assert_eq!(
            notices_before(Duration::from_secs(7 * 24 * 3600), now),
            now.saturating_sub(14 * day)
        );
    }
}
