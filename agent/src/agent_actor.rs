//! The Agent actor: owns the identity, the prekeys and one Double Ratchet session per
//! peer (through [`AgentState`]), resolves peers by name, starts sessions from fetched
//! bundles, encrypts outgoing and decrypts incoming messages, and reports every outcome
//! as an [`Event`]. Drivers (stdin, script) talk to it with the command messages below.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use e2ee_protocol::frame::{ErrorCode, Frame};
use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::name_claim::{validate_name, NameClaim};
use e2ee_protocol::payload::{ContentType, Payload};
use e2ee_protocol::prekey::PreKeyBundle;
use rand_core::{OsRng, RngCore};
use slog::{debug, warn, Logger};
use tokio::sync::oneshot;

use crate::away::AwayChecks;
use crate::crash_point;
use crate::event::{identity_hex, msg_id_hex, ConnectionState, Event, IdentityAction};
use crate::failure::FailureClass;
use crate::held::{HeldMessage, HELD_PER_NAME};
use crate::own_name::{OnConnect, Outcome, OwnName};
use crate::pins::{parse_digits, KeyRole};
use crate::relay_link::{LinkEvent, Outbound, RelayLink, SetOnline};
use crate::settings::{AgentSettings, IdentityPolicy};
use crate::sink::EventSink;
use crate::state::{AgentState, NameReleaseState, PinOutcome, ReceiveError, StateError};
use crate::write_retry::{Kept, KeptDelivery, WriteRetry};

/// Control payloads that earlier releases sent first in a session, carrying the sender's
/// own name claim. A receiver concludes nothing from them (names come from the relay's
/// registry only) and drops them silently.
const LEGACY_CLAIM_PREFIX: &[u8] = b"name-claim:";
/// Received messages kept for `expect` steps that have not asked yet.
const INBOX_LIMIT: usize = 10_000;
/// Deliveries from senders being looked up (reverse lookup) kept in memory, in all; past
/// it they are left unacknowledged and come again on the next connection.
const UNRESOLVED_LIMIT: usize = 4_096;
/// Reverse lookups in flight at once; more senders wait for their turn.
const LOOKUP_WINDOW: usize = 16;
/// How often prekey hygiene (signed prekey rotation, expiry) runs.
const PREKEY_MAINTENANCE: Duration = Duration::from_secs(60);
/// How often kept deliveries are checked for a due retry (`write_retry`).
const WRITE_RETRY_TICK: Duration = Duration::from_millis(50);

/// A delivered message waiting for the reverse lookup of its sender.
struct Delivery {
    msg_id: [u8; 16],
    wire: Vec<u8>,
}

/// What the pins say about a name bound to an identity by the relay's registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binding {
    /// The identity is the name's pinned one (now, or already).
    Trusted,
    /// The identity is a pending change of the name: held for the user.
    Held,
    /// The user rejected this identity for the name.
    Rejected,
    /// The pins could not be saved.
    Unsaved,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Body {
    Text(String),
    Receipt([u8; 16]),
}

struct PendingSend {
    body: Body,
    msg_id: [u8; 16],
    reply: Option<Reply<String>>,
}

struct Unacked {
    to: String,
    visible: bool,
    reply: Option<Reply<String>>,
}

/// What a script step waits for; `OwnName`: the registry binds our name to us
/// (`bound: true`) or no name to us (`false`).
enum WaitFor {
    Message { peer: String, text: String },
    Failure { peer: String, class: FailureClass },
    Peer { peer: String },
    OwnName { bound: bool },
}

struct Waiter {
    id: u64,
    what: WaitFor,
    reply: Reply<()>,
}

