//! The Ed25519 key that signs client configuration documents: loaded from
//! `admin.client_config.signing_key_path`, or generated once in the data directory.
//!
//! Clients pin the public key, so it must be the same on every instance and across restarts.
//! The signature covers [`SIGNING_CONTEXT`] followed by the document bytes: a signature made
//! for another purpose with the same key can never pass as a configuration signature.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::error::AdminError;

/// Domain separation of configuration signatures (the full name of the signed message type
/// and a NUL).
pub const SIGNING_CONTEXT: &[u8] = b"guardyn.admin.v1.ClientConfigDocument\0";

/// The generated key's file name in the data directory.
const DEFAULT_FILE: &str = "client-config-signing.key";

/// Signs configuration documents.
pub(crate) struct ConfigSigner {
    key: ed25519_dalek::SigningKey,
    key_id: String,
}

impl std::fmt::Debug for ConfigSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The id of a configuration public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &[u8; 32]) -> String {
    sha2::Sha256::digest(public_key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ConfigSigner {
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key().to_bytes());
        Self { key, key_id }
    }

    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The signature of `document` under [`SIGNING_CONTEXT`].
    pub(crate) fn sign(&self, document: &[u8]) -> [u8; 64] {
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + document.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(document);
        self.key.sign(&msg).to_bytes()
    }

    /// Load the configured key file, or (path empty) the data directory's generated key,
    /// creating it on first start. Blocking file I/O.
    pub(crate) fn load_or_create(configured: &Path, data_dir: &Path) -> Result<Self, AdminError> {
        if !configured.as_os_str().is_empty() {
            return match read_key(configured)? {
                Some(seed) => Ok(Self::from_seed(&seed)),
                None => Err(key_error(
                    configured,
                    "does not exist (admin.client_config.signing_key_path)",
                )),
            };
        }
        let path = data_dir.join(DEFAULT_FILE);
        if let Some(seed) = read_key(&path)? {
            return Ok(Self::from_seed(&seed));
        }
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        match std::fs::create_dir_all(data_dir).and_then(|()| write_new(&path, seed.as_ref())) {
            Ok(()) => {}
            // Another process on this data directory created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Some(theirs) = read_key(&path)? {
                    return Ok(Self::from_seed(&theirs));
                }
                return Err(key_error(&path, "vanished while being created"));
            }
            Err(e) => return Err(key_error(&path, &format!("cannot create it: {e}"))),
        }
        let signer = Self::from_seed(&seed);
        tracing::info!(path = %path.display(), key_id = %signer.key_id, "generated the client configuration signing key");
        Ok(signer)
    }
}

fn key_error(path: &Path, why: &str) -> AdminError {
    AdminError::SigningKey(format!("{}: {why}", path.display()))
}

/// The seed in `path` (a raw 32-byte seed or a PKCS#8 PEM), `None` when the file is absent.
fn read_key(path: &Path) -> Result<Option<Zeroizing<[u8; 32]>>, AdminError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(key_error(path, &format!("cannot read it: {e}"))),
    };
    if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(Some(Zeroizing::new(seed)));
    }
    let der = pem_body(&bytes).ok_or_else(|| {
        key_error(
            path,
            "is neither a 32-byte Ed25519 seed nor a PEM \"PRIVATE KEY\" (PKCS#8)",
        )
    })?;
    let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der)
        .map_err(|_| key_error(path, "is not an Ed25519 PKCS#8 private key"))?;
    Ok(Some(Zeroizing::new(key.to_bytes())))
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` block.
fn pem_body(bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = start + text[start..].find("-----END PRIVATE KEY-----")?;
    let b64: Zeroizing<String> = Zeroizing::new(
        text[start..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()
        .map(Zeroizing::new)
}

/// Create `path` (mode 0600, failing if it exists: two processes starting on one data
/// directory must not each write their own key), through a fsynced temporary file so a crash
/// leaves no half-written key.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp: PathBuf = dir.join(format!(".{DEFAULT_FILE}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
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
        std::fs::hard_link(&tmp, path)?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_generated_key_is_created_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = ConfigSigner::load_or_create(Path::new(""), dir.path()).unwrap();
        let path = dir.path().join(DEFAULT_FILE);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let b = ConfigSigner::load_or_create(Path::new(""), dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(a.key_id().len(), 16);
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.key.to_bytes())));
    }

    #[test]
    fn a_configured_key_is_read_as_seed_or_pkcs8_pem_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let seed = [7u8; 32];
        let raw = dir.path().join("seed.key");
        std::fs::write(&raw, seed).unwrap();
        let from_raw = ConfigSigner::load_or_create(&raw, dir.path()).unwrap();
        // RFC 8410 PKCS#8 v1 of the same seed, as `openssl genpkey -algorithm ed25519` writes.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        use base64::Engine as _;
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        let pem_path = dir.path().join("key.pem");
        std::fs::write(&pem_path, pem).unwrap();
        let from_pem = ConfigSigner::load_or_create(&pem_path, dir.path()).unwrap();
        assert_eq!(from_raw.public_key(), from_pem.public_key());
        // A configured key is never generated, and garbage is refused.
        let missing = dir.path().join("missing.key");
        assert!(ConfigSigner::load_or_create(&missing, dir.path()).is_err());
        assert!(!missing.exists());
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, b"not a key").unwrap();
        assert!(ConfigSigner::load_or_create(&bad, dir.path()).is_err());
    }

    #[test]
    fn signatures_cover_the_context_and_the_document() {
        let s = ConfigSigner::from_seed(&[1u8; 32]);
        let sig = ed25519_dalek::Signature::from_bytes(&s.sign(b"doc"));
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&s.public_key()).unwrap();
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(b"doc");
        assert!(vk.verify_strict(&msg, &sig).is_ok());
        assert!(vk.verify_strict(b"doc", &sig).is_err());
    }
}
