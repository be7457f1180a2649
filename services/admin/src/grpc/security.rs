//! `SecurityEventService` over gRPC: devices report, admins list and export.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use guardyn_common::auth::Role;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_common::wire::{millis, timestamp};
use guardyn_common::{ApiError, caller};
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::security_event_service_server::{
    SecurityEventService, SecurityEventServiceServer,
};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::grpc::audit::{account_filter, page_size, time_range};
use crate::security_events::{EventType, Filter, Report, SecurityEvent, Severity, hex, parse_id};
use crate::security_events_json::line;

/// Largest export chunk before it is sent (whole lines; one line may make it larger).
const CHUNK_BYTES: usize = 64 * 1024;
/// Events fetched per export page.
const EXPORT_PAGE: usize = 500;

/// The SecurityEventService implementation.
#[derive(Debug, Clone)]
pub struct SecurityEventApi {
    core: Arc<Core>,
    reports: Arc<KeyedLimiter<(AccountId, DeviceId)>>,
}

pub(crate) fn security_event_server(
    core: Arc<Core>,
) -> SecurityEventServiceServer<SecurityEventApi> {
    let reports = Arc::new(KeyedLimiter::new(
        "security_events.report_rate",
        core.cfg.security_events.report_rate,
    ));
    SecurityEventServiceServer::new(SecurityEventApi { core, reports })
}

fn type_in(field: &str, v: i32) -> Result<EventType, ApiError> {
    use pb::SecurityEventType as T;
    match T::try_from(v) {
        Ok(T::FailedUnlock) => Ok(EventType::FailedUnlock),
        Ok(T::RootDetected) => Ok(EventType::RootDetected),
        Ok(T::CertificatePinningFailure) => Ok(EventType::CertificatePinningFailure),
        Ok(T::SuspiciousLogin) => Ok(EventType::SuspiciousLogin),
        Ok(T::TamperDetected) => Ok(EventType::TamperDetected),
        Ok(T::Unspecified) | Err(_) => Err(ApiError::invalid_field(field, "unknown event type")),
    }
}

fn type_out(t: EventType) -> pb::SecurityEventType {
    use pb::SecurityEventType as T;
    match t {
        EventType::FailedUnlock => T::FailedUnlock,
        EventType::RootDetected => T::RootDetected,
        EventType::CertificatePinningFailure => T::CertificatePinningFailure,
        EventType::SuspiciousLogin => T::SuspiciousLogin,
        EventType::TamperDetected => T::TamperDetected,
    }
}

/// `None` for UNSPECIFIED (only valid as "no minimum" in a filter).
fn severity_in(field: &str, v: i32) -> Result<Option<Severity>, ApiError> {
    use pb::SecuritySeverity as S;
    match S::try_from(v) {
        Ok(S::Unspecified) => Ok(None),
        Ok(S::Low) => Ok(Some(Severity::Low)),
        Ok(S::Medium) => Ok(Some(Severity::Medium)),
        Ok(S::High) => Ok(Some(Severity::High)),
        Ok(S::Critical) => Ok(Some(Severity::Critical)),
        Err(_) => Err(ApiError::invalid_field(field, "unknown severity")),
    }
}

fn severity_out(s: Severity) -> pb::SecuritySeverity {
    use pb::SecuritySeverity as S;
    match s {
        Severity::Low => S::Low,
        Severity::Medium => S::Medium,
        Severity::High => S::High,
        Severity::Critical => S::Critical,
    }
}

fn filter_in(f: Option<&pb::SecurityEventFilter>) -> Result<Filter, ApiError> {
    let Some(f) = f else {
        return Ok(Filter::default());
    };
    let types = f
        .types
        .iter()
        .enumerate()
        .map(|(i, t)| type_in(&format!("filter.types[{i}]"), *t))
        .collect::<Result<Vec<_>, _>>()?;
    let (since_ms, until_ms) = time_range("filter.", f.since.as_ref(), f.until.as_ref())?;
    Ok(Filter {
        account_id: account_filter("filter.account_id", &f.account_id)?,
        types,
        min_severity: severity_in("filter.min_severity", f.min_severity)?,
        since_ms,
        until_ms,
    })
}

