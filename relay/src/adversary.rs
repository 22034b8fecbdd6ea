//! A relay that misbehaves on purpose, for the security evidence (`make evidence`).
//!
//! Built only with the `adversary` cargo feature, and switched on only by the
//! `e2ee-relay-adversary` binary of e2ee-integration (`--adversary MODE`, through
//! [`crate::server::run_adversarial`]): the `e2ee-relay` binary has no flag or setting
//! that reaches this module, whichever features cargo unified into the library.
//!
//! With a mode other than `off`, the relay tampers with, drops,
//! duplicates, reorders, replays, delays or relabels the messages it forwards, or hands
//! out its own identity in place of the prekey bundles and name claims it is asked for. The
//! agents must detect or survive each of these; the evidence runner checks that they
//! do. Off by default: then the only cost on the message path is one `Option` check in
//! the Connection actor.
//!
//! The adversary sees only what any relay sees, and picks its targets by it: the message
//! kind (the first payload byte, PreKey or Normal, `target`), its size (`min_len`: the
//! padding buckets still tell short receipts from longer texts) and its position among
//! the eligible messages (`every`: the Nth, 2Nth, ...). Messages it injects (duplicates,
//! replays, released held messages) are stored under a new relay `msg_id`, as a relay
//! that wants them processed again must do; `redeliver` shows what happens otherwise: a
//! delivery repeated under the same id is recognised by the agent before decryption,
//! reported, and dropped. `relabel` is the opposite case: a *fresh* message delivered
//! under a relay `msg_id` the recipient has already seen, which must still be decrypted
//! and shown (the relay id is not authenticated, so it cannot decide what is a repeat).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use clap::{Args, ValueEnum};
use e2ee_protocol::consts::{MSG_TYPE_NORMAL, MSG_TYPE_NORMAL_V2, TAG_LEN};
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::message::is_prekey_message;
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::prekey::PreKeyStore;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use slog::{warn, Logger};

use crate::connection::Connection;
use crate::store::{IdentityBytes, MsgId};

/// What the adversary does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum AdversaryMode {
    /// An honest relay.
    #[default]
    Off,
    /// Flip one bit of the ciphertext, then store and forward it.
    Tamper,
    /// Acknowledge the message to its sender but never store or forward it.
    Drop,
    /// Forward the message, then the same ciphertext again under a new relay id.
    Duplicate,
    /// Hold the message (acknowledged) and release it after the next eligible one.
    Reorder,
    /// Forward the message, keep a copy, and inject the copy again under a new relay id
    /// after the next eligible message.
    Replay,
    /// Store and forward the message only after `delay_ms`.
    Delay,
    /// Forward the message, then after `delay_ms` deliver it again under its original
    /// relay `msg_id`, straight to the recipient (not stored).
    Redeliver,
    /// Deliver the message under the relay `msg_id` of the previous eligible message to
    /// the same recipient (an id it has already seen), straight to the recipient (not
    /// stored; the sender is acknowledged under its own id). The first eligible message
    /// to each recipient, and those `every` skips, pass unchanged and set the id used.
    Relabel,
    /// Answer every name lookup and bundle fetch with a claim and bundle of the relay's
    /// own identity (a man in the middle).
    #[serde(alias = "substitute-bundle")]
    #[value(alias = "substitute-bundle")]
    SubstituteBundle,
}

impl AdversaryMode {
    /// The snake_case name used in settings and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Tamper => "tamper",
            Self::Drop => "drop",
            Self::Duplicate => "duplicate",
            Self::Reorder => "reorder",
            Self::Replay => "replay",
            Self::Delay => "delay",
            Self::Redeliver => "redeliver",
            Self::Relabel => "relabel",
            Self::SubstituteBundle => "substitute_bundle",
        }
    }
}

