//! Push providers: one [`Sender`] per platform, each speaking its provider's HTTP API (APNs
//! over HTTP/2 with an ES256 provider token, FCM HTTP v1 with an OAuth2 access token from a
//! service-account key, Web Push with RFC 8291 encryption and RFC 8292 VAPID; UnifiedPush is
//! Web Push to a distributor's endpoint). A sender turns one [`Wake`] for one [`Target`] into
//! one provider request and classifies the answer as an [`Outcome`]; retries, coalescing and
//! pruning are the job runner's (`jobs.rs`).
//!
//! Payloads never carry content, sender, group or conversation: only a wake-up.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Push channel kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Platform {
    Apns,
    Fcm,
    /// RFC 8030 Web Push, also UnifiedPush distributors.
    WebPush,
}

impl Platform {
    /// Label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
            Self::WebPush => "web_push",
        }
    }
}

/// Web Push subscription keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushKeys {
    /// Client P-256 ECDH public key, 65 bytes uncompressed.
    pub p256dh: Vec<u8>,
    /// Authentication secret, 16 bytes.
    pub auth: Vec<u8>,
}

impl fmt::Debug for WebPushKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebPushKeys(..)")
    }
}

/// One registered push channel of a device, as a sender needs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub platform: Platform,
    /// APNs device token (hex), FCM registration token, or the Web Push endpoint URL.
    pub token: String,
    /// APNs topic (bundle id) or FCM app id; empty for Web Push.
    pub topic: String,
    /// APNs only: send to the sandbox environment.
    pub apns_sandbox: bool,
    /// Web Push only.
    pub web_push: Option<WebPushKeys>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are credentials for reaching the device: only a hint is logged.
        let hint: String = self
            .token
            .chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        f.debug_struct("Target")
            .field("platform", &self.platform)
            .field("token_hint", &hint)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// A content-free wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    /// Raise a visible notification with generic text (urgent mail, device in ALERT mode and
    /// not muted); otherwise wake silently.
    pub alert: bool,
}

/// What a provider answered to one push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the provider.
    Delivered,
    /// The provider says the token is dead (APNs 410 / Unregistered, FCM UNREGISTERED / 404,
    /// Web Push 404 / 410): delete it.
    Gone,
    /// Try again later (429, 5xx, transport errors); `after` from Retry-After when given.
    Retry { after: Option<Duration> },
    /// Refused for good (bad request, bad credentials): do not retry this push.
    Rejected { reason: String },
}

/// Sends wake-ups to one platform's provider.
#[async_trait::async_trait]
pub trait Sender: Send + Sync + fmt::Debug + 'static {
    fn platform(&self) -> Platform;
    async fn send(&self, target: &Target, wake: Wake) -> Outcome;
}

pub mod apns;
mod ece;
pub mod fcm;
mod http;
mod keys;
pub mod public_net;
pub mod webpush;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use guardyn_common::clock::{Clock, SystemClock};

/// A provider section that cannot be served as configured (start-up error, naming the key).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("notification.{section}.{key}: cannot read {}: {source}", path.display())]
    Read {
        section: &'static str,
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("notification.{section}.{key}: {reason}")]
    Invalid {
        section: &'static str,
        key: &'static str,
        reason: String,
    },
    #[error("notification.{section}: cannot build the HTTP client: {reason}")]
    Client {
        section: &'static str,
        reason: String,
    },
}

/// Provider settings (`notification.apns`, `.fcm`, `.web_push`); a platform left out is not
/// served and token registration for it answers FAILED_PRECONDITION.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    pub apns: Option<apns::ApnsConfig>,
    pub fcm: Option<fcm::FcmConfig>,
    pub web_push: Option<webpush::WebPushConfig>,
}

/// The configured senders, by platform.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    senders: HashMap<Platform, Arc<dyn Sender>>,
}

impl Providers {
    pub fn new(senders: impl IntoIterator<Item = Arc<dyn Sender>>) -> Self {
        Self {
            senders: senders.into_iter().map(|s| (s.platform(), s)).collect(),
        }
    }

    /// The senders of every configured platform, reading their key files now, on the system
    /// clock.
    pub fn from_config(config: &ProvidersConfig) -> Result<Self, ProviderError> {
        Self::from_config_with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Providers::from_config`], with provider tokens timed by `clock` (the service's
    /// clock, so a manual clock in tests ages them).
    pub fn from_config_with_clock(
        config: &ProvidersConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ProviderError> {
        let mut senders: Vec<Arc<dyn Sender>> = Vec::new();
        if let Some(c) = &config.apns {
            senders.push(Arc::new(apns::ApnsSender::new(c, clock.clone())?));
        }
        if let Some(c) = &config.fcm {
            senders.push(Arc::new(fcm::FcmSender::new(c, clock.clone())?));
        }
        if let Some(c) = &config.web_push {
            senders.push(Arc::new(webpush::WebPushSender::new(c, clock)?));
        }
        Ok(Self::new(senders))
    }

    pub fn get(&self, platform: Platform) -> Option<&Arc<dyn Sender>> {
        self.senders.get(&platform)
    }
}
