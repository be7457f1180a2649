//! `Client` calls of the signed client configuration (`guardyn.admin.v1.ClientConfigService`):
//! fetch, verify ([`crate::config_doc`]) and apply.

use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::client_config_service_client::ClientConfigServiceClient;

use crate::client::Client;
use crate::config_doc::{AppliedClientConfig, ConfigRefusal, now_ms, verify_client_config};
use crate::error::SdkError;

impl Client {
    /// The configuration applied last (kept in the state), if any.
    pub async fn client_config(&self) -> Option<AppliedClientConfig> {
        self.inner.state.lock().await.client_config.clone()
    }

    /// Fetch the latest configuration; verify it ([`verify_client_config`] with
    /// [`crate::ClientConfig::client_config_key`]) and apply it (saved in the state). Returns
    /// the configuration in force: the applied one when the server answers "not modified".
    /// `Ok(None)`: nothing was ever published. A refused document changes nothing and is
    /// [`SdkError::ClientConfigRefused`].
    pub async fn fetch_client_config(&self) -> Result<Option<AppliedClientConfig>, SdkError> {
        let pinned = self
            .inner
            .config
            .client_config_key
            .ok_or(SdkError::ClientConfigRefused(ConfigRefusal::NoPinnedKey))?;
        let applied = self.client_config().await;
        let known_version = applied.as_ref().map_or(0, |c| c.version);
        let response = self
            .inner
            .call(
                pb::GetClientConfigRequest { known_version },
                |ch, r| async move {
                    ClientConfigServiceClient::new(ch)
                        .get_client_config(r)
                        .await
                },
            )
            .await;
        let response = match response {
            Ok(r) => r,
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(status.into()),
        };
        if response.not_modified {
            return Ok(applied);
        }
        let signed = response
            .config
            .ok_or_else(|| SdkError::Protocol("GetClientConfig answered without config".into()))?;
        let mut st = self.inner.state.lock().await;
        // Re-read under the lock: a concurrent fetch may have applied a newer one meanwhile.
        let applied_version = st.client_config.as_ref().map_or(0, |c| c.version);
        let config = verify_client_config(&signed, &pinned, applied_version, now_ms())
            .map_err(SdkError::ClientConfigRefused)?;
        st.client_config = Some(config.clone());
        self.inner.persist(&mut st)?;
        Ok(Some(config))
    }

    /// Admin (roles owner, admin): publish `payload_json` (a JSON object) as the next
    /// configuration version, recorded in the audit log with `reason`. Returns the version.
    pub async fn publish_client_config(
        &self,
        payload_json: &str,
        reason: &str,
    ) -> Result<u64, SdkError> {
        let request = pb::PublishClientConfigRequest {
            payload_json: payload_json.to_owned(),
            reason: reason.to_owned(),
        };
        let response = self
            .inner
            .call(request, |ch, r| async move {
                ClientConfigServiceClient::new(ch)
                    .publish_client_config(r)
                    .await
            })
            .await?;
        Ok(response.version)
    }

    /// Admin (roles owner, admin, auditor): one page of the published versions, newest first,
    /// with the signing key to pin (`page_token` empty for the first page).
    pub async fn client_config_versions(
        &self,
        page_size: u32,
        page_token: &str,
    ) -> Result<pb::ListClientConfigVersionsResponse, SdkError> {
        let request = pb::ListClientConfigVersionsRequest {
            page_size,
            page_token: page_token.to_owned(),
        };
        Ok(self
            .inner
            .call(request, |ch, r| async move {
                ClientConfigServiceClient::new(ch)
                    .list_client_config_versions(r)
                    .await
            })
            .await?)
    }
}
