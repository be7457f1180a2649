//! Admin calls of the policy service: read the policy and its history (roles owner, admin,
//! auditor) and replace it with a new version (roles owner, admin).

use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::policy_service_client::PolicyServiceClient;

use crate::client::Client;
use crate::error::SdkError;

impl Client {
    /// The current policy version (version 0: the server's defaults, never set).
    pub async fn policy(&self) -> Result<pb::PolicyVersion, SdkError> {
        let response = self
            .inner
            .call(pb::GetPolicyRequest {}, |ch, r| async move {
                PolicyServiceClient::new(ch).get_policy(r).await
            })
            .await?;
        Ok(response.current.unwrap_or_default())
    }

    /// Replace the whole policy with `policy` as the next version, recorded in the audit log
    /// with `reason`. Returns the stored version.
    pub async fn set_policy(
        &self,
        policy: pb::Policy,
        reason: &str,
    ) -> Result<pb::PolicyVersion, SdkError> {
        let request = pb::SetPolicyRequest {
            policy: Some(policy),
            reason: reason.to_owned(),
        };
        let response = self
            .inner
            .call(request, |ch, r| async move {
                PolicyServiceClient::new(ch).set_policy(r).await
            })
            .await?;
        Ok(response.current.unwrap_or_default())
    }

    /// One page of the policy's versions, oldest first (`page_token` empty for the first).
    pub async fn policy_versions(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListPolicyVersionsResponse, SdkError> {
        let request = pb::ListPolicyVersionsRequest {
            page_size,
            page_token: page_token.to_owned(),
        };
        Ok(self
            .inner
            .call(request, |ch, r| async move {
                PolicyServiceClient::new(ch).list_policy_versions(r).await
            })
            .await?)
    }
}
