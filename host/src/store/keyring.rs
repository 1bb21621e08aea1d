//! Data keys at rest: wrapped with the master key in the `keys` table,
//! unwrapped on first use and kept in memory while the server runs.
//!
//! `meta.master_fingerprint` records which master key the data expects, so
//! a wrong key is refused at start with both fingerprints named, before any
//! row is touched.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{RwTransaction, Store, StoreError, Tables, WriteFlags, get_in};
use crate::crypto::{CryptoError, DataKey, MasterKey};

/// `meta` key: fingerprint of the master key the data keys are wrapped to.
pub const META_MASTER_FINGERPRINT: &[u8] = b"master_fingerprint";

/// `keys` id of the system data key (seals rows that belong to no namespace).
pub const SYSTEM_KEY: &[u8] = b"system";

/// Failures opening or using the keyring.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// Key handling failed (wrong master key, bad key file, ...).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A data key that should exist does not.
    #[error("data key {0} is missing from the keys table")]
    Missing(String),
}

/// The unwrapped data keys.
pub struct Keyring {
    master: MasterKey,
    expected: String,
    cache: RwLock<HashMap<Vec<u8>, Arc<DataKey>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({:?})", self.master)
    }
}

fn read_fingerprint(store: &Store) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(|t| t.meta, META_MASTER_FINGERPRINT)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

impl Keyring {
    /// Open the keyring with `master`. A fresh store is bound to this master
    /// key (its fingerprint recorded, a system key created); an existing one
    /// must have been written for it, or this fails naming both keys.
    pub fn open(store: &Store, master: MasterKey) -> Result<Keyring, KeyringError> {
        let have = master.fingerprint();
        let expected = match read_fingerprint(store)? {
            Some(expected) => expected,
            None => {
                let system = master.wrap(&DataKey::generate())?;
                let fp = have.clone();
                store.write_blocking(move |txn, t| {
                    // Another process may have initialised it meanwhile.
                    if get_in(txn, t.meta, META_MASTER_FINGERPRINT)?.is_some() {
                        return Ok(());
                    }
                    txn.put(t.meta, &META_MASTER_FINGERPRINT, &fp, WriteFlags::empty())?;
                    txn.put(t.keys, &SYSTEM_KEY, &system, WriteFlags::empty())?;
                    Ok(())
                })?;
                read_fingerprint(store)?.unwrap_or(have.clone())
            }
        };
        if expected != have {
            return Err(CryptoError::WrongMasterKey { have, expected }.into());
        }
        let keyring = Keyring {
            master,
            expected,
            cache: RwLock::new(HashMap::new()),
        };
        // Prove the key really opens the data, not just that it claims to.
        keyring.key(store, SYSTEM_KEY)?;
        Ok(keyring)
    }

    /// Fingerprint of the master key in use.
    pub fn fingerprint(&self) -> String {
        self.master.fingerprint()
    }

    /// The master key in use (it signs backups and opens files made for
    /// its recipient; it never leaves the process).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// The data key `id`, unwrapped (cached after the first use).
    pub fn key(&self, store: &Store, id: &[u8]) -> Result<Arc<DataKey>, KeyringError> {
        if let Some(key) = self.cache.read().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(key);
        }
        let wrapped = store
            .get(|t| t.keys, id)?
            .ok_or_else(|| KeyringError::Missing(String::from_utf8_lossy(id).into_owned()))?;
        let key = Arc::new(self.master.unwrap(&wrapped, &self.expected)?);
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(id.to_vec(), key.clone());
        }
        Ok(key)
    }

    /// Wrap a new data key for `id`; put it with [`Keyring::put_wrapped`]
    /// inside the write that creates what it protects.
    pub fn new_key(&self) -> Result<(DataKey, Vec<u8>), KeyringError> {
        let key = DataKey::generate();
        let wrapped = self.master.wrap(&key)?;
        Ok((key, wrapped))
    }

    /// Store a wrapped key (inside a write).
    pub fn put_wrapped(
        txn: &mut RwTransaction<'_>,
        tables: &Tables,
        id: &[u8],
        wrapped: &[u8],
    ) -> Result<(), StoreError> {
        txn.put(tables.keys, &id, &wrapped, WriteFlags::NO_OVERWRITE)?;
        Ok(())
    }

    /// Remember an unwrapped key after the write that stored it committed.
    pub fn remember(&self, id: &[u8], key: DataKey) -> Arc<DataKey> {
        let key = Arc::new(key);
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(id.to_vec(), key.clone());
        }
        key
    }

    /// Drop a deleted key from memory.
    pub fn forget(&self, id: &[u8]) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(id);
        }
    }
}

/// Re-wrap every data key from `old` to `new` in one transaction and record
/// the new fingerprint. Rows are not touched. Returns how many keys moved.
pub fn rotate_master(
    store: &Store,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, KeyringError> {
    let expected = read_fingerprint(store)?.unwrap_or_default();
    if expected != old.fingerprint() {
        return Err(CryptoError::WrongMasterKey {
            have: old.fingerprint(),
            expected,
        }
        .into());
    }
    let wrapped = store.rows(|t| t.keys, &[], |_| true)?;
    let mut rewrapped = Vec::with_capacity(wrapped.len());
    for (id, bytes) in &wrapped {
        let key = old.unwrap(bytes, &expected)?;
        rewrapped.push((id.clone(), new.wrap(&key)?));
    }
    let count = rewrapped.len();
    let fp = new.fingerprint();
    store.write_blocking(move |txn, t| {
        for (id, bytes) in &rewrapped {
            txn.put(t.keys, id, bytes, WriteFlags::empty())?;
        }
        txn.put(t.meta, &META_MASTER_FINGERPRINT, &fp, WriteFlags::empty())?;
        Ok(())
    })?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn a_store_is_bound_to_its_master_key_and_rotation_moves_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let first = MasterKey::generate();
        let keyring = Keyring::open(&store, MasterKey::parse(&secret(&first)).unwrap()).unwrap();
        let system = keyring.key(&store, SYSTEM_KEY).unwrap();
        let sealed = system.seal("meta", b"x", b"hello");

        let stranger = MasterKey::generate();
        let err = Keyring::open(&store, MasterKey::parse(&secret(&stranger)).unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&first.fingerprint()) && msg.contains(&stranger.fingerprint()),
            "{msg}"
        );

        let second = MasterKey::generate();
        assert_eq!(rotate_master(&store, &first, &second).unwrap(), 1);
        assert!(Keyring::open(&store, MasterKey::parse(&secret(&first)).unwrap()).is_err());
        let rotated = Keyring::open(&store, MasterKey::parse(&secret(&second)).unwrap()).unwrap();
        let same = rotated.key(&store, SYSTEM_KEY).unwrap();
        assert_eq!(&**same.open("meta", b"x", &sealed).unwrap(), b"hello");
    }

    fn secret(key: &MasterKey) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        key.write_new(&path, None).unwrap();
        std::fs::read_to_string(path).unwrap()
    }
}
