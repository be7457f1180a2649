//! The conformance suite every backend must pass unchanged.
//!
//! The suite is split in two, so an engine that provides only one of the stores can still run
//! its half:
//!
//! - KV cases (`kv_*`, `txn_*`, `kv_durability_across_reopen`) need a [`KvHarness`];
//! - log cases (`log_*`, `log_durability_across_reopen`) need a [`LogHarness`];
//! - joint cases (`joint_*`), for an engine that offers [`crate::JointStore`], need a
//!   [`JointHarness`] and run with [`joint_conformance_suite!`](crate::joint_conformance_suite);
//! - blob cases (`blob_*`) need a [`BlobHarness`] and run with
//!   [`blob_conformance_suite!`](crate::blob_conformance_suite).
//!
//! # Running the suite from an engine
//!
//! Implement the harness traits in the engine's tests and invoke
//! [`kv_conformance_suite!`](crate::kv_conformance_suite) and
//! [`log_conformance_suite!`](crate::log_conformance_suite) once each, with an expression that
//! builds a harness. Each macro expands to one
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` function per case, named after
//! the case, so a failing case never hides the others and `cargo test <case>` runs one case.
//! The expression is evaluated afresh inside every test (it may `.await`), so a harness can own
//! per-test state such as a temporary directory. The calling crate needs `tokio` with the
//! `macros` and `rt-multi-thread` features among its dev-dependencies.
//!
//! ```rust,ignore
//! struct Embedded { dir: tempfile::TempDir }
//!
//! #[async_trait::async_trait]
//! impl KvHarness for Embedded {
//!     async fn open_kv(&self) -> Arc<dyn KvStore> { /* open the store in self.dir */ }
//! }
//! #[async_trait::async_trait]
//! impl LogHarness for Embedded {
//!     async fn open_log(&self) -> Arc<dyn AppendLog> { /* open the store in self.dir */ }
//! }
//!
//! mod kv_conformance {
//!     guardyn_storage::kv_conformance_suite!(super::Embedded::new());
//! }
//! mod log_conformance {
//!     guardyn_storage::log_conformance_suite!(super::Embedded::new());
//! }
//! ```
//!
//! Attributes written after the expression are put on every generated test, e.g. a cluster
//! backend that needs a running cluster:
//! `kv_conformance_suite!(Tikv::from_env(), #[ignore = "needs GUARDYN_TIKV_URL"])`.
//!
//! The list of cases lives only in those two macros: a case added there runs for every engine.
//! Each case is also a public `async fn` taking `&impl KvHarness` / `&impl LogHarness`, for
//! engines that want to call one directly.
//!
//! # Several instances
//!
//! The `*_instances_*` cases open a second handle with `open_kv_instance` / `open_log_instance`
//! (another process of a cluster, on the same database): writes through one are seen through
//! the other, conflicting transactions from both have one winner, and concurrent appenders on
//! both leave a following cursor reader nothing missed or seen twice. The default instance is
//! a clone of the first handle (one-process engines).
//!
//! # Isolation and durability
//!
//! Every case opens the stores itself and works under its own key prefix / partition names,
//! made unique per case and per run, so the cases can run concurrently against one shared
//! cluster database without cleaning it first. The durability cases drop every handle they got
//! from the harness and open again: the new handles must see every acknowledged write.
//!
//! Failures panic with a message naming the broken contract: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod blob;
mod harness;
mod joint;
mod kv;
mod log;

pub use blob::*;
pub use harness::{BlobHarness, Joint, JointHarness, KvHarness, LogHarness};
pub use joint::*;
pub use kv::*;
pub use log::*;

