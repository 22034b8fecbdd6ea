//! Argon2id (RFC 9106) for the state key: the cost parameters ([`KdfParams`]), what a
//! database stores to derive its key again ([`KdfSpec`]), and the derivation.

use std::path::Path;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::error::StoreError;

/// Length of the state key, bytes.
pub const STATE_KEY_LEN: usize = 32;
/// Length of the Argon2id salt, bytes (RFC 9106 recommends 16).
pub const SALT_LEN: usize = 16;
/// Upper bounds on stored Argon2id parameters, so a damaged database cannot make the
/// agent allocate or compute without limit: 1 GiB of memory, 64 passes, 16 lanes.
pub const MAX_MEMORY_KIB: u32 = 1 << 20;
/// See [`MAX_MEMORY_KIB`].
pub const MAX_ITERATIONS: u32 = 64;
/// See [`MAX_MEMORY_KIB`].
pub const MAX_PARALLELISM: u32 = 16;

/// Version byte of the stored [`KdfSpec`] encoding (Argon2id, version 0x13).
const KDF_SPEC_VERSION: u8 = 1;
/// Encoded [`KdfSpec`] length: version, m, t, p (u32 big-endian each), salt.
const KDF_SPEC_LEN: usize = 1 + 12 + SALT_LEN;

/// Argon2id cost parameters (RFC 9106 section 3.1): memory `m` in KiB, passes `t`,
/// lanes `p`. The agent's Argon2 runs the lanes on one thread, so `p` > 1 only adds time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB (at least 8 × `parallelism`, at most [`MAX_MEMORY_KIB`]).
    pub memory_kib: u32,
    /// Passes over the memory (1 ..= [`MAX_ITERATIONS`]).
    pub iterations: u32,
    /// Lanes (1 ..= [`MAX_PARALLELISM`]).
    pub parallelism: u32,
}

impl KdfParams {
    /// The default for an agent started by a person: 64 MiB, 3 passes, 1 lane (in line
    /// with RFC 9106's second recommended option, on one lane).
    pub const INTERACTIVE: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };

    /// The smallest Argon2id accepts (8 KiB, 1 pass): for tests only, it offers no
    /// resistance to guessing.
    pub const MINIMAL: Self = Self {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// Checks the bounds; see the field docs.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.argon2().map(|_| ())
    }

    fn argon2(&self) -> Result<Params, StoreError> {
        let invalid = |detail: String| Err(StoreError::InvalidKdfParams { detail });
        if self.memory_kib > MAX_MEMORY_KIB {
            return invalid(format!("memory {} KiB is over {MAX_MEMORY_KIB}", self.memory_kib));
        }
        if self.iterations > MAX_ITERATIONS {
            return invalid(format!("{} passes is over {MAX_ITERATIONS}", self.iterations));
        }
        if self.parallelism > MAX_PARALLELISM {
            return invalid(format!("{} lanes is over {MAX_PARALLELISM}", self.parallelism));
        }
        Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(STATE_KEY_LEN),
        )
        .map_err(|e| StoreError::InvalidKdfParams {
            detail: format!(
                "m={} t={} p={}: {e}",
                self.memory_kib, self.iterations, self.parallelism
            ),
        })
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::INTERACTIVE
    }
}

/// What a passphrase-sealed database stores to derive its key again: the parameters
/// and the salt. Encoded as `version (1) || m || t || p (u32 big-endian) || salt (16)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KdfSpec {
    /// The cost parameters.
    pub params: KdfParams,
    /// The random salt, chosen per database.
    pub salt: [u8; SALT_LEN],
}

impl KdfSpec {
    /// A spec with a fresh random salt.
    pub fn random(params: KdfParams) -> Self {
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        Self { params, salt }
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KDF_SPEC_LEN);
        out.push(KDF_SPEC_VERSION);
        out.extend_from_slice(&self.params.memory_kib.to_be_bytes());
        out.extend_from_slice(&self.params.iterations.to_be_bytes());
        out.extend_from_slice(&self.params.parallelism.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out
    }

    /// Parses stored bytes and checks the parameter bounds; `db` names the database in
    /// errors ([`StoreError::Corrupt`], [`StoreError::InvalidKdfParams`]).
    pub fn decode(bytes: &[u8], db: &Path) -> Result<Self, StoreError> {
        if bytes.len() != KDF_SPEC_LEN {
            return Err(StoreError::corrupt(
                db,
                format!("key derivation spec is {} bytes", bytes.len()),
            ));
        }
        if bytes[0] != KDF_SPEC_VERSION {
            return Err(StoreError::corrupt(
                db,
                format!("unknown key derivation spec version {}", bytes[0]),
            ));
        }
        let u32_at = |at: usize| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&bytes[at..at + 4]);
            u32::from_be_bytes(word)
        };
        let params = KdfParams {
            memory_kib: u32_at(1),
            iterations: u32_at(5),
            parallelism: u32_at(9),
        };
        params.validate()?;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[13..]);
        Ok(Self { params, salt })
    }
}

