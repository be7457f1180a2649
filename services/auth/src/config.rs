//! `[auth]` configuration.

use std::path::PathBuf;

use guardyn_common::config::{ConfigError, Validate, key};
use guardyn_common::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};

/// Settings of the auth service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// File holding the 32-byte master key that seals TOTP secrets and token-signing seeds at
    /// rest. Empty: `<storage.data_dir>/auth-master.key`, generated on first start. A file set
    /// here must exist (it is never generated: a new key would orphan every sealed secret).
    pub master_key_file: PathBuf,
    /// Lifetime of access tokens.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token (each refresh issues one with a fresh lifetime).
    pub refresh_token_ttl_secs: u64,
    /// A new token-signing key is generated when the newest one is older than this; the
    /// previous key stays published until the tokens it signed expired.
    pub signing_key_rotation_secs: u64,
    /// How long callers may cache GetVerificationKeys.
    pub verification_keys_cache_secs: u64,
    /// Minimum password length in bytes (the maximum is 1024).
    pub password_min_length: usize,
    pub argon2: Argon2Config,
    /// Argon2id computations (hash or verify) running at once; each holds `argon2.memory_kib`
    /// of memory. 0: one per CPU. Requests beyond it wait up to `argon2_queue_ms` for a turn.
    pub argon2_concurrency: u32,
    /// How long a password check waits for a hashing turn before it fails with
    /// RESOURCE_EXHAUSTED / OVERLOADED (and a retry hint). 0: do not wait.
    pub argon2_queue_ms: u64,
    /// Devices per account (1..=127).
    pub max_devices: u32,
    /// Lifetime of a device link request (at most 300).
    pub link_code_ttl_secs: u64,
    /// How long after the last password (+ second factor) proof a session may do sensitive
    /// operations (ApproveLink, RemoveDevice, Logout of all sessions, ChangePassword, TOTP
    /// enrolment, revoking another session): 30..=900.
    pub step_up_window_secs: u64,
    /// Lifetime of the MFA ticket returned by Login.
    pub mfa_ticket_ttl_secs: u64,
    /// A pending TOTP enrolment expires after this.
    pub totp_enrollment_ttl_secs: u64,
    /// `auth.prekeys.low` is published when a device's one-time prekeys (EC or KEM) or
    /// KeyPackages fall below this.
    pub prekey_low_threshold: u32,
    /// Stored one-time keys per kind and device (EC prekeys, KEM prekeys, KeyPackages).
    pub max_stored_prekeys: u32,
    pub lockout: LockoutConfig,
    pub second_factor_lockout: SecondFactorLockout,
    /// A removed device's id is handed to a newly linked device no sooner than this after the
    /// removal (and only once its sessions' tokens expired and its keys and notices are
    /// gone), so that the removal's clean-up elsewhere (its message queue) is done and peers
    /// were told before the id means another device. At most 30 days.
    pub device_id_reuse_secs: u64,
    pub limits: AuthLimits,
    /// Seconds between passes of the sweeper that deletes dead sessions, link codes, MFA
    /// tickets and lockout records (1..=86400).
    pub sweep_interval_secs: u64,
    /// Keys the sweeper reads per key prefix and pass (1..=10000).
    pub sweep_batch: usize,
}

impl AuthConfig {
    /// Argon2id computations allowed at once: `argon2_concurrency`, or one per CPU when 0
    /// (at least 1).
    pub fn argon2_permits(&self) -> usize {
        match self.argon2_concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n as usize,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            master_key_file: PathBuf::new(),
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            signing_key_rotation_secs: 30 * 24 * 3600,
            verification_keys_cache_secs: 300,
            password_min_length: 12,
            argon2: Argon2Config::default(),
            argon2_concurrency: 0,
            argon2_queue_ms: 200,
            max_devices: 6,
            link_code_ttl_secs: 300,
            step_up_window_secs: 300,
            mfa_ticket_ttl_secs: 300,
            totp_enrollment_ttl_secs: 600,
            prekey_low_threshold: 10,
            max_stored_prekeys: 1000,
            sweep_interval_secs: 300,
            sweep_batch: 500,
            lockout: LockoutConfig::default(),
            second_factor_lockout: SecondFactorLockout::default(),
            device_id_reuse_secs: 86_400,
            limits: AuthLimits::default(),
        }
    }
}

