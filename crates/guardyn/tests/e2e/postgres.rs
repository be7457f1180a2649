//! `storage.engine = "postgres"`: the whole server on PostgreSQL (the throw-away cluster of
//! `guardyn_storage_postgres::throwaway`, one fresh database per test), through the SDK; and
//! an acknowledged message survives SIGKILL of the server process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use guardyn::config::{Config, StorageEngine};
use guardyn_sdk::{Client, ClientConfig, Event, StateKey, Storage};
use guardyn_storage_postgres::{PostgresConfig, throwaway};
use guardyn_testkit::{Options, TestServer};
use tonic::transport::Endpoint;
use zeroize::Zeroizing;

const PASSWORD: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(15);
const CHILD_DIR: &str = "GUARDYN_E2E_POSTGRES_CHILD_DIR";

fn on_postgres(c: &mut Config, pg: PostgresConfig) {
    c.storage.engine = StorageEngine::Postgres;
    c.storage.postgres = Some(pg);
    c.auth.argon2.memory_kib = 1024;
    c.auth.argon2.iterations = 1;
}

fn sdk_config() -> ClientConfig {
    ClientConfig {
        device_name: "pg".into(),
        prekey_batch: 4,
        prekey_low_water: 2,
        key_package_batch: 3,
        max_attempts: 5,
        ..ClientConfig::default()
    }
}

async fn register(channel: tonic::transport::Channel, name: &str, storage: Storage) -> Client {
    let username = format!("{name}{}", std::process::id());
    Client::register(channel, storage, sdk_config(), &username, PASSWORD)
        .await
        .unwrap()
}

fn bob_state(dir: &Path) -> Storage {
    Storage::File {
        path: dir.join("bob.state"),
        key: StateKey::Key(Zeroizing::new([5; 32])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_engine_serves_register_and_send() {
    let Some(server) = throwaway::shared_or_skip() else {
        return;
    };
    let pg = server.fresh_database().await;
    let server = TestServer::start_with(Options::configure(move |c| on_postgres(c, pg)))
        .await
        .unwrap();
    assert!(
        format!("{:?}", server.kv()).contains("PostgresStore"),
        "the server must run on the PostgreSQL engine"
    );
    let alice = register(server.channel(), "pgalice", Storage::Memory).await;
    let bob = register(server.channel(), "pgbob", Storage::Memory).await;
    let mut inbox = bob.listen().await.unwrap();
    alice
        .send(bob.account_id(), b"stored in postgres")
        .await
        .unwrap();
    loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::Message(m)) => {
                assert_eq!(m.body, b"stored in postgres");
                break;
            }
            Some(_) => {}
            None => panic!("no message within {WAIT:?}"),
        }
    }
    drop(inbox);
    server.stop().await.unwrap();
}

#[tokio::test]
#[ignore = "server process for postgres_acknowledged_message_survives_sigkill, which runs it"]
#[allow(clippy::print_stdout)] // The parent test reads the address from stdout.
async fn postgres_child_server() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let url = std::fs::read_to_string(dir.join("pg-url")).unwrap();
    let data = dir.join("data");
    let server = TestServer::start_with(Options {
        data_dir: Some(data),
        ..Options::configure(move |c| {
            on_postgres(
                c,
                PostgresConfig {
                    url,
                    pool_size: 4,
                    ..PostgresConfig::default()
                },
            );
        })
    })
    .await
    .unwrap();
    println!("CHILD {}", server.addr);
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_message_survives_sigkill() {
    let Some(server) = throwaway::shared_or_skip() else {
        return;
    };
    let pg = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pg-url"), &pg.url).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let (mut child, words) =
        guardyn_testkit::child::spawn("postgres::postgres_child_server", CHILD_DIR, dir.path())
            .await
            .unwrap();
    let channel = Endpoint::from_shared(format!("http://{}", words[0]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let alice = register(channel.clone(), "pgkalice", Storage::Memory).await;
    let bob = register(channel, "pgkbob", bob_state(dir.path())).await;
    let bob_account = bob.account_id().to_owned();
    drop(bob);
    alice
        .send(&bob_account, b"acknowledged, then kill -9")
        .await
        .unwrap();
    child.kill().await.unwrap(); // SIGKILL: no shutdown, no flush.

    // A new server on the same database (and data directory, for the auth master key).
    let server = TestServer::start_with(Options {
        data_dir: Some(dir.path().join("data")),
        ..Options::configure(move |c| on_postgres(c, pg))
    })
    .await
    .unwrap();
    let bob = Client::open(server.channel(), bob_state(dir.path()), sdk_config())
        .await
        .unwrap();
    let events = bob.sync().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.body == b"acknowledged, then kill -9")),
        "the acknowledged message must survive SIGKILL: {events:?}"
    );
    server.stop().await.unwrap();
}

#[test]
fn postgres_settings_come_from_the_environment_and_secrets_are_never_printed() {
    let out = super::guardyn()
        .arg("config")
        .env("GUARDYN_STORAGE__ENGINE", "postgres")
        .env(
            "GUARDYN_STORAGE__POSTGRES__URL",
            "postgres://guardyn@db.internal:5433/prod",
        )
        .env("GUARDYN_STORAGE__POSTGRES__PASSWORD", "pg-secret-value")
        .env("GUARDYN_STORAGE__POSTGRES__POOL_SIZE", "7")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("engine = \"postgres\""), "{stdout}");
    assert!(
        stdout.contains("url = \"postgres://guardyn@db.internal:5433/prod\""),
        "{stdout}"
    );
    assert!(stdout.contains("pool_size = 7"), "{stdout}");
    assert!(!stdout.contains("pg-secret-value"), "{stdout}");

    // The engine without its section is refused, naming the key.
    let out = super::guardyn()
        .arg("serve")
        .env("GUARDYN_STORAGE__ENGINE", "postgres")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage.postgres"), "{stderr}");
    let out = super::guardyn()
        .arg("serve")
        .env("GUARDYN_STORAGE__ENGINE", "postgres")
        .env("GUARDYN_STORAGE__POSTGRES__POOL_SIZE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage.postgres.pool_size"), "{stderr}");
}

/// Two server instances on one database: an account registered and a message sent through
/// one are there for the other (no bus between them: the shared store alone carries it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_share_accounts_and_queues() {
    let Some(server) = throwaway::shared_or_skip() else {
        return;
    };
    let pg = server.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let start = |pg: PostgresConfig| {
        TestServer::start_with(Options {
            data_dir: Some(data.clone()),
            ..Options::configure(move |c| on_postgres(c, pg))
        })
    };
    let a = start(pg.clone()).await.unwrap();
    let alice = register(a.channel(), "pgialice", Storage::Memory).await;
    let bob = register(a.channel(), "pgibob", bob_state(dir.path())).await;
    let bob_account = bob.account_id().to_owned();
    drop(bob);
    let b = start(pg).await.unwrap();
    alice.send(&bob_account, b"sent through A").await.unwrap();
    let bob = Client::open(b.channel(), bob_state(dir.path()), sdk_config())
        .await
        .unwrap();
    let events = bob.sync().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.body == b"sent through A")),
        "instance B must deliver what instance A accepted: {events:?}"
    );
    bob.send(alice.account_id(), b"answered through B")
        .await
        .unwrap();
    let events = alice.sync().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.body == b"answered through B")),
        "{events:?}"
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
