//! What the three senders share about talking HTTP to a provider: the client, Retry-After,
//! bounded response bodies and transport failures.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{Outcome, Platform, ProviderError};

/// Provider error bodies are small JSON objects; anything longer is cut, never buffered whole.
const MAX_BODY: usize = 16 * 1024;

/// A client for one provider. Redirects are not followed: a push endpoint that redirects is
/// misbehaving, and following it would let a registered Web Push endpoint steer our requests.
pub(crate) fn client(
    section: &'static str,
    timeout: Duration,
    http2_only: bool,
) -> Result<reqwest::Client, ProviderError> {
    build(section, reqwest_builder(timeout, http2_only))
}

/// A client that reaches only public addresses (for client-supplied endpoints).
pub(crate) fn public_client(
    section: &'static str,
    timeout: Duration,
) -> Result<reqwest::Client, ProviderError> {
    let builder = reqwest_builder(timeout, false)
        .dns_resolver(std::sync::Arc::new(super::public_net::PublicOnly));
    build(section, builder)
}

fn build(
    section: &'static str,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, ProviderError> {
    builder.build().map_err(|e| ProviderError::Client {
        section,
        reason: e.to_string(),
    })
}

fn reqwest_builder(timeout: Duration, http2_only: bool) -> reqwest::ClientBuilder {
    // reqwest uses rustls without a bundled provider; ring is the one Guardyn uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if http2_only {
        builder = builder.http2_prior_knowledge();
    }
    builder
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first [`MAX_BODY`] bytes of a response; a body that fails mid-way is what arrived.
pub(crate) async fn body(mut response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_BODY - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() == MAX_BODY {
            break;
        }
    }
    out
}

/// A request that got no answer is retried later. The error is logged without its URL: APNs
/// URLs carry the device token and a Web Push endpoint is itself a credential.
pub(crate) fn transport_failure(platform: Platform, error: reqwest::Error) -> Outcome {
    let error = error.without_url();
    tracing::warn!(platform = platform.label(), %error, "push request failed");
    Outcome::Retry { after: None }
}

/// A short printable excerpt of a provider's reason string, safe to log and store.
pub(crate) fn reason(platform: Platform, status: u16, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        .take(80)
        .collect();
    if detail.is_empty() {
        format!("{} answered {status}", platform.label())
    } else {
        format!("{} answered {status} {detail}", platform.label())
    }
}

/// Seconds since the Unix epoch (JWT `iat`/`exp`).
pub(crate) fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
