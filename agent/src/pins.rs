//! The pin book: which identity each peer name is bound to, and the identity changes
//! waiting for the user's decision.
//!
//! Trust rules (`docs/AGENT.md`, "Trust model"):
//! - A name is bound to an identity only through the relay's registry (a verified
//!   `LookupName` or `LookupIdentity` answer), never through anything a message says.
//! - The first identity seen for a name is pinned (trust on first use), unverified.
//! - A **verified** pin never changes without the user: a different identity for the
//!   name is held as a *pending change*, whatever the identity policy.
//! - An unverified pin follows the policy: `block` holds the change, `warn` and
//!   `accept` re-pin the name to the new identity (reported either way).
//! - A pending change is resolved only by the user: `/trust <peer> <digits>` accepts the
//!   identity whose safety number the digits match (pinned or new), `/reject <peer>`
//!   keeps the pin and rejects the new identities for good.
//!
//! This type holds no IO; `AgentState` writes its changed names to the state database
//! after every change.

use std::collections::BTreeMap;

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::safety_number::SafetyNumber;
use serde::{Deserialize, Serialize};

use crate::hex_serde;

/// Pending identity changes kept per name; past it the oldest is forgotten (a relay can
/// make identities without end, so the list must not grow with them).
pub const MAX_PENDING_PER_NAME: usize = 8;
/// Rejected identities remembered per name; past it the oldest is forgotten.
pub const MAX_REJECTED_PER_NAME: usize = 64;

/// Appends `item`, dropping the oldest entries past `max`.
fn push_bounded<T>(list: &mut Vec<T>, item: T, max: usize) {
    list.push(item);
    if list.len() > max {
        let excess = list.len() - max;
        list.drain(..excess);
    }
}

/// A pinned peer: the identity bound to a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The pinned identity.
    #[serde(with = "hex_serde::identity")]
    pub identity: IdentityKey,
    /// True once the user compared safety numbers (`/trust`).
    pub verified: bool,
    /// When this identity was first seen for the name, ms since the Unix epoch.
    pub first_seen_ms: u64,
}

/// An identity in a pin file list (hex in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedIdentity(#[serde(with = "hex_serde::identity")] pub IdentityKey);

/// What [`PinBook::observe`] found for a name and an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// A short-lived return value: boxing the key would cost more than the size difference.
#[allow(clippy::large_enum_variant)]
pub enum PinOutcome {
    /// The name was not pinned; it is now pinned to this identity.
    New,
    /// The name is pinned to this identity.
    Same,
    /// The name is pinned to another identity; the book is unchanged.
    Changed {
        /// The pinned identity.
        previous: IdentityKey,
        /// True if the pin is verified (it then never changes without the user).
        verified: bool,
    },
    /// The identity was already held as a pending change of the name.
    Pending,
    /// The user rejected this identity for the name.
    Rejected,
}

/// Which key a safety number was computed for while a change is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// The pinned identity.
    Pinned,
    /// A new identity held as a pending change.
    New,
}

impl KeyRole {
    /// `pinned` or `new` (JSON and text).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pinned => "pinned",
            Self::New => "new",
        }
    }
}

/// A candidate key of a name with its safety number.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Pinned or new.
    pub role: KeyRole,
    /// The identity.
    pub identity: IdentityKey,
    /// The safety number with it.
    pub number: SafetyNumber,
}

/// Pins, pending changes and rejected identities, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinBook {
    /// name → pinned identity.
    pub pins: BTreeMap<String, Pin>,
    /// name → new identities seen for it, held until the user decides, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, Vec<ListedIdentity>>,
    /// name → identities the user rejected for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected: BTreeMap<String, Vec<ListedIdentity>>,
}

impl PinBook {
    /// Compares an identity the registry bound to `name` with the book. An unpinned name
    /// is pinned (unverified, first seen `now_ms`).
    pub fn observe(&mut self, name: &str, identity: &IdentityKey, now_ms: u64) -> PinOutcome {
        if listed(&self.rejected, name, identity) {
            return PinOutcome::Rejected;
        }
        match self.pins.get(name) {
            Some(pin) if &pin.identity == identity => PinOutcome::Same,
            Some(_) if listed(&self.pending, name, identity) => PinOutcome::Pending,
            Some(pin) => PinOutcome::Changed {
                previous: pin.identity,
                verified: pin.verified,
            },
            None => {
                self.pins.insert(name.to_owned(), unverified(*identity, now_ms));
                PinOutcome::New
            }
        }
    }

