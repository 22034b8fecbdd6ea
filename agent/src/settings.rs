//! The agent's settings: one struct loaded in layers by `e2ee_config::load`
//! (defaults → TOML file → `E2EE_AGENT_` environment → flags). Unknown keys are errors.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use e2ee_config::{LogFormat, LogLevel};
use e2ee_protocol::name_claim::{validate_name, NameClaimError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What the agent does when a pinned peer name shows up with a different identity key.
/// Every change is reported, whatever the policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum IdentityPolicy {
    /// Hold the new identity: its messages are kept undecrypted and sends to the name
    /// are refused until the user runs `/trust <peer> <digits>` (the safety number of
    /// the key to keep) or `/reject <peer>`.
    Block,
    /// For an unverified pin: re-pin the new identity (unverified) so the conversation
    /// continues, and report the change as a warning. A verified pin is held as under
    /// `block`.
    #[default]
    Warn,
    /// For an unverified pin: re-pin the new identity (unverified) and report the
    /// change. A verified pin is held as under `block`.
    Accept,
}

impl IdentityPolicy {
    /// The name used in settings, flags and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Warn => "warn",
            Self::Accept => "accept",
        }
    }
}

impl fmt::Display for IdentityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`IdentityPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid identity policy `{0}`, expected one of: block, warn, accept")]
pub struct ParsePolicyError(pub String);

impl FromStr for IdentityPolicy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "block" => Ok(Self::Block),
            "warn" => Ok(Self::Warn),
            "accept" => Ok(Self::Accept),
            _ => Err(ParsePolicyError(s.to_owned())),
        }
    }
}

impl TryFrom<String> for IdentityPolicy {
    type Error = ParsePolicyError;

    fn try_from(s: String) -> Result<Self, ParsePolicyError> {
        s.parse()
    }
}

/// One-time prekey management.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrekeySettings {
    /// One-time prekeys made and published when the state is created.
    pub initial_one_time: u32,
    /// Replenish when the relay reports fewer than this many one-time prekeys left.
    pub replenish_below: u32,
    /// Top the one-time prekeys up to this many when replenishing.
    pub replenish_to: u32,
    /// At most one replenishing publication per this many milliseconds (a burst of
    /// `PreKeysLow` makes one publication).
    pub replenish_min_interval_ms: u64,
    /// Make a new signed prekey when the current one is this old, in seconds (7 days).
    pub signed_rotation_secs: u64,
    /// Keep the previous signed prekey this long after a rotation, for PreKey messages
    /// in flight, then delete it with the handshakes remembered under it, in seconds
    /// (14 days; at least the relay's message TTL).
    pub signed_grace_secs: u64,
    /// Delete a one-time prekey the relay handed out this long after it was found
    /// handed out and no peer used it, in seconds (14 days).
    pub handed_out_grace_secs: u64,
    /// At most this many private one-time prekeys are kept; past it the oldest handed
    /// out ones are deleted at once.
    pub max_local_one_time: u32,
}

impl Default for PrekeySettings {
    fn default() -> Self {
        Self {
            initial_one_time: 50,
            replenish_below: 10,
            replenish_to: 50,
            replenish_min_interval_ms: 10_000,
            signed_rotation_secs: 7 * 86_400,
            signed_grace_secs: 14 * 86_400,
            handed_out_grace_secs: 14 * 86_400,
            max_local_one_time: 500,
        }
    }
}

/// The conversation history kept in the state (sealed), per peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Messages kept per peer (sent and received texts, newest); 0 keeps none.
    pub keep: u32,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self { keep: 1000 }
    }
}

/// The most sent payloads the send log may keep per peer: half of the message ids a
/// receiver remembers per peer (`RECEIVED_IDS_KEPT`, 4096, receipts included), so that
/// what a session reset sends again is recognised as already shown.
pub const MAX_SEND_LOG_KEEP: u32 = 2048;

/// The send log kept in the state (sealed): recent sent payloads per peer, so that a
/// session established again can carry them again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendLogSettings {
    /// Sent payloads kept per peer (newest); 0 keeps none.
    pub keep: u32,
    /// Entries older than this are deleted, in seconds (7 days: the relay's default
    /// message lifetime).
    pub max_age_secs: u64,
}

impl Default for SendLogSettings {
    fn default() -> Self {
        Self {
            keep: 200,
            max_age_secs: 7 * 86_400,
        }
    }
}

/// Reconnection to the relay: exponential backoff from `initial_ms` up to `max_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectSettings {
    /// The first delay after a lost connection, in milliseconds.
    pub initial_ms: u64,
    /// The longest delay between attempts, in milliseconds.
    pub max_ms: u64,
}

