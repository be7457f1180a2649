//! `guardyn.admin.v1.CredentialService`: API credentials, managed by owners and admins. Served
//! by auth, which holds the pepper their hashes are keyed with (see `credentials.rs`).

use std::sync::Arc;

use guardyn_common::auth::{Role, caller};
use guardyn_common::error::ApiError;
use guardyn_common::ids::AccountId;
use guardyn_common::wire::timestamp;
use guardyn_proto::guardyn::admin::v1 as pb;
use pb::credential_service_server::CredentialService;
use tonic::{Request, Response, Status};

use crate::credentials::{CredentialRecord, Credentials};

/// The credential management API.
#[derive(Clone, Debug)]
pub struct CredentialApi(pub(crate) Arc<Credentials>);

fn view(r: &CredentialRecord) -> pb::Credential {
    let at = |s: u64| timestamp(s.saturating_mul(1000));
    pb::Credential {
        credential_id: r.id.clone(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        issued_by: r.issued_by.clone(),
        created_at: Some(at(r.created_s)),
        expires_at: Some(at(r.expires_s)),
        revoked_at: r.revoked_s.map(at),
        secret_set_at: Some(at(r.secret_set_s)),
    }
}

/// The calling admin, after the role check.
fn admin<T>(request: &Request<T>) -> Result<AccountId, ApiError> {
    let who = caller(request)?;
    who.require_role(Role::MANAGE)?;
    Ok(who.account_id)
}

/// Credential ids are UUIDs: anything else is a field violation, like any account id.
fn credential_id(raw: &str) -> Result<String, ApiError> {
    Ok(AccountId::parse_field("credential_id", raw)?.to_string())
}

#[tonic::async_trait]
impl CredentialService for CredentialApi {
    async fn issue_credential(
        &self,
        request: Request<pb::IssueCredentialRequest>,
    ) -> Result<Response<pb::IssueCredentialResponse>, Status> {
        let actor = admin(&request)?;
        let r = request.into_inner();
        let (record, secret) = self
            .0
            .issue(actor, &r.name, &r.scopes, r.valid_for_secs)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::IssueCredentialResponse {
            credential: Some(view(&record)),
            secret: secret.to_string(),
        }))
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        admin(&request)?;
        let records = self.0.list().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListCredentialsResponse {
            credentials: records.iter().map(view).collect(),
        }))
    }

    async fn rotate_credential(
        &self,
        request: Request<pb::RotateCredentialRequest>,
    ) -> Result<Response<pb::RotateCredentialResponse>, Status> {
        let actor = admin(&request)?;
        let id = credential_id(&request.get_ref().credential_id)?;
        let (record, secret) = self.0.rotate(actor, &id).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::RotateCredentialResponse {
            credential: Some(view(&record)),
            secret: secret.to_string(),
        }))
    }

    async fn revoke_credential(
        &self,
        request: Request<pb::RevokeCredentialRequest>,
    ) -> Result<Response<pb::RevokeCredentialResponse>, Status> {
        let actor = admin(&request)?;
        let id = credential_id(&request.get_ref().credential_id)?;
        let record = self.0.revoke(actor, &id).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::RevokeCredentialResponse {
            credential: Some(view(&record)),
        }))
    }
}