/// Argon2id cost parameters. Defaults are OWASP's recommendation (m=19456 KiB, t=2, p=1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Exponential lockout after repeated failed logins for one username from one client
/// address: after `threshold` failures every further failure locks that (address, username)
/// for `base_secs * 2^(failures - threshold)`, capped at `max_secs`; a success clears it.
/// Failures from every address also count towards a softer lock of the username itself
/// (`global_threshold`, same growth; one failure forgiven per `global_decay_secs` without
/// any), so one attacker cannot lock the owner out but a distributed guess is still slowed.
/// State lives in the KvStore (`auth/v1/lockaddr/...`, `auth/v1/lockout/<username>`), so it
/// holds across restarts and instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutConfig {
    pub threshold: u32,
    pub base_secs: u64,
    pub max_secs: u64,
    pub global_threshold: u32,
    pub global_decay_secs: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            base_secs: 30,
            max_secs: 3600,
            global_threshold: 50,
            global_decay_secs: 300,
        }
    }
}

/// Exponential lockout of an account's second factor (TOTP and recovery codes, at sign-in,
/// step-up and every other check, over all tickets and instances): after `threshold`
/// failures every further one locks the checks for `base_secs * 2^(failures - threshold)`,
/// capped at `max_secs`. One failure is forgiven per `decay_secs` without a failure once the
/// lock ended; a success does not reset the count (an attacker holding the password would
/// otherwise get a fresh allowance at every sign-in of the owner). Persisted at
/// `auth/v1/mfalock/<account>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecondFactorLockout {
    pub threshold: u32,
    pub base_secs: u64,
    pub max_secs: u64,
    pub decay_secs: u64,
}

impl Default for SecondFactorLockout {
    fn default() -> Self {
        Self {
            threshold: 5,
            base_secs: 60,
            max_secs: 6 * 3600,
            decay_secs: 3600,
        }
    }
}

/// Token buckets (burst, refill per minute).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthLimits {
    /// Login, CompleteMfaLogin, RefreshSession and LinkDevice per client address.
    pub login_per_address: RateLimit,
    /// Login per (client address, username).
    pub login_per_account: RateLimit,
    /// Login per username from any address: higher than `login_per_account`, so that one
    /// address cannot use it up for the owner.
    pub login_per_username: RateLimit,
    /// UploadPreKeys and UploadKeyPackages per device.
    pub prekey_upload_per_device: RateLimit,
    /// Audit entries for failed logins, over the whole process; failures beyond it are
    /// counted into the next entry instead of one entry each.
    pub failed_login_audit: RateLimit,
    /// Register per client address.
    pub register_per_address: RateLimit,
    /// TOTP and recovery-code checks per account.
    pub totp_per_account: RateLimit,
    /// Password re-checks (ChangePassword, DeleteAccount, DisableTotp) per account.
    pub password_per_account: RateLimit,
    /// GetPreKeyBundle and ClaimKeyPackages per (caller account, target account).
    pub prekey_fetch_per_target: RateLimit,
    /// ApproveLink per account.
    pub link_code_per_account: RateLimit,
    /// LookupUsername per caller account.
    pub lookup_per_account: RateLimit,
    /// Failed API-credential verifications per client address; beyond it every credential
    /// call from that address is refused (the right secret too) until the bucket refills.
    pub credential_failures_per_address: RateLimit,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            login_per_address: RateLimit::new(30, 60),
            login_per_account: RateLimit::new(10, 10),
            login_per_username: RateLimit::new(60, 60),
            prekey_upload_per_device: RateLimit::new(30, 30),
            failed_login_audit: RateLimit::new(100, 600),
            register_per_address: RateLimit::new(10, 10),
            totp_per_account: RateLimit::new(10, 10),
            password_per_account: RateLimit::new(10, 10),
            prekey_fetch_per_target: RateLimit::new(60, 60),
            link_code_per_account: RateLimit::new(5, 5),
            lookup_per_account: RateLimit::new(20, 60),
            credential_failures_per_address: RateLimit::new(20, 20),
        }
    }
}