impl Default for ReconnectSettings {
    fn default() -> Self {
        Self {
            initial_ms: 100,
            max_ms: 5000,
        }
    }
}

/// Liveness of the relay link: after `interval_ms` without any frame from the relay the
/// agent sends a `Ping`; if nothing at all arrives within `timeout_ms` more, or a write
/// does not complete within `timeout_ms`, the link is dead (a half-open connection) and
/// the agent reconnects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSettings {
    /// Quiet time before the agent pings the relay, in milliseconds.
    pub interval_ms: u64,
    /// How long a ping (or a write) may go unanswered, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for HeartbeatSettings {
    fn default() -> Self {
        Self {
            interval_ms: 15_000,
            timeout_ms: 15_000,
        }
    }
}

/// Session recovery (docs/PROTOCOL.md 2.8): how often a peer may be asked for, or be
/// granted, a new session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    /// Ask peers for new sessions and grant their requests. Off: failures stay failures
    /// (for demonstrations of the ratchet alone; leave it on otherwise).
    pub enabled: bool,
    /// At most one reset request sent to a peer, and at most one new session started at
    /// a peer's request, per this many milliseconds (so two broken peers cannot loop).
    pub min_interval_ms: u64,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_interval_ms: 30_000,
        }
    }
}

/// Every setting of the `e2ee-agent` binary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// This agent's name (`[a-z0-9._-]`, 1..=64 bytes). Required: the default is empty.
    pub name: String,
    /// The relay's address, `host:port`, or several (the relays of one cluster, all
    /// serving one TLS key) separated by commas: `host:port,host:port`. The agent uses
    /// one at a time and moves to the next when it cannot be reached or its link drops.
    /// A config file may also give a list of strings (`relay = ["a:7300", "b:7300"]`).
    #[serde(deserialize_with = "relay_list")]
    pub relay: String,
    /// The directory holding the state database (identity, prekeys, sessions, pins,
    /// outbox) and, without a passphrase, its key file `state.key`.
    pub state_dir: PathBuf,
    /// A file whose first line (without its line end) is the passphrase the state is
    /// sealed under (Argon2id). Without it the state key is the random key
    /// file `state.key` in the state directory: the state is then protected by file
    /// permissions only. The kind must stay the one the state was created with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    /// Ask for the passphrase on the terminal instead (twice when the state is new).
    pub passphrase_prompt: bool,
    /// What to do when a pinned peer's identity key changes.
    pub identity_policy: IdentityPolicy,
    /// Print one JSON event per line on stdout instead of readable lines.
    pub json: bool,
    /// Log format (logs go to stderr).
    pub log_format: LogFormat,
    /// The least severe level that is logged.
    pub log_level: LogLevel,
    /// One-time prekey management.
    pub prekeys: PrekeySettings,
    /// Reconnection backoff.
    pub reconnect: ReconnectSettings,
    /// The conversation history kept.
    pub history: HistorySettings,
    /// The send log kept.
    pub send_log: SendLogSettings,
    /// How long a script's `expect`, `expect-failure` and `wait-peer` wait unless the
    /// step gives `timeout=<ms>`, in milliseconds.
    pub expect_timeout_ms: u64,
    /// Liveness of the relay link.
    pub heartbeat: HeartbeatSettings,
    /// Session recovery.
    pub recovery: RecoverySettings,
    /// The relay's TLS key pin (`sha256:` and 64 hex digits, as `e2ee-relay
    /// --print-pin` prints it). Without it the key the relay shows on the first
    /// connection is pinned (trust on first use) and kept in the state.
    pub relay_pin: Option<String>,
    /// Trust the relay by certificate authorities instead of a pin: the path of a PEM
    /// file of CA certificates, or `system` for the operating system's. The relay's
    /// certificate must then lead to one of them and name the host in `relay`. Not with
    /// `relay_pin`.
    pub relay_ca: Option<String>,
    /// Talk plain TCP to a relay that serves no TLS (local benchmarks only).
    pub insecure_plaintext: bool,
    /// On leaving (end of stdin, `/quit`, end of a script): how long the agent waits for
    /// the relay to store what is still in its outbox before it exits, in milliseconds
    /// (0: leave at once). What is still unsent then is reported (`unsent`) and stays in
    /// the outbox for the next start.
    pub leave_wait_ms: u64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            relay: "127.0.0.1:7300".into(),
            state_dir: PathBuf::from("./e2ee-agent-state"),
            passphrase_file: None,
            passphrase_prompt: false,
            identity_policy: IdentityPolicy::Warn,
            json: false,
            log_format: LogFormat::Term,
            log_level: LogLevel::Info,
            prekeys: PrekeySettings::default(),
            reconnect: ReconnectSettings::default(),
            history: HistorySettings::default(),
            send_log: SendLogSettings::default(),
            expect_timeout_ms: 10_000,
            leave_wait_ms: 10_000,
            heartbeat: HeartbeatSettings::default(),
            recovery: RecoverySettings::default(),
            relay_pin: None,
            relay_ca: None,
            insecure_plaintext: false,
        }
    }
}

