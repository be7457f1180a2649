//! Device linking, listing, renaming, removal, limits and authorization.

use std::time::Duration;

use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::helpers::*;
use super::sessions::{collect_link, link, request_link};

fn approve(code: &str) -> pb::ApproveLinkRequest {
    pb::ApproveLinkRequest {
        link_code: code.into(),
    }
}

#[tokio::test]
async fn a_new_device_joins_once_an_existing_device_approves_it() {
    let env = start().await;
    let a = env.register("alice", 0).await;
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let ticket = request_link(&env, new_device("laptop", &ik, 1)).await;
    assert!(ticket.link_code.len() >= 22 && ticket.link_code.len() <= 64);
    assert_ne!(ticket.link_code, ticket.link_secret);
    // Not approved yet: the new device is told to poll.
    let err = collect_link(&env, &ticket).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "LINK_PENDING");
    assert!(
        err.get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .is_some()
    );
    // The code alone (without the new device's secret) collects nothing.
    let glimpsed = pb::RequestLinkResponse {
        link_secret: "not-the-secret".into(),
        ..ticket.clone()
    };
    let approved = env
        .devices()
        .approve_link(authed(approve(&ticket.link_code), a.token()))
        .await
        .unwrap()
        .into_inner();
    let shown = approved.device.unwrap();
    assert_eq!((shown.device_id, shown.name.as_str()), (2, "laptop"));
    assert_eq!(approved.identity_key, ik.identity_key().to_bytes().to_vec());
    let err = collect_link(&env, &glimpsed).await.unwrap_err();
    assert_eq!(reason(&err), "CODE_EXPIRED");
    let linked = collect_link(&env, &ticket).await.unwrap();
    assert_eq!(linked.device_id, 2);
    let t = linked.tokens.unwrap();
    let list = env
        .devices()
        .list_devices(authed(pb::ListDevicesRequest {}, &t.access_token))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(
        list.iter().map(|d| d.device_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(list[1].current && !list[0].current);
    // Single use, for approving and for collecting.
    let err = collect_link(&env, &ticket).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "CODE_EXPIRED");
    let err = env
        .devices()
        .approve_link(authed(approve(&ticket.link_code), a.token()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A request expires after its lifetime.
    let late = request_link(&env, new_device("tablet", &ik, 0)).await;
    env.clock.advance(Duration::from_secs(301));
    env.auth()
        .step_up(authed(
            pb::StepUpRequest {
                password: PASSWORD.into(),
                second_factor: None,
            },
            &t.access_token,
        ))
        .await
        .unwrap();
    let err = env
        .devices()
        .approve_link(authed(approve(&late.link_code), &t.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        reason(&collect_link(&env, &late).await.unwrap_err()),
        "CODE_EXPIRED"
    );
    // Bad keys on the new device are refused with the field, before anything is stored.
    let mut bad = new_device("tablet", &ik, 0);
    bad.signed_prekey = Some(signed_prekey(
        &guardyn_crypto::IdentityKeyPair::generate(),
        3,
    ));
    let err = env
        .devices()
        .request_link(pb::RequestLinkRequest { device: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_SIGNATURE");
    // Codes are checked at the edge.
    let err = env
        .devices()
        .link_device(pb::LinkDeviceRequest {
            link_code: "x".repeat(65),
            link_secret: "y".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn the_device_limit_is_enforced() {
    let env = start_with(|c| c.auth.max_devices = 2).await;
    let a = env.register("bob", 0).await;
    link(&env, &a, 0).await;
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let ticket = request_link(&env, new_device("third", &ik, 0)).await;
    let err = env
        .devices()
        .approve_link(authed(approve(&ticket.link_code), a.token()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "DEVICE_LIMIT_REACHED");
}

#[tokio::test]
async fn rename_and_remove_stay_within_the_account() {
    let env = start().await;
    let a = env.register("carol", 0).await;
    let (dev2, laptop, _) = link(&env, &a, 2).await;
    let mallory = env.register("mallory", 0).await;

    let renamed = env
        .devices()
        .rename_device(authed(
            pb::RenameDeviceRequest {
                device_id: dev2,
                name: "work laptop".into(),
            },
            a.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap();
    assert_eq!(renamed.name, "work laptop");
    let err = env
        .devices()
        .rename_device(authed(
            pb::RenameDeviceRequest {
                device_id: dev2,
                name: "".into(),
            },
            a.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ARGUMENT");

    // Mallory addresses device 2 of her own account: it does not exist; carol's is untouched.
    for err in [
        env.devices()
            .rename_device(authed(
                pb::RenameDeviceRequest {
                    device_id: dev2,
                    name: "pwned".into(),
                },
                mallory.token(),
            ))
            .await
            .unwrap_err(),
        env.devices()
            .remove_device(authed(
                pb::RemoveDeviceRequest { device_id: dev2 },
                mallory.token(),
            ))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::NotFound);
    }
    env.devices()
        .list_devices(authed(pb::ListDevicesRequest {}, &laptop.access_token))
        .await
        .unwrap();

    // Removing device 2 revokes its session and deletes its keys.
    env.devices()
        .remove_device(authed(
            pb::RemoveDeviceRequest { device_id: dev2 },
            a.token(),
        ))
        .await
        .unwrap();
    let err = env
        .devices()
        .list_devices(authed(pb::ListDevicesRequest {}, &laptop.access_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = env
        .auth()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: laptop.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "DEVICE_REMOVED");
    let err = env
        .keys()
        .get_pre_key_bundle(authed(
            pb::GetPreKeyBundleRequest {
                account_id: a.account_id.clone(),
                device_id: dev2,
            },
            mallory.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        reason(&env.login("carol", dev2).await.unwrap_err()),
        "INVALID_CREDENTIALS"
    );
    // The last device cannot go.
    let err = env
        .devices()
        .remove_device(authed(pb::RemoveDeviceRequest { device_id: 1 }, a.token()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "LAST_DEVICE");
    // Device ids are not reused.
    let (dev3, _, _) = link(&env, &a, 0).await;
    assert_eq!(dev3, 3);
}
