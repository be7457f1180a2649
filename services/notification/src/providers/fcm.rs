//! FCM HTTP v1 with an OAuth2 access token from a service-account key.
//!
//! The access token comes from the JWT-bearer grant (RFC 7523): an RS256 assertion signed with
//! the service account's key, posted to its `token_uri`. It is cached until shortly before it
//! expires, shared by every send, and fetched again once when FCM answers 401. Written on
//! jsonwebtoken and reqwest: the Google auth crates bring their own HTTP and TLS stacks.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use guardyn_common::clock::Clock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{Outcome, Platform, ProviderError, Sender, Target, Wake, http, keys};

const SECTION: &str = "fcm";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Assertion lifetime; Google accepts at most an hour.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached access token is replaced this long before it expires.
const EARLY_REFRESH: Duration = Duration::from_secs(60);
/// FCM's longest message lifetime.
const MAX_TTL_SECS: u64 = 28 * 24 * 3600;

/// `notification.fcm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON file (client_email, private_key, token_uri, project_id).
    pub service_account_path: PathBuf,
    /// FCM API base URL.
    pub endpoint: String,
    /// How long FCM keeps a wake for an offline device.
    pub ttl_secs: u64,
    pub timeout_ms: u64,
}

impl Default for FcmConfig {
    fn default() -> Self {
        Self {
            service_account_path: PathBuf::new(),
            endpoint: "https://fcm.googleapis.com".into(),
            ttl_secs: 24 * 3600,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
    project_id: String,
}

/// Sends wake-ups through FCM.
pub struct FcmSender {
    client: reqwest::Client,
    key: EncodingKey,
    key_id: Option<String>,
    client_email: String,
    token_uri: String,
    send_url: String,
    ttl: String,
    clock: Arc<dyn Clock>,
    // Held across the token exchange, so concurrent sends wait for one exchange.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

struct AccessToken {
    value: String,
    refresh_at: SystemTime,
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorStatus,
}

#[derive(Deserialize, Default)]
struct ErrorStatus {
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default, rename = "errorCode")]
    error_code: String,
}

impl fmt::Debug for FcmSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmSender")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("send_url", &self.send_url)
            .finish_non_exhaustive()
    }
}

