//! Client security events (seed 004): what a device reports about its own security, checked
//! against the contract's bounds, and the filters admins read them with.

use guardyn_common::ApiError;
use guardyn_common::config::{ConfigError, Validate, key};
use guardyn_common::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};

/// Most detail entries of one event.
pub const MAX_DETAILS: usize = 16;
/// Longest detail key, bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// Longest detail value, bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// `[admin.security_events]`. How long events are kept is policy
/// (`retention.security_events_secs`), not config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityEventSettings {
    /// ReportSecurityEvent calls per device: a compromised or looping client cannot flood the
    /// log.
    pub report_rate: RateLimit,
    /// Seconds between two passes of the retention sweeper (1..=86400).
    pub sweep_interval_secs: u64,
}

impl Default for SecurityEventSettings {
    fn default() -> Self {
        Self {
            report_rate: RateLimit::new(20, 60),
            sweep_interval_secs: 3600,
        }
    }
}

impl Validate for SecurityEventSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.report_rate.validate(&key(prefix, "report_rate"))?;
        if !(1..=86_400).contains(&self.sweep_interval_secs) {
            return Err(ConfigError::new(
                key(prefix, "sweep_interval_secs"),
                "must be 1..=86400 seconds",
            ));
        }
        Ok(())
    }
}

/// What a client noticed. Stored by variant index: new types go at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    FailedUnlock,
    RootDetected,
    CertificatePinningFailure,
    SuspiciousLogin,
    TamperDetected,
}

impl EventType {
    /// The name in exports (the proto enum value without its prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::FailedUnlock => "FAILED_UNLOCK",
            EventType::RootDetected => "ROOT_DETECTED",
            EventType::CertificatePinningFailure => "CERTIFICATE_PINNING_FAILURE",
            EventType::SuspiciousLogin => "SUSPICIOUS_LOGIN",
            EventType::TamperDetected => "TAMPER_DETECTED",
        }
    }
}

/// How serious the client judges it; ordered, so filters can ask for a minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// Received time, a process counter and 4 random bytes: the key suffix, so ids sort by
    /// arrival.
    pub id: [u8; 16],
    pub account_id: String,
    pub device_id: u32,
    pub event_type: EventType,
    pub severity: Severity,
    pub occurred_ms: u64,
    pub received_ms: u64,
    /// In the order the client's map gave them (sorted by key).
    pub details: Vec<(String, String)>,
}

impl SecurityEvent {
    /// The id as clients see it: 32 lowercase hex digits.
    pub fn id_string(&self) -> String {
        hex(&self.id)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An id (or page token) given back by a client.
pub fn parse_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A report as a device sent it, before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub event_type: EventType,
    pub severity: Severity,
    /// 0: now.
    pub occurred_ms: u64,
    pub details: Vec<(String, String)>,
}

impl Report {
    /// Check the details' bounds; every violation is named (`details[<key>]`).
    pub fn validate_details(details: &[(String, String)]) -> Result<(), ApiError> {
        let mut err: Option<ApiError> = None;
        let mut add = |field: String, why: String| {
            err = Some(match err.take() {
                None => ApiError::invalid_field(field, why),
                Some(e) => e.with_violation(field, why),
            });
        };
        if details.len() > MAX_DETAILS {
            add(
                "details".into(),
                format!("at most {MAX_DETAILS} entries, got {}", details.len()),
            );
        }
        for (k, v) in details {
            let name = k.chars().take(MAX_KEY_BYTES).collect::<String>();
            if k.is_empty() || k.len() > MAX_KEY_BYTES {
                add(
                    format!("details[{name}]"),
                    format!("keys must be 1..{MAX_KEY_BYTES} bytes"),
                );
            }
            if v.len() > MAX_VALUE_BYTES {
                add(
                    format!("details[{name}]"),
                    format!("values must be at most {MAX_VALUE_BYTES} bytes"),
                );
            }
        }
        err.map_or(Ok(()), Err)
    }
}

/// What admins filter by; every part given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub account_id: Option<String>,
    /// Empty: every type.
    pub types: Vec<EventType>,
    pub min_severity: Option<Severity>,
    /// Received at or after (ms).
    pub since_ms: u64,
    /// Received before (ms); `None`: no bound.
    pub until_ms: Option<u64>,
}

impl Filter {
    pub fn matches(&self, e: &SecurityEvent) -> bool {
        self.account_id.as_ref().is_none_or(|a| *a == e.account_id)
            && (self.types.is_empty() || self.types.contains(&e.event_type))
            && self.min_severity.is_none_or(|m| e.severity >= m)
            && e.received_ms >= self.since_ms
            && self.until_ms.is_none_or(|u| e.received_ms < u)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ids_round_trip_and_garbage_is_refused() {
        let id = [7u8; 16];
        assert_eq!(parse_id(&hex(&id)), Some(id));
        assert_eq!(parse_id("zz"), None);
        assert_eq!(parse_id(&"é".repeat(16)), None);
    }

    #[test]
    fn each_oversized_detail_is_named() {
        let details = vec![
            ("ok".to_owned(), "fine".to_owned()),
            (String::new(), "v".to_owned()),
            ("big".to_owned(), "x".repeat(MAX_VALUE_BYTES + 1)),
        ];
        let err = Report::validate_details(&details).unwrap_err();
        let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["details[]", "details[big]"]);
        let many: Vec<_> = (0..=MAX_DETAILS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(Report::validate_details(&many).is_err());
        assert!(Report::validate_details(&many[..MAX_DETAILS]).is_ok());
    }
}
