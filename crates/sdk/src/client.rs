//! The client handle: shared state, authenticated calls with token refresh and state
//! persistence (enrolment and key top-up are in `enrol.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::common::v1::ErrorReason;
use tokio::sync::{Mutex, watch};
use tonic::transport::{Channel, Endpoint};

use crate::error::SdkError;
use crate::events::Event;
use crate::state::{State, Tokens};
use crate::store::Sealer;

/// Tunables of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Name shown to the account's other devices.
    pub device_name: String,
    /// One-time EC and KEM prekeys generated per upload (at most 100).
    pub prekey_batch: u32,
    /// Replenish a pool when the server holds fewer than this many keys.
    pub prekey_low_water: u32,
    /// MLS KeyPackages generated per upload (at most 100).
    pub key_package_batch: u32,
    /// Attempts for sends that hit DEVICE_MISMATCH or STALE_EPOCH.
    pub max_attempts: u32,
    /// Start and accept sessions without a post-quantum KEM prekey (plain X3DH). Off by
    /// default: a bundle or initial message without one is refused with
    /// [`SdkError::PqxdhRequired`], so a server cannot downgrade sessions by withholding KEM
    /// prekeys.
    pub allow_x3dh_fallback: bool,
    /// The Ed25519 public key the server signs the client configuration with (pin it from
    /// `guardyn admin config show`); without it [`Client::fetch_client_config`] refuses.
    pub client_config_key: Option<[u8; 32]>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            device_name: "guardyn-sdk".into(),
            prekey_batch: 50,
            prekey_low_water: 10,
            key_package_batch: 20,
            max_attempts: 5,
            allow_x3dh_fallback: false,
            client_config_key: None,
        }
    }
}

/// Opens a channel to a Guardyn server URL such as `http://127.0.0.1:50051`.
pub async fn connect(url: &str) -> Result<Channel, SdkError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| SdkError::Invalid(format!("{url:?} is not a server URL")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(endpoint.connect().await?)
}

pub(crate) struct Inner {
    pub channel: Channel,
    pub config: ClientConfig,
    pub account_id: String,
    pub device_id: u32,
    pub state: Mutex<State>,
    tokens: StdMutex<Option<Tokens>>,
    tokens_dirty: AtomicBool,
    refreshes: std::sync::atomic::AtomicU64,
    refresh_lock: Mutex<()>,
    sealer: Option<Sealer>,
    /// Set while a Listen pump runs (see `listen.rs`).
    pub pump_active: AtomicBool,
    /// Bumped after every processed batch of envelopes; waiters re-check the state.
    pub changed: watch::Sender<u64>,
    /// Events produced outside a pump (e.g. by a catch-up during a retry), handed out by the
    /// next `Inbox` or `Client::sync`.
    pub stash: StdMutex<VecDeque<Event>>,
    /// When the own-device list was last fetched; it is re-checked after
    /// [`OWN_DEVICES_TTL`] even without DeviceLinked notices (devices that do not listen
    /// miss them).
    pub own_checked: StdMutex<Option<std::time::Instant>>,
    /// Per group, the epoch whose member leaves were last checked against the directory's
    /// pinned MLS signature keys (`groups.rs`).
    pub mls_verified: StdMutex<std::collections::HashMap<Vec<u8>, u64>>,
    /// MLS signature keys the directory pins, per (account, device), as last fetched: incoming
    /// Welcomes, commits and messages whose leaves contradict them are refused (`groups.rs`).
    pub mls_pins: StdMutex<std::collections::HashMap<(String, u32), Vec<u8>>>,
    /// Accounts whose pinned MLS keys were fetched: a leaf naming one of their devices
    /// without a pin is refused.
    pub mls_fetched: StdMutex<std::collections::HashSet<String>>,
}

/// How long a fetched own-device list is trusted.
pub(crate) const OWN_DEVICES_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A signed-in device. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("account_id", &self.inner.account_id)
            .field("device_id", &self.inner.device_id)
            .finish_non_exhaustive()
    }
}

fn bearer<T>(req: &mut tonic::Request<T>, token: &str) -> Result<(), tonic::Status> {
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::internal("access token is not a valid header value"))?;
    req.metadata_mut().insert("authorization", value);
    Ok(())
}

