//! Wire ↔ domain: each request is validated once here, with `INVALID_ARGUMENT` naming the
//! field, and becomes a plain Rust value the core trusts.

use std::net::IpAddr;

use guardyn_common::ApiError;
use guardyn_common::wire::{millis, timestamp};
use guardyn_proto::guardyn::notification::v1 as pb;

use crate::config::NotificationConfig;
use crate::model::{Mode, NewToken, Settings, TokenInfo};
use crate::providers::{Platform, WebPushKeys};

/// Longest token or endpoint, in characters.
const MAX_TOKEN_CHARS: usize = 4096;
/// Longest topic, in characters.
const MAX_TOPIC_CHARS: usize = 255;
/// APNs device tokens: hex, 32 bytes today, up to 100 bytes allowed for the future.
const APNS_TOKEN_CHARS: std::ops::RangeInclusive<usize> = 64..=200;

pub(super) fn new_token(
    r: pb::RegisterPushTokenRequest,
    cfg: &NotificationConfig,
) -> Result<NewToken, ApiError> {
    let platform = match pb::PushPlatform::try_from(r.platform) {
        Ok(pb::PushPlatform::Apns) => Platform::Apns,
        Ok(pb::PushPlatform::Fcm) => Platform::Fcm,
        Ok(pb::PushPlatform::WebPush) => Platform::WebPush,
        Ok(pb::PushPlatform::Unspecified) | Err(_) => {
            return Err(ApiError::invalid_field(
                "platform",
                "must be APNS, FCM or WEB_PUSH",
            ));
        }
    };
    if r.token.is_empty() {
        return Err(ApiError::invalid_field("token", "required"));
    }
    if r.token.chars().count() > MAX_TOKEN_CHARS {
        return Err(ApiError::payload_too_large(
            "token",
            format!("at most {MAX_TOKEN_CHARS} characters"),
        ));
    }
    if r.topic.chars().count() > MAX_TOPIC_CHARS {
        return Err(ApiError::payload_too_large(
            "topic",
            format!("at most {MAX_TOPIC_CHARS} characters"),
        ));
    }
    if r.topic.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::invalid_field(
            "topic",
            "must not contain spaces or control characters",
        ));
    }
    let env = pb::ApnsEnvironment::try_from(r.apns_environment)
        .map_err(|_| ApiError::invalid_field("apns_environment", "unknown environment"))?;
    if platform != Platform::Apns && env != pb::ApnsEnvironment::Unspecified {
        return Err(ApiError::invalid_field(
            "apns_environment",
            "only for APNS tokens",
        ));
    }
    if platform != Platform::WebPush && r.web_push_keys.is_some() {
        return Err(ApiError::invalid_field(
            "web_push_keys",
            "only for WEB_PUSH subscriptions",
        ));
    }
    let web_push = match platform {
        Platform::Apns => {
            apns(&r.token, &r.topic)?;
            None
        }
        Platform::Fcm => {
            if !r.token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ApiError::invalid_field(
                    "token",
                    "an FCM registration token is printable ASCII without spaces",
                ));
            }
            None
        }
        Platform::WebPush => Some(web_push(&r, cfg)?),
    };
    Ok(NewToken {
        platform,
        token: r.token,
        topic: r.topic,
        apns_sandbox: env == pb::ApnsEnvironment::Sandbox,
        web_push,
    })
}

fn apns(token: &str, topic: &str) -> Result<(), ApiError> {
    if !APNS_TOKEN_CHARS.contains(&token.len()) || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field(
            "token",
            "an APNs device token is 64 to 200 hexadecimal characters",
        ));
    }
    if topic.is_empty() {
        return Err(ApiError::invalid_field(
            "topic",
            "required for APNS: the app's bundle id",
        ));
    }
    Ok(())
}

fn web_push(
    r: &pb::RegisterPushTokenRequest,
    cfg: &NotificationConfig,
) -> Result<WebPushKeys, ApiError> {
    if !r.topic.is_empty() {
        return Err(ApiError::invalid_field(
            "topic",
            "must be empty for WEB_PUSH",
        ));
    }
    endpoint(&r.token, cfg.allow_http_endpoints())?;
    let keys = r
        .web_push_keys
        .as_ref()
        .ok_or_else(|| ApiError::invalid_field("web_push_keys", "required for WEB_PUSH"))?;
    if keys.p256dh.len() != 65
        || keys.p256dh.first() != Some(&0x04)
        || p256::PublicKey::from_sec1_bytes(&keys.p256dh).is_err()
    {
        return Err(ApiError::invalid_field(
            "web_push_keys.p256dh",
            "must be an uncompressed P-256 point on the curve: 65 bytes starting with 0x04",
        ));
    }
    if keys.auth.len() != 16 {
        return Err(ApiError::invalid_field(
            "web_push_keys.auth",
            "must be exactly 16 bytes",
        ));
    }
    Ok(WebPushKeys {
        p256dh: keys.p256dh.clone(),
        auth: keys.auth.clone(),
    })
}

