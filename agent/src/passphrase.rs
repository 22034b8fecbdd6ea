//! Where the state key comes from (docs/AGENT.md, "State"), first that applies: the
//! first line of `--passphrase-file`, the environment variable [`PASSPHRASE_ENV`], a
//! passphrase typed on the terminal (`--passphrase-prompt`, or by itself when the state
//! is sealed under a passphrase and stdin is a terminal), or the owner-only key file
//! `state.key` in the state directory.

use std::io::IsTerminal;
use std::path::Path;

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::settings::AgentSettings;
use crate::state::{AgentState, KeySource, StateError};
use crate::store::StoreError;

/// The environment variable holding the state passphrase itself (for services that
/// hand secrets over in the environment). It is not a setting: `--print-config` never
/// shows it, and the settings loader does not read it.
pub const PASSPHRASE_ENV: &str = "E2EE_PASSPHRASE";

/// Opens (or creates) the state with the key source the settings give. A state sealed
/// under a passphrase opened without one asks for it on the terminal when stdin is one.
pub fn open_state(settings: &AgentSettings, rng: &mut impl CryptoRngCore) -> anyhow::Result<AgentState> {
    let source = key_source(settings)?;
    let opened = AgentState::open_with(
        &settings.state_dir,
        &settings.name,
        settings.prekeys.initial_one_time as usize,
        &source,
        rng,
    );
    drop(source);
    match opened {
        Err(StateError::Key(StoreError::KeySourceMismatch {
            stored: "passphrase", ..
        })) if settings.passphrase_file.is_none()
            && std::env::var_os(PASSPHRASE_ENV).is_none()
            && !settings.passphrase_prompt
            && std::io::stdin().is_terminal() =>
        {
            let source = prompt(&settings.state_dir, false)?;
            Ok(AgentState::open_with(
                &settings.state_dir,
                &settings.name,
                settings.prekeys.initial_one_time as usize,
                &source,
                rng,
            )?)
        }
        other => Ok(other?),
    }
}

/// The key source the settings name.
fn key_source(settings: &AgentSettings) -> anyhow::Result<KeySource> {
    if let Some(path) = &settings.passphrase_file {
        let bytes = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read passphrase file {}: {e}", path.display()))?,
        );
        let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return Ok(KeySource::passphrase(line.to_vec()));
    }
    if let Some(value) = std::env::var_os(PASSPHRASE_ENV) {
        use std::os::unix::ffi::OsStringExt;
        return Ok(KeySource::passphrase(value.into_vec()));
    }
    if settings.passphrase_prompt {
        let new = !is_state(&settings.state_dir);
        return prompt(&settings.state_dir, new);
    }
    Ok(KeySource::key_file_in(&settings.state_dir))
}

/// True if `dir` holds a state (a database, or the JSON files of an earlier release).
fn is_state(dir: &Path) -> bool {
    dir.join("state.db").exists() || dir.join("identity.json").exists()
}

/// Reads a passphrase from the terminal without echo (twice for a new state, which must
/// match). Fails without a terminal, on an empty passphrase or on a mismatch.
fn prompt(dir: &Path, new: bool) -> anyhow::Result<KeySource> {
    let ask = |text: &str| -> anyhow::Result<Zeroizing<String>> {
        rpassword::prompt_password(text)
            .map(Zeroizing::new)
            .map_err(|e| anyhow::anyhow!("cannot read a passphrase from the terminal: {e}"))
    };
    let first = ask(&format!("passphrase for the state in {}: ", dir.display()))?;
    if first.is_empty() {
        anyhow::bail!("the passphrase is empty: nothing was opened");
    }
    if new {
        let again = ask("the same passphrase again: ")?;
        if *again != *first {
            anyhow::bail!("the two passphrases differ: no state was created");
        }
    }
    Ok(KeySource::passphrase(first.as_bytes().to_vec()))
}
