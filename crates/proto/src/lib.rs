//! Generated protobuf messages and tonic gRPC clients/servers for Guardyn's
//! public v1 contract.
//!
//! The contract lives in `proto/guardyn/<package>/v1/*.proto` at the
//! workspace root; those files (their comments are the API reference) are
//! the source of truth and `build.rs` compiles them with protox, so no
//! `protoc` is needed. Modules mirror the protobuf packages:
//! [`guardyn::auth::v1`], [`guardyn::messaging::v1`],
//! [`guardyn::presence::v1`], [`guardyn::media::v1`],
//! [`guardyn::notification::v1`] and [`guardyn::common::v1`].
//!
//! Clients are generated without tonic's `transport` feature: construct them
//! with `XServiceClient::new(channel)` from any tower service (a tonic
//! `Channel`, a tonic-web client, an in-process service in tests).
//!
//! Messages carrying secrets or ciphertext (passwords, tokens, codes, access
//! keys, envelope contents, media chunks) have a redacting `Debug`
//! implementation instead of prost's derived one; see `redact.rs`.
//!
//! This crate owns only generated code and contract metadata. It must not
//! depend on any other Guardyn crate or on server-side logic.

pub mod codec;
mod redact;

/// Generated code, one module per protobuf package.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations,
    rust_2018_idioms,
    missing_docs
)]
pub mod guardyn {
    /// `guardyn.common.v1`: shared types and the error model.
    pub mod common {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.common.v1");
        }
    }
    /// `guardyn.auth.v1`: accounts, sessions, devices, MFA, key directory.
    pub mod auth {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.auth.v1");
        }
    }
    /// `guardyn.messaging.v1`: one-to-one delivery and the MLS delivery
    /// service.
    pub mod messaging {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.messaging.v1");
        }
    }
    /// `guardyn.presence.v1`: online state, last seen, typing.
    pub mod presence {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.presence.v1");
        }
    }
    /// `guardyn.media.v1`: encrypted attachment storage.
    pub mod media {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.media.v1");
        }
    }
    /// `guardyn.notification.v1`: push wake-up registration.
    pub mod notification {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.notification.v1");
        }
    }
    /// `guardyn.admin.v1`: roles, user lifecycle, policies, signed client configuration,
    /// security events, audit and monitoring.
    pub mod admin {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.admin.v1");
        }
    }
    /// `guardyn.internal.v1`: calls between services of the mesh, served only on the
    /// internal listener (never part of the public contract).
    pub mod internal {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("guardyn.internal.v1");
        }
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every public Guardyn proto
/// file (with imports and source info), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/guardyn_descriptor.bin"));

/// Encoded `FileDescriptorSet` of the internal mesh contract (`guardyn.internal.*`), kept
/// out of [`FILE_DESCRIPTOR_SET`] so the public port can never describe it.
pub const INTERNAL_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/guardyn_internal_descriptor.bin"));

/// `ErrorInfo.domain` of every Guardyn error (see `errors.proto`).
pub const ERROR_DOMAIN: &str = "guardyn.v1";

/// Fully-qualified names of every v1 gRPC service, e.g. for health checks
/// and reflection.
pub const SERVICE_NAMES: &[&str] = &[
    guardyn::auth::v1::auth_service_server::SERVICE_NAME,
    guardyn::auth::v1::device_service_server::SERVICE_NAME,
    guardyn::auth::v1::mfa_service_server::SERVICE_NAME,
    guardyn::auth::v1::key_directory_service_server::SERVICE_NAME,
    guardyn::messaging::v1::messaging_service_server::SERVICE_NAME,
    guardyn::messaging::v1::group_service_server::SERVICE_NAME,
    guardyn::presence::v1::presence_service_server::SERVICE_NAME,
    guardyn::media::v1::media_service_server::SERVICE_NAME,
    guardyn::notification::v1::notification_service_server::SERVICE_NAME,
    guardyn::admin::v1::policy_service_server::SERVICE_NAME,
    guardyn::admin::v1::monitoring_service_server::SERVICE_NAME,
    guardyn::admin::v1::client_config_service_server::SERVICE_NAME,
    guardyn::admin::v1::audit_service_server::SERVICE_NAME,
    guardyn::admin::v1::security_event_service_server::SERVICE_NAME,
    guardyn::admin::v1::admin_user_service_server::SERVICE_NAME,
    guardyn::admin::v1::bootstrap_service_server::SERVICE_NAME,
    guardyn::admin::v1::credential_service_server::SERVICE_NAME,
    guardyn::admin::v1::system_notice_service_server::SERVICE_NAME,
];