/// Merged settings that cannot work together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidSettings {
    /// `name` is not a valid agent name (or was not given).
    #[error("invalid agent name {name:?}: {source}")]
    Name {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        #[source]
        source: NameClaimError,
    },
    /// `relay` is empty.
    #[error("relay address is empty")]
    EmptyRelay,
    /// `relay` is a list with an empty entry (`a:1,,b:2`, a trailing comma).
    #[error("relay list {0:?} has an empty entry")]
    EmptyRelayEntry(String),
    /// `relay` names one address twice.
    #[error("relay address {0:?} is listed twice")]
    DuplicateRelay(String),
    /// `relay` (or an address of its list) is not `host:port`.
    #[error(
        "relay address {0:?} is not host:port (for example 127.0.0.1:7300, relay.example:7300 or [::1]:7300)"
    )]
    BadRelay(String),
    /// `prekeys.replenish_to` is not above `prekeys.replenish_below`, or
    /// `prekeys.initial_one_time` is zero.
    #[error(
        "prekeys: need initial_one_time > 0 and replenish_to > replenish_below \
         (got initial_one_time = {initial}, replenish_below = {below}, replenish_to = {to})"
    )]
    Prekeys {
        /// `prekeys.initial_one_time`.
        initial: u32,
        /// `prekeys.replenish_below`.
        below: u32,
        /// `prekeys.replenish_to`.
        to: u32,
    },
    /// The reconnect delays are zero or in the wrong order.
    #[error("reconnect: need 0 < initial_ms <= max_ms (got initial_ms = {initial}, max_ms = {max})")]
    Reconnect {
        /// `reconnect.initial_ms`.
        initial: u64,
        /// `reconnect.max_ms`.
        max: u64,
    },
    /// `expect_timeout_ms` is zero.
    #[error("expect_timeout_ms must be above 0")]
    ExpectTimeout,
    /// The send log keeps more texts per peer than a receiver remembers message ids of,
    /// so a session reset could show old texts again.
    #[error("send_log.keep is {keep}: at most {max} (half the message ids a receiver remembers per peer)")]
    SendLogKeep {
        /// `send_log.keep`.
        keep: u32,
        /// The largest allowed.
        max: u32,
    },
    /// `relay_pin` does not parse.
    #[error("relay_pin: {0}")]
    RelayPin(String),
    /// `relay_ca` with `insecure_plaintext`.
    #[error("relay_ca is for TLS: it cannot go with insecure_plaintext")]
    CaWithoutTls,
    /// Both `relay_pin` and `relay_ca`.
    #[error("relay_pin and relay_ca are two ways to trust the relay: give one")]
    PinAndCa,
    /// `relay_pin` with `insecure_plaintext`.
    #[error("relay_pin is for TLS: it cannot go with insecure_plaintext")]
    PinWithoutTls,
    /// A heartbeat time is zero.
    #[error("heartbeat: need interval_ms and timeout_ms above 0 (got {interval} and {timeout})")]
    Heartbeat {
        /// `heartbeat.interval_ms`.
        interval: u64,
        /// `heartbeat.timeout_ms`.
        timeout: u64,
    },
    /// A prekey lifetime is zero, or the one-time prekey cap is below `replenish_to`.
    #[error(
        "prekeys: need signed_rotation_secs, signed_grace_secs and handed_out_grace_secs above 0 \
         and max_local_one_time >= replenish_to (got max_local_one_time = {max_local})"
    )]
    PrekeyLifetimes {
        /// `prekeys.max_local_one_time`.
        max_local: u32,
    },
}