pub(crate) fn tokens_from(t: Option<pb::Tokens>) -> Result<Tokens, SdkError> {
    let t = t.ok_or_else(|| SdkError::Protocol("response without tokens".into()))?;
    Ok(Tokens {
        access: t.access_token,
        refresh: t.refresh_token,
        session_id: t.session_id,
    })
}

impl Client {
    pub(crate) fn from_state(
        channel: Channel,
        config: ClientConfig,
        mut state: State,
        sealer: Option<Sealer>,
    ) -> Self {
        let tokens = state.tokens.take();
        Self {
            inner: Arc::new(Inner {
                channel,
                config,
                account_id: state.account_id.clone(),
                device_id: state.device_id,
                state: Mutex::new(state),
                tokens: StdMutex::new(tokens),
                tokens_dirty: AtomicBool::new(false),
                refreshes: std::sync::atomic::AtomicU64::new(0),
                refresh_lock: Mutex::new(()),
                sealer,
                pump_active: AtomicBool::new(false),
                changed: watch::channel(0).0,
                stash: StdMutex::new(VecDeque::new()),
                own_checked: StdMutex::new(None),
                mls_verified: StdMutex::new(std::collections::HashMap::new()),
                mls_pins: StdMutex::new(std::collections::HashMap::new()),
                mls_fetched: StdMutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    /// This device's account id (what peers address messages to).
    pub fn account_id(&self) -> &str {
        &self.inner.account_id
    }

    /// This device's id within the account.
    pub fn device_id(&self) -> u32 {
        self.inner.device_id
    }

    /// How many times this client exchanged its refresh token after an access token expired
    /// (diagnostics).
    pub fn token_refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// The device identity key (33 bytes), for safety-number comparison.
    pub async fn identity_key(&self) -> Vec<u8> {
        self.inner
            .state
            .lock()
            .await
            .identity
            .identity_key()
            .to_bytes()
            .to_vec()
    }

    /// Saves the state now (it is also saved after every change that matters).
    pub async fn save(&self) -> Result<(), SdkError> {
        let mut st = self.inner.state.lock().await;
        self.inner.persist(&mut st)
    }
}

impl Inner {
    pub(crate) fn access_token(&self) -> Option<String> {
        self.tokens
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| t.access.clone()))
    }

    pub(crate) async fn set_tokens(&self, tokens: Tokens) -> Result<(), SdkError> {
        if let Ok(mut t) = self.tokens.lock() {
            *t = Some(tokens);
        }
        let mut st = self.state.lock().await;
        self.persist(&mut st)
    }

    /// Writes the state (with the current tokens) if the client is file-backed.
    pub(crate) fn persist(&self, state: &mut State) -> Result<(), SdkError> {
        let Some(sealer) = &self.sealer else {
            return Ok(());
        };
        self.tokens_dirty.store(false, Ordering::SeqCst);
        state.tokens = self.tokens.lock().ok().and_then(|t| t.clone());
        let bytes = state.encode()?;
        state.tokens = None;
        sealer.save(&bytes)
    }

    /// Runs an authenticated unary call; on TOKEN_EXPIRED refreshes the session once and
    /// retries, and a call the server shed (OVERLOADED) is tried again after the server's
    /// hint, up to [`OVERLOAD_RETRIES`] times.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        req: Req,
        f: F,
    ) -> Result<Resp, tonic::Status>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut refreshed = false;
        let mut shed = 0;
        loop {
            let token = self
                .access_token()
                .ok_or_else(|| tonic::Status::unauthenticated("not signed in"))?;
            let mut r = tonic::Request::new(req.clone());
            bearer(&mut r, &token)?;
            match f(self.channel.clone(), r).await {
                Err(status) if !refreshed && token_expired(&status) => {
                    refreshed = true;
                    self.refresh(&token).await?;
                }
                Err(status) if shed < OVERLOAD_RETRIES && overloaded(&status) => {
                    shed += 1;
                    tokio::time::sleep(overload_backoff(&status)).await;
                }
                other => return other.map(tonic::Response::into_inner),
            }
        }
    }

