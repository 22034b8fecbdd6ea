//! The Connection's deliveries: stored messages drained in order, then live ones pushed,
//! bounded by the output budget and the unacknowledged-message limit (docs/PROTOCOL.md
//! 1.6).

use super::*;

impl Connection {
    /// Offers a live push: written at once when possible, else left to the next drain.
    pub(super) fn offer(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        let d = &mut self.deliveries;
        let key = (delivery.sender, delivery.msg_id);
        if !d.live {
            d.missed = true;
            return;
        }
        if delivery.seq <= d.drain_mark || d.in_flight.contains_key(&key) || d.acking.contains(&key) {
            return;
        }
        if d.in_flight.len() >= self.relay.limits.max_unacked {
            d.live = false;
            d.missed = true;
            return;
        }
        if !self.output.has_room_for_deliveries() {
            d.live = false;
            d.missed = true;
            return self.wait_for_output(ctx);
        }
        self.write_delivery(delivery, ctx);
    }

    /// Writes no stored message until the client has read enough of its output (below
    /// half the budget), then drains the queue again; the messages not written stay
    /// stored. However slowly the client reads, this only paces it: a client that stops
    /// reading altogether is cut off by the writer task, whose every write must complete
    /// within the write timeout (`SlowConsumer`), and its messages wait for its next
    /// connection.
    pub(super) fn wait_for_output(&mut self, ctx: &mut Context<Self>) {
        if self.deliveries.waiting_output {
            return;
        }
        self.deliveries.waiting_output = true;
        ctx.spawn(self.output.drained().into_actor(self).map(|(), act, ctx| {
            act.deliveries.waiting_output = false;
            act.start_drain(ctx);
        }));
    }

    pub(super) fn write_delivery(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        let (key, seq) = ((delivery.sender, delivery.msg_id), delivery.seq);
        if self.send_out(Outgoing::Deliver(delivery), ctx) {
            self.deliveries.in_flight.insert(key, seq);
            self.relay.metrics.messages_delivered.inc();
        }
    }

    /// Loads the next page of the stored queue and writes it, in order.
    pub(super) fn start_drain(&mut self, ctx: &mut Context<Self>) {
        let Some(me) = self.identity() else { return };
        // (A replaced connection delivers nothing more: `handover` is set.)
        if self.deliveries.draining
            || self.closing
            || self.deliveries.waiting_output
            || self.handover.is_some()
        {
            return;
        }
        if !self.output.has_room_for_deliveries() {
            self.deliveries.live = false;
            self.deliveries.missed = true;
            return self.wait_for_output(ctx);
        }
        self.deliveries.draining = true;
        self.deliveries.live = false;
        self.deliveries.missed = false;
        let ttl_ms = self.relay.limits.message_ttl_secs.saturating_mul(1000);
        let load = LoadPending {
            recipient: me,
            after: self.deliveries.drain_mark,
            limit: DRAIN_PAGE,
            not_before_ms: crate::now_ms().saturating_sub(ttl_ms),
        };
        ctx.spawn(self.relay.store.send(load).into_actor(self).map(|res, act, ctx| {
            act.deliveries.draining = false;
            let Ok(Ok(rows)) = res else {
                return act.close(ErrorCode::Internal, "store failure while loading the queue", ctx);
            };
            let page_full = rows.len() == DRAIN_PAGE;
            let max = act.relay.limits.max_unacked;
            let mut stopped = false;
            for row in rows {
                if act.closing || act.handover.is_some() {
                    return;
                }
                if act.deliveries.in_flight.len() >= max {
                    stopped = true;
                    break;
                }
                if !act.output.has_room_for_deliveries() {
                    act.deliveries.missed = true;
                    act.wait_for_output(ctx);
                    return;
                }
                act.deliveries.drain_mark = row.seq;
                let key = (row.sender, row.msg_id);
                if act.deliveries.in_flight.contains_key(&key) || act.deliveries.acking.contains(&key) {
                    continue;
                }
                act.write_delivery(
                    Delivery {
                        seq: row.seq,
                        sender: row.sender,
                        msg_id: row.msg_id,
                        timestamp_ms: row.timestamp_ms,
                        payload: row.payload,
                    },
                    ctx,
                );
            }
            if stopped {
                // Resumed by acknowledgements.
                act.deliveries.missed = true;
            } else if page_full || act.deliveries.missed {
                act.start_drain(ctx);
            } else if act.handover.is_none() {
                act.deliveries.live = true;
            }
        }));
    }
}
