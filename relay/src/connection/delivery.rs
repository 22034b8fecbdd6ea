//! The Connection's deliveries: stored messages drained in order, then live ones pushed,
//! bounded by the output budget and the unacknowledged-message limit (docs/PROTOCOL.md
//! 1.6).

use super::*;

impl Deliveries {
    /// An acknowledgement is committed: the store no longer holds the message. A drain
    /// step under way may have read it before that commit, and must still skip it.
    pub(super) fn ack_committed(&mut self, key: (IdentityBytes, MsgId)) {
        self.acking.remove(&key);
        if self.draining {
            self.acked_while_draining.insert(key);
        }
    }

    /// A drain step's rows have arrived: the acknowledgements committed while it read,
    /// whose messages its rows may still hold.
    fn drain_read(&mut self) -> HashSet<(IdentityBytes, MsgId), ahash::RandomState> {
        self.draining = false;
        std::mem::take(&mut self.acked_while_draining)
    }

    /// Whether a stored message a drain step read was already delivered on this
    /// connection: written and not acknowledged, or acknowledged (`acked_meanwhile`
    /// from [`Deliveries::drain_read`]).
    fn delivered(
        &self,
        key: &(IdentityBytes, MsgId),
        acked_meanwhile: &HashSet<(IdentityBytes, MsgId), ahash::RandomState>,
    ) -> bool {
        self.in_flight.contains_key(key) || self.acking.contains(key) || acked_meanwhile.contains(key)
    }
}

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
            let acked_meanwhile = act.deliveries.drain_read();
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
                if act.deliveries.delivered(&key, &acked_meanwhile) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_acknowledged_while_the_queue_is_read_is_not_delivered_again() {
        let key = ([1; 32], [2; 16]);
        let mut d = Deliveries::default();
        // Delivered live, then a drain step starts reading the queue from an older mark.
        d.in_flight.insert(key, 7);
        d.draining = true;
        // The client acknowledges it and the commit is done before the step's rows,
        // read before that commit and holding the message, are handled.
        d.in_flight.remove(&key);
        d.acking.insert(key);
        d.ack_committed(key);
        assert!(!d.acking.contains(&key));
        let acked_meanwhile = d.drain_read();
        assert!(!d.draining);
        assert!(d.delivered(&key, &acked_meanwhile), "skipped, not written again");
        // The next step reads after the commit: nothing is kept for it.
        d.draining = true;
        assert!(d.drain_read().is_empty());
        // An acknowledgement committed with no step under way is not kept either.
        d.acking.insert(key);
        d.ack_committed(key);
        assert!(d.acked_while_draining.is_empty());
    }
}
