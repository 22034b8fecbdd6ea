//! What the agent tells a user who asks where things stand: `/status` (the relay link),
//! `/history <peer> [n]` (the conversation from the encrypted store) and the unread
//! counts and last activity of `/peers`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::event::{HistoryLine, LinkStatus};

/// The link's story and the unread counts of this run.
#[derive(Debug)]
pub(super) struct Overview {
    /// When the link last came up or went down, ms since the Unix epoch.
    since_ms: u64,
    /// Why the last connection ended or could not be made.
    reason: Option<String>,
    /// What the relay held for us at the last login.
    queued_at_login: Option<u32>,
    /// The relay address connected to, or the last one tried (`None` before any).
    relay: Option<String>,
    /// Messages received per peer name since the user last looked or answered.
    unread: HashMap<String, usize>,
}

impl Default for Overview {
    fn default() -> Self {
        Self {
            since_ms: now_ms(),
            reason: None,
            queued_at_login: None,
            relay: None,
            unread: HashMap::new(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Overview {
    /// Logged in to the relay at `relay`; it held `queued` messages for us.
    pub(super) fn connected(&mut self, queued: u32, relay: &str) {
        self.since_ms = now_ms();
        self.reason = None;
        self.queued_at_login = Some(queued);
        self.relay = Some(relay.to_string());
    }

    /// The connection to `relay` ended, or an attempt at it failed, for `reason`.
    /// `was_connected`: the link was up until now (else the time it went down stays).
    pub(super) fn disconnected(&mut self, reason: &str, was_connected: bool, relay: &str) {
        if was_connected {
            self.since_ms = now_ms();
        }
        self.reason = Some(reason.to_string());
        self.relay = Some(relay.to_string());
    }

    /// A message from `peer` was shown.
    pub(super) fn received(&mut self, peer: &str) {
        *self.unread.entry(peer.to_string()).or_default() += 1;
    }

    /// The user looked at `peer`'s conversation or wrote to `peer`.
    pub(super) fn read(&mut self, peer: &str) {
        self.unread.remove(peer);
    }
}

/// `/status`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShowStatus;

impl Handler<ShowStatus> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: ShowStatus, _: &mut Context<Self>) {
        let relays = self.settings.relays();
        let relay = (self.overview.relay.clone())
            .or_else(|| relays.first().cloned())
            .unwrap_or_default();
        let trust = if self.settings.insecure_plaintext {
            "plain TCP (no TLS)".to_string()
        } else if let Some(ca) = &self.settings.relay_ca {
            format!("TLS, certificate authorities of {ca}")
        } else {
            match self.state.relay_pin(&relay) {
                Ok(Some(pin)) => format!("TLS, key pinned {pin}"),
                Ok(None) => "TLS, key to be pinned on the first connection".to_string(),
                Err(err) => format!("TLS, pin unreadable: {err}"),
            }
        };
        let overview = &self.overview;
        let status = LinkStatus {
            relay,
            relays: if relays.len() > 1 { relays } else { Vec::new() },
            trust,
            connected: self.connected,
            since_ms: overview.since_ms,
            reason: if self.connected {
                None
            } else {
                overview.reason.clone()
            },
            outbox: self.state.outbox().iter().filter(|e| e.text).count(),
            queued_at_login: overview.queued_at_login,
        };
        self.emit(Event::Status(status));
    }
}

/// `/history <peer> [n]`: the answer is an error for a peer with no pinned identity.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ShowHistory {
    /// The peer's name.
    pub peer: String,
    /// How many messages at most.
    pub count: usize,
}

impl Handler<ShowHistory> for AgentActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: ShowHistory, _: &mut Context<Self>) -> Self::Result {
        let Some(identity) = self.state.pin(&msg.peer).map(|pin| pin.identity) else {
            return Err(format!(
                "no conversation with {}: no identity pinned under that name",
                msg.peer
            ));
        };
        let entries = (self.state.history(&identity, msg.count))
            .map_err(|err| format!("cannot read the history: {err}"))?;
        self.overview.read(&msg.peer);
        let messages = (entries.into_iter())
            .map(|entry| HistoryLine {
                sent: entry.sent,
                text: entry.text,
                at_ms: entry.at_ms,
                msg_id: msg_id_hex(&entry.msg_id),
            })
            .collect();
        self.emit(Event::History {
            peer: msg.peer,
            messages,
        });
        Ok(())
    }
}

impl Handler<ListPeers> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: ListPeers, _: &mut Context<Self>) {
        let mut peers = self.state.peer_list();
        for peer in &mut peers {
            peer.unread = self.overview.unread.get(&peer.name).copied().unwrap_or(0);
            peer.last_activity_ms = (self.state.pin(&peer.name).map(|pin| pin.identity))
                .and_then(|identity| self.state.history(&identity, 1).ok())
                .and_then(|last| last.last().map(|entry| entry.at_ms));
        }
        self.emit(Event::Peers { peers });
    }
}
