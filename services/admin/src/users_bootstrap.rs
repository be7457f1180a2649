//! The one-time enrolment code that makes the first owner (`guardyn admin bootstrap`).
//!
//! The command runs on the server host with the server's configuration. With the embedded
//! engine the data directory's database is locked by the running server, so the command
//! cannot write the store: it writes only the code's hash and expiry to a file in
//! `storage.data_dir` (mode 0600), which ClaimOwner reads on the same host. The same file
//! works with every engine, so there is one mechanism; in a cluster, run the command in the
//! pod (or on the host) that hosts the admin service and claim through that instance.
//! The code itself is printed once and never stored.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// File name of the pending enrolment code in `storage.data_dir`.
pub const FILE: &str = "admin-bootstrap.code";
/// How long a code can be claimed.
pub const LIFETIME_MS: u64 = 60 * 60 * 1000;
const FORMAT: &str = "guardyn-admin-bootstrap v1";

/// Why a code could not be written or claimed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("enrolment code file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enrolment code file {0} is not in the expected format")]
    Malformed(PathBuf),
    /// No pending code, a wrong code or an expired one: callers do not learn which.
    #[error("the enrolment code is wrong, expired or already used")]
    Invalid,
}

/// A freshly issued code: shown to the operator once.
#[derive(Debug)]
pub struct Issued {
    pub code: String,
    pub expires_at_ms: u64,
    pub path: PathBuf,
}

/// Issue a new code (replacing any pending one): 128 random bits, stored as SHA-256 only.
pub fn issue(data_dir: &Path, now_ms: u64) -> Result<Issued, BootstrapError> {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let code = hex
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-");
    let expires_at_ms = now_ms.saturating_add(LIFETIME_MS);
    let body = format!("{FORMAT}\n{}\n{expires_at_ms}\n", hash_hex(&code));
    let path = data_dir.join(FILE);
    write_private(&path, body.as_bytes())?;
    Ok(Issued {
        code,
        expires_at_ms,
        path,
    })
}

/// Check `code` against the pending one without consuming it.
pub fn check(data_dir: &Path, code: &str, now_ms: u64) -> Result<(), BootstrapError> {
    let path = data_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BootstrapError::Invalid),
        Err(source) => return Err(BootstrapError::Io { path, source }),
    };
    let mut lines = text.lines();
    let (Some(FORMAT), Some(stored), Some(expiry)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(BootstrapError::Malformed(path));
    };
    let expires_at_ms: u64 = expiry
        .parse()
        .map_err(|_| BootstrapError::Malformed(path.clone()))?;
    let matches: bool = hash_hex(normalise(code).as_str())
        .as_bytes()
        .ct_eq(stored.as_bytes())
        .into();
    if !matches || now_ms >= expires_at_ms {
        return Err(BootstrapError::Invalid);
    }
    Ok(())
}

/// Consume the pending code: after a successful claim it never works again.
pub fn consume(data_dir: &Path) -> Result<(), BootstrapError> {
    let path = data_dir.join(FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BootstrapError::Io { path, source }),
    }
}

/// Codes are printed grouped; accept them typed with or without dashes and in any case.
fn normalise(code: &str) -> String {
    let hex: String = code
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

fn hash_hex(code: &str) -> String {
    Sha256::digest(code.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Write through a temporary file created with mode 0600 and rename it, so a reader never sees
/// a half-written file and no other user can read even the hash.
fn write_private(path: &Path, body: &[u8]) -> Result<(), BootstrapError> {
    let io = |source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(body).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_code_is_checked_by_hash_expires_and_is_consumed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let issued = issue(&dir, 1_000).unwrap();
        let stored = std::fs::read_to_string(&issued.path).unwrap();
        assert!(
            !stored.contains(&issued.code),
            "the code itself is never stored"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&issued.path)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(check(&dir, &issued.code, 2_000).is_ok());
        assert!(check(&dir, &issued.code.to_uppercase().replace('-', ""), 2_000).is_ok());
        assert!(matches!(
            check(&dir, "0000-0000", 2_000),
            Err(BootstrapError::Invalid)
        ));
        assert!(matches!(
            check(&dir, &issued.code, issued.expires_at_ms),
            Err(BootstrapError::Invalid)
        ));
        consume(&dir).unwrap();
        assert!(matches!(
            check(&dir, &issued.code, 2_000),
            Err(BootstrapError::Invalid)
        ));
    }
}
