//! The Connection's store writes: queued per burst of frames, handed to the Committer
//! as one batch (or committed at once by the memory store), and their outcomes read
//! back in order: a stored message is answered `SentAck`, `QuotaExceeded` or
//! `Error(MsgIdReused)` (docs/PROTOCOL.md 1.6).

use super::*;

/// A write handed to the Committer (or about to be) whose outcome has not come back.
pub(super) enum Written {
    /// A Send from this connection's client (`ack`), or one the adversary injects.
    Message(MessageWrite),
    /// The client's DeliveryAck for this (sender, id).
    Ack((IdentityBytes, MsgId)),
    /// An upload to a group from this connection's client.
    Group(super::groups::GroupUpload),
    /// The connection's identity seen now (for `QueryAway`).
    Seen,
    /// The client read its expiry notices up to a sequence number.
    NoticesRead,
}

/// A message being stored, and what answering its Send takes.
pub(super) struct MessageWrite {
    pub(super) recipient: IdentityBytes,
    pub(super) msg_id: MsgId,
    /// Payload bytes (for the log).
    pub(super) len: usize,
    /// Whether the client is told (false only for a message the adversary injects).
    pub(super) ack: bool,
    /// The Send frame, to answer.
    pub(super) request: RequestRef,
}

/// Writes of this connection. Those read in one burst of frames go to the Committer as
/// one [`WriteBatch`]; their outcomes come back, in order, on one channel that the
/// connection reads as a stream. (One spawned future per write would be polled on
/// every wake-up of the connection, all of them, and could complete out of order.)
#[derive(Default)]
pub(super) struct Writes {
    /// Not yet handed to the Committer; sent at the end of the current burst.
    unsent: Vec<WriteOp>,
    /// Every write whose outcome is awaited, oldest first: the outcomes' order.
    awaiting: VecDeque<Written>,
    /// The sending half of the outcome channel, handed to the Committer. Made on the
    /// first write: an idle connection does not pay for it.
    outcomes: Option<Outcomes>,
}

impl Writes {
    /// Whether a message from this connection is still being stored (the relay's
    /// shutdown waits for its answer).
    pub(super) fn storing(&self) -> bool {
        self.awaiting
            .iter()
            .any(|w| matches!(w, Written::Message(_) | Written::Group(_)))
    }
}

impl Connection {
    /// Queues a write; the writes of one burst of frames go to the Committer together.
    pub(super) fn write(&mut self, op: WriteOp, what: Written, ctx: &mut Context<Self>) {
        if self.writes.outcomes.is_none() && self.relay.direct.is_none() {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            self.writes.outcomes = Some(tx);
        }
        self.writes.awaiting.push_back(what);
        if self.relay.direct.is_none() {
            self.relay.backlog.add(op.queued_bytes());
        }
        if self.writes.unsent.is_empty() {
            // Runs once the frames read so far are handled.
            ctx.notify(SendWrites);
        }
        self.writes.unsent.push(op);
    }

    /// Commits the queued writes: hands them to the Committer, or, for the memory
    /// store, commits them here and handles their outcomes at once.
    pub(super) fn send_writes(&mut self, ctx: &mut Context<Self>) {
        if self.writes.unsent.is_empty() {
            return;
        }
        if let Some(store) = &self.relay.direct {
            let ops = std::mem::take(&mut self.writes.unsent);
            let outcomes = commit_direct(store, &self.relay.routes, &self.relay.metrics, ops);
            for outcome in outcomes {
                self.on_outcome(outcome, ctx);
            }
            return;
        }
        let Some(outcomes) = self.writes.outcomes.clone() else {
            return;
        };
        let ops = std::mem::take(&mut self.writes.unsent);
        self.relay.committer.do_send(WriteBatch { ops, outcomes });
    }

