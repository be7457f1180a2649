//! [`CredentialVerifier`] across processes: a client of
//! `guardyn.internal.v1.CredentialVerifierService`, which the process hosting auth serves on
//! its mesh listener. An admin process without auth installs it into its auth layer, so API
//! credentials work there exactly as in auth's own process.
//!
//! Nothing is cached: every credential call asks auth, so a rotation or revocation takes
//! effect on the next call, as in-process. Auth's refusals come back as the same errors: any
//! credential that does not verify is [`invalid_credential`] (unknown and wrong secrets stay
//! indistinguishable), an address past its failure budget is RATE_LIMITED with the retry hint;
//! auth unreachable is UNAVAILABLE. Verification is a read, so it is retried on UNAVAILABLE.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use guardyn_proto::guardyn::internal::v1 as pb;
use pb::credential_verifier_service_client::CredentialVerifierServiceClient;
use tonic::Code;

use super::{MeshChannel, MeshConfig, retry_idempotent};
use crate::auth::{
    AuthContext, CredentialScope, CredentialVerifier, TokenScope, invalid_credential,
};
use crate::error::{ApiError, Reason};
use crate::ids::{AccountId, DeviceId};

/// Longest bearer value sent for verification (a credential is under 100 bytes); a longer one
/// is refused like any credential that does not verify.
pub const MAX_CREDENTIAL_BYTES: usize = 4096;

/// How long a client should wait when auth could not be asked.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// [`CredentialVerifier`] over gRPC to the mesh listeners of auth's processes.
#[derive(Clone)]
pub struct RemoteCredentialVerifier {
    client: CredentialVerifierServiceClient<MeshChannel>,
    attempts: u32,
    deadline: Duration,
}

impl fmt::Debug for RemoteCredentialVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCredentialVerifier")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl RemoteCredentialVerifier {
    /// Over `channel` (see [`super::channel`] on `mesh.account_admin_addresses`).
    pub fn new(channel: MeshChannel, config: &MeshConfig) -> Self {
        Self {
            client: CredentialVerifierServiceClient::new(channel),
            attempts: config.max_attempts,
            deadline: Duration::from_millis(config.call_timeout_ms),
        }
    }
}

/// Auth's refusal or the mesh failure, as the client of the public call sees it.
fn refusal(status: &tonic::Status) -> ApiError {
    match status.code() {
        Code::Unauthenticated => invalid_credential(),
        Code::ResourceExhausted => {
            use tonic_types::StatusExt as _;
            let after = status
                .get_details_retry_info()
                .and_then(|r| r.retry_delay)
                .unwrap_or(RETRY_AFTER);
            ApiError::new(Reason::RateLimited, status.message())
                .with_metadata("limit", "credential_failures_per_address")
                .with_retry_after(after)
        }
        Code::Unavailable | Code::DeadlineExceeded => {
            tracing::warn!(error = %status, "credential verification: auth unreachable");
            ApiError::new(
                Reason::Unavailable,
                "credential verification unavailable, retry",
            )
            .with_retry_after(RETRY_AFTER)
        }
        _ => ApiError::internal(status),
    }
}

/// The caller's context from auth's answer; a malformed one is auth's bug, refused.
fn context(r: pb::VerifyCredentialResponse) -> Result<AuthContext, ApiError> {
    let malformed = || ApiError::new(Reason::Internal, "internal error");
    Ok(AuthContext {
        account_id: AccountId::parse(&r.account_id).ok_or_else(malformed)?,
        device_id: DeviceId::new(r.device_id).ok_or_else(malformed)?,
        session_id: r.session_id,
        roles: r.roles,
        expires_at: r.expires_at,
        // A scope this build does not know admits nothing here.
        scope: TokenScope::Credential(
            r.scopes
                .iter()
                .filter_map(|s| CredentialScope::parse(s))
                .collect(),
        ),
    })
}

#[async_trait]
impl CredentialVerifier for RemoteCredentialVerifier {
    async fn verify(
        &self,
        credential: &str,
        path: &str,
        remote: Option<IpAddr>,
    ) -> Result<AuthContext, ApiError> {
        if credential.len() > MAX_CREDENTIAL_BYTES {
            return Err(invalid_credential());
        }
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client.clone();
            let mut request = tonic::Request::new(pb::VerifyCredentialRequest {
                credential: credential.to_owned(),
                method: path.to_owned(),
                remote_address: remote.map(|ip| ip.to_string()).unwrap_or_default(),
            });
            // Sent as grpc-timeout, so auth gives up when this process has.
            request.set_timeout(self.deadline);
            async move { client.verify_credential(request).await }
        })
        .await
        .map_err(|status| refusal(&status))?;
        context(response.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Auth's refusals cross the mesh unchanged, so a process without auth answers exactly as
    /// auth's own: one answer for every credential that does not verify, the rate limit with
    /// its retry hint; an outage is UNAVAILABLE, never a refusal of the credential.
    #[test]
    fn refusals_survive_the_round_trip_through_a_status() {
        let back = |e: ApiError| refusal(&tonic::Status::from(e));
        assert_eq!(back(invalid_credential()), invalid_credential());
        let limited = ApiError::new(
            Reason::RateLimited,
            "too many failed credential attempts, retry later",
        )
        .with_metadata("limit", "credential_failures_per_address")
        .with_retry_after(Duration::from_secs(3));
        assert_eq!(back(limited.clone()), limited);
        let outage = refusal(&tonic::Status::unavailable("connection refused"));
        assert_eq!(outage.code(), Code::Unavailable);
    }
}
