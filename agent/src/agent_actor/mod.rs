//! The Agent actor: owns the identity, the prekeys and one Double Ratchet session per
//! peer (through [`AgentState`]), resolves peers by name, starts sessions from fetched
//! bundles, encrypts outgoing and decrypts incoming messages, and reports every outcome
//! as an [`Event`]. Drivers (stdin, script) talk to it with the messages in
//! `commands.rs`; the work is split by concern: `sending`, `receiving`, `names` (the
//! registry and our own name) and `link` (the relay connection).

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
use crate::command_tags::CommandTags;
use crate::crash_point;
use crate::event::{identity_hex, msg_id_hex, ConnectionState, Event, IdentityAction};
use crate::expiry_notices::ExpiryNotices;
use crate::failure::FailureClass;
use crate::held::{HeldMessage, HELD_PER_NAME};
use crate::own_name::{OnConnect, Outcome, OwnName};
use crate::pins::{parse_digits, KeyRole};
use crate::receipt_budget::ReceiptBudget;
use crate::recovery::Recovery;
use crate::relay_link::{LinkEvent, Outbound, RelayLink, SetOnline};
use crate::send_window::SendWindow;
use crate::sent_requests::SentRequest;
use crate::settings::{AgentSettings, IdentityPolicy};
use crate::sink::EventSink;
use crate::state::{AgentState, NameReleaseState, PinOutcome, ReceiveError, StateError};
use crate::write_retry::{Kept, KeptDelivery, WriteRetry};

mod commands;
mod groups;
mod leaving;
mod link;
mod names;
mod outflow;
mod overview;
mod receiving;
mod recovery;
mod run_command;
mod sending;

pub use commands::*;
pub use groups::{GroupOp, ListGroups, SendGroupText, WaitGroup};
pub use leaving::Leave;
pub use outflow::{Flush, EXIT_SYNC_FAILED, MAX_BATCH};
pub use overview::{ShowHistory, ShowStatus};
pub use run_command::{EmitTagged, RunCommand};

/// Control payloads that earlier releases sent first in a session, carrying the sender's
/// own name claim. A receiver concludes nothing from them (names come from the relay's
/// registry only) and drops them silently.
const LEGACY_CLAIM_PREFIX: &[u8] = b"name-claim:";
/// Received messages kept for `expect` steps that have not asked yet.
const INBOX_LIMIT: usize = 10_000;
/// Bytes of text kept for `expect` steps, in all; past it the oldest are forgotten.
const INBOX_BYTES: usize = 16 << 20;
/// Deliveries from senders being looked up (reverse lookup) kept in memory, in all
/// (at most 256 × 64 KiB); past it a delivery from an unnamed sender is processed at
/// once, under the sender's fingerprint label, so that it does not hold the relay's
/// window of unacknowledged messages (known peers' messages wait behind it).
const UNRESOLVED_LIMIT: usize = 256;
/// A reverse lookup the relay has not answered after this long counts as answered
/// "no name": its sender's messages are shown under the fingerprint label.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Reverse lookups in flight at once; more senders wait for their turn.
const LOOKUP_WINDOW: usize = 16;
/// The shortest wait before asking the relay again after a refusal, whatever retry
/// time it gave (a relay answering 0 must not cause a busy loop).
const MIN_RETRY_MS: u64 = 100;
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
    /// The bot command that asked for it (bot mode), for its events.
    tag: Option<serde_json::Value>,
}

struct Unacked {
    to: String,
    visible: bool,
    reply: Option<Reply<String>>,
    /// A `deferred` event was emitted for it.
    deferred: bool,
}

/// What a script step waits for; `OwnName`: the registry binds our name to us
/// (`bound: true`) or no name to us (`false`).
enum WaitFor {
    Message {
        peer: String,
        text: String,
    },
    Failure {
        peer: String,
        class: FailureClass,
    },
    Peer {
        peer: String,
    },
    OwnName {
        bound: bool,
    },
    /// We are in the group with this many members (0: not in it).
    GroupSize {
        group: String,
        members: usize,
    },
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
    /// When each reverse lookup in flight was sent (request id → instant).
    reverse_sent: HashMap<u32, std::time::Instant>,
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
    /// Bytes of text in `inbox`.
    inbox_bytes: usize,
    failures: VecDeque<(String, FailureClass)>,
    waiters: Vec<Waiter>,
    /// Requests about our own name in flight.
    own_name: OwnName,
    /// Names sent to on this connection whose registry binding was asked for.
    names_checked: HashSet<String>,
    /// Names whose registry answer was applied on this connection (kept across retries
    /// of refused requests, forgotten on disconnecting).
    bound_this_connection: HashSet<String>,
    /// True while a retry of refused (rate-limited) requests is scheduled.
    retry_scheduled: bool,
    /// Receipts to peers we have not written to (first contacts).
    first_contact_receipts: ReceiptBudget,
    /// Away queries about recipients (`recipient_away`).
    away: AwayChecks,
    /// Deliveries that could not be saved (disk full), retried with backoff.
    write_retry: WriteRetry,
    /// Outputs waiting for the state's sync (group commit).
    outflow: outflow::Outflow,
    /// Outbox entries on the wire and waiting their turn (in order).
    window: SendWindow,
    /// When the send window's resume timer fires (the earliest set, if any).
    resume_at: Option<std::time::Instant>,
    /// `Leave` requests waiting for the outbox to empty.
    leave_waiters: Vec<oneshot::Sender<()>>,
    /// Session recovery: reset requests asked and granted (docs/PROTOCOL.md 2.8).
    recovery: Recovery,
    /// The relay's notices of messages that expired unread.
    expiry: ExpiryNotices,
    /// The link's story and unread counts, for `/status` and `/peers`.
    overview: overview::Overview,
    /// Which bot command events answer.
    tags: CommandTags,
    /// Group uploads and KeyPackage requests on this connection.
    group: groups::GroupFlight,
}

