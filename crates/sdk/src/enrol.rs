//! Enrolment and sign-in: register, link, reopen, login (with a second factor), link codes,
//! and prekey / KeyPackage replenishment.

use guardyn_crypto::IdentityKeyPair;
use guardyn_crypto::mls::MlsClient;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
use guardyn_proto::guardyn::auth::v1::key_directory_service_client::KeyDirectoryServiceClient;
use rand::RngExt as _;
use tonic::transport::Channel;

use crate::client::{Client, ClientConfig, tokens_from};
use crate::error::SdkError;
use crate::state::State;
use crate::store::{Sealer, Storage};

/// Result of [`Client::login`].
#[derive(Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Signed in.
    SignedIn,
    /// TOTP is enabled: finish with [`Client::complete_mfa`] and this ticket.
    MfaRequired {
        /// The single-use MFA ticket (a short-lived credential).
        ticket: String,
    },
}

impl std::fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignedIn => f.write_str("SignedIn"),
            Self::MfaRequired { .. } => f.write_str("MfaRequired(..)"),
        }
    }
}

/// A second factor for [`Client::complete_mfa`].
#[derive(Clone)]
pub enum SecondFactor {
    /// A six-digit TOTP code.
    Totp(String),
    /// A recovery code.
    Recovery(String),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecondFactor(..)")
    }
}

/// Fresh device keys: state with identity, registration id and the first prekey batch, plus
/// the `NewDevice` that publishes them.
fn new_device(config: &ClientConfig, username: &str) -> (State, pb::NewDevice) {
    let identity = IdentityKeyPair::generate();
    let registration_id = rand::rng().random_range(1..=16_380u32);
    let mut state = State::new(identity, registration_id, username);
    let id = &state.identity;
    let batch = config.prekey_batch.min(100);
    let spk = state.keys.new_signed(id).public();
    let lr = state.keys.new_kem(id, true).public();
    let kems = (0..batch)
        .map(|_| kem_pb(&state.keys.new_kem(&state.identity, false).public()))
        .collect();
    let otks = (0..batch)
        .map(|_| otk_pb(&state.keys.new_one_time().public()))
        .collect();
    let device = pb::NewDevice {
        name: config.device_name.clone(),
        registration_id,
        identity_key: state.identity.identity_key().to_bytes().to_vec(),
        signed_prekey: Some(spk_pb(&spk)),
        last_resort_kem_prekey: Some(kem_pb(&lr)),
        one_time_kem_prekeys: kems,
        one_time_prekeys: otks,
    };
    (state, device)
}

fn spk_pb(k: &guardyn_crypto::SignedPreKeyPublic) -> pb::SignedPreKey {
    pb::SignedPreKey {
        key_id: k.id,
        public_key: k.key.to_bytes().to_vec(),
        signature: k.signature.to_vec(),
    }
}

fn kem_pb(k: &guardyn_crypto::KemPreKeyPublic) -> pb::KemPreKey {
    pb::KemPreKey {
        key_id: k.id,
        public_key: k.key.to_bytes(),
        signature: k.signature.to_vec(),
    }
}

fn otk_pb(k: &guardyn_crypto::OneTimePreKeyPublic) -> pb::OneTimePreKey {
    pb::OneTimePreKey {
        key_id: k.id,
        public_key: k.key.to_bytes().to_vec(),
    }
}

fn sealer_for(storage: &Storage) -> Result<Option<Sealer>, SdkError> {
    match storage {
        Storage::Memory => Ok(None),
        Storage::File { path, key } => Ok(Some(Sealer::create(path, key)?)),
    }
}
impl Client {
    /// Creates an account with this device as device 1, uploads its prekeys and MLS
    /// KeyPackages, and saves the state.
    pub async fn register(
        channel: Channel,
        storage: Storage,
        config: ClientConfig,
        username: &str,
        password: &str,
    ) -> Result<Self, SdkError> {
        let sealer = sealer_for(&storage)?;
        let (mut state, device) = new_device(&config, username);
        let resp = AuthServiceClient::new(channel.clone())
            .register(pb::RegisterRequest {
                username: username.to_owned(),
                password: password.to_owned(),
                device: Some(device),
            })
            .await?
            .into_inner();
        state.account_id = resp.account_id;
        state.device_id = resp.device_id;
        state.tokens = Some(tokens_from(resp.tokens)?);
        Self::finish_enrolment(channel, config, state, sealer).await
    }

