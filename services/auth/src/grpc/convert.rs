//! Prost types to domain types and back (the edge).

use std::net::{IpAddr, Ipv4Addr};

use guardyn_proto::guardyn::auth::v1 as pb;
use zeroize::Zeroizing;

use crate::accounts::{NewDevice, SecondFactor};
use crate::core::IssuedTokens;
use crate::devices::check_name;
use crate::error::{AuthError, AuthResult};
use crate::model::StoredPreKey;
use crate::prekeys::{Counts, PreKeyUpload};

pub fn ts_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn ts_s(s: u64) -> prost_types::Timestamp {
    ts_ms(s.saturating_mul(1000))
}

/// The client's IP address; tonic fills it for TCP and TLS connections.
pub fn addr<T>(request: &tonic::Request<T>) -> IpAddr {
    request
        .remote_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub fn tokens(t: IssuedTokens) -> pb::Tokens {
    pb::Tokens {
        access_token: t.access_token.to_string(),
        access_token_expires_at: Some(ts_s(t.access_expires_s)),
        refresh_token: t.refresh_token.to_string(),
        refresh_token_expires_at: Some(ts_ms(t.refresh_expires_ms)),
        session_id: t.session_id,
    }
}

/// A lowercase hyphenated UUID.
pub fn account_id(raw: &str, field: &str) -> AuthResult<String> {
    match uuid::Uuid::parse_str(raw) {
        Ok(u) if raw.len() == 36 => Ok(u.hyphenated().to_string()),
        _ => Err(AuthError::field(field, "must be a UUID string")),
    }
}

pub fn device_id(id: u32, field: &str) -> AuthResult<u32> {
    if (1..=127).contains(&id) {
        Ok(id)
    } else {
        Err(AuthError::field(field, "must be 1..127"))
    }
}

pub fn signed(k: pb::SignedPreKey) -> StoredPreKey {
    StoredPreKey {
        key_id: k.key_id,
        public_key: k.public_key,
        signature: k.signature,
    }
}

pub fn kem(k: pb::KemPreKey) -> StoredPreKey {
    StoredPreKey {
        key_id: k.key_id,
        public_key: k.public_key,
        signature: k.signature,
    }
}

pub fn one_time(k: pb::OneTimePreKey) -> StoredPreKey {
    StoredPreKey {
        key_id: k.key_id,
        public_key: k.public_key,
        signature: Vec::new(),
    }
}

impl From<pb::UploadPreKeysRequest> for PreKeyUpload {
    fn from(r: pb::UploadPreKeysRequest) -> Self {
        Self {
            signed: r.signed_prekey.map(signed),
            last_resort_kem: r.last_resort_kem_prekey.map(kem),
            kem: r.one_time_kem_prekeys.into_iter().map(kem).collect(),
            ec: r.one_time_prekeys.into_iter().map(one_time).collect(),
        }
    }
}

/// A `NewDevice` message at `field` (e.g. `device`).
pub fn new_device(d: Option<pb::NewDevice>, field: &str) -> AuthResult<NewDevice> {
    let d = d.ok_or_else(|| AuthError::field(field, "is required"))?;
    let name = check_name(&d.name, &format!("{field}.name"))?;
    if !(1..=16380).contains(&d.registration_id) {
        return Err(AuthError::field(
            format!("{field}.registration_id"),
            "must be 1..16380",
        ));
    }
    Ok(NewDevice {
        name,
        registration_id: d.registration_id,
        identity_key: d.identity_key,
        prekeys: PreKeyUpload {
            signed: d.signed_prekey.map(signed),
            last_resort_kem: d.last_resort_kem_prekey.map(kem),
            kem: d.one_time_kem_prekeys.into_iter().map(kem).collect(),
            ec: d.one_time_prekeys.into_iter().map(one_time).collect(),
        },
    })
}

pub fn counts(c: Counts) -> pb::PreKeyCounts {
    pb::PreKeyCounts {
        one_time_prekeys: c.ec,
        one_time_kem_prekeys: c.kem,
        has_last_resort_kem_prekey: c.has_last_resort,
        signed_prekey_id: c.signed_id,
    }
}

pub fn factor_totp(code: String) -> SecondFactor {
    SecondFactor::Totp(Zeroizing::new(code))
}

pub fn factor_recovery(code: String) -> SecondFactor {
    SecondFactor::Recovery(Zeroizing::new(code))
}

pub fn required(s: &str, field: &str) -> AuthResult<()> {
    if s.is_empty() {
        return Err(AuthError::field(field, "is required"));
    }
    Ok(())
}
