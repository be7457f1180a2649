//! Operators' system notices (`guardyn.admin.v1.SystemNoticeService`): the notices in force for
//! this account, which a device reads after being offline (the Listen stream only carries the
//! ones sent while it is open), and sending one (owner or admin).

use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::system_notice_service_client::SystemNoticeServiceClient;

use crate::client::Client;
use crate::error::SdkError;
use crate::events::SystemNotice;

impl Client {
    /// The notices in force addressed to this account or to every account, newest first;
    /// one page (`page_token` empty for the first), with the token of the next page (empty
    /// after the last).
    pub async fn system_notices(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<SystemNotice>, String), SdkError> {
        let request = pb::ListSystemNoticesRequest {
            page_size,
            page_token: page_token.to_owned(),
        };
        let response = self
            .inner
            .call(request, |ch, r| async move {
                SystemNoticeServiceClient::new(ch)
                    .list_system_notices(r)
                    .await
            })
            .await?;
        Ok((
            response
                .notices
                .into_iter()
                .map(SystemNotice::from)
                .collect(),
            response.next_page_token,
        ))
    }

    /// Send a notice (roles owner, admin); the request names its audience, severity, text,
    /// reason and optional expiry.
    pub async fn send_system_notice(
        &self,
        request: pb::SendSystemNoticeRequest,
    ) -> Result<pb::SendSystemNoticeResponse, SdkError> {
        self.inner
            .call(request, |ch, r| async move {
                SystemNoticeServiceClient::new(ch)
                    .send_system_notice(r)
                    .await
            })
            .await
            .map_err(SdkError::from)
    }
}