impl Validate for AuthConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let err = |field: &str, why: &str| Err(ConfigError::new(key(prefix, field), why));
        if !(60..=86_400).contains(&self.access_token_ttl_secs) {
            return err("access_token_ttl_secs", "must be between 60 and 86400");
        }
        if self.refresh_token_ttl_secs < self.access_token_ttl_secs {
            return err(
                "refresh_token_ttl_secs",
                "must be at least access_token_ttl_secs",
            );
        }
        if self.signing_key_rotation_secs < 3600 {
            return err("signing_key_rotation_secs", "must be at least 3600");
        }
        if self.verification_keys_cache_secs == 0 {
            return err("verification_keys_cache_secs", "must be at least 1");
        }
        if !(8..=128).contains(&self.password_min_length) {
            return err("password_min_length", "must be between 8 and 128");
        }
        let a = &self.argon2;
        if argon2::Params::new(a.memory_kib, a.iterations, a.parallelism, Some(32)).is_err() {
            return err(
                "argon2",
                "invalid Argon2 parameters (memory_kib >= 8 * parallelism, iterations >= 1)",
            );
        }
        if self.argon2_concurrency > 1024 {
            return err(
                "argon2_concurrency",
                "must be at most 1024 (0: one per CPU)",
            );
        }
        if self.argon2_queue_ms > 10_000 {
            return err("argon2_queue_ms", "must be at most 10000");
        }
        if !(1..=127).contains(&self.max_devices) {
            return err("max_devices", "must be between 1 and 127");
        }
        if !(10..=300).contains(&self.link_code_ttl_secs) {
            return err("link_code_ttl_secs", "must be between 10 and 300");
        }
        if !(30..=900).contains(&self.step_up_window_secs) {
            return err("step_up_window_secs", "must be between 30 and 900");
        }
        if !(10..=900).contains(&self.mfa_ticket_ttl_secs) {
            return err("mfa_ticket_ttl_secs", "must be between 10 and 900");
        }
        if !(60..=3600).contains(&self.totp_enrollment_ttl_secs) {
            return err("totp_enrollment_ttl_secs", "must be between 60 and 3600");
        }
        if !(1..=10_000).contains(&self.max_stored_prekeys) {
            return err("max_stored_prekeys", "must be between 1 and 10000");
        }
        if self.prekey_low_threshold > self.max_stored_prekeys {
            return err("prekey_low_threshold", "must be at most max_stored_prekeys");
        }
        if !(1..=86_400).contains(&self.sweep_interval_secs) {
            return err("sweep_interval_secs", "must be between 1 and 86400");
        }
        if !(1..=10_000).contains(&self.sweep_batch) {
            return err("sweep_batch", "must be between 1 and 10000");
        }
        let l = &self.lockout;
        if l.threshold == 0 || l.base_secs == 0 || l.max_secs < l.base_secs {
            return err(
                "lockout",
                "threshold and base_secs must be at least 1 and max_secs >= base_secs",
            );
        }
        if l.global_threshold < l.threshold || l.global_decay_secs == 0 {
            return err(
                "lockout",
                "global_threshold must be at least threshold and global_decay_secs at least 1",
            );
        }
        let f = &self.second_factor_lockout;
        if f.threshold == 0 || f.base_secs == 0 || f.max_secs < f.base_secs || f.decay_secs == 0 {
            return err(
                "second_factor_lockout",
                "threshold, base_secs and decay_secs must be at least 1 and max_secs >= base_secs",
            );
        }
        if self.device_id_reuse_secs > 30 * 86_400 {
            return err("device_id_reuse_secs", "must be at most 2592000 (30 days)");
        }
        let limits = key(prefix, "limits");
        let lim = &self.limits;
        for (name, limit) in [
            ("login_per_address", &lim.login_per_address),
            ("login_per_account", &lim.login_per_account),
            ("login_per_username", &lim.login_per_username),
            ("prekey_upload_per_device", &lim.prekey_upload_per_device),
            ("failed_login_audit", &lim.failed_login_audit),
            ("register_per_address", &lim.register_per_address),
            ("totp_per_account", &lim.totp_per_account),
            ("password_per_account", &lim.password_per_account),
            ("prekey_fetch_per_target", &lim.prekey_fetch_per_target),
            ("link_code_per_account", &lim.link_code_per_account),
            ("lookup_per_account", &lim.lookup_per_account),
            (
                "credential_failures_per_address",
                &lim.credential_failures_per_address,
            ),
        ] {
            limit.validate(&key(&limits, name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        AuthConfig::default().validate("auth").unwrap();
        let bad = AuthConfig {
            link_code_ttl_secs: 301,
            ..AuthConfig::default()
        };
        assert_eq!(
            bad.validate("auth").unwrap_err().key,
            "auth.link_code_ttl_secs"
        );
        let mut bad = AuthConfig::default();
        bad.limits.login_per_address = RateLimit::new(0, 1);
        assert_eq!(
            bad.validate("auth").unwrap_err().key,
            "auth.limits.login_per_address"
        );
        let mut bad = AuthConfig::default();
        bad.argon2.iterations = 0;
        assert_eq!(bad.validate("auth").unwrap_err().key, "auth.argon2");
        let bad = AuthConfig {
            argon2_concurrency: 1025,
            ..AuthConfig::default()
        };
        assert_eq!(
            bad.validate("auth").unwrap_err().key,
            "auth.argon2_concurrency"
        );
        let bad = AuthConfig {
            argon2_queue_ms: 10_001,
            ..AuthConfig::default()
        };
        assert_eq!(
            bad.validate("auth").unwrap_err().key,
            "auth.argon2_queue_ms"
        );
        assert!(AuthConfig::default().argon2_permits() >= 1);
        let one = AuthConfig {
            argon2_concurrency: 1,
            ..AuthConfig::default()
        };
        assert_eq!(one.argon2_permits(), 1);
    }
}
