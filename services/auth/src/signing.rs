//! Token-signing keys: generated on first start, persisted in the KvStore (versioned) so
//! tokens survive restarts, rotated by age.
//!
//! Rotation: when the newest key is older than `signing_key_rotation_secs`, a new key is added
//! and the previous one marked retired. Retired keys stay published (GetVerificationKeys, the
//! in-process verifier) until every token they signed has expired, then they are dropped.
//! Several instances may race to create or rotate: the key set is written with a
//! compare-and-set, so exactly one set wins and everybody adopts it.
//!
//! The seeds are sealed with the master key ([`crate::sealing`], AAD `signing-key:<kid>`)
//! before they reach the KvStore. Opening them is the first thing a start does, so a server
//! given the wrong master key refuses to start ([`AuthError::Unseal`]) instead of minting a new
//! key set and orphaning the old one.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use guardyn_common::auth::{TokenConfig, TokenSigner, TokenVerifier, VerificationKey};
use guardyn_common::clock::SharedClock;
use guardyn_common::mesh::{KeySource, MeshError};
use guardyn_storage::record::encode;
use guardyn_storage::{KvStore, Txn};
use zeroize::Zeroizing;

use crate::error::{AuthError, AuthResult};
use crate::model::{SigningKey, SigningKeys};
use crate::sealing::{MasterKey, Purpose};
use crate::store;

/// Published key with its validity window (Unix ms).
#[derive(Clone, Debug)]
pub struct PublishedKey {
    pub key: VerificationKey,
    pub not_before_ms: u64,
    pub expires_ms: Option<u64>,
}

/// The signing key set and the current signer.
#[derive(Debug)]
pub struct KeyStore {
    kv: Arc<dyn KvStore>,
    clock: SharedClock,
    master: Arc<MasterKey>,
    tokens: TokenConfig,
    rotation_ms: u64,
    /// How long a retired key stays published: the access-token lifetime plus leeway.
    grace_ms: u64,
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    signer: Arc<TokenSigner>,
    published: Vec<PublishedKey>,
}

impl KeyStore {
    /// Load the key set, creating or rotating it as needed.
    pub async fn open(
        kv: Arc<dyn KvStore>,
        clock: SharedClock,
        master: Arc<MasterKey>,
        tokens: TokenConfig,
        rotation_secs: u64,
        access_ttl_secs: u64,
    ) -> AuthResult<Self> {
        let rotation_ms = rotation_secs.saturating_mul(1000);
        let grace_ms = access_ttl_secs
            .saturating_add(tokens.leeway_secs)
            .saturating_add(60)
            .saturating_mul(1000);
        let set = ensure(&*kv, &*clock, &master, rotation_ms, grace_ms).await?;
        let state = build_state(&set, &master, &tokens, grace_ms, clock.now_ms())?;
        Ok(Self {
            kv,
            clock,
            master,
            tokens,
            rotation_ms,
            grace_ms,
            state: RwLock::new(state),
        })
    }

    /// Rotate if due (and adopt another instance's rotation). Returns the published keys.
    pub async fn refresh(&self) -> AuthResult<Vec<PublishedKey>> {
        let set = ensure(
            &*self.kv,
            &*self.clock,
            &self.master,
            self.rotation_ms,
            self.grace_ms,
        )
        .await?;
        let state = build_state(
            &set,
            &self.master,
            &self.tokens,
            self.grace_ms,
            self.clock.now_ms(),
        )?;
        let published = state.published.clone();
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(published)
    }

    pub fn signer(&self) -> Arc<TokenSigner> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .signer
            .clone()
    }

    pub fn published(&self) -> Vec<PublishedKey> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .published
            .clone()
    }

    /// Make the in-process verifier accept the published keys.
    pub fn install(&self, verifier: &TokenVerifier) {
        verifier.add_keys(self.published().into_iter().map(|p| p.key));
    }
}

#[async_trait]
impl KeySource for KeyStore {
    async fn verification_keys(&self) -> Result<Vec<VerificationKey>, MeshError> {
        Ok(self.published().into_iter().map(|p| p.key).collect())
    }
}

fn build_state(
    set: &SigningKeys,
    master: &MasterKey,
    tokens: &TokenConfig,
    grace_ms: u64,
    now_ms: u64,
) -> AuthResult<State> {
    let newest = set
        .keys
        .last()
        .ok_or_else(|| AuthError::Corrupt("empty signing key set".into()))?;
    let seed = open_seed(master, newest)?;
    let signer = Arc::new(TokenSigner::from_seed(newest.kid.clone(), &seed, tokens));
    let mut published = Vec::new();
    for k in set.keys.iter().rev().filter(|k| {
        k.retired_ms
            .is_none_or(|r| r.saturating_add(grace_ms) > now_ms)
    }) {
        let seed = open_seed(master, k)?;
        published.push(PublishedKey {
            key: TokenSigner::from_seed(k.kid.clone(), &seed, tokens).verification_key(),
            not_before_ms: k.created_ms,
            expires_ms: k.retired_ms.map(|r| r.saturating_add(grace_ms)),
        });
    }
    published.truncate(8);
    Ok(State { signer, published })
}

fn open_seed(master: &MasterKey, key: &SigningKey) -> AuthResult<Zeroizing<[u8; 32]>> {
    let seed = master.open(Purpose::SigningKey(&key.kid), &key.sealed_seed)?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| AuthError::Corrupt(format!("signing key {} seed length", key.kid)))?;
    Ok(Zeroizing::new(seed))
}

fn new_key(master: &MasterKey, now_ms: u64) -> AuthResult<SigningKey> {
    let kid = format!("auth-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let seed = Zeroizing::new(rand::random::<[u8; 32]>());
    Ok(SigningKey {
        sealed_seed: master.seal(Purpose::SigningKey(&kid), seed.as_ref())?,
        kid,
        created_ms: now_ms,
        retired_ms: None,
    })
}

/// Read the key set; create it, rotate it or prune it when needed (compare-and-set).
async fn ensure(
    kv: &dyn KvStore,
    clock: &dyn guardyn_common::clock::Clock,
    master: &MasterKey,
    rotation_ms: u64,
    grace_ms: u64,
) -> AuthResult<SigningKeys> {
    let key = store::signing();
    for _ in 0..store::MAX_ATTEMPTS {
        let now = clock.now_ms();
        let current = store::get::<SigningKeys>(kv, &key).await?;
        let (mut set, raw) = match current {
            Some((set, raw)) => (set, Some(raw)),
            None => (SigningKeys::default(), None),
        };
        let due = set
            .keys
            .last()
            .is_none_or(|k| now.saturating_sub(k.created_ms) >= rotation_ms);
        if !due {
            return Ok(set);
        }
        // Never extend a set this process cannot read (wrong master key): fail instead.
        for k in &set.keys {
            open_seed(master, k)?;
        }
        if let Some(last) = set.keys.last_mut() {
            last.retired_ms = Some(now);
        }
        set.keys.retain(|k| {
            k.retired_ms
                .is_none_or(|r| r.saturating_add(grace_ms) > now)
        });
        set.keys.push(new_key(master, now)?);
        let txn = Txn::new()
            .require_unchanged(key.clone(), raw.as_deref())
            .put(key.clone(), encode(&set));
        if store::commit(kv, txn).await? {
            tracing::info!(kid = %set.keys.last().map(|k| k.kid.as_str()).unwrap_or(""), "new token signing key");
            return Ok(set);
        }
    }
    Err(AuthError::Contention)
}
