//! `guardyn.internal.v1.CredentialVerifierService`: the in-process credential verifier
//! ([`CredentialCheck`]) for processes of the mesh that serve credential-admitting methods
//! without hosting auth. Registered as an internal service, so only the mesh listener serves
//! it; its callers are services, not devices, hence no `caller()` check here. The answer is the
//! verifier's own, refusals included, so a remote process refuses exactly as this one does.

use std::net::IpAddr;
use std::sync::Arc;

use guardyn_common::auth::{AuthContext, CredentialVerifier as _, TokenScope};
use guardyn_common::error::ApiError;
use guardyn_common::mesh::credentials::MAX_CREDENTIAL_BYTES;
use guardyn_proto::guardyn::internal::v1 as pb;
use pb::credential_verifier_service_server::CredentialVerifierService;
use tonic::{Request, Response, Status};

use crate::credential_verify::CredentialCheck;

/// Longest method path (`/package.Service/Method`).
const MAX_METHOD_BYTES: usize = 256;

/// The internal credential verification API.
#[derive(Clone, Debug)]
pub struct CredentialVerifierApi(pub(crate) Arc<CredentialCheck>);

fn response(ctx: AuthContext) -> pb::VerifyCredentialResponse {
    let scopes = match ctx.scope {
        TokenScope::Credential(scopes) => scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        // The verifier only answers credential contexts; anything else admits nothing.
        TokenScope::Full | TokenScope::MfaEnrollment => Vec::new(),
    };
    pb::VerifyCredentialResponse {
        account_id: ctx.account_id.to_string(),
        device_id: ctx.device_id.get(),
        session_id: ctx.session_id,
        roles: ctx.roles,
        expires_at: ctx.expires_at,
        scopes,
    }
}

#[tonic::async_trait]
impl CredentialVerifierService for CredentialVerifierApi {
    async fn verify_credential(
        &self,
        request: Request<pb::VerifyCredentialRequest>,
    ) -> Result<Response<pb::VerifyCredentialResponse>, Status> {
        let r = request.into_inner();
        if r.credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(ApiError::payload_too_large(
                "credential",
                format!("at most {MAX_CREDENTIAL_BYTES} bytes"),
            )
            .into());
        }
        if !r.method.starts_with('/') || r.method.len() > MAX_METHOD_BYTES {
            return Err(ApiError::invalid_field(
                "method",
                format!("a /package.Service/Method path of at most {MAX_METHOD_BYTES} bytes"),
            )
            .into());
        }
        let remote = match r.remote_address.as_str() {
            "" => None,
            raw => Some(raw.parse::<IpAddr>().map_err(|_| {
                ApiError::invalid_field("remote_address", "an IP address, or empty")
            })?),
        };
        let ctx = self.0.verify(&r.credential, &r.method, remote).await?;
        Ok(Response::new(response(ctx)))
    }
}
