//! The relay link: connecting (publishing prekeys and our name, resending the outbox),
//! prekey upkeep, the frames the relay sends, and disconnecting.

use super::*;

impl AgentActor {
    pub(super) fn on_connected(&mut self, relay: String, ctx: &mut Context<Self>) {
        self.connected = true;
        self.emit(Event::Connection {
            state: ConnectionState::Connected,
            relay,
            next_relay: None,
            attempt: None,
            retry_in_ms: None,
            reason: None,
        });
        // Every connection publishes the signed prekey (and any one-time prekeys not
        // yet confirmed): a relay that lost its data gets the bundle back, and its
        // PreKeysStored answer says how many one-time prekeys it holds.
        self.stock_checked = false;
        self.maintain_prekeys();
        // Asked before the publication: its answer (PreKeysStored) then shows that the
        // relay read the question and knows the frame (ExpiryNotices::answered).
        if self.expiry.ask() {
            self.to_relay(Frame::ExpiredAck { through: 0 });
        }
        self.to_relay(Frame::PublishPreKeys {
            bundle: self.state.bundle_to_publish().encode(),
        });
        self.announce_own_name(false);
        // Everything the relay has not acknowledged goes again, with the same ids, in
        // outbox order and through the send window.
        let outbox = self.state.outbox();
        for entry in &outbox {
            if !self.unacked.contains_key(&entry.msg_id) {
                let to = self.display_name(&entry.recipient);
                self.unacked.insert(
                    entry.msg_id,
                    Unacked {
                        to,
                        visible: entry.text,
                        reply: None,
                        deferred: false,
                    },
                );
            }
        }
        self.window.restart(
            outbox
                .iter()
                .map(|entry| (entry.msg_id, *entry.recipient.as_bytes())),
        );
        self.pump();
        self.resolve_pending(ctx);
        self.refetch_pending_grants();
        self.groups_on_connected();
    }

    /// Looks up every peer that messages or `wait-peer` steps are waiting for.
    pub(super) fn resolve_pending(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self.waiting.keys().cloned().collect();
        for name in names {
            // A name the registry already answered on this connection needs only its
            // bundle: asking again would spend a request token on the same answer (under
            // a flood of refusals, every retry would).
            let pinned = (self.bound_this_connection.contains(&name))
                .then(|| self.state.pin(&name).map(|pin| pin.identity))
                .flatten();
            match pinned {
                Some(identity) => self.fetch(name, identity),
                None => self.resolve(&name, ctx),
            }
        }
        let peers: Vec<String> = self
            .waiters
            .iter()
            .filter_map(|w| match &w.what {
                WaitFor::Peer { peer } => Some(peer.clone()),
                _ => None,
            })
            .collect();
        for peer in peers {
            self.resolve(&peer, ctx);
        }
        self.ask_next_names();
    }

    /// Starts reverse lookups for the senders waiting for one, at most
    /// [`LOOKUP_WINDOW`] in flight (the rest are asked as answers come).
    pub(super) fn ask_next_names(&mut self) {
        let room = LOOKUP_WINDOW.saturating_sub(self.reverse_lookups.len());
        let asking: HashSet<IdentityKey> = self.reverse_lookups.values().copied().collect();
        let next: Vec<IdentityKey> = self
            .unresolved
            .keys()
            .filter(|id| !asking.contains(*id))
            .take(room)
            .copied()
            .collect();
        for identity in next {
            self.ask_name_of(identity);
        }
    }

    /// The relay refused `msg_id`: with `RateLimited` (`quota: false`; the sender's
    /// token bucket is empty) nothing is sent until `delay_ms` has passed, with
    /// `QuotaExceeded` nothing more to its recipient; then the refused go first, in
    /// order ([`SendWindow`]).
    pub(super) fn refused(&mut self, msg_id: [u8; 16], quota: bool, delay_ms: u32, ctx: &mut Context<Self>) {
        // At least 100 ms, so that a relay answering 0 cannot make a busy loop.
        let delay = Duration::from_millis(u64::from(delay_ms).max(MIN_RETRY_MS));
        let now = std::time::Instant::now();
        if quota {
            self.window.quota_exceeded(msg_id, now, delay);
        } else {
            self.window.rate_limited(msg_id, now, delay);
        }
        let code = if quota { "quota_exceeded" } else { "rate_limited" };
        self.report_deferred(msg_id, code, delay_ms);
        self.pump();
        self.schedule_resume(ctx);
    }

