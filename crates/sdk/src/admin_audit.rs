//! Admin reads of the audit log and of client security events (roles owner, admin, auditor),
//! and a device's own security-event reports (any signed-in device).

use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::audit_service_client::AuditServiceClient;
use guardyn_proto::guardyn::admin::v1::security_event_service_client::SecurityEventServiceClient;

use crate::client::Client;
use crate::error::SdkError;

impl Client {
    /// One page of audit entries matching `request`'s filters.
    pub async fn audit_entries(
        &self,
        request: pb::ListAuditEntriesRequest,
    ) -> Result<pb::ListAuditEntriesResponse, SdkError> {
        Ok(self
            .inner
            .call(request, |ch, r| async move {
                AuditServiceClient::new(ch).list_audit_entries(r).await
            })
            .await?)
    }

    /// Verify the audit chain on the server (a broken chain is an answer, not an error).
    pub async fn verify_audit_log(&self) -> Result<pb::VerifyAuditLogResponse, SdkError> {
        Ok(self
            .inner
            .call(pb::VerifyAuditLogRequest {}, |ch, r| async move {
                AuditServiceClient::new(ch).verify_audit_log(r).await
            })
            .await?)
    }

    /// Report a security event seen on this device.
    pub async fn report_security_event(
        &self,
        request: pb::ReportSecurityEventRequest,
    ) -> Result<String, SdkError> {
        let response = self
            .inner
            .call(request, |ch, r| async move {
                SecurityEventServiceClient::new(ch)
                    .report_security_event(r)
                    .await
            })
            .await?;
        Ok(response.event_id)
    }

    /// One page of security events matching `request`'s filter.
    pub async fn security_events(
        &self,
        request: pb::ListSecurityEventsRequest,
    ) -> Result<pb::ListSecurityEventsResponse, SdkError> {
        Ok(self
            .inner
            .call(request, |ch, r| async move {
                SecurityEventServiceClient::new(ch)
                    .list_security_events(r)
                    .await
            })
            .await?)
    }

    /// Every security event matching `filter` as a stream of JSON-lines chunks.
    pub async fn export_security_events(
        &self,
        filter: pb::SecurityEventFilter,
    ) -> Result<tonic::Streaming<pb::ExportSecurityEventsResponse>, SdkError> {
        let request = pb::ExportSecurityEventsRequest {
            filter: Some(filter),
        };
        Ok(self
            .inner
            .call(request, |ch, r| async move {
                SecurityEventServiceClient::new(ch)
                    .export_security_events(r)
                    .await
            })
            .await?)
    }
}
