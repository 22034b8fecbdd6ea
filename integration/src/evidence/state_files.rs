//! Reading an agent's state directory from outside, as a thief with a copy of it would:
//! every secret key it holds (for the wire search), and the identity, prekeys and
//! sessions as library values (for the forward-secrecy and healing attempts).

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{anyhow, Context as _};
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

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every JSON state file of an agent: identity, prekeys, pins, outbox, sessions.
pub fn state_files(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for name in ["identity.json", "prekeys.json", "pins.json", "outbox.json"] {
        let path = dir.join(name);
        if path.exists() {
            files.push(path);
        }
    }
    let sessions = dir.join("sessions");
    if sessions.exists() {
        for entry in fs::read_dir(&sessions)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Every secret key in an agent's state directory (plus the ones derived from them that
/// an implementation could leak: the identity's X25519 form, each chain's next message
/// key).
pub fn secrets_of(dir: &Path) -> anyhow::Result<Secrets> {
    let mut out = Secrets::default();
    for file in state_files(dir)? {
        walk(&read_json(&file)?, "", &mut out);
    }
    Ok(out)
}

/// Public values that must show up on the wire (the search's positive controls): the
/// identity key (in Auth) and the signed prekey (in the published bundle).
pub fn public_keys_of(dir: &Path) -> anyhow::Result<Vec<(String, [u8; 32])>> {
    let identity = read_json(&dir.join("identity.json"))?;
    let seed = key_bytes(&identity["identity"]["seed"]).ok_or_else(|| anyhow!("no identity seed"))?;
    let pair = IdentityKeyPair::from_seed(&seed);
    let prekeys = read_json(&dir.join("prekeys.json"))?;
    let spk = key_bytes(&prekeys["store"]["current"]["pair"]["public"])
        .ok_or_else(|| anyhow!("no signed prekey"))?;
    Ok(vec![
        ("identity public key".into(), *pair.public().as_bytes()),
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
    /// Files and bytes read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
}

impl Stolen {
    /// Loads a (copied) state directory.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let identity_file = read_json(&dir.join("identity.json"))?;
        let identity: IdentityKeyPair =
            serde_json::from_value(identity_file["identity"].clone()).context("identity.json: identity")?;
        let prekeys_file = read_json(&dir.join("prekeys.json"))?;
        let prekeys: PreKeyStore =
            serde_json::from_value(prekeys_file["store"].clone()).context("prekeys.json: store")?;
        let mut forgetful = prekeys_file["store"].clone();
        if let Some(map) = forgetful.as_object_mut() {
            map.insert("seen_base_keys".into(), Value::Array(Vec::new()));
        }
        let prekeys_without_replay_memory: PreKeyStore =
            serde_json::from_value(forgetful).context("prekeys.json: store without replay memory")?;
        let mut sessions = BTreeMap::new();
        let mut files = 0;
        let mut bytes = 0;
        for file in state_files(dir)? {
            files += 1;
            bytes += fs::metadata(&file)?.len();
            if file.parent().is_some_and(|p| p.ends_with("sessions")) {
                let value = read_json(&file)?;
                let session: Session = serde_json::from_value(value["session"].clone())
                    .with_context(|| format!("{}: session", file.display()))?;
                let archived: Vec<Session> =
                    serde_json::from_value(value["archived"].clone()).unwrap_or_default();
                let peer = *session.remote_identity().as_bytes();
                sessions.insert(peer, (session, archived));
            }
        }
        Ok(Self {
            identity,
            prekeys,
            prekeys_without_replay_memory,
            sessions,
            secrets: secrets_of(dir)?,
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
