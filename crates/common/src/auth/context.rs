//! The caller of an authenticated RPC, as handlers see it.

use crate::error::{ApiError, Reason};

/// Who is calling: the verified claims of the access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthContext {
    pub account_id: crate::ids::AccountId,
    pub device_id: crate::ids::DeviceId,
    pub session_id: String,
    pub roles: Vec<String>,
    /// Unix seconds.
    pub expires_at: u64,
    /// What the token may be used for.
    pub scope: TokenScope,
}

/// What an access token may be used for beyond its roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenScope {
    /// Everything the roles allow.
    #[default]
    Full,
    /// The policy requires a second factor and the account has none: only TOTP enrolment
    /// ([`MFA_ENROLLMENT_METHODS`]); every other call is refused with
    /// FAILED_PRECONDITION / MFA_ENROLLMENT_REQUIRED before its handler runs.
    MfaEnrollment,
    /// An API credential: only the methods its scopes admit; every other call is refused
    /// with PERMISSION_DENIED before its handler runs.
    Credential(super::scopes::CredentialScopes),
}

impl TokenScope {
    /// The `scope` claim (absent for [`TokenScope::Full`]).
    pub fn claim(self) -> Option<&'static str> {
        match self {
            Self::Full => None,
            Self::MfaEnrollment => Some("mfa_enrollment"),
            // Never signed into a token: the context comes from the credential verifier.
            Self::Credential(_) => Some("credential"),
        }
    }

    /// Whether a token of this scope may call `path` (`/package.Service/Method`).
    pub fn allows(self, path: &str) -> bool {
        match self {
            Self::Full => true,
            Self::MfaEnrollment => MFA_ENROLLMENT_METHODS.contains(&path),
            Self::Credential(scopes) => scopes.admitting(path).is_some(),
        }
    }
}

/// What an [`TokenScope::MfaEnrollment`] token may call: enrol TOTP (the session proved the
/// password at sign-in, which is the step-up enrolment needs), see the MFA state, and sign out.
pub const MFA_ENROLLMENT_METHODS: &[&str] = &[
    "/guardyn.auth.v1.MfaService/BeginTotpEnrollment",
    "/guardyn.auth.v1.MfaService/ConfirmTotpEnrollment",
    "/guardyn.auth.v1.MfaService/GetMfaStatus",
    "/guardyn.auth.v1.AuthService/Logout",
];

impl AuthContext {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Admit the caller if its token carries one of `admitted`; otherwise PERMISSION_DENIED
    /// (ROLE_REQUIRED) naming the roles that would be admitted.
    pub fn require_role(&self, admitted: &[Role]) -> Result<(), ApiError> {
        if admitted.iter().any(|r| self.has_role(r.as_str())) {
            return Ok(());
        }
        let names: Vec<&str> = admitted.iter().map(|r| r.as_str()).collect();
        Err(ApiError::new(
            Reason::RoleRequired,
            format!("this call needs one of the roles: {}", names.join(", ")),
        )
        .with_metadata("roles", names.join(",")))
    }
}

/// What an account may do beyond its own data (`guardyn.admin.v1.Role`); tokens carry the
/// lowercase names in their `roles` claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Owner,
    Admin,
    Auditor,
    User,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Auditor, Role::User];
    /// Who may change things: user lifecycle, policies, configuration.
    pub const MANAGE: &'static [Role] = &[Role::Owner, Role::Admin];
    /// Who may read the administrative views (accounts, audit, security events, monitoring).
    pub const READ: &'static [Role] = &[Role::Owner, Role::Admin, Role::Auditor];

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::User => "user",
        }
    }

    /// Parse a claim value.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
