//! X3DH key agreement (CRYPTO-V1 "X3DH") for the initiator and the responder.

use zeroize::Zeroize;

use crate::consts::{KEY_LEN, X3DH_INFO};
use crate::error::CryptoError;
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kdf::{hkdf_sha256, RootKey};
use crate::keys::{KeyPair, PrivateKey, PublicKey, SharedSecret};
use crate::prekey::PreKeyBundle;

/// Associated data of a session: `IK_A || IK_B` (Ed25519 public keys).
pub fn associated_data(initiator: &IdentityKey, responder: &IdentityKey) -> [u8; 2 * KEY_LEN] {
    let mut ad = [0u8; 2 * KEY_LEN];
    ad[..KEY_LEN].copy_from_slice(initiator.as_bytes());
    ad[KEY_LEN..].copy_from_slice(responder.as_bytes());
    ad
}

/// `SK = HKDF(0x00×32, 0xFF×32 || DH1 || DH2 || DH3 [|| DH4], "e2ee-chat/x3dh/v1", 32)`.
fn derive_sk(dhs: &[SharedSecret]) -> RootKey {
    let mut ikm = Vec::with_capacity(KEY_LEN * (1 + dhs.len()));
    ikm.extend_from_slice(&[0xff; KEY_LEN]);
    for dh in dhs {
        ikm.extend_from_slice(dh.as_bytes());
    }
    let sk: [u8; KEY_LEN] = hkdf_sha256(&[0u8; KEY_LEN], &ikm, X3DH_INFO);
    ikm.zeroize();
    RootKey::from_bytes(sk)
}

/// What the initiator learns from X3DH.
#[derive(Debug)]
pub struct InitiatorOutput {
    /// The shared secret SK (the first root key).
    pub shared_secret: RootKey,
    /// The ephemeral public key EK_A to send.
    pub base_key: PublicKey,
    /// The one-time prekey used, if the bundle had one.
    pub one_time_prekey: Option<PublicKey>,
}

/// Initiator side: verifies the bundle's signature, then agrees on SK with the
/// bundle's owner using `ephemeral` as EK_A and at most one OPK.
pub fn initiate(
    identity: &IdentityKeyPair,
    bundle: &PreKeyBundle,
    ephemeral: &KeyPair,
) -> Result<InitiatorOutput, CryptoError> {
    bundle.verify()?;
    let opk = bundle.one_time_prekeys.first().copied();
    let ik_b = bundle.identity.to_x25519();
    let mut dhs = vec![
        identity.diffie_hellman(&bundle.signed_prekey)?,
        ephemeral.diffie_hellman(&ik_b)?,
        ephemeral.diffie_hellman(&bundle.signed_prekey)?,
    ];
    if let Some(opk) = &opk {
        dhs.push(ephemeral.diffie_hellman(opk)?);
    }
    Ok(InitiatorOutput {
        shared_secret: derive_sk(&dhs),
        base_key: *ephemeral.public_key(),
        one_time_prekey: opk,
    })
}

/// Responder side: SK from our identity, the signed prekey and one-time prekey the
/// initiator named, and the initiator's identity and base key.
pub fn respond(
    identity: &IdentityKeyPair,
    signed_prekey: &KeyPair,
    one_time_prekey: Option<&PrivateKey>,
    their_identity: &IdentityKey,
    their_base_key: &PublicKey,
) -> Result<RootKey, CryptoError> {
    let mut dhs = vec![
        signed_prekey.diffie_hellman(&their_identity.to_x25519())?,
        identity.diffie_hellman(their_base_key)?,
        signed_prekey.diffie_hellman(their_base_key)?,
    ];
    if let Some(opk) = one_time_prekey {
        dhs.push(opk.diffie_hellman(their_base_key)?);
    }
    Ok(derive_sk(&dhs))
}
