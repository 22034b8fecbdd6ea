//! What the agent reports: one [`Event`] per happening, printed either as one JSON
//! object per line (`--json`, for bots and tests) or as readable lines for people.
//!
//! Identities are full lowercase hex (64 characters) in JSON and a 16-character prefix
//! in readable output; message ids are 32 hex characters. Text that came from a peer is
//! escaped in readable output so it cannot move the cursor or recolour the terminal.

use std::fmt::Write as _;

use e2ee_protocol::frame::AWAY_NEVER;
use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::safety_number::SafetyNumber;
use serde::{Deserialize, Serialize};

use crate::failure::{DecryptFailure, FailureClass};
use crate::incoming::Incoming;
use crate::settings::IdentityPolicy;

mod views;

pub use views::{utc, HistoryLine, LinkStatus};

/// The relay connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Authenticated with the relay.
    Connected,
    /// The connection is gone (lost, or closed by `disconnect`).
    Disconnected,
    /// Waiting before the next connection attempt.
    Reconnecting,
}

/// What the agent did about an identity change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityAction {
    /// The new identity is held: its messages are kept undecrypted and nothing is sent
    /// to the name until the user runs `/trust <peer> <digits>` or `/reject <peer>`.
    Held,
    /// The new identity is pinned (unverified), with a warning.
    Warned,
    /// The new identity is pinned (unverified).
    Accepted,
}

impl ConnectionState {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Reconnecting => "reconnecting",
        }
    }
}

impl IdentityAction {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Warned => "warned",
            Self::Accepted => "accepted",
        }
    }
}

/// One peer in a [`Event::Peers`] listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's name.
    pub name: String,
    /// The pinned identity, hex.
    pub identity: String,
    /// True once the user has compared safety numbers and run `/trust`.
    pub verified: bool,
    /// True if a ratchet session with this identity exists.
    pub has_session: bool,
    /// When the identity was first seen under this name, ms since the Unix epoch.
    pub first_seen_ms: u64,
    /// True while an identity change of this name waits for `/trust` or `/reject`.
    #[serde(default)]
    pub pending_change: bool,
    /// Messages held (undecrypted) from the pending identity.
    #[serde(default)]
    pub held: usize,
    /// Messages received from this peer in this run and not yet looked at (with
    /// `/history`) or answered (with `/msg`).
    #[serde(default)]
    pub unread: usize,
    /// When the last message with this peer was written, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_ms: Option<u64>,
}

/// A group as `/groups` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLine {
    /// The local name.
    pub group: String,
    /// The current epoch.
    pub epoch: u64,
    /// The members' names, us included.
    pub members: Vec<String>,
    /// Uploads not yet stored by the relay.
    pub pending: usize,
}