/// The agent.
pub struct AgentActor {
    state: AgentState,
    settings: AgentSettings,
    link: Option<Addr<RelayLink>>,
    sink: EventSink,
    log: Logger,
    connected: bool,
    /// Whether the relay's one-time prekey count was acted on since connecting (by the
    /// answer to the publication made on connecting, or by a `PreKeysLow`).
    stock_checked: bool,
    next_request: u32,
    next_waiter: u64,
    lookups: HashMap<u32, String>,
    lookup_in_flight: HashSet<String>,
    /// Reverse lookups in flight: request id → the sender asked about.
    reverse_lookups: HashMap<u32, IdentityKey>,
    /// Deliveries from senders whose name is being looked up, in arrival order.
    unresolved: HashMap<IdentityKey, VecDeque<Delivery>>,
    /// Senders the registry binds to no name (shown by fingerprint), until reconnecting.
    anonymous: HashSet<IdentityKey>,
    /// When the last replenishing publication was sent (debounce).
    last_replenish: Option<std::time::Instant>,
    fetches: HashMap<u32, (String, IdentityKey)>,
    fetch_in_flight: HashSet<IdentityKey>,
    waiting: HashMap<String, VecDeque<PendingSend>>,
    unacked: HashMap<[u8; 16], Unacked>,
    inbox: VecDeque<(String, String)>,
    failures: VecDeque<(String, FailureClass)>,
    waiters: Vec<Waiter>,
    /// Requests about our own name in flight.
    own_name: OwnName,
    /// Names sent to on this connection whose registry binding was asked for.
    names_checked: HashSet<String>,
    /// True while a retry of refused (rate-limited) requests is scheduled.
    retry_scheduled: bool,
    /// Away queries about recipients (`recipient_away`).
    away: AwayChecks,
    /// Deliveries that could not be saved (disk full), retried with backoff.
    write_retry: WriteRetry,
}

impl AgentActor {
    /// An agent over opened state; `link` is attached with [`AgentActor::attach`].
    pub fn new(state: AgentState, settings: AgentSettings, sink: EventSink, log: Logger) -> Self {
        Self {
            state,
            settings,
            link: None,
            sink,
            log,
            connected: false,
            stock_checked: false,
            next_request: 1,
            next_waiter: 1,
            lookups: HashMap::new(),
            lookup_in_flight: HashSet::new(),
            reverse_lookups: HashMap::new(),
            unresolved: HashMap::new(),
            anonymous: HashSet::new(),
            last_replenish: None,
            fetches: HashMap::new(),
            fetch_in_flight: HashSet::new(),
            waiting: HashMap::new(),
            unacked: HashMap::new(),
            inbox: VecDeque::new(),
            failures: VecDeque::new(),
            waiters: Vec::new(),
            own_name: OwnName::default(),
            names_checked: HashSet::new(),
            retry_scheduled: false,
            away: AwayChecks::default(),
            write_retry: WriteRetry::default(),
        }
    }

    fn emit(&self, event: Event) {
        self.sink.emit(&event);
    }

    fn to_relay(&self, frame: Frame) {
        if let Some(link) = &self.link {
            link.do_send(Outbound(frame));
        }
    }

    fn request_id(&mut self) -> u32 {
        self.next_request = self.next_request.wrapping_add(1).max(1);
        self.next_request
    }

    /// The pinned name of `identity`, or for an identity without one its fingerprint
    /// label `#` + 16 hex digits: `#` is not allowed in names (docs/PROTOCOL.md 5), so no
    /// name a peer registers can ever read the same as the label of another identity.
    fn display_name(&self, identity: &IdentityKey) -> String {
        self.state
            .name_of(identity)
            .unwrap_or_else(|| format!("#{}", identity.short()))
    }

    // ---- sending --------------------------------------------------------------------