    /// Holds `identity` as a pending change of `name` (no effect if already held).
    pub fn hold(&mut self, name: &str, identity: &IdentityKey) {
        if !listed(&self.pending, name, identity) {
            push_bounded(
                self.pending.entry(name.to_owned()).or_default(),
                ListedIdentity(*identity),
                MAX_PENDING_PER_NAME,
            );
        }
    }

    /// Re-pins `name` to `identity` (verified or not, first seen `now_ms`); its pending
    /// changes are cleared. Returns the identity that was pinned before, if another.
    pub fn repin(
        &mut self,
        name: &str,
        identity: &IdentityKey,
        verified: bool,
        now_ms: u64,
    ) -> Option<IdentityKey> {
        self.pending.remove(name);
        if let Some(rejected) = self.rejected.get_mut(name) {
            rejected.retain(|r| &r.0 != identity);
        }
        let mut pin = unverified(*identity, now_ms);
        pin.verified = verified;
        match self.pins.insert(name.to_owned(), pin) {
            Some(old) if &old.identity != identity => Some(old.identity),
            Some(old) => {
                // Same identity: keep when it was first seen.
                if let Some(pin) = self.pins.get_mut(name) {
                    pin.first_seen_ms = old.first_seen_ms;
                }
                None
            }
            None => None,
        }
    }

    /// Rejects every pending change of `name`: they are remembered as rejected and the
    /// pin stays. Returns the rejected identities.
    pub fn reject(&mut self, name: &str) -> Vec<IdentityKey> {
        let rejected: Vec<ListedIdentity> = self.pending.remove(name).unwrap_or_default();
        let list = self.rejected.entry(name.to_owned()).or_default();
        for identity in &rejected {
            if !list.contains(identity) {
                push_bounded(list, *identity, MAX_REJECTED_PER_NAME);
            }
        }
        rejected.into_iter().map(|l| l.0).collect()
    }

    /// The pending changes of `name`, oldest first.
    pub fn pending(&self, name: &str) -> Vec<IdentityKey> {
        self.pending
            .get(name)
            .map(|l| l.iter().map(|i| i.0).collect())
            .unwrap_or_default()
    }

    /// The name whose pending change `identity` is, if any.
    pub fn pending_name_of(&self, identity: &IdentityKey) -> Option<&str> {
        self.pending
            .iter()
            .find(|(_, ids)| ids.iter().any(|i| &i.0 == identity))
            .map(|(name, _)| name.as_str())
    }

    /// The name that rejected `identity`, if any.
    pub fn rejected_name_of(&self, identity: &IdentityKey) -> Option<&str> {
        self.rejected
            .iter()
            .find(|(_, ids)| ids.iter().any(|i| &i.0 == identity))
            .map(|(name, _)| name.as_str())
    }

    /// The (first, by name) name pinned to `identity`.
    pub fn name_of(&self, identity: &IdentityKey) -> Option<&str> {
        self.pins
            .iter()
            .find(|(_, pin)| &pin.identity == identity)
            .map(|(name, _)| name.as_str())
    }

    /// True if some name pins `identity`.
    pub fn is_pinned(&self, identity: &IdentityKey) -> bool {
        self.pins.values().any(|p| &p.identity == identity)
    }

    /// The pinned key and every pending one of `name`, each with its safety number
    /// (`own` and `own_name` are our identity and name; the names are the stable ids,
    /// `docs/PROTOCOL.md` 4.3).
    pub fn candidates(&self, own: &IdentityKey, own_name: &str, name: &str) -> Vec<Candidate> {
        let number = |identity: &IdentityKey| {
            SafetyNumber::compute(
                own.as_bytes(),
                own_name.as_bytes(),
                identity.as_bytes(),
                name.as_bytes(),
            )
        };
        let pinned = self.pins.get(name).map(|pin| Candidate {
            role: KeyRole::Pinned,
            identity: pin.identity,
            number: number(&pin.identity),
        });
        let pending = self.pending(name).into_iter().map(|identity| Candidate {
            role: KeyRole::New,
            identity,
            number: number(&identity),
        });
        pinned.into_iter().chain(pending).collect()
    }
}

fn unverified(identity: IdentityKey, now_ms: u64) -> Pin {
    Pin {
        identity,
        verified: false,
        first_seen_ms: now_ms,
    }
}

