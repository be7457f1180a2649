//! The events auth publishes (payloads of guardyn/auth/v1/events.proto), and the process-wide
//! listener that applies `auth.session.revoked` to token verification.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt as _;
use guardyn_events::{Delivery, Subscription};
use guardyn_proto::guardyn::auth::v1 as pb;
use prost::Message;
use tokio_stream::StreamExt as _;
use tonic::Code;

use super::helpers::*;
use super::sessions::link;

async fn subscribe(env: &Env) -> Subscription {
    env.server.bus().subscribe("auth.>").await.unwrap()
}

/// The next event on `subject` (others are skipped), decoded.
async fn next<M: Message + Default>(sub: &mut Subscription, subject: &str) -> M {
    let wait = async {
        loop {
            match sub.next().await {
                Some(Delivery::Event(e)) if e.subject() == subject => {
                    return M::decode(e.payload().clone()).unwrap();
                }
                Some(_) => {}
                None => panic!("the bus closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {subject} event"))
}

/// Every event already delivered, without waiting: the in-process bus hands an event to its
/// subscribers inside `publish`, so whatever an RPC published is here once the RPC returned.
fn pending(sub: &mut Subscription) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    while let Some(Some(d)) = sub.next().now_or_never() {
        match d {
            Delivery::Event(e) => out.push((e.subject().to_owned(), e.payload().clone())),
            Delivery::Lagged { missed } => panic!("lagged by {missed}"),
        }
    }
    out
}

async fn list_devices(env: &Env, token: &str) -> Result<(), tonic::Status> {
    env.devices()
        .list_devices(authed(pb::ListDevicesRequest {}, token))
        .await
        .map(drop)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn device_and_session_rpcs_publish_their_events() {
    let env = start().await;
    let mut sub = subscribe(&env).await;
    let a = env.register("alice", 0).await;

    // LinkDevice -> auth.device.linked.
    let (dev, laptop, _) = link(&env, &a, 0).await;
    let linked: pb::DeviceLinkedEvent = next(&mut sub, "auth.device.linked").await;
    assert_eq!(
        linked,
        pb::DeviceLinkedEvent {
            account_id: a.account_id.clone(),
            device_id: dev,
            linked_by_device_id: 1,
            device_name: "laptop".into(),
        }
    );

    // RevokeSession -> auth.session.revoked for that session, valid until its last token's
    // expiry.
    env.auth()
        .revoke_session(authed(
            pb::RevokeSessionRequest {
                session_id: laptop.session_id.clone(),
            },
            a.token(),
        ))
        .await
        .unwrap();
    let revoked: pb::SessionRevokedEvent = next(&mut sub, "auth.session.revoked").await;
    assert_eq!(revoked.session_id, laptop.session_id);
    assert_eq!(revoked.account_id, a.account_id);
    assert_eq!(revoked.device_id, dev);
    let expires = laptop.access_token_expires_at.unwrap().seconds as u64;
    assert!(revoked.tokens_valid_until >= expires, "{revoked:?}");

    // RemoveDevice -> the device's session is revoked, then auth.device.removed.
    let relogin = env.login("alice", dev).await.unwrap();
    let sid = match relogin.outcome {
        Some(pb::login_response::Outcome::Tokens(t)) => t.session_id,
        _ => panic!("expected tokens"),
    };
    env.devices()
        .remove_device(authed(
            pb::RemoveDeviceRequest { device_id: dev },
            a.token(),
        ))
        .await
        .unwrap();
    let revoked: pb::SessionRevokedEvent = next(&mut sub, "auth.session.revoked").await;
    assert_eq!((revoked.session_id, revoked.device_id), (sid, dev));
    let removed: pb::DeviceRemovedEvent = next(&mut sub, "auth.device.removed").await;
    assert_eq!(
        removed,
        pb::DeviceRemovedEvent {
            account_id: a.account_id.clone(),
            device_id: dev,
        }
    );

    // A refused call publishes nothing.
    let err = env
        .devices()
        .remove_device(authed(pb::RemoveDeviceRequest { device_id: 1 }, a.token()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(pending(&mut sub).is_empty());
}

#[tokio::test]
async fn deleting_an_account_publishes_its_revoked_sessions_then_the_deletion() {
    let env = start().await;
    let mut sub = subscribe(&env).await;
    let a = env.register("bob", 0).await;
    let (dev, laptop, _) = link(&env, &a, 0).await;
    let _: pb::DeviceLinkedEvent = next(&mut sub, "auth.device.linked").await;
    env.auth()
        .delete_account(authed(
            pb::DeleteAccountRequest {
                password: PASSWORD.into(),
                second_factor: None,
            },
            a.token(),
        ))
        .await
        .unwrap();
    let events = pending(&mut sub);
    let subjects: Vec<&str> = events.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "auth.session.revoked",
            "auth.session.revoked",
            "auth.account.deleted"
        ]
    );
    let mut revoked: Vec<(String, u32)> = events[..2]
        .iter()
        .map(|(_, p)| {
            let e = pb::SessionRevokedEvent::decode(p.clone()).unwrap();
            assert_eq!(e.account_id, a.account_id);
            (e.session_id, e.device_id)
        })
        .collect();
    revoked.sort_by_key(|(_, d)| *d);
    assert_eq!(
        revoked,
        vec![
            (a.tokens.session_id.clone(), 1),
            (laptop.session_id.clone(), dev)
        ]
    );
    let deleted = pb::AccountDeletedEvent::decode(events[2].1.clone()).unwrap();
    assert_eq!(
        deleted,
        pb::AccountDeletedEvent {
            account_id: a.account_id.clone(),
            device_ids: vec![1, dev],
        }
    );
}

#[tokio::test]
async fn claiming_prekeys_below_the_threshold_publishes_prekeys_low() {
    let env = start_with(|c| c.auth.prekey_low_threshold = 3).await;
    let mut sub = subscribe(&env).await;
    let a = env.register("carol", 4).await;
    let b = env.register("dan", 0).await;
    let claim = || async {
        env.keys()
            .get_pre_key_bundle(authed(
                pb::GetPreKeyBundleRequest {
                    account_id: a.account_id.clone(),
                    device_id: 1,
                },
                b.token(),
            ))
            .await
            .unwrap()
    };
    // 4 -> 3 one-time EC and KEM prekeys: not below 3, but no KeyPackages were uploaded,
    // so the device is already low on those.
    claim().await;
    let low: pb::PreKeysLowEvent = next(&mut sub, "auth.prekeys.low").await;
    assert_eq!(
        low,
        pb::PreKeysLowEvent {
            account_id: a.account_id.clone(),
            device_id: 1,
            one_time_prekeys: 3,
            one_time_kem_prekeys: 3,
            key_packages: 0,
            has_last_resort_kem_prekey: true,
        }
    );
    claim().await;
    let low: pb::PreKeysLowEvent = next(&mut sub, "auth.prekeys.low").await;
    assert_eq!((low.one_time_prekeys, low.one_time_kem_prekeys), (2, 2));
}

#[tokio::test]
async fn a_revocation_event_from_the_bus_alone_stops_the_sessions_tokens() {
    let env = start().await;
    let a = env.register("erin", 0).await;
    let (dev, laptop, _) = link(&env, &a, 0).await;
    list_devices(&env, &laptop.access_token).await.unwrap();

    // Published by "another process": this server's auth never revoked the session.
    let event = pb::SessionRevokedEvent {
        session_id: laptop.session_id.clone(),
        account_id: a.account_id.clone(),
        device_id: dev,
        tokens_valid_until: now_s() + 3600,
    };
    env.server
        .bus()
        .publish(
            guardyn_common::events::auth::SESSION_REVOKED,
            Bytes::from(event.encode_to_vec()),
        )
        .await
        .unwrap();
    // The listener applies it asynchronously: poll, bounded at ~3 s.
    let mut refused = None;
    for _ in 0..60 {
        match list_devices(&env, &laptop.access_token).await {
            Err(e) => {
                refused = Some(e);
                break;
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let err = refused.expect("the revoked session's token was still accepted after 3 s");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "SESSION_REVOKED");
    // Only that session: the account's other session is untouched.
    list_devices(&env, a.token()).await.unwrap();
}