/// Which message kinds the adversary acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum AdversaryTarget {
    /// Normal (Double Ratchet) messages only, so sessions still get established.
    #[default]
    Normal,
    /// PreKey (handshake) messages only.
    Prekey,
    /// Every message.
    Any,
}

/// The adversary's settings: the `e2ee-relay-adversary` binary's `--adversary…` flags
/// (printed as an `[adversary]` section by its `--print-config`).
#[derive(Debug, Clone, Serialize, Deserialize, Args)]
#[serde(deny_unknown_fields, default)]
pub struct AdversarySettings {
    /// Misbehave on purpose: tamper, drop, duplicate, reorder, replay, delay,
    /// redeliver, relabel or substitute_bundle (off: an honest relay).
    #[arg(long = "adversary", value_name = "MODE", value_enum, default_value_t = AdversaryMode::Off)]
    pub mode: AdversaryMode,
    /// Act on every Nth eligible message (1 = all of them, 0 counts as 1).
    #[arg(long = "adversary-every", value_name = "N", default_value_t = 1)]
    pub every: u64,
    /// Which message kinds are eligible.
    #[arg(long = "adversary-target", value_name = "KIND", value_enum, default_value_t = AdversaryTarget::Normal)]
    pub target: AdversaryTarget,
    /// Only messages of at least this many payload bytes are eligible.
    #[arg(long = "adversary-min-len", value_name = "BYTES", default_value_t = 0)]
    pub min_len: usize,
    /// `delay`: how long a message is held. `reorder` and `replay`: the longest a held
    /// message waits for a next eligible message before it is released anyway.
    #[arg(long = "adversary-delay-ms", value_name = "MS", default_value_t = 1000)]
    pub delay_ms: u64,
}

impl Default for AdversarySettings {
    fn default() -> Self {
        Self {
            mode: AdversaryMode::Off,
            every: 1,
            target: AdversaryTarget::Normal,
            min_len: 0,
            delay_ms: 1000,
        }
    }
}

/// One message the Connection is to store (and route).
pub(crate) struct Planned {
    sender: IdentityBytes,
    recipient: IdentityBytes,
    msg_id: MsgId,
    payload: Vec<u8>,
    /// Send `SentAck` to the sender once stored (only for the sender's own message).
    ack: bool,
    delay: Duration,
}

/// What to do with one `Send`.
#[derive(Default)]
struct Plan {
    /// Acknowledge these ids now, without storing them.
    ack_now: Vec<MsgId>,
    /// Store these, in order.
    stores: Vec<Planned>,
    /// Release the held message (this token) after this long, if still held.
    release_after: Option<(Duration, u64)>,
    /// Deliver this again, under the same id and without storing it, after this long.
    redeliver_after: Option<(Duration, Planned)>,
    /// Deliver these now, without storing them (`relabel`: under another message's id).
    deliver_now: Vec<Planned>,
}

struct Held {
    token: u64,
    message: Planned,
}

#[derive(Default)]
struct State {
    /// Eligible messages seen.
    eligible: u64,
    /// A message held back (reorder) or a copy kept for replay.
    held: Option<Held>,
    next_token: u64,
    /// `relabel`: per recipient, the relay id its last eligible message was delivered under.
    last_ids: HashMap<IdentityBytes, MsgId>,
}

/// The relay's own identity, handed out in place of everyone else's.
struct Impostor {
    identity: IdentityKeyPair,
    bundle: Vec<u8>,
}

/// A misbehaving relay's state, shared by every connection.
pub struct Adversary {
    settings: AdversarySettings,
    state: Mutex<State>,
    impostor: Option<Impostor>,
    log: Logger,
}

