//! Register, login, lockout and limits, account deletion.

use std::time::Duration;

use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::helpers::*;

#[tokio::test]
async fn register_then_login_with_a_normalized_username() {
    let env = start().await;
    let alice = env.register("Alice.Smith", 0).await;
    assert_eq!(alice.account_id.len(), 36);
    let t = &alice.tokens;
    assert!(t.access_token_expires_at.is_some() && t.refresh_token_expires_at.is_some());
    // The access token works on authenticated RPCs.
    let devices = env
        .devices()
        .list_devices(authed(pb::ListDevicesRequest {}, alice.token()))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices.len(), 1);
    assert!(devices[0].current);
    assert_eq!(devices[0].name, "phone");
    // Case-insensitive names: login as lowercase, and the name is taken in any case.
    let login = env.login("alice.smith", 1).await.unwrap();
    assert_eq!(login.account_id, alice.account_id);
    assert!(matches!(
        login.outcome,
        Some(pb::login_response::Outcome::Tokens(_))
    ));
    let err = env
        .auth()
        .register(pb::RegisterRequest {
            username: "ALICE.SMITH".into(),
            password: PASSWORD.into(),
            device: Some(new_device("x", &alice.ik, 0)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason(&err), "ALREADY_EXISTS");
}

#[tokio::test]
async fn bad_registrations_say_which_field_is_wrong() {
    let env = start().await;
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let register = |username: &str, password: &str, device: pb::NewDevice| {
        let mut client = env.auth();
        let req = pb::RegisterRequest {
            username: username.into(),
            password: password.into(),
            device: Some(device),
        };
        async move { client.register(req).await.unwrap_err() }
    };
    let err = register("1bad", PASSWORD, new_device("d", &ik, 0)).await;
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    assert_eq!(
        guardyn_common::error::violations_of(&err)[0].field,
        "username"
    );

    let err = register("bob", "short", new_device("d", &ik, 0)).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "WEAK_PASSWORD");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["min_length"],
        "12"
    );

    let mut bad_key = new_device("d", &ik, 0);
    bad_key.identity_key = vec![0x05; 10];
    let err = register("bob", PASSWORD, bad_key).await;
    assert_eq!(reason(&err), "INVALID_KEY");

    // A signed prekey signed by another identity.
    let other = guardyn_crypto::IdentityKeyPair::generate();
    let mut forged = new_device("d", &ik, 0);
    forged.signed_prekey = Some(signed_prekey(&other, 1));
    let err = register("bob", PASSWORD, forged).await;
    assert_eq!(reason(&err), "INVALID_SIGNATURE");
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["field"],
        "device.signed_prekey.signature"
    );
    let mut forged = new_device("d", &ik, 0);
    forged.last_resort_kem_prekey = Some(kem_prekey(&other, 7));
    let err = register("bob", PASSWORD, forged).await;
    assert_eq!(reason(&err), "INVALID_SIGNATURE");

    // Nothing was created by the failed attempts.
    env.register("bob", 0).await;
}

#[tokio::test]
async fn unknown_user_wrong_password_and_unknown_device_are_indistinguishable() {
    let env = start().await;
    env.register("carol", 0).await;
    let attempts = [
        ("nobody", "whatever password", 1),
        ("carol", "wrong password!!", 1),
        ("carol", PASSWORD, 9),
    ];
    for (user, password, device_id) in attempts {
        let err = env
            .auth()
            .login(pb::LoginRequest {
                username: user.into(),
                password: password.into(),
                device_id,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{user}");
        assert_eq!(reason(&err), "INVALID_CREDENTIALS", "{user}");
        assert_eq!(err.message(), "invalid credentials");
    }
}

#[tokio::test]
async fn repeated_failures_lock_the_username_out_exponentially() {
    let env = start_with(|c| {
        c.auth.lockout.threshold = 2;
        c.auth.lockout.base_secs = 30;
    })
    .await;
    env.register("dave", 0).await;
    let wrong = || {
        let mut c = env.auth();
        async move {
            c.login(pb::LoginRequest {
                username: "dave".into(),
                password: "not the password".into(),
                device_id: 1,
            })
            .await
            .unwrap_err()
        }
    };
    assert_eq!(reason(&wrong().await), "INVALID_CREDENTIALS");
    assert_eq!(reason(&wrong().await), "INVALID_CREDENTIALS");
    // Locked for 30 s: even the right password is refused, with retry information.
    let err = env.login("dave", 1).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(retry > Duration::from_secs(20) && retry <= Duration::from_secs(30));
    env.clock.advance(Duration::from_secs(31));
    // The next failure doubles the lockout.
    assert_eq!(reason(&wrong().await), "INVALID_CREDENTIALS");
    let err = env.login("dave", 1).await.unwrap_err();
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(retry > Duration::from_secs(50), "{retry:?}");
    env.clock.advance(Duration::from_secs(61));
    env.login("dave", 1).await.unwrap();
    // Success reset the count.
    assert_eq!(reason(&wrong().await), "INVALID_CREDENTIALS");
    env.login("dave", 1).await.unwrap();
}

#[tokio::test]
async fn registration_and_login_are_rate_limited_per_address() {
    let env = start_with(|c| {
        c.auth.limits.register_per_address = guardyn_common::ratelimit::RateLimit::new(2, 1);
        c.auth.limits.login_per_account = guardyn_common::ratelimit::RateLimit::new(2, 1);
    })
    .await;
    env.register("erin", 0).await;
    env.register("frank", 0).await;
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let err = env
        .auth()
        .register(pb::RegisterRequest {
            username: "grace".into(),
            password: PASSWORD.into(),
            device: Some(new_device("d", &ik, 0)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert!(err.get_details_retry_info().is_some());
    // Per account: the third login for one name is refused, another name still works.
    env.login("erin", 1).await.unwrap();
    env.login("erin", 1).await.unwrap();
    assert_eq!(
        reason(&env.login("erin", 1).await.unwrap_err()),
        "RATE_LIMITED"
    );
    env.login("frank", 1).await.unwrap();
}

#[tokio::test]
async fn deleting_an_account_removes_everything_and_frees_the_name() {
    let env = start().await;
    let heidi = env.register("heidi", 3).await;
    let ivan = env.register("ivan", 0).await;
    let err = env
        .auth()
        .delete_account(authed(
            pb::DeleteAccountRequest {
                password: "wrong password!".into(),
                second_factor: None,
            },
            heidi.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    env.auth()
        .delete_account(authed(
            pb::DeleteAccountRequest {
                password: PASSWORD.into(),
                second_factor: None,
            },
            heidi.token(),
        ))
        .await
        .unwrap();
    // Its token stops working at once, login fails, keys are gone, the name is free.
    let err = env
        .devices()
        .list_devices(authed(pb::ListDevicesRequest {}, heidi.token()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        reason(&env.login("heidi", 1).await.unwrap_err()),
        "INVALID_CREDENTIALS"
    );
    let err = env
        .keys()
        .get_pre_key_bundle(authed(
            pb::GetPreKeyBundleRequest {
                account_id: heidi.account_id.clone(),
                device_id: 0,
            },
            ivan.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let again = env.register("heidi", 0).await;
    assert_ne!(again.account_id, heidi.account_id);
}