    /// Exchanges the refresh token, unless another task already did so since `used` failed.
    pub(crate) async fn refresh(&self, used: &str) -> Result<(), tonic::Status> {
        let _guard = self.refresh_lock.lock().await;
        let current = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.as_ref().map(|t| (t.access.clone(), t.refresh.clone())));
        let Some((access, refresh)) = current else {
            return Err(tonic::Status::unauthenticated("not signed in"));
        };
        if access != used {
            return Ok(());
        }
        let resp = AuthServiceClient::new(self.channel.clone())
            .refresh_session(pb::RefreshSessionRequest {
                refresh_token: refresh,
            })
            .await?
            .into_inner();
        let tokens = tokens_from(resp.tokens)
            .map_err(|_| tonic::Status::internal("refresh response without tokens"))?;
        if let Ok(mut t) = self.tokens.lock() {
            *t = Some(tokens);
        }
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        // Refresh tokens are single use: save the new one at once. If the state is busy (its
        // holder may be waiting on this very call) the holder's next save picks it up.
        self.tokens_dirty.store(true, Ordering::SeqCst);
        if let Ok(mut st) = self.state.try_lock()
            && let Err(e) = self.persist(&mut st)
        {
            tracing::warn!(error = %e, "saving refreshed tokens failed");
        }
        Ok(())
    }

    /// Saves if a token refresh happened while the state was locked.
    pub(crate) fn persist_if_dirty(&self, state: &mut State) -> Result<(), SdkError> {
        if self.tokens_dirty.load(Ordering::SeqCst) {
            self.persist(state)?;
        }
        Ok(())
    }

    /// Opens the Listen stream (with the same refresh-once rule).
    pub(crate) async fn open_listen(
        &self,
    ) -> Result<
        tonic::Streaming<guardyn_proto::guardyn::messaging::v1::ListenResponse>,
        tonic::Status,
    > {
        use guardyn_proto::guardyn::messaging::v1::{
            ListenRequest, messaging_service_client::MessagingServiceClient,
        };
        self.call(ListenRequest {}, |ch, r| async move {
            MessagingServiceClient::new(ch).listen(r).await
        })
        .await
    }
}

/// Times a shed call is tried again before its OVERLOADED reaches the caller.
const OVERLOAD_RETRIES: u32 = 5;

/// Longest wait before trying a shed call again, whatever the server's hint says.
const OVERLOAD_MAX_WAIT: Duration = Duration::from_secs(5);

/// The server shed the call before running it (RESOURCE_EXHAUSTED, reason OVERLOADED): nothing
/// of it happened, so any call may be sent again, idempotent or not.
fn overloaded(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted
        && SdkError::from(status.clone()).reason() == Some(ErrorReason::Overloaded)
}

/// The server's retry hint (1 s when it gives none), capped at [`OVERLOAD_MAX_WAIT`], plus up
/// to half of it again at random: clients shed together must not all come back together.
fn overload_backoff(status: &tonic::Status) -> Duration {
    use tonic_types::StatusExt as _;
    let hint = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or(Duration::from_secs(1))
        .min(OVERLOAD_MAX_WAIT);
    hint + hint.mul_f64(rand::random::<f64>() / 2.0)
}

pub(crate) fn token_expired(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unauthenticated
        && SdkError::from(status.clone()).reason() == Some(ErrorReason::TokenExpired)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use guardyn_common::{ApiError, Reason};

    use super::{overload_backoff, overloaded};

    #[test]
    fn only_a_shed_call_is_retried_after_the_servers_hint_with_jitter() {
        let shed: tonic::Status = ApiError::new(Reason::Overloaded, "server is overloaded")
            .with_retry_after(Duration::from_secs(2))
            .into();
        assert!(overloaded(&shed));
        for _ in 0..20 {
            let wait = overload_backoff(&shed);
            assert!(
                wait >= Duration::from_secs(2) && wait <= Duration::from_secs(3),
                "{wait:?}"
            );
        }
        // A hint beyond the cap waits at most the cap and its jitter.
        let long: tonic::Status = ApiError::new(Reason::Overloaded, "busy")
            .with_retry_after(Duration::from_secs(600))
            .into();
        assert!(overload_backoff(&long) <= Duration::from_millis(7500));
        // A quota or rate limit is RESOURCE_EXHAUSTED too, but the call ran: not retried here.
        let limited: tonic::Status = ApiError::new(Reason::RateLimited, "slow down")
            .with_retry_after(Duration::from_secs(1))
            .into();
        assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
        assert!(!overloaded(&limited));
    }
}