/// One thing to report. Serialized with an `"event"` tag:
/// `{"event":"message","from":"bob",...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The agent is up, with its state loaded.
    Started {
        /// This agent's name.
        name: String,
        /// This agent's identity, hex.
        identity: String,
    },
    /// The relay connection changed.
    Connection {
        /// The new state.
        state: ConnectionState,
        /// The relay address: the one connected to, or whose connection ended or could
        /// not be made.
        relay: String,
        /// For `reconnecting` with several relay addresses: the address the next attempt
        /// goes to, when it is another than `relay`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_relay: Option<String>,
        /// For `reconnecting`: the attempt number, from 1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// For `reconnecting`: how long until the attempt, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
        /// For `disconnected` and `reconnecting`: why the connection ended or could not
        /// be made.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A text message decrypted.
    Message {
        /// The sender's name.
        from: String,
        /// The sender's identity, hex.
        from_identity: String,
        /// The text.
        text: String,
        /// The message id, hex.
        msg_id: String,
        /// The sender's clock when it was written (asserted, not verified).
        timestamp_ms: u64,
        /// Earlier messages of this sender that have not arrived yet (a gap).
        newly_skipped: u32,
        /// True if it arrived after later messages (decrypted with a stored key).
        late: bool,
    },
    /// The relay durably stored a sent message (`SentAck`).
    Sent {
        /// The recipient's name.
        to: String,
        /// The message id, hex.
        msg_id: String,
    },
    /// The relay refused to store a sent message for now (its `RateLimited` or
    /// `QuotaExceeded`): it stays in the outbox and goes again after the delay, so a
    /// `sent` follows; reported once per message.
    Deferred {
        /// The recipient's name.
        to: String,
        /// The message id, hex.
        msg_id: String,
        /// Why: `rate_limited` (the sender's token bucket at the relay is empty) or
        /// `quota_exceeded` (a queue or storage quota the relay does not name is full).
        code: String,
        /// The relay's retry delay, in milliseconds.
        retry_after_ms: u32,
    },
    /// The relay says the identity of a peer just sent to (`sent`) has not been
    /// connected to it for longer than its notice period (docs/PROTOCOL.md 1.8): the
    /// messages wait at the relay, and expire there if the peer does not come back.
    /// The relay is untrusted: this is its claim, not a proof.
    RecipientAway {
        /// The peer's name.
        peer: String,
        /// The peer's pinned identity, hex.
        identity: String,
        /// Whole days since the identity was last connected to the relay; `None` (JSON
        /// `null`) if it never was (or the relay forgot it).
        away_days: Option<u32>,
    },
    /// The recipient's agent confirmed, end to end, that it decrypted the message.
    Delivered {
        /// The recipient's name.
        to: String,
        /// The message id, hex.
        msg_id: String,
    },
    /// A message the relay had stored (`sent`) expired there unread, at the relay's
    /// message lifetime: it was never delivered and will not be (docs/PROTOCOL.md 1.6).
    Expired {
        /// The recipient's name (or its fingerprint label).
        to: String,
        /// The message id, hex.
        msg_id: String,
    },
    /// A message could not be sent (refused by the relay, no bundle, blocked peer).
    SendFailed {
        /// The recipient's name.
        to: String,
        /// The message id, hex (empty if none was assigned yet).
        msg_id: String,
        /// Why.
        reason: String,
        /// The relay's refusal code (`invalid_recipient`, `msg_id_reused`, …) when the
        /// relay refused the message for good (docs/PROTOCOL.md 1.11); absent when the
        /// agent did not send it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// A received message was not shown.
    DecryptFailure {
        /// The sender's name, or its short identity if it has no pinned name.
        from: String,
        /// The sender's identity (as authenticated by the relay), hex.
        from_identity: String,
        /// The failure class.
        class: FailureClass,
        /// A short description.
        detail: String,
    },
    /// Session recovery (docs/PROTOCOL.md 2.8). `side: requested`: a message from the
    /// peer could not be decrypted for `reason`, and we asked the peer, with a signed
    /// reset request, to start a new session and send its recent messages again.
    /// `side: restarted`: the peer asked, and we started a new session (X3DH) and sent
    /// `resent` messages of our send log again (the peer shows those it had not shown).
    SessionReset {
        /// The peer's name, or its short identity if it has no pinned name.
        peer: String,
        /// The peer's identity, hex.
        peer_identity: String,
        /// `requested` or `restarted`.
        side: String,
        /// Why: `unknown_session`, `reused_position` (the sender's state was rolled
        /// back), `skip_limit` or `unauthenticated`.
        reason: String,
        /// For `restarted`: how many sent messages went again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resent: Option<u32>,
    },
    /// Messages of a peer that can never be decrypted: the session gave up their keys
    /// (a gap past the skip limit of 1000 in a chain that closed, or skipped keys past
    /// the 2000 kept). Their texts are lost unless the peer sends them again.
    MessagesLost {
        /// The sender's name, or its short identity if it has no pinned name.
        from: String,
        /// The sender's identity, hex.
        from_identity: String,
        /// How many messages.
        count: u32,
    },
    /// The relay delivered a message again whose `(sender, msg_id)` was already
    /// processed (after a reconnect, or a replay by the relay): acknowledged and dropped.
    Redelivered {
        /// The sender's name, or its short identity if it has no pinned name.
        from: String,
        /// The sender's identity, hex.
        from_identity: String,
        /// The relay message id, hex.
        msg_id: String,
    },
    /// A pinned peer name showed up with another identity key.
    IdentityChanged {
        /// The peer's name.
        peer: String,
        /// The pinned identity, hex.
        previous: String,
        /// The new identity, hex.
        current: String,
        /// The configured policy.
        policy: IdentityPolicy,
        /// True if the pinned identity was verified (a change is then always held).
        pinned_verified: bool,
        /// What was done.
        action: IdentityAction,
    },
    /// A message from a pending (not yet accepted) identity of a peer was kept
    /// undecrypted until the user decides.
    MessageHeld {
        /// The peer's name.
        from: String,
        /// The pending identity that sent it, hex.
        from_identity: String,
        /// The relay message id, hex.
        msg_id: String,
    },
    /// A message of a pending identity change was acknowledged and deleted unread: the
    /// name already holds the most held messages (docs/AGENT.md 6). Keeping it at the
    /// relay instead would stall every other sender's deliveries.
    HeldDiscarded {
        /// The peer's name.
        from: String,
        /// The pending identity that sent it, hex.
        from_identity: String,
        /// The relay message id, hex.
        msg_id: String,
        /// How many messages are held for the name (the limit).
        held: usize,
    },
    /// The user rejected the pending identity changes of a peer (`/reject`): the pin
    /// stays, their held messages are deleted unread.
    IdentityRejected {
        /// The peer's name.
        peer: String,
        /// The rejected identities, hex.
        identities: Vec<String>,
        /// How many held messages were deleted.
        discarded: usize,
    },
    /// The user marked a peer verified.
    PeerVerified {
        /// The peer's name.
        peer: String,
        /// The identity now pinned and verified, hex.
        identity: String,
        /// The safety number that was compared, 60 digits.
        safety_number: String,
    },
    /// The relay's registry binds no name to us any more (`/release-name`, confirmed by
    /// the relay); the agent no longer claims it.
    NameReleased {
        /// Our name, now free for another identity to claim.
        name: String,
    },
    /// The relay's registry binds our name to our identity again (`/claim-name`).
    NameClaimed {
        /// Our name.
        name: String,
    },
    /// A peer name was pinned to an identity for the first time.
    PeerPinned {
        /// The peer's name.
        peer: String,
        /// The pinned identity, hex.
        identity: String,
    },
    /// The safety number with a peer (`/verify`); one event per key while an identity
    /// change is pending.
    SafetyNumber {
        /// The peer's name.
        peer: String,
        /// Which key: `pinned` or `new` (a pending change).
        key: String,
        /// That key's identity, hex.
        identity: String,
        /// The 60 digits.
        digits: String,
        /// The digits in 12 groups of 5, 4 groups per line (lines joined by `\n`).
        grouped: String,
        /// The scannable form (what the QR code holds), hex.
        scannable: String,
    },
    /// The pinned peers (`/peers`).
    Peers {
        /// Every pinned peer, by name.
        peers: Vec<PeerInfo>,
    },
    /// Something went wrong that is not tied to one message.
    Error {
        /// What.
        message: String,
    },
    /// A script step starts.
    ScriptStep {
        /// Its line in the script file.
        line: usize,
        /// The step, in canonical script syntax.
        step: String,
    },
    /// The script ended.
    ScriptDone {
        /// True if every step succeeded.
        ok: bool,
    },
    /// Leaving with messages the relay has not stored (`leave_wait_ms` passed, or no
    /// connection): they stay in the outbox and go at the next start.
    Unsent {
        /// How many.
        count: usize,
        /// Their message ids, hex, oldest first.
        msg_ids: Vec<String>,
    },
    /// Information for the user (`print`, notices).
    Info {
        /// The text.
        message: String,
    },
    /// The answer to `/help`: the commands, one per line (shown as is).
    Help {
        /// The lines.
        text: String,
    },
    /// The answer to `/history <peer> [n]`: the last messages with `peer`, oldest first.
    History {
        /// The peer's name.
        peer: String,
        /// The messages.
        messages: Vec<HistoryLine>,
    },
    /// The answer to `/status`.
    Status(LinkStatus),
    /// We are in a group now: we created it (its first commit is stored), or a member
    /// added us (its Welcome).
    GroupJoined {
        /// The group's local name.
        group: String,
        /// Who added us (our own name when we created it).
        by: String,
        /// Every member's name, us included.
        members: Vec<String>,
    },
    /// A text in a group.
    GroupMessage {
        /// The group's local name.
        group: String,
        /// The sender's name.
        from: String,
        /// The sender's identity, hex.
        from_identity: String,
        /// The text.
        text: String,
    },
    /// A commit changed a group's members (another member's, or ours once stored).
    GroupMembers {
        /// The group's local name.
        group: String,
        /// Who committed.
        by: String,
        /// The group's epoch now.
        epoch: u64,
        /// Names added.
        added: Vec<String>,
        /// Names removed.
        removed: Vec<String>,
    },
    /// We are no longer in a group (removed, or our leave was committed); its state is
    /// deleted.
    GroupRemoved {
        /// The group's local name.
        group: String,
        /// Who removed us (our own name when we left).
        by: String,
    },
    /// The relay stored our text to a group for every other member.
    GroupSent {
        /// The group's local name.
        group: String,
        /// The upload's message id, hex.
        msg_id: String,
    },
    /// A group operation, upload or delivery failed.
    GroupFailed {
        /// The group's local name (or id, hex, for a group we do not know).
        group: String,
        /// What failed.
        reason: String,
    },
    /// The answer to `/groups`.
    Groups {
        /// One line per group, by name.
        groups: Vec<GroupLine>,
    },
    /// The agent is leaving (end of input, `/quit`, Ctrl-C): the last line it prints.
    Goodbye {
        /// Texts still in the outbox, sent at the next start.
        unsent: usize,
    },
}

/// A message id as the 32 hex characters events use.
pub fn msg_id_hex(msg_id: &[u8; 16]) -> String {
    hex::encode(msg_id)
}

/// An identity as the 64 hex characters events use.
pub fn identity_hex(identity: &IdentityKey) -> String {
    hex::encode(identity.as_bytes())
}

/// The first 16 hex characters of a hex identity or id, for readable output.
fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

/// `ms` as seconds for people: `0.2 s`, `5 s`.
fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
    }
}

