//! Where the state lives: in memory, or in a file sealed at rest.
//!
//! Sealed file, version 1:
//! ```text
//! "GDYNSDK" | 0x01 | kdf (1 = Argon2id passphrase, 2 = caller key) | m_cost KiB (u32)
//!           | t_cost (u32) | p_cost (u32) | salt (16) | nonce (12)
//!           | AES-256-GCM(key, nonce, state encoding, aad = everything before the ciphertext)
//! ```
//! With a passphrase the key is Argon2id(passphrase, salt) with the stored costs (defaults:
//! 19 MiB, 2 passes, 1 lane — the OWASP minimum). With a caller key (32 bytes from the
//! platform keystore, say) the key is HKDF-SHA256(salt, caller key, "guardyn-sdk state v1").
//! Every save uses a fresh random nonce and is atomic: the file is written to a temporary
//! sibling, synced, renamed over the old one, and the directory is synced.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use rand::Rng as _;
use zeroize::Zeroizing;

use crate::codec::Reader;
use crate::error::SdkError;

const MAGIC: &[u8; 7] = b"GDYNSDK";
/// Version byte of the sealed state file.
pub const STATE_FILE_VERSION: u8 = 1;
const KDF_PASSPHRASE: u8 = 1;
const KDF_KEY: u8 = 2;
const HEADER_LEN: usize = 7 + 1 + 1 + 12 + 16 + 12;
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

/// The secret that unlocks a state file.
#[derive(Clone)]
pub enum StateKey {
    /// A user passphrase, stretched with Argon2id.
    Passphrase(Zeroizing<String>),
    /// A 32-byte key held by the caller (e.g. from a platform keystore).
    Key(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("StateKey::Passphrase(..)"),
            Self::Key(_) => f.write_str("StateKey::Key(..)"),
        }
    }
}

/// Where a client keeps its state.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Nothing is written; the state is lost when the client is dropped (tests, load tests).
    Memory,
    /// A sealed file (see the module docs).
    File {
        /// The state file.
        path: PathBuf,
        /// What unlocks it.
        key: StateKey,
    },
}

/// A derived sealing key bound to one file's salt and KDF parameters.
pub(crate) struct Sealer {
    path: PathBuf,
    header: [u8; HEADER_LEN - 12],
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn header(kdf: u8, m: u32, t: u32, p: u32, salt: &[u8; 16]) -> [u8; HEADER_LEN - 12] {
    let mut h = [0u8; HEADER_LEN - 12];
    h[..7].copy_from_slice(MAGIC);
    h[7] = STATE_FILE_VERSION;
    h[8] = kdf;
    h[9..13].copy_from_slice(&m.to_be_bytes());
    h[13..17].copy_from_slice(&t.to_be_bytes());
    h[17..21].copy_from_slice(&p.to_be_bytes());
    h[21..37].copy_from_slice(salt);
    h
}

fn derive(
    key: &StateKey,
    m: u32,
    t: u32,
    p: u32,
    salt: &[u8; 16],
) -> Result<Zeroizing<[u8; 32]>, SdkError> {
    let mut out = Zeroizing::new([0u8; 32]);
    match key {
        StateKey::Passphrase(pass) => {
            let params = argon2::Params::new(m, t, p, Some(32)).map_err(|_| SdkError::Format {
                what: "state file",
                reason: "invalid Argon2 parameters",
            })?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(pass.as_bytes(), salt, out.as_mut())
                .map_err(|_| SdkError::StateLocked)?;
        }
        StateKey::Key(k) => {
            hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), k.as_ref())
                .expand(b"guardyn-sdk state v1", out.as_mut())
                .map_err(|_| SdkError::StateLocked)?;
        }
    }
    Ok(out)
}