impl Adversary {
    /// The adversary for `settings`, or `None` for an honest relay.
    pub fn from_settings(settings: &AdversarySettings, log: &Logger) -> Option<Arc<Self>> {
        if settings.mode == AdversaryMode::Off {
            return None;
        }
        let impostor = (settings.mode == AdversaryMode::SubstituteBundle).then(|| {
            let identity = IdentityKeyPair::generate(&mut OsRng);
            let bundle = PreKeyStore::generate(&identity, 0, &mut OsRng)
                .bundle(identity.public())
                .encode();
            Impostor { identity, bundle }
        });
        let adversary = Self {
            settings: settings.clone(),
            state: Mutex::new(State::default()),
            impostor,
            log: log.clone(),
        };
        warn!(log, "adversary mode active"; "mode" => settings.mode.as_str(),
              "every" => settings.every, "min_len" => settings.min_len,
              "impostor" => adversary.impostor_identity().map(|id| id.short()).unwrap_or_default());
        Some(Arc::new(adversary))
    }

    /// The mode.
    pub fn mode(&self) -> AdversaryMode {
        self.settings.mode
    }

    /// The identity the relay substitutes (`substitute_bundle` only).
    pub fn impostor_identity(&self) -> Option<&IdentityKey> {
        self.impostor.as_ref().map(|i| i.identity.public())
    }

    /// A claim of `name` by the relay's own identity, in place of the stored one.
    pub fn substitute_claim(&self, name: &str) -> Option<Vec<u8>> {
        let impostor = self.impostor.as_ref()?;
        let claim = NameClaim::sign(&impostor.identity, name, crate::now_ms()).ok()?;
        warn!(self.log, "adversary acted"; "action" => "substitute_claim", "name" => name);
        Some(claim.encode())
    }

    /// The relay's own bundle, in place of the one of `owner`.
    pub fn substitute_bundle(&self, owner: &IdentityBytes) -> Option<Vec<u8>> {
        let impostor = self.impostor.as_ref()?;
        let owner = IdentityKey::from_bytes(*owner)
            .map(|k| k.short())
            .unwrap_or_default();
        warn!(self.log, "adversary acted"; "action" => "substitute_bundle", "target" => owner);
        Some(impostor.bundle.clone())
    }