    /// Joins an existing account as a new device with a code from
    /// [`Client::create_link_code`] on one of its devices.
    pub async fn link(
        channel: Channel,
        storage: Storage,
        config: ClientConfig,
        link_code: &str,
    ) -> Result<Self, SdkError> {
        let sealer = sealer_for(&storage)?;
        let (mut state, device) = new_device(&config, "");
        let resp = DeviceServiceClient::new(channel.clone())
            .link_device(pb::LinkDeviceRequest {
                link_code: link_code.to_owned(),
                device: Some(device),
            })
            .await?
            .into_inner();
        state.account_id = resp.account_id;
        state.device_id = resp.device_id;
        state.tokens = Some(tokens_from(resp.tokens)?);
        Self::finish_enrolment(channel, config, state, sealer).await
    }

    async fn finish_enrolment(
        channel: Channel,
        config: ClientConfig,
        mut state: State,
        sealer: Option<Sealer>,
    ) -> Result<Self, SdkError> {
        state.mls = Some(MlsClient::new(state.mls_identity().as_bytes())?);
        let client = Self::from_state(channel, config, state, sealer);
        {
            let mut st = client.inner.state.lock().await;
            client.inner.persist(&mut st)?;
        }
        client.top_up_key_packages().await?;
        Ok(client)
    }

    /// Loads a client from its state file.
    pub async fn open(
        channel: Channel,
        storage: Storage,
        config: ClientConfig,
    ) -> Result<Self, SdkError> {
        let Storage::File { path, key } = &storage else {
            return Err(SdkError::Invalid(
                "only a file-backed client can be reopened".into(),
            ));
        };
        let (sealer, bytes) = Sealer::open(path, key)?;
        let state = State::decode(&bytes)?;
        Ok(Self::from_state(channel, config, state, Some(sealer)))
    }

    /// Signs this (already enrolled) device in again with the account password, e.g. after
    /// its session was revoked. May ask for a second factor.
    pub async fn login(&self, password: &str) -> Result<LoginOutcome, SdkError> {
        let username = self.inner.state.lock().await.username.clone();
        if username.is_empty() {
            return Err(SdkError::Invalid(
                "this state has no username (a linked device): sign in on the first device".into(),
            ));
        }
        let resp = AuthServiceClient::new(self.inner.channel.clone())
            .login(pb::LoginRequest {
                username,
                password: password.to_owned(),
                device_id: self.inner.device_id,
            })
            .await?
            .into_inner();
        match resp.outcome {
            Some(pb::login_response::Outcome::Tokens(t)) => {
                self.inner.set_tokens(tokens_from(Some(t))?).await?;
                Ok(LoginOutcome::SignedIn)
            }
            Some(pb::login_response::Outcome::MfaChallenge(c)) => Ok(LoginOutcome::MfaRequired {
                ticket: c.mfa_ticket,
            }),
            None => Err(SdkError::Protocol("login response without outcome".into())),
        }
    }

    /// Finishes a login that returned [`LoginOutcome::MfaRequired`].
    pub async fn complete_mfa(&self, ticket: &str, code: SecondFactor) -> Result<(), SdkError> {
        use pb::complete_mfa_login_request::Code;
        let code = match code {
            SecondFactor::Totp(c) => Code::TotpCode(c),
            SecondFactor::Recovery(c) => Code::RecoveryCode(c),
        };
        let resp = AuthServiceClient::new(self.inner.channel.clone())
            .complete_mfa_login(pb::CompleteMfaLoginRequest {
                mfa_ticket: ticket.to_owned(),
                code: Some(code),
            })
            .await?
            .into_inner();
        self.inner.set_tokens(tokens_from(resp.tokens)?).await
    }

