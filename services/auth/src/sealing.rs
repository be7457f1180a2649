//! Secrets at rest: what the server must read back in clear (TOTP secrets, token-signing seeds)
//! is sealed with the server master key before it reaches the KvStore, so a copy of the data
//! directory's database alone reveals neither.
//!
//! Sealed value: `[SEAL_V1] ++ nonce (12 random bytes) ++ AES-256-GCM ciphertext and tag`, with
//! the AAD `[SEAL_V1] ++ purpose`. The purpose names the use and the owner (`totp:<account>`,
//! `signing-key:<kid>`), so a sealed value copied into another record or account does not open.
//!
//! The master key is 32 random bytes in a file: `auth.master_key_file`, or by default
//! `<storage data dir>/auth-master.key`, created on first start (mode 0600, temp file, fsync,
//! rename, fsync of the directory). An explicitly configured file that is missing stops the
//! start-up instead of being generated: a new key would silently orphan every sealed secret.
//! A wrong key is caught at start-up, when the signing keys fail to open.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use zeroize::Zeroizing;

use crate::error::{AuthError, AuthResult};

/// Version tag of sealed values.
const SEAL_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Name of the generated key file inside the data directory.
pub const DEFAULT_FILE: &str = "auth-master.key";
const KEY_LEN: usize = 32;

/// What a sealed value is for, and whose it is. Bound into the AAD.
#[derive(Clone, Copy, Debug)]
pub enum Purpose<'a> {
    /// An account's TOTP secret (pending or enabled).
    Totp(&'a str),
    /// A token-signing key seed, by key id.
    SigningKey(&'a str),
}

impl Purpose<'_> {
    fn kind(self) -> &'static str {
        match self {
            Self::Totp(_) => "totp",
            Self::SigningKey(_) => "signing-key",
        }
    }

    /// For error messages.
    fn label(self) -> &'static str {
        match self {
            Self::Totp(_) => "TOTP secret",
            Self::SigningKey(_) => "token-signing key",
        }
    }

    fn aad(self) -> Vec<u8> {
        let owner = match self {
            Self::Totp(o) | Self::SigningKey(o) => o,
        };
        let mut aad = vec![SEAL_V1];
        aad.extend_from_slice(self.kind().as_bytes());
        aad.push(b':');
        aad.extend_from_slice(owner.as_bytes());
        aad
    }
}

/// The server master key.
pub struct MasterKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        Self { key }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.key).into())
    }

    /// A 32-byte key for one use, derived with HKDF-SHA256 under `label`, so that the master
    /// key itself never leaves this type and each use gets an unrelated key.
    pub fn derive(&self, label: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes are far below HKDF-SHA256's limit of 8160, so expand cannot fail.
        let _ =
            hkdf::Hkdf::<sha2::Sha256>::new(None, self.key.as_ref()).expand(label, out.as_mut());
        out
    }

    pub fn seal(&self, purpose: Purpose<'_>, plaintext: &[u8]) -> AuthResult<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = purpose.aad();
        let ct = self
            .cipher()
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| AuthError::Corrupt(format!("{} too large to seal", purpose.label())))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open a sealed value; a wrong key, purpose or owner, or altered bytes are all
    /// [`AuthError::Unseal`].
    pub fn open(&self, purpose: Purpose<'_>, sealed: &[u8]) -> AuthResult<Zeroizing<Vec<u8>>> {
        let (nonce, ct) = match sealed.split_first() {
            Some((&SEAL_V1, rest)) if rest.len() >= NONCE_LEN + TAG_LEN => rest.split_at(NONCE_LEN),
            Some((&SEAL_V1, _)) | None => {
                return Err(AuthError::Corrupt(format!(
                    "sealed {} is truncated",
                    purpose.label()
                )));
            }
            Some((v, _)) => {
                return Err(AuthError::Corrupt(format!(
                    "sealed {} has unknown version {v}",
                    purpose.label()
                )));
            }
        };
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| AuthError::Corrupt("nonce length".into()))?;
        let aad = purpose.aad();
        self.cipher()
            .decrypt((&nonce).into(), Payload { msg: ct, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| AuthError::Unseal {
                what: purpose.label(),
            })
    }

    /// Load the key file, or create it when it is the default one and absent.
    /// `configured` empty = `<data_dir>/auth-master.key`. Blocking file I/O.
    pub fn load_or_create(configured: &Path, data_dir: &Path) -> AuthResult<Self> {
        if !configured.as_os_str().is_empty() {
            return match read_key(configured)? {
                Some(key) => Ok(Self::from_bytes(key)),
                None => Err(AuthError::MasterKey(format!(
                    "auth.master_key_file {} does not exist; refusing to start (a new key would \
                     make every sealed secret unreadable; restore the file or unset the option \
                     on a fresh install)",
                    configured.display()
                ))),
            };
        }
        let path = data_dir.join(DEFAULT_FILE);
        if let Some(key) = read_key(&path)? {
            return Ok(Self::from_bytes(key));
        }
        let key = Zeroizing::new(rand::random::<[u8; KEY_LEN]>());
        write_atomically(&path, key.as_ref())
            .map_err(|e| key_error(&path, &format!("cannot create it: {e}")))?;
        tracing::info!(path = %path.display(), "generated the auth master key");
        Ok(Self::from_bytes(key))
    }
}

