//! Session recovery (docs/PROTOCOL.md 2.8, docs/AGENT.md 2 "Sessions"): asking a peer
//! whose message a new session would make readable for one, and granting such a request
//! by starting a new session and sending the send log again. The limits and back-off
//! are in [`crate::recovery::Recovery`].

use e2ee_protocol::consts::MSG_TYPE_RESET;
use e2ee_protocol::message::Message;
use e2ee_protocol::session_reset::{ResetReason, ResetRequest, ResetRequestError};

use crate::recovery::PendingGrant;

use super::*;

impl AgentActor {
    /// True if `wire` is a reset request rather than an encrypted message.
    pub(super) fn is_reset_request(wire: &[u8]) -> bool {
        wire.first() == Some(&MSG_TYPE_RESET)
    }

    /// A message from `identity` failed for a reason a new session cures: ask the peer
    /// for one (signed, outside the broken session), within the per-peer back-off. Only
    /// peers with a session or a pinned name are asked (a pin can be any name in the
    /// relay's registry, so the back-off per peer is what bounds what others make us
    /// send: one request per peer and interval, fewer and fewer).
    pub(super) fn request_reset(&mut self, identity: IdentityKey, wire: &[u8], reason: ResetReason) {
        let known = self.state.has_session(&identity) || self.state.name_of(&identity).is_some();
        if !self.settings.recovery.enabled || !self.connected || !known {
            return;
        }
        let Ok(message) = Message::decode(wire) else {
            return;
        };
        let header = *message.header();
        if !self.recovery.may_ask(identity, std::time::Instant::now()) {
            debug!(self.log, "no reset request: asked recently"; "peer" => identity.short());
            return;
        }
        let request = ResetRequest::for_header(*self.state.identity().public(), identity, &header, reason);
        let payload = match request.sign(self.state.identity()) {
            Ok(payload) => payload,
            Err(err) => return self.emit(Event::error(format!("cannot sign a reset request: {err}"))),
        };
        // Best effort, like a receipt: a request the relay refuses is asked again at the
        // next failure after the interval.
        self.to_relay(Frame::Send {
            recipient: *identity.as_bytes(),
            msg_id: random_id(),
            payload,
        });
        self.emit(Event::SessionReset {
            peer: self.display_name(&identity),
            peer_identity: identity_hex(&identity),
            side: "requested".into(),
            reason: reason.as_str().into(),
            resent: None,
        });
    }

    /// A reset request delivered from `identity`: granted if it is signed by the sender,
    /// meant for us, names a chain of ours in a session with the sender that we still
    /// keep (current or archived) and that was not replaced at its request already (else
    /// it is stale or a replay), and no new session for the sender is pending or within
    /// its back-off. The new session starts when the sender's bundle arrives
    /// ([`AgentActor::finish_reset`]).
    pub(super) fn on_reset_request(&mut self, identity: IdentityKey, wire: &[u8]) {
        let from = self.display_name(&identity);
        let request = match ResetRequest::decode_verified(wire) {
            Ok(request) => request,
            Err(err) => {
                let class = match err {
                    ResetRequestError::Decode(_) => FailureClass::Malformed,
                    ResetRequestError::Crypto(_) => FailureClass::Tampered,
                };
                return self.report_failure(from, identity_hex(&identity), class, &err.to_string());
            }
        };
        if request.requester != identity || request.peer != *self.state.identity().public() {
            let detail = "reset request signed by another identity than its sender, or meant for another";
            return self.report_failure(from, identity_hex(&identity), FailureClass::Tampered, detail);
        }
        if !self.settings.recovery.enabled {
            debug!(self.log, "reset request ignored: recovery is off"; "peer" => &from);
            return;
        }
        if !self.state.sent_with_ratchet_key(&identity, &request.ratchet_key) {
            debug!(self.log, "reset request ignored: it names no chain of a session we keep";
                "peer" => &from, "reason" => request.reason.as_str());
            return;
        }
        let grant = PendingGrant {
            reason: request.reason,
            ratchet_key: request.ratchet_key,
        };
        if !(self.recovery).may_grant(identity, grant, std::time::Instant::now()) {
            warn!(self.log, "reset request ignored: a new session for this peer is pending or was started recently";
                "peer" => &from, "reason" => request.reason.as_str());
            return;
        }
        slog::info!(self.log, "reset request granted: starting a new session";
            "peer" => &from, "reason" => request.reason.as_str());
        self.fetch(from, identity);
    }

    /// The bundle for a granted reset arrived (`bundle`, already checked): start the new
    /// session and encrypt the send log on it, in one transaction, then send. A reset
    /// for an unknown session starts without the bundle's one-time prekey: the requester
    /// may be a copy restored from a backup that does not hold the prekeys published
    /// after it. On failure the grant is dropped (the peer asks again).
    pub(super) fn finish_reset(&mut self, name: &str, bundle: &PreKeyBundle, grant: PendingGrant) -> bool {
        let identity = bundle.identity;
        let bundle = match grant.reason {
            ResetReason::UnknownSession => bundle.with_one_time_prekey(None),
            _ => bundle.clone(),
        };
        let resend: Vec<Payload> = match self.state.send_log(&identity) {
            Ok(logged) => logged
                .iter()
                .filter_map(|entry| Payload::decode(&entry.payload).ok())
                .collect(),
            Err(err) => {
                self.emit(Event::error(format!(
                    "cannot read the send log for {name}: {err}"
                )));
                Vec::new()
            }
        };
        let entries = match self.state.restart_session(&bundle, &mut OsRng, &resend) {
            Ok(entries) => entries,
            Err(err) => {
                self.recovery.abandon(&identity);
                self.emit(Event::error(format!(
                    "cannot start the new session {name} asked for: {err}"
                )));
                return false;
            }
        };
        self.recovery.granted(identity, std::time::Instant::now());
        let resent = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        for entry in entries {
            self.window.push(entry.msg_id, *identity.as_bytes());
            self.unacked.insert(
                entry.msg_id,
                Unacked {
                    to: name.to_string(),
                    visible: false,
                    reply: None,
                    deferred: false,
                },
            );
        }
        self.pump();
        self.emit(Event::SessionReset {
            peer: name.to_string(),
            peer_identity: identity_hex(&identity),
            side: "restarted".into(),
            reason: grant.reason.as_str().into(),
            resent: Some(resent),
        });
        true
    }

    /// After a reconnection: the bundles of granted new sessions still waiting for one
    /// are fetched again (the fetch in flight was lost with the link).
    pub(super) fn refetch_pending_grants(&mut self) {
        for identity in self.recovery.pending_peers() {
            let name = self.display_name(&identity);
            self.fetch(name, identity);
        }
    }
}