/// Makes peer-supplied text safe to print on a terminal: control characters (escape
/// sequences, carriage returns, newlines) and bidirectional overrides are shown
/// escaped instead of being interpreted.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Event {
    /// The id (hex) of the message this event is about, for events about a message
    /// this agent sent (`sent`, `delivered`, `deferred`, `send_failed`, `expired`).
    pub fn sent_msg_id(&self) -> Option<&str> {
        match self {
            Self::Sent { msg_id, .. }
            | Self::Delivered { msg_id, .. }
            | Self::Deferred { msg_id, .. }
            | Self::SendFailed { msg_id, .. }
            | Self::Expired { msg_id, .. }
            | Self::GroupSent { msg_id, .. } => Some(msg_id).filter(|id| !id.is_empty()).map(String::as_str),
            _ => None,
        }
    }

    /// The JSON line of this event with `"id": id` added (bot mode, docs/AGENT.md 4.1).
    pub fn to_json_line_with_id(&self, id: &serde_json::Value) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut fields)) => {
                fields.insert("id".into(), id.clone());
                serde_json::Value::Object(fields).to_string()
            }
            _ => self.to_json_line(),
        }
    }

    /// An [`Event::Info`].
    pub fn info(message: impl Into<String>) -> Self {
        Self::Info {
            message: message.into(),
        }
    }

    /// An [`Event::Error`].
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }

    /// An [`Event::Message`] for a decrypted text message (`None` for a payload that is
    /// not text, such as a receipt).
    pub fn message(
        from: &str,
        from_identity: &IdentityKey,
        msg_id: &[u8; 16],
        incoming: &Incoming,
    ) -> Option<Self> {
        incoming.payload.as_text().map(|text| Self::Message {
            from: from.to_owned(),
            from_identity: identity_hex(from_identity),
            text: text.to_owned(),
            msg_id: msg_id_hex(msg_id),
            timestamp_ms: incoming.payload.timestamp_ms,
            newly_skipped: incoming.newly_skipped,
            late: incoming.late,
        })
    }

    /// An [`Event::RecipientAway`] for the relay's `away_days` answer about `peer`
    /// (`identity`): `None` when it is 0 (seen within the relay's notice period);
    /// `AWAY_NEVER` becomes `away_days: None`.
    pub fn recipient_away(peer: &str, identity: &IdentityKey, away_days: u32) -> Option<Self> {
        (away_days > 0).then(|| Self::RecipientAway {
            peer: peer.to_owned(),
            identity: identity_hex(identity),
            away_days: (away_days != AWAY_NEVER).then_some(away_days),
        })
    }

    /// An [`Event::DecryptFailure`].
    pub fn decrypt_failure(from: &str, from_identity: &IdentityKey, failure: &DecryptFailure) -> Self {
        Self::DecryptFailure {
            from: from.to_owned(),
            from_identity: identity_hex(from_identity),
            class: failure.class,
            detail: failure.detail.clone(),
        }
    }

    /// An [`Event::SafetyNumber`] for one key of `peer`.
    pub fn safety_number(peer: &str, key: &str, identity: &IdentityKey, number: &SafetyNumber) -> Self {
        Self::SafetyNumber {
            peer: peer.to_owned(),
            key: key.to_owned(),
            identity: identity_hex(identity),
            digits: number.digits().to_owned(),
            grouped: number.display_groups(),
            scannable: hex::encode(number.scannable()),
        }
    }

    /// The JSON object for `--json` output: one line, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        // Serializing these plain data types cannot fail; fall back to an error event
        // rather than panic if it ever did.
        serde_json::to_string(self).unwrap_or_else(|err| {
            let message = serde_json::Value::String(format!("event not serializable: {err}"));
            format!("{{\"event\":\"error\",\"message\":{message}}}")
        })
    }

    /// Readable output for people: usually one line, a few for safety numbers and
    /// listings. (The QR code of a safety number is not part of it: render
    /// `scannable` with [`crate::qr::render`] and print it below.) No trailing newline. `*` marks status, `!` marks something that needs
    /// attention, `[name]` a received message.
    pub fn to_human(&self) -> String {
        match self {
            Self::Started { name, identity } => format!("* {name} started (identity {})", short(identity)),
            Self::Connection {
                state,
                relay,
                next_relay,
                attempt,
                retry_in_ms,
                reason,
            } => {
                let why = reason.as_ref().map_or(String::new(), |r| format!(": {}", sanitize(r)));
                match state {
                    ConnectionState::Connected => format!("* connected to relay {relay}"),
                    ConnectionState::Disconnected => format!("* disconnected from relay {relay}{why}"),
                    ConnectionState::Reconnecting => {
                        let when = match (attempt, retry_in_ms) {
                            (Some(n), Some(ms)) => format!(" (attempt {n} in {})", seconds(*ms)),
                            (Some(n), None) => format!(" (attempt {n})"),
                            (None, _) => String::new(),
                        };
                        match next_relay {
                            Some(next) => format!("* reconnecting to relay {next}{when}, relay {relay} failed{why}"),
                            None => format!("* reconnecting to relay {relay}{when}{why}"),
                        }
                    }
                }
            }
            Self::Message {
                from,
                text,
                newly_skipped,
                late,
                ..
            } => {
                let mut out = format!("[{from}] {}", sanitize(text));
                if *late {
                    out.push_str("  (arrived late)");
                }
                if *newly_skipped > 0 {
                    let s = if *newly_skipped == 1 { "" } else { "s" };
                    let _ = write!(
                        out,
                        "\n  ({newly_skipped} earlier message{s} from {from} not received yet)"
                    );
                }
                out
            }
            Self::Sent { to, msg_id } => format!("  -> sent to {to} (msg {})", short(msg_id)),
            Self::RecipientAway { peer, away_days, .. } => {
                let absence = match away_days {
                    Some(1) => "has not connected to the relay for 1 day".to_string(),
                    Some(days) => format!("has not connected to the relay for {days} days"),
                    None => "has never connected to this relay (or the relay forgot it)".to_string(),
                };
                format!(
                    "! {peer} {absence}; your messages wait there until the relay's message lifetime ends"
                )
            }
            Self::Delivered { to, msg_id } => format!("  -> delivered to {to} (msg {})", short(msg_id)),
            Self::Expired { to, msg_id } => format!(
                "! message to {to} (msg {}) expired unread at the relay: it was not delivered",
                short(msg_id)
            ),
            Self::SendFailed { to, msg_id, reason, .. } => {
                if msg_id.is_empty() {
                    format!("! could not send to {to}: {}", sanitize(reason))
                } else {
                    format!(
                        "! could not send to {to} (msg {}): {}",
                        short(msg_id),
                        sanitize(reason)
                    )
                }
            }
            Self::DecryptFailure {
                from, class, detail, ..
            } => {
                format!("! decrypt failure from {from}: {class} ({})", sanitize(detail))
            }
            Self::SessionReset {
                peer,
                side,
                reason,
                resent,
                ..
            } => match resent {
                Some(resent) if side == "restarted" => format!(
                    "* {peer} could not read our messages ({reason}): new session started, {resent} recent \
                     messages sent again"
                ),
                _ => format!("* cannot read {peer}'s messages ({reason}): asked {peer} for a new session"),
            },
            Self::MessagesLost { from, count, .. } => format!(
                "! {count} messages from {from} can no longer be decrypted (too far behind): lost unless \
                 {from} sends them again"
            ),
            Self::Redelivered { from, msg_id, .. } => {
                format!(
                    "  (a message from {from} came again from the relay, msg {}: already shown, dropped)",
                    short(msg_id)
                )
            }
            Self::IdentityChanged {
                peer,
                previous,
                current,
                policy,
                action,
                ..
            } => {
                let next = match action {
                    IdentityAction::Held => format!(
                        "its messages are held unread and nothing is sent to {peer}; compare safety numbers \
                         (/verify {peer}), then /trust {peer} <digits> or /reject {peer}"
                    ),
                    IdentityAction::Warned | IdentityAction::Accepted => format!(
                        "the new identity is pinned, unverified; compare safety numbers with /verify {peer}"
                    ),
                };
                format!(
                    "! identity of {peer} changed: {} -> {} (policy {policy}: {})\n  {next}",
                    short(previous),
                    short(current),
                    action.as_str()
                )
            }
            Self::PeerVerified { peer, identity, .. } => {
                format!("* {peer} is verified (identity {})", short(identity))
            }
            Self::MessageHeld {
                from, from_identity, ..
            } => format!(
                "! a message from the new identity of {from} ({}) is held unread: /verify {from}",
                short(from_identity)
            ),
            Self::HeldDiscarded {
                from,
                from_identity,
                held,
                ..
            } => format!(
                "! a message from the new identity of {from} ({}) was deleted unread: {held} are held already (/verify {from}, then /trust or /reject)",
                short(from_identity)
            ),
            Self::IdentityRejected {
                peer,
                identities,
                discarded,
            } => format!(
                "* rejected {} new identit{} of {peer}; {discarded} held message{} deleted unread",
                identities.len(),
                if identities.len() == 1 { "y" } else { "ies" },
                if *discarded == 1 { "" } else { "s" }
            ),
            Self::NameReleased { name } => format!(
                "* the relay no longer binds the name {name} to you; others can claim it (/claim-name to take it back while it is free)"
            ),
            Self::NameClaimed { name } => format!("* the relay binds the name {name} to your identity"),
            Self::PeerPinned { peer, identity } => format!("* pinned {peer} to identity {}", short(identity)),
            Self::SafetyNumber {
                peer,
                key,
                identity,
                grouped,
                ..
            } => {
                let mut out = format!("safety number with {peer} ({key} key {}):", short(identity));
                for line in grouped.lines() {
                    let _ = write!(out, "\n  {line}");
                }
                let _ = write!(
                    out,
                    "\ncompare it with {peer}'s (in person or over a channel you trust); \
                     if they match, type them: /trust {peer} <digits>"
                );
                out
            }
            Self::Peers { peers } => {
                if peers.is_empty() {
                    return "no peers yet".into();
                }
                let mut out = String::from("peers:");
                for p in peers {
                    let _ = write!(
                        out,
                        "\n  {:<16} {}  {}{}",
                        p.name,
                        short(&p.identity),
                        if p.verified { "verified" } else { "unverified" },
                        if p.has_session { ", session" } else { "" }
                    );
                    if p.pending_change {
                        let _ = write!(out, ", identity change pending ({} held)", p.held);
                    }
                    if p.unread > 0 {
                        let _ = write!(out, ", {} unread", p.unread);
                    }
                    if let Some(at) = p.last_activity_ms {
                        let _ = write!(out, ", last message {} UTC", utc(at));
                    }
                }
                out
            }
            Self::Error { message } => format!("! error: {}", sanitize(message)),
            Self::ScriptStep { line, step } => format!("# line {line}: {}", sanitize(step)),
            Self::ScriptDone { ok: true } => "# script done".into(),
            Self::ScriptDone { ok: false } => "# script failed".into(),
            Self::Deferred {
                to,
                msg_id,
                code,
                retry_after_ms,
            } => format!(
                "* message {} to {} deferred by the relay ({code}): kept, sent again in {retry_after_ms} ms",
                short(msg_id),
                sanitize(to)
            ),
            Self::Unsent { count, .. } => format!(
                "* leaving with {count} message(s) not yet stored at the relay: kept, sent at the next start"
            ),
            Self::Info { message } => format!("* {}", sanitize(message)),
            Self::Help { text } => text.clone(),
            Self::History { peer, messages } => views::history_human(peer, messages),
            Self::Status(status) => views::status_human(status),
            Self::GroupJoined { group, by, members } => {
                format!("* in group {group} (by {by}): {}", members.join(", "))
            }
            Self::GroupMessage { group, from, text, .. } => format!("[{group}/{from}] {}", sanitize(text)),
            Self::GroupMembers {
                group,
                by,
                epoch,
                added,
                removed,
            } => {
                let mut out = format!("* group {group}, epoch {epoch}, by {by}:");
                if !added.is_empty() {
                    let _ = write!(out, " added {}", added.join(", "));
                }
                if !removed.is_empty() {
                    let _ = write!(out, " removed {}", removed.join(", "));
                }
                out
            }
            Self::GroupRemoved { group, by } => format!("* no longer in group {group} (by {by})"),
            Self::GroupSent { group, msg_id } => format!("  -> sent to group {group} (msg {})", short(msg_id)),
            Self::GroupFailed { group, reason } => format!("! group {group}: {}", sanitize(reason)),
            Self::Groups { groups } => {
                if groups.is_empty() {
                    return "no groups yet".into();
                }
                let mut out = String::from("groups:");
                for g in groups {
                    let _ = write!(out, "\n  {:<16} epoch {}: {}", g.group, g.epoch, g.members.join(", "));
                    if g.pending > 0 {
                        let _ = write!(out, " ({} pending)", g.pending);
                    }
                }
                out
            }
            Self::Goodbye { unsent: 0 } => "* goodbye".into(),
            Self::Goodbye { unsent } => {
                format!("* goodbye ({unsent} messages wait in the outbox for the next start)")
            }
        }
    }
}

#[cfg(test)]
mod tests;
