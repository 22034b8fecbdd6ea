//! Helpers shared by the state's unit tests.

use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::message::Message;
use e2ee_protocol::payload::Payload;
use rand_core::{OsRng, RngCore};

use super::{AgentState, Incoming, OutboxEntry, ReceiveError};
use crate::failure::DecryptFailure;

pub(super) fn open(dir: &Path, name: &str) -> AgentState {
    AgentState::open(dir, name, 5, &mut OsRng).expect("open state")
}

pub(super) fn new_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    id
}

pub(super) fn text(s: &str) -> Payload {
    Payload::text(new_id(), 1_700_000_000_000, s)
}

pub(super) fn ik(state: &AgentState) -> IdentityKey {
    *state.identity().public()
}

/// Encrypts `s` from `from` to `to`, starting a session with `to`'s bundle if needed.
pub(super) fn send(from: &mut AgentState, to: &AgentState, s: &str) -> OutboxEntry {
    if !from.has_session(&ik(to)) {
        from.start_session(&to.bundle(), &mut OsRng)
            .expect("start session");
    }
    from.encrypt(&ik(to), &text(s)).expect("encrypt")
}

pub(super) fn recv(
    to: &mut AgentState,
    from: &IdentityKey,
    entry: &OutboxEntry,
) -> Result<Incoming, ReceiveError> {
    to.decrypt(from, entry.msg_id, &entry.wire, &mut OsRng)
}

pub(super) fn recv_text(to: &mut AgentState, from: &IdentityKey, entry: &OutboxEntry) -> String {
    let incoming = recv(to, from, entry).expect("decrypt");
    incoming.payload.as_text().expect("text").to_owned()
}

pub(super) fn failure(result: Result<Incoming, ReceiveError>) -> DecryptFailure {
    match result {
        Err(ReceiveError::Failed(f)) => f,
        other => panic!("expected a decrypt failure, got {other:?}"),
    }
}

/// The ratchet counter `n` of a message.
pub(super) fn counter(wire: &[u8]) -> u32 {
    match Message::decode(wire).expect("message") {
        Message::PreKey(m) => m.inner.header.n,
        Message::Normal(m) => m.header.n,
    }
}

pub(super) fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").mode() & 0o7777
}

/// Copies a state directory as it is on disk right now (a crash image).
pub(super) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    fs::set_permissions(to, Permissions::from_mode(0o700)).expect("chmod");
    for entry in fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).expect("copy");
        }
    }
}
