//! TOTP secrets and token-signing seeds are sealed with the master key: never in clear in the
//! KvStore, readable after a restart with the same key, refused with another.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use guardyn_common::auth::{TokenConfig, TokenSigner};
use guardyn_common::clock::ManualClock;
use guardyn_common::ids::AccountId;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_storage::{Direction, KeyRange, KvStore};
use guardyn_testkit::{Options, TestServer};

use super::helpers::*;
use super::mfa::{challenge, complete};

/// Every `(key, value)` the auth service stored.
async fn auth_records(env: &Env) -> Vec<(Vec<u8>, Vec<u8>)> {
    let kv: Arc<dyn KvStore> = env.server.kv();
    kv.scan(
        KeyRange::prefix(b"auth/v1/"),
        Direction::Forward,
        usize::MAX,
    )
    .await
    .unwrap()
    .into_iter()
    .map(|p| (p.key.to_vec(), p.value.to_vec()))
    .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn list_devices(env: &Env, token: &str) -> Result<(), tonic::Status> {
    env.devices()
        .list_devices(authed(pb::ListDevicesRequest {}, token))
        .await
        .map(drop)
}

async fn login_with_totp(env: &Env, name: &str, secret: &str) -> pb::Tokens {
    use pb::complete_mfa_login_request::Code as C;
    let ticket = challenge(env.login(name, 1).await.unwrap());
    complete(env, &ticket, C::TotpCode(totp_now(secret, &env.clock)))
        .await
        .unwrap()
        .tokens
        .unwrap()
}

fn with_data(data: &Path) -> impl FnOnce(&mut guardyn::config::Config) + Send + 'static {
    let data = data.to_owned();
    move |c| c.storage.data_dir = data
}

#[tokio::test]
async fn totp_secrets_and_signing_seeds_never_reach_storage_in_clear() {
    let env = start().await;
    let a = env.register("alice", 0).await;
    let begin = env
        .mfa()
        .begin_totp_enrollment(authed(pb::BeginTotpEnrollmentRequest {}, a.token()))
        .await
        .unwrap()
        .into_inner();
    let secret = base32_decode(&begin.secret);
    assert_eq!(secret.len(), 20);
    let account_key =
        guardyn_auth::store::account(AccountId::parse(&a.account_id).expect("account id"));
    // Pending enrolment: the account record holds something, but not the secret.
    let records = auth_records(&env).await;
    let (_, pending) = records.iter().find(|(k, _)| *k == account_key).unwrap();
    assert!(!contains(pending, &secret));
    assert!(!contains(pending, begin.secret.as_bytes()));

    env.mfa()
        .confirm_totp_enrollment(authed(
            pb::ConfirmTotpEnrollmentRequest {
                totp_code: totp_now(&begin.secret, &env.clock),
            },
            a.token(),
        ))
        .await
        .unwrap();
    env.clock.advance(Duration::from_secs(30));
    let tokens = login_with_totp(&env, "alice", &begin.secret).await;
    list_devices(&env, &tokens.access_token).await.unwrap();

    let records = auth_records(&env).await;
    assert!(records.iter().any(|(k, _)| *k == account_key));
    for (key, value) in &records {
        let key = String::from_utf8_lossy(key);
        assert!(!contains(value, &secret), "TOTP secret in clear at {key}");
        assert!(!contains(value, begin.secret.as_bytes()), "{key}");
    }

    // The signing key record: no 32-byte window of it is the seed of a published key.
    let published: Vec<Vec<u8>> = env
        .auth()
        .get_verification_keys(pb::GetVerificationKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.public_key)
        .collect();
    assert_eq!(published.len(), 1);
    let signing_key = guardyn_auth::store::signing();
    let (_, signing) = records.iter().find(|(k, _)| *k == signing_key).unwrap();
    let config = TokenConfig::default();
    for window in signing.windows(32) {
        let seed: [u8; 32] = window.try_into().unwrap();
        let public = TokenSigner::from_seed("probe", &seed, &config)
            .verification_key()
            .public_key;
        assert!(
            !published.contains(&public.to_vec()),
            "signing seed in clear"
        );
    }

    // The generated master key: 32 bytes, owner-only.
    let key_file = env
        .server
        .data_dir()
        .join("data")
        .join(guardyn_auth::sealing::DEFAULT_FILE);
    let key = std::fs::read(&key_file).unwrap();
    assert_eq!(key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn sealed_secrets_survive_a_restart_with_the_same_key_and_refuse_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = start_with(with_data(&data)).await;
    let a = env.register("bob", 0).await;
    let (secret, _) = super::mfa::enrol(&env, &a).await;
    env.clock.advance(Duration::from_secs(30));
    let old = login_with_totp(&env, "bob", &secret).await;
    env.server.stop().await.unwrap();

    // Same data dir, so the same generated key: TOTP codes and old tokens still verify.
    let env = start_with(with_data(&data)).await;
    // A fresh manual clock starts at the real time: step past the codes already used.
    env.clock.advance(Duration::from_secs(120));
    list_devices(&env, &old.access_token).await.unwrap();
    // The registration's session was replaced by the TOTP login: its revocation is persisted.
    let refused = list_devices(&env, a.token()).await.unwrap_err();
    assert_eq!(reason(&refused), "SESSION_REVOKED");
    let tokens = login_with_totp(&env, "bob", &secret).await;
    list_devices(&env, &tokens.access_token).await.unwrap();
    env.server.stop().await.unwrap();

    // Another master key: start-up fails and names the cause, instead of accepting or
    // re-keying.
    let key_file = data.join(guardyn_auth::sealing::DEFAULT_FILE);
    let original = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let err = try_start(with_data(&data)).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("master key"), "{msg}");
    assert_eq!(std::fs::read(&key_file).unwrap(), [7u8; 32]);

    // An explicitly configured key file that is missing: refused, never generated.
    std::fs::write(&key_file, &original).unwrap();
    let missing = dir.path().join("keys").join("master.key");
    let m = missing.clone();
    let d = data.clone();
    let err = try_start(move |c| {
        c.storage.data_dir = d;
        c.auth.master_key_file = m;
    })
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("auth.master_key_file") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(!missing.exists());

    // The key moved out of the data dir and configured explicitly: everything still opens
    // and the default file is not recreated.
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    std::fs::rename(&key_file, &missing).unwrap();
    let m = missing.clone();
    let d = data.clone();
    let env = start_with(move |c| {
        c.storage.data_dir = d;
        c.auth.master_key_file = m;
    })
    .await;
    env.clock.advance(Duration::from_secs(240));
    let tokens = login_with_totp(&env, "bob", &secret).await;
    list_devices(&env, &tokens.access_token).await.unwrap();
    assert!(!key_file.exists());
    env.server.stop().await.unwrap();
}

/// Like [`start_with`] but hands back a start-up failure.
async fn try_start(
    f: impl FnOnce(&mut guardyn::config::Config) + Send + 'static,
) -> anyhow::Result<TestServer> {
    TestServer::start_with(Options {
        services: vec!["auth".into()],
        clock: Some(Arc::new(ManualClock::new())),
        configure: Some(Box::new(move |c| {
            c.auth.argon2.memory_kib = 8;
            c.auth.argon2.iterations = 1;
            f(c);
        })),
        ..Options::default()
    })
    .await
}
