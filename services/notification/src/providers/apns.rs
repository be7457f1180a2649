//! APNs: HTTP/2 to api.push.apple.com (or the sandbox) with an ES256 provider token.
//!
//! The provider token (JWT: `kid` = key id, `iss` = team id, `iat`) is signed with the .p8 key,
//! shared by every request and re-signed once it is `token_refresh_secs` old: Apple refuses
//! tokens older than an hour and throttles re-signing more often than every 20 minutes.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use guardyn_common::clock::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{Outcome, Platform, ProviderError, Sender, Target, Wake, http, keys};

const SECTION: &str = "apns";
const ALERT_BODY: &str =
    r#"{"aps":{"alert":{"title":"Guardyn","body":"New message"},"sound":"default"}}"#;
const SILENT_BODY: &str = r#"{"aps":{"content-available":1}}"#;

/// `notification.apns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsConfig {
    /// The .p8 signing key file (PKCS#8 PEM) from the Apple developer account.
    pub key_path: PathBuf,
    /// The key's id (the JWT `kid`).
    pub key_id: String,
    /// The developer team id (the JWT `iss`).
    pub team_id: String,
    pub production_url: String,
    pub sandbox_url: String,
    /// Age at which the provider token is re-signed; below Apple's hour.
    pub token_refresh_secs: u64,
    /// How long APNs keeps trying to deliver a wake to an unreachable device.
    pub expiration_secs: u64,
    pub timeout_ms: u64,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self {
            key_path: PathBuf::new(),
            key_id: String::new(),
            team_id: String::new(),
            production_url: "https://api.push.apple.com".into(),
            sandbox_url: "https://api.sandbox.push.apple.com".into(),
            token_refresh_secs: 50 * 60,
            expiration_secs: 24 * 3600,
            timeout_ms: 10_000,
        }
    }
}

/// Sends wake-ups through APNs.
pub struct ApnsSender {
    client: reqwest::Client,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    production_url: String,
    sandbox_url: String,
    refresh_after: Duration,
    expiration: Duration,
    clock: Arc<dyn Clock>,
    token: Mutex<Option<ProviderToken>>,
}

struct ProviderToken {
    jwt: String,
    issued: SystemTime,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    reason: String,
}

impl fmt::Debug for ApnsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsSender")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("production_url", &self.production_url)
            .field("sandbox_url", &self.sandbox_url)
            .finish_non_exhaustive()
    }
}

