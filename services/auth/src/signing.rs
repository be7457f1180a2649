//! Token-signing keys: generated on first start, persisted in the KvStore (versioned) so
//! tokens survive restarts, rotated by age, pre-published, revocable in an emergency.
//!
//! Rotation: when the newest key is older than `signing_key_rotation_secs`, a successor is
//! added. It is published at once (GetVerificationKeys, the in-process verifier) but signs only
//! from [`PREPUBLISH`] later (`active_ms`), when every instance has re-read the set (every
//! [`KEY_CHECK_EVERY`]) and every remote verifier has fetched it (every
//! `mesh.key_refresh_secs`), so no verifier sees a token of a key it does not know yet. The
//! predecessor retires when the successor starts signing and stays published until every
//! token it signed has expired, then it is dropped. Verifiers replace their key set on each
//! refresh, so a dropped key stops verifying. Several instances may race to create or rotate:
//! the key set is written with a compare-and-set, so exactly one set wins and everybody adopts
//! it.
//!
//! Emergency revocation ([`revoke_key`], `guardyn keys revoke <kid>`) removes a key from the
//! stored set (a successor signs at once if it was the signing key) and publishes
//! `auth.signing_key.revoked`, on which every process refuses the key's tokens at once and auth
//! instances re-read the set.
//!
//! The seeds are sealed with the master key ([`crate::sealing`], AAD `signing-key:<kid>`)
//! before they reach the KvStore. Opening them is the first thing a start does, so a server
//! given the wrong master key refuses to start ([`AuthError::Unseal`]) instead of minting a new
//! key set and orphaning the old one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use guardyn_common::auth::{TokenConfig, TokenSigner, TokenVerifier, VerificationKey};
use guardyn_common::clock::{SharedClock, run_passes};
use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{SIGNING_KEY_REVOKED, SigningKeyRevoked};
use guardyn_common::mesh::{KeySource, MeshError};
use guardyn_common::server::ServerContext;
use guardyn_events::EventBus;
use guardyn_storage::record::{Record, encode, postcard_body};
use guardyn_storage::{KvStore, StorageError, Txn};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{AuthError, AuthResult};
use crate::model::{SigningKey, SigningKeys};
use crate::sealing::{MasterKey, Purpose};
use crate::store;

/// How often each instance re-reads the key set (rotation due, successors of other instances,
/// keys dropped after their grace).
pub const KEY_CHECK_EVERY: Duration = Duration::from_secs(60);

/// How long a new key is published before it signs: more than this instance's
/// [`KEY_CHECK_EVERY`] plus the longest `mesh.key_refresh_secs` (300) a remote verifier may
/// wait between fetches.
pub const PREPUBLISH: Duration = Duration::from_secs(600);

/// Published key with its validity window (Unix ms).
#[derive(Clone, Debug)]
pub struct PublishedKey {
    pub key: VerificationKey,
    /// When it starts (or started) signing.
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
    /// Every key of the set with the time it starts signing, in that order.
    signers: Vec<(u64, Arc<TokenSigner>)>,
    /// The earliest of them, signing until one's time has come.
    first: Arc<TokenSigner>,
    published: Vec<PublishedKey>,
}

impl State {
    /// The newest key whose signing time has come.
    fn signer(&self, now_ms: u64) -> Arc<TokenSigner> {
        self.signers
            .iter()
            .rev()
            .find(|(active, _)| *active <= now_ms)
            .map_or_else(|| self.first.clone(), |(_, s)| s.clone())
    }
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

    /// Rotate if due (and adopt another instance's rotation or revocation). Returns the
    /// published keys.
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

    /// The key that signs now: a successor takes over at its `active_ms` without waiting for
    /// the next refresh.
    pub fn signer(&self) -> Arc<TokenSigner> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .signer(self.clock.now_ms())
    }

    pub fn published(&self) -> Vec<PublishedKey> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .published
            .clone()
    }

    /// Make the in-process verifier accept exactly the published keys.
    pub fn install(&self, verifier: &TokenVerifier) {
        verifier.replace_keys(self.published().into_iter().map(|p| p.key));
    }
}

#[async_trait]
impl KeySource for KeyStore {
    async fn verification_keys(&self) -> Result<Vec<VerificationKey>, MeshError> {
        Ok(self.published().into_iter().map(|p| p.key).collect())
    }
}

