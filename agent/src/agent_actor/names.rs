//! Names: registry lookups, binding a name to an identity under the pins and the
//! identity policy (docs/AGENT.md 6), bundle fetches, and our own name (claim, release).

use super::*;

impl AgentActor {
    pub(super) fn resolve(&mut self, peer: &str, _ctx: &mut Context<Self>) {
        if !self.connected || !self.lookup_in_flight.insert(peer.to_string()) {
            return;
        }
        let request_id = self.request_id();
        self.lookups.insert(request_id, peer.to_string());
        self.to_relay(Frame::LookupName {
            request_id,
            name: peer.to_string(),
        });
    }

    /// Applies what the relay's registry says (`name` is bound to `identity`) to the
    /// pins: a first sighting is pinned; a change of a verified pin, or of any pin under
    /// the `block` policy, is held for the user; under `warn`/`accept` an unverified pin
    /// moves to the new identity. Every change is reported.
    pub(super) fn bind(&mut self, name: &str, identity: IdentityKey) -> Binding {
        match self.state.observe_identity(name, &identity, now_ms()) {
            Ok(PinOutcome::New) => {
                self.emit(Event::PeerPinned {
                    peer: name.to_string(),
                    identity: identity_hex(&identity),
                });
                Binding::Trusted
            }
            Ok(PinOutcome::Same) => Binding::Trusted,
            Ok(PinOutcome::Pending) => Binding::Held,
            Ok(PinOutcome::Rejected) => Binding::Rejected,
            Ok(PinOutcome::Changed { previous, verified }) => {
                self.identity_changed(name, previous, verified, identity)
            }
            Err(err) if err.is_retryable() && self.write_retry.in_episode() => {
                debug!(self.log, "cannot record peer"; "peer" => name, "err" => %err);
                Binding::Unsaved
            }
            Err(err) => {
                self.emit(Event::error(format!("cannot record peer {name}: {err}")));
                Binding::Unsaved
            }
        }
    }

    pub(super) fn identity_changed(
        &mut self,
        name: &str,
        previous: IdentityKey,
        verified: bool,
        current: IdentityKey,
    ) -> Binding {
        let policy = self.settings.identity_policy;
        let action = match policy {
            _ if verified => IdentityAction::Held,
            IdentityPolicy::Block => IdentityAction::Held,
            IdentityPolicy::Warn => IdentityAction::Warned,
            IdentityPolicy::Accept => IdentityAction::Accepted,
        };
        let binding = if action == IdentityAction::Held {
            if let Err(err) = self.state.hold_change(name, &current) {
                self.emit(Event::error(format!(
                    "cannot save the held identity change of {name} (held until a restart): {err}"
                )));
            }
            Binding::Held
        } else {
            match self.state.accept_identity(name, &current, false, now_ms()) {
                Ok(()) => Binding::Trusted,
                Err(err) => {
                    self.emit(Event::error(format!(
                        "cannot accept the new identity of {name}: {err}"
                    )));
                    Binding::Unsaved
                }
            }
        };
        warn!(self.log, "peer identity changed"; "peer" => name, "action" => action.as_str());
        self.emit(Event::IdentityChanged {
            peer: name.to_string(),
            previous: identity_hex(&previous),
            current: identity_hex(&current),
            policy,
            pinned_verified: verified,
            action: if binding == Binding::Unsaved {
                IdentityAction::Held
            } else {
                action
            },
        });
        binding
    }