impl AgentActor {
    /// An agent over opened state; `link` is attached with [`AgentActor::attach`].
    pub fn new(state: AgentState, settings: AgentSettings, sink: EventSink, log: Logger) -> Self {
        let recovery = Recovery::new(Duration::from_millis(settings.recovery.min_interval_ms));
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
            reverse_sent: HashMap::new(),
            unresolved: HashMap::new(),
            anonymous: HashSet::new(),
            last_replenish: None,
            fetches: HashMap::new(),
            fetch_in_flight: HashSet::new(),
            waiting: HashMap::new(),
            unacked: HashMap::new(),
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            failures: VecDeque::new(),
            waiters: Vec::new(),
            own_name: OwnName::default(),
            names_checked: HashSet::new(),
            bound_this_connection: HashSet::new(),
            retry_scheduled: false,
            first_contact_receipts: ReceiptBudget::new(std::time::Instant::now()),
            away: AwayChecks::default(),
            write_retry: WriteRetry::default(),
            outflow: outflow::Outflow::default(),
            window: SendWindow::default(),
            resume_at: None,
            leave_waiters: Vec::new(),
            recovery,
            expiry: ExpiryNotices::default(),
            overview: overview::Overview::default(),
            tags: CommandTags::default(),
            group: groups::GroupFlight::default(),
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

    /// Registers a script step's wait for `what`; the future resolves when it happens,
    /// or fails after `timeout_ms` naming `describe`.
    fn wait(
        &mut self,
        what: WaitFor,
        timeout_ms: u64,
        describe: String,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<(), String>> {
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
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
    }

    // ---- relay events ---------------------------------------------------------------
}

impl AgentActor {
    /// Keeps a shown text for a later `expect` step, within [`INBOX_LIMIT`] texts and
    /// [`INBOX_BYTES`] bytes (the oldest go first).
    fn remember_text(&mut self, from: String, text: String) {
        self.inbox_bytes += text.len();
        self.inbox.push_back((from, text));
        while self.inbox.len() > INBOX_LIMIT || self.inbox_bytes > INBOX_BYTES {
            match self.inbox.pop_front() {
                Some((_, old)) => self.inbox_bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Takes the first kept text from `peer` that contains `needle`.
    fn take_text(&mut self, peer: &str, needle: &str) -> bool {
        let found = (self.inbox.iter()).position(|(from, text)| from == peer && text.contains(needle));
        match found.and_then(|index| self.inbox.remove(index)) {
            Some((_, text)) => {
                self.inbox_bytes -= text.len();
                true
            }
            None => false,
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

/// The fingerprint label of 32 bytes that are not a valid identity key: `#` and 16 hex
/// digits, like any identity without a name (never readable as a name).
fn sender_hex(bytes: &[u8; 32]) -> String {
    let hex: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("#{hex}")
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.outflow.attach(ctx.address().downgrade());
        // Unbounded (0), like the relay link's `do_send`s: with a bounded mailbox a full
        // queue defers `send`s and can reorder the messages typed on stdin.
        ctx.set_mailbox_capacity(0);
        ctx.run_interval(PREKEY_MAINTENANCE, |act, _| act.maintain_prekeys());
        ctx.run_interval(WRITE_RETRY_TICK, |act, _| act.retry_kept());
        ctx.run_interval(LOOKUP_TIMEOUT / 4, |act, _| act.expire_lookups());
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
            LinkEvent::Connected { queued, relay } => {
                self.overview.connected(queued, &relay);
                self.on_connected(relay, ctx)
            }
            LinkEvent::Disconnected {
                reason,
                retry,
                replaced,
                relay,
                next,
            } => self.on_disconnected(reason, retry, replaced, (relay, next)),
            LinkEvent::Frame(frame) => self.on_frame(frame, ctx),
            LinkEvent::Refused {
                request,
                code,
                retry_after_ms,
                reason,
            } => self.on_refused(request, code, retry_after_ms, &reason, ctx),
            LinkEvent::RelayPinned(pin, relay) => {
                // The relays of a list are one cluster serving one key: it is pinned for
                // every address of the list.
                let relays = self.settings.relays();
                let saved = (relays.iter()).try_for_each(|address| self.state.set_relay_pin(address, pin));
                let others = if relays.len() > 1 {
                    format!(", and for every relay of the list: {}", relays.join(", "))
                } else {
                    String::new()
                };
                match saved {
                    Ok(()) => self.emit(Event::info(format!(
                        "pinned the relay's TLS key {pin} (first connection to {relay}){others}; compare it \
                         with what the relay's operator gets from e2ee-relay --print-pin"
                    ))),
                    Err(err) => self.emit(Event::error(format!("cannot save the relay's key pin: {err}"))),
                }
            }
            LinkEvent::RelayKeyChanged(reason) => {
                self.emit(Event::error(format!("{reason}; not reconnecting")))
            }
        }
        self.flush_if_full();
        self.settle_leave();
    }
}