/// Keep the key set and this process's verifier current: re-read every [`KEY_CHECK_EVERY`]
/// (and when a manual test clock jumps), and at once on `auth.signing_key.revoked`. The
/// subscription is taken before this returns.
pub async fn spawn_refresh(
    keys: Arc<KeyStore>,
    bus: &dyn EventBus,
    ctx: ServerContext,
) -> Result<(), guardyn_events::EventError> {
    let mut revoked = bus.subscribe(SIGNING_KEY_REVOKED).await?;
    let refresh = {
        let keys = keys.clone();
        let ctx = ctx.clone();
        move || {
            let keys = keys.clone();
            let ctx = ctx.clone();
            async move {
                match keys.refresh().await {
                    Ok(_) => keys.install(&ctx.verifier),
                    Err(e) => tracing::warn!(error = %e, "token signing key refresh failed"),
                }
                false
            }
        }
    };
    let on_event = refresh.clone();
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                d = revoked.next() => match d {
                    Some(_) => { on_event().await; }
                    None => return,
                },
            }
        }
    });
    let clock = keys.clock.clone();
    tokio::spawn(async move {
        run_passes(&clock, &ctx.shutdown, KEY_CHECK_EVERY, refresh).await;
    });
    Ok(())
}

/// What [`revoke_key`] left signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The key that signs from now on.
    pub signing_kid: String,
    /// Whether `auth.signing_key.revoked` went out; if not, running instances keep accepting
    /// the key until their next re-read of the set (or restart).
    pub announced: bool,
}

/// Emergency revocation of signing key `kid`: remove it from the stored set, make a successor
/// sign at once when it was the signing key (the pre-published one if there is one, else a new
/// key), and publish `auth.signing_key.revoked` so that running processes refuse its tokens
/// at once. The operator's path (`guardyn keys revoke`); it needs the master key to seal a new
/// key. `NotFound` when the set has no such key.
pub async fn revoke_key(
    kv: &dyn KvStore,
    bus: &dyn EventBus,
    master: &MasterKey,
    now_ms: u64,
    kid: &str,
) -> AuthResult<Revoked> {
    let key = store::signing();
    let mut revoked = None;
    for _ in 0..store::MAX_ATTEMPTS {
        let Some((mut set, raw)) = store::get::<SigningKeys>(kv, &key).await? else {
            return Err(AuthError::NotFound {
                resource: "signing key",
            });
        };
        for k in &set.keys {
            open_seed(master, k)?;
        }
        let before = set.keys.len();
        set.keys.retain(|k| k.kid != kid);
        if set.keys.len() == before {
            return Err(AuthError::NotFound {
                resource: "signing key",
            });
        }
        // A signing key due to retire for a successor that is gone keeps signing.
        if let Some(last) = set.keys.last_mut()
            && last.retired_ms.is_some_and(|r| r > now_ms)
        {
            last.retired_ms = None;
        }
        let signing_now = set
            .keys
            .iter()
            .any(|k| k.active_ms <= now_ms && k.retired_ms.is_none_or(|r| r > now_ms));
        if !signing_now {
            match set.keys.iter_mut().find(|k| k.retired_ms.is_none()) {
                // The pre-published successor takes over before its time: a verifier that has
                // not fetched it yet refuses its tokens until its next refresh, which the
                // revocation event triggers.
                Some(next) => next.active_ms = now_ms,
                None => set.keys.push(new_key(master, now_ms, now_ms)?),
            }
            for k in &mut set.keys {
                if k.active_ms < now_ms && k.retired_ms.is_none_or(|r| r > now_ms) {
                    k.retired_ms = Some(now_ms);
                }
            }
        }
        let txn = Txn::new()
            .require_equals(key.clone(), raw)
            .put(key.clone(), encode(&set));
        if store::commit(kv, txn).await? {
            let state_signer = set
                .keys
                .iter()
                .rev()
                .find(|k| k.active_ms <= now_ms)
                .map(|k| k.kid.clone())
                .unwrap_or_default();
            revoked = Some(Revoked {
                signing_kid: state_signer,
                announced: false,
            });
            break;
        }
    }
    let mut revoked = revoked.ok_or(AuthError::Contention)?;
    tracing::warn!(%kid, successor = %revoked.signing_kid, "token signing key revoked");
    let event = SigningKeyRevoked {
        kid: kid.to_owned(),
    };
    match bus.publish(SIGNING_KEY_REVOKED, event.encode()).await {
        Ok(()) => revoked.announced = true,
        Err(e) => tracing::error!(error = %e, "could not announce the signing key revocation"),
    }
    Ok(revoked)
}

fn build_state(
    set: &SigningKeys,
    master: &MasterKey,
    tokens: &TokenConfig,
    grace_ms: u64,
    now_ms: u64,
) -> AuthResult<State> {
    let mut signers = Vec::with_capacity(set.keys.len());
    let mut published = Vec::new();
    for k in &set.keys {
        let seed = open_seed(master, k)?;
        let signer = Arc::new(TokenSigner::from_seed(k.kid.clone(), &seed, tokens));
        if k.retired_ms
            .is_none_or(|r| r.saturating_add(grace_ms) > now_ms)
        {
            published.push(PublishedKey {
                key: signer.verification_key(),
                not_before_ms: k.active_ms,
                expires_ms: k.retired_ms.map(|r| r.saturating_add(grace_ms)),
            });
        }
        signers.push((k.active_ms, signer));
    }
    signers.sort_by_key(|(active, _)| *active);
    let first = signers
        .first()
        .map(|(_, s)| s.clone())
        .ok_or_else(|| AuthError::Corrupt("empty signing key set".into()))?;
    published.reverse();
    published.truncate(8);
    Ok(State {
        signers,
        first,
        published,
    })
}

