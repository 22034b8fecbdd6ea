//! Reading an agent's state directory from outside, as a thief with a copy of it (the
//! database and its key file) would: every secret key it holds (for the wire search),
//! and the identity, prekeys and sessions as library values (for the forward-secrecy
//! and healing attempts). The state is sealed at rest; it is opened with the key file
//! through the agent library's read-only view (`e2ee_agent::state::inspect`).

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::Context as _;
use e2ee_agent::state::inspect::StateView;
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::kdf::ChainKey;
use e2ee_protocol::prekey::PreKeyStore;
use e2ee_protocol::session::Session;
use serde_json::Value;

/// Secret 32-byte values, each with what it is.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// value → kind (the first kind it was found as).
    pub keys: BTreeMap<[u8; 32], String>,
}

impl Secrets {
    /// Adds one secret.
    pub fn add(&mut self, bytes: [u8; 32], kind: &str) {
        self.keys.entry(bytes).or_insert_with(|| kind.to_string());
    }

    /// How many of each kind.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for kind in self.keys.values() {
            *counts.entry(kind.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// `12 root keys, 3 ...` for the report.
    pub fn describe(&self) -> String {
        self.counts()
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Adds every secret of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        for (bytes, kind) in &other.keys {
            self.add(*bytes, kind);
        }
    }
}

/// 32 bytes from a JSON array of 32 numbers.
pub fn key_bytes(value: &Value) -> Option<[u8; 32]> {
    let array = value.as_array()?;
    if array.len() != 32 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, v) in out.iter_mut().zip(array) {
        *slot = u8::try_from(v.as_u64()?).ok()?;
    }
    Some(out)
}

/// What a 32-byte value at `path` in a state file is, if it is secret.
fn secret_kind(path: &str) -> Option<&'static str> {
    let last = path.rsplit('.').next().unwrap_or(path);
    if path.contains("one_time[") {
        // one_time is a list of [public, private] pairs.
        return path.ends_with("][1]").then_some("one-time prekey private key");
    }
    match last {
        "seed" => Some("identity key seed"),
        "private" if path.contains("self_ratchet") => Some("ratchet private key"),
        "private" => Some("signed prekey private key"),
        "root" => Some("root key"),
        "sending" => Some("sending chain key"),
        "receiving" => Some("receiving chain key"),
        "key" if path.contains("skipped") => Some("skipped message key"),
        _ => None,
    }
}

fn walk(value: &Value, path: &str, out: &mut Secrets) {
    if let Some(bytes) = key_bytes(value) {
        if let Some(kind) = secret_kind(path) {
            out.add(bytes, kind);
            match kind {
                "identity key seed" => {
                    let pair = IdentityKeyPair::from_seed(&bytes);
                    if let Some(x) = serde_json::to_value(pair.x25519_private())
                        .ok()
                        .as_ref()
                        .and_then(key_bytes)
                    {
                        out.add(x, "identity X25519 private key");
                    }
                }
                "sending chain key" | "receiving chain key" => {
                    // The message key the chain gives next.
                    let next = serde_json::from_value::<ChainKey>(value.clone())
                        .ok()
                        .and_then(|chain| serde_json::to_value(chain.message_key()).ok())
                        .as_ref()
                        .and_then(key_bytes);
                    if let Some(mk) = next {
                        out.add(mk, "next message key");
                    }
                }
                _ => {}
            }
        }
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                walk(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The files of an agent's state directory a thief would take: the state database
/// (with its journal) and the key file that opens it.
pub fn state_files(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for name in ["state.db", "state.db-wal", "state.key"] {
        let path = dir.join(name);
        if path.exists() {
            files.push(path);
        }
    }
    Ok(files)
}

/// The state in `dir`, opened with its key file `state.key` (read-only, through the
/// agent library: the values are sealed at rest).
fn view(dir: &Path) -> anyhow::Result<StateView> {
    StateView::read(dir).with_context(|| format!("reading the state in {}", dir.display()))
}

/// The state as the JSON values the earlier release kept in its files (the secrets'
/// paths in them name what they are).
fn as_json(view: &StateView) -> anyhow::Result<Vec<Value>> {
    let mut values = vec![
        serde_json::json!({ "identity": serde_json::to_value(&view.identity)? }),
        serde_json::json!({ "store": serde_json::to_value(&view.prekeys)? }),
    ];
    for (session, archived) in view.sessions.values() {
        values.push(serde_json::json!({
            "session": serde_json::to_value(session)?,
            "archived": serde_json::to_value(archived)?,
        }));
    }
    Ok(values)
}

/// Every secret key in an agent's state directory (plus the ones derived from them that
/// an implementation could leak: the identity's X25519 form, each chain's next message
/// key).
pub fn secrets_of(dir: &Path) -> anyhow::Result<Secrets> {
    let mut out = Secrets::default();
    for value in as_json(&view(dir)?)? {
        walk(&value, "", &mut out);
    }
    Ok(out)
}

/// Public values that must show up on the wire (the search's positive controls): the
/// identity key (in Auth) and the signed prekey (in the published bundle).
pub fn public_keys_of(dir: &Path) -> anyhow::Result<Vec<(String, [u8; 32])>> {
    let view = view(dir)?;
    let spk = *view.prekeys.current_signed().pair().public_key().as_bytes();
    Ok(vec![
        ("identity public key".into(), *view.identity.public().as_bytes()),
        ("signed prekey public key".into(), spk),
    ])
}

/// A state directory loaded as library values.
pub struct Stolen {
    /// The identity key pair.
    pub identity: IdentityKeyPair,
    /// The prekey store as saved.
    pub prekeys: PreKeyStore,
    /// The prekey store with its memory of accepted handshakes erased (a thief is not
    /// bound by the replay check; only missing keys stop it).
    pub prekeys_without_replay_memory: PreKeyStore,
    /// Per peer: the current session and the archived ones.
    pub sessions: BTreeMap<[u8; 32], (Session, Vec<Session>)>,
    /// Every secret in the directory.
    pub secrets: Secrets,
    /// Files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
}

impl Stolen {
    /// Loads a (copied) state directory with the key file copied with it.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let view = view(dir)?;
        let store = &view.prekeys;
        let prekeys_without_replay_memory = PreKeyStore::from_stored(
            store.current_signed().clone(),
            store.retired_signed().map(|(k, ms)| (k.clone(), ms)).collect(),
            (store.one_time_entries())
                .map(|(_, private, since)| (private.clone(), since))
                .collect(),
            std::iter::empty(),
        );
        let mut files = 0;
        let mut bytes = 0;
        for file in state_files(dir)? {
            files += 1;
            bytes += fs::metadata(&file)?.len();
        }
        let mut secrets = Secrets::default();
        for value in as_json(&view)? {
            walk(&value, "", &mut secrets);
        }
        Ok(Self {
            identity: view.identity.clone(),
            prekeys: view.prekeys.clone(),
            prekeys_without_replay_memory,
            sessions: view.sessions.clone(),
            secrets,
            files,
            bytes,
        })
    }
}

/// Copies a directory tree (files keep their mode; directories are made 0700), as a
/// thief with read access would.
pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<u64> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let mut bytes = 0;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            bytes += copy_dir(&entry.path(), &target)?;
        } else {
            bytes += fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(bytes)
}
