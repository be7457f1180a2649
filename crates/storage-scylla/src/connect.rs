//! The driver session and the schema: what `open` does before the log is usable.

use std::time::Duration;

use guardyn_storage::{StorageError, StorageResult};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::statement::{Consistency, SerialConsistency};

use crate::config::{ConsistencyLevel, ScyllaConfig, SerialLevel};
use crate::error;
use crate::schema::{self, COMPONENT, SCHEMA_VERSION, Statements};

/// A session with the configured levels and timeouts as its default profile, routing
/// token-aware (the driver's default policy, optionally preferring `local_datacenter`).
pub(crate) async fn session(cfg: &ScyllaConfig) -> Result<Session, StorageError> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &cfg.local_datacenter {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let profile = ExecutionProfile::builder()
        .consistency(consistency(cfg.consistency))
        .serial_consistency(Some(serial(cfg.serial_consistency)))
        .request_timeout(Some(Duration::from_millis(cfg.request_timeout_ms)))
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&cfg.nodes)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .default_execution_profile_handle(profile.into_handle());
    if let Some(c) = cfg.credentials()? {
        builder = builder.user(c.user, c.password);
    }
    let session = builder.build().await.map_err(|e| error::new_session(&e))?;
    Ok(session)
}

/// DDL is idempotent (`IF NOT EXISTS`), so instances starting together all run it; the driver
/// waits for schema agreement after each statement.
pub(crate) async fn ensure_schema(
    session: &Session,
    cfg: &ScyllaConfig,
) -> Result<(), StorageError> {
    let ddl =
        std::iter::once(schema::create_keyspace(cfg)).chain(schema::create_tables(&cfg.keyspace));
    for statement in ddl {
        session
            .query_unpaged(statement, ())
            .await
            .map_err(|e| error::execution("create schema", &e))?;
    }
    let text = Statements::new(&cfg.keyspace);
    let get = session
        .prepare(text.get_version)
        .await
        .map_err(|e| error::prepare("schema version", &e))?;
    let init = session
        .prepare(text.init_version)
        .await
        .map_err(|e| error::prepare("schema version", &e))?;
    let found = session
        .execute_unpaged(&get, (COMPONENT,))
        .await
        .map_err(|e| error::execution("schema version", &e))?;
    let version = match first_row::<(i32,)>(found)? {
        Some((v,)) => v,
        None => {
            // First start on this keyspace. IF NOT EXISTS: of two instances racing here, one
            // writes and both go on with the same version.
            session
                .execute_unpaged(&init, (COMPONENT, SCHEMA_VERSION))
                .await
                .map_err(|e| error::execution("schema version", &e))?;
            SCHEMA_VERSION
        }
    };
    if version > SCHEMA_VERSION {
        return Err(StorageError::Backend(format!(
            "keyspace {} has append-log schema version {version}, this binary knows up to \
             {SCHEMA_VERSION}: upgrade the binary",
            cfg.keyspace
        )));
    }
    Ok(())
}

pub(crate) fn consistency(c: ConsistencyLevel) -> Consistency {
    match c {
        ConsistencyLevel::Quorum => Consistency::Quorum,
        ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
        ConsistencyLevel::All => Consistency::All,
    }
}

/// The level of `read` and of the counter read: the configured one, or the serial level as a
/// (Paxos) read consistency when `serial_reads` is set.
pub(crate) fn read_consistency(cfg: &ScyllaConfig) -> Consistency {
    match (cfg.serial_reads, cfg.serial_consistency) {
        (false, _) => consistency(cfg.consistency),
        (true, SerialLevel::Serial) => Consistency::Serial,
        (true, SerialLevel::LocalSerial) => Consistency::LocalSerial,
    }
}

pub(crate) fn serial(c: SerialLevel) -> SerialConsistency {
    match c {
        SerialLevel::Serial => SerialConsistency::Serial,
        SerialLevel::LocalSerial => SerialConsistency::LocalSerial,
    }
}

pub(crate) fn first_row<T>(result: QueryResult) -> StorageResult<Option<T>>
where
    T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let rows = result
        .into_rows_result()
        .map_err(|e| StorageError::Backend(format!("scylla: expected rows: {e}")))?;
    rows.maybe_first_row::<T>()
        .map_err(|e| StorageError::Corrupt(format!("scylla row: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_the_configured_level_or_go_through_paxos() {
        let quorum = ScyllaConfig::default();
        assert_eq!(read_consistency(&quorum), Consistency::LocalQuorum);
        let serial = ScyllaConfig {
            serial_reads: true,
            ..ScyllaConfig::default()
        };
        assert_eq!(read_consistency(&serial), Consistency::LocalSerial);
        let global = ScyllaConfig {
            serial_reads: true,
            serial_consistency: SerialLevel::Serial,
            consistency: ConsistencyLevel::Quorum,
            ..ScyllaConfig::default()
        };
        assert_eq!(read_consistency(&global), Consistency::Serial);
        assert_eq!(consistency(global.consistency), Consistency::Quorum);
    }
}
