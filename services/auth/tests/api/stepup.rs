//! Step-up: a bearer token alone cannot do what would turn a stolen token into lasting access
//! (adding a device, removing devices, logging everyone out, changing the password, enrolling
//! TOTP); devices that were offline learn of links and removals from stored notices.

use std::time::Duration;

use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;

use super::helpers::*;
use super::mfa::enrol;
use super::sessions::{collect_link, link, request_link};

/// Past the default 300 s step-up window, well inside the access token's lifetime (the token
/// clock is real time; the service clock is the manual one).
const LATER: Duration = Duration::from_secs(301);

fn step_up_required(err: &tonic::Status) -> bool {
    err.code() == Code::FailedPrecondition && reason(err) == "STEP_UP_REQUIRED"
}

fn step_up(password: &str, factor: Option<pb::step_up_request::SecondFactor>) -> pb::StepUpRequest {
    pb::StepUpRequest {
        password: password.into(),
        second_factor: factor,
    }
}

/// Every sensitive RPC, called with `token` (each one that passes changes the account, so
/// this is only used where all of them must fail).
async fn sensitive_calls(
    env: &Env,
    token: &str,
    other_session: &str,
) -> Vec<(&'static str, tonic::Status)> {
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let ticket = request_link(env, new_device("attacker", &ik, 0)).await;
    vec![
        (
            "ApproveLink",
            env.devices()
                .approve_link(authed(
                    pb::ApproveLinkRequest {
                        link_code: ticket.link_code,
                    },
                    token,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "RemoveDevice",
            env.devices()
                .remove_device(authed(pb::RemoveDeviceRequest { device_id: 2 }, token))
                .await
                .unwrap_err(),
        ),
        (
            "Logout(all)",
            env.auth()
                .logout(authed(pb::LogoutRequest { all_sessions: true }, token))
                .await
                .unwrap_err(),
        ),
        (
            "RevokeSession(other)",
            env.auth()
                .revoke_session(authed(
                    pb::RevokeSessionRequest {
                        session_id: other_session.into(),
                    },
                    token,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "ChangePassword",
            env.auth()
                .change_password(authed(
                    pb::ChangePasswordRequest {
                        old_password: PASSWORD.into(),
                        new_password: "a brand new password".into(),
                    },
                    token,
                ))
                .await
                .unwrap_err(),
        ),
        (
            "BeginTotpEnrollment",
            env.mfa()
                .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, token))
                .await
                .unwrap_err(),
        ),
        (
            "ConfirmTotpEnrollment",
            env.mfa()
                .confirm_totp_enrollment(authed(
                    pb::ConfirmTotpEnrollmentRequest {
                        totp_code: "123456".into(),
                    },
                    token,
                ))
                .await
                .unwrap_err(),
        ),
    ]
}

#[tokio::test]
async fn a_stolen_access_token_cannot_take_over_the_account() {
    let env = start().await;
    let a = env.register("alice", 0).await;
    let (_, laptop, _) = link(&env, &a, 0).await;
    env.clock.advance(LATER);
    // The token still works for ordinary calls...
    env.devices()
        .list_devices(authed(pb::ListDevicesRequest {}, a.token()))
        .await
        .unwrap();
    // ...but not for any sensitive one.
    for (rpc, err) in sensitive_calls(&env, a.token(), &laptop.session_id).await {
        assert!(step_up_required(&err), "{rpc}: {err:?}");
    }
    // Nothing happened: both devices and sessions are still there.
    let devices = env
        .devices()
        .list_devices(authed(pb::ListDevicesRequest {}, &laptop.access_token))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices.len(), 2);
    // A wrong password does not step up.
    let err = env
        .auth()
        .step_up(authed(step_up("not the password", None), a.token()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "INVALID_CREDENTIALS")
    );
    // The password does, for the window: the owner can now approve a device.
    let until = env
        .auth()
        .step_up(authed(step_up(PASSWORD, None), a.token()))
        .await
        .unwrap()
        .into_inner()
        .valid_until
        .unwrap();
    assert!(until.seconds > 0);
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let ticket = request_link(&env, new_device("tablet", &ik, 0)).await;
    env.devices()
        .approve_link(authed(
            pb::ApproveLinkRequest {
                link_code: ticket.link_code.clone(),
            },
            a.token(),
        ))
        .await
        .unwrap();
    assert_eq!(collect_link(&env, &ticket).await.unwrap().device_id, 3);
    // Only for this session, and only for the window.
    env.devices()
        .remove_device(authed(pb::RemoveDeviceRequest { device_id: 3 }, a.token()))
        .await
        .unwrap();
    let err = env
        .devices()
        .remove_device(authed(
            pb::RemoveDeviceRequest { device_id: 1 },
            &laptop.access_token,
        ))
        .await
        .unwrap_err();
    assert!(step_up_required(&err), "{err:?}");
    env.clock.advance(LATER);
    let err = env
        .auth()
        .logout(authed(pb::LogoutRequest { all_sessions: true }, a.token()))
        .await
        .unwrap_err();
    assert!(step_up_required(&err), "{err:?}");
    // Logging out the calling session alone never needs it.
    env.auth()
        .logout(authed(
            pb::LogoutRequest {
                all_sessions: false,
            },
            &laptop.access_token,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_linked_device_starts_without_a_step_up() {
    let env = start().await;
    let a = env.register("bob", 0).await;
    let (_, laptop, _) = link(&env, &a, 0).await;
    // Linked by approval, not by password: its first session has proved nothing.
    let err = env
        .devices()
        .remove_device(authed(
            pb::RemoveDeviceRequest { device_id: 1 },
            &laptop.access_token,
        ))
        .await
        .unwrap_err();
    assert!(step_up_required(&err), "{err:?}");
    env.auth()
        .step_up(authed(step_up(PASSWORD, None), &laptop.access_token))
        .await
        .unwrap();
    env.devices()
        .remove_device(authed(
            pb::RemoveDeviceRequest { device_id: 1 },
            &laptop.access_token,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn with_totp_the_step_up_needs_the_second_factor() {
    use pb::step_up_request::SecondFactor as F;
    let env = start().await;
    let a = env.register("carol", 0).await;
    let (secret, recovery) = enrol(&env, &a).await;
    env.clock.advance(LATER);
    let err = env
        .auth()
        .step_up(authed(step_up(PASSWORD, None), a.token()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "MFA_REQUIRED")
    );
    let err = env
        .auth()
        .step_up(authed(
            step_up(PASSWORD, Some(F::TotpCode("000000".into()))),
            a.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "INVALID_CODE")
    );
    let err = env
        .auth()
        .change_password(authed(
            pb::ChangePasswordRequest {
                old_password: PASSWORD.into(),
                new_password: "a brand new password".into(),
            },
            a.token(),
        ))
        .await
        .unwrap_err();
    assert!(step_up_required(&err), "{err:?}");
    // A recovery code works as the second factor too (and is used up).
    env.clock.advance(Duration::from_secs(30));
    env.auth()
        .step_up(authed(
            step_up(PASSWORD, Some(F::RecoveryCode(recovery[0].clone()))),
            a.token(),
        ))
        .await
        .unwrap();
    env.auth()
        .change_password(authed(
            pb::ChangePasswordRequest {
                old_password: PASSWORD.into(),
                new_password: "a brand new password".into(),
            },
            a.token(),
        ))
        .await
        .unwrap();
    env.clock.advance(LATER);
    env.auth()
        .step_up(authed(
            step_up(
                "a brand new password",
                Some(F::TotpCode(totp_now(&secret, &env.clock))),
            ),
            a.token(),
        ))
        .await
        .unwrap();
}

async fn notices(env: &Env, token: &str) -> Vec<pb::DeviceNotice> {
    env.devices()
        .list_device_notices(authed(pb::ListDeviceNoticesRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .notices
}

#[tokio::test]
async fn devices_that_were_offline_learn_of_links_and_removals() {
    use pb::DeviceNoticeKind as K;
    let env = start().await;
    let a = env.register("dave", 0).await;
    let (dev2, laptop, ik2) = link(&env, &a, 0).await;
    let (dev3, _, _) = link(&env, &a, 0).await;
    // The first device was never listening: both links wait for it, oldest first, with the
    // identity key to compare.
    let first = notices(&env, a.token()).await;
    assert_eq!(
        first
            .iter()
            .map(|n| (n.kind(), n.device_id, n.by_device_id))
            .collect::<Vec<_>>(),
        vec![(K::Linked, dev2, 1), (K::Linked, dev3, 1)]
    );
    assert_eq!(
        first[0].identity_key,
        ik2.identity_key().to_bytes().to_vec()
    );
    assert!(first[0].notice_id < first[1].notice_id);
    // The laptop hears of the device linked after it, not of itself.
    let second = notices(&env, &laptop.access_token).await;
    assert_eq!(
        second.iter().map(|n| n.device_id).collect::<Vec<_>>(),
        vec![dev3]
    );
    // Acknowledging removes exactly what was acknowledged, for that device only.
    env.devices()
        .ack_device_notices(authed(
            pb::AckDeviceNoticesRequest {
                up_to: first[0].notice_id,
            },
            a.token(),
        ))
        .await
        .unwrap();
    assert_eq!(notices(&env, a.token()).await, first[1..].to_vec());
    assert_eq!(notices(&env, &laptop.access_token).await, second);
    // A removal is announced to the remaining devices.
    env.devices()
        .remove_device(authed(
            pb::RemoveDeviceRequest { device_id: dev3 },
            a.token(),
        ))
        .await
        .unwrap();
    let after = notices(&env, &laptop.access_token).await;
    assert_eq!(
        after
            .iter()
            .map(|n| (n.kind(), n.device_id))
            .collect::<Vec<_>>(),
        vec![(K::Linked, dev3), (K::Removed, dev3)]
    );
    // Another account's token sees only its own notices.
    let mallory = env.register("mallory", 0).await;
    assert!(notices(&env, mallory.token()).await.is_empty());
}
