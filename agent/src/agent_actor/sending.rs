//! Sending: a text or receipt to a peer by name, encrypted and committed with its
//! outbox entry before it leaves (docs/AGENT.md 5), and resending what the relay refused.

use super::*;

impl AgentActor {
    pub(super) fn queue_send(&mut self, peer: String, pending: PendingSend, ctx: &mut Context<Self>) {
        if let Err(err) = validate_name(&peer) {
            return self.fail_send(&peer, pending, &format!("invalid peer name: {err}"));
        }
        if peer == self.state.name() {
            return self.fail_send(&peer, pending, "cannot send a message to yourself");
        }
        if !self.state.pending_changes(&peer).is_empty() {
            return self.fail_send(&peer, pending, &held_reason(&peer));
        }
        let ready = self
            .state
            .pin(&peer)
            .map(|pin| pin.identity)
            .filter(|id| self.state.has_session(id));
        match ready {
            Some(identity) => {
                // The pinned key is used at once; the registry is asked once per
                // connection, so that a new holder of the name is noticed (section 6 of
                // docs/AGENT.md) without delaying the message.
                if matches!(pending.body, Body::Text(_)) && self.names_checked.insert(peer.clone()) {
                    self.resolve(&peer, ctx);
                }
                self.send_now(&peer, identity, pending)
            }
            None => {
                self.waiting.entry(peer.clone()).or_default().push_back(pending);
                self.resolve(&peer, ctx);
            }
        }
    }

    /// A text that was never encrypted nor sent fails: one `send_failed`, without an id
    /// (the id it would have had names nothing the relay or the peer ever saw).
    pub(super) fn fail_send(&self, peer: &str, pending: PendingSend, reason: &str) {
        if matches!(pending.body, Body::Text(_)) {
            let event = Event::SendFailed {
                to: peer.to_string(),
                msg_id: String::new(),
                reason: reason.to_string(),
                code: None,
            };
            self.emit_tagged(event, pending.tag.clone());
        }
        if let Some(reply) = pending.reply {
            let _ = reply.send(Err(reason.to_string()));
        }
    }

    pub(super) fn fail_waiting(&mut self, peer: &str, reason: &str) {
        for pending in self.waiting.remove(peer).unwrap_or_default() {
            self.fail_send(peer, pending, reason);
        }
    }

    /// Encrypts (persisting the advanced session and the outbox entry first) and sends.
    pub(super) fn send_now(&mut self, peer: &str, identity: IdentityKey, pending: PendingSend) {
        let now = now_ms();
        let visible = matches!(pending.body, Body::Text(_));
        let payload = match &pending.body {
            Body::Text(text) => Payload::text(pending.msg_id, now, text),
            Body::Receipt(target) => Payload::receipt(pending.msg_id, now, *target),
        };
        if let Body::Receipt(_) = pending.body {
            // Best effort: never kept in the outbox (see `encrypt_best_effort`), and not
            // sent past texts that wait in the send window (it would overtake them in
            // the chain by as many positions) nor during a pause (it would be refused).
            if self
                .window
                .holds_back(identity.as_bytes(), std::time::Instant::now())
            {
                debug!(self.log, "receipt not sent: the send window holds the peer back"; "peer" => peer);
                return;
            }
            match self.state.encrypt_best_effort(&identity, &payload) {
                Ok(wire) => self.to_relay(Frame::Send {
                    recipient: *identity.as_bytes(),
                    msg_id: pending.msg_id,
                    payload: wire,
                }),
                Err(err) => debug!(self.log, "receipt not sent"; "peer" => peer, "err" => %err),
            }
            return;
        }
        match self.state.encrypt(&identity, &payload) {
            Ok(entry) => {
                crash_point::reached("send.after_commit");
                self.window.push(entry.msg_id, *identity.as_bytes());
                self.pump();
                if let Some(id) = pending.tag {
                    self.tags.sent(msg_id_hex(&pending.msg_id), id);
                }
                self.unacked.insert(
                    pending.msg_id,
                    Unacked {
                        to: peer.to_string(),
                        visible,
                        reply: pending.reply,
                        deferred: false,
                    },
                );
                // Held back here rather than refused by the relay: told the same way.
                let now = std::time::Instant::now();
                if !self.connected {
                    self.report_deferred(pending.msg_id, "not_connected", 0);
                } else if let Some((code, until)) = self.window.pause_of(identity.as_bytes(), now) {
                    let ms =
                        u32::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u32::MAX);
                    self.report_deferred(pending.msg_id, code, ms);
                }
            }
            Err(err) if err.is_retryable() => {
                let reason = format!("cannot save the message to {peer}, nothing was sent: {err}");
                self.fail_send(peer, pending, &reason);
            }
            Err(err) => {
                let reason = format!("cannot encrypt: {err}");
                self.fail_send(peer, pending, &reason);
            }
        }
    }

    pub(super) fn flush_waiting(&mut self, peer: &str, identity: IdentityKey) {
        for pending in self.waiting.remove(peer).unwrap_or_default() {
            self.send_now(peer, identity, pending);
        }
    }

    // ---- peers ----------------------------------------------------------------------
}
