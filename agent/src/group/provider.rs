//! [`GroupProvider`]: the OpenMLS provider of one agent, RustCrypto for the
//! cryptography and an in-memory key-value storage that the agent persists, sealed, in
//! its state database after every group operation ([`GroupProvider::changes`]).

use std::collections::HashMap;

use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use openmls_traits::OpenMlsProvider;

/// What changed in the storage since the last [`GroupProvider::changes`]: values to
/// write (key, value) and keys to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StorageChanges {
    /// New or changed values.
    pub put: Vec<(Vec<u8>, Vec<u8>)>,
    /// Deleted keys.
    pub deleted: Vec<Vec<u8>>,
}

/// The OpenMLS provider: RustCrypto and a storage mirrored to the state database.
#[derive(Default)]
pub struct GroupProvider {
    crypto: RustCrypto,
    storage: MemoryStorage,
    /// The storage as last persisted.
    persisted: HashMap<Vec<u8>, Vec<u8>>,
}

impl GroupProvider {
    /// A provider over `values`, the storage as persisted.
    pub fn from_values(values: HashMap<Vec<u8>, Vec<u8>>) -> Self {
        let provider = Self::default();
        if let Ok(mut map) = provider.storage.values.write() {
            *map = values.clone();
        }
        Self {
            persisted: values,
            ..provider
        }
    }

    /// What changed since the last call (or since loading). The caller persists them,
    /// then calls [`GroupProvider::persisted`]; until then the same changes come again.
    pub fn changes(&self) -> StorageChanges {
        let Ok(now) = self.storage.values.read() else {
            return StorageChanges::default();
        };
        let mut changes = StorageChanges::default();
        for (key, value) in now.iter() {
            if self.persisted.get(key) != Some(value) {
                changes.put.push((key.clone(), value.clone()));
            }
        }
        for key in self.persisted.keys() {
            if !now.contains_key(key) {
                changes.deleted.push(key.clone());
            }
        }
        changes
    }

    /// Records `changes` as persisted.
    pub fn persisted(&mut self, changes: StorageChanges) {
        for (key, value) in changes.put {
            self.persisted.insert(key, value);
        }
        for key in changes.deleted {
            self.persisted.remove(&key);
        }
    }
}

impl OpenMlsProvider for GroupProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}