    pub(super) fn on_name_claim(&mut self, request_id: u32, claim: Option<Vec<u8>>, ctx: &mut Context<Self>) {
        let me = *self.state.identity().public();
        if let Some(outcome) = self
            .own_name
            .on_answer(request_id, claim.as_deref(), self.state.name(), &me)
        {
            return self.on_own_name(outcome);
        }
        self.reverse_sent.remove(&request_id);
        if let Some(identity) = self.reverse_lookups.remove(&request_id) {
            return self.on_reverse_lookup(identity, claim);
        }
        let Some(name) = self.lookups.remove(&request_id) else {
            return;
        };
        self.lookup_in_flight.remove(&name);
        let Some(bytes) = claim else {
            self.fail_waiting(&name, "no agent of that name is known to the relay");
            if self
                .waiters
                .iter()
                .any(|w| matches!(&w.what, WaitFor::Peer { peer } if *peer == name))
            {
                ctx.run_later(Duration::from_millis(200), move |act, ctx| {
                    act.resolve(&name, ctx)
                });
            }
            return;
        };
        let claim = match NameClaim::decode_verified(&bytes) {
            Ok(claim) if claim.name == name => claim,
            Ok(_) | Err(_) => {
                self.emit(Event::error(format!(
                    "the relay returned an invalid name claim for {name}"
                )));
                return self.fail_waiting(&name, "invalid name claim");
            }
        };
        if claim.identity == *self.state.identity().public() {
            return self.fail_waiting(&name, "that name is bound to this agent's own identity");
        }
        match self.bind(&name, claim.identity) {
            Binding::Trusted => {}
            Binding::Held => return self.fail_waiting(&name, &held_reason(&name)),
            Binding::Rejected => {
                let reason = format!(
                    "the relay binds {name} to an identity you rejected ({}); nothing was sent",
                    claim.identity.short()
                );
                return self.fail_waiting(&name, &reason);
            }
            Binding::Unsaved => return self.fail_waiting(&name, "the pin could not be saved"),
        }
        self.bound_this_connection.insert(name.clone());
        self.resolve_waiters(|what| matches!(what, WaitFor::Peer { peer } if *peer == name));
        if self.waiting.contains_key(&name) {
            if self.state.has_session(&claim.identity) {
                self.flush_waiting(&name, claim.identity);
            } else {
                self.fetch(name, claim.identity);
            }
        }
    }

    pub(super) fn fetch(&mut self, name: String, identity: IdentityKey) {
        if !self.connected || !self.fetch_in_flight.insert(identity) {
            return;
        }
        let request_id = self.request_id();
        self.fetches.insert(request_id, (name, identity));
        self.to_relay(Frame::FetchBundle {
            request_id,
            identity: *identity.as_bytes(),
        });
    }

    pub(super) fn on_bundle(&mut self, request_id: u32, bundle: Option<Vec<u8>>) {
        let Some((name, identity)) = self.fetches.remove(&request_id) else {
            return;
        };
        self.fetch_in_flight.remove(&identity);
        let reset = self.recovery.pending(&identity);
        if reset.is_some() && bundle.is_none() {
            self.recovery.abandon(&identity);
            self.emit(Event::error(format!(
                "cannot start the new session {name} asked for: it has published no prekeys"
            )));
        }
        let Some(bytes) = bundle else {
            return self.fail_waiting(&name, "the peer has published no prekeys");
        };
        let bundle = match PreKeyBundle::decode_verified(&bytes) {
            Ok(bundle) => bundle,
            Err(err) => {
                self.recovery.abandon(&identity);
                self.emit(Event::error(format!("invalid prekey bundle for {name}: {err}")));
                return self.fail_waiting(&name, "invalid prekey bundle");
            }
        };
        if bundle.identity != identity {
            self.recovery.abandon(&identity);
            // The relay handed out a bundle of another identity than the name's pin.
            self.emit(Event::error(format!(
                "the relay answered a bundle request for {name} ({}) with the bundle of another identity ({}): refused",
                identity.short(),
                bundle.identity.short()
            )));
            return self.fail_waiting(&name, "prekey bundle of a different identity");
        }
        if let Some(reason) = reset {
            if !self.finish_reset(&name, &bundle, reason) {
                return self.fail_waiting(&name, "cannot start a new session");
            }
        } else if let Err(err) = self.state.start_session(&bundle, &mut OsRng) {
            return self.fail_waiting(&name, &format!("cannot start a session: {err}"));
        }
        let with_opk = if bundle.one_time_prekeys.is_empty() {
            ""
        } else {
            " and a one-time prekey"
        };
        self.emit(Event::info(format!(
            "new session with {name}: X3DH over its signed prekey{with_opk}"
        )));
        self.flush_waiting(&name, identity);
    }

    // ---- receiving ------------------------------------------------------------------