impl ApnsSender {
    pub fn new(config: &ApnsConfig, clock: Arc<dyn Clock>) -> Result<Self, ProviderError> {
        let invalid = |key, reason: &str| ProviderError::Invalid {
            section: SECTION,
            key,
            reason: reason.into(),
        };
        if config.key_id.is_empty() {
            return Err(invalid("key_id", "required"));
        }
        if config.team_id.is_empty() {
            return Err(invalid("team_id", "required"));
        }
        for (key, url) in [
            ("production_url", &config.production_url),
            ("sandbox_url", &config.sandbox_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(key, "must be an http(s) URL"));
            }
        }
        if !(1..3600).contains(&config.token_refresh_secs) {
            return Err(invalid("token_refresh_secs", "must be between 1 and 3599"));
        }
        if config.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be positive"));
        }
        if config.expiration_secs > 30 * 24 * 3600 {
            return Err(invalid("expiration_secs", "must be at most 30 days"));
        }
        let key = keys::p256(SECTION, "key_path", &config.key_path)?;
        Ok(Self {
            // APNs speaks only HTTP/2; a plain http:// endpoint (a test fake) is h2c.
            client: http::client(SECTION, Duration::from_millis(config.timeout_ms), true)?,
            key: key.signing,
            key_id: config.key_id.clone(),
            team_id: config.team_id.clone(),
            production_url: config.production_url.trim_end_matches('/').to_owned(),
            sandbox_url: config.sandbox_url.trim_end_matches('/').to_owned(),
            refresh_after: Duration::from_secs(config.token_refresh_secs),
            expiration: Duration::from_secs(config.expiration_secs),
            clock,
            token: Mutex::new(None),
        })
    }

    /// The current provider token, re-signed when old, when the clock went backwards past
    /// its `iat`, or when APNs called it expired (`force`).
    fn provider_token(&self, force: bool) -> Result<String, jsonwebtoken::errors::Error> {
        let now = self.clock.now();
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(token) = cached.as_ref().filter(|_| !force)
            && now
                .duration_since(token.issued)
                .is_ok_and(|age| age < self.refresh_after)
        {
            return Ok(token.jwt.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: http::unix_secs(now),
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)?;
        *cached = Some(ProviderToken {
            jwt: jwt.clone(),
            issued: now,
        });
        Ok(jwt)
    }

    async fn attempt(&self, target: &Target, wake: Wake, force_token: bool) -> Answer {
        let jwt = match self.provider_token(force_token) {
            Ok(jwt) => jwt,
            Err(e) => {
                return Answer::Done(Outcome::Rejected {
                    reason: format!("cannot sign the APNs provider token: {e}"),
                });
            }
        };
        let base = if target.apns_sandbox {
            &self.sandbox_url
        } else {
            &self.production_url
        };
        let (push_type, priority, body) = if wake.alert {
            ("alert", "10", ALERT_BODY)
        } else {
            ("background", "5", SILENT_BODY)
        };
        let expires = http::unix_secs(self.clock.now() + self.expiration);
        let sent = self
            .client
            .post(format!("{base}/3/device/{}", target.token))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &target.topic)
            .header("apns-push-type", push_type)
            .header("apns-priority", priority)
            .header("apns-expiration", expires.to_string())
            // Wakes replace each other on the device: one notification however many arrive.
            .header("apns-collapse-id", "guardyn-wake")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Answer::Done(http::transport_failure(Platform::Apns, e)),
        };
        let status = response.status().as_u16();
        let after = http::retry_after(response.headers(), self.clock.now());
        let reason = serde_json::from_slice::<ErrorBody>(&http::body(response).await)
            .map(|b| b.reason)
            .unwrap_or_default();
        classify(status, &reason, after)
    }
}

enum Answer {
    Done(Outcome),
    ExpiredToken,
}

fn classify(status: u16, reason: &str, after: Option<Duration>) -> Answer {
    Answer::Done(match (status, reason) {
        (200, _) => Outcome::Delivered,
        (410, _) | (400, "BadDeviceToken" | "Unregistered") => Outcome::Gone,
        (403, "ExpiredProviderToken") => return Answer::ExpiredToken,
        (429 | 500..=599, _) => Outcome::Retry { after },
        _ => Outcome::Rejected {
            reason: http::reason(Platform::Apns, status, reason),
        },
    })
}

#[async_trait::async_trait]
impl Sender for ApnsSender {
    fn platform(&self) -> Platform {
        Platform::Apns
    }

    async fn send(&self, target: &Target, wake: Wake) -> Outcome {
        // The token becomes a URL path segment: only the hex Apple issues may get there.
        if target.token.is_empty() || !target.token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Outcome::Rejected {
                reason: "APNs device token is not hex".into(),
            };
        }
        // A bundle id (plus `.voip`-style suffixes): it goes into a header as is.
        if target.topic.is_empty()
            || !target
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Outcome::Rejected {
                reason: "APNs topic is not a bundle id".into(),
            };
        }
        match self.attempt(target, wake, false).await {
            Answer::Done(outcome) => outcome,
            // One fresh token; a second refusal means our key or clock is wrong.
            Answer::ExpiredToken => match self.attempt(target, wake, true).await {
                Answer::Done(outcome) => outcome,
                Answer::ExpiredToken => Outcome::Rejected {
                    reason: "APNs refused a fresh provider token as expired".into(),
                },
            },
        }
    }
}
