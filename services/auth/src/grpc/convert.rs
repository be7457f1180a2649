//! Prost types to domain types and back (the edge): parsing what comes in, shaping what goes
//! out, nothing else.

use std::net::{IpAddr, Ipv4Addr};

use guardyn_common::ApiError;
use guardyn_common::auth::TokenScope;
use guardyn_common::ids::DeviceId;
use guardyn_proto::guardyn::auth::v1 as pb;
use zeroize::Zeroizing;

use crate::accounts::NewDevice;
use crate::core::{IssuedTokens, SessionInfo};
use crate::devices::check_name;
use crate::error::{AuthError, AuthResult};
use crate::keypackages::Claimed;
use crate::mfa::SecondFactor;
use crate::model::{Device, StoredPreKey};
use crate::prekeys::{Bundle, Counts, PreKeyUpload};
use crate::signing::PublishedKey;

pub fn ts_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn ts_s(s: u64) -> prost_types::Timestamp {
    ts_ms(s.saturating_mul(1000))
}

pub fn duration_s(s: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(s).unwrap_or(300),
        nanos: 0,
    }
}

pub fn tokens(t: IssuedTokens) -> pb::Tokens {
    pb::Tokens {
        access_token: t.access_token.to_string(),
        access_token_expires_at: Some(ts_s(t.access_expires_s)),
        refresh_token: t.refresh_token.to_string(),
        refresh_token_expires_at: Some(ts_ms(t.refresh_expires_ms)),
        session_id: t.session_id,
        mfa_enrollment_required: t.scope == TokenScope::MfaEnrollment,
    }
}

/// A session id: a lowercase hyphenated UUID.
pub fn session_id(raw: &str, field: &str) -> Result<String, ApiError> {
    match uuid::Uuid::parse_str(raw) {
        Ok(u) if raw.len() == 36 => Ok(u.hyphenated().to_string()),
        _ => Err(ApiError::invalid_field(field, "must be a UUID string")),
    }
}

pub fn required(s: &str, field: &str) -> AuthResult<()> {
    if s.is_empty() {
        return Err(AuthError::field(field, "is required"));
    }
    Ok(())
}

/// A code or secret this service issued: present and at most 64 characters.
pub fn code(s: &str, field: &str) -> AuthResult<()> {
    required(s, field)?;
    if s.len() > 64 {
        return Err(AuthError::field(field, "must be at most 64 characters"));
    }
    Ok(())
}

fn signed(k: pb::SignedPreKey) -> StoredPreKey {
    StoredPreKey {
        key_id: k.key_id,
        public_key: k.public_key,
        signature: k.signature,
    }
}

fn kem(k: pb::KemPreKey) -> StoredPreKey {
    StoredPreKey {
        key_id: k.key_id,
        public_key: k.public_key,
        signature: k.signature,
    }
}

fn one_time(k: pb::OneTimePreKey) -> StoredPreKey {
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

pub fn device(id: DeviceId, d: Device, current: bool) -> pb::Device {
    pb::Device {
        device_id: id.get(),
        name: d.name,
        registration_id: d.registration_id,
        created_at: Some(ts_ms(d.created_ms)),
        last_seen_at: Some(ts_ms(d.last_seen_ms)),
        current,
    }
}

pub fn session(s: SessionInfo) -> pb::Session {
    pb::Session {
        current: s.current,
        session_id: s.session_id,
        device_id: s.device_id.get(),
        created_at: Some(ts_ms(s.created_ms)),
        last_refreshed_at: Some(ts_ms(s.last_refreshed_ms)),
        expires_at: Some(ts_ms(s.expires_ms)),
    }
}

pub fn verification_key(k: PublishedKey) -> pb::VerificationKey {
    pb::VerificationKey {
        kid: k.key.kid.clone(),
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        alg: "EdDSA".into(),
        public_key: k.key.public_key.to_vec(),
        not_before: Some(ts_ms(k.not_before_ms)),
        expires_at: k.expires_ms.map(ts_ms),
    }
}

pub fn bundle(b: Bundle) -> pb::DeviceBundle {
    pb::DeviceBundle {
        device_id: b.device_id.get(),
        registration_id: b.registration_id,
        identity_key: b.identity_key,
        signed_prekey: Some(pb::SignedPreKey {
            key_id: b.signed.key_id,
            public_key: b.signed.public_key,
            signature: b.signed.signature,
        }),
        kem_prekey: Some(pb::KemPreKey {
            key_id: b.kem.key_id,
            public_key: b.kem.public_key,
            signature: b.kem.signature,
        }),
        kem_prekey_is_last_resort: b.kem_is_last_resort,
        one_time_prekey: b.ec.map(|k| pb::OneTimePreKey {
            key_id: k.key_id,
            public_key: k.public_key,
        }),
    }
}

pub fn claimed(k: Claimed) -> pb::ClaimedKeyPackage {
    pb::ClaimedKeyPackage {
        device_id: k.device_id.get(),
        key_package: k.bytes,
        last_resort: k.last_resort,
        mls_signature_key: k.signature_key,
    }
}

pub fn device_ids(ids: Vec<DeviceId>) -> Vec<u32> {
    ids.into_iter().map(|d| d.get()).collect()
}

/// The client's IP address; tonic fills it for TCP and TLS connections.
pub(super) fn addr<T>(request: &tonic::Request<T>) -> IpAddr {
    request
        .remote_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub fn notice(id: u64, n: crate::model::DeviceNotice) -> pb::DeviceNotice {
    let kind = match n.kind {
        crate::model::NoticeKind::Linked => pb::DeviceNoticeKind::Linked,
        crate::model::NoticeKind::Removed => pb::DeviceNoticeKind::Removed,
    };
    pb::DeviceNotice {
        notice_id: id,
        kind: kind.into(),
        device_id: n.device_id.get(),
        device_name: n.device_name,
        identity_key: n.identity_key,
        by_device_id: n.by.get(),
        at: Some(ts_ms(n.at_ms)),
    }
}