    /// Handles one authenticated `Send` in place of the honest path.
    pub(crate) fn on_send(
        self: &Arc<Self>,
        conn: &mut Connection,
        sender: IdentityBytes,
        recipient: IdentityBytes,
        msg_id: MsgId,
        payload: Vec<u8>,
        ctx: &mut Context<Connection>,
    ) {
        let plan = self.plan(Planned {
            sender,
            recipient,
            msg_id,
            payload,
            ack: true,
            delay: Duration::ZERO,
        });
        for id in plan.ack_now {
            conn.send(Frame::SentAck { msg_id: id }, ctx);
        }
        for planned in plan.stores {
            store(conn, planned, ctx);
        }
        for planned in plan.deliver_now {
            conn.push_unstored(
                planned.recipient,
                Frame::Deliver {
                    sender: planned.sender,
                    msg_id: planned.msg_id,
                    timestamp_ms: crate::now_ms(),
                    payload: planned.payload,
                },
            );
        }
        if let Some((after, copy)) = plan.redeliver_after {
            let adversary = self.clone();
            ctx.run_later(after, move |conn, _| {
                adversary.acted("redeliver", &copy.msg_id);
                conn.push_unstored(
                    copy.recipient,
                    Frame::Deliver {
                        sender: copy.sender,
                        msg_id: copy.msg_id,
                        timestamp_ms: crate::now_ms(),
                        payload: copy.payload,
                    },
                );
            });
        }
        if let Some((after, token)) = plan.release_after {
            let adversary = self.clone();
            ctx.run_later(after, move |conn, ctx| {
                if let Some(held) = adversary.take_held(Some(token)) {
                    adversary.acted("release", &held.msg_id);
                    store(conn, held, ctx);
                }
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_held(&self, token: Option<u64>) -> Option<Planned> {
        let mut state = self.lock();
        match (&state.held, token) {
            (Some(held), Some(token)) if held.token != token => None,
            _ => state.held.take().map(|h| h.message),
        }
    }

    fn eligible(&self, payload: &[u8]) -> bool {
        let kind_ok = match self.settings.target {
            AdversaryTarget::Normal => {
                matches!(payload.first(), Some(&(MSG_TYPE_NORMAL | MSG_TYPE_NORMAL_V2)))
            }
            AdversaryTarget::Prekey => is_prekey_message(payload),
            AdversaryTarget::Any => true,
        };
        kind_ok && payload.len() >= self.settings.min_len
    }

    fn acted(&self, action: &str, msg_id: &MsgId) {
        warn!(self.log, "adversary acted"; "action" => action, "msg_id" => hex::encode(msg_id));
    }

    fn plan(&self, mut message: Planned) -> Plan {
        let mut plan = Plan::default();
        if !self.eligible(&message.payload) {
            plan.stores.push(message);
            return plan;
        }
        let mut state = self.lock();
        state.eligible += 1;
        // A held message is released right after the next eligible one, which is not
        // itself a target (it is the one that overtakes).
        if let Some(held) = state.held.take() {
            drop(state);
            plan.stores.push(message);
            self.acted("release", &held.message.msg_id);
            plan.stores.push(held.message);
            return plan;
        }
        if !state.eligible.is_multiple_of(self.settings.every.max(1)) {
            if self.settings.mode == AdversaryMode::Relabel {
                state.last_ids.insert(message.recipient, message.msg_id);
            }
            plan.stores.push(message);
            return plan;
        }
        let hold = Duration::from_millis(self.settings.delay_ms);
        match self.settings.mode {
            AdversaryMode::Off | AdversaryMode::SubstituteBundle => plan.stores.push(message),
            AdversaryMode::Tamper => {
                self.acted("tamper", &message.msg_id);
                // The last ciphertext byte before the tag (padding keeps it present).
                let index = message.payload.len().saturating_sub(TAG_LEN + 1);
                if let Some(byte) = message.payload.get_mut(index) {
                    *byte ^= 0x01;
                }
                plan.stores.push(message);
            }
            AdversaryMode::Drop => {
                self.acted("drop", &message.msg_id);
                plan.ack_now.push(message.msg_id);
            }
            AdversaryMode::Duplicate => {
                let copy = injected_copy(&message);
                self.acted("duplicate", &copy.msg_id);
                plan.stores.push(message);
                plan.stores.push(copy);
            }
            AdversaryMode::Replay => {
                let copy = injected_copy(&message);
                self.acted("replay_recorded", &message.msg_id);
                state.next_token += 1;
                let token = state.next_token;
                state.held = Some(Held { token, message: copy });
                plan.release_after = Some((hold, token));
                plan.stores.push(message);
            }
            AdversaryMode::Reorder => {
                self.acted("hold", &message.msg_id);
                plan.ack_now.push(message.msg_id);
                message.ack = false;
                state.next_token += 1;
                let token = state.next_token;
                state.held = Some(Held { token, message });
                plan.release_after = Some((hold, token));
            }
            AdversaryMode::Delay => {
                self.acted("delay", &message.msg_id);
                message.delay = hold;
                plan.stores.push(message);
            }
            AdversaryMode::Redeliver => {
                self.acted("redeliver_recorded", &message.msg_id);
                let copy = Planned {
                    ack: false,
                    payload: message.payload.clone(),
                    ..message
                };
                plan.redeliver_after = Some((hold, copy));
                plan.stores.push(message);
            }
            AdversaryMode::Relabel => match state.last_ids.get(&message.recipient) {
                Some(&seen) => {
                    warn!(self.log, "adversary acted"; "action" => "relabel",
                          "msg_id" => hex::encode(message.msg_id), "as" => hex::encode(seen));
                    plan.ack_now.push(message.msg_id);
                    plan.deliver_now.push(Planned {
                        msg_id: seen,
                        ack: false,
                        ..message
                    });
                }
                None => {
                    state.last_ids.insert(message.recipient, message.msg_id);
                    plan.stores.push(message);
                }
            },
        }
        plan
    }
}

/// The same ciphertext under a fresh relay id, not acknowledged to anyone.
fn injected_copy(message: &Planned) -> Planned {
    let mut msg_id = [0u8; 16];
    OsRng.fill_bytes(&mut msg_id);
    Planned {
        sender: message.sender,
        recipient: message.recipient,
        msg_id,
        payload: message.payload.clone(),
        ack: false,
        delay: Duration::ZERO,
    }
}

fn store(conn: &mut Connection, planned: Planned, ctx: &mut Context<Connection>) {
    let Planned {
        sender,
        recipient,
        msg_id,
        payload,
        ack,
        delay,
    } = planned;
    if delay.is_zero() {
        conn.store_message(sender, recipient, msg_id, payload, ack, ctx);
    } else {
        ctx.run_later(delay, move |conn, ctx| {
            conn.store_message(sender, recipient, msg_id, payload, ack, ctx)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::o;

    fn adversary(mode: AdversaryMode, every: u64) -> Arc<Adversary> {
        let settings = AdversarySettings {
            mode,
            every,
            min_len: 100,
            ..AdversarySettings::default()
        };
        let log = Logger::root(slog::Discard, o!());
        Adversary::from_settings(&settings, &log).expect("an adversary")
    }

    fn message(id: u8, len: usize) -> Planned {
        let mut payload = vec![id; len];
        payload[0] = MSG_TYPE_NORMAL_V2;
        Planned {
            sender: [1; 32],
            recipient: [2; 32],
            msg_id: [id; 16],
            payload,
            ack: true,
            delay: Duration::ZERO,
        }
    }

    fn ids(plan: &Plan) -> Vec<(u8, bool)> {
        plan.stores.iter().map(|p| (p.msg_id[0], p.ack)).collect()
    }

    #[test]
    fn off_is_no_adversary() {
        let log = Logger::root(slog::Discard, o!());
        assert!(Adversary::from_settings(&AdversarySettings::default(), &log).is_none());
    }

    #[test]
    fn tamper_flips_one_ciphertext_bit_of_every_nth_eligible_message() {
        let adv = adversary(AdversaryMode::Tamper, 2);
        let short = adv.plan(message(9, 50));
        assert_eq!(
            short.stores[0].payload,
            message(9, 50).payload,
            "too short to be eligible"
        );
        let first = adv.plan(message(1, 185));
        assert_eq!(first.stores[0].payload, message(1, 185).payload);
        let second = adv.plan(message(2, 185));
        let diff: Vec<usize> = (0..185)
            .filter(|&i| second.stores[0].payload[i] != message(2, 185).payload[i])
            .collect();
        assert_eq!(diff, vec![185 - TAG_LEN - 1]);
    }

    #[test]
    fn drop_acknowledges_without_storing() {
        let adv = adversary(AdversaryMode::Drop, 1);
        let plan = adv.plan(message(1, 185));
        assert!(plan.stores.is_empty());
        assert_eq!(plan.ack_now, vec![[1; 16]]);
    }

    #[test]
    fn duplicate_and_replay_inject_the_same_ciphertext_under_a_new_id() {
        let adv = adversary(AdversaryMode::Duplicate, 1);
        let plan = adv.plan(message(1, 185));
        assert_eq!(plan.stores.len(), 2);
        assert_eq!(plan.stores[0].payload, plan.stores[1].payload);
        assert_ne!(plan.stores[0].msg_id, plan.stores[1].msg_id);
        assert!(plan.stores[0].ack && !plan.stores[1].ack);

        let adv = adversary(AdversaryMode::Replay, 1);
        let first = adv.plan(message(1, 185));
        assert_eq!(ids(&first), vec![(1, true)]);
        let second = adv.plan(message(2, 185));
        assert_eq!(second.stores.len(), 2, "the copy follows the next message");
        assert_eq!(second.stores[1].payload, message(1, 185).payload);
        assert_ne!(second.stores[1].msg_id, [1; 16]);
    }

    #[test]
    fn reorder_releases_the_held_message_after_the_next_one() {
        let adv = adversary(AdversaryMode::Reorder, 2);
        assert_eq!(ids(&adv.plan(message(1, 185))), vec![(1, true)]);
        let held = adv.plan(message(2, 185));
        assert!(held.stores.is_empty());
        assert_eq!(held.ack_now, vec![[2; 16]]);
        assert_eq!(ids(&adv.plan(message(3, 185))), vec![(3, true), (2, false)]);
        assert_eq!(ids(&adv.plan(message(4, 185))), vec![]);
        // The timer releases only the message it was set for.
        assert!(adv.take_held(Some(999)).is_none());
        assert!(adv.take_held(Some(2)).is_some());
    }

    #[test]
    fn relabel_delivers_under_the_previous_eligible_id_of_the_same_recipient() {
        let adv = adversary(AdversaryMode::Relabel, 1);
        let to = |id: u8, recipient: u8| Planned {
            recipient: [recipient; 32],
            ..message(id, 185)
        };
        // The first eligible message to a recipient passes unchanged.
        let first = adv.plan(to(1, 2));
        assert_eq!(ids(&first), vec![(1, true)]);
        assert!(first.ack_now.is_empty() && first.deliver_now.is_empty());
        // Too short to be eligible: unchanged, and does not change the id used.
        assert_eq!(ids(&adv.plan(message(9, 50))), vec![(9, true)]);
        // The next ones go, unstored, under message 1's id; the sender gets its own ack.
        for id in [2, 3] {
            let plan = adv.plan(to(id, 2));
            assert!(plan.stores.is_empty(), "not stored");
            assert_eq!(plan.ack_now, vec![[id; 16]]);
            assert_eq!(plan.deliver_now.len(), 1);
            let delivered = &plan.deliver_now[0];
            assert_eq!(delivered.msg_id, [1; 16], "under the id already delivered");
            assert_eq!(delivered.payload, message(id, 185).payload, "its own ciphertext");
            assert_eq!((delivered.recipient, delivered.ack), ([2; 32], false));
        }
        // Another recipient has its own previous id.
        assert_eq!(ids(&adv.plan(to(7, 3))), vec![(7, true)]);
        assert_eq!(adv.plan(to(8, 3)).deliver_now[0].msg_id, [7; 16]);

        // With every = 2, the skipped ones set the id the next relabelled one gets.
        let adv = adversary(AdversaryMode::Relabel, 2);
        assert_eq!(ids(&adv.plan(message(1, 185))), vec![(1, true)]);
        assert_eq!(adv.plan(message(2, 185)).deliver_now[0].msg_id, [1; 16]);
        assert_eq!(ids(&adv.plan(message(3, 185))), vec![(3, true)]);
        assert_eq!(adv.plan(message(4, 185)).deliver_now[0].msg_id, [3; 16]);
    }

    #[test]
    fn substitute_bundle_hands_out_the_relays_own_identity() {
        let adv = adversary(AdversaryMode::SubstituteBundle, 1);
        let impostor = *adv.impostor_identity().expect("impostor");
        let bundle = adv.substitute_bundle(&[7; 32]).expect("bundle");
        let bundle = e2ee_protocol::prekey::PreKeyBundle::decode_verified(&bundle).expect("verifies");
        assert_eq!(bundle.identity, impostor);
        let claim = NameClaim::decode_verified(&adv.substitute_claim("bob").expect("claim")).expect("claim");
        assert_eq!((claim.name.as_str(), claim.identity), ("bob", impostor));
        assert!(adv.substitute_claim("Not A Name").is_none());
    }
}
