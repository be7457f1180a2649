//! Passwords, usernames, random credentials and their hashes.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::config::Argon2Config;
use crate::error::{AuthError, AuthResult};
use crate::model::PasswordHash;

pub const MAX_PASSWORD_LEN: usize = 1024;

/// Lowercase and check a username: 3..32 characters of `[a-z0-9_.]`, starting with a letter.
pub fn normalize_username(raw: &str) -> AuthResult<String> {
    let name = raw.trim().to_lowercase();
    let bad = |why: &str| Err(AuthError::field("username", why));
    if !(3..=32).contains(&name.chars().count()) {
        return bad("must be 3 to 32 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return bad("must start with a letter a-z");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    {
        return bad("may only contain a-z, 0-9, '_' and '.'");
    }
    Ok(name)
}

/// The password policy: length bounds only (NIST SP 800-63B: no composition rules).
pub fn check_password_policy(password: &str, min: usize) -> AuthResult<()> {
    if password.len() < min || password.len() > MAX_PASSWORD_LEN {
        return Err(AuthError::WeakPassword { min });
    }
    Ok(())
}

fn argon2(params: &Argon2Config) -> AuthResult<Argon2<'static>> {
    let p = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
}

/// Argon2id working memory (`memory_kib` blocks of 1 KiB), kept and reused between
/// computations so that the allocator does not keep freed copies in every thread's arena.
pub type HashMemory = Vec<Block>;

/// Run Argon2id in `memory` (grown when too small), wiping the used blocks afterwards.
fn compute(
    params: &Argon2Config,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut HashMemory,
) -> AuthResult<()> {
    let a = argon2(params)?;
    let n = a.params().block_count();
    if memory.len() < n {
        memory.resize(n, Block::new());
    }
    let result = a.hash_password_into_with_memory(password, salt, out, &mut memory[..n]);
    memory[..n].fill(Block::new());
    result.map_err(|e| AuthError::Hash(e.to_string()))
}

/// Hash a password with a fresh salt. CPU-heavy: call from `spawn_blocking`.
pub fn hash_password(
    password: &str,
    params: &Argon2Config,
    memory: &mut HashMemory,
) -> AuthResult<PasswordHash> {
    let salt: [u8; 16] = rand::random();
    let mut hash = [0u8; 32];
    compute(params, password.as_bytes(), &salt, &mut hash, memory)?;
    Ok(PasswordHash {
        memory_kib: params.memory_kib,
        iterations: params.iterations,
        parallelism: params.parallelism,
        salt,
        hash,
    })
}

/// Constant-time check of `password` against `stored`, with the stored parameters.
/// CPU-heavy: call from `spawn_blocking`.
pub fn verify_password(
    password: &str,
    stored: &PasswordHash,
    memory: &mut HashMemory,
) -> AuthResult<bool> {
    let params = Argon2Config {
        memory_kib: stored.memory_kib,
        iterations: stored.iterations,
        parallelism: stored.parallelism,
    };
    let mut out = Zeroizing::new([0u8; 32]);
    compute(
        &params,
        password.as_bytes(),
        &stored.salt,
        out.as_mut(),
        memory,
    )?;
    Ok(bool::from(out.ct_eq(&stored.hash)))
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// 256 random bits, base64url without padding (43 characters).
pub fn random_token() -> Zeroizing<String> {
    let bytes = Zeroizing::new(rand::random::<[u8; 32]>());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A recovery code: 16 base32 characters (80 bits), shown as `xxxx-xxxx-xxxx-xxxx`.
pub fn recovery_code() -> Zeroizing<String> {
    let bytes = Zeroizing::new(rand::random::<[u8; 16]>());
    let mut s = Zeroizing::new(String::with_capacity(19));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        s.push(char::from(BASE32[usize::from(b & 31)]));
    }
    s
}

/// Canonical form of a recovery code for hashing: separators and case ignored.
pub fn recovery_code_hash(code: &str) -> [u8; 32] {
    let canonical: Zeroizing<String> = Zeroizing::new(
        code.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    sha256(canonical.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn usernames_are_normalized_and_validated() {
        assert_eq!(normalize_username(" Alice.B_1 ").unwrap(), "alice.b_1");
        for bad in ["ab", "1abc", "al ice", "ali-ce", &"a".repeat(33), "_abc"] {
            assert!(normalize_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_hashes_verify_only_the_right_password() {
        let cheap = Argon2Config {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        let mut memory = HashMemory::new();
        let h = hash_password("correct horse battery", &cheap, &mut memory).unwrap();
        assert!(verify_password("correct horse battery", &h, &mut memory).unwrap());
        assert!(!verify_password("correct horse battery!", &h, &mut HashMemory::new()).unwrap());
        assert!(format!("{h:?}").contains(".."));
    }

    #[test]
    fn recovery_codes_hash_independently_of_formatting() {
        let code = recovery_code();
        assert_eq!(code.len(), 19);
        let plain: String = code.replace('-', "").to_lowercase();
        assert_eq!(recovery_code_hash(&code), recovery_code_hash(&plain));
        assert_ne!(recovery_code_hash(&code), recovery_code_hash("AAAA"));
    }
}
