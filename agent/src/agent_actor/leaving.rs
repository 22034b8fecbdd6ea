//! Leaving: at the end of stdin, `/quit` or the end of a script, the agent waits (at
//! most `leave_wait_ms`) until the relay has stored its outbox and the messages still
//! waiting for a peer's name or bundle have been encrypted and sent; then it reports
//! what is left: outbox entries as `unsent` (kept for the next start), messages never
//! encrypted as `send_failed` (they exist only in memory).

use std::time::Duration;

use super::*;

/// Wait until everything written has been stored at the relay, at most `wait`; the
/// answer is the number of messages left (reported as `unsent` and `send_failed`).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Leave {
    /// The longest wait.
    pub wait: Duration,
}

impl Handler<Leave> for AgentActor {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) -> Self::Result {
        self.flush();
        let (tx, rx) = oneshot::channel();
        self.leave_waiters.push(tx);
        self.settle_leave();
        let waited = async move {
            let _ = tokio::time::timeout(msg.wait, rx).await;
        };
        Box::pin(actix::fut::wrap_future::<_, Self>(waited).map(|(), act, _| act.report_left()))
    }
}

impl AgentActor {
    /// True when nothing written waits: the outbox is empty and no message waits for a
    /// peer's name or bundle.
    fn settled(&self) -> bool {
        self.state.outbox_is_empty() && self.waiting.values().all(VecDeque::is_empty)
    }

    /// Lets the `Leave` waits end once nothing written waits any more.
    pub(super) fn settle_leave(&mut self) {
        if !self.leave_waiters.is_empty() && self.settled() {
            for waiter in self.leave_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    /// Reports what is left on leaving, and flushes (everything that waited for the
    /// state's sync is printed and sent); returns how many messages are left.
    fn report_left(&mut self) -> usize {
        let unsent: Vec<String> = (self.state.outbox().into_iter())
            .filter(|entry| entry.text)
            .map(|entry| msg_id_hex(&entry.msg_id))
            .collect();
        let mut left = unsent.len();
        if !unsent.is_empty() {
            self.emit(Event::Unsent {
                count: unsent.len(),
                msg_ids: unsent,
            });
        }
        let waiting: Vec<(String, PendingSend)> = (self.waiting.drain())
            .flat_map(|(peer, queue)| queue.into_iter().map(move |p| (peer.clone(), p)))
            .collect();
        for (peer, pending) in waiting {
            if matches!(pending.body, Body::Text(_)) {
                left += 1;
            }
            let reason = format!("the agent left before {peer} could be reached; nothing was sent");
            self.fail_send(&peer, pending, &reason);
        }
        self.emit(Event::Goodbye {
            unsent: self.state.outbox().iter().filter(|e| e.text).count(),
        });
        self.flush();
        left
    }
}