/// Argon2id (RFC 9106, version 0x13) of `passphrase` under `salt` (any length from 8
/// bytes; the state uses [`SALT_LEN`]) with `params`: a [`STATE_KEY_LEN`]-byte key.
/// Its working memory (`params.memory_kib` KiB) is zeroized before it is freed.
///
/// Errors: [`StoreError::EmptyPassphrase`], [`StoreError::InvalidKdfParams`].
pub(super) fn argon2id(
    passphrase: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<Zeroizing<[u8; STATE_KEY_LEN]>, StoreError> {
    if passphrase.is_empty() {
        return Err(StoreError::EmptyPassphrase);
    }
    let params = params.argon2()?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut memory = Zeroizing::new(vec![Block::default(); params.block_count()]);
    let mut key = Zeroizing::new([0u8; STATE_KEY_LEN]);
    argon
        .hash_password_into_with_memory(passphrase, salt, &mut key[..], &mut memory[..])
        .map_err(|e| StoreError::InvalidKdfParams {
            detail: e.to_string(),
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(salt: u8) -> KdfSpec {
        KdfSpec {
            params: KdfParams::MINIMAL,
            salt: [salt; SALT_LEN],
        }
    }

    #[test]
    fn derivation_depends_on_passphrase_salt_and_parameters() {
        let key = |pass: &[u8], spec: &KdfSpec| argon2id(pass, &spec.salt, &spec.params).map(|k| *k);
        let base = key(b"correct horse", &spec(1)).ok();
        assert!(base.is_some());
        assert_eq!(key(b"correct horse", &spec(1)).ok(), base);
        assert_ne!(key(b"correct horsf", &spec(1)).ok(), base);
        assert_ne!(key(b"correct horse", &spec(2)).ok(), base);
        let mut more = spec(1);
        more.params.iterations = 2;
        assert_ne!(key(b"correct horse", &more).ok(), base);
    }

    #[test]
    fn derivation_matches_the_reference_implementation() {
        // phc-winner-argon2 src/test.c: Argon2id v0x13, t=2, m=2^8 KiB, p=1,
        // password "password", salt "somesalt" (RFC 9106's own vector needs a secret
        // and associated data, which the state key does not use).
        let params = KdfParams {
            memory_kib: 256,
            iterations: 2,
            parallelism: 1,
        };
        let key = argon2id(b"password", b"somesalt", &params).map(|k| hex::encode(*k));
        assert_eq!(
            key.ok().as_deref(),
            Some("9dfeb910e80bad0311fee20f9c0e2b12c17987b4cac90c2ef54d5b3021c68bfe")
        );
    }

    #[test]
    fn refuses_empty_passphrases_and_parameters_out_of_bounds() {
        assert!(matches!(
            argon2id(b"", &[1; SALT_LEN], &KdfParams::MINIMAL),
            Err(StoreError::EmptyPassphrase)
        ));
        for params in [
            KdfParams {
                memory_kib: 4,
                ..KdfParams::MINIMAL
            },
            KdfParams {
                memory_kib: MAX_MEMORY_KIB + 1,
                ..KdfParams::MINIMAL
            },
            KdfParams {
                iterations: 0,
                ..KdfParams::MINIMAL
            },
            KdfParams {
                iterations: MAX_ITERATIONS + 1,
                ..KdfParams::MINIMAL
            },
            KdfParams {
                parallelism: 2,
                ..KdfParams::MINIMAL
            },
            KdfParams {
                parallelism: 0,
                ..KdfParams::MINIMAL
            },
        ] {
            assert!(
                matches!(params.validate(), Err(StoreError::InvalidKdfParams { .. })),
                "{params:?}"
            );
        }
        assert!(KdfParams::INTERACTIVE.validate().is_ok());
    }

    #[test]
    fn kdf_specs_round_trip_and_reject_damage() {
        let db = Path::new("state.db");
        let spec = KdfSpec::random(KdfParams::INTERACTIVE);
        let bytes = spec.encode();
        assert_eq!(bytes.len(), KDF_SPEC_LEN);
        assert_eq!(KdfSpec::decode(&bytes, db).ok(), Some(spec));
        assert!(matches!(
            KdfSpec::decode(&bytes[1..], db),
            Err(StoreError::Corrupt { .. })
        ));
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert!(matches!(
            KdfSpec::decode(&other_version, db),
            Err(StoreError::Corrupt { .. })
        ));
        let mut huge = bytes;
        huge[1] = 0xff;
        assert!(matches!(
            KdfSpec::decode(&huge, db),
            Err(StoreError::InvalidKdfParams { .. })
        ));
    }
}
