//! An OpenMLS provider whose key store can be persisted and restored.
//!
//! openmls keeps every private value it needs later (KeyPackage init and leaf
//! keys, signature keys, group epoch secrets, ratchet state) in the provider's
//! storage. A KeyPackage uploaded to the server is only joinable if that storage
//! survives until the Welcome arrives, possibly after a process restart, so the
//! provider serialises its whole key/value map into a versioned blob.
//!
//! Blob layout (all integers big-endian):
//! `b"GMLS"` · version `u8` (= 1) · entry count `u32` ·
//! entries sorted by key, each `key_len u32 · key · value_len u32 · value`.
//!
//! The blob contains private keys: callers must store it like any other secret
//! (encrypted at rest, never logged).

use std::{collections::HashMap, fmt, path::Path};

use openmls_rust_crypto::{MemoryStorage, RustCrypto};
use openmls_traits::OpenMlsProvider;

use super::error::MlsError;

const MAGIC: &[u8; 4] = b"GMLS";
/// Version byte of the persisted provider format.
pub const PROVIDER_STATE_VERSION: u8 = 1;

/// Crypto, randomness and persistent key storage for one MLS client (device).
#[derive(Default)]
pub struct MlsProvider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl fmt::Debug for MlsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The storage holds private keys: only its size is printed.
        let entries = self.storage.values.read().map(|v| v.len()).ok();
        f.debug_struct("MlsProvider")
            .field("storage_entries", &entries)
            .finish_non_exhaustive()
    }
}

impl OpenMlsProvider for MlsProvider {
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

impl MlsProvider {
    /// A provider with empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serialises the complete key store (see the module docs for the format).
    pub fn to_bytes(&self) -> Result<Vec<u8>, MlsError> {
        let values = self
            .storage
            .values
            .read()
            .map_err(|_| MlsError::StoragePoisoned)?;
        let mut entries: Vec<(&Vec<u8>, &Vec<u8>)> = values.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));

        let size: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(9 + size);
        out.extend_from_slice(MAGIC);
        out.push(PROVIDER_STATE_VERSION);
        out.extend_from_slice(&len_u32(entries.len())?.to_be_bytes());
        for (k, v) in entries {
            out.extend_from_slice(&len_u32(k.len())?.to_be_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&len_u32(v.len())?.to_be_bytes());
            out.extend_from_slice(v);
        }
        Ok(out)
    }

    /// Restores a provider from [`MlsProvider::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MlsError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(MlsError::StateFormat("missing GMLS magic"));
        }
        let version = r.take(1)?[0];
        if version != PROVIDER_STATE_VERSION {
            return Err(MlsError::UnsupportedStateVersion(version));
        }
        let count = r.u32()? as usize;
        // Each entry needs at least 8 bytes: bound the allocation by the input.
        let mut map = HashMap::with_capacity(count.min(r.0.len() / 8));
        for _ in 0..count {
            let k_len = r.u32()? as usize;
            let k = r.take(k_len)?.to_vec();
            let v_len = r.u32()? as usize;
            let v = r.take(v_len)?.to_vec();
            if map.insert(k, v).is_some() {
                return Err(MlsError::StateFormat("duplicate storage key"));
            }
        }
        if !r.0.is_empty() {
            return Err(MlsError::StateFormat("trailing bytes"));
        }
        let storage = MemoryStorage::default();
        *storage
            .values
            .write()
            .map_err(|_| MlsError::StoragePoisoned)? = map;
        Ok(Self {
            crypto: RustCrypto::default(),
            storage,
        })
    }

    /// Writes [`MlsProvider::to_bytes`] to `path` atomically (temporary file
    /// plus rename; owner-only permissions on Unix).
    pub fn save_to_file(&self, path: &Path) -> Result<(), MlsError> {
        write_secret_file(path, &self.to_bytes()?)
    }

    /// Reads a provider saved with [`MlsProvider::save_to_file`].
    pub fn load_from_file(path: &Path) -> Result<Self, MlsError> {
        Self::from_bytes(&std::fs::read(path)?)
    }
}

/// Writes `bytes` to `path` via a temporary sibling file and a rename so that
/// a crash never leaves a half-written state file behind.
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), MlsError> {
    use std::io::Write as _;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn len_u32(len: usize) -> Result<u32, MlsError> {
    u32::try_from(len).map_err(|_| MlsError::StateFormat("entry larger than 4 GiB"))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MlsError> {
        if self.0.len() < n {
            return Err(MlsError::StateFormat("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, MlsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}
