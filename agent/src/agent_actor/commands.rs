//! The messages drivers (stdin, scripts) send to the agent, and their handlers.

use super::*;

/// Send a text message to a peer by name; resolves when the relay stored it durably.
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct SendText {
    /// Peer name.
    pub peer: String,
    /// The text.
    pub text: String,
}

impl Handler<SendText> for AgentActor {
    type Result = ResponseFuture<Result<String, String>>;

    fn handle(&mut self, msg: SendText, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.overview.read(&msg.peer);
        let pending = PendingSend {
            body: Body::Text(msg.text),
            msg_id: random_id(),
            reply: Some(tx),
            tag: self.tags.current().cloned(),
        };
        self.queue_send(msg.peer, pending, ctx);
        self.flush_if_full();
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
    }
}

/// Wait for a message from `peer` containing `text`.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Expect {
    /// Peer name.
    pub peer: String,
    /// Text the message must contain.
    pub text: String,
    /// How long to wait.
    pub timeout_ms: u64,
}

impl Handler<Expect> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: Expect, ctx: &mut Context<Self>) -> Self::Result {
        if self.take_text(&msg.peer, &msg.text) {
            return Box::pin(async { Ok(()) });
        }
        let describe = format!("a message from {} containing {:?}", msg.peer, msg.text);
        self.wait(
            WaitFor::Message {
                peer: msg.peer,
                text: msg.text,
            },
            msg.timeout_ms,
            describe,
            ctx,
        )
    }
}

/// Wait for a decrypt failure of `class` from `peer`.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ExpectFailure {
    /// Peer name (or short identity).
    pub peer: String,
    /// The failure class.
    pub class: FailureClass,
    /// How long to wait.
    pub timeout_ms: u64,
}

impl Handler<ExpectFailure> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: ExpectFailure, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(index) = self
            .failures
            .iter()
            .position(|(from, class)| *from == msg.peer && *class == msg.class)
        {
            self.failures.remove(index);
            return Box::pin(async { Ok(()) });
        }
        let describe = format!("a {} failure from {}", msg.class, msg.peer);
        self.wait(
            WaitFor::Failure {
                peer: msg.peer,
                class: msg.class,
            },
            msg.timeout_ms,
            describe,
            ctx,
        )
    }
}

/// Wait until a peer's name is known (pinned).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct WaitPeer {
    /// Peer name.
    pub peer: String,
    /// How long to wait.
    pub timeout_ms: u64,
}

impl Handler<WaitPeer> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: WaitPeer, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = validate_name(&msg.peer) {
            let reason = format!("invalid peer name: {err}");
            return Box::pin(async move { Err(reason) });
        }
        let describe = format!("peer {} to be known", msg.peer);
        let waiting = self.wait(
            WaitFor::Peer {
                peer: msg.peer.clone(),
            },
            msg.timeout_ms,
            describe,
            ctx,
        );
        // Always ask the relay: it is also how an identity change is noticed.
        self.resolve(&msg.peer, ctx);
        waiting
    }
}

/// Show the safety number (and QR code) with a peer: of the pinned key, and of every new
/// key held as a pending identity change, each labelled.
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct Verify {
    /// Peer name.
    pub peer: String,
}

impl Handler<Verify> for AgentActor {
    type Result = Result<String, String>;

    /// Answers the digits of the pinned key.
    fn handle(&mut self, msg: Verify, _: &mut Context<Self>) -> Self::Result {
        let candidates = self.state.candidates(&msg.peer);
        if candidates.is_empty() {
            return Err(format!(
                "no identity pinned for {0}: send {0} a message first (/msg {0} <text>), or wait \
                 until {0} writes to you",
                msg.peer
            ));
        }
        for candidate in &candidates {
            self.emit(Event::safety_number(
                &msg.peer,
                candidate.role.as_str(),
                &candidate.identity,
                &candidate.number,
            ));
            if !self.sink.is_json() {
                // The 60 digits as text: any phone's QR reader shows them, to compare.
                match crate::qr::render(candidate.number.digits().as_bytes()) {
                    Ok(qr) => self.raw(qr),
                    Err(err) => self.emit(Event::error(format!("cannot draw the QR code: {err}"))),
                }
            }
        }
        Ok(candidates[0].number.digits().to_string())
    }
}

/// Mark a peer's identity verified. With `digits` (the safety number the user compared,
/// 60 digits, spaces allowed), the key whose safety number matches is the one kept:
/// while an identity change is pending, the new key (accepted, verified, its held
/// messages shown) or the pinned key (the change rejected). Without digits it is refused:
/// the digits name the key compared.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Trust {
    /// Peer name.
    pub peer: String,
    /// The typed safety number, if given.
    pub digits: Option<String>,
}