/// A Web Push endpoint: an absolute `https://` URL with a host and no credentials
/// (`http://` only to a loopback host, and only when the configuration allows it).
fn endpoint(url: &str, allow_loopback_http: bool) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::invalid_field("token", why.to_owned());
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            "the endpoint must not contain spaces or control characters",
        ));
    }
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("the Web Push endpoint must be an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("the endpoint must not carry credentials"));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(bad("the endpoint has no host"));
    }
    if !https {
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !(allow_loopback_http && loopback) {
            return Err(bad("the Web Push endpoint must be an https:// URL"));
        }
    } else if !allow_loopback_http
        && host
            .parse::<IpAddr>()
            .is_ok_and(|ip| !crate::providers::public_net::is_public(ip))
    {
        // Names are checked when the push goes out (they may resolve differently later).
        return Err(bad("the Web Push endpoint must be a public address"));
    }
    Ok(())
}

fn platform(p: Platform) -> pb::PushPlatform {
    match p {
        Platform::Apns => pb::PushPlatform::Apns,
        Platform::Fcm => pb::PushPlatform::Fcm,
        Platform::WebPush => pb::PushPlatform::WebPush,
    }
}

pub(super) fn token_info(t: TokenInfo) -> pb::PushTokenInfo {
    let env = match (t.platform, t.apns_sandbox) {
        (Platform::Apns, true) => pb::ApnsEnvironment::Sandbox,
        (Platform::Apns, false) => pb::ApnsEnvironment::Production,
        _ => pb::ApnsEnvironment::Unspecified,
    };
    pb::PushTokenInfo {
        push_token_id: t.id.to_string(),
        platform: platform(t.platform).into(),
        token_hint: t.hint,
        topic: t.topic,
        apns_environment: env.into(),
        registered_at: Some(timestamp(t.registered_ms)),
    }
}

pub(super) fn settings(s: Option<pb::NotificationSettings>) -> Result<Settings, ApiError> {
    let s = s.ok_or_else(|| ApiError::invalid_field("settings", "required"))?;
    let mode = match pb::PushMode::try_from(s.mode) {
        Ok(pb::PushMode::Unspecified | pb::PushMode::Alert) => Mode::Alert,
        Ok(pb::PushMode::Silent) => Mode::Silent,
        Ok(pb::PushMode::None) => Mode::None,
        Err(_) => {
            return Err(ApiError::invalid_field(
                "settings.mode",
                "must be ALERT, SILENT or NONE",
            ));
        }
    };
    if let Some(t) = &s.mute_until
        && (t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos))
    {
        return Err(ApiError::invalid_field(
            "settings.mute_until",
            "must be a valid time after 1970",
        ));
    }
    Ok(Settings {
        mode,
        mute_until_ms: millis(s.mute_until.as_ref()),
    })
}

pub(super) fn settings_out(s: Settings) -> pb::NotificationSettings {
    pb::NotificationSettings {
        mode: match s.mode {
            Mode::Alert => pb::PushMode::Alert,
            Mode::Silent => pb::PushMode::Silent,
            Mode::None => pb::PushMode::None,
        }
        .into(),
        mute_until: (s.mute_until_ms != 0).then(|| timestamp(s.mute_until_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_unless_loopback_is_allowed() {
        assert!(endpoint("https://push.example.com/x", false).is_ok());
        assert!(endpoint("https://[2a00:1450::1]:443/x", false).is_ok());
        assert!(endpoint("https://[2001:db8::1]:443/x", false).is_err());
        assert!(endpoint("https://10.0.0.7/x", false).is_err());
        assert!(endpoint("https://169.254.169.254/x", false).is_err());
        assert!(endpoint("http://push.example.com/x", true).is_err());
        assert!(endpoint("http://127.0.0.1:8080/x", false).is_err());
        assert!(endpoint("http://127.0.0.1:8080/x", true).is_ok());
        assert!(endpoint("http://[::1]:8080/x", true).is_ok());
        assert!(endpoint("https://user:pw@push.example.com/x", false).is_err());
        assert!(endpoint("https:///x", false).is_err());
        assert!(endpoint("ftp://push.example.com/x", false).is_err());
    }
}