    /// A text that cannot be stored now (the relay refused it, its recipient or all
    /// sending is paused, or there is no connection): one `deferred` event per message
    /// (it stays in the outbox; `sent` follows when the relay stores it), and a script's
    /// `send` that waits for it succeeds now (the message is the outbox's, not the
    /// script's, to deliver: docs/AGENT.md 4).
    pub(super) fn report_deferred(&mut self, msg_id: [u8; 16], code: &str, retry_after_ms: u32) {
        let Some(unacked) = self.unacked.get_mut(&msg_id) else {
            return;
        };
        if let Some(reply) = unacked.reply.take() {
            let _ = reply.send(Ok(msg_id_hex(&msg_id)));
        }
        if !unacked.visible || unacked.deferred {
            return;
        }
        unacked.deferred = true;
        let event = Event::Deferred {
            to: unacked.to.clone(),
            msg_id: msg_id_hex(&msg_id),
            code: code.into(),
            retry_after_ms,
        };
        self.emit(event);
    }

    /// Sets a timer for the end of the next pause of the send window: a new one when
    /// that end is earlier than the timer set (a short rate-limit pause during a long
    /// quota pause); a timer that fires sends what it can and sets the next. A pause that
    /// ended since the last [`AgentActor::pump`] gets a timer too (at once): nothing else
    /// would send what it holds back. None without a connection (the next one starts a
    /// new window).
    pub(super) fn schedule_resume(&mut self, ctx: &mut Context<Self>) {
        if !self.connected {
            return;
        }
        let Some(until) = self.window.next_resume() else {
            return;
        };
        if self.resume_at.is_some_and(|set| set <= until) {
            return;
        }
        self.resume_at = Some(until);
        let now = std::time::Instant::now();
        ctx.run_later(until.saturating_duration_since(now), move |act, ctx| {
            if act.resume_at == Some(until) {
                act.resume_at = None;
            }
            act.pump();
            act.schedule_resume(ctx);
        });
    }

    /// Sends what the send window has room for, in outbox order.
    pub(super) fn pump(&mut self) {
        if !self.connected {
            return;
        }
        for (msg_id, recipient) in self.window.next_batch(std::time::Instant::now()) {
            match self.state.outbox_entry(&msg_id) {
                Some(entry) => self.to_relay(Frame::Send {
                    recipient,
                    msg_id,
                    payload: entry.wire,
                }),
                // Left the outbox meanwhile (stored after all): its slot is free.
                None => {
                    self.window.answered(&msg_id);
                }
            }
        }
    }

    /// Signed prekey hygiene: rotation when due, deletion of retired ones after their
    /// grace period; a new signed prekey is published at once when connected.
    pub(super) fn maintain_prekeys(&mut self) {
        let p = &self.settings.prekeys;
        let (rotation_ms, grace_ms) = (
            p.signed_rotation_secs.saturating_mul(1000),
            p.signed_grace_secs.saturating_mul(1000),
        );
        match self
            .state
            .maintain_signed_prekey(now_ms(), rotation_ms, grace_ms, &mut OsRng)
        {
            Ok(Some(bundle)) => {
                crash_point::reached("prekeys.after_rotation");
                debug!(self.log, "rotated the signed prekey");
                if self.connected {
                    self.to_relay(Frame::PublishPreKeys {
                        bundle: bundle.encode(),
                    });
                }
            }
            Ok(None) => {}
            Err(err) => self.emit(Event::error(format!("cannot rotate the signed prekey: {err}"))),
        }
    }

    /// What the relay says it holds (`remaining`): hand-out bookkeeping of the local
    /// one-time prekeys, then a top-up if it is low.
    pub(super) fn on_prekey_count(&mut self, remaining: u32) {
        let p = &self.settings.prekeys;
        let grace_ms = p.handed_out_grace_secs.saturating_mul(1000);
        let max = p.max_local_one_time as usize;
        match self
            .state
            .age_out_one_time(remaining as usize, now_ms(), grace_ms, max)
        {
            Ok(0) => {}
            Ok(deleted) => debug!(self.log, "deleted handed-out one-time prekeys"; "count" => deleted),
            Err(err) => self.emit(Event::error(format!("cannot save prekey state: {err}"))),
        }
    }