fn key_error(path: &Path, why: &str) -> AuthError {
    AuthError::MasterKey(format!("{}: {why}", path.display()))
}

/// `None` when the file does not exist.
fn read_key(path: &Path) -> AuthResult<Option<Zeroizing<[u8; KEY_LEN]>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(key_error(path, &format!("cannot read it: {e}"))),
    };
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        key_error(
            path,
            &format!("must hold exactly {KEY_LEN} bytes, has {}", bytes.len()),
        )
    })?;
    warn_if_readable_by_others(path);
    Ok(Some(Zeroizing::new(key)))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the auth master key file is accessible to group or others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Write to a fresh temporary file next to `path` (mode 0600), fsync, rename over `path`, fsync
/// the directory: after a crash the file is either absent or complete.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{DEFAULT_FILE}.tmp-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(Zeroizing::new([b; KEY_LEN]))
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_purpose_and_owner() {
        let k = key(1);
        let sealed = k.seal(Purpose::Totp("acc-1"), b"secret bytes").unwrap();
        assert_eq!(sealed[0], SEAL_V1);
        assert!(!sealed.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(
            k.open(Purpose::Totp("acc-1"), &sealed).unwrap().as_slice(),
            b"secret bytes"
        );
        // Fresh nonce every time.
        assert_ne!(
            sealed,
            k.seal(Purpose::Totp("acc-1"), b"secret bytes").unwrap()
        );
        for (k, p) in [
            (key(2), Purpose::Totp("acc-1")),
            (key(1), Purpose::Totp("acc-2")),
            (key(1), Purpose::SigningKey("acc-1")),
        ] {
            assert!(matches!(k.open(p, &sealed), Err(AuthError::Unseal { .. })));
        }
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(k.open(Purpose::Totp("acc-1"), &altered).is_err());
        let mut other_version = sealed.clone();
        other_version[0] = 2;
        assert!(matches!(
            k.open(Purpose::Totp("acc-1"), &other_version),
            Err(AuthError::Corrupt(_))
        ));
        assert!(k.open(Purpose::Totp("acc-1"), &sealed[..20]).is_err());
        assert_eq!(format!("{k:?}"), "MasterKey(..)");
    }

    #[test]
    fn the_default_key_file_is_created_once_and_a_configured_one_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let a = MasterKey::load_or_create(Path::new(""), dir.path()).unwrap();
        let path = dir.path().join(DEFAULT_FILE);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Second start: the same key.
        let b = MasterKey::load_or_create(Path::new(""), dir.path()).unwrap();
        let sealed = a.seal(Purpose::SigningKey("k"), b"seed").unwrap();
        assert_eq!(
            b.open(Purpose::SigningKey("k"), &sealed)
                .unwrap()
                .as_slice(),
            b"seed"
        );
        // Explicit path: used as is, never generated.
        let c = MasterKey::load_or_create(&path, Path::new("/nonexistent")).unwrap();
        assert!(c.open(Purpose::SigningKey("k"), &sealed).is_ok());
        let missing = dir.path().join("elsewhere.key");
        let err = MasterKey::load_or_create(&missing, dir.path()).unwrap_err();
        assert!(matches!(err, AuthError::MasterKey(_)));
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!missing.exists());
        std::fs::write(&missing, b"short").unwrap();
        let err = MasterKey::load_or_create(&missing, dir.path()).unwrap_err();
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    }
}
