//! The caller of an authenticated RPC, as handlers see it.

use crate::error::ApiError;

/// Who is calling: the verified claims of the access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthContext {
    pub account_id: crate::ids::AccountId,
    pub device_id: crate::ids::DeviceId,
    pub session_id: String,
    pub roles: Vec<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

impl AuthContext {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The handler-side accessor: the caller of an authenticated RPC.
///
/// [`AuthLayer`] guarantees the context is present on every non-public method; its absence
/// means the method was declared public, so callers of this on such a method get
/// `UNAUTHENTICATED`.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&AuthContext, ApiError> {
    request
        .extensions()
        .get::<AuthContext>()
        .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))
}
