//! Receiving: deliveries decrypted and shown (or held, or kept for a retry when the
//! state cannot be written), reverse lookups of unknown senders, receipts.

use super::*;

impl AgentActor {
    pub(super) fn on_deliver(&mut self, sender: [u8; 32], msg_id: [u8; 16], wire: &[u8]) {
        if Self::is_group_payload(wire) {
            return self.on_group_payload(sender, msg_id, wire);
        }
        if self.write_retry.is_holding() {
            // Behind the messages that could not be saved: kept, in arrival order.
            let delivery = KeptDelivery {
                sender,
                msg_id,
                wire: wire.to_vec(),
            };
            self.write_retry.keep(delivery, std::time::Instant::now());
            return;
        }
        let ack = Frame::DeliveryAck { sender, msg_id };
        let known = self.state.known_identity(&sender);
        let Some(identity) = known.or_else(|| IdentityKey::from_bytes(sender).ok()) else {
            self.report_failure(
                sender_hex(&sender),
                String::new(),
                FailureClass::Malformed,
                "invalid sender identity",
            );
            return self.to_relay(ack);
        };
        if let Some(name) = self.state.rejected_name_of(&identity) {
            self.report_failure(
                name.clone(),
                identity_hex(&identity),
                FailureClass::IdentityChanged,
                &format!("from an identity you rejected for {name}"),
            );
            return self.to_relay(ack);
        }
        if let Some(name) = self.state.pending_name_of(&identity) {
            return self.hold(name, identity, msg_id, wire);
        }
        if self.state.name_of(&identity).is_none() && !self.anonymous.contains(&identity) {
            // Who is this? Only the relay's registry can say: ask it, and keep the
            // message (unacknowledged) until the answer comes.
            return self.look_up_sender(identity, msg_id, wire);
        }
        self.decrypt_and_show(identity, msg_id, wire);
    }

    /// Keeps a message of a pending identity change undecrypted until the user decides.
    pub(super) fn hold(&mut self, name: String, identity: IdentityKey, msg_id: [u8; 16], wire: &[u8]) {
        let held = HeldMessage {
            name: name.clone(),
            sender: identity,
            msg_id,
            wire: wire.to_vec(),
            held_ms: now_ms(),
        };
        match self.state.hold_message(held) {
            Ok(true) => {
                self.emit(Event::MessageHeld {
                    from: name,
                    from_identity: identity_hex(&identity),
                    msg_id: msg_id_hex(&msg_id),
                });
                self.to_relay(Frame::DeliveryAck {
                    sender: *identity.as_bytes(),
                    msg_id,
                });
            }
            // Full: acknowledged and deleted. Left at the relay it would count against
            // the messages in flight there and stall every other sender's deliveries.
            Ok(false) => {
                self.emit(Event::HeldDiscarded {
                    from: name,
                    from_identity: identity_hex(&identity),
                    msg_id: msg_id_hex(&msg_id),
                    held: HELD_PER_NAME,
                });
                self.to_relay(Frame::DeliveryAck {
                    sender: *identity.as_bytes(),
                    msg_id,
                });
            }
            Err(err) if err.is_retryable() => {
                let what = format!("a held message from the new identity of {name}");
                self.keep_unsaved(identity, msg_id, wire, &what, &err);
            }
            Err(err) => self.emit(Event::error(format!(
                "cannot save a held message from the new identity of {name}: {err}"
            ))),
        }
    }

    /// A delivery that could not be saved because the state refused a write that may
    /// succeed later: kept unacknowledged and retried (`write_retry`); the first of a
    /// failure episode is reported.
    pub(super) fn keep_unsaved(
        &mut self,
        sender: IdentityKey,
        msg_id: [u8; 16],
        wire: &[u8],
        what: &str,
        err: &StateError,
    ) {
        let delivery = KeptDelivery {
            sender: *sender.as_bytes(),
            msg_id,
            wire: wire.to_vec(),
        };
        match self.write_retry.keep(delivery, std::time::Instant::now()) {
            Kept::First => self.emit(Event::error(format!(
                "cannot save {what} ({}): {err}; it is kept unacknowledged, with the messages after it, \
                 and processed when the state can be written again",
                msg_id_hex(&msg_id)
            ))),
            Kept::Full => {
                debug!(self.log, "kept deliveries full: left at the relay"; "msg_id" => msg_id_hex(&msg_id))
            }
            Kept::Again | Kept::Known => {}
        }
    }

