//! The gRPC edge: prost in, domain calls, prost out.

mod account_admin;
mod auth;
mod convert;
mod credential_verify;
mod credentials;
mod devices;
mod directory;
mod keys;
mod mfa;
mod paging;

pub use account_admin::AccountAdminApi;
pub use auth::AuthApi;
pub use credential_verify::CredentialVerifierApi;
pub use credentials::CredentialApi;
pub use devices::DeviceApi;
pub use directory::DirectoryApi;
pub use keys::KeysApi;
pub use mfa::MfaApi;

use std::sync::Arc;

use guardyn_proto::guardyn::admin::v1::credential_service_server::CredentialServiceServer;
use guardyn_proto::guardyn::auth::v1::auth_service_server::AuthServiceServer;
use guardyn_proto::guardyn::auth::v1::device_service_server::DeviceServiceServer;
use guardyn_proto::guardyn::auth::v1::key_directory_service_server::KeyDirectoryServiceServer;
use guardyn_proto::guardyn::auth::v1::mfa_service_server::MfaServiceServer;
use guardyn_proto::guardyn::internal::v1::account_admin_service_server::AccountAdminServiceServer;
use guardyn_proto::guardyn::internal::v1::credential_verifier_service_server::CredentialVerifierServiceServer;
use guardyn_proto::guardyn::internal::v1::device_directory_service_server::DeviceDirectoryServiceServer;

use crate::admin_seam::AuthAccountAdmin;
use crate::core::Core;
use crate::credential_verify::CredentialCheck;
use crate::credentials::Credentials;
use crate::directory::AuthDirectory;

pub(crate) fn auth_server(core: Arc<Core>) -> AuthServiceServer<AuthApi> {
    AuthServiceServer::new(AuthApi(core))
}

pub(crate) fn credential_server(
    credentials: Arc<Credentials>,
) -> CredentialServiceServer<CredentialApi> {
    CredentialServiceServer::new(CredentialApi(credentials))
}

pub(crate) fn device_server(core: Arc<Core>) -> DeviceServiceServer<DeviceApi> {
    DeviceServiceServer::new(DeviceApi(core))
}

pub(crate) fn mfa_server(core: Arc<Core>) -> MfaServiceServer<MfaApi> {
    MfaServiceServer::new(MfaApi(core))
}

pub(crate) fn keys_server(core: Arc<Core>) -> KeyDirectoryServiceServer<KeysApi> {
    KeyDirectoryServiceServer::new(KeysApi(core))
}

/// The internal device directory, for the mesh listener only.
pub(crate) fn directory_server(
    directory: AuthDirectory,
) -> DeviceDirectoryServiceServer<DirectoryApi> {
    DeviceDirectoryServiceServer::new(DirectoryApi(directory))
}

/// The internal credential verification, for the mesh listener only.
pub(crate) fn credential_verifier_server(
    check: Arc<CredentialCheck>,
) -> CredentialVerifierServiceServer<CredentialVerifierApi> {
    CredentialVerifierServiceServer::new(CredentialVerifierApi(check))
}

/// The internal account administration, for the mesh listener only.
pub(crate) fn account_admin_server(
    admin: AuthAccountAdmin,
) -> AccountAdminServiceServer<AccountAdminApi> {
    AccountAdminServiceServer::new(AccountAdminApi(admin))
}