impl Handler<Trust> for AgentActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Trust, _: &mut Context<Self>) -> Self::Result {
        let peer = msg.peer;
        let candidates = self.state.candidates(&peer);
        if candidates.is_empty() {
            return Err(format!("no identity pinned for {peer}"));
        }
        let pending = candidates.iter().any(|c| c.role == KeyRole::New);
        let chosen = match msg.digits {
            // The digits name the key the user compared: without them a key that changed
            // since the comparison (or was never compared) would be verified by mistake.
            None => {
                return Err(format!(
                    "type the safety number you compared: /trust {peer} <digits> (see /verify {peer}){}",
                    if pending {
                        format!("; or keep the pinned key with /reject {peer}")
                    } else {
                        String::new()
                    }
                ))
            }
            Some(typed) => {
                let digits = parse_digits(&typed)
                    .ok_or_else(|| format!("a safety number is 60 digits (spaces allowed), not {typed:?}"))?;
                candidates
                    .iter()
                    .find(|c| c.number.digits() == digits)
                    .ok_or_else(|| {
                        format!(
                            "the digits match no key of {peer}{}: nothing changed",
                            if pending {
                                " (neither the pinned nor the new one)"
                            } else {
                                ""
                            }
                        )
                    })?
            }
        };
        let (identity, digits) = (chosen.identity, chosen.number.digits().to_string());
        match chosen.role {
            KeyRole::Pinned => {
                if pending {
                    self.reject(&peer)?;
                }
                self.state.set_verified(&peer, true).map_err(|e| e.to_string())?;
            }
            KeyRole::New => {
                self.state
                    .accept_identity(&peer, &identity, true, now_ms())
                    .map_err(|e| e.to_string())?;
            }
        }
        self.emit(Event::PeerVerified {
            peer: peer.clone(),
            identity: identity_hex(&identity),
            safety_number: digits,
        });
        if chosen.role == KeyRole::New {
            self.release_held(&identity);
        }
        Ok(())
    }
}

impl AgentActor {
    /// Rejects the pending identity changes of `peer` and reports it.
    pub(super) fn reject(&mut self, peer: &str) -> Result<(), String> {
        let discarded = self.state.held_count(peer);
        let rejected = self.state.reject_pending(peer).map_err(|e| e.to_string())?;
        if rejected.is_empty() {
            return Err(format!("no identity change of {peer} is pending"));
        }
        self.emit(Event::IdentityRejected {
            peer: peer.to_string(),
            identities: rejected.iter().map(identity_hex).collect(),
            discarded,
        });
        Ok(())
    }

    /// Decrypts and shows the messages held from an identity the user just accepted, in
    /// the order they arrived; each is deleted from the held store once processed.
    pub(super) fn release_held(&mut self, identity: &IdentityKey) {
        for held in self.state.held_from(identity) {
            if !self.decrypt_and_show(*identity, held.msg_id, &held.wire) {
                // Kept: released again at the next acceptance or restart.
                return;
            }
            if let Err(err) = self.state.release_held(identity, &held.msg_id) {
                self.emit(Event::error(format!("cannot update the held messages: {err}")));
                return;
            }
        }
    }
}

/// Keep the pinned identity of a peer and reject its pending identity changes; their held
/// messages are deleted unread.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Reject {
    /// Peer name.
    pub peer: String,
}

impl Handler<Reject> for AgentActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Reject, _: &mut Context<Self>) -> Self::Result {
        self.reject(&msg.peer)
    }
}

/// Release our name at the relay's registry (`/release-name`, `claim: false`) or claim
/// it again (`/claim-name`, `claim: true`). The choice is saved first and holds across
/// restarts; the reply comes when the relay confirms it, or an error after `timeout_ms`
/// (offline, the relay is told on the next connection).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SetOwnName {
    /// True to claim the name, false to release it.
    pub claim: bool,
    /// How long to wait for the relay's confirmation (ms).
    pub timeout_ms: u64,
}

impl Handler<SetOwnName> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: SetOwnName, ctx: &mut Context<Self>) -> Self::Result {
        let release = match (msg.claim, self.state.name_release()) {
            (true, _) => None,
            // A release not confirmed yet is sent again as it was signed.
            (false, Some(release)) => Some(NameReleaseState {
                confirmed: false,
                ..release
            }),
            (false, None) => Some(NameReleaseState {
                issued_ms: now_ms(),
                confirmed: false,
            }),
        };
        if let Err(err) = self.state.set_name_release(release) {
            let reason = format!("cannot record the choice: {err}");
            return Box::pin(async move { Err(reason) });
        }
        let name = self.state.name().to_owned();
        let describe = if msg.claim {
            format!("the relay to bind the name {name} to us")
        } else {
            format!("the relay to release the name {name}")
        };
        let waiting = self.wait(
            WaitFor::OwnName { bound: msg.claim },
            msg.timeout_ms,
            describe,
            ctx,
        );
        self.own_name.forget();
        self.announce_own_name(true);
        waiting
    }
}

/// List known peers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListPeers;

/// Go offline or online.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Online(pub bool);

impl Handler<Online> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Online, _: &mut Context<Self>) {
        if let Some(link) = &self.link {
            link.do_send(SetOnline(msg.0));
        }
    }
}

/// Print an event through the agent's sink (drivers use it for their own events).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Emit(pub Event);

impl Handler<Emit> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Emit, _: &mut Context<Self>) {
        self.emit(msg.0);
    }
}