impl FcmSender {
    pub fn new(config: &FcmConfig, clock: Arc<dyn Clock>) -> Result<Self, ProviderError> {
        let invalid = |key, reason: String| ProviderError::Invalid {
            section: SECTION,
            key,
            reason,
        };
        if !(config.endpoint.starts_with("https://") || config.endpoint.starts_with("http://")) {
            return Err(invalid("endpoint", "must be an http(s) URL".into()));
        }
        if config.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be positive".into()));
        }
        if config.ttl_secs > MAX_TTL_SECS {
            return Err(invalid("ttl_secs", "must be at most 28 days".into()));
        }
        let path = &config.service_account_path;
        let text = keys::read(SECTION, "service_account_path", path)?;
        let account: ServiceAccount = serde_json::from_str(&text).map_err(|e| {
            invalid(
                "service_account_path",
                format!("{}: not a service-account file: {e}", path.display()),
            )
        })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|_| {
            invalid(
                "service_account_path",
                format!("{}: private_key is not an RSA key in PEM", path.display()),
            )
        })?;
        // The project id becomes a URL path segment.
        if account.project_id.is_empty()
            || !account
                .project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "service_account_path",
                format!("{}: project_id is not a project id", path.display()),
            ));
        }
        Ok(Self {
            client: http::client(SECTION, Duration::from_millis(config.timeout_ms), false)?,
            key,
            key_id: account.private_key_id.filter(|k| !k.is_empty()),
            client_email: account.client_email,
            token_uri: account.token_uri,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                config.endpoint.trim_end_matches('/'),
                account.project_id
            ),
            ttl: format!("{}s", config.ttl_secs),
            clock,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The cached access token, or a fresh one from the token endpoint.
    async fn access_token(&self, stale: Option<&str>) -> Result<String, Outcome> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now();
        if let Some(token) = cached.as_ref()
            && now < token.refresh_at
            && stale != Some(token.value.as_str())
        {
            return Ok(token.value.clone());
        }
        let fresh = self.exchange(now).await?;
        let value = fresh.access_token.clone();
        // Google's tokens live an hour; a larger claim is not trusted past a day.
        let lifetime = Duration::from_secs(fresh.expires_in.min(24 * 3600));
        let early = EARLY_REFRESH.min(lifetime / 2);
        *cached = Some(AccessToken {
            value: fresh.access_token,
            refresh_at: now + lifetime - early,
        });
        Ok(value)
    }

    /// The JWT-bearer grant (RFC 7523 §2.1).
    async fn exchange(&self, now: SystemTime) -> Result<TokenResponse, Outcome> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let iat = http::unix_secs(now);
        let claims = Assertion {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        };
        let assertion =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| Outcome::Rejected {
                reason: format!("cannot sign the FCM token assertion: {e}"),
            })?;
        let sent = self
            .client
            .post(&self.token_uri)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)])
            .send()
            .await;
        let response = sent.map_err(|e| http::transport_failure(Platform::Fcm, e))?;
        let status = response.status().as_u16();
        let after = http::retry_after(response.headers(), self.clock.now());
        let body = http::body(response).await;
        match status {
            200 => serde_json::from_slice::<TokenResponse>(&body).map_err(|_| {
                tracing::warn!("FCM token endpoint answered 200 without a token");
                Outcome::Retry { after: None }
            }),
            429 | 500..=599 => Err(Outcome::Retry { after }),
            _ => Err(Outcome::Rejected {
                reason: format!("FCM token endpoint answered {status}"),
            }),
        }
    }

    async fn attempt(&self, target: &Target, wake: Wake, stale: Option<&str>) -> Answer {
        let token = match self.access_token(stale).await {
            Ok(token) => token,
            Err(outcome) => return Answer::Done(outcome),
        };
        // Data-only: the app decides what to show, and nothing but the wake marker is sent.
        let message = serde_json::json!({
            "message": {
                "token": target.token,
                "data": { "guardyn": "wake", "alert": if wake.alert { "1" } else { "0" } },
                "android": {
                    "priority": if wake.alert { "HIGH" } else { "NORMAL" },
                    "ttl": self.ttl,
                    "collapse_key": "guardyn-wake",
                },
            }
        });
        let sent = self
            .client
            .post(&self.send_url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(message.to_string())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Answer::Done(http::transport_failure(Platform::Fcm, e)),
        };
        let status = response.status().as_u16();
        let after = http::retry_after(response.headers(), self.clock.now());
        let error = serde_json::from_slice::<ErrorBody>(&http::body(response).await)
            .unwrap_or_default()
            .error;
        if status == 401 {
            return Answer::Unauthenticated(token);
        }
        Answer::Done(classify(status, &error, after))
    }
}

enum Answer {
    Done(Outcome),
    /// FCM refused this access token.
    Unauthenticated(String),
}

fn classify(status: u16, error: &ErrorStatus, after: Option<Duration>) -> Outcome {
    let codes = || {
        std::iter::once(error.status.as_str())
            .chain(error.details.iter().map(|d| d.error_code.as_str()))
    };
    let any = |wanted: &[&str]| codes().any(|c| wanted.contains(&c));
    if status == 200 {
        Outcome::Delivered
    } else if status == 404 || any(&["UNREGISTERED", "NOT_FOUND"]) {
        Outcome::Gone
    } else if status == 429
        || (500..=599).contains(&status)
        || any(&["UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"])
    {
        Outcome::Retry { after }
    } else {
        Outcome::Rejected {
            reason: http::reason(Platform::Fcm, status, &error.status),
        }
    }
}

#[async_trait::async_trait]
impl Sender for FcmSender {
    fn platform(&self) -> Platform {
        Platform::Fcm
    }

    async fn send(&self, target: &Target, wake: Wake) -> Outcome {
        if target.token.is_empty() {
            return Outcome::Rejected {
                reason: "FCM registration token is empty".into(),
            };
        }
        match self.attempt(target, wake, None).await {
            Answer::Done(outcome) => outcome,
            // Revoked or expired early: one fresh token, then FCM's word is final.
            Answer::Unauthenticated(stale) => {
                match self.attempt(target, wake, Some(&stale)).await {
                    Answer::Done(outcome) => outcome,
                    Answer::Unauthenticated(_) => Outcome::Rejected {
                        reason: "FCM refused a fresh access token".into(),
                    },
                }
            }
        }
    }
}