fn event_out(e: SecurityEvent) -> pb::SecurityEvent {
    pb::SecurityEvent {
        event_id: e.id_string(),
        account_id: e.account_id,
        device_id: e.device_id,
        r#type: type_out(e.event_type).into(),
        severity: severity_out(e.severity).into(),
        occurred_at: Some(timestamp(e.occurred_ms)),
        received_at: Some(timestamp(e.received_ms)),
        details: e.details.into_iter().collect(),
    }
}

type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportSecurityEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecurityEventService for SecurityEventApi {
    async fn report_security_event(
        &self,
        request: Request<pb::ReportSecurityEventRequest>,
    ) -> Result<Response<pb::ReportSecurityEventResponse>, Status> {
        let who = caller(&request)?;
        let (account, device) = (who.account_id, who.device_id);
        let r = request.get_ref();
        let event_type = type_in("type", r.r#type)?;
        let severity = severity_in("severity", r.severity)?
            .ok_or_else(|| ApiError::invalid_field("severity", "must be given"))?;
        let mut details: Vec<(String, String)> = r
            .details
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        details.sort();
        Report::validate_details(&details)?;
        self.reports.check(&(account, device))?;
        let event = self
            .core
            .report_security_event(
                account,
                device,
                Report {
                    event_type,
                    severity,
                    occurred_ms: millis(r.occurred_at.as_ref()),
                    details,
                },
            )
            .await?;
        Ok(Response::new(pb::ReportSecurityEventResponse {
            event_id: event.id_string(),
        }))
    }

    async fn list_security_events(
        &self,
        request: Request<pb::ListSecurityEventsRequest>,
    ) -> Result<Response<pb::ListSecurityEventsResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let r = request.get_ref();
        let filter = filter_in(r.filter.as_ref())?;
        let cursor = if r.page_token.is_empty() {
            None
        } else {
            Some(parse_id(&r.page_token).ok_or_else(|| {
                ApiError::invalid_field("page_token", "not a token this server issued")
            })?)
        };
        let newest_first = r.order() != pb::ListOrder::OldestFirst;
        let page = self
            .core
            .security_events_page(&filter, newest_first, cursor, page_size(r.page_size))
            .await?;
        Ok(Response::new(pb::ListSecurityEventsResponse {
            events: page.events.into_iter().map(event_out).collect(),
            next_page_token: page.next.map(|c| hex(&c)).unwrap_or_default(),
        }))
    }

    type ExportSecurityEventsStream = ExportStream;

    async fn export_security_events(
        &self,
        request: Request<pb::ExportSecurityEventsRequest>,
    ) -> Result<Response<Self::ExportSecurityEventsStream>, Status> {
        let who = caller(&request)?;
        who.require_role(Role::READ)?;
        let auth = self.core.ctx.verifier.guard_stream(who);
        let filter = filter_in(request.get_ref().filter.as_ref())?;
        let core = self.core.clone();
        // State: where the next page starts, or `None` once the last page was sent.
        let chunks = futures::stream::unfold(Some(None), move |cursor| {
            let (core, filter) = (core.clone(), filter.clone());
            async move {
                let cursor = cursor?;
                let mut chunk = String::new();
                let mut at = cursor;
                loop {
                    let page = match core
                        .security_events_page(&filter, false, at, EXPORT_PAGE)
                        .await
                    {
                        Ok(p) => p,
                        Err(e) => return Some((Err(Status::from(e)), None)),
                    };
                    let mut cut = None;
                    for e in &page.events {
                        chunk.push_str(&line(e));
                        if chunk.len() >= CHUNK_BYTES {
                            cut = Some(e.id);
                            break;
                        }
                    }
                    at = cut.or(page.next);
                    if at.is_none() || cut.is_some() {
                        break;
                    }
                }
                if chunk.is_empty() {
                    return None;
                }
                let next = at.map(Some);
                Some((
                    Ok(pb::ExportSecurityEventsResponse {
                        chunk: chunk.into_bytes(),
                    }),
                    next,
                ))
            }
        });
        Ok(Response::new(Box::pin(auth.wrap(chunks))))
    }
}