    /// The outcome of the oldest write in flight.
    pub(super) fn on_outcome(&mut self, outcome: WriteOutcome, ctx: &mut Context<Self>) {
        match self.writes.awaiting.pop_front() {
            Some(Written::Message(message)) => {
                self.on_stored(outcome, message, ctx);
                self.close_once_stored(ctx);
            }
            Some(Written::Ack(key)) => {
                self.deliveries.ack_committed(key);
                if let Ok(WriteResult::Acked(true)) = outcome {
                    self.relay.metrics.messages_acked.inc();
                }
            }
            Some(Written::Group(upload)) => {
                self.on_group_stored(outcome, upload, ctx);
                self.close_once_stored(ctx);
            }
            Some(Written::NoticesRead) => self.on_notices_read(outcome, ctx),
            Some(Written::Seen) => {
                // Only QueryAway answers depend on it: not worth closing the connection.
                if let Err(err) = outcome {
                    warn!(self.log, "seen time not stored"; "err" => %err);
                }
            }
            None => {
                warn!(self.log, "write outcome with no write in flight");
            }
        }
    }

    /// Closes a connection that is shutting down once nothing it sent is being stored.
    fn close_once_stored(&mut self, ctx: &mut Context<Self>) {
        if self.shutdown.is_some() && !self.writes.storing() {
            if let Some((code, reason)) = self.shutdown.take() {
                self.close(code, &reason, ctx);
            }
        }
    }

    fn on_stored(&mut self, outcome: WriteOutcome, message: MessageWrite, ctx: &mut Context<Self>) {
        let MessageWrite {
            recipient,
            msg_id,
            len,
            ack,
            request,
        } = message;
        if !ack {
            // Injected by the adversary: the Committer has routed it, and no one is told.
            return;
        }
        match outcome {
            Ok(WriteResult::Appended { .. }) => {
                // The Committer has pushed it to the recipient.
                self.relay.metrics.messages_stored.inc();
                // Hex only when the record is written: this runs for every message.
                let id = slog::FnValue(move |_: &slog::Record| hex::encode(msg_id));
                debug!(self.log, "message stored"; "msg_id" => id, "len" => len);
                self.send(Frame::SentAck { msg_id }, ctx);
            }
            Ok(WriteResult::Duplicate) => {
                self.relay.metrics.messages_duplicate.inc();
                self.send(Frame::SentAck { msg_id }, ctx);
            }
            Ok(WriteResult::IdReused) => {
                // A SentAck would say it is stored: it is not. The connection stays open.
                self.refuse(
                    request,
                    ErrorCode::MsgIdReused,
                    &format!(
                        "message id {} was used for another recipient; nothing was stored",
                        hex::encode(msg_id)
                    ),
                    ctx,
                );
            }
            Ok(WriteResult::QuotaExceeded(quota)) => {
                let metrics = &self.relay.metrics;
                match quota {
                    Quota::RecipientQueue => metrics.quota_exceeded.inc(),
                    Quota::SenderMessages | Quota::SenderBytes => metrics.sender_quota_exceeded.inc(),
                    Quota::StorageBudget => metrics.storage_budget_exceeded.inc(),
                }
                let id = slog::FnValue(move |_: &slog::Record| hex::encode(msg_id));
                debug!(self.log, "message refused"; "quota" => quota.name(), "msg_id" => id);
                self.quota_exceeded(request, msg_id, recipient, quota, ctx);
            }
            Ok(_) | Err(_) => {
                self.close(
                    ErrorCode::Internal,
                    "message not stored; resend it after reconnecting",
                    ctx,
                );
            }
        }
    }
}

/// Hands the writes of the current burst to the Committer.
#[derive(Message)]
#[rtype(result = "()")]
struct SendWrites;

impl Handler<SendWrites> for Connection {
    type Result = ();

    fn handle(&mut self, _: SendWrites, ctx: &mut Context<Self>) {
        self.send_writes(ctx);
    }
}

impl StreamHandler<Vec<WriteOutcome>> for Connection {
    fn handle(&mut self, outcomes: Vec<WriteOutcome>, ctx: &mut Context<Self>) {
        for outcome in outcomes {
            self.on_outcome(outcome, ctx);
        }
    }

    /// The connection holds the sending half, so this stream never ends before it does.
    fn finished(&mut self, _: &mut Context<Self>) {}
}
