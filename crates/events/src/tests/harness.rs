//! Per-backend setup for the behavioural suite.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guardyn_storage::AppendLog;

use guardyn_storage_embedded::{EmbeddedConfig, EmbeddedStore};

use crate::testing::NatsServer;
use crate::{Backend, EventBus, EventsConfig, InProcessBus, NatsBus, NatsConfig};

/// `ack_wait` of every test bus.
pub(super) const ACK_WAIT: Duration = Duration::from_secs(1);
/// `subscriber_buffer` of every test bus.
pub(super) const BUFFER: usize = 16;
/// Generous bound for something that should happen "now"; only reached when a test fails.
pub(super) const PATIENCE: Duration = Duration::from_secs(10);
pub(super) const MAX_PAYLOAD: usize = 64 * 1024;

fn config() -> EventsConfig {
    EventsConfig {
        backend: Backend::InProcess,
        ack_wait: ACK_WAIT,
        subscriber_buffer: BUFFER,
        job_max_age: Duration::from_secs(3600),
        max_payload: MAX_PAYLOAD,
    }
}

pub(super) trait Harness: Send {
    fn bus(&self) -> Arc<dyn EventBus>;
    /// Simulates a process (and for NATS, server) restart with durable state kept.
    async fn restart(&mut self);
    async fn subscription_count(&self) -> usize;

    /// Subscription changes reach a NATS server asynchronously; poll until they did.
    async fn wait_for_subscription_count(&self, expected: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let count = self.subscription_count().await;
            if count == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "subscription count stays {count}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(super) struct InProcess {
    dir: tempfile::TempDir,
    store: Option<Arc<EmbeddedStore>>,
    bus: Option<Arc<InProcessBus>>,
}

impl InProcess {
    pub(super) async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
            .await
            .unwrap();
        let bus = Arc::new(InProcessBus::new(
            store.clone() as Arc<dyn AppendLog>,
            config(),
        ));
        Self {
            dir,
            store: Some(store),
            bus: Some(bus),
        }
    }

    pub(super) fn in_process_bus(&self) -> &Arc<InProcessBus> {
        self.bus.as_ref().expect("bus is set outside restart")
    }
}

impl Harness for InProcess {
    fn bus(&self) -> Arc<dyn EventBus> {
        self.in_process_bus().clone()
    }

    /// Closes and reopens the store: only what the store persisted survives.
    async fn restart(&mut self) {
        self.bus = None;
        if let Some(store) = self.store.take() {
            store.close().await;
        }
        let store = EmbeddedStore::open(self.dir.path(), EmbeddedConfig::default())
            .await
            .unwrap();
        self.bus = Some(Arc::new(InProcessBus::new(
            store.clone() as Arc<dyn AppendLog>,
            config(),
        )));
        self.store = Some(store);
    }

    async fn subscription_count(&self) -> usize {
        self.in_process_bus().subscription_count()
    }
}

pub(super) struct Nats {
    server: NatsServer,
    bus: Arc<NatsBus>,
}

impl Nats {
    pub(super) async fn new() -> Option<Self> {
        let server = NatsServer::start_or_skip()?;
        let bus = Arc::new(connect(&server).await);
        Some(Self { server, bus })
    }
}

pub(super) async fn connect(server: &NatsServer) -> NatsBus {
    let nats = NatsConfig {
        url: server.url.clone(),
        client_name: "guardyn-events-test".to_owned(),
        ..NatsConfig::default()
    };
    NatsBus::connect(
        EventsConfig {
            backend: Backend::Nats(nats.clone()),
            ..config()
        },
        nats,
    )
    .await
    .expect("connect to the test nats-server")
}

impl Harness for Nats {
    fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    async fn restart(&mut self) {
        self.server.restart().expect("restart nats-server");
        self.bus = Arc::new(connect(&self.server).await);
    }

    async fn subscription_count(&self) -> usize {
        usize::try_from(self.server.subscription_count().expect("query /subsz")).unwrap()
    }
}
