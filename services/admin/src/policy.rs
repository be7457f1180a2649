//! Policies: an admin replaces the whole policy as a new version
//! ([`guardyn_common::policy::save`]), the change is recorded in the audit log with what
//! changed and why, and every process is told on the bus so it applies it at once (a process
//! that misses the event picks it up on its next periodic read).

use guardyn_audit::{AuditKind, AuditRecord};
use guardyn_common::events::Payload;
use guardyn_common::events::policy::{POLICY_CHANGED, PolicyChanged};
use guardyn_common::ids::AccountId;
use guardyn_common::policy::{self, Policy, PolicyVersion};

use crate::core::Core;
use crate::error::AdminError;

/// Longest reason an admin may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Most versions one history page holds.
pub const MAX_PAGE: usize = 100;

impl Core {
    pub async fn current_policy(&self) -> Result<PolicyVersion, AdminError> {
        Ok(policy::load_version(self.kv.as_ref()).await?)
    }

    /// Make `new` (already validated) the next policy version, set by `actor` for `reason`.
    pub async fn set_policy(
        &self,
        actor: AccountId,
        new: Policy,
        reason: &str,
    ) -> Result<PolicyVersion, AdminError> {
        let before = policy::load(self.kv.as_ref()).await?;
        let actor = actor.to_string();
        let saved =
            policy::save(self.kv.as_ref(), new, &actor, reason, self.clock.now_ms()).await?;
        let detail = format!(
            "version {}: {}",
            saved.policy.version,
            changes(&before, &saved.policy)
        );
        self.audit
            .append(
                AuditRecord::new(AuditKind::PolicyChanged, String::new(), None, detail)
                    .by(actor, reason),
            )
            .await?;
        let event = PolicyChanged {
            version: saved.policy.version,
        };
        // The version is stored: a lost event only delays other processes until their next
        // periodic read, so it does not fail the change.
        if let Err(err) = self.bus.publish(POLICY_CHANGED, event.encode()).await {
            tracing::warn!(error = %err, "could not announce the policy change; peers poll it");
        }
        Ok(saved)
    }

    /// Up to `limit` versions after `after`, oldest first, and whether more follow.
    pub async fn policy_history(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<PolicyVersion>, bool), AdminError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut page = policy::history(self.kv.as_ref(), after, limit + 1).await?;
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }
}

/// What differs between two policies, as `field old→new` pairs (for the audit entry).
fn changes(old: &Policy, new: &Policy) -> String {
    let mut out = Vec::new();
    let mut diff = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a}→{b}"));
        }
    };
    diff(
        "password.min_length",
        old.password.min_length.to_string(),
        new.password.min_length.to_string(),
    );
    diff(
        "password.check_breached",
        old.password.check_breached.to_string(),
        new.password.check_breached.to_string(),
    );
    diff(
        "mfa_required",
        old.mfa_required.to_string(),
        new.mfa_required.to_string(),
    );
    diff(
        "max_devices",
        old.max_devices.to_string(),
        new.max_devices.to_string(),
    );
    diff(
        "heartbeat_min_secs",
        old.heartbeat_min_secs.to_string(),
        new.heartbeat_min_secs.to_string(),
    );
    diff(
        "heartbeat_max_secs",
        old.heartbeat_max_secs.to_string(),
        new.heartbeat_max_secs.to_string(),
    );
    diff(
        "max_message_bytes",
        old.max_message_bytes.to_string(),
        new.max_message_bytes.to_string(),
    );
    diff(
        "max_attachment_bytes",
        old.max_attachment_bytes.to_string(),
        new.max_attachment_bytes.to_string(),
    );
    let (a, b) = (&old.retention, &new.retention);
    diff(
        "retention.realtime_secs",
        a.realtime_secs.to_string(),
        b.realtime_secs.to_string(),
    );
    diff(
        "retention.historical_secs",
        a.historical_secs.to_string(),
        b.historical_secs.to_string(),
    );
    diff(
        "retention.audit_secs",
        a.audit_secs.to_string(),
        b.audit_secs.to_string(),
    );
    diff(
        "retention.security_events_secs",
        a.security_events_secs.to_string(),
        b.security_events_secs.to_string(),
    );
    if out.is_empty() {
        "no value changed".to_owned()
    } else {
        out.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_changed_value() {
        let old = Policy::default();
        let mut new = old.clone();
        new.mfa_required = true;
        new.max_devices = 2;
        assert_eq!(
            changes(&old, &new),
            "mfa_required false→true, max_devices 127→2"
        );
        assert_eq!(changes(&old, &old), "no value changed");
    }
}
