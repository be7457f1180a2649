//! The cluster's processes: real `guardyn serve --service NAME` children on loopback, each with
//! its own configuration file, data directory and certificate, sharing one PostgreSQL
//! database and one NATS server; mutual TLS on every mesh connection.
//!
//! Secrets are handled as an operator would: the auth master key (which seals the token
//! signing keys stored in the shared database) is a file only the auth process is given
//! (`auth.master_key_file`); the other processes never see it and verify tokens with the keys
//! auth publishes (`mesh.auth_addresses`, over TLS). The database URL comes from the
//! environment, not the configuration file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guardyn::config::{Config, EventsBackend, StorageEngine};
use guardyn_common::mesh::MeshTlsConfig;
use guardyn_common::ratelimit::RateLimit;
use guardyn_storage_postgres::{PostgresConfig, throwaway};
use guardyn_testkit::NatsServer;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Pki;

/// How long a process gets to report SERVING (debug build on a loaded 2-core machine).
const START: Duration = Duration::from_secs(90);

/// One `guardyn` child process. Killed when dropped.
pub struct Proc {
    pub name: String,
    pub port: u16,
    tls: Option<ClientTlsConfig>,
    child: tokio::process::Child,
    stderr: PathBuf,
}

impl Proc {
    fn endpoint(&self) -> Endpoint {
        let e = match &self.tls {
            Some(tls) => Endpoint::from_shared(format!("https://localhost:{}", self.port))
                .unwrap()
                .tls_config(tls.clone())
                .unwrap(),
            None => Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port)).unwrap(),
        };
        e.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true)
    }

    /// A lazily connecting channel to the public port (what a gateway forwards to).
    pub fn channel(&self) -> Channel {
        self.endpoint().connect_lazy()
    }

    /// SIGKILL: no shutdown, no flush, connections cut.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// The last lines the process wrote to stderr.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + START;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.tail());
            }
            let endpoint = self.endpoint();
            let serving = async {
                let channel = endpoint.connect().await?;
                let r = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await?;
                anyhow::Ok(r.into_inner().status == ServingStatus::Serving as i32)
            }
            .await
            .unwrap_or(false);
            if serving {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not report SERVING within {START:?}:\n{}",
                self.name,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// auth ×1, messaging ×2, presence ×2, media ×1, notification ×1 on one database and one NATS.
pub struct Cluster {
    pub auth: Proc,
    pub messaging: [Proc; 2],
    pub presence: [Proc; 2],
    pub media: Proc,
    pub notification: Proc,
    pub nats: NatsServer,
    _pki: Pki,
    _dir: tempfile::TempDir,
}

struct Plan {
    dir: PathBuf,
    pki_dir: PathBuf,
    pg: PostgresConfig,
    nats_url: String,
    auth_port: u16,
    auth_mesh_port: u16,
}

impl Plan {
    fn config(&self, name: &str, service: &str, port: u16) -> Config {
        let mut c = Config::default();
        c.server.port = port;
        c.server.shutdown_grace_ms = 2_000;
        c.metrics.enabled = false;
        c.storage.engine = StorageEngine::Postgres;
        let pool_size = if service == "messaging" { 4 } else { 2 };
        c.storage.postgres = Some(PostgresConfig {
            pool_size,
            ..self.pg.clone()
        });
        c.storage.data_dir = self.dir.join(name).join("data");
        c.events.backend = EventsBackend::Nats;
        c.events.nats_url = self.nats_url.clone();
        crate::mesh::fast_auth(&mut c);
        c.messaging.limits.send_per_account = RateLimit::new(100_000, 6_000_000);
        // A Listen stream re-reads its queue at every keepalive, which would turn a lost
        // wake-up into a 30 s delay the load tests do not notice; beyond their delivery bound
        // it shows as a loss.
        c.messaging.keepalive_secs = 600;
        c.mesh.tls = MeshTlsConfig {
            ca_path: self.pki_dir.join("ca.pem"),
            cert_path: self.pki_dir.join(format!("{name}.pem")),
            key_path: self.pki_dir.join(format!("{name}.key")),
            domain: "localhost".into(),
            ..MeshTlsConfig::default()
        };
        match service {
            "auth" => {
                c.server.tls.enabled = true;
                c.server.tls.cert_path = self.pki_dir.join(format!("{name}.pem"));
                c.server.tls.key_path = self.pki_dir.join(format!("{name}.key"));
                // Its public port serves the other services' key fetches as well as the
                // gateway: every peer presents a certificate from the mesh CA.
                c.server.tls.client_ca_path = self.pki_dir.join("ca.pem");
                c.mesh.listen = format!("127.0.0.1:{}", self.auth_mesh_port);
                c.auth.master_key_file = self.dir.join("secrets").join("auth-master.key");
            }
            other => {
                c.mesh.auth_addresses = vec![format!("https://localhost:{}", self.auth_port)];
                if other == "messaging" {
                    c.mesh.directory_addresses =
                        vec![format!("https://localhost:{}", self.auth_mesh_port)];
                }
            }
        }
        c
    }

    fn spawn(&self, name: &str, service: &str, port: u16, tls: Option<ClientTlsConfig>) -> Proc {
        let config = self.config(name, service, port);
        let (mut cmd, stderr) = crate::serve_command(&self.dir, name, service, &config);
        let child = cmd
            .env("GUARDYN_STORAGE__POSTGRES__URL", &self.pg.url)
            .spawn()
            .unwrap();
        Proc {
            name: name.to_owned(),
            port,
            tls,
            child,
            stderr,
        }
    }
}

fn write_master_key(path: &Path) {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, &key).unwrap();
}