    /// Processes the kept deliveries when their retry is due; reports the end of the
    /// failure episode once all of them were processed (including those that waited
    /// for the name of their sender).
    pub(super) fn retry_kept(&mut self) {
        if let Some(due) = self.write_retry.take_due(std::time::Instant::now()) {
            for delivery in due {
                self.on_deliver(delivery.sender, delivery.msg_id, &delivery.wire);
            }
        }
        if self.unresolved.is_empty() && self.write_retry.settle() {
            self.emit(Event::info(
                "the state can be written again: the messages kept meanwhile are processed",
            ));
        }
    }

    pub(super) fn look_up_sender(&mut self, identity: IdentityKey, msg_id: [u8; 16], wire: &[u8]) {
        if !self.connected {
            // Left unacknowledged: the relay delivers it again on the next connection.
            return;
        }
        let queued: usize = self.unresolved.values().map(VecDeque::len).sum();
        if queued >= UNRESOLVED_LIMIT {
            // Too many senders waiting for their names (a flood of throwaway identities):
            // waiting longer would keep these deliveries unacknowledged and fill the
            // relay's window for this connection, stalling known peers behind them. So
            // this one is processed now, shown under the sender's fingerprint label.
            self.decrypt_and_show(identity, msg_id, wire);
            return;
        }
        self.unresolved.entry(identity).or_default().push_back(Delivery {
            msg_id,
            wire: wire.to_vec(),
        });
        self.ask_next_names();
    }

    /// Asks the relay's registry which name is bound to `identity` (answered by
    /// `NameClaim`, handled in [`AgentActor::on_reverse_lookup`]).
    pub(super) fn ask_name_of(&mut self, identity: IdentityKey) {
        let request_id = self.request_id();
        self.reverse_lookups.insert(request_id, identity);
        self.reverse_sent.insert(request_id, std::time::Instant::now());
        self.to_relay(Frame::LookupIdentity {
            request_id,
            identity: *identity.as_bytes(),
        });
    }

