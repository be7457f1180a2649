//! Web Push (RFC 8030) with RFC 8291 message encryption and RFC 8292 VAPID; UnifiedPush
//! distributors speak the same protocol.
//!
//! A UnifiedPush distributor (ntfy, NextPush, ...) hands the app a Web Push endpoint, so a
//! UnifiedPush device registers as a Web Push subscription and this sender serves it: the
//! Google-free Android path.
//!
//! The endpoint URL comes from the client, so it is treated as untrusted: https only (unless
//! `allow_http`, for tests), redirects are not followed and answers are read bounded.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use guardyn_common::clock::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{Outcome, Platform, ProviderError, Sender, Target, Wake, ece, http, keys};

const SECTION: &str = "web_push";
/// VAPID tokens may live up to 24 hours (RFC 8292 §2); ours are signed per request.
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Identical length for both kinds, so the ciphertext size does not tell them apart.
const ALERT_PAYLOAD: &[u8] = br#"{"wake":1,"alert":1}"#;
const SILENT_PAYLOAD: &[u8] = br#"{"wake":1,"alert":0}"#;

/// `notification.web_push`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebPushConfig {
    /// The VAPID private key file (P-256, PKCS#8 or SEC1 PEM). Its public key is the
    /// `applicationServerKey` clients subscribe with.
    pub vapid_key_path: PathBuf,
    /// VAPID contact (`mailto:` or `https:` URI), the JWT `sub`.
    pub subject: String,
    /// How long the push service keeps a wake for an offline device (the `TTL` header).
    pub ttl_secs: u64,
    pub timeout_ms: u64,
    /// Accept `http://` endpoints (loopback fakes in tests); never in production.
    pub allow_http: bool,
}

impl Default for WebPushConfig {
    fn default() -> Self {
        Self {
            vapid_key_path: PathBuf::new(),
            subject: String::new(),
            ttl_secs: 24 * 3600,
            timeout_ms: 10_000,
            allow_http: false,
        }
    }
}

/// Sends wake-ups to Web Push and UnifiedPush endpoints.
pub struct WebPushSender {
    client: reqwest::Client,
    key: EncodingKey,
    /// `k=` of the VAPID header: the public key, base64url.
    public_key: String,
    subject: String,
    ttl: u64,
    allow_http: bool,
    clock: Arc<dyn Clock>,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl fmt::Debug for WebPushSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPushSender")
            .field("public_key", &self.public_key)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl WebPushSender {
    pub fn new(config: &WebPushConfig, clock: Arc<dyn Clock>) -> Result<Self, ProviderError> {
        let invalid = |key, reason: &str| ProviderError::Invalid {
            section: SECTION,
            key,
            reason: reason.into(),
        };
        if !(config.subject.starts_with("mailto:") || config.subject.starts_with("https://")) {
            return Err(invalid("subject", "must be a mailto: or https: URI"));
        }
        if config.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be positive"));
        }
        if config.ttl_secs > 28 * 24 * 3600 {
            return Err(invalid("ttl_secs", "must be at most 28 days"));
        }
        let key = keys::p256(SECTION, "vapid_key_path", &config.vapid_key_path)?;
        Ok(Self {
            // Endpoints come from clients: outside tests only public addresses are reached.
            client: if config.allow_http {
                http::client(SECTION, Duration::from_millis(config.timeout_ms), false)?
            } else {
                http::public_client(SECTION, Duration::from_millis(config.timeout_ms))?
            },
            key: key.signing,
            public_key: B64.encode(&key.public),
            subject: config.subject.clone(),
            ttl: config.ttl_secs,
            allow_http: config.allow_http,
            clock,
        })
    }

    /// `vapid t=<JWT>, k=<public key>` for the endpoint's origin (RFC 8292 §3).
    fn vapid(&self, origin: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            aud: origin,
            exp: http::unix_secs(self.clock.now() + VAPID_LIFETIME),
            sub: &self.subject,
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)?;
        Ok(format!("vapid t={jwt}, k={}", self.public_key))
    }
}

#[async_trait::async_trait]
impl Sender for WebPushSender {
    fn platform(&self) -> Platform {
        Platform::WebPush
    }

    async fn send(&self, target: &Target, wake: Wake) -> Outcome {
        let rejected = |reason: &str| Outcome::Rejected {
            reason: reason.into(),
        };
        let Some(keys) = &target.web_push else {
            return rejected("Web Push subscription has no keys");
        };
        let Ok(endpoint) = reqwest::Url::parse(&target.token) else {
            return rejected("Web Push endpoint is not a URL");
        };
        match endpoint.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return rejected("Web Push endpoint is not https"),
        }
        let literal = endpoint
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<std::net::IpAddr>().ok());
        if !self.allow_http {
            let public = match literal {
                Some(ip) => super::public_net::is_public(ip),
                // Checked here so the push is refused for good, and again by the client's
                // resolver at connect time (a name rebound meanwhile reaches nothing).
                None => super::public_net::resolves_publicly(&endpoint).await,
            };
            if !public {
                return rejected("Web Push endpoint is not a public address");
            }
        }
        let origin = endpoint.origin().ascii_serialization();
        let (payload, urgency) = if wake.alert {
            (ALERT_PAYLOAD, "high")
        } else {
            (SILENT_PAYLOAD, "normal")
        };
        let body = match ece::encrypt(&keys.p256dh, &keys.auth, payload) {
            Ok(body) => body,
            Err(e) => return rejected(&format!("Web Push subscription keys: {e}")),
        };
        let authorization = match self.vapid(&origin) {
            Ok(value) => value,
            Err(e) => return rejected(&format!("cannot sign the VAPID token: {e}")),
        };
        let sent = self
            .client
            .post(endpoint)
            .header("authorization", authorization)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header("ttl", self.ttl.to_string())
            .header("urgency", urgency)
            // Wakes replace each other while queued at the push service (RFC 8030 §5.4).
            .header("topic", "guardyn-wake")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return http::transport_failure(Platform::WebPush, e),
        };
        let status = response.status().as_u16();
        let after = http::retry_after(response.headers(), self.clock.now());
        match status {
            200..=202 => Outcome::Delivered,
            404 | 410 => Outcome::Gone,
            429 | 500..=599 => Outcome::Retry { after },
            _ => Outcome::Rejected {
                reason: http::reason(Platform::WebPush, status, ""),
            },
        }
    }
}
