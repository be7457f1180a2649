//! Linking by approval, step-up, and device changes reaching devices that were offline.

use guardyn_sdk::{Client, Event, SdkError, Storage};

use super::support::*;

fn device_events(events: &[Event]) -> Vec<(bool, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::DeviceLinked { device_id } => Some((true, *device_id)),
            Event::DeviceRemoved { device_id } => Some((false, *device_id)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn an_offline_device_learns_of_links_and_removals_once_when_it_reconnects() {
    let server = server().await;
    let phone = register(&server, "devices").await;
    let laptop = link(&server, &phone).await;
    // Settle the laptop's own backlog, then it goes offline.
    laptop.sync().await.unwrap();
    let tablet = link(&server, &phone).await;
    let tablet_id = tablet.device_id();
    drop(tablet);
    phone.remove_device(tablet_id).await.unwrap();
    // Reconnecting, the laptop hears of both changes, once.
    let events = laptop.sync().await.unwrap();
    assert_eq!(
        device_events(&events),
        vec![(true, tablet_id), (false, tablet_id)]
    );
    assert!(device_events(&laptop.sync().await.unwrap()).is_empty());
}

#[tokio::test]
async fn approving_a_link_needs_a_recent_step_up_and_the_new_device_waits_for_it() {
    let (clock, shared) = manual_clock();
    let server = guardyn_testkit::TestServer::start_with(options(Some(shared)))
        .await
        .unwrap();
    let phone = register(&server, "stepup").await;
    clock.advance(std::time::Duration::from_secs(301));
    let pending = Client::request_link(server.channel(), Storage::Memory, config())
        .await
        .unwrap();
    let err = phone.approve_link(pending.code()).await.unwrap_err();
    assert!(
        matches!(&err, SdkError::Server { reason: Some(r), .. } if r.as_str_name() == "ERROR_REASON_STEP_UP_REQUIRED"),
        "{err:?}"
    );
    phone.step_up(PASSWORD, None).await.unwrap();
    let code = pending.code().to_owned();
    let approve = async {
        // The new device is already polling when the approval lands.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        phone.approve_link(&code).await.unwrap()
    };
    let (linked, approved) = tokio::join!(pending.finish(WAIT), approve);
    let linked = linked.unwrap();
    assert_eq!(linked.device_id(), approved.device_id);
    assert_eq!(linked.identity_key().await, approved.identity_key);
}
