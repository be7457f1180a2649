//! The shared conformance suite against a real cluster, when `GUARDYN_TEST_TIKV_PD` names one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use guardyn_storage::KvStore;
use guardyn_storage::conformance::KvHarness;

use crate::{TikvConfig, TikvStore};

/// The env var naming the PD endpoints (comma separated) of a cluster the suite may write to.
const PD_VAR: &str = "GUARDYN_TEST_TIKV_PD";

struct Tikv {
    config: TikvConfig,
}

impl Tikv {
    /// `None` (with a note on stderr) when no cluster is configured: TiKV cannot run on the CI
    /// machines, so the suite runs wherever one is reachable.
    fn from_env(case: &str) -> Option<Self> {
        let Ok(pd) = std::env::var(PD_VAR) else {
            eprintln!("{case}: skipped, {PD_VAR} does not name a TiKV cluster");
            return None;
        };
        Some(Self {
            config: TikvConfig {
                pd_endpoints: pd.split(',').map(|s| s.trim().to_owned()).collect(),
                // Every case writes under its own unique key prefix inside this one.
                key_prefix: "guardyn-conformance/".into(),
                ..TikvConfig::default()
            },
        })
    }
}

#[async_trait]
impl KvHarness for Tikv {
    async fn open_kv(&self) -> Arc<dyn KvStore> {
        Arc::new(TikvStore::open(&self.config).await.expect("open TiKV"))
    }

    /// A second client with its own PD and TiKV connections and region cache, as another
    /// process would have.
    async fn open_kv_instance(&self, _first: &Arc<dyn KvStore>) -> Arc<dyn KvStore> {
        self.open_kv().await
    }
}

mod kv_conformance {
    guardyn_storage::kv_conformance_suite!(match super::Tikv::from_env(module_path!()) {
        Some(harness) => harness,
        None => return,
    });
}