    /// Tops the relay's one-time prekeys up from `remaining` to `prekeys.replenish_to`,
    /// at most once per `prekeys.replenish_min_interval_ms` (a burst of `PreKeysLow`,
    /// each answering a fetch, makes one publication).
    pub(super) fn replenish(&mut self, remaining: u32) {
        self.stock_checked = true;
        let interval = Duration::from_millis(self.settings.prekeys.replenish_min_interval_ms);
        if self.last_replenish.is_some_and(|at| at.elapsed() < interval) {
            debug!(self.log, "replenishing deferred"; "remaining" => remaining);
            return;
        }
        self.last_replenish = Some(std::time::Instant::now());
        let target = self.settings.prekeys.replenish_to as usize;
        debug!(self.log, "replenishing one-time prekeys"; "remaining" => remaining);
        match self.state.replenish(remaining as usize, target, &mut OsRng) {
            Ok(bundle) => {
                crash_point::reached("prekeys.after_replenish");
                self.to_relay(Frame::PublishPreKeys {
                    bundle: bundle.encode(),
                })
            }
            Err(err) => self.emit(Event::error(format!("cannot replenish prekeys: {err}"))),
        }
    }

    /// Forgets the lookups and fetches in flight (their answers will not come).
    pub(super) fn forget_requests(&mut self) {
        self.own_name.forget();
        self.names_checked.clear();
        self.lookups.clear();
        self.lookup_in_flight.clear();
        self.reverse_lookups.clear();
        self.reverse_sent.clear();
        self.fetches.clear();
        self.fetch_in_flight.clear();
        self.away.forget_in_flight();
    }

