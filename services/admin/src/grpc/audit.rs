//! `AuditService` over gRPC: role check, filters parsed at the edge, entries converted back.

use std::sync::Arc;

use guardyn_audit::{AuditEntry, AuditKind, AuditViolation};
use guardyn_common::auth::Role;
use guardyn_common::ids::AccountId;
use guardyn_common::wire::{millis, timestamp};
use guardyn_common::{ApiError, caller};
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::audit_service_server::{AuditService, AuditServiceServer};
use tonic::{Request, Response, Status};

use crate::audit_read::AuditQuery;
use crate::core::Core;

/// Page size when the request gives none.
pub(crate) const DEFAULT_PAGE: u32 = 50;
/// Largest page; bigger requests are capped.
pub(crate) const MAX_PAGE: u32 = 500;

/// The AuditService implementation.
#[derive(Debug, Clone)]
pub struct AuditApi {
    core: Arc<Core>,
}

pub(crate) fn audit_server(core: Arc<Core>) -> AuditServiceServer<AuditApi> {
    AuditServiceServer::new(AuditApi { core })
}

pub(crate) fn page_size(n: u32) -> usize {
    (if n == 0 {
        DEFAULT_PAGE
    } else {
        n.min(MAX_PAGE)
    }) as usize
}

/// The optional account filter `field` (empty: none).
pub(crate) fn account_filter(field: &str, s: &str) -> Result<Option<String>, ApiError> {
    if s.is_empty() {
        return Ok(None);
    }
    Ok(Some(AccountId::parse_field(field, s)?.to_string()))
}

/// `since`/`until` in ms; `until` before `since` is refused.
pub(crate) fn time_range(
    prefix: &str,
    since: Option<&prost_types::Timestamp>,
    until: Option<&prost_types::Timestamp>,
) -> Result<(u64, Option<u64>), ApiError> {
    let since_ms = millis(since);
    let until_ms = until.map(|t| millis(Some(t)));
    if until_ms.is_some_and(|u| u < since_ms) {
        return Err(ApiError::invalid_field(
            format!("{prefix}until"),
            "must not be before since",
        ));
    }
    Ok((since_ms, until_ms))
}

fn query(r: &pb::ListAuditEntriesRequest) -> Result<AuditQuery, ApiError> {
    let kinds = r
        .kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            AuditKind::parse(k)
                .ok_or_else(|| ApiError::invalid_field(format!("kinds[{i}]"), "unknown kind"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (since_ms, until_ms) = time_range("", r.since.as_ref(), r.until.as_ref())?;
    let from_seq = if r.page_token.is_empty() {
        None
    } else {
        Some(
            r.page_token
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    ApiError::invalid_field("page_token", "not a token this server issued")
                })?,
        )
    };
    Ok(AuditQuery {
        account_id: account_filter("account_id", &r.account_id)?,
        actor: account_filter("actor_account_id", &r.actor_account_id)?,
        kinds,
        since_ms,
        until_ms,
        oldest_first: r.order() == pb::ListOrder::OldestFirst,
        from_seq,
        limit: page_size(r.page_size),
    })
}

fn entry_out(e: AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        time: Some(timestamp(e.time_ms)),
        kind: e.kind.as_str().to_owned(),
        account_id: e.account_id,
        device_id: e.device_id.unwrap_or(0),
        actor_account_id: e.actor.unwrap_or_default(),
        reason: e.reason,
        detail: e.detail,
    }
}

fn broken_out(v: &AuditViolation) -> pb::BrokenLink {
    use pb::AuditProblem as P;
    let problem = match v {
        AuditViolation::Missing(_) => P::Missing,
        AuditViolation::Undecodable(_) => P::Undecodable,
        AuditViolation::Altered(_) => P::Altered,
        AuditViolation::BrokenLink(_) => P::BrokenLink,
        AuditViolation::Truncated { .. } => P::Truncated,
        AuditViolation::Storage(_) => P::Unspecified,
    };
    pb::BrokenLink {
        seq: v.seq().unwrap_or(0),
        problem: problem.into(),
        description: v.to_string(),
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let q = query(request.get_ref())?;
        let page = self.core.audit_page(&q).await?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: page.entries.into_iter().map(entry_out).collect(),
            next_page_token: page.next_seq.map(|s| s.to_string()).unwrap_or_default(),
        }))
    }

    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        Ok(Response::new(match self.core.verify_audit().await? {
            Ok(v) => pb::VerifyAuditLogResponse {
                ok: true,
                entries_checked: v.checked,
                first_seq: v.first_seq,
                last_seq: v.last_seq,
                broken: None,
            },
            Err(violation) => {
                tracing::warn!(%violation, "audit chain verification failed");
                pb::VerifyAuditLogResponse {
                    ok: false,
                    entries_checked: 0,
                    first_seq: 0,
                    last_seq: 0,
                    broken: Some(broken_out(&violation)),
                }
            }
        }))
    }
}
