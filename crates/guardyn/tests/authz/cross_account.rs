//! The "token of another account" column of the authorization matrix: every hosted non-public
//! RPC is classified, and the test fails for an RPC without a class.
//!
//! - `Denied`: the request names a resource of account A (a session, an upload, a media blob,
//!   a group); called with account B's valid token it must fail with the documented code, and
//!   A's resource must be untouched afterwards.
//! - `Own`: the RPC acts on the caller's account only. Its request has no field that could
//!   name another account's data (checked against the descriptor, so a new such field forces
//!   a reclassification), and B's call never answers with A's identifiers.
//! - `Shared`: the RPC reaches other accounts by design (the key directory, sending, presence
//!   under visibility rules, media capabilities); the reason is stated, and each has its own
//!   tests in its service.
//! - `RoleGated`: an admin RPC; B's token (role `user`) is refused with PERMISSION_DENIED /
//!   ROLE_REQUIRED before the request is even read.

use prost::Message as _;
use sha2::Digest as _;

use guardyn_proto::guardyn::media::v1 as media;
use guardyn_proto::guardyn::media::v1::media_service_client::MediaServiceClient;
use guardyn_proto::guardyn::messaging::v1 as msg;

use super::*;

/// Fields that name data of a specific account; an `Own` RPC must have none.
const RESOURCE_FIELDS: &[&str] = &[
    "account_id",
    "account_ids",
    "peer_account_id",
    "destination_account_id",
    "group_id",
    "media_id",
    "upload_id",
    "session_id",
];