    /// Creates a single-use code with which a new device joins this account
    /// ([`Client::link`]).
    pub async fn create_link_code(&self) -> Result<String, SdkError> {
        let resp = self
            .inner
            .call(pb::CreateLinkCodeRequest {}, |ch, r| async move {
                DeviceServiceClient::new(ch).create_link_code(r).await
            })
            .await?;
        // A device is about to join: the next send must look the device list up again.
        self.inner.state.lock().await.own_devices = None;
        Ok(resp.link_code)
    }

    /// Uploads prekeys when the server's pools run low (also a rotated signed prekey or a
    /// missing last-resort KEM key), then tops up MLS KeyPackages.
    pub async fn top_up_keys(&self) -> Result<(), SdkError> {
        let counts = self.server_prekey_counts().await?;
        let cfg = &self.inner.config;
        let batch = cfg.prekey_batch.min(100);
        let mut req = pb::UploadPreKeysRequest::default();
        {
            let mut st = self.inner.state.lock().await;
            let st = &mut *st;
            if counts.signed_prekey_id.is_none() {
                req.signed_prekey = Some(spk_pb(&st.keys.new_signed(&st.identity).public()));
            }
            if !counts.has_last_resort_kem_prekey {
                req.last_resort_kem_prekey =
                    Some(kem_pb(&st.keys.new_kem(&st.identity, true).public()));
            }
            if counts.one_time_kem_prekeys < cfg.prekey_low_water {
                req.one_time_kem_prekeys = (0..batch)
                    .map(|_| kem_pb(&st.keys.new_kem(&st.identity, false).public()))
                    .collect();
            }
            if counts.one_time_prekeys < cfg.prekey_low_water {
                req.one_time_prekeys = (0..batch)
                    .map(|_| otk_pb(&st.keys.new_one_time().public()))
                    .collect();
            }
            // Private halves are saved before the public ones are published.
            self.inner.persist(st)?;
        }
        if req != pb::UploadPreKeysRequest::default() {
            self.inner
                .call(req, |ch, r| async move {
                    KeyDirectoryServiceClient::new(ch).upload_pre_keys(r).await
                })
                .await?;
        }
        self.top_up_key_packages().await
    }

    async fn top_up_key_packages(&self) -> Result<(), SdkError> {
        let count = self.server_key_package_count().await?;
        let cfg = &self.inner.config;
        let (one_time, last_resort) = {
            let mut st = self.inner.state.lock().await;
            let mls = st
                .mls
                .as_ref()
                .ok_or(SdkError::NotSignedIn("no MLS client"))?;
            let one_time = if count.one_time_count < cfg.prekey_low_water {
                (0..cfg.key_package_batch.min(100))
                    .map(|_| mls.create_key_package())
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                Vec::new()
            };
            let last_resort = if count.has_last_resort {
                None
            } else {
                Some(mls.create_last_resort_key_package()?)
            };
            self.inner.persist(&mut st)?;
            (one_time, last_resort)
        };
        if !one_time.is_empty() {
            self.inner
                .call(
                    pb::UploadKeyPackagesRequest {
                        key_packages: one_time,
                        last_resort: false,
                    },
                    |ch, r| async move {
                        KeyDirectoryServiceClient::new(ch)
                            .upload_key_packages(r)
                            .await
                    },
                )
                .await?;
        }
        if let Some(kp) = last_resort {
            self.inner
                .call(
                    pb::UploadKeyPackagesRequest {
                        key_packages: vec![kp],
                        last_resort: true,
                    },
                    |ch, r| async move {
                        KeyDirectoryServiceClient::new(ch)
                            .upload_key_packages(r)
                            .await
                    },
                )
                .await?;
        }
        Ok(())
    }
}