impl guardyn::common::v1::ErrorReason {
    /// The value to put in `google.rpc.ErrorInfo.reason`: the enum value
    /// name without the `ERROR_REASON_` prefix (e.g. `"TOKEN_EXPIRED"`).
    #[must_use]
    pub fn reason(self) -> &'static str {
        let name = self.as_str_name();
        name.strip_prefix("ERROR_REASON_").unwrap_or(name)
    }

    /// Parses an `ErrorInfo.reason` string back into the enum. Returns
    /// `None` for unknown reasons (newer servers may add values).
    #[must_use]
    pub fn from_reason(reason: &str) -> Option<Self> {
        if reason == "UNSPECIFIED" {
            return None;
        }
        Self::from_str_name(&format!("ERROR_REASON_{reason}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    use super::guardyn::common::v1::ErrorReason;
    use super::*;

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
    }

    fn guardyn_files(
        fds: &FileDescriptorSet,
    ) -> impl Iterator<Item = &prost_types::FileDescriptorProto> {
        fds.file
            .iter()
            .filter(|file| file.package().starts_with("guardyn."))
    }

    #[test]
    fn descriptor_lists_exactly_the_expected_services() {
        let fds = descriptor_set();
        let found: BTreeSet<String> = guardyn_files(&fds)
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |svc| format!("{}.{}", file.package(), svc.name()))
            })
            .collect();
        let expected: BTreeSet<String> = [
            "guardyn.auth.v1.AuthService",
            "guardyn.auth.v1.DeviceService",
            "guardyn.auth.v1.MfaService",
            "guardyn.auth.v1.KeyDirectoryService",
            "guardyn.messaging.v1.MessagingService",
            "guardyn.messaging.v1.GroupService",
            "guardyn.presence.v1.PresenceService",
            "guardyn.media.v1.MediaService",
            "guardyn.notification.v1.NotificationService",
            "guardyn.admin.v1.PolicyService",
            "guardyn.admin.v1.MonitoringService",
            "guardyn.admin.v1.ClientConfigService",
            "guardyn.admin.v1.AuditService",
            "guardyn.admin.v1.SecurityEventService",
            "guardyn.admin.v1.CredentialService",
            "guardyn.admin.v1.AdminUserService",
            "guardyn.admin.v1.BootstrapService",
            "guardyn.admin.v1.SystemNoticeService",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(found, expected);
        let listed: BTreeSet<String> = SERVICE_NAMES.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            listed, expected,
            "SERVICE_NAMES out of sync with the protos"
        );
    }

    /// The internal contract stays out of the public descriptor set and has
    /// its own.
    #[test]
    fn internal_services_have_their_own_descriptor_set() {
        let public = descriptor_set();
        assert!(
            public
                .file
                .iter()
                .all(|f| !f.package().starts_with("guardyn.internal.")),
            "an internal file leaked into FILE_DESCRIPTOR_SET"
        );
        let internal = FileDescriptorSet::decode(INTERNAL_FILE_DESCRIPTOR_SET).unwrap();
        let services: BTreeSet<String> = internal
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        assert_eq!(
            services,
            BTreeSet::from([
                "guardyn.internal.v1.DeviceDirectoryService".to_owned(),
                "guardyn.internal.v1.AccountAdminService".to_owned(),
                "guardyn.internal.v1.CredentialVerifierService".to_owned(),
            ])
        );
    }

    /// gRPC-web cannot carry client-streaming or bidirectional calls; every
    /// method must be unary or server-streaming.
    #[test]
    fn no_client_streaming_methods() {
        let fds = descriptor_set();
        let mut methods = 0;
        for file in guardyn_files(&fds) {
            for svc in &file.service {
                for method in &svc.method {
                    methods += 1;
                    assert!(
                        !method.client_streaming(),
                        "{}.{}/{} is client-streaming; gRPC-web cannot call it",
                        file.package(),
                        svc.name(),
                        method.name()
                    );
                }
            }
        }
        assert!(methods > 50, "only {methods} methods found");
    }

    /// Only the expected server-streaming RPCs exist; adding one is a
    /// deliberate contract decision (proxies and load balancers treat long
    /// streams differently).
    #[test]
    fn server_streaming_methods_are_the_known_ones() {
        let fds = descriptor_set();
        let streaming: BTreeSet<String> = guardyn_files(&fds)
            .flat_map(|file| {
                file.service.iter().flat_map(move |svc| {
                    svc.method
                        .iter()
                        .filter(|m| m.server_streaming())
                        .map(move |m| format!("{}.{}/{}", file.package(), svc.name(), m.name()))
                })
            })
            .collect();
        let expected: BTreeSet<String> = [
            "guardyn.messaging.v1.MessagingService/Listen",
            "guardyn.presence.v1.PresenceService/Subscribe",
            "guardyn.media.v1.MediaService/Download",
            "guardyn.admin.v1.MonitoringService/WatchMonitoring",
            "guardyn.admin.v1.SecurityEventService/ExportSecurityEvents",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(streaming, expected);
    }

    #[test]
    fn error_reason_strings_round_trip_without_prefix() {
        assert_eq!(ErrorReason::TokenExpired.reason(), "TOKEN_EXPIRED");
        assert_eq!(ErrorReason::DeviceMismatch.reason(), "DEVICE_MISMATCH");
        assert_eq!(
            ErrorReason::from_reason("STALE_EPOCH"),
            Some(ErrorReason::StaleEpoch)
        );
        assert_eq!(ErrorReason::from_reason("ERROR_REASON_STALE_EPOCH"), None);
        assert_eq!(ErrorReason::from_reason("UNSPECIFIED"), None);
        assert_eq!(ErrorReason::from_reason("NO_SUCH_REASON"), None);
    }
}
