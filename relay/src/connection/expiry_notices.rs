//! The Connection's expiry notices (docs/PROTOCOL.md 1.6): to a client that asked for
//! them (`ExpiredAck { through: 0 }`), the messages it sent that expired unread, as
//! `Expired` frames, one page of at most `MAX_EXPIRED_NOTICES` at a time; deleted when
//! the client acknowledges them, sent again on its next connection otherwise.

use e2ee_protocol::frame::MAX_EXPIRED_NOTICES;

use super::*;

/// Where a connection is with its client's expiry notices.
#[derive(Default)]
pub(super) struct ExpiryNotices {
    /// The client asked for notices on this connection.
    subscribed: bool,
    /// A page is being loaded.
    loading: bool,
    /// The last notice sent on this connection (pages after it are loaded next).
    sent_through: u64,
    /// The last notice the client acknowledged on this connection.
    acked_through: u64,
    /// The relay's count of expired messages when notices were last loaded: the
    /// heartbeat tick loads again only when it changed.
    expired_seen: u64,
}

impl Connection {
    /// `ExpiredAck { through }`: 0 subscribes this connection (once); otherwise the
    /// notices up to `through` (at most the last one sent here) are deleted and the next
    /// page follows. Free of request tokens, so never refused: what a client can make
    /// the relay do with it is one load per connection and one write per page sent.
    pub(super) fn on_expired_ack(&mut self, me: IdentityBytes, through: u64, ctx: &mut Context<Self>) {
        if through == 0 {
            if !self.notices.subscribed {
                self.notices.subscribed = true;
                self.load_notices(me, ctx);
            }
            return;
        }
        let through = through.min(self.notices.sent_through);
        if through <= self.notices.acked_through {
            return;
        }
        self.notices.acked_through = through;
        self.write(
            WriteOp::AckExpired { sender: me, through },
            Written::NoticesRead,
            ctx,
        );
    }

    /// The acknowledgement of notices is stored: the next page, if any.
    pub(super) fn on_notices_read(&mut self, outcome: WriteOutcome, ctx: &mut Context<Self>) {
        if let Err(err) = outcome {
            warn!(self.log, "expiry notices not deleted"; "err" => %err);
        }
        if let Some(me) = self.identity() {
            self.load_notices(me, ctx);
        }
    }

    /// Called on the heartbeat tick: loads notices when messages expired since the last
    /// load.
    pub(super) fn check_notices(&mut self, ctx: &mut Context<Self>) {
        let expired = self.relay.metrics.messages_expired.get();
        if self.notices.subscribed && expired != self.notices.expired_seen {
            if let Some(me) = self.identity() {
                self.load_notices(me, ctx);
            }
        }
    }

    fn load_notices(&mut self, me: IdentityBytes, ctx: &mut Context<Self>) {
        if !self.notices.subscribed || self.notices.loading || self.closing {
            return;
        }
        self.notices.loading = true;
        self.notices.expired_seen = self.relay.metrics.messages_expired.get();
        let load = LoadExpired {
            sender: me,
            after: self.notices.sent_through,
            limit: MAX_EXPIRED_NOTICES,
        };
        ctx.spawn(self.relay.store.send(load).into_actor(self).map(|res, act, ctx| {
            act.notices.loading = false;
            let Ok(Ok(page)) = res else {
                return act.close(
                    ErrorCode::Internal,
                    "store failure while loading expiry notices",
                    ctx,
                );
            };
            let Some(&(through, _)) = page.last() else {
                return;
            };
            act.notices.sent_through = through;
            let notices = page.into_iter().map(|(_, notice)| notice).collect();
            act.send(Frame::Expired { through, notices }, ctx);
        }));
    }
}
