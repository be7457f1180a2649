//! Shared helpers: a device directory double (auth's role), server start-up, authenticated
//! requests and stream reading.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use guardyn_common::clock::ManualClock;
use guardyn_common::mesh::{DeviceDirectory, DeviceEntry, MeshError};
use guardyn_proto::guardyn::messaging::v1::{
    AckRequest, DeliveredEnvelope, Envelope, EnvelopeType, ListenRequest, ListenResponse,
    SendMessageRequest, group_service_client::GroupServiceClient, listen_response::Item,
    messaging_service_client::MessagingServiceClient,
};
pub use guardyn_testkit::rpc::{authed, detail};
use guardyn_testkit::{Options, TestServer};
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Auth's device directory, played by maps (a test double of the auth service): devices, the
/// pinned MLS signature keys (the first key asked about for a device is pinned, as auth pins
/// the key of a device's first KeyPackage upload) and, once [`Directory::require_claims`] is
/// called, the KeyPackageRefs ClaimKeyPackages handed out (until then every KeyPackage counts
/// as handed out).
#[derive(Debug, Default)]
pub struct Directory(Mutex<HashMap<String, Vec<DeviceEntry>>>, Mutex<MlsKeys>);

#[derive(Debug, Default)]
pub struct MlsKeys {
    pinned: HashMap<(String, u32), Vec<u8>>,
    claimed: Option<std::collections::HashSet<(String, u32, Vec<u8>)>>,
}

impl Directory {
    /// Set an account's devices as (device id, registration id).
    pub fn set(&self, account: &str, devices: &[(u32, u32)]) {
        self.0.lock().unwrap().insert(
            account.to_owned(),
            devices
                .iter()
                .map(|&(device_id, registration_id)| DeviceEntry {
                    device_id,
                    registration_id,
                })
                .collect(),
        );
    }

    /// Pin a device's MLS signature key (what its first KeyPackage upload does).
    pub fn pin(&self, account: &str, device: u32, signature_key: &[u8]) {
        self.1
            .lock()
            .unwrap()
            .pinned
            .insert((account.to_owned(), device), signature_key.to_vec());
    }

    /// From now on only KeyPackages passed to [`Directory::hand_out`] count as handed out.
    pub fn require_claims(&self) {
        self.1.lock().unwrap().claimed.get_or_insert_default();
    }

    /// Record a KeyPackage as handed out (what ClaimKeyPackages does).
    pub fn hand_out(&self, account: &str, device: u32, key_package: &[u8]) {
        let kp_ref = guardyn_crypto::mls::key_package_ref(key_package).unwrap();
        self.1
            .lock()
            .unwrap()
            .claimed
            .get_or_insert_default()
            .insert((account.to_owned(), device, kp_ref));
    }
}

#[async_trait]
impl DeviceDirectory for Directory {
    async fn devices(&self, account_id: &str) -> Result<Option<Vec<DeviceEntry>>, MeshError> {
        Ok(self.0.lock().unwrap().get(account_id).cloned())
    }

    async fn mls_key_pinned(
        &self,
        account_id: &str,
        device_id: u32,
        signature_key: &[u8],
    ) -> Result<bool, MeshError> {
        let mut keys = self.1.lock().unwrap();
        let pinned = keys
            .pinned
            .entry((account_id.to_owned(), device_id))
            .or_insert_with(|| signature_key.to_vec());
        Ok(pinned == signature_key)
    }

    async fn key_package_claimed(
        &self,
        account_id: &str,
        device_id: u32,
        key_package_ref: &[u8],
    ) -> Result<bool, MeshError> {
        Ok(self.1.lock().unwrap().claimed.as_ref().is_none_or(|c| {
            c.contains(&(account_id.to_owned(), device_id, key_package_ref.to_vec()))
        }))
    }
}

pub struct Env {
    pub server: TestServer,
    pub dir: Arc<Directory>,
    pub clock: ManualClock,
}

