//! Signed client configuration: published versions, their validation and storage, and the
//! documents the edge signs ([`crate::client_config_key`]).
//!
//! Key layout: `client_config/v1/head` = the latest version ([`Head`]),
//! `client_config/v1/version/<u64 BE>` = one published version ([`ConfigVersion`]). A publish
//! writes both in one transaction conditioned on the head it read and on the new version's
//! key being absent, so two concurrent publishes get n and n+1, never two n's.

use guardyn_audit::{AuditKind, AuditRecord};
use guardyn_common::AccountId;
use guardyn_common::events::Payload as _;
use guardyn_common::events::client_config::{CLIENT_CONFIG_PUBLISHED, ClientConfigPublished};
use guardyn_storage::record::{self, Record};
use guardyn_storage::{Direction, KeyRange, Txn};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::error::AdminError;

/// Largest payload (bytes of the normalised JSON).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 65_536;
/// Longest reason (characters).
pub(crate) const MAX_REASON_CHARS: usize = 500;
/// Publish attempts before giving up on contention.
const MAX_ATTEMPTS: u32 = 32;

const HEAD_KEY: &[u8] = b"client_config/v1/head";
const VERSION_PREFIX: &[u8] = b"client_config/v1/version/";

fn version_key(version: u64) -> Vec<u8> {
    let mut k = VERSION_PREFIX.to_vec();
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The latest published version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    latest: u64,
}

impl Record for Head {
    const VERSION: u8 = 1;
}

/// One published configuration version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigVersion {
    pub version: u64,
    pub published_at_ms: u64,
    /// The admin account that published it.
    pub published_by: String,
    pub reason: String,
    /// A JSON object, normalised (compact, keys sorted).
    pub payload_json: String,
}

impl Record for ConfigVersion {
    const VERSION: u8 = 1;
}

/// What the edge encodes and signs for a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Issued {
    pub version: u64,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub payload_json: String,
}

/// A publish request, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewConfig {
    pub payload_json: String,
    pub reason: String,
}