    /// Tells the relay what the state says about our name (docs/AGENT.md 6): publish
    /// the claim (and, with `check`, look it up to confirm it is ours), send a release
    /// not yet confirmed, or nothing.
    pub(super) fn announce_own_name(&mut self, check: bool) {
        if !self.connected {
            return;
        }
        match OnConnect::for_release(self.state.name_release()) {
            OnConnect::Claim => match self.state.name_claim(now_ms()) {
                Ok(claim) => {
                    self.to_relay(Frame::PublishName {
                        claim: claim.encode(),
                    });
                    if check {
                        let request_id = self.request_id();
                        self.own_name.checking(request_id);
                        self.to_relay(Frame::LookupName {
                            request_id,
                            name: self.state.name().to_owned(),
                        });
                    }
                }
                Err(err) => self.emit(Event::error(format!("cannot sign our name claim: {err}"))),
            },
            OnConnect::Release { issued_ms } => match self.state.sign_name_release(issued_ms) {
                Ok(release) => {
                    let request_id = self.request_id();
                    self.own_name.releasing(request_id);
                    self.to_relay(Frame::ReleaseName {
                        request_id,
                        release: release.encode(),
                    });
                }
                Err(err) => self.emit(Event::error(format!(
                    "cannot sign the release of our name: {err}"
                ))),
            },
            OnConnect::Nothing => {}
        }
    }

    /// The relay answered a request about our own name.
    pub(super) fn on_own_name(&mut self, outcome: Outcome) {
        let name = self.state.name().to_owned();
        match outcome {
            Outcome::Released => {
                let Some(release) = self.state.name_release() else {
                    return; // claimed again meanwhile
                };
                let confirmed = NameReleaseState {
                    confirmed: true,
                    ..release
                };
                if let Err(err) = self.state.set_name_release(Some(confirmed)) {
                    // The release is sent again on the next connection.
                    self.emit(Event::error(format!("cannot record the release of our name: {err}")));
                }
                self.emit(Event::NameReleased { name });
                self.resolve_waiters(|what| matches!(what, WaitFor::OwnName { bound: false }));
            }
            Outcome::ReleaseRefused => {
                // Who holds the name now decides (see `Outcome::ReleaseRefused`).
                let request_id = self.request_id();
                self.own_name.checking(request_id);
                self.to_relay(Frame::LookupName { request_id, name });
            }
            Outcome::Claimed { issued_ms } => match self.state.name_release() {
                // Still ours although we release it: our release is older than the
                // stored claim (a clock that went back). Signed again, newer, once.
                Some(release) if !release.confirmed => {
                    if !self.own_name.may_resign() {
                        return self.fail_own_name(false, format!(
                            "the relay keeps the name {name} bound to us and refuses our release"
                        ));
                    }
                    let newer = NameReleaseState {
                        issued_ms: now_ms().max(issued_ms.saturating_add(1)),
                        confirmed: false,
                    };
                    match self.state.set_name_release(Some(newer)) {
                        Ok(()) => self.announce_own_name(false),
                        Err(err) => self.fail_own_name(false, format!("cannot record the release of our name: {err}")),
                    }
                }
                _ => {
                    self.emit(Event::NameClaimed { name });
                    self.resolve_waiters(|what| matches!(what, WaitFor::OwnName { bound: true }));
                }
            },
            // While we release it, a name not bound to us is released.
            Outcome::HeldByAnother { .. } | Outcome::NotBound
                if self.state.name_release().is_some_and(|r| !r.confirmed) =>
            {
                self.on_own_name(Outcome::Released)
            }
            Outcome::HeldByAnother { holder } => self.fail_own_name(true, format!(
                "the relay binds the name {name} to another identity ({}); others see you by your fingerprint #{}",
                holder.short(),
                self.state.identity().public().short()
            )),
            Outcome::NotBound => self.fail_own_name(true, format!("the relay did not store our claim of the name {name}")),
        }
    }

    /// Reports `reason` and fails the steps waiting for our name to be bound (`bound`)
    /// or released.
    pub(super) fn fail_own_name(&mut self, bound: bool, reason: String) {
        self.emit(Event::error(reason.clone()));
        let (failed, keep): (Vec<_>, Vec<_>) = self
            .waiters
            .drain(..)
            .partition(|w| matches!(w.what, WaitFor::OwnName { bound: b } if b == bound));
        self.waiters = keep;
        for waiter in failed {
            let _ = waiter.reply.send(Err(reason.clone()));
        }
    }
}