pub fn acct(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut guardyn::config::Config) + Send + 'static,
    ) -> Env {
        let server = Self::options(Some(Box::new(configure)), None, ManualClock::new(), false);
        server.await
    }

    /// A server whose storage offers no joint store (as TiKV beside ScyllaDB): sends reserve
    /// their id, append, then complete the reservation.
    pub async fn start_stepwise() -> Env {
        Self::start_stepwise_with(|_| {}).await
    }

    /// [`Env::start_stepwise`] with a configuration tweak.
    pub async fn start_stepwise_with(
        configure: impl FnOnce(&mut guardyn::config::Config) + Send + 'static,
    ) -> Env {
        Self::options(Some(Box::new(configure)), None, ManualClock::new(), true).await
    }

    /// A server on an existing data directory (a restart), with the given clock.
    pub async fn start_on(data_dir: &std::path::Path, clock: ManualClock) -> Env {
        Self::options(None, Some(data_dir.to_owned()), clock, false).await
    }

    /// A server on an existing data directory, with the given clock and configuration.
    pub async fn start_configured_on(
        data_dir: &std::path::Path,
        clock: ManualClock,
        configure: impl FnOnce(&mut guardyn::config::Config) + Send + 'static,
    ) -> Env {
        Self::options(
            Some(Box::new(configure)),
            Some(data_dir.to_owned()),
            clock,
            false,
        )
        .await
    }

    async fn options(
        configure: Option<guardyn_testkit::ConfigureFn>,
        data_dir: Option<std::path::PathBuf>,
        clock: ManualClock,
        without_joint: bool,
    ) -> Env {
        let dir = Arc::new(Directory::default());
        let server = TestServer::start_with(Options {
            services: vec!["messaging".into()],
            configure,
            clock: Some(Arc::new(clock.clone())),
            directory: Some(dir.clone()),
            data_dir,
            without_joint,
            ..Options::default()
        })
        .await
        .unwrap();
        Env { server, dir, clock }
    }

    pub fn token(&self, account: &str, device: u32) -> String {
        self.server
            .token(account, device, &format!("session-{account}-{device}"))
    }

    pub fn messaging(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::new(self.server.channel())
    }

    /// Acknowledge device 1 of `account`'s queue up to `up_to` (cumulative); how many it removed.
    pub async fn ack_up_to(&self, account: &str, up_to: u64) -> u32 {
        self.messaging()
            .ack(authed(
                AckRequest {
                    server_ids: vec![],
                    up_to_server_id: up_to,
                    group_acks: vec![],
                },
                &self.token(account, 1),
            ))
            .await
            .unwrap()
            .into_inner()
            .acked
    }

    pub fn groups(&self) -> GroupServiceClient<Channel> {
        GroupServiceClient::new(self.server.channel())
    }

    pub async fn listen(&self, account: &str, device: u32) -> Streaming<ListenResponse> {
        self.messaging()
            .listen(authed(ListenRequest {}, &self.token(account, device)))
            .await
            .unwrap()
            .into_inner()
    }

    /// Send one message with one envelope per given (device, registration id); the content is
    /// `content` with the device id appended.
    pub async fn send(
        &self,
        from: (&str, u32),
        to: &str,
        devices: &[(u32, u32)],
        id: &str,
        content: &[u8],
    ) -> Result<guardyn_proto::guardyn::messaging::v1::SendMessageResponse, Status> {
        let req = send_request(to, devices, id, content, from.0 == to);
        self.messaging()
            .send_message(authed(req, &self.token(from.0, from.1)))
            .await
            .map(tonic::Response::into_inner)
    }
}

pub fn send_request(
    to: &str,
    devices: &[(u32, u32)],
    id: &str,
    content: &[u8],
    sync: bool,
) -> SendMessageRequest {
    SendMessageRequest {
        destination_account_id: to.to_owned(),
        client_message_id: id.to_owned(),
        envelopes: devices
            .iter()
            .map(|&(d, r)| Envelope {
                destination_device_id: d,
                destination_registration_id: r,
                r#type: EnvelopeType::Ciphertext as i32,
                content: [content, &[d as u8]].concat(),
            })
            .collect(),
        urgent: false,
        online_only: false,
        sync,
    }
}

/// The next stream item (fails the test after 10 s without one).
pub async fn next(stream: &mut Streaming<ListenResponse>) -> Item {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("stream item within 10 s")
        .expect("stream item")
        .expect("stream open")
        .item
        .expect("item set")
}

pub async fn next_envelope(stream: &mut Streaming<ListenResponse>) -> DeliveredEnvelope {
    match next(stream).await {
        Item::Envelope(e) => e,
        other => panic!("expected an envelope, got {other:?}"),
    }
}

pub async fn expect_queue_empty(stream: &mut Streaming<ListenResponse>) {
    match next(stream).await {
        Item::QueueEmpty(_) => {}
        other => panic!("expected QueueEmpty, got {other:?}"),
    }
}

/// Nothing arrives within a short while (used only to show delivery is paused).
pub async fn expect_quiet(stream: &mut Streaming<ListenResponse>) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("expected no item, got {item:?}");
    }
}

pub fn reason(status: &Status) -> String {
    guardyn_common::error::reason_of(status).unwrap_or_default()
}

/// The stored queue of a device (AppendLog partition `msg/v1/q/<account>/<device u32>`).
pub fn queue_partition(account: &str, device: u32) -> Vec<u8> {
    [
        format!("msg/v1/q/{account}/").into_bytes(),
        device.to_be_bytes().to_vec(),
    ]
    .concat()
}

/// A group's log (AppendLog partition `msg/v1/g/<group hex>`), which members read by cursor.
pub fn group_log_partition(group: &[u8]) -> Vec<u8> {
    format!("msg/v1/g/{}", guardyn_common::ids::hex(group)).into_bytes()
}

/// How many messages a group's log holds.
pub async fn group_logged(server: &TestServer, group: &[u8]) -> usize {
    server
        .log()
        .read(&group_log_partition(group), 1, 10_000)
        .await
        .unwrap()
        .len()
}

/// How many envelopes are stored in a device's queue.
pub async fn queued(server: &TestServer, account: &str, device: u32) -> usize {
    server
        .log()
        .read(&queue_partition(account, device), 1, 10_000)
        .await
        .unwrap()
        .len()
}

/// The `google.rpc.RetryInfo` delay of a status, if any.
pub fn retry_after(status: &Status) -> Option<Duration> {
    use tonic_types::StatusExt as _;
    status.get_details_retry_info()?.retry_delay
}

/// The metrics endpoint's text (the server must have `metrics.enabled`).
pub async fn metrics(env: &Env) -> String {
    env.server.scrape_metrics().await.unwrap()
}

/// The value of an unlabelled-but-for-`instance` counter in a metrics text.
pub fn counter(metrics: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{instance=\"testkit\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}
