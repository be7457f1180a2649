//! Admin calls of the credential service (roles owner, admin): issue, list, rotate and revoke
//! API credentials for bots and integrations.

use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::credential_service_client::CredentialServiceClient;

use crate::client::Client;
use crate::error::SdkError;

impl Client {
    /// Issue a credential; the response's `secret` is the bearer value, shown only now.
    pub async fn issue_credential(
        &self,
        name: &str,
        scopes: Vec<String>,
        valid_for_secs: u64,
    ) -> Result<pb::IssueCredentialResponse, SdkError> {
        let request = pb::IssueCredentialRequest {
            name: name.to_owned(),
            scopes,
            valid_for_secs,
        };
        self.inner
            .call(request, |ch, r| async move {
                CredentialServiceClient::new(ch).issue_credential(r).await
            })
            .await
            .map_err(SdkError::from)
    }

    /// Every credential, revoked ones included (never a secret).
    pub async fn credentials(&self) -> Result<Vec<pb::Credential>, SdkError> {
        let response = self
            .inner
            .call(pb::ListCredentialsRequest {}, |ch, r| async move {
                CredentialServiceClient::new(ch).list_credentials(r).await
            })
            .await?;
        Ok(response.credentials)
    }

    /// A new secret for the credential; the old one is refused from now on.
    pub async fn rotate_credential(
        &self,
        credential_id: &str,
    ) -> Result<pb::RotateCredentialResponse, SdkError> {
        let request = pb::RotateCredentialRequest {
            credential_id: credential_id.to_owned(),
        };
        self.inner
            .call(request, |ch, r| async move {
                CredentialServiceClient::new(ch).rotate_credential(r).await
            })
            .await
            .map_err(SdkError::from)
    }

    /// Revoke the credential, on every instance at once.
    pub async fn revoke_credential(&self, credential_id: &str) -> Result<pb::Credential, SdkError> {
        let request = pb::RevokeCredentialRequest {
            credential_id: credential_id.to_owned(),
        };
        let response = self
            .inner
            .call(request, |ch, r| async move {
                CredentialServiceClient::new(ch).revoke_credential(r).await
            })
            .await?;
        Ok(response.credential.unwrap_or_default())
    }
}