    /// The connection to `relay` ended (or an attempt failed); `next` is the address of
    /// the next attempt, when reconnecting.
    pub(super) fn on_disconnected(
        &mut self,
        reason: String,
        retry: Option<(u32, Duration)>,
        replaced: bool,
        (relay, next): (String, Option<String>),
    ) {
        self.overview.disconnected(&reason, self.connected, &relay);
        self.connected = false;
        // Answers to these requests are lost; they are asked again after reconnecting.
        self.forget_requests();
        // Deliveries waiting for a sender's name were not acknowledged: the relay sends
        // them again on the next connection.
        self.unresolved.clear();
        self.anonymous.clear();
        self.bound_this_connection.clear();
        self.away.connection_ended();
        debug!(self.log, "disconnected"; "reason" => &reason);
        self.emit(Event::Connection {
            state: if retry.is_some() {
                ConnectionState::Reconnecting
            } else {
                ConnectionState::Disconnected
            },
            // Named only when it is another relay than the one that just failed.
            next_relay: next.filter(|next| *next != relay),
            relay,
            attempt: retry.map(|(attempt, _)| attempt),
            retry_in_ms: retry.map(|(_, delay)| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            reason: Some(reason.clone()),
        });
        // Texts a `send` step waits for: they stay in the outbox for the next connection.
        let waiting: Vec<[u8; 16]> = (self.unacked.iter())
            .filter(|(_, u)| u.reply.is_some())
            .map(|(id, _)| *id)
            .collect();
        for msg_id in waiting {
            self.report_deferred(msg_id, "not_connected", 0);
        }
        if replaced {
            self.emit(Event::error(format!(
                "the relay closed this connection because another agent authenticated with this \
                 identity (is a copy of this state directory running elsewhere? two copies would \
                 take each other's messages); not reconnecting: stop the other copy, then \
                 restart this agent ({reason})"
            )));
        }
    }

    /// After the relay stored a message to `peer`: asks it how long the peer's pinned
    /// identity has been away, at most once per peer every ten minutes of a connection
    /// (answered by `Away`, reported as `recipient_away` when the peer is away).
    pub(super) fn ask_away(&mut self, peer: &str) {
        let Some(identity) = self.state.pin(peer).map(|pin| pin.identity) else {
            return;
        };
        if !self.away.should_ask(&identity, std::time::Instant::now()) {
            return;
        }
        let request_id = self.request_id();
        self.away.asking(request_id, peer.to_string(), identity);
        self.to_relay(Frame::QueryAway {
            request_id,
            identity: *identity.as_bytes(),
        });
    }

    pub(super) fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        match frame {
            Frame::Deliver {
                sender,
                msg_id,
                payload,
                ..
            } => self.on_deliver(sender, msg_id, &payload),
            Frame::SentAck { msg_id } if self.on_group_stored(&msg_id) => {}
            Frame::GroupEpoch { msg_id, epoch } => self.on_group_epoch(msg_id, epoch, ctx),
            Frame::KeyPackageCount { remaining } => self.on_key_package_count(remaining),
            Frame::KeyPackage { request_id, package } => self.on_key_package(request_id, package),
            Frame::SentAck { msg_id } => {
                crash_point::reached("send.before_sent_ack");
                self.window.answered(&msg_id);
                self.pump();
                if let Err(err) = self.state.acked(&msg_id) {
                    self.emit(Event::error(format!("cannot update the outbox: {err}")));
                }
                if let Some(unacked) = self.unacked.remove(&msg_id) {
                    if unacked.visible {
                        self.ask_away(&unacked.to);
                        self.emit(Event::Sent {
                            to: unacked.to,
                            msg_id: msg_id_hex(&msg_id),
                        });
                    }
                    if let Some(reply) = unacked.reply {
                        let _ = reply.send(Ok(msg_id_hex(&msg_id)));
                    }
                }
            }
            Frame::NameClaim { request_id, claim } => self.on_name_claim(request_id, claim, ctx),
            Frame::Bundle { request_id, bundle } => self.on_bundle(request_id, bundle),
            Frame::Away {
                request_id,
                away_days,
            } => {
                if let Some(event) = self.away.answered(request_id, away_days) {
                    self.emit(event);
                }
            }
            Frame::PreKeysStored { opks } => {
                debug!(self.log, "prekeys stored at the relay"; "opks" => opks);
                self.expiry.answered();
                if let Err(err) = self.state.mark_published() {
                    self.emit(Event::error(format!("cannot save prekey state: {err}")));
                }
                self.on_prekey_count(opks);
                if !self.stock_checked && opks < self.settings.prekeys.replenish_below {
                    self.replenish(opks);
                }
                self.stock_checked = true;
            }
            Frame::PreKeysLow { remaining } => {
                self.on_prekey_count(remaining);
                self.replenish(remaining);
            }
            Frame::RateLimited {
                msg_id: Some(msg_id),
                retry_after_ms,
            } => self.refused(msg_id, false, retry_after_ms, ctx),
            Frame::RateLimited {
                msg_id: None,
                retry_after_ms,
            } => self.retry_requests_later(retry_after_ms, ctx),
            Frame::QuotaExceeded {
                msg_id,
                retry_after_ms,
                ..
            } => self.quota_refused(msg_id, retry_after_ms, ctx),
            Frame::Expired { through, notices } => {
                for notice in self.expiry.fresh(&notices) {
                    let to = IdentityKey::from_bytes(notice.recipient)
                        .map(|id| self.display_name(&id))
                        .unwrap_or_else(|_| format!("#{}", hex::encode(&notice.recipient[..8])));
                    self.emit(Event::Expired {
                        to,
                        msg_id: msg_id_hex(&notice.msg_id),
                    });
                }
                self.to_relay(Frame::ExpiredAck { through });
            }
            Frame::Error { code, reason } => {
                self.emit(Event::error(format!("relay: {}: {reason}", code.name())));
                if self.expiry.relay_refused(code) {
                    self.emit(Event::info(
                        "the relay does not send expiry notices (it predates them): not asking it again",
                    ));
                }
                if self.away.relay_refused(code) {
                    self.emit(Event::info(
                        "the relay does not answer away queries (it predates them): not asking it again",
                    ));
                }
                if code == ErrorCode::NotOwner {
                    self.not_owner();
                }
            }
            other => debug!(self.log, "ignored frame"; "kind" => other.kind()),
        }
    }

    /// The relay refused a request it names (`Refused`, docs/PROTOCOL.md 1.11): a Send
    /// that may be retried is deferred, one refused for good leaves the outbox and is
    /// reported `send_failed` with the code; another request is asked again after a rate
    /// limit, or reported.
    pub(super) fn on_refused(
        &mut self,
        request: Option<SentRequest>,
        code: ErrorCode,
        retry_after_ms: u32,
        reason: &str,
        ctx: &mut Context<Self>,
    ) {
        if let Some(SentRequest {
            msg_id: Some(msg_id), ..
        }) = request
        {
            if self.on_group_refused(msg_id, code, retry_after_ms, reason, ctx) {
                return;
            }
        }
        match (request, code) {
            (
                Some(SentRequest {
                    msg_id: Some(msg_id), ..
                }),
                ErrorCode::RateLimited,
            ) => self.refused(msg_id, false, retry_after_ms, ctx),
            (
                Some(SentRequest {
                    msg_id: Some(msg_id), ..
                }),
                ErrorCode::QuotaExceeded,
            ) => self.quota_refused(msg_id, retry_after_ms, ctx),
            (
                Some(SentRequest {
                    msg_id: Some(msg_id), ..
                }),
                code,
            ) => self.refused_for_good(msg_id, code, reason),
            (Some(_), ErrorCode::RateLimited) => self.retry_requests_later(retry_after_ms, ctx),
            (Some(request), code) => {
                self.emit(Event::error(format!(
                    "relay refused {}: {}: {reason}",
                    request.kind,
                    code.name()
                )));
                if code == ErrorCode::NotOwner {
                    self.not_owner();
                }
            }
            (None, code) => {
                self.emit(Event::error(format!(
                    "relay refused a request: {}: {reason}",
                    code.name()
                )));
                if code == ErrorCode::RateLimited {
                    self.retry_requests_later(retry_after_ms, ctx);
                }
            }
        }
    }