/// Generates one test per [`KvStore`](crate::KvStore) conformance case, each with a fresh harness.
///
/// `kv_conformance_suite!(harness_expr $(, #[attr])*)`: `harness_expr` must evaluate to a value
/// implementing [`conformance::KvHarness`](crate::conformance::KvHarness); it is evaluated once
/// per generated test, inside the test's async body (so it may `.await`). Attributes after it
/// (e.g. `#[ignore = "needs a cluster"]`) are applied to every generated test. Each test is
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn <case>()`, so the
/// caller needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency. Invoke it
/// at most once per module (the tests are named after the cases).
///
/// This is the single list of KV cases: add a case here and every engine runs it.
#[macro_export]
macro_rules! kv_conformance_suite {
    ($harness:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__conformance_tests! {
            [$(#[$attr])*] ($harness)
            kv_get_put_delete,
            kv_bytewise_ordering,
            kv_range_bounds,
            kv_size_limits,
            txn_all_or_nothing,
            txn_condition_semantics,
            txn_later_mutation_wins,
            txn_cas_race_has_one_winner,
            txn_optimistic_counter,
            kv_durability_across_reopen,
            kv_instances_see_each_other,
            txn_instances_race_has_one_winner,
        }
    };
}

/// Generates one test per [`AppendLog`](crate::AppendLog) conformance case, each with a fresh harness.
///
/// `log_conformance_suite!(harness_expr $(, #[attr])*)`: `harness_expr` must evaluate to a value
/// implementing [`conformance::LogHarness`](crate::conformance::LogHarness); otherwise as
/// [`kv_conformance_suite!`](crate::kv_conformance_suite). The generated test names do not
/// collide with the KV ones, so both macros may share a module.
///
/// This is the single list of log cases: add a case here and every engine runs it.
#[macro_export]
macro_rules! log_conformance_suite {
    ($harness:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__conformance_tests! {
            [$(#[$attr])*] ($harness)
            log_sequences,
            log_concurrent_appends,
            log_read_cursor,
            log_delete,
            log_partition_isolation,
            log_invalid_requests,
            log_ttl_expiry,
            log_durability_across_reopen,
            log_instances_append_while_cursor_follows,
        }
    };
}

/// Generates one test per [`JointStore`](crate::JointStore) conformance case, each with a fresh
/// harness.
///
/// `joint_conformance_suite!(harness_expr $(, #[attr])*)`: `harness_expr` must evaluate to a
/// value implementing [`conformance::JointHarness`](crate::conformance::JointHarness);
/// otherwise as [`kv_conformance_suite!`](crate::kv_conformance_suite).
///
/// This is the single list of joint cases: add a case here and every engine offering a
/// joint store runs it.
#[macro_export]
macro_rules! joint_conformance_suite {
    ($harness:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__conformance_tests! {
            [$(#[$attr])*] ($harness)
            joint_all_or_nothing,
            joint_record_follows_earlier_appends,
            joint_updates,
            joint_size_limits,
            joint_race_has_one_winner,
            joint_durability_across_reopen,
        }
    };
}

/// Generates one test per [`BlobStore`](crate::BlobStore) conformance case, each with a fresh
/// harness.
///
/// `blob_conformance_suite!(harness_expr $(, #[attr])*)`: `harness_expr` must evaluate to a
/// value implementing [`conformance::BlobHarness`](crate::conformance::BlobHarness); otherwise
/// as [`kv_conformance_suite!`](crate::kv_conformance_suite). The generated test names do not
/// collide with the KV and log ones.
///
/// This is the single list of blob cases: add a case here and every engine runs it.
#[macro_export]
macro_rules! blob_conformance_suite {
    ($harness:expr $(, #[$attr:meta])* $(,)?) => {
        $crate::__conformance_tests! {
            [$(#[$attr])*] ($harness)
            blob_put_get_ranges,
            blob_size,
            blob_overwrite_is_atomic,
            blob_delete_is_idempotent,
            blob_list_by_prefix,
            blob_key_validation,
            blob_concurrent_puts,
            blob_max_object_round_trip,
            blob_durability_across_reopen,
        }
    };
}

/// Implementation detail of the suite macros: emits one test per case, one case at a time.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ([$(#[$attr:meta])*] ($harness:expr) $(,)?) => {};
    ([$(#[$attr:meta])*] ($harness:expr) $case:ident $(, $rest:ident)* $(,)?) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$attr])*
        async fn $case() {
            let harness = $harness;
            $crate::conformance::$case(&harness).await;
        }
        $crate::__conformance_tests! { [$(#[$attr])*] ($harness) $($rest),* }
    };
}