    fn queue_send(&mut self, peer: String, pending: PendingSend, ctx: &mut Context<Self>) {
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

    fn fail_send(&self, peer: &str, pending: PendingSend, reason: &str) {
        if matches!(pending.body, Body::Text(_)) {
            self.emit(Event::SendFailed {
                to: peer.to_string(),
                msg_id: msg_id_hex(&pending.msg_id),
                reason: reason.to_string(),
            });
        }
        if let Some(reply) = pending.reply {
            let _ = reply.send(Err(reason.to_string()));
        }
    }

    fn fail_waiting(&mut self, peer: &str, reason: &str) {
        for pending in self.waiting.remove(peer).unwrap_or_default() {
            self.fail_send(peer, pending, reason);
        }
    }

    /// Encrypts (persisting the advanced session and the outbox entry first) and sends.
    fn send_now(&mut self, peer: &str, identity: IdentityKey, pending: PendingSend) {
        let now = now_ms();
        let visible = matches!(pending.body, Body::Text(_));
        let payload = match &pending.body {
            Body::Text(text) => Payload::text(pending.msg_id, now, text),
            Body::Receipt(target) => Payload::receipt(pending.msg_id, now, *target),
        };
        match self.state.encrypt(&identity, &payload) {
            Ok(entry) => {
                crash_point::reached("send.after_commit");
                self.to_relay(Frame::Send {
                    recipient: *identity.as_bytes(),
                    msg_id: entry.msg_id,
                    payload: entry.wire,
                });
                self.unacked.insert(
                    pending.msg_id,
                    Unacked {
                        to: peer.to_string(),
                        visible,
                        reply: pending.reply,
                    },
                );
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

    fn flush_waiting(&mut self, peer: &str, identity: IdentityKey) {
        for pending in self.waiting.remove(peer).unwrap_or_default() {
            self.send_now(peer, identity, pending);
        }
    }

    // ---- peers ----------------------------------------------------------------------

    fn resolve(&mut self, peer: &str, _ctx: &mut Context<Self>) {
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
    fn bind(&mut self, name: &str, identity: IdentityKey) -> Binding {
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

    fn identity_changed(
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

    fn on_name_claim(&mut self, request_id: u32, claim: Option<Vec<u8>>, ctx: &mut Context<Self>) {
        let me = *self.state.identity().public();
        if let Some(outcome) = self
            .own_name
            .on_answer(request_id, claim.as_deref(), self.state.name(), &me)
        {
            return self.on_own_name(outcome);
        }
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
        self.resolve_waiters(|what| matches!(what, WaitFor::Peer { peer } if *peer == name));
        if self.waiting.contains_key(&name) {
            if self.state.has_session(&claim.identity) {
                self.flush_waiting(&name, claim.identity);
            } else {
                self.fetch(name, claim.identity);
            }
        }
    }

    fn fetch(&mut self, name: String, identity: IdentityKey) {
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

    fn on_bundle(&mut self, request_id: u32, bundle: Option<Vec<u8>>) {
        let Some((name, identity)) = self.fetches.remove(&request_id) else {
            return;
        };
        self.fetch_in_flight.remove(&identity);
        let Some(bytes) = bundle else {
            return self.fail_waiting(&name, "the peer has published no prekeys");
        };
        let bundle = match PreKeyBundle::decode_verified(&bytes) {
            Ok(bundle) => bundle,
            Err(err) => {
                self.emit(Event::error(format!("invalid prekey bundle for {name}: {err}")));
                return self.fail_waiting(&name, "invalid prekey bundle");
            }
        };
        if bundle.identity != identity {
            // The relay handed out a bundle of another identity than the name's pin.
            self.emit(Event::error(format!(
                "the relay answered a bundle request for {name} ({}) with the bundle of another identity ({}): refused",
                identity.short(),
                bundle.identity.short()
            )));
            return self.fail_waiting(&name, "prekey bundle of a different identity");
        }
        if let Err(err) = self.state.start_session(&bundle, &mut OsRng) {
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

    fn on_deliver(&mut self, sender: [u8; 32], msg_id: [u8; 16], wire: &[u8]) {
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
        let Ok(identity) = IdentityKey::from_bytes(sender) else {
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
    fn hold(&mut self, name: String, identity: IdentityKey, msg_id: [u8; 16], wire: &[u8]) {
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
    fn keep_unsaved(
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
    fn retry_kept(&mut self) {
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

    fn look_up_sender(&mut self, identity: IdentityKey, msg_id: [u8; 16], wire: &[u8]) {
        let queued: usize = self.unresolved.values().map(VecDeque::len).sum();
        if queued >= UNRESOLVED_LIMIT || !self.connected {
            // Left unacknowledged: the relay delivers it again on the next connection.
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
    fn ask_name_of(&mut self, identity: IdentityKey) {
        let request_id = self.request_id();
        self.reverse_lookups.insert(request_id, identity);
        self.to_relay(Frame::LookupIdentity {
            request_id,
            identity: *identity.as_bytes(),
        });
    }

    /// The registry's answer to a reverse lookup of `identity`: bind the name it gives
    /// (as for a lookup by name), then process the deliveries that waited for it.
    fn on_reverse_lookup(&mut self, identity: IdentityKey, claim: Option<Vec<u8>>) {
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

    fn decrypt_and_show(&mut self, identity: IdentityKey, msg_id: [u8; 16], wire: &[u8]) -> bool {
        let ack = Frame::DeliveryAck {
            sender: *identity.as_bytes(),
            msg_id,
        };
        let from = self.display_name(&identity);
        match self.state.decrypt(&identity, msg_id, wire, &mut OsRng) {
            Ok(incoming) => {
                crash_point::reached("receive.after_commit");
                let new_session = incoming.new_session;
                self.on_plaintext(identity, incoming.payload, incoming.newly_skipped, incoming.late);
                if new_session {
                    let from = self.display_name(&identity);
                    self.emit(Event::info(format!(
                        "{from} started a new session with us (X3DH from a PreKey message)"
                    )));
                }
                crash_point::reached("receive.after_show");
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

    fn report_failure(&mut self, from: String, from_identity: String, class: FailureClass, detail: &str) {
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

    fn on_plaintext(&mut self, sender: IdentityKey, payload: Payload, newly_skipped: u32, late: bool) {
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
                // Recorded as shown just before it is printed: nothing observable happens
                // between the two, so a crash noticed from the output never repeats it.
                if let Err(err) = self.state.shown(&sender, &payload.message_id) {
                    // Tried again with the next one; until then a restart shows it again.
                    debug!(self.log, "cannot record a message as shown"; "err" => %err);
                }
                self.emit(event);
                let matched = self.resolve_first(
                    |what| matches!(what, WaitFor::Message { peer, text: t } if *peer == from && text.contains(t.as_str())),
                );
                if !matched {
                    push_bounded(&mut self.inbox, (from.clone(), text));
                }
                // An end-to-end receipt (never for receipts, so no loop).
                let receipt = PendingSend {
                    body: Body::Receipt(payload.message_id),
                    msg_id: random_id(),
                    reply: None,
                };
                self.send_now(&from, sender, receipt);
            }
        }
    }

    // ---- waiters --------------------------------------------------------------------

    fn resolve_first(&mut self, matches: impl Fn(&WaitFor) -> bool) -> bool {
        match self.waiters.iter().position(|w| matches(&w.what)) {
            Some(index) => {
                let waiter = self.waiters.remove(index);
                let _ = waiter.reply.send(Ok(()));
                true
            }
            None => false,
        }
    }

    fn resolve_waiters(&mut self, matches: impl Fn(&WaitFor) -> bool) {
        let (done, keep): (Vec<_>, Vec<_>) = self.waiters.drain(..).partition(|w| matches(&w.what));
        self.waiters = keep;
        for waiter in done {
            let _ = waiter.reply.send(Ok(()));
        }
    }

    fn wait(
        &mut self,
        what: WaitFor,
        timeout_ms: u64,
        describe: String,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.push(Waiter { id, what, reply: tx });
        ctx.run_later(Duration::from_millis(timeout_ms), move |act, _| {
            if let Some(index) = act.waiters.iter().position(|w| w.id == id) {
                let waiter = act.waiters.remove(index);
                let _ = waiter.reply.send(Err(format!(
                    "timed out after {timeout_ms} ms waiting for {describe}"
                )));
            }
        });
        rx
    }

    // ---- relay events ---------------------------------------------------------------

    fn on_connected(&mut self, ctx: &mut Context<Self>) {
        self.connected = true;
        self.emit(Event::Connection {
            state: ConnectionState::Connected,
            relay: self.settings.relay.clone(),
            attempt: None,
        });
        // Every connection publishes the signed prekey (and any one-time prekeys not
        // yet confirmed): a relay that lost its data gets the bundle back, and its
        // PreKeysStored answer says how many one-time prekeys it holds.
        self.stock_checked = false;
        self.maintain_prekeys();
        self.to_relay(Frame::PublishPreKeys {
            bundle: self.state.bundle_to_publish().encode(),
        });
        self.announce_own_name(false);
        // Everything the relay has not acknowledged goes again, with the same ids.
        for entry in self.state.outbox() {
            if !self.unacked.contains_key(&entry.msg_id) {
                let to = self.display_name(&entry.recipient);
                self.unacked.insert(
                    entry.msg_id,
                    Unacked {
                        to,
                        visible: entry.text,
                        reply: None,
                    },
                );
            }
            self.to_relay(Frame::Send {
                recipient: *entry.recipient.as_bytes(),
                msg_id: entry.msg_id,
                payload: entry.wire,
            });
        }
        self.resolve_pending(ctx);
    }

    /// Looks up every peer that messages or `wait-peer` steps are waiting for.
    fn resolve_pending(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self.waiting.keys().cloned().collect();
        for name in names {
            self.resolve(&name, ctx);
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
    fn ask_next_names(&mut self) {
        let room = LOOKUP_WINDOW.saturating_sub(self.reverse_lookups.len());
        let asking: HashSet<IdentityKey> = self.reverse_lookups.values().copied().collect();
        let next: Vec<IdentityKey> = self
            .unresolved
            .keys()
            .filter(|id| !asking.contains(id))
            .take(room)
            .copied()
            .collect();
        for identity in next {
            self.ask_name_of(identity);
        }
    }

    /// Sends outbox entry `msg_id` again after `delay_ms`, if the relay has not stored it
    /// by then.
    fn resend_later(&mut self, msg_id: [u8; 16], delay_ms: u32, ctx: &mut Context<Self>) {
        ctx.run_later(Duration::from_millis(u64::from(delay_ms)), move |act, _| {
            if let Some(entry) = act.state.outbox().into_iter().find(|e| e.msg_id == msg_id) {
                act.to_relay(Frame::Send {
                    recipient: *entry.recipient.as_bytes(),
                    msg_id,
                    payload: entry.wire,
                });
            }
        });
    }

    /// Signed prekey hygiene: rotation when due, deletion of retired ones after their
    /// grace period; a new signed prekey is published at once when connected.
    fn maintain_prekeys(&mut self) {
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
    fn on_prekey_count(&mut self, remaining: u32) {
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
    fn replenish(&mut self, remaining: u32) {
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

    /// Tells the relay what the state says about our name (docs/AGENT.md 6): publish
    /// the claim (and, with `check`, look it up to confirm it is ours), send a release
    /// not yet confirmed, or nothing.
    fn announce_own_name(&mut self, check: bool) {
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
    fn on_own_name(&mut self, outcome: Outcome) {
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
    fn fail_own_name(&mut self, bound: bool, reason: String) {
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

    /// Forgets the lookups and fetches in flight (their answers will not come).
    fn forget_requests(&mut self) {
        self.own_name.forget();
        self.names_checked.clear();
        self.lookups.clear();
        self.lookup_in_flight.clear();
        self.reverse_lookups.clear();
        self.fetches.clear();
        self.fetch_in_flight.clear();
        self.away.forget_in_flight();
    }

    fn on_disconnected(&mut self, reason: String, retry: Option<(u32, Duration)>) {
        self.connected = false;
        // Answers to these requests are lost; they are asked again after reconnecting.
        self.forget_requests();
        // Deliveries waiting for a sender's name were not acknowledged: the relay sends
        // them again on the next connection.
        self.unresolved.clear();
        self.anonymous.clear();
        self.away.connection_ended();
        debug!(self.log, "disconnected"; "reason" => &reason);
        self.emit(Event::Connection {
            state: if retry.is_some() {
                ConnectionState::Reconnecting
            } else {
                ConnectionState::Disconnected
            },
            relay: self.settings.relay.clone(),
            attempt: retry.map(|(attempt, _)| attempt),
        });
    }

    /// After the relay stored a message to `peer`: asks it how long the peer's pinned
    /// identity has been away, at most once per peer every ten minutes of a connection
    /// (answered by `Away`, reported as `recipient_away` when the peer is away).
    fn ask_away(&mut self, peer: &str) {
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

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        match frame {
            Frame::Deliver {
                sender,
                msg_id,
                payload,
                ..
            } => self.on_deliver(sender, msg_id, &payload),
            Frame::SentAck { msg_id } => {
                crash_point::reached("send.before_sent_ack");
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
            } => self.resend_later(msg_id, retry_after_ms, ctx),
            Frame::RateLimited {
                msg_id: None,
                retry_after_ms,
            } => {
                // A lookup, fetch or publication was refused; which one is not said, so
                // every request in flight is asked again after the delay: once, however
                // many refusals come meanwhile (each refusal re-asking everything would
                // multiply the requests and keep the bucket empty for good).
                if !self.retry_scheduled {
                    self.retry_scheduled = true;
                    self.emit(Event::info(format!(
                        "the relay rate-limited a request: asking again in {retry_after_ms} ms"
                    )));
                    ctx.run_later(Duration::from_millis(u64::from(retry_after_ms)), |act, ctx| {
                        act.retry_scheduled = false;
                        if act.connected {
                            act.forget_requests();
                            act.resolve_pending(ctx);
                            act.announce_own_name(false);
                        }
                    });
                }
            }
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            } => {
                let to = IdentityKey::from_bytes(recipient)
                    .map(|id| self.display_name(&id))
                    .unwrap_or_else(|_| sender_hex(&recipient));
                // Kept in the outbox: resent after the delay and on every reconnection
                // until the relay stores it. A script's `send` fails now rather than wait.
                let reason = format!(
                    "the queue of {to} at the relay is full: kept in the outbox, resending in {retry_after_ms} ms"
                );
                self.emit(Event::info(reason.clone()));
                if let Some(Unacked { reply, .. }) = self.unacked.get_mut(&msg_id) {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Err(reason));
                    }
                }
                self.resend_later(msg_id, retry_after_ms, ctx);
            }
            Frame::Error { code, reason } => {
                self.emit(Event::error(format!("relay: {}: {reason}", code.name())));
                if self.away.relay_refused(code) {
                    self.emit(Event::info(
                        "the relay does not answer away queries (it predates them): not asking it again",
                    ));
                }
                if code == ErrorCode::NotOwner {
                    if let Some(outcome) = self.own_name.on_not_owner() {
                        self.on_own_name(outcome);
                    }
                }
            }
            other => debug!(self.log, "ignored frame"; "kind" => other.kind()),
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= INBOX_LIMIT {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    id
}

/// Why nothing is sent to a peer whose identity change is pending.
fn held_reason(peer: &str) -> String {
    format!(
        "the identity of {peer} changed and is held: nothing is sent until you compare safety numbers \
         (/verify {peer}) and keep one key with /trust {peer} <digits>, or /reject {peer}"
    )
}

fn sender_hex(bytes: &[u8; 32]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Unbounded (0), like the relay link's `do_send`s: with a bounded mailbox a full
        // queue defers `send`s and can reorder the messages typed on stdin.
        ctx.set_mailbox_capacity(0);
        ctx.run_interval(PREKEY_MAINTENANCE, |act, _| act.maintain_prekeys());
        ctx.run_interval(WRITE_RETRY_TICK, |act, _| act.retry_kept());
        self.emit(Event::Started {
            name: self.state.name().to_string(),
            identity: identity_hex(self.state.identity().public()),
        });
        // Texts committed before the last run stopped but not shown then.
        match self.state.unshown() {
            Ok(texts) => {
                for text in texts {
                    self.on_plaintext(text.sender, text.payload, text.newly_skipped, text.late);
                }
            }
            Err(err) => self.emit(Event::error(format!(
                "cannot read the received messages not shown yet: {err}"
            ))),
        }
    }
}

/// Attaches the relay link (made after the agent, since it needs the agent's address).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub Addr<RelayLink>);

impl Handler<Attach> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        self.link = Some(msg.0);
    }
}

impl Handler<LinkEvent> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: LinkEvent, ctx: &mut Context<Self>) {
        match msg {
            LinkEvent::Connected { .. } => self.on_connected(ctx),
            LinkEvent::Disconnected { reason, retry } => self.on_disconnected(reason, retry),
            LinkEvent::Frame(frame) => self.on_frame(frame, ctx),
        }
    }
}

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
        let pending = PendingSend {
            body: Body::Text(msg.text),
            msg_id: random_id(),
            reply: Some(tx),
        };
        self.queue_send(msg.peer, pending, ctx);
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
        if let Some(index) = self
            .inbox
            .iter()
            .position(|(from, text)| *from == msg.peer && text.contains(msg.text.as_str()))
        {
            self.inbox.remove(index);
            return Box::pin(async { Ok(()) });
        }
        let describe = format!("a message from {} containing {:?}", msg.peer, msg.text);
        let rx = self.wait(
            WaitFor::Message {
                peer: msg.peer,
                text: msg.text,
            },
            msg.timeout_ms,
            describe,
            ctx,
        );
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
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
        let rx = self.wait(
            WaitFor::Failure {
                peer: msg.peer,
                class: msg.class,
            },
            msg.timeout_ms,
            describe,
            ctx,
        );
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
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
        let rx = self.wait(
            WaitFor::Peer {
                peer: msg.peer.clone(),
            },
            msg.timeout_ms,
            describe,
            ctx,
        );
        // Always ask the relay: it is also how an identity change is noticed.
        self.resolve(&msg.peer, ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
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
                "no identity pinned for {}: exchange a message or wait-peer first",
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
                match crate::qr::render(&candidate.number.scannable()) {
                    Ok(qr) => self.sink.raw(&qr),
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
/// messages shown) or the pinned key (the change rejected). Without digits only when no
/// change is pending: the pinned key is marked verified.
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
    fn reject(&mut self, peer: &str) -> Result<(), String> {
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
    fn release_held(&mut self, identity: &IdentityKey) {
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
        let rx = self.wait(
            WaitFor::OwnName { bound: msg.claim },
            msg.timeout_ms,
            describe,
            ctx,
        );
        self.own_name.forget();
        self.announce_own_name(true);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
    }
}

/// List known peers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListPeers;

impl Handler<ListPeers> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: ListPeers, _: &mut Context<Self>) {
        self.emit(Event::Peers {
            peers: self.state.peer_list(),
        });
    }
}

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
