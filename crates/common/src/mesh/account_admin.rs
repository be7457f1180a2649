//! [`AccountAdmin`] across processes: a client of `guardyn.internal.v1.AccountAdminService`,
//! which the process hosting auth serves on its mesh listener, and the one mapping of the
//! seam's errors to and from a status (used by both ends).
//!
//! Only the reads (list, get, sessions) are retried on `UNAVAILABLE`
//! ([`retry_idempotent`]): a mutation that timed out may have taken effect, and repeating a
//! suspension or a session termination would audit and revoke twice. Each attempt carries
//! the mesh call deadline.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use guardyn_proto::guardyn::internal::v1 as pb;
use pb::account_admin_service_client::AccountAdminServiceClient;
use tonic_types::StatusExt as _;

use super::{MeshChannel, MeshConfig, MeshError, retry_idempotent};
use crate::admin::{
    AccountAdmin, AccountAdminError, AccountPage, AccountSummary, RoleChange, SessionSummary,
};
use crate::auth::Role;
use crate::error::{ApiError, Reason, reason_of};
use crate::ids::{AccountId, DeviceId};

/// The status an [`AccountAdminError`] travels as (the public reasons).
pub fn to_status(err: AccountAdminError) -> tonic::Status {
    let msg = err.to_string();
    match err {
        AccountAdminError::NotFound(resource) => ApiError::not_found(msg)
            .with_metadata("resource", resource)
            .into(),
        AccountAdminError::LastOwner => ApiError::new(Reason::LastOwner, msg).into(),
        AccountAdminError::OwnerExists => ApiError::new(Reason::AlreadyExists, msg)
            .with_metadata("resource", "owner")
            .into(),
        AccountAdminError::LastDevice => ApiError::new(Reason::LastDevice, msg).into(),
        AccountAdminError::Mesh(MeshError::Call(status)) => status,
        AccountAdminError::Mesh(other) => tonic::Status::internal(other.to_string()),
    }
}

/// The [`AccountAdminError`] a status from [`to_status`] stands for.
pub fn from_status(status: tonic::Status) -> AccountAdminError {
    match reason_of(&status).as_deref() {
        Some("NOT_FOUND") => {
            let resource = status
                .get_details_error_info()
                .and_then(|i| i.metadata.get("resource").cloned());
            AccountAdminError::NotFound(match resource.as_deref() {
                Some("session") => "session",
                Some("device") => "device",
                _ => "account",
            })
        }
        Some("LAST_OWNER") => AccountAdminError::LastOwner,
        Some("ALREADY_EXISTS") => AccountAdminError::OwnerExists,
        Some("LAST_DEVICE") => AccountAdminError::LastDevice,
        _ => AccountAdminError::Mesh(MeshError::Call(status)),
    }
}

fn roles_in(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|r| Role::parse(r)).collect()
}