fn open_seed(master: &MasterKey, key: &SigningKey) -> AuthResult<Zeroizing<[u8; 32]>> {
    let seed = master.open(Purpose::SigningKey(&key.kid), &key.sealed_seed)?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| AuthError::Corrupt(format!("signing key {} seed length", key.kid)))?;
    Ok(Zeroizing::new(seed))
}

fn new_key(master: &MasterKey, now_ms: u64, active_ms: u64) -> AuthResult<SigningKey> {
    let kid = format!("auth-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let seed = Zeroizing::new(rand::random::<[u8; 32]>());
    Ok(SigningKey {
        sealed_seed: master.seal(Purpose::SigningKey(&kid), seed.as_ref())?,
        kid,
        created_ms: now_ms,
        retired_ms: None,
        active_ms,
    })
}

/// Read the key set; create it, add a pre-published successor or prune it when needed
/// (compare-and-set).
async fn ensure(
    kv: &dyn KvStore,
    clock: &dyn guardyn_common::clock::Clock,
    master: &MasterKey,
    rotation_ms: u64,
    grace_ms: u64,
) -> AuthResult<SigningKeys> {
    let key = store::signing();
    let prepublish_ms = u64::try_from(PREPUBLISH.as_millis()).unwrap_or(u64::MAX);
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
        let stale = set.keys.iter().any(|k| {
            k.retired_ms
                .is_some_and(|r| r.saturating_add(grace_ms) <= now)
        });
        if !due && !stale {
            return Ok(set);
        }
        // Never extend a set this process cannot read (wrong master key): fail instead.
        for k in &set.keys {
            open_seed(master, k)?;
        }
        set.keys.retain(|k| {
            k.retired_ms
                .is_none_or(|r| r.saturating_add(grace_ms) > now)
        });
        if due {
            // The first key signs at once (no verifier can hold an older set); a successor
            // only after pre-publication, when its predecessor retires.
            let active = if set.keys.is_empty() {
                now
            } else {
                now.saturating_add(prepublish_ms)
            };
            for k in &mut set.keys {
                if k.retired_ms.is_none() {
                    k.retired_ms = Some(active);
                }
            }
            set.keys.push(new_key(master, now, active)?);
        }
        let txn = Txn::new()
            .require_unchanged(key.clone(), raw.as_deref())
            .put(key.clone(), encode(&set));
        if store::commit(kv, txn).await? {
            if due {
                tracing::info!(kid = %set.keys.last().map(|k| k.kid.as_str()).unwrap_or(""), "new token signing key published");
            }
            return Ok(set);
        }
    }
    Err(AuthError::Contention)
}

/// Version 1 of a stored key: it signed from its creation.
#[derive(Deserialize)]
struct SigningKeyV1 {
    kid: String,
    sealed_seed: Vec<u8>,
    created_ms: u64,
    retired_ms: Option<u64>,
}

/// The key set is version 2 (each key with `active_ms`); version 1 is still read.
impl Record for SigningKeys {
    const VERSION: u8 = 2;

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, StorageError> {
        match version {
            2 => postcard_body(body),
            1 => {
                let keys: Vec<SigningKeyV1> = postcard_body(body)?;
                Ok(Self {
                    keys: keys
                        .into_iter()
                        .map(|k| SigningKey {
                            kid: k.kid,
                            sealed_seed: k.sealed_seed,
                            active_ms: k.created_ms,
                            created_ms: k.created_ms,
                            retired_ms: k.retired_ms,
                        })
                        .collect(),
                })
            }
            v => Err(StorageError::Corrupt(format!(
                "signing keys: unknown version {v}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn version_1_key_sets_are_still_read() {
        #[derive(serde::Serialize)]
        struct V1 {
            kid: String,
            sealed_seed: Vec<u8>,
            created_ms: u64,
            retired_ms: Option<u64>,
        }
        let v1 = vec![V1 {
            kid: "k".into(),
            sealed_seed: vec![1, 2],
            created_ms: 7,
            retired_ms: Some(9),
        }];
        let bytes = postcard::to_extend(&v1, vec![1u8]).unwrap();
        let set: SigningKeys = guardyn_storage::record::decode(&bytes).unwrap();
        assert_eq!(set.keys[0].active_ms, 7);
        assert_eq!(set.keys[0].retired_ms, Some(9));
        let again: SigningKeys = guardyn_storage::record::decode(&encode(&set)).unwrap();
        assert_eq!(again, set);
    }
}
