//! `--e2e`: the pair's messages go through the real crypto of `e2ee-protocol`. The
//! recipient publishes a prekey bundle (through the relay's prekey directory when the
//! target is a relay, handed over in-process for NATS and Redis, which have none), the
//! sender runs X3DH on it and encrypts every probe with the Double Ratchet; the
//! recipient decrypts each one before it is measured.

use anyhow::{anyhow, Context as _};
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::prekey::{PreKeyBundle, PreKeyStore};
use e2ee_protocol::session::{receive, Session};
use rand_core::OsRng;

/// The sending half of a pair's session.
pub struct SenderCrypto {
    session: Session,
}

impl SenderCrypto {
    /// X3DH with the recipient's encoded bundle (verified first).
    pub fn initiate(identity: &IdentityKeyPair, bundle: &[u8]) -> anyhow::Result<Self> {
        let bundle =
            PreKeyBundle::decode_verified(bundle).map_err(|e| anyhow!("bundle does not verify: {e}"))?;
        let session =
            Session::initiate(identity, &bundle, &mut OsRng).map_err(|e| anyhow!("x3dh failed: {e}"))?;
        Ok(Self { session })
    }

    /// Encrypts one payload.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.session
            .encrypt(plaintext, &mut OsRng)
            .map_err(|e| anyhow!("encrypt failed: {e}"))
    }
}

/// The receiving half: identity, prekeys and (after the first message) the session.
pub struct ReceiverCrypto {
    identity: IdentityKeyPair,
    prekeys: PreKeyStore,
    sender: IdentityKey,
    session: Option<Session>,
}

impl ReceiverCrypto {
    /// Fresh prekeys (one one-time prekey) for `identity`, expecting messages from `sender`.
    pub fn new(identity: IdentityKeyPair, sender: [u8; 32]) -> anyhow::Result<Self> {
        let prekeys = PreKeyStore::generate(&identity, 1, &mut OsRng);
        let sender = IdentityKey::from_bytes(sender).map_err(|e| anyhow!("sender identity: {e}"))?;
        Ok(Self {
            identity,
            prekeys,
            sender,
            session: None,
        })
    }

    /// The encoded bundle to publish.
    pub fn bundle(&self) -> Vec<u8> {
        self.prekeys.bundle(self.identity.public()).encode()
    }

    /// Decrypts one message (the first one creates the session).
    pub fn decrypt(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let received = receive(
            self.session.as_mut(),
            &self.identity,
            &mut self.prekeys,
            &self.sender,
            bytes,
            &mut OsRng,
        )
        .map_err(|e| anyhow!("{e}"))
        .context("decrypt")?;
        if let Some(session) = received.new_session {
            self.session = Some(session);
        }
        Ok(received.decrypted.plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_encrypts_and_decrypts_in_order() {
        let alice = IdentityKeyPair::generate(&mut OsRng);
        let bob = IdentityKeyPair::generate(&mut OsRng);
        let mut rx = ReceiverCrypto::new(bob, *alice.public().as_bytes()).expect("receiver");
        let mut tx = SenderCrypto::initiate(&alice, &rx.bundle()).expect("x3dh");
        for n in 0u8..5 {
            let wire = tx.encrypt(&[n; 40]).expect("encrypt");
            assert_eq!(rx.decrypt(&wire).expect("decrypt"), vec![n; 40]);
        }
    }
}
