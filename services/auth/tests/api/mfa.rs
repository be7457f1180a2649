//! TOTP enrolment, MFA login, recovery codes, disabling.

use std::time::Duration;

use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;

use super::helpers::*;

/// Enrol TOTP for `user`; returns the base32 secret and the recovery codes.
pub async fn enrol(env: &Env, user: &User) -> (String, Vec<String>) {
    let begin = env
        .mfa()
        .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, user.token()))
        .await
        .unwrap()
        .into_inner();
    assert!(begin.otpauth_uri.starts_with("otpauth://totp/Guardyn:"));
    assert!(
        begin
            .otpauth_uri
            .contains(&format!("secret={}", begin.secret))
    );
    let err = env
        .mfa()
        .confirm_totp_enrollment(authed(
            pb::ConfirmTotpEnrollmentRequest {
                totp_code: "000000".into(),
            },
            user.token(),
        ))
        .await;
    if let Err(err) = err {
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(reason(&err), "INVALID_CODE");
    }
    let codes = env
        .mfa()
        .confirm_totp_enrollment(authed(
            pb::ConfirmTotpEnrollmentRequest {
                totp_code: totp_now(&begin.secret, &env.clock),
            },
            user.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    (begin.secret, codes)
}

pub fn challenge(r: pb::LoginResponse) -> String {
    match r.outcome {
        Some(pb::login_response::Outcome::MfaChallenge(c)) => c.mfa_ticket,
        _ => panic!("expected an MFA challenge"),
    }
}

pub async fn complete(
    env: &Env,
    ticket: &str,
    code: pb::complete_mfa_login_request::Code,
) -> Result<pb::CompleteMfaLoginResponse, tonic::Status> {
    env.auth()
        .complete_mfa_login(pb::CompleteMfaLoginRequest {
            mfa_ticket: ticket.into(),
            code: Some(code),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn totp_turns_login_into_two_steps_with_single_use_codes() {
    use pb::complete_mfa_login_request::Code as C;
    let env = start().await;
    let a = env.register("alice", 0).await;
    let (secret, recovery) = enrol(&env, &a).await;
    assert_eq!(recovery.len(), 10);
    assert_eq!(recovery[0].len(), 19);
    let status = env
        .mfa()
        .get_mfa_status(authed(pb::GetMfaStatusRequest {}, a.token()))
        .await
        .unwrap()
        .into_inner();
    assert!(status.totp_enabled && status.totp_enabled_at.is_some());
    assert_eq!(status.remaining_recovery_codes, 10);
    let err = env
        .mfa()
        .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, a.token()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MFA_ALREADY_ENABLED");

    // The confirmation code was consumed: the same step is refused.
    let ticket = challenge(env.login("alice", 1).await.unwrap());
    let err = complete(&env, &ticket, C::TotpCode(totp_now(&secret, &env.clock)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "INVALID_CODE");
    // Next step: accepted once.
    env.clock.advance(Duration::from_secs(30));
    let code = totp_now(&secret, &env.clock);
    let done = complete(&env, &ticket, C::TotpCode(code.clone()))
        .await
        .unwrap();
    assert_eq!(done.remaining_recovery_codes, 10);
    env.devices()
        .list_devices(authed(
            pb::ListDevicesRequest {},
            &done.tokens.unwrap().access_token,
        ))
        .await
        .unwrap();
    // The ticket is used up; the code too.
    assert_eq!(
        reason(
            &complete(&env, &ticket, C::TotpCode(code.clone()))
                .await
                .unwrap_err()
        ),
        "CODE_EXPIRED"
    );
    let ticket = challenge(env.login("alice", 1).await.unwrap());
    assert_eq!(
        reason(
            &complete(&env, &ticket, C::TotpCode(code))
                .await
                .unwrap_err()
        ),
        "INVALID_CODE"
    );
    // A recovery code works once, in any formatting.
    let done = complete(
        &env,
        &ticket,
        C::RecoveryCode(recovery[0].replace('-', "").to_lowercase()),
    )
    .await
    .unwrap();
    assert_eq!(done.remaining_recovery_codes, 9);
    let ticket = challenge(env.login("alice", 1).await.unwrap());
    assert_eq!(
        reason(
            &complete(&env, &ticket, C::RecoveryCode(recovery[0].clone()))
                .await
                .unwrap_err()
        ),
        "INVALID_CODE"
    );
    // Tickets expire.
    env.clock.advance(Duration::from_secs(301));
    assert_eq!(
        reason(
            &complete(&env, &ticket, C::RecoveryCode(recovery[1].clone()))
                .await
                .unwrap_err()
        ),
        "CODE_EXPIRED"
    );
}

#[tokio::test]
async fn a_ticket_allows_five_attempts() {
    use pb::complete_mfa_login_request::Code as C;
    let env = start().await;
    let a = env.register("bob", 0).await;
    let (_secret, recovery) = enrol(&env, &a).await;
    let ticket = challenge(env.login("bob", 1).await.unwrap());
    for _ in 0..5 {
        assert_eq!(
            reason(
                &complete(&env, &ticket, C::TotpCode("123456".into()))
                    .await
                    .unwrap_err()
            ),
            "INVALID_CODE"
        );
    }
    assert_eq!(
        reason(
            &complete(&env, &ticket, C::RecoveryCode(recovery[0].clone()))
                .await
                .unwrap_err()
        ),
        "CODE_EXPIRED"
    );
}

#[tokio::test]
async fn totp_checks_are_rate_limited_per_account() {
    use pb::complete_mfa_login_request::Code as C;
    let env = start_with(|c| {
        c.auth.limits.totp_per_account = guardyn_common::ratelimit::RateLimit::new(3, 1)
    })
    .await;
    let a = env.register("carol", 0).await;
    enrol(&env, &a).await; // two checks (wrong + right)
    let ticket = challenge(env.login("carol", 1).await.unwrap());
    assert_eq!(
        reason(
            &complete(&env, &ticket, C::TotpCode("123456".into()))
                .await
                .unwrap_err()
        ),
        "INVALID_CODE"
    );
    let err = complete(&env, &ticket, C::TotpCode("123456".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
}

#[tokio::test]
async fn disabling_and_deleting_need_password_and_second_factor() {
    let env = start().await;
    let a = env.register("dave", 0).await;
    let (secret, recovery) = enrol(&env, &a).await;
    let err = env
        .auth()
        .delete_account(authed(
            pb::DeleteAccountRequest {
                password: PASSWORD.into(),
                second_factor: None,
            },
            a.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "MFA_REQUIRED");

    use pb::disable_totp_request::SecondFactor as F;
    let disable = |password: &str, f: F| {
        let mut c = env.mfa();
        let req = authed(
            pb::DisableTotpRequest {
                password: password.into(),
                second_factor: Some(f),
            },
            a.token(),
        );
        async move { c.disable_totp(req).await }
    };
    let err = disable("wrong password!!", F::RecoveryCode(recovery[0].clone()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "INVALID_CREDENTIALS")
    );
    let err = disable(PASSWORD, F::TotpCode("000000".into()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "INVALID_CODE")
    );
    // Regenerating recovery codes invalidates the old ones.
    env.clock.advance(Duration::from_secs(30));
    let fresh = env
        .mfa()
        .regenerate_recovery_codes(authed(
            pb::RegenerateRecoveryCodesRequest {
                totp_code: totp_now(&secret, &env.clock),
            },
            a.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    assert_eq!(fresh.len(), 10);
    assert_eq!(
        reason(
            &disable(PASSWORD, F::RecoveryCode(recovery[0].clone()))
                .await
                .unwrap_err()
        ),
        "INVALID_CODE"
    );
    disable(PASSWORD, F::RecoveryCode(fresh[0].clone()))
        .await
        .unwrap();
    let status = env
        .mfa()
        .get_mfa_status(authed(pb::GetMfaStatusRequest {}, a.token()))
        .await
        .unwrap()
        .into_inner();
    assert!(!status.totp_enabled);
    assert_eq!(status.remaining_recovery_codes, 0);
    let err = disable(PASSWORD, F::TotpCode("000000".into()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MFA_NOT_ENABLED");
    assert!(matches!(
        env.login("dave", 1).await.unwrap().outcome,
        Some(pb::login_response::Outcome::Tokens(_))
    ));
}
