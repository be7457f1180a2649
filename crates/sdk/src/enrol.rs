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

/// A device [`Client::approve_link`] added to the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedDevice {
    /// Its device id.
    pub device_id: u32,
    /// Its name.
    pub name: String,
    /// Its identity public key (33 bytes).
    pub identity_key: Vec<u8>,
}

/// A new device waiting for a device of the account to approve it.
pub struct PendingLink {
    channel: Channel,
    config: ClientConfig,
    state: State,
    sealer: Option<Sealer>,
    code: String,
    secret: String,
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLink(..)")
    }
}

impl PendingLink {
    /// The code to show to the approving device. It is a credential: show it only there.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// This device's identity public key, for the approving user to compare.
    pub fn identity_key(&self) -> Vec<u8> {
        self.state.identity.identity_key().to_bytes().to_vec()
    }

    /// Waits (polling as the server asks, at most `timeout`) until the request is approved,
    /// then signs the device in, uploads its MLS KeyPackages and saves its state.
    pub async fn finish(mut self, timeout: std::time::Duration) -> Result<Client, SdkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let resp = loop {
            let attempt = DeviceServiceClient::new(self.channel.clone())
                .link_device(pb::LinkDeviceRequest {
                    link_code: self.code.clone(),
                    link_secret: self.secret.clone(),
                })
                .await;
            match attempt {
                Ok(r) => break r.into_inner(),
                Err(status) => {
                    let err = SdkError::from(status.clone());
                    let pending = matches!(
                        &err,
                        SdkError::Server { reason: Some(r), .. }
                            if *r == guardyn_proto::guardyn::common::v1::ErrorReason::LinkPending
                    );
                    if !pending || tokio::time::Instant::now() >= deadline {
                        return Err(err);
                    }
                    let wait = tonic_types::StatusExt::get_details_retry_info(&status)
                        .and_then(|r| r.retry_delay)
                        .unwrap_or(std::time::Duration::from_secs(1))
                        .min(std::time::Duration::from_secs(5));
                    tokio::time::sleep(wait).await;
                }
            }
        };
        self.state.account_id = resp.account_id;
        self.state.device_id = resp.device_id;
        self.state.tokens = Some(tokens_from(resp.tokens)?);
        Client::finish_enrolment(self.channel, self.config, self.state, self.sealer).await
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

    /// Starts joining an existing account as a new device: files the device's public keys and
    /// returns the code to show (as a QR code) to a device of that account, which approves it
    /// with [`Client::approve_link`]. Finish with [`PendingLink::finish`].
    pub async fn request_link(
        channel: Channel,
        storage: Storage,
        config: ClientConfig,
    ) -> Result<PendingLink, SdkError> {
        let sealer = sealer_for(&storage)?;
        let (state, device) = new_device(&config, "");
        let resp = DeviceServiceClient::new(channel.clone())
            .request_link(pb::RequestLinkRequest {
                device: Some(device),
            })
            .await?
            .into_inner();
        Ok(PendingLink {
            channel,
            config,
            state,
            sealer,
            code: resp.link_code,
            secret: resp.link_secret,
        })
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

    /// Proves the password (and the second factor when TOTP is enabled) again, for the
    /// server's step-up window: sensitive operations (approving a device link, removing a
    /// device, logging out everywhere, changing the password, TOTP enrolment) need it when
    /// the last sign-in is older.
    pub async fn step_up(
        &self,
        password: &str,
        factor: Option<SecondFactor>,
    ) -> Result<(), SdkError> {
        use pb::step_up_request::SecondFactor as F;
        let req = pb::StepUpRequest {
            password: password.to_owned(),
            second_factor: factor.map(|f| match f {
                SecondFactor::Totp(c) => F::TotpCode(c),
                SecondFactor::Recovery(c) => F::RecoveryCode(c),
            }),
        };
        self.inner
            .call(req, |ch, r| async move {
                AuthServiceClient::new(ch).step_up(r).await
            })
            .await?;
        Ok(())
    }

    /// Approves a new device that showed `code` ([`Client::request_link`]): it joins this
    /// account. Needs a recent sign-in or [`Client::step_up`]. Returns the new device's id,
    /// name and identity key (compare it with what the new device displays).
    pub async fn approve_link(&self, code: &str) -> Result<LinkedDevice, SdkError> {
        let resp = self
            .inner
            .call(
                pb::ApproveLinkRequest {
                    link_code: code.to_owned(),
                },
                |ch, r| async move { DeviceServiceClient::new(ch).approve_link(r).await },
            )
            .await?;
        // A device joined: the next send must look the device list up again.
        self.inner.state.lock().await.own_devices = None;
        let device = resp
            .device
            .ok_or_else(|| SdkError::Protocol("ApproveLink answered without the device".into()))?;
        Ok(LinkedDevice {
            device_id: device.device_id,
            name: device.name,
            identity_key: resp.identity_key,
        })
    }

    /// Removes a device of this account (its sessions end, its keys and queue are deleted).
    /// Needs a recent sign-in or [`Client::step_up`].
    pub async fn remove_device(&self, device_id: u32) -> Result<(), SdkError> {
        self.inner
            .call(pb::RemoveDeviceRequest { device_id }, |ch, r| async move {
                DeviceServiceClient::new(ch).remove_device(r).await
            })
            .await?;
        self.inner.state.lock().await.own_devices = None;
        Ok(())
    }

    /// Device changes this device has not seen (links and removals while it was offline),
    /// oldest first, as events; they are acknowledged on the server once returned.
    pub async fn device_notices(&self) -> Result<Vec<crate::Event>, SdkError> {
        self.inner.take_device_notices().await
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
