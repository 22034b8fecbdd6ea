//! How protocol values become the bytes of state database rows, and back.
//!
//! Secret 32-byte keys (the identity seed, prekey private keys) are stored as their 32
//! raw bytes; sessions as their serde JSON form. The store seals all of these
//! (`crate::store::seal`); the buffers here are zeroizing. (The protocol crate exposes
//! no raw-byte getters for secrets; their serde form is read instead, as the JSON state
//! of the earlier release did.)

use std::path::Path;

use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::keys::PrivateKey;
use e2ee_protocol::session::Session;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::error::StateError;

fn corrupt(path: &Path, detail: impl Into<String>) -> StateError {
    StateError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// 32 bytes from a serde JSON value of 32 numbers (nested under `field` if given).
fn key_bytes_of<T: Serialize>(
    value: &T,
    field: Option<&str>,
    path: &Path,
) -> Result<Zeroizing<[u8; 32]>, StateError> {
    // (The transient JSON value is not zeroized; the bytes returned are.)
    let value = serde_json::to_value(value).map_err(|e| corrupt(path, e.to_string()))?;
    let array = match field {
        Some(field) => value.get(field),
        None => Some(&value),
    };
    let mut out = Zeroizing::new([0u8; 32]);
    let items = array.and_then(Value::as_array).filter(|a| a.len() == 32);
    let Some(items) = items else {
        return Err(corrupt(path, "a key does not serialize as 32 bytes"));
    };
    for (slot, item) in out.iter_mut().zip(items) {
        *slot = item
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| corrupt(path, "a key does not serialize as bytes"))?;
    }
    Ok(out)
}

/// The identity's secret seed.
pub(super) fn identity_seed(
    identity: &IdentityKeyPair,
    path: &Path,
) -> Result<Zeroizing<[u8; 32]>, StateError> {
    key_bytes_of(identity, Some("seed"), path)
}

/// The raw bytes of a private key.
pub(super) fn private_bytes(key: &PrivateKey, path: &Path) -> Result<Zeroizing<[u8; 32]>, StateError> {
    key_bytes_of(key, None, path)
}

/// Exactly 32 bytes read from `what`.
pub(super) fn key32(bytes: &[u8], what: &str, path: &Path) -> Result<Zeroizing<[u8; 32]>, StateError> {
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(corrupt(
            path,
            format!("{what} is {} bytes, expected 32", bytes.len()),
        ));
    }
    out.copy_from_slice(bytes);
    Ok(out)
}

/// An identity key read from `what`.
pub(super) fn identity_key(bytes: &[u8; 32], what: &str, path: &Path) -> Result<IdentityKey, StateError> {
    IdentityKey::from_bytes(*bytes).map_err(|e| corrupt(path, format!("{what}: {e}")))
}

/// A session as stored.
pub(super) fn session_bytes(session: &Session, path: &Path) -> Result<Zeroizing<Vec<u8>>, StateError> {
    serde_json::to_vec(session)
        .map(Zeroizing::new)
        .map_err(|e| corrupt(path, format!("cannot encode a session: {e}")))
}

/// A stored session, checked to be between `local` and `peer`.
pub(super) fn session_from(
    bytes: &[u8],
    local: &IdentityKey,
    peer: &IdentityKey,
    path: &Path,
) -> Result<Session, StateError> {
    let session: Session =
        serde_json::from_slice(bytes).map_err(|e| corrupt(path, format!("sessions.state: {e}")))?;
    if session.remote_identity() != peer {
        return Err(corrupt(path, "session is with another peer than its row says"));
    }
    if session.local_identity() != local {
        return Err(corrupt(path, "session belongs to another local identity"));
    }
    Ok(session)
}