fn listed(map: &BTreeMap<String, Vec<ListedIdentity>>, name: &str, identity: &IdentityKey) -> bool {
    map.get(name)
        .is_some_and(|ids| ids.iter().any(|i| &i.0 == identity))
}

/// Parses typed safety-number digits: 60 decimal digits, spaces allowed between groups.
/// `None` if anything else was typed.
pub fn parse_digits(typed: &str) -> Option<String> {
    let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == e2ee_protocol::safety_number::DIGITS_LEN && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

#[cfg(test)]
mod tests {
    use e2ee_protocol::identity::IdentityKeyPair;

    use super::*;

    fn key(seed: u8) -> IdentityKey {
        *IdentityKeyPair::from_seed(&[seed; 32]).public()
    }

    #[test]
    fn first_identity_is_pinned_and_a_different_one_is_a_change() {
        let mut book = PinBook::default();
        assert_eq!(book.observe("bob", &key(1), 5), PinOutcome::New);
        assert_eq!(book.observe("bob", &key(1), 6), PinOutcome::Same);
        assert_eq!(
            book.observe("bob", &key(2), 7),
            PinOutcome::Changed {
                previous: key(1),
                verified: false
            }
        );
        assert_eq!(book.pins["bob"].identity, key(1));
    }

    #[test]
    fn pending_and_rejected_lists_are_bounded_oldest_first_out() {
        let mut book = PinBook::default();
        book.observe("bob", &key(1), 0);
        for seed in 2..(2 + MAX_PENDING_PER_NAME as u8 + 3) {
            book.hold("bob", &key(seed));
        }
        let pending = book.pending("bob");
        assert_eq!(pending.len(), MAX_PENDING_PER_NAME);
        assert_eq!(pending.first(), Some(&key(5)), "the three oldest were forgotten");
        for round in 0..10u8 {
            for seed in 0..MAX_PENDING_PER_NAME as u8 {
                book.hold("bob", &key(100 + round * 10 + seed));
            }
            book.reject("bob");
        }
        assert_eq!(book.rejected["bob"].len(), MAX_REJECTED_PER_NAME);
    }

    #[test]
    fn held_changes_are_pending_until_trusted_or_rejected() {
        let mut book = PinBook::default();
        book.observe("bob", &key(1), 0);
        book.hold("bob", &key(2));
        book.hold("bob", &key(3));
        book.hold("bob", &key(2));
        assert_eq!(book.pending("bob"), vec![key(2), key(3)]);
        assert_eq!(book.observe("bob", &key(2), 1), PinOutcome::Pending);
        assert_eq!(book.pending_name_of(&key(3)), Some("bob"));
        assert_eq!(book.reject("bob"), vec![key(2), key(3)]);
        assert!(book.pending("bob").is_empty());
        assert_eq!(book.observe("bob", &key(3), 2), PinOutcome::Rejected);
        assert_eq!(book.pins["bob"].identity, key(1));
        // Accepting a once-rejected identity later lifts its rejection.
        assert_eq!(book.repin("bob", &key(3), true, 9), Some(key(1)));
        assert_eq!(book.observe("bob", &key(3), 10), PinOutcome::Same);
        assert!(book.pins["bob"].verified);
    }

    #[test]
    fn candidates_carry_distinct_safety_numbers_labelled_pinned_and_new() {
        let mut book = PinBook::default();
        book.observe("bob", &key(1), 0);
        book.hold("bob", &key(2));
        let c = book.candidates(&key(9), "alice", "bob");
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].role, c[0].identity), (KeyRole::Pinned, key(1)));
        assert_eq!((c[1].role, c[1].identity), (KeyRole::New, key(2)));
        assert_ne!(c[0].number.digits(), c[1].number.digits());
    }

    #[test]
    fn digits_are_sixty_decimal_digits_with_optional_spaces() {
        let digits = "0123456789".repeat(6);
        assert_eq!(parse_digits(&digits), Some(digits.clone()));
        let grouped = digits
            .as_bytes()
            .chunks(5)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(parse_digits(&grouped), Some(digits.clone()));
        assert_eq!(parse_digits(&digits[1..]), None);
        assert_eq!(parse_digits(&format!("{}x", &digits[1..])), None);
        assert_eq!(parse_digits(""), None);
    }
}