    /// A Send the relay refused for good (an invalid recipient, a reused message id, a
    /// code this agent does not know): sending it again cannot succeed, so it leaves the
    /// outbox, and whoever waits for it is told, once, with the code.
    fn refused_for_good(&mut self, msg_id: [u8; 16], code: ErrorCode, reason: &str) {
        self.window.answered(&msg_id);
        self.pump();
        match self.state.refused_for_good(&msg_id) {
            Ok(true) => {}
            // Not in the outbox: a receipt or control message, or already answered.
            Ok(false) => return,
            Err(err) => self.emit(Event::error(format!("cannot update the outbox: {err}"))),
        }
        let unacked = self.unacked.remove(&msg_id);
        let to = match &unacked {
            Some(unacked) => unacked.to.clone(),
            None => String::new(),
        };
        let reason = format!("the relay refused it: {reason}");
        if unacked.as_ref().is_none_or(|u| u.visible) {
            self.emit(Event::SendFailed {
                to,
                msg_id: msg_id_hex(&msg_id),
                reason: reason.clone(),
                code: Some(code.name().to_string()),
            });
        }
        if let Some(reply) = unacked.and_then(|u| u.reply) {
            let _ = reply.send(Err(reason));
        }
    }

    /// `NotOwner`: a name claim or release of ours was refused.
    fn not_owner(&mut self) {
        if let Some(outcome) = self.own_name.on_not_owner() {
            self.on_own_name(outcome);
        }
    }

    /// A Send refused because a storage quota is full: deferred (a message not in the
    /// outbox, a best-effort receipt, is dropped with nothing to say).
    fn quota_refused(&mut self, msg_id: [u8; 16], retry_after_ms: u32, ctx: &mut Context<Self>) {
        if !self.state.outbox_contains(&msg_id) {
            self.window.answered(&msg_id);
            self.pump();
            return;
        }
        self.refused(msg_id, true, retry_after_ms, ctx);
    }

    /// A lookup, fetch or publication was refused by the rate limiter: every request in
    /// flight is asked again after the delay (a relay of revision 7 or earlier does not
    /// say which one was refused; one of revision 8 does, but the requests in flight are
    /// few, and asking them together keeps one timer): once, however many refusals come
    /// meanwhile (each refusal re-asking everything would multiply the requests and keep
    /// the bucket empty for good).
    fn retry_requests_later(&mut self, retry_after_ms: u32, ctx: &mut Context<Self>) {
        if !self.retry_scheduled {
            self.retry_scheduled = true;
            self.emit(Event::info(format!(
                "the relay rate-limited a request: asking again in {retry_after_ms} ms"
            )));
            let delay = Duration::from_millis(u64::from(retry_after_ms).max(MIN_RETRY_MS));
            ctx.run_later(delay, |act, ctx| {
                act.retry_scheduled = false;
                if act.connected {
                    act.forget_requests();
                    act.resolve_pending(ctx);
                    // The bundle of a granted new session is asked again too.
                    act.refetch_pending_grants();
                    // A claim someone waits for is confirmed again by a lookup.
                    let check =
                        (act.waiters.iter()).any(|w| matches!(w.what, WaitFor::OwnName { bound: true }));
                    act.announce_own_name(check);
                    // A refused publication (a rotated signed prekey, fresh
                    // one-time prekeys) is not left for the next connection.
                    if act.state.needs_publish() {
                        act.to_relay(Frame::PublishPreKeys {
                            bundle: act.state.bundle_to_publish().encode(),
                        });
                    }
                }
            });
        }
    }
}