fn roles_out(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

fn corrupt(what: &str) -> AccountAdminError {
    AccountAdminError::Mesh(MeshError::Call(tonic::Status::internal(format!(
        "account administration answered a malformed {what}"
    ))))
}

/// The wire form of an account (server side).
pub fn account_record(a: AccountSummary) -> pb::AccountRecord {
    pb::AccountRecord {
        account_id: a.account_id.to_string(),
        username: a.username,
        created_ms: a.created_ms,
        roles: roles_out(&a.roles),
        suspended: a.suspended,
        device_count: a.device_count,
        mfa_enabled: a.mfa_enabled,
    }
}

fn account_in(a: pb::AccountRecord) -> Result<AccountSummary, AccountAdminError> {
    Ok(AccountSummary {
        account_id: AccountId::parse(&a.account_id).ok_or_else(|| corrupt("account id"))?,
        username: a.username,
        created_ms: a.created_ms,
        roles: roles_in(&a.roles),
        suspended: a.suspended,
        device_count: a.device_count,
        mfa_enabled: a.mfa_enabled,
    })
}

/// The wire form of a session (server side).
pub fn session_record(s: SessionSummary) -> pb::SessionRecord {
    pb::SessionRecord {
        session_id: s.session_id,
        device_id: s.device_id.get(),
        created_ms: s.created_ms,
        last_refreshed_ms: s.last_refreshed_ms,
        expires_ms: s.expires_ms,
    }
}

fn session_in(s: pb::SessionRecord) -> Result<SessionSummary, AccountAdminError> {
    Ok(SessionSummary {
        session_id: s.session_id,
        device_id: DeviceId::new(s.device_id).ok_or_else(|| corrupt("device id"))?,
        created_ms: s.created_ms,
        last_refreshed_ms: s.last_refreshed_ms,
        expires_ms: s.expires_ms,
    })
}

/// [`AccountAdmin`] over gRPC to the mesh listeners of auth's processes.
#[derive(Clone)]
pub struct RemoteAccountAdmin {
    client: AccountAdminServiceClient<MeshChannel>,
    attempts: u32,
    deadline: Duration,
}

impl fmt::Debug for RemoteAccountAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteAccountAdmin")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl RemoteAccountAdmin {
    /// Over `channel` (see [`super::channel`] on `mesh.account_admin_addresses`).
    pub fn new(channel: MeshChannel, config: &MeshConfig) -> Self {
        Self {
            client: AccountAdminServiceClient::new(channel),
            attempts: config.max_attempts,
            deadline: Duration::from_millis(config.call_timeout_ms),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        request
    }

    fn client(&self) -> AccountAdminServiceClient<MeshChannel> {
        self.client.clone()
    }
}

#[async_trait]
impl AccountAdmin for RemoteAccountAdmin {
    async fn list_accounts(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<AccountPage, AccountAdminError> {
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client();
            let request = self.request(pb::ListAccountsRequest {
                username_prefix: prefix.to_owned(),
                after_username: after.to_owned(),
                limit,
            });
            async move { client.list_accounts(request).await }
        })
        .await
        .map_err(from_status)?
        .into_inner();
        Ok(AccountPage {
            accounts: response
                .accounts
                .into_iter()
                .map(account_in)
                .collect::<Result<_, _>>()?,
            next_after: response.next_after,
        })
    }

    async fn get_account(&self, account: AccountId) -> Result<AccountSummary, AccountAdminError> {
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client();
            let request = self.request(pb::GetAccountRequest {
                account_id: account.to_string(),
            });
            async move { client.get_account(request).await }
        })
        .await
        .map_err(from_status)?
        .into_inner();
        account_in(response.account.ok_or_else(|| corrupt("account"))?)
    }

    async fn set_roles(
        &self,
        account: AccountId,
        change: &RoleChange,
    ) -> Result<Vec<Role>, AccountAdminError> {
        let request = self.request(pb::SetRolesRequest {
            account_id: account.to_string(),
            grant: roles_out(&change.grant),
            revoke: roles_out(&change.revoke),
        });
        let response = self
            .client()
            .set_roles(request)
            .await
            .map_err(from_status)?;
        Ok(roles_in(&response.into_inner().roles))
    }

    async fn claim_owner(&self, account: AccountId) -> Result<(), AccountAdminError> {
        let request = self.request(pb::ClaimOwnerRequest {
            account_id: account.to_string(),
        });
        self.client()
            .claim_owner(request)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<u32, AccountAdminError> {
        let request = self.request(pb::SetSuspendedRequest {
            account_id: account.to_string(),
            suspended,
        });
        let response = self
            .client()
            .set_suspended(request)
            .await
            .map_err(from_status)?;
        Ok(response.into_inner().sessions_revoked)
    }

    async fn delete_account(&self, account: AccountId) -> Result<(), AccountAdminError> {
        let request = self.request(pb::DeleteAccountRequest {
            account_id: account.to_string(),
        });
        self.client()
            .delete_account(request)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn reset_mfa(&self, account: AccountId) -> Result<bool, AccountAdminError> {
        let request = self.request(pb::ResetMfaRequest {
            account_id: account.to_string(),
        });
        let response = self
            .client()
            .reset_mfa(request)
            .await
            .map_err(from_status)?;
        Ok(response.into_inner().was_enabled)
    }

    async fn list_sessions(
        &self,
        account: AccountId,
    ) -> Result<Vec<SessionSummary>, AccountAdminError> {
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client();
            let request = self.request(pb::ListSessionsRequest {
                account_id: account.to_string(),
            });
            async move { client.list_sessions(request).await }
        })
        .await
        .map_err(from_status)?
        .into_inner();
        response.sessions.into_iter().map(session_in).collect()
    }

    async fn terminate_sessions(
        &self,
        account: AccountId,
        session: Option<&str>,
    ) -> Result<u32, AccountAdminError> {
        let request = self.request(pb::TerminateSessionsRequest {
            account_id: account.to_string(),
            session_id: session.unwrap_or_default().to_owned(),
        });
        let response = self
            .client()
            .terminate_sessions(request)
            .await
            .map_err(from_status)?;
        Ok(response.into_inner().sessions_revoked)
    }

    async fn remove_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<(), AccountAdminError> {
        let request = self.request(pb::RemoveDeviceRequest {
            account_id: account.to_string(),
            device_id: device.get(),
        });
        self.client()
            .remove_device(request)
            .await
            .map_err(from_status)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal crossing the mesh keeps its meaning, so admin answers a remote LAST_OWNER or
    /// NOT_FOUND exactly as an in-process one; an outage stays retryable.
    #[test]
    fn refusals_survive_the_round_trip_through_a_status() {
        let back = |e| from_status(to_status(e));
        assert!(matches!(
            back(AccountAdminError::NotFound("session")),
            AccountAdminError::NotFound("session")
        ));
        assert!(matches!(
            back(AccountAdminError::NotFound("device")),
            AccountAdminError::NotFound("device")
        ));
        assert!(matches!(
            back(AccountAdminError::LastOwner),
            AccountAdminError::LastOwner
        ));
        assert!(matches!(
            back(AccountAdminError::OwnerExists),
            AccountAdminError::OwnerExists
        ));
        assert!(matches!(
            back(AccountAdminError::LastDevice),
            AccountAdminError::LastDevice
        ));
        let outage = back(AccountAdminError::Mesh(MeshError::Call(
            tonic::Status::unavailable("down"),
        )));
        assert!(matches!(outage, AccountAdminError::Mesh(ref m) if m.is_retryable()));
    }
}
