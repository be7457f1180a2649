//! Shared test helpers.

use std::sync::Arc;

use guardyn_common::clock::ManualClock;
use guardyn_crypto::{IdentityKeyPair, KemPreKey, OneTimePreKey, SignedPreKey};
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
use guardyn_proto::guardyn::auth::v1::key_directory_service_client::KeyDirectoryServiceClient;
use guardyn_proto::guardyn::auth::v1::mfa_service_client::MfaServiceClient;
pub use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::transport::Channel;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub server: TestServer,
    pub clock: ManualClock,
}

/// A server hosting auth only, with cheap Argon2 and a manual clock.
pub async fn start() -> Env {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut guardyn::config::Config) + Send + 'static) -> Env {
    let clock = ManualClock::new();
    let server = TestServer::start_with(Options {
        services: vec!["auth".into()],
        clock: Some(Arc::new(clock.clone())),
        configure: Some(Box::new(move |c| {
            c.auth.argon2.memory_kib = 8;
            c.auth.argon2.iterations = 1;
            f(c);
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    Env { server, clock }
}

impl Env {
    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.server.channel())
    }
    pub fn devices(&self) -> DeviceServiceClient<Channel> {
        DeviceServiceClient::new(self.server.channel())
    }
    pub fn mfa(&self) -> MfaServiceClient<Channel> {
        MfaServiceClient::new(self.server.channel())
    }
    pub fn keys(&self) -> KeyDirectoryServiceClient<Channel> {
        KeyDirectoryServiceClient::new(self.server.channel())
    }

    /// Register `name` with a device carrying a full bundle (`n` one-time keys of each kind).
    pub async fn register(&self, name: &str, n: u32) -> User {
        let ik = IdentityKeyPair::generate();
        let r = self
            .auth()
            .register(pb::RegisterRequest {
                username: name.into(),
                password: PASSWORD.into(),
                device: Some(new_device("phone", &ik, n)),
            })
            .await
            .unwrap()
            .into_inner();
        User {
            account_id: r.account_id,
            tokens: r.tokens.unwrap(),
            ik,
        }
    }

    pub async fn login(
        &self,
        name: &str,
        device_id: u32,
    ) -> Result<pb::LoginResponse, tonic::Status> {
        self.auth()
            .login(pb::LoginRequest {
                username: name.into(),
                password: PASSWORD.into(),
                device_id,
            })
            .await
            .map(|r| r.into_inner())
    }
}

pub struct User {
    pub account_id: String,
    pub tokens: pb::Tokens,
    pub ik: IdentityKeyPair,
}

impl User {
    pub fn token(&self) -> &str {
        &self.tokens.access_token
    }
}

pub fn reason(status: &tonic::Status) -> String {
    guardyn_common::error::reason_of(status).unwrap_or_default()
}

pub fn signed_prekey(ik: &IdentityKeyPair, id: u32) -> pb::SignedPreKey {
    let p = SignedPreKey::generate(id, ik).public();
    pb::SignedPreKey {
        key_id: id,
        public_key: p.key.to_bytes().to_vec(),
        signature: p.signature.to_vec(),
    }
}

pub fn kem_prekey(ik: &IdentityKeyPair, id: u32) -> pb::KemPreKey {
    let p = KemPreKey::generate(id, ik).public();
    pb::KemPreKey {
        key_id: id,
        public_key: p.key.to_bytes(),
        signature: p.signature.to_vec(),
    }
}

pub fn one_time(id: u32) -> pb::OneTimePreKey {
    pb::OneTimePreKey {
        key_id: id,
        public_key: OneTimePreKey::generate(id).public().key.to_bytes().to_vec(),
    }
}

pub fn new_device(name: &str, ik: &IdentityKeyPair, n: u32) -> pb::NewDevice {
    pb::NewDevice {
        name: name.into(),
        registration_id: 1234,
        identity_key: ik.identity_key().to_bytes().to_vec(),
        signed_prekey: Some(signed_prekey(ik, 1)),
        last_resort_kem_prekey: Some(kem_prekey(ik, 1000)),
        one_time_kem_prekeys: (1..=n).map(|i| kem_prekey(ik, i)).collect(),
        one_time_prekeys: (1..=n).map(one_time).collect(),
    }
}

/// Current TOTP code for a base32 secret at the manual clock's time.
pub fn totp_now(secret_b32: &str, clock: &ManualClock) -> String {
    use guardyn_common::clock::Clock as _;
    let secret = base32_decode(secret_b32);
    guardyn_auth::totp_code(&secret, clock.now_ms() / 1000)
}

pub fn base32_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).unwrap() as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}
