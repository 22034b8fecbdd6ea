//! The agent's outflow, and group commit: what the agent prints or sends to the relay
//! waits while the state holds a commit that is not yet durable.
//!
//! Every commit of the state reaches the WAL file before it returns (a `kill -9` loses
//! nothing committed) and becomes durable against a power loss at the next sync
//! ([`AgentState::sync`], one `fdatasync`). Acting on a commit before that sync would
//! break the state's promises after a power loss: a `DeliveryAck` for a message whose
//! receipt is lost loses the message, and a `Send` whose advanced session is lost makes
//! the next message reuse its key. So while [`AgentState::needs_sync`] is true, events,
//! frames and raw lines are queued here, in order, and released by [`AgentActor::flush`]
//! after one sync: the messages the actor handles in one burst (everything already in
//! its mailbox when the first was queued, up to [`MAX_BATCH`] outputs) share one sync.
//!
//! A text is recorded as shown (`AgentState::shown`) only as it is released, just
//! before it is printed, so a crash while it waits here shows it at the next start.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use actix::WeakAddr;

use super::*;

/// Outputs queued, or commits made, before a sync is forced, whatever else is waiting
/// in the mailbox: bounds the latency one burst adds (about 128 received messages: each
/// is a `message` event and a `DeliveryAck`).
pub const MAX_BATCH: usize = 256;

/// Exit code of an agent whose state could not be synced to disk.
pub const EXIT_SYNC_FAILED: i32 = 3;

/// One output of the agent.
enum Out {
    /// An event, and the id of the bot command it answers.
    Event(Event, Option<serde_json::Value>),
    /// A received text: recorded as shown, then printed.
    Shown {
        sender: Box<IdentityKey>,
        message_id: [u8; 16],
        event: Event,
    },
    Frame(Frame),
    Raw(String),
}

/// Outputs waiting for a sync, in order, and the address to ask ourselves for a flush.
#[derive(Default)]
pub(super) struct Outflow {
    queue: RefCell<VecDeque<Out>>,
    flush_requested: Cell<bool>,
    me: Option<WeakAddr<AgentActor>>,
}

impl Outflow {
    /// Where [`Flush`] requests go (set when the actor starts).
    pub(super) fn attach(&mut self, me: WeakAddr<AgentActor>) {
        self.me = Some(me);
    }
}

/// Syncs the state and releases every output queued before this message.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {
        self.flush();
    }
}

impl AgentActor {
    /// Prints `event` (once the state is synced).
    pub(super) fn emit(&self, event: Event) {
        let tags = &self.tags;
        let id = (tags.current())
            .or_else(|| event.sent_msg_id().and_then(|msg_id| tags.of_message(msg_id)))
            .cloned();
        self.out(Out::Event(event, id));
    }

    /// Prints `event` as the answer to the bot command `id`.
    pub(super) fn emit_tagged(&self, event: Event, id: Option<serde_json::Value>) {
        self.out(Out::Event(event, id));
    }

    /// Sends `frame` to the relay (once the state is synced).
    pub(super) fn to_relay(&self, frame: Frame) {
        self.out(Out::Frame(frame));
    }

    /// Prints raw text in human mode (once the state is synced).
    pub(super) fn raw(&self, text: String) {
        self.out(Out::Raw(text));
    }

    /// Shows a received text (`event`): recorded as shown just before it is printed.
    pub(super) fn show(&mut self, sender: IdentityKey, message_id: [u8; 16], event: Event) {
        if let Event::Message { from, .. } = &event {
            self.overview.received(from);
        }
        let out = Out::Shown {
            sender: Box::new(sender),
            message_id,
            event,
        };
        if self.must_wait() {
            self.queue(out);
        } else {
            self.release(out);
            self.settle_shown();
        }
    }

    /// Syncs the state and releases what waited for it, in order. A failed sync ends
    /// the agent ([`EXIT_SYNC_FAILED`]): its commits may or may not be on disk, so
    /// nothing that depends on them may leave, and a later sync could not tell (the
    /// kernel may report a lost write only once).
    pub(super) fn flush(&mut self) {
        self.outflow.flush_requested.set(false);
        if let Err(err) = self.state.sync() {
            self.sink.emit(&Event::error(format!(
                "cannot sync the state to disk: {err}; stopping, without sending, acknowledging \
                 or showing what depends on it (a restart takes up from what is on disk)"
            )));
            self.sink.close_terminal();
            std::process::exit(EXIT_SYNC_FAILED);
        }
        loop {
            let next = self.outflow.queue.borrow_mut().pop_front();
            match next {
                Some(out) => self.release(out),
                None => break,
            }
        }
        self.settle_shown();
    }

    /// Deletes the `unshown` rows of the texts printed (after a burst).
    fn settle_shown(&mut self) {
        if let Err(err) = self.state.settle_shown() {
            // Tried again after the next burst, and at start.
            debug!(self.log, "cannot delete the rows of texts shown"; "err" => %err);
        }
    }

    /// Syncs now if a burst has queued [`MAX_BATCH`] outputs or made as many commits
    /// (a burst of `/msg` lines beyond the send window queues no more outputs, but its
    /// first ones must not wait for the whole burst).
    pub(super) fn flush_if_full(&mut self) {
        let queued = self.outflow.queue.borrow().len();
        if queued >= MAX_BATCH || (queued > 0 && self.state.unsynced_commits() >= MAX_BATCH) {
            self.flush();
        }
    }

    fn must_wait(&self) -> bool {
        self.state.needs_sync() || !self.outflow.queue.borrow().is_empty()
    }

    fn out(&self, out: Out) {
        if self.must_wait() {
            self.queue(out);
        } else {
            self.deliver(out);
        }
    }

    fn queue(&self, out: Out) {
        self.outflow.queue.borrow_mut().push_back(out);
        if !self.outflow.flush_requested.replace(true) {
            // Behind what the mailbox holds now: those messages join this sync.
            match self.outflow.me.as_ref().and_then(WeakAddr::upgrade) {
                Some(me) => me.do_send(Flush),
                None => self.outflow.flush_requested.set(false),
            }
        }
    }

    fn release(&mut self, out: Out) {
        let Out::Shown {
            sender,
            message_id,
            event,
        } = out
        else {
            return self.deliver(out);
        };
        // The line is made first, so that only the return from the record's write and
        // the print's write lie between the two (`store::shown_log`).
        let line = self.sink.render(&event);
        if let Err(err) = self.state.shown(&sender, &message_id) {
            // A restart may show it again.
            debug!(self.log, "cannot record a message as shown"; "err" => %err);
        }
        self.sink.print(&line);
        // Printed; its `DeliveryAck` is released after it.
        crash_point::reached("receive.after_show");
    }

    fn deliver(&self, out: Out) {
        match out {
            Out::Event(event, id) => self.sink.emit_tagged(&event, id.as_ref()),
            Out::Shown { event, .. } => self.sink.emit(&event),
            Out::Frame(frame) => {
                if let Some(link) = &self.link {
                    link.do_send(Outbound(frame));
                }
            }
            Out::Raw(text) => self.sink.raw(&text),
        }
    }
}
