//! The agent's own name at the relay's registry: claimed on every connection unless the
//! user released it (`/release-name`), released again until the relay confirms, and
//! claimed back on request (`/claim-name`). docs/PROTOCOL.md 1.8 (registry, leases) and
//! 5.6 (the signed release); docs/AGENT.md section 6.
//!
//! Sans-IO: [`OwnName`] says which frame to send and reads the relay's answers; the
//! agent actor sends the frames, keeps the release in the state and reports events.

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::name_claim::NameClaim;

use crate::state::NameReleaseState;

/// What to tell the relay about our name on connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConnect {
    /// Publish our name claim (the default; it also renews the name's lease).
    Claim,
    /// Send the release signed at `issued_ms` again: the relay has not confirmed it.
    Release {
        /// The release's `issued_ms`.
        issued_ms: u64,
    },
    /// Nothing: the name is released and the relay confirmed it.
    Nothing,
}

impl OnConnect {
    /// What to do for the stored release state (`None`: the name is claimed).
    pub fn for_release(release: Option<NameReleaseState>) -> Self {
        match release {
            None => Self::Claim,
            Some(NameReleaseState {
                issued_ms,
                confirmed: false,
            }) => Self::Release { issued_ms },
            Some(_) => Self::Nothing,
        }
    }
}

/// What an answer of the relay means for our name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The registry binds no name to us: the release is done.
    Released,
    /// The registry binds our name to our identity, by a claim issued at `issued_ms`.
    Claimed {
        /// The stored claim's `issued_ms`.
        issued_ms: u64,
    },
    /// A release in flight was refused (`not_owner`): the name is held by another
    /// identity, by none, or still by us under a claim newer than the release; a lookup
    /// tells which.
    ReleaseRefused,
    /// The registry binds our name to another identity.
    HeldByAnother {
        /// The holder's identity key (boxed: the other outcomes carry nothing).
        holder: Box<IdentityKey>,
    },
    /// After a claim, the registry binds the name to no one (the claim was not stored).
    NotBound,
}

/// The requests about our own name in flight on the current connection.
#[derive(Debug, Default)]
pub struct OwnName {
    /// The `ReleaseName` in flight (answered by an absent `NameClaim`).
    release: Option<u32>,
    /// The `LookupName` of our own name after a claim (answered by a `NameClaim`).
    check: Option<u32>,
    /// True once a refused release was signed again on this connection (at most once).
    resigned: bool,
}

impl OwnName {
    /// Notes a `ReleaseName` sent with `request_id`.
    pub fn releasing(&mut self, request_id: u32) {
        self.release = Some(request_id);
    }

    /// Notes a `LookupName` of our own name sent with `request_id`, to confirm a claim.
    pub fn checking(&mut self, request_id: u32) {
        self.check = Some(request_id);
    }

    /// Forgets the requests in flight (the connection is gone; they are sent again).
    pub fn forget(&mut self) {
        *self = Self::default();
    }

    /// Reads a `NameClaim` answer. `None` if `request_id` is not one of ours; otherwise
    /// what it means. A claim that does not verify or names another name counts as no
    /// claim bound to us.
    pub fn on_answer(
        &mut self,
        request_id: u32,
        claim: Option<&[u8]>,
        name: &str,
        me: &IdentityKey,
    ) -> Option<Outcome> {
        if self.release == Some(request_id) {
            self.release = None;
            return Some(Outcome::Released);
        }
        if self.check != Some(request_id) {
            return None;
        }
        self.check = None;
        let claim = claim.and_then(|bytes| NameClaim::decode_verified(bytes).ok());
        Some(match claim {
            Some(claim) if claim.name == name && claim.identity == *me => Outcome::Claimed {
                issued_ms: claim.issued_ms,
            },
            Some(claim) if claim.name == name => Outcome::HeldByAnother {
                holder: Box::new(claim.identity),
            },
            // No verified claim of this name: nothing is bound.
            _ => Outcome::NotBound,
        })
    }

    /// Reads a `not_owner` refusal: [`Outcome::ReleaseRefused`] while a release is in
    /// flight (docs/PROTOCOL.md 1.8: a release of a name one does not hold, or older
    /// than the stored claim, is refused; `Error` frames do not say which request).
    pub fn on_not_owner(&mut self) -> Option<Outcome> {
        self.release.take().map(|_| Outcome::ReleaseRefused)
    }

    /// True the first time on this connection: a refused release may be signed again
    /// once, newer than the stored claim.
    pub fn may_resign(&mut self) -> bool {
        !std::mem::replace(&mut self.resigned, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2ee_protocol::identity::IdentityKeyPair;
    use rand_core::OsRng;

    fn key() -> IdentityKeyPair {
        IdentityKeyPair::generate(&mut OsRng)
    }

    #[test]
    fn on_connect_claims_unless_released() {
        assert_eq!(OnConnect::for_release(None), OnConnect::Claim);
        let pending = NameReleaseState {
            issued_ms: 7,
            confirmed: false,
        };
        assert_eq!(
            OnConnect::for_release(Some(pending)),
            OnConnect::Release { issued_ms: 7 }
        );
        let done = NameReleaseState {
            confirmed: true,
            ..pending
        };
        assert_eq!(OnConnect::for_release(Some(done)), OnConnect::Nothing);
    }

    #[test]
    fn answers_to_other_requests_are_not_ours() {
        let me = key();
        let mut own = OwnName::default();
        own.releasing(3);
        own.checking(4);
        assert_eq!(own.on_answer(5, None, "alice", me.public()), None);
        assert_eq!(
            own.on_answer(3, None, "alice", me.public()),
            Some(Outcome::Released)
        );
        assert_eq!(
            own.on_answer(3, None, "alice", me.public()),
            None,
            "answered once"
        );
    }

    #[test]
    fn a_claim_check_tells_ours_from_another_holder() {
        let me = key();
        let other = key();
        let mut own = OwnName::default();
        let mine = NameClaim::sign(&me, "alice", 1).expect("claim").encode();
        own.checking(1);
        assert_eq!(
            own.on_answer(1, Some(&mine), "alice", me.public()),
            Some(Outcome::Claimed { issued_ms: 1 })
        );
        let theirs = NameClaim::sign(&other, "alice", 1).expect("claim").encode();
        own.checking(2);
        assert_eq!(
            own.on_answer(2, Some(&theirs), "alice", me.public()),
            Some(Outcome::HeldByAnother {
                holder: Box::new(*other.public())
            })
        );
        // A forged claim (bad signature) is not a holder.
        let mut forged = mine.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        own.checking(3);
        assert_eq!(
            own.on_answer(3, Some(&forged), "alice", me.public()),
            Some(Outcome::NotBound)
        );
        own.checking(4);
        assert_eq!(
            own.on_answer(4, None, "alice", me.public()),
            Some(Outcome::NotBound)
        );
    }

    #[test]
    fn not_owner_completes_only_a_release_in_flight() {
        let mut own = OwnName::default();
        assert_eq!(own.on_not_owner(), None);
        own.releasing(9);
        assert_eq!(own.on_not_owner(), Some(Outcome::ReleaseRefused));
        assert!(own.may_resign());
        assert!(!own.may_resign(), "once per connection");
        assert_eq!(own.on_not_owner(), None);
        own.releasing(10);
        own.forget();
        assert_eq!(own.on_not_owner(), None);
    }
}
