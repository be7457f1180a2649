//! `PolicyService` over gRPC: role checks, the wire policy to the domain one (every value
//! range-checked, each bad one reported as its own field violation) and back.

use std::sync::Arc;

use guardyn_common::auth::Role;
use guardyn_common::policy::{PasswordPolicy, Policy, PolicyVersion, Retention};
use guardyn_common::wire::timestamp;
use guardyn_common::{ApiError, Reason, caller};
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::policy_service_server::{
    PolicyService, PolicyServiceServer,
};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::policy::{MAX_PAGE, MAX_REASON_CHARS};

const DEFAULT_PAGE: u32 = 20;

/// The PolicyService implementation.
#[derive(Debug, Clone)]
pub struct PolicyApi {
    core: Arc<Core>,
}

pub(crate) fn policy_server(core: Arc<Core>) -> PolicyServiceServer<PolicyApi> {
    PolicyServiceServer::new(PolicyApi { core })
}

fn policy_out(p: &Policy) -> pb::Policy {
    pb::Policy {
        version: p.version,
        password: Some(pb::PasswordPolicy {
            min_length: p.password.min_length,
            check_breached: p.password.check_breached,
        }),
        mfa_required: p.mfa_required,
        max_devices: p.max_devices,
        heartbeat_min_secs: p.heartbeat_min_secs,
        heartbeat_max_secs: p.heartbeat_max_secs,
        max_message_bytes: p.max_message_bytes,
        max_attachment_bytes: p.max_attachment_bytes,
        retention: Some(pb::RetentionPolicy {
            realtime_secs: p.retention.realtime_secs,
            historical_secs: p.retention.historical_secs,
            audit_secs: p.retention.audit_secs,
            security_events_secs: p.retention.security_events_secs,
        }),
    }
}

fn version_out(v: PolicyVersion) -> pb::PolicyVersion {
    pb::PolicyVersion {
        policy: Some(policy_out(&v.policy)),
        set_by: v.set_by.unwrap_or_default(),
        reason: v.reason,
        set_at: (v.set_at_ms > 0).then(|| timestamp(v.set_at_ms)),
    }
}

/// The requested policy and reason, or INVALID_ARGUMENT with one violation per bad field.
fn parse_set(r: &pb::SetPolicyRequest) -> Result<(Policy, String), ApiError> {
    let mut violations = Vec::new();
    let missing = |field: &str| guardyn_common::error::FieldViolation {
        field: field.to_owned(),
        description: "required".to_owned(),
    };
    let reason = r.reason.trim();
    if reason.is_empty() {
        violations.push(missing("reason"));
    } else if reason.chars().count() > MAX_REASON_CHARS {
        violations.push(guardyn_common::error::FieldViolation {
            field: "reason".to_owned(),
            description: format!("at most {MAX_REASON_CHARS} characters"),
        });
    }
    let parsed = match &r.policy {
        None => {
            violations.push(missing("policy"));
            None
        }
        Some(p) => {
            if p.password.is_none() {
                violations.push(missing("policy.password"));
            }
            if p.retention.is_none() {
                violations.push(missing("policy.retention"));
            }
            match (&p.password, &p.retention) {
                (Some(pw), Some(ret)) => {
                    let policy = Policy {
                        version: 0,
                        password: PasswordPolicy {
                            min_length: pw.min_length,
                            check_breached: pw.check_breached,
                        },
                        mfa_required: p.mfa_required,
                        max_devices: p.max_devices,
                        heartbeat_min_secs: p.heartbeat_min_secs,
                        heartbeat_max_secs: p.heartbeat_max_secs,
                        max_message_bytes: p.max_message_bytes,
                        max_attachment_bytes: p.max_attachment_bytes,
                        retention: Retention {
                            realtime_secs: ret.realtime_secs,
                            historical_secs: ret.historical_secs,
                            audit_secs: ret.audit_secs,
                            security_events_secs: ret.security_events_secs,
                        },
                    };
                    violations.extend(policy.violations("policy"));
                    Some(policy)
                }
                _ => None,
            }
        }
    };
    match parsed {
        Some(policy) if violations.is_empty() => Ok((policy, reason.to_owned())),
        _ => {
            let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
            let mut err = ApiError::new(
                Reason::InvalidArgument,
                format!("invalid policy: {}", fields.join(", ")),
            );
            for v in violations {
                err = err.with_violation(v.field, v.description);
            }
            Err(err)
        }
    }
}

fn page_token(token: &str) -> Result<u64, ApiError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::invalid_field("page_token", "not a token this server issued"))
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let current = self.core.current_policy().await?;
        Ok(Response::new(pb::GetPolicyResponse {
            current: Some(version_out(current)),
        }))
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let who = caller(&request)?;
        who.require_role(Role::MANAGE)?;
        let (policy, reason) = parse_set(request.get_ref())?;
        let saved = self
            .core
            .set_policy(who.account_id, policy, &reason)
            .await?;
        Ok(Response::new(pb::SetPolicyResponse {
            current: Some(version_out(saved)),
        }))
    }

    async fn list_policy_versions(
        &self,
        request: Request<pb::ListPolicyVersionsRequest>,
    ) -> Result<Response<pb::ListPolicyVersionsResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let r = request.get_ref();
        let size = match r.page_size {
            0 => DEFAULT_PAGE as usize,
            n if n as usize <= MAX_PAGE => n as usize,
            _ => {
                return Err(
                    ApiError::invalid_field("page_size", format!("at most {MAX_PAGE}")).into(),
                );
            }
        };
        let after = page_token(&r.page_token)?;
        let (versions, more) = self.core.policy_history(after, size).await?;
        let next_page_token = match versions.last() {
            Some(last) if more => last.policy.version.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListPolicyVersionsResponse {
            versions: versions.into_iter().map(version_out).collect(),
            next_page_token,
        }))
    }
}