impl NewConfig {
    /// Check the payload is a JSON object within the size limit (normalising it, so equal
    /// configurations are equal bytes) and the reason is given.
    pub(crate) fn parse(payload_json: &str, reason: &str) -> Result<Self, AdminError> {
        if payload_json.len() > MAX_PAYLOAD_BYTES {
            return Err(AdminError::ConfigTooLarge {
                len: payload_json.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let value: serde_json::Value =
            serde_json::from_str(payload_json).map_err(|e| AdminError::ConfigInvalid {
                field: "payload_json",
                why: format!("not JSON: {e}"),
            })?;
        if !value.is_object() {
            return Err(AdminError::ConfigInvalid {
                field: "payload_json",
                why: "must be a JSON object".into(),
            });
        }
        let normalised = value.to_string();
        if normalised.len() > MAX_PAYLOAD_BYTES {
            return Err(AdminError::ConfigTooLarge {
                len: normalised.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(AdminError::ConfigInvalid {
                field: "reason",
                why: format!("required, at most {MAX_REASON_CHARS} characters"),
            });
        }
        Ok(Self {
            payload_json: normalised,
            reason: reason.to_owned(),
        })
    }
}

impl Core {
    /// Store `new` as the next version, record it in the audit log and tell every instance.
    pub(crate) async fn publish_client_config(
        &self,
        actor: AccountId,
        new: NewConfig,
    ) -> Result<ConfigVersion, AdminError> {
        let published = self.store_next_version(actor, new).await?;
        self.audit
            .append(
                AuditRecord::new(
                    AuditKind::ClientConfigPublished,
                    actor.to_string(),
                    None,
                    format!("version {}", published.version),
                )
                .by(actor.to_string(), published.reason.clone()),
            )
            .await?;
        let event = ClientConfigPublished {
            version: published.version,
        };
        // Clients also fetch on start, so a lost notice only delays the change until then.
        if let Err(e) = self
            .bus
            .publish(CLIENT_CONFIG_PUBLISHED, event.encode())
            .await
        {
            tracing::warn!(error = %e, version = published.version, "could not announce a client configuration version");
        }
        Ok(published)
    }

    async fn store_next_version(
        &self,
        actor: AccountId,
        new: NewConfig,
    ) -> Result<ConfigVersion, AdminError> {
        for attempt in 0..MAX_ATTEMPTS {
            let head = self.kv.get(HEAD_KEY).await?;
            let latest = match &head {
                Some(bytes) => record::decode::<Head>(bytes)?.latest,
                None => 0,
            };
            let next = latest + 1;
            let version = ConfigVersion {
                version: next,
                published_at_ms: self.clock.now_ms(),
                published_by: actor.to_string(),
                reason: new.reason.clone(),
                payload_json: new.payload_json.clone(),
            };
            let txn = Txn::new()
                .require_unchanged(HEAD_KEY, head.as_deref())
                .require_absent(version_key(next))
                .put(HEAD_KEY, record::encode(&Head { latest: next }))
                .put(version_key(next), record::encode(&version));
            if self.kv.commit(txn).await?.is_committed() {
                return Ok(version);
            }
            // Another publish won this version: re-read and take the next, after a short
            // jittered pause so racing publishers spread out.
            let pause = 1 + rand::random::<u64>() % (5 * u64::from(attempt + 1));
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        Err(AdminError::ConfigContention)
    }

    /// The latest published version, if any.
    pub(crate) async fn latest_client_config(&self) -> Result<Option<ConfigVersion>, AdminError> {
        let Some(head) = self.kv.get(HEAD_KEY).await? else {
            return Ok(None);
        };
        let latest = record::decode::<Head>(&head)?.latest;
        match self.kv.get(&version_key(latest)).await? {
            Some(bytes) => Ok(Some(record::decode(&bytes)?)),
            None => Err(guardyn_storage::StorageError::Corrupt(format!(
                "client configuration head names version {latest}, which is missing"
            ))
            .into()),
        }
    }

    /// Published versions below `before` (all when `None`), newest first, at most `limit`;
    /// plus the `before` of the next page when more remain.
    pub(crate) async fn client_config_versions(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<ConfigVersion>, Option<u64>), AdminError> {
        let range = match before {
            Some(b) => KeyRange::between(&version_key(0), &version_key(b)),
            None => KeyRange::prefix(VERSION_PREFIX),
        };
        let pairs = self.kv.scan(range, Direction::Reverse, limit + 1).await?;
        let mut versions = pairs
            .iter()
            .map(|p| record::decode::<ConfigVersion>(&p.value))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if versions.len() > limit {
            versions.truncate(limit);
            versions.last().map(|v| v.version)
        } else {
            None
        };
        Ok((versions, next))
    }

    /// The document to sign for `v`: issued now, valid for the configured validity.
    pub(crate) fn issue(&self, v: &ConfigVersion) -> Issued {
        let now = self.clock.now_ms();
        Issued {
            version: v.version,
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(self.cfg.client_config.validity_secs * 1000),
            payload_json: v.payload_json.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn payloads_must_be_bounded_json_objects_and_are_normalised() {
        let ok = NewConfig::parse(r#"{ "b": 1, "a": {"y": true, "x": null} }"#, " why ").unwrap();
        assert_eq!(ok.payload_json, r#"{"a":{"x":null,"y":true},"b":1}"#);
        assert_eq!(ok.reason, "why");
        for bad in ["[1,2]", "\"s\"", "{", "", "12"] {
            assert!(matches!(
                NewConfig::parse(bad, "r"),
                Err(AdminError::ConfigInvalid {
                    field: "payload_json",
                    ..
                })
            ));
        }
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_PAYLOAD_BYTES));
        assert!(matches!(
            NewConfig::parse(&big, "r"),
            Err(AdminError::ConfigTooLarge { .. })
        ));
        for reason in ["", "   ", &"r".repeat(MAX_REASON_CHARS + 1)] {
            assert!(matches!(
                NewConfig::parse("{}", reason),
                Err(AdminError::ConfigInvalid {
                    field: "reason",
                    ..
                })
            ));
        }
    }

    #[test]
    fn stored_records_round_trip() {
        let v = ConfigVersion {
            version: 3,
            published_at_ms: 9,
            published_by: "a".into(),
            reason: "r".into(),
            payload_json: "{}".into(),
        };
        assert_eq!(
            record::decode::<ConfigVersion>(&record::encode(&v)).unwrap(),
            v
        );
        let h = Head { latest: 4 };
        assert_eq!(record::decode::<Head>(&record::encode(&h)).unwrap(), h);
        assert!(version_key(2) < version_key(256));
    }
}