impl Sealer {
    /// A sealer for a new file (fresh salt).
    pub(crate) fn create(path: &Path, key: &StateKey) -> Result<Self, SdkError> {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let (kdf, m, t, p) = match key {
            StateKey::Passphrase(_) => (KDF_PASSPHRASE, ARGON2_M_KIB, ARGON2_T, ARGON2_P),
            StateKey::Key(_) => (KDF_KEY, 0, 0, 0),
        };
        Ok(Self {
            path: path.to_owned(),
            header: header(kdf, m, t, p, &salt),
            key: derive(key, m, t, p, &salt)?,
        })
    }

    /// Opens an existing file: returns the sealer (same salt) and the state encoding.
    pub(crate) fn open(
        path: &Path,
        key: &StateKey,
    ) -> Result<(Self, Zeroizing<Vec<u8>>), SdkError> {
        let bytes = std::fs::read(path)?;
        let mut r = Reader::new(&bytes, "state file");
        if &r.array::<7>()? != MAGIC {
            return Err(SdkError::Format {
                what: "state file",
                reason: "not a Guardyn SDK state file",
            });
        }
        if r.u8()? != STATE_FILE_VERSION {
            return Err(SdkError::Format {
                what: "state file",
                reason: "unsupported state file version",
            });
        }
        let kdf = r.u8()?;
        let (m, t, p) = (r.u32()?, r.u32()?, r.u32()?);
        let salt = r.array::<16>()?;
        let nonce = r.array::<12>()?;
        let expected = match key {
            StateKey::Passphrase(_) => KDF_PASSPHRASE,
            StateKey::Key(_) => KDF_KEY,
        };
        if kdf != expected {
            return Err(SdkError::StateLocked);
        }
        let sealer = Self {
            path: path.to_owned(),
            header: header(kdf, m, t, p, &salt),
            key: derive(key, m, t, p, &salt)?,
        };
        let cipher = cipher_for(&sealer.key);
        let aad = &bytes[..HEADER_LEN];
        let plaintext = cipher
            .decrypt((&nonce).into(), Payload { msg: r.rest(), aad })
            .map_err(|_| SdkError::StateLocked)?;
        Ok((sealer, Zeroizing::new(plaintext)))
    }

    /// Seals `state` and replaces the file atomically.
    pub(crate) fn save(&self, state: &[u8]) -> Result<(), SdkError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + state.len() + 16);
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&nonce);
        let cipher = cipher_for(&self.key);
        let ct = cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: state,
                    aad: &out,
                },
            )
            .map_err(|_| SdkError::Protocol("state too large to seal".into()))?;
        out.extend_from_slice(&ct);
        write_atomically(&self.path, &out)
    }
}

fn cipher_for(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SdkError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| SdkError::Invalid("state path has no file name".into()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    {
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
    }
    std::fs::rename(&tmp, path)?;
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn sealed_file_round_trips_and_rejects_wrong_keys_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let key = StateKey::Key(Zeroizing::new([7; 32]));
        let sealer = Sealer::create(&path, &key).unwrap();
        sealer.save(b"secret state bytes").unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"));
        let (_, back) = Sealer::open(&path, &key).unwrap();
        assert_eq!(back.as_slice(), b"secret state bytes");
        let wrong = StateKey::Key(Zeroizing::new([8; 32]));
        assert!(matches!(
            Sealer::open(&path, &wrong),
            Err(SdkError::StateLocked)
        ));
        let pass = StateKey::Passphrase(Zeroizing::new("pw".into()));
        assert!(matches!(
            Sealer::open(&path, &pass),
            Err(SdkError::StateLocked)
        ));
        let mut bad = raw.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            Sealer::open(&path, &key),
            Err(SdkError::StateLocked)
        ));
    }

    #[test]
    fn passphrase_sealing_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.state");
        let key = StateKey::Passphrase(Zeroizing::new("correct horse".into()));
        Sealer::create(&path, &key).unwrap().save(b"abc").unwrap();
        let (sealer, back) = Sealer::open(&path, &key).unwrap();
        assert_eq!(back.as_slice(), b"abc");
        sealer.save(b"def").unwrap();
        assert_eq!(Sealer::open(&path, &key).unwrap().1.as_slice(), b"def");
    }
}