/// `relay` as the agent reads it: one string, the addresses separated by commas, or a list
/// of strings (each of which may hold commas too), joined with commas.
fn relay_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a relay address host:port, several separated by commas, or a list of them")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let mut all: Vec<String> = Vec::new();
            while let Some(one) = seq.next_element::<String>()? {
                all.push(one);
            }
            Ok(all.join(","))
        }
    }
    deserializer.deserialize_any(Visitor)
}

/// The addresses of a `relay` setting, in order: split at commas, spaces around each
/// trimmed (an empty entry stays, for [`AgentSettings::validate`] to refuse).
pub fn split_relays(relay: &str) -> Vec<String> {
    relay.split(',').map(|one| one.trim().to_string()).collect()
}

/// `relay` must be `host:port`: a port from 1 to 65535 after the last colon, a host
/// without spaces before it (an IPv6 address in brackets).
fn check_relay_address(relay: &str) -> Result<(), InvalidSettings> {
    let bad = || InvalidSettings::BadRelay(relay.to_string());
    let (host, port) = relay.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => !host.is_empty() && !host.contains(':') && !host.contains(char::is_whitespace),
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

impl AgentSettings {
    /// The relay addresses, in the order they are tried (one for a single address).
    pub fn relays(&self) -> Vec<String> {
        split_relays(&self.relay)
    }

    /// Checks what serde cannot: a valid name, a relay address, consistent prekey and
    /// backoff numbers.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        validate_name(&self.name).map_err(|source| InvalidSettings::Name {
            name: self.name.clone(),
            source,
        })?;
        if self.relay.trim().is_empty() {
            return Err(InvalidSettings::EmptyRelay);
        }
        let relays = self.relays();
        for (i, relay) in relays.iter().enumerate() {
            if relay.is_empty() {
                return Err(InvalidSettings::EmptyRelayEntry(self.relay.clone()));
            }
            check_relay_address(relay)?;
            if relays[..i].contains(relay) {
                return Err(InvalidSettings::DuplicateRelay(relay.clone()));
            }
        }
        let p = &self.prekeys;
        if p.initial_one_time == 0 || p.replenish_to <= p.replenish_below {
            return Err(InvalidSettings::Prekeys {
                initial: p.initial_one_time,
                below: p.replenish_below,
                to: p.replenish_to,
            });
        }
        if p.signed_rotation_secs == 0
            || p.signed_grace_secs == 0
            || p.handed_out_grace_secs == 0
            || p.max_local_one_time < p.replenish_to
        {
            return Err(InvalidSettings::PrekeyLifetimes {
                max_local: p.max_local_one_time,
            });
        }
        let r = &self.reconnect;
        if r.initial_ms == 0 || r.initial_ms > r.max_ms {
            return Err(InvalidSettings::Reconnect {
                initial: r.initial_ms,
                max: r.max_ms,
            });
        }
        if self.expect_timeout_ms == 0 {
            return Err(InvalidSettings::ExpectTimeout);
        }
        if self.relay_ca.is_some() {
            if self.insecure_plaintext {
                return Err(InvalidSettings::CaWithoutTls);
            }
            if self.relay_pin.is_some() {
                return Err(InvalidSettings::PinAndCa);
            }
        }
        if let Some(pin) = &self.relay_pin {
            if self.insecure_plaintext {
                return Err(InvalidSettings::PinWithoutTls);
            }
            pin.parse::<e2ee_net::RelayPin>()
                .map_err(|err| InvalidSettings::RelayPin(err.to_string()))?;
        }
        if self.send_log.keep > MAX_SEND_LOG_KEEP {
            return Err(InvalidSettings::SendLogKeep {
                keep: self.send_log.keep,
                max: MAX_SEND_LOG_KEEP,
            });
        }
        let h = &self.heartbeat;
        if h.interval_ms == 0 || h.timeout_ms == 0 {
            return Err(InvalidSettings::Heartbeat {
                interval: h.interval_ms,
                timeout: h.timeout_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<AgentSettings, e2ee_config::SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        if let Some(text) = toml {
            std::fs::write(&path, text).expect("write config");
        }
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        e2ee_config::load_with_env(
            toml.map(|_| path.as_path()),
            e2ee_config::AGENT_ENV_PREFIX,
            env,
            &[],
        )
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = AgentSettings::default();
        assert_eq!(s.name, "");
        assert_eq!(s.relay, "127.0.0.1:7300");
        assert_eq!(s.state_dir, PathBuf::from("./e2ee-agent-state"));
        assert_eq!(s.identity_policy, IdentityPolicy::Warn);
        assert!(!s.json);
        assert_eq!(s.log_format, LogFormat::Term);
        assert_eq!(s.log_level, LogLevel::Info);
        assert_eq!(s.prekeys, PrekeySettings::default());
        assert_eq!(
            (
                s.prekeys.initial_one_time,
                s.prekeys.replenish_below,
                s.prekeys.replenish_to
            ),
            (50, 10, 50)
        );
        assert_eq!((s.reconnect.initial_ms, s.reconnect.max_ms), (100, 5000));
        assert_eq!(s.expect_timeout_ms, 10_000);
    }

    #[test]
    fn loads_through_every_layer() {
        let s = load(
            Some("name = \"alice\"\nidentity_policy = \"block\"\n[prekeys]\nreplenish_to = 80\n"),
            &[
                ("E2EE_AGENT_RECONNECT__MAX_MS", "9000"),
                ("E2EE_AGENT_JSON", "true"),
                ("E2EE_AGENT_IDENTITY_POLICY", "Accept"),
            ],
        )
        .expect("load");
        assert_eq!(s.name, "alice");
        assert_eq!(s.identity_policy, IdentityPolicy::Accept);
        assert_eq!(s.prekeys.replenish_to, 80);
        assert_eq!(s.prekeys.replenish_below, 10);
        assert_eq!(s.reconnect.max_ms, 9000);
        assert!(s.json);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn rejects_unknown_keys() {
        assert!(load(Some("nmae = \"alice\"\n"), &[]).is_err());
        assert!(load(Some("[prekeys]\nreplenish = 3\n"), &[]).is_err());
        assert!(serde_json::from_str::<AgentSettings>(r#"{"relay":"x","extra":1}"#).is_err());
    }

    #[test]
    fn rejects_unknown_policy() {
        assert!(load(Some("identity_policy = \"ignore\"\n"), &[]).is_err());
        assert_eq!(
            "ignore".parse::<IdentityPolicy>(),
            Err(ParsePolicyError("ignore".into()))
        );
    }

    #[test]
    fn policy_round_trips_through_str_and_serde() {
        for policy in [
            IdentityPolicy::Block,
            IdentityPolicy::Warn,
            IdentityPolicy::Accept,
        ] {
            assert_eq!(policy.as_str().parse::<IdentityPolicy>(), Ok(policy));
            let json = serde_json::to_string(&policy).expect("serialize");
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(serde_json::from_str::<IdentityPolicy>(&json).ok(), Some(policy));
        }
        assert_eq!("WARN".parse::<IdentityPolicy>(), Ok(IdentityPolicy::Warn));
    }

    #[test]
    fn settings_round_trip_through_toml() {
        let mut s = AgentSettings {
            name: "bob".into(),
            ..AgentSettings::default()
        };
        s.identity_policy = IdentityPolicy::Block;
        let text = e2ee_config::to_toml(&s).expect("to toml");
        assert_eq!(load(Some(&text), &[]).expect("load back"), s);
    }

    #[test]
    fn relay_takes_one_address_a_comma_list_or_a_toml_list() {
        let one = load(Some("name = \"alice\"\nrelay = \"10.0.0.1:7300\"\n"), &[]).expect("load");
        assert_eq!(one.relays(), ["10.0.0.1:7300"]);
        let listed = load(
            Some("name = \"alice\"\nrelay = [\"10.0.0.1:7300\", \"10.0.0.2:7300\"]\n"),
            &[],
        )
        .expect("load a list");
        assert_eq!(listed.relay, "10.0.0.1:7300,10.0.0.2:7300");
        assert_eq!(listed.relays(), ["10.0.0.1:7300", "10.0.0.2:7300"]);
        assert_eq!(listed.validate(), Ok(()));
        let env = load(
            Some("name = \"alice\"\n"),
            &[("E2EE_AGENT_RELAY", "10.0.0.1:7300, [::1]:7301")],
        )
        .expect("load from the environment");
        assert_eq!(env.relays(), ["10.0.0.1:7300", "[::1]:7301"]);
        assert_eq!(env.validate(), Ok(()));
        // What --print-config prints loads back the same.
        let text = e2ee_config::to_toml(&listed).expect("to toml");
        assert_eq!(load(Some(&text), &[]).expect("load back"), listed);
    }

    #[test]
    fn validate_catches_inconsistent_settings() {
        let good = AgentSettings {
            name: "alice".into(),
            ..AgentSettings::default()
        };
        assert_eq!(good.validate(), Ok(()));
        assert!(matches!(
            AgentSettings::default().validate(),
            Err(InvalidSettings::Name { .. })
        ));
        let mut s = good.clone();
        s.name = "Alice".into();
        assert!(matches!(s.validate(), Err(InvalidSettings::Name { .. })));
        let mut s = good.clone();
        s.prekeys.replenish_to = 5;
        assert!(matches!(s.validate(), Err(InvalidSettings::Prekeys { .. })));
        let mut s = good.clone();
        s.reconnect.initial_ms = 10_000;
        assert!(matches!(s.validate(), Err(InvalidSettings::Reconnect { .. })));
        let mut s = good.clone();
        s.relay = " ".into();
        assert_eq!(s.validate(), Err(InvalidSettings::EmptyRelay));
        for bad in [
            "nonsense",
            "127.0.0.1",
            "host:",
            ":7300",
            "host:port",
            "host:70000",
            "a b:1",
            "[::1:7300",
        ] {
            let mut s = good.clone();
            s.relay = bad.into();
            assert_eq!(s.validate(), Err(InvalidSettings::BadRelay(bad.into())), "{bad}");
        }
        for fine in [
            "127.0.0.1:7300",
            "relay.example:7300",
            "[::1]:7300",
            "localhost:1",
        ] {
            let mut s = good.clone();
            s.relay = fine.into();
            assert_eq!(s.validate(), Ok(()), "{fine}");
        }
        let mut s = good.clone();
        s.relay = "127.0.0.1:7300,relay.example:7300,[::1]:7300".into();
        assert_eq!(s.validate(), Ok(()));
        let mut s = good.clone();
        s.relay = "127.0.0.1:7300,nonsense,[::1]:7300".into();
        assert_eq!(s.validate(), Err(InvalidSettings::BadRelay("nonsense".into())));
        let mut s = good.clone();
        s.relay = "127.0.0.1:7300,,[::1]:7300".into();
        assert!(matches!(s.validate(), Err(InvalidSettings::EmptyRelayEntry(_))));
        s.relay = "127.0.0.1:7300,".into();
        assert!(matches!(s.validate(), Err(InvalidSettings::EmptyRelayEntry(_))));
        s.relay = "127.0.0.1:7300, 127.0.0.1:7300".into();
        assert_eq!(
            s.validate(),
            Err(InvalidSettings::DuplicateRelay("127.0.0.1:7300".into()))
        );
        let mut s = good;
        s.expect_timeout_ms = 0;
        assert_eq!(s.validate(), Err(InvalidSettings::ExpectTimeout));
    }
}