    /// Reverse lookups unanswered for [`LOOKUP_TIMEOUT`] count as answered "no name"
    /// (a relay that stays silent must not hold deliveries for good).
    pub(super) fn expire_lookups(&mut self) {
        // (Also the tick at which a `Leave` notices messages failed by a timeout.)
        self.settle_leave();
        let now = std::time::Instant::now();
        let expired: Vec<u32> = (self.reverse_sent.iter())
            .filter(|(_, sent)| now.duration_since(**sent) >= LOOKUP_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for request_id in expired {
            self.reverse_sent.remove(&request_id);
            if let Some(identity) = self.reverse_lookups.remove(&request_id) {
                debug!(self.log, "reverse lookup unanswered"; "identity" => identity.short());
                self.on_reverse_lookup(identity, None);
            }
        }
    }

    /// The registry's answer to a reverse lookup of `identity`: bind the name it gives
    /// (as for a lookup by name), then process the deliveries that waited for it.
    pub(super) fn on_reverse_lookup(&mut self, identity: IdentityKey, claim: Option<Vec<u8>>) {
        self.on_reverse_lookup_of_sender(identity, claim);
        self.group_member_named(&identity);
    }

    fn on_reverse_lookup_of_sender(&mut self, identity: IdentityKey, claim: Option<Vec<u8>>) {
        let claim = claim.and_then(|bytes| NameClaim::decode_verified(&bytes).ok());
        match claim {
            Some(claim) if claim.identity == identity && claim.name != self.state.name() => {
                if self.bind(&claim.name, identity) == Binding::Unsaved {
                    // Kept unacknowledged and retried (`bind` reported why).
                    let now = std::time::Instant::now();
                    for delivery in self.unresolved.remove(&identity).unwrap_or_default() {
                        let kept = KeptDelivery {
                            sender: *identity.as_bytes(),
                            msg_id: delivery.msg_id,
                            wire: delivery.wire,
                        };
                        self.write_retry.keep(kept, now);
                    }
                    return self.ask_next_names();
                }
                let name = claim.name;
                self.resolve_waiters(|what| matches!(what, WaitFor::Peer { peer } if *peer == name));
            }
            Some(_) => {
                self.emit(Event::error(format!(
                    "the relay answered the lookup of {} with a claim of another identity or of our own name: ignored",
                    identity.short()
                )));
                self.anonymous.insert(identity);
            }
            None => {
                self.anonymous.insert(identity);
            }
        }
        for delivery in self.unresolved.remove(&identity).unwrap_or_default() {
            self.on_deliver(*identity.as_bytes(), delivery.msg_id, &delivery.wire);
        }
        self.ask_next_names();
    }

    pub(super) fn decrypt_and_show(&mut self, identity: IdentityKey, msg_id: [u8; 16], wire: &[u8]) -> bool {
        let ack = Frame::DeliveryAck {
            sender: *identity.as_bytes(),
            msg_id,
        };
        let from = self.display_name(&identity);
        if Self::is_reset_request(wire) {
            self.on_reset_request(identity, wire);
            self.to_relay(ack);
            return true;
        }
        match self.state.decrypt(&identity, msg_id, wire, &mut OsRng) {
            Ok(incoming) => {
                crash_point::reached("receive.after_commit");
                self.recovery.healed(&identity);
                let new_session = incoming.new_session;
                if incoming.given_up > 0 {
                    self.emit(Event::MessagesLost {
                        from: from.clone(),
                        from_identity: identity_hex(&identity),
                        count: incoming.given_up,
                    });
                }
                self.on_plaintext(identity, incoming.payload, incoming.newly_skipped, incoming.late);
                if new_session {
                    let from = self.display_name(&identity);
                    self.emit(Event::info(format!(
                        "{from} started a new session with us (X3DH from a PreKey message)"
                    )));
                }
                self.to_relay(ack);
                true
            }
            Err(ReceiveError::Failed(failure)) if failure.redelivery => {
                self.emit(Event::Redelivered {
                    from,
                    from_identity: identity_hex(&identity),
                    msg_id: msg_id_hex(&msg_id),
                });
                self.to_relay(ack);
                true
            }
            Err(ReceiveError::Failed(failure)) => {
                self.report_failure(from, identity_hex(&identity), failure.class, &failure.detail);
                if let Some(reason) = failure.cure {
                    self.request_reset(identity, wire, reason);
                }
                self.to_relay(ack);
                true
            }
            Err(ReceiveError::State(err)) if err.is_retryable() => {
                // Not acknowledged; kept and retried until the state can be written.
                self.keep_unsaved(identity, msg_id, wire, &format!("a message from {from}"), &err);
                false
            }
            Err(ReceiveError::State(err)) => {
                // Not acknowledged: the relay delivers it again once the state can be saved.
                self.emit(Event::error(format!(
                    "cannot save state for a message from {from}: {err}"
                )));
                false
            }
        }
    }

    pub(super) fn report_failure(
        &mut self,
        from: String,
        from_identity: String,
        class: FailureClass,
        detail: &str,
    ) {
        self.emit(Event::DecryptFailure {
            from: from.clone(),
            from_identity,
            class,
            detail: detail.to_string(),
        });
        if !self.resolve_first(
            |what| matches!(what, WaitFor::Failure { peer, class: c } if *peer == from && *c == class),
        ) {
            push_bounded(&mut self.failures, (from, class));
        }
    }

    pub(super) fn on_plaintext(
        &mut self,
        sender: IdentityKey,
        payload: Payload,
        newly_skipped: u32,
        late: bool,
    ) {
        match payload.content_type {
            ContentType::Control => {
                if payload.body.starts_with(LEGACY_CLAIM_PREFIX) {
                    debug!(self.log, "ignored an in-band name claim"; "peer" => self.display_name(&sender));
                } else {
                    self.emit(Event::error(format!(
                        "unknown control message from {}",
                        self.display_name(&sender)
                    )));
                }
            }
            ContentType::Receipt => {
                if let Some(target) = payload.receipt_target() {
                    self.emit(Event::Delivered {
                        to: self.display_name(&sender),
                        msg_id: msg_id_hex(&target),
                    });
                }
            }
            ContentType::Text => {
                let from = self.display_name(&sender);
                let text = payload.as_text().unwrap_or_default().to_string();
                let event = Event::Message {
                    from: from.clone(),
                    from_identity: identity_hex(&sender),
                    text: text.clone(),
                    msg_id: msg_id_hex(&payload.message_id),
                    timestamp_ms: payload.timestamp_ms,
                    newly_skipped,
                    late,
                };
                // Recorded as shown just before it is printed (`outflow`).
                self.show(sender, payload.message_id, event);
                let matched = self.resolve_first(
                    |what| matches!(what, WaitFor::Message { peer, text: t } if *peer == from && text.contains(t.as_str())),
                );
                if !matched {
                    self.remember_text(from.clone(), text);
                }
                // An end-to-end receipt (never for receipts, so no loop): to a peer we
                // have written to, and to others only within a small budget, so that
                // identities the user never wrote to cannot make the agent spend its
                // own storage quota at the relay (docs/AGENT.md 6).
                if self.state.is_correspondent(&sender)
                    || self.first_contact_receipts.take(std::time::Instant::now())
                {
                    let receipt = PendingSend {
                        body: Body::Receipt(payload.message_id),
                        msg_id: random_id(),
                        reply: None,
                        tag: None,
                    };
                    self.send_now(&from, sender, receipt);
                }
            }
        }
    }

    // ---- waiters --------------------------------------------------------------------
}