enum Case {
    Own,
    Denied(Vec<u8>, &'static [Code]),
    Shared(&'static str),
    RoleGated,
}

/// Account A's resources.
struct Victim {
    account_id: String,
    username: String,
    tokens: pb::Tokens,
    group_id: Vec<u8>,
    upload_id: String,
    media_id: String,
}

fn cases(a: &Victim) -> Vec<(&'static str, Case)> {
    use Case::{Denied, Own, RoleGated, Shared};
    const DIRECTORY: &str =
        "the key directory serves any account's public keys (rate limited per caller and target)";
    const CAPABILITY: &str = "a media id is a 128-bit capability shared inside end-to-end encrypted messages; blobs are ciphertext";
    const PRESENCE: &str =
        "presence of other accounts, filtered by their visibility settings (presence API tests)";
    const NOT_MEMBER: &[Code] = &[Code::NotFound];
    let group = || a.group_id.clone();
    vec![
        ("/guardyn.auth.v1.AuthService/Logout", Own),
        ("/guardyn.auth.v1.AuthService/ChangePassword", Own),
        ("/guardyn.auth.v1.AuthService/DeleteAccount", Own),
        ("/guardyn.auth.v1.AuthService/StepUp", Own),
        ("/guardyn.auth.v1.AuthService/ListSessions", Own),
        (
            "/guardyn.auth.v1.AuthService/RevokeSession",
            Denied(
                pb::RevokeSessionRequest {
                    session_id: a.tokens.session_id.clone(),
                }
                .encode_to_vec(),
                &[Code::NotFound],
            ),
        ),
        (
            "/guardyn.auth.v1.AuthService/LookupUsername",
            Shared("exact-match lookup of a discoverable username; answers only the account id"),
        ),
        ("/guardyn.auth.v1.AuthService/SetUsernameDiscoverable", Own),
        ("/guardyn.auth.v1.DeviceService/ListDevices", Own),
        // Device ids are relative to the caller's account.
        ("/guardyn.auth.v1.DeviceService/RenameDevice", Own),
        ("/guardyn.auth.v1.DeviceService/RemoveDevice", Own),
        // The code is the new device's credential; approving adds it to the caller's account.
        ("/guardyn.auth.v1.DeviceService/ApproveLink", Own),
        ("/guardyn.auth.v1.DeviceService/ListDeviceNotices", Own),
        ("/guardyn.auth.v1.DeviceService/AckDeviceNotices", Own),
        ("/guardyn.auth.v1.KeyDirectoryService/UploadPreKeys", Own),
        ("/guardyn.auth.v1.KeyDirectoryService/GetPreKeyCounts", Own),
        (
            "/guardyn.auth.v1.KeyDirectoryService/UploadKeyPackages",
            Own,
        ),
        (
            "/guardyn.auth.v1.KeyDirectoryService/GetKeyPackageCount",
            Own,
        ),
        (
            "/guardyn.auth.v1.KeyDirectoryService/GetPreKeyBundle",
            Shared(DIRECTORY),
        ),
        (
            "/guardyn.auth.v1.KeyDirectoryService/ClaimKeyPackages",
            Shared(DIRECTORY),
        ),
        (
            "/guardyn.auth.v1.KeyDirectoryService/GetMlsSignatureKeys",
            Shared(DIRECTORY),
        ),
        ("/guardyn.auth.v1.MfaService/BeginTotpEnrollment", Own),
        ("/guardyn.auth.v1.MfaService/ConfirmTotpEnrollment", Own),
        ("/guardyn.auth.v1.MfaService/DisableTotp", Own),
        ("/guardyn.auth.v1.MfaService/RegenerateRecoveryCodes", Own),
        ("/guardyn.auth.v1.MfaService/GetMfaStatus", Own),
        ("/guardyn.media.v1.MediaService/CreateUpload", Own),
        (
            "/guardyn.media.v1.MediaService/UploadChunk",
            Denied(
                media::UploadChunkRequest {
                    upload_id: a.upload_id.clone(),
                    offset: 0,
                    data: b"xyz".to_vec(),
                }
                .encode_to_vec(),
                &[Code::PermissionDenied],
            ),
        ),
        (
            "/guardyn.media.v1.MediaService/GetUpload",
            Denied(
                media::GetUploadRequest {
                    upload_id: a.upload_id.clone(),
                }
                .encode_to_vec(),
                &[Code::PermissionDenied],
            ),
        ),
        (
            "/guardyn.media.v1.MediaService/CompleteUpload",
            Denied(
                media::CompleteUploadRequest {
                    upload_id: a.upload_id.clone(),
                }
                .encode_to_vec(),
                &[Code::PermissionDenied],
            ),
        ),
        (
            "/guardyn.media.v1.MediaService/Download",
            Shared(CAPABILITY),
        ),
        (
            "/guardyn.media.v1.MediaService/GetMediaInfo",
            Shared(CAPABILITY),
        ),
        (
            "/guardyn.media.v1.MediaService/DeleteMedia",
            Denied(
                media::DeleteMediaRequest {
                    media_id: a.media_id.clone(),
                }
                .encode_to_vec(),
                &[Code::PermissionDenied],
            ),
        ),
        ("/guardyn.media.v1.MediaService/SetAvatar", Own),
        ("/guardyn.media.v1.MediaService/DeleteAvatar", Own),
        (
            "/guardyn.media.v1.MediaService/GetAvatar",
            Shared("avatars are public profile pictures"),
        ),
        // Push tokens and settings of the calling device (from its token); another device's
        // token id is NOT_FOUND (notification API tests).
        (
            "/guardyn.notification.v1.NotificationService/RegisterPushToken",
            Own,
        ),
        (
            "/guardyn.notification.v1.NotificationService/UnregisterPushToken",
            Own,
        ),
        (
            "/guardyn.notification.v1.NotificationService/ListPushTokens",
            Own,
        ),
        (
            "/guardyn.notification.v1.NotificationService/SetNotificationSettings",
            Own,
        ),
        (
            "/guardyn.notification.v1.NotificationService/GetNotificationSettings",
            Own,
        ),
        // Any device reads the signed client configuration; it names no account.
        ("/guardyn.admin.v1.ClientConfigService/GetClientConfig", Own),
        (
            "/guardyn.admin.v1.ClientConfigService/PublishClientConfig",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.ClientConfigService/ListClientConfigVersions",
            RoleGated,
        ),
        // A device reads the notices addressed to its own account (or to all); it names none.
        (
            "/guardyn.admin.v1.SystemNoticeService/ListSystemNotices",
            Own,
        ),
        (
            "/guardyn.admin.v1.SystemNoticeService/SendSystemNotice",
            RoleGated,
        ),
        ("/guardyn.admin.v1.PolicyService/GetPolicy", RoleGated),
        ("/guardyn.admin.v1.PolicyService/SetPolicy", RoleGated),
        (
            "/guardyn.admin.v1.PolicyService/ListPolicyVersions",
            RoleGated,
        ),
        ("/guardyn.admin.v1.AuditService/ListAuditEntries", RoleGated),
        ("/guardyn.admin.v1.AuditService/VerifyAuditLog", RoleGated),
        ("/guardyn.admin.v1.AdminUserService/ListAccounts", RoleGated),
        ("/guardyn.admin.v1.AdminUserService/GetAccount", RoleGated),
        ("/guardyn.admin.v1.AdminUserService/SetRoles", RoleGated),
        (
            "/guardyn.admin.v1.AdminUserService/SuspendAccount",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.AdminUserService/UnsuspendAccount",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.AdminUserService/DeleteAccount",
            RoleGated,
        ),
        ("/guardyn.admin.v1.AdminUserService/ResetMfa", RoleGated),
        ("/guardyn.admin.v1.AdminUserService/ListSessions", RoleGated),
        (
            "/guardyn.admin.v1.AdminUserService/TerminateSessions",
            RoleGated,
        ),
        ("/guardyn.admin.v1.AdminUserService/RemoveDevice", RoleGated),
        // The caller claims ownership for its own account with a code; it names no account.
        ("/guardyn.admin.v1.BootstrapService/ClaimOwner", Own),
        // A device reports about itself; the event is stored against the token's account.
        (
            "/guardyn.admin.v1.SecurityEventService/ReportSecurityEvent",
            Own,
        ),
        (
            "/guardyn.admin.v1.SecurityEventService/ListSecurityEvents",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.SecurityEventService/ExportSecurityEvents",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.MonitoringService/GetMonitoringData",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.MonitoringService/WatchMonitoring",
            RoleGated,
        ),
        // API credentials: owners and admins only, whatever the account.
        (
            "/guardyn.admin.v1.CredentialService/IssueCredential",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.CredentialService/ListCredentials",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.CredentialService/RotateCredential",
            RoleGated,
        ),
        (
            "/guardyn.admin.v1.CredentialService/RevokeCredential",
            RoleGated,
        ),
        (
            "/guardyn.messaging.v1.GroupService/CreateGroup",
            // Creating a group under A's group id must not replace A's group.
            Denied(
                msg::CreateGroupRequest {
                    group_id: group(),
                    group_info: vec![0; 64],
                }
                .encode_to_vec(),
                &[Code::AlreadyExists, Code::InvalidArgument],
            ),
        ),
        (
            "/guardyn.messaging.v1.GroupService/GetGroup",
            Denied(
                msg::GetGroupRequest { group_id: group() }.encode_to_vec(),
                NOT_MEMBER,
            ),
        ),
        (
            "/guardyn.messaging.v1.GroupService/SendCommit",
            Denied(
                msg::SendCommitRequest {
                    group_id: group(),
                    epoch: 1,
                    commit: vec![0; 64],
                    group_info: vec![0; 64],
                    ..Default::default()
                }
                .encode_to_vec(),
                NOT_MEMBER,
            ),
        ),
        (
            "/guardyn.messaging.v1.GroupService/SendProposal",
            Denied(
                msg::SendProposalRequest {
                    group_id: group(),
                    epoch: 1,
                    proposal: vec![0; 64],
                }
                .encode_to_vec(),
                NOT_MEMBER,
            ),
        ),
        (
            "/guardyn.messaging.v1.GroupService/SendGroupMessage",
            Denied(
                msg::SendGroupMessageRequest {
                    group_id: group(),
                    epoch: 1,
                    client_message_id: "00000000-0000-4000-8000-000000000001".into(),
                    message: vec![0; 64],
                    urgent: false,
                }
                .encode_to_vec(),
                NOT_MEMBER,
            ),
        ),
        (
            "/guardyn.messaging.v1.GroupService/GetGroupInfo",
            Denied(
                msg::GetGroupInfoRequest { group_id: group() }.encode_to_vec(),
                NOT_MEMBER,
            ),
        ),
        (
            "/guardyn.messaging.v1.GroupService/GetRatchetTree",
            Denied(
                msg::GetRatchetTreeRequest {
                    group_id: group(),
                    epoch: 1,
                }
                .encode_to_vec(),
                NOT_MEMBER,
            ),
        ),
        (
            "/guardyn.messaging.v1.GroupService/LeaveGroup",
            Denied(
                msg::LeaveGroupRequest {
                    group_id: group(),
                    epoch: 1,
                    remove_proposal: vec![0; 64],
                }
                .encode_to_vec(),
                NOT_MEMBER,
            ),
        ),
        (
            "/guardyn.messaging.v1.MessagingService/SendMessage",
            Shared(
                "delivering ciphertext to any account is the service; the recipient's device list is checked",
            ),
        ),
        ("/guardyn.messaging.v1.MessagingService/Listen", Own),
        // Server ids are positions in the caller's own queue.
        ("/guardyn.messaging.v1.MessagingService/Ack", Own),
        ("/guardyn.messaging.v1.MessagingService/Echo", Own),
        ("/guardyn.presence.v1.PresenceService/Heartbeat", Own),
        ("/guardyn.presence.v1.PresenceService/SetStatus", Own),
        // Names accounts only to grant them the caller's last-seen.
        ("/guardyn.presence.v1.PresenceService/SetVisibility", Own),
        ("/guardyn.presence.v1.PresenceService/GetVisibility", Own),
        (
            "/guardyn.presence.v1.PresenceService/SetTyping",
            Shared(
                "typing reaches only accounts the sender's visibility allows; a group id is a label, not access",
            ),
        ),
        (
            "/guardyn.presence.v1.PresenceService/GetPresence",
            Shared(PRESENCE),
        ),
        (
            "/guardyn.presence.v1.PresenceService/Subscribe",
            Shared(PRESENCE),
        ),
    ]
}

async fn victim(server: &TestServer, config: &ClientConfig) -> Victim {
    let channel = server.channel();
    let username = format!("victim{}", std::process::id());
    let sdk = Client::register(
        channel.clone(),
        Storage::Memory,
        config.clone(),
        &username,
        PASSWORD,
    )
    .await
    .unwrap();
    let group_id = sdk.create_group().await.unwrap();
    let account_id = sdk.account_id().to_owned();
    // A raw session of device 1 (replacing the SDK's) whose id and token the test knows.
    let tokens = login(&channel, &username, 1).await;
    let mut blobs = MediaServiceClient::new(channel);
    let upload = |body: &'static [u8]| media::CreateUploadRequest {
        total_size: body.len() as u64,
        sha256: sha2::Sha256::digest(body).to_vec(),
        content_type: String::new(),
    };
    let upload_id = blobs
        .create_upload(bearer(upload(b"pending"), &tokens.access_token))
        .await
        .unwrap()
        .into_inner()
        .upload_id;
    let done = blobs
        .create_upload(bearer(upload(b"blob"), &tokens.access_token))
        .await
        .unwrap()
        .into_inner()
        .upload_id;
    blobs
        .upload_chunk(bearer(
            media::UploadChunkRequest {
                upload_id: done.clone(),
                offset: 0,
                data: b"blob".to_vec(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap();
    let media_id = blobs
        .complete_upload(bearer(
            media::CompleteUploadRequest { upload_id: done },
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .media
        .unwrap()
        .media_id;
    Victim {
        account_id,
        username,
        tokens,
        group_id,
        upload_id,
        media_id,
    }
}

/// Whether `haystack` contains `needle` (non-empty).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

pub(crate) async fn check(
    server: &TestServer,
    methods: &[&Method],
    public: &BTreeSet<String>,
    config: &ClientConfig,
) -> Vec<String> {
    let channel = server.channel();
    let a = victim(server, config).await;
    let b_name = format!("other{}", std::process::id());
    Client::register(
        channel.clone(),
        Storage::Memory,
        config.clone(),
        &b_name,
        PASSWORD,
    )
    .await
    .unwrap();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("A's account id", a.account_id.clone().into_bytes()),
        ("A's username", a.username.clone().into_bytes()),
        ("A's session id", a.tokens.session_id.clone().into_bytes()),
        ("A's group id", a.group_id.clone()),
        ("A's media id", a.media_id.clone().into_bytes()),
        ("A's upload id", a.upload_id.clone().into_bytes()),
    ];

    let mut table: std::collections::HashMap<&str, Case> = cases(&a).into_iter().collect();
    let mut failures = Vec::new();
    let (mut own, mut denied, mut shared, mut gated) = (0, 0, 0, 0);
    for m in methods.iter().filter(|m| !public.contains(&m.path)) {
        let Some(case) = table.remove(m.path.as_str()) else {
            failures.push(format!(
                "{}: not classified for calls with another account's token (add it to cross_account::cases)",
                m.path
            ));
            continue;
        };
        // A fresh token of B per call: some calls end B's own session.
        let b = login(&channel, &b_name, 1).await;
        let auth = format!("Bearer {}", b.access_token);
        match case {
            Case::Own => {
                own += 1;
                for f in &m.request_fields {
                    if RESOURCE_FIELDS.contains(&f.as_str()) {
                        failures.push(format!(
                            "{}: classified Own but its request has `{f}`, which can name another account's data",
                            m.path
                        ));
                    }
                }
                let outcome = call_with(&channel, m, Some(&auth), Bytes::new()).await;
                let answer = match &outcome {
                    Ok(bytes) => bytes.to_vec(),
                    Err(s) => s.message().as_bytes().to_vec(),
                };
                for (what, secret) in &secrets {
                    if contains(&answer, secret) {
                        failures.push(format!("{}: B's call answered with {what}", m.path));
                    }
                }
            }
            Case::Denied(body, codes) => {
                denied += 1;
                let outcome = call_with(&channel, m, Some(&auth), Bytes::from(body)).await;
                let ok = matches!(&outcome, Err(s) if codes.contains(&s.code()));
                if !ok {
                    failures.push(format!(
                        "{} with A's resource and B's token: expected {codes:?}, got {}",
                        m.path,
                        match &outcome {
                            Ok(_) => "OK (not refused)".to_owned(),
                            Err(s) => describe(&Err(s.clone())),
                        }
                    ));
                }
            }
            Case::Shared(reason) => {
                shared += 1;
                eprintln!("  shared  {}: {reason}", m.path);
            }
            Case::RoleGated => {
                gated += 1;
                let outcome = call_with(&channel, m, Some(&auth), Bytes::new()).await;
                let ok = matches!(&outcome, Err(s) if s.code() == Code::PermissionDenied
                    && reason_of(s).as_deref() == Some("ROLE_REQUIRED"));
                if !ok {
                    failures.push(format!(
                        "{} with a user's token: expected PERMISSION_DENIED / ROLE_REQUIRED, got {}",
                        m.path,
                        match &outcome {
                            Ok(_) => "OK (not refused)".to_owned(),
                            Err(s) => describe(&Err(s.clone())),
                        }
                    ));
                }
            }
        }
    }
    eprintln!(
        "another account's token: {own} own, {denied} denied, {shared} shared by design, \
         {gated} role-gated"
    );

    // A's resources survived everything B tried.
    let a_auth = a.tokens.access_token.clone();
    let sessions = AuthServiceClient::new(channel.clone())
        .list_sessions(bearer(pb::ListSessionsRequest::default(), &a_auth))
        .await
        .expect("A's session still works")
        .into_inner()
        .sessions;
    assert!(sessions.iter().any(|s| s.session_id == a.tokens.session_id));
    let mut blobs = MediaServiceClient::new(channel.clone());
    let pending = blobs
        .get_upload(bearer(
            media::GetUploadRequest {
                upload_id: a.upload_id.clone(),
            },
            &a_auth,
        ))
        .await
        .expect("A's upload is still there")
        .into_inner();
    assert_eq!(pending.committed_offset, 0, "B wrote into A's upload");
    blobs
        .get_media_info(bearer(
            media::GetMediaInfoRequest {
                media_id: a.media_id.clone(),
            },
            &a_auth,
        ))
        .await
        .expect("A's media is still there");
    let group =
        guardyn_proto::guardyn::messaging::v1::group_service_client::GroupServiceClient::new(
            channel,
        )
        .get_group(bearer(
            msg::GetGroupRequest {
                group_id: a.group_id.clone(),
            },
            &a_auth,
        ))
        .await
        .expect("A's group is still A's")
        .into_inner();
    assert!(format!("{group:?}").contains(&a.account_id), "{group:?}");
    failures
}
