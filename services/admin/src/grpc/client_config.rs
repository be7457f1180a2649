//! `ClientConfigService` over gRPC: role checks, request validation, and the one place a
//! document is encoded (protobuf `ClientConfigDocument`) and signed, so clients verify exactly
//! the bytes they decode.

use std::sync::Arc;

use guardyn_common::auth::Role;
use guardyn_common::{ApiError, caller};
use guardyn_proto::guardyn::admin::v1::client_config_service_server::{
    ClientConfigService, ClientConfigServiceServer,
};
use guardyn_proto::guardyn::admin::v1::{
    ClientConfigDocument, ClientConfigVersion, GetClientConfigRequest, GetClientConfigResponse,
    ListClientConfigVersionsRequest, ListClientConfigVersionsResponse, PublishClientConfigRequest,
    PublishClientConfigResponse, SignedClientConfig,
};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::client_config::{ConfigVersion, NewConfig};
use crate::client_config_key::ConfigSigner;
use crate::core::Core;
use crate::error::AdminError;

/// The ClientConfigService implementation.
#[derive(Debug, Clone)]
pub struct ClientConfigApi {
    core: Arc<Core>,
    signer: Arc<ConfigSigner>,
}

pub(crate) fn client_config_server(
    core: Arc<Core>,
    signer: Arc<ConfigSigner>,
) -> ClientConfigServiceServer<ClientConfigApi> {
    ClientConfigServiceServer::new(ClientConfigApi { core, signer })
}

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

impl ClientConfigApi {
    fn signed(&self, v: &ConfigVersion) -> SignedClientConfig {
        let issued = self.core.issue(v);
        let document = ClientConfigDocument {
            version: issued.version,
            issued_at_ms: issued.issued_at_ms,
            expires_at_ms: issued.expires_at_ms,
            key_id: self.signer.key_id().to_owned(),
            payload_json: issued.payload_json,
        }
        .encode_to_vec();
        SignedClientConfig {
            signature: self.signer.sign(&document).to_vec(),
            document,
            key_id: self.signer.key_id().to_owned(),
        }
    }
}

fn page_token(token: &str) -> Result<Option<u64>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .map(Some)
        .ok_or_else(|| ApiError::invalid_field("page_token", "not a token this server issued"))
}

fn version_out(v: ConfigVersion) -> ClientConfigVersion {
    ClientConfigVersion {
        version: v.version,
        published_at: Some(timestamp(v.published_at_ms)),
        published_by: v.published_by,
        reason: v.reason,
        payload_json: v.payload_json,
    }
}

fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

#[tonic::async_trait]
impl ClientConfigService for ClientConfigApi {
    async fn publish_client_config(
        &self,
        request: Request<PublishClientConfigRequest>,
    ) -> Result<Response<PublishClientConfigResponse>, Status> {
        let who = caller(&request)?;
        who.require_role(Role::MANAGE)?;
        let actor = who.account_id;
        let r = request.get_ref();
        let new = NewConfig::parse(&r.payload_json, &r.reason)?;
        let published = self.core.publish_client_config(actor, new).await?;
        Ok(Response::new(PublishClientConfigResponse {
            version: published.version,
            config: Some(self.signed(&published)),
        }))
    }

    async fn get_client_config(
        &self,
        request: Request<GetClientConfigRequest>,
    ) -> Result<Response<GetClientConfigResponse>, Status> {
        caller(&request)?;
        let known = request.get_ref().known_version;
        let latest = self
            .core
            .latest_client_config()
            .await?
            .ok_or(AdminError::ConfigNotPublished)?;
        if known == latest.version {
            return Ok(Response::new(GetClientConfigResponse {
                not_modified: true,
                config: None,
            }));
        }
        Ok(Response::new(GetClientConfigResponse {
            not_modified: false,
            config: Some(self.signed(&latest)),
        }))
    }

    async fn list_client_config_versions(
        &self,
        request: Request<ListClientConfigVersionsRequest>,
    ) -> Result<Response<ListClientConfigVersionsResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let r = request.get_ref();
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            _ => {
                return Err(
                    ApiError::invalid_field("page_size", format!("at most {MAX_PAGE}")).into(),
                );
            }
        };
        let before = page_token(&r.page_token)?;
        let (versions, next) = self
            .core
            .client_config_versions(before, size as usize)
            .await?;
        Ok(Response::new(ListClientConfigVersionsResponse {
            versions: versions.into_iter().map(version_out).collect(),
            next_page_token: next.map(|v| v.to_string()).unwrap_or_default(),
            key_id: self.signer.key_id().to_owned(),
            public_key: self.signer.public_key().to_vec(),
        }))
    }
}
