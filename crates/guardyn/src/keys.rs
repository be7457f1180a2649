//! `guardyn keys`: operator actions on the token-signing keys, run against the server's own
//! storage and event bus (same configuration file as `guardyn serve`).
//!
//! With the embedded engine the data directory is locked by a running server: stop it, revoke,
//! start it again (it loads the set without the key). With a shared store and the NATS bus the
//! running instances are told at once (`auth.signing_key.revoked`).

use std::sync::Arc;

use anyhow::Context as _;
use guardyn_auth::sealing::{DEFAULT_FILE, MasterKey};
use guardyn_auth::signing::{Revoked, revoke_key};
use guardyn_common::clock::{Clock as _, SystemClock};
use guardyn_events::EventBus;
use guardyn_storage::KvStore;

use crate::config::Config;

/// Revoke signing key `kid` now: its tokens are refused, a successor signs.
pub async fn revoke(config: &Config, kid: &str) -> anyhow::Result<()> {
    let master = master_key(config)?;
    let stores = crate::stores::open(&config.storage).await?;
    let bus = guardyn_events::connect(&config.events.to_events_config(), stores.log.clone())
        .await
        .context("connecting the event bus")?;
    let result = revoke_with(&*stores.kv, &*bus, &master, kid).await;
    stores.close().await;
    let revoked = result?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "revoked signing key {kid}; {} signs from now on",
            revoked.signing_kid
        );
        if !revoked.announced {
            println!("the event bus did not take the announcement: restart running instances");
        }
    }
    Ok(())
}

/// [`revoke`] on open handles (tests run it against a running server's store and bus).
pub async fn revoke_with(
    kv: &dyn KvStore,
    bus: &dyn EventBus,
    master: &MasterKey,
    kid: &str,
) -> anyhow::Result<Revoked> {
    revoke_key(kv, bus, master, SystemClock.now_ms(), kid)
        .await
        .with_context(|| format!("revoking signing key {kid}"))
}

/// The auth master key: it must already exist (a new one would not open the stored keys).
pub fn master_key(config: &Config) -> anyhow::Result<Arc<MasterKey>> {
    let configured = &config.auth.master_key_file;
    let path = if configured.as_os_str().is_empty() {
        config.storage.data_dir.join(DEFAULT_FILE)
    } else {
        configured.clone()
    };
    anyhow::ensure!(
        path.is_file(),
        "auth master key {} not found: run this with the server's configuration",
        path.display()
    );
    let key = MasterKey::load_or_create(configured, &config.storage.data_dir)
        .context("loading the auth master key")?;
    Ok(Arc::new(key))
}