impl Cluster {
    /// Starts everything; `None` (outside CI) when PostgreSQL or nats-server is missing.
    pub async fn start() -> Option<Self> {
        let pg_server = throwaway::shared_or_skip()?;
        let nats = NatsServer::start_or_skip()?;
        guardyn_common::server::install_crypto_provider();
        let pg = pg_server.fresh_database().await;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let names = [
            "auth",
            "messaging-1",
            "messaging-2",
            "presence-1",
            "presence-2",
            "media",
            "notification",
        ];
        for name in names.into_iter().chain(["gateway"]) {
            pki.issue(name, &["localhost", name]);
        }
        let plan = Plan {
            dir: dir.path().to_owned(),
            pki_dir: pki.path("ca.pem").parent().unwrap().to_owned(),
            pg,
            nats_url: nats.url.clone(),
            auth_port: crate::free_port(),
            auth_mesh_port: crate::free_port(),
        };
        write_master_key(&dir.path().join("secrets").join("auth-master.key"));
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca))
            .domain_name("localhost")
            .identity(Identity::from_pem(
                pki.read("gateway.pem"),
                pki.read("gateway.key"),
            ));

        // Auth first: the others fetch its verification keys at start.
        let mut auth = plan.spawn("auth", "auth", plan.auth_port, Some(tls));
        auth.wait_serving().await;
        let spawn = |name: &str, service: &str| plan.spawn(name, service, crate::free_port(), None);
        let mut cluster = Cluster {
            auth,
            messaging: [
                spawn("messaging-1", "messaging"),
                spawn("messaging-2", "messaging"),
            ],
            presence: [
                spawn("presence-1", "presence"),
                spawn("presence-2", "presence"),
            ],
            media: spawn("media", "media"),
            notification: spawn("notification", "notification"),
            nats,
            _pki: pki,
            _dir: dir,
        };
        for p in cluster.procs_mut() {
            p.wait_serving().await;
        }
        Some(cluster)
    }

    fn procs_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        let [m1, m2] = &mut self.messaging;
        let [p1, p2] = &mut self.presence;
        [
            &mut self.auth,
            m1,
            m2,
            p1,
            p2,
            &mut self.media,
            &mut self.notification,
        ]
        .into_iter()
    }

    /// The processes that exited, with their status.
    pub fn exited(&mut self) -> Vec<String> {
        self.procs_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} ({status})", p.name)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in self.procs_mut() {
                eprintln!("---- {} stderr (last lines) ----\n{}", p.name, p.tail());
            }
        }
    }
}
