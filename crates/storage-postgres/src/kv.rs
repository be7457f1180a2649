//! [`KvStore`] on the `guardyn_kv` table.

use std::collections::HashMap;
use std::ops::Bound;

use async_trait::async_trait;
use guardyn_storage::{
    Condition, Direction, KeyRange, KvPair, KvStore, MAX_KEY_LEN, MAX_VALUE_LEN, Mutation,
    StorageError, StorageResult, Txn, TxnOutcome,
};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use crate::PostgresStore;
use crate::error::{Failure, retrying};

#[async_trait]
impl KvStore for PostgresStore {
    async fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        retrying(|| async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("SELECT value FROM guardyn_kv WHERE key = $1")
                .await?;
            let row = client.query_opt(&stmt, &[&key]).await?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
        .await
    }

    async fn scan(
        &self,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<KvPair>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (sql, bounds) = scan_statement(&range, direction);
        retrying(|| async {
            let client = self.client().await?;
            let stmt = client.prepare_cached(&sql).await?;
            let mut params: Vec<&(dyn ToSql + Sync)> =
                bounds.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
            params.push(&limit);
            let rows = client.query(&stmt, &params).await?;
            Ok(rows
                .into_iter()
                .map(|r| KvPair {
                    key: r.get(0),
                    value: r.get(1),
                })
                .collect())
        })
        .await
    }

    async fn commit(&self, txn: Txn) -> StorageResult<TxnOutcome> {
        validate(&txn)?;
        if txn.is_empty() {
            return Ok(TxnOutcome::Committed);
        }
        let (puts, deletes) = final_writes(&txn.mutations);
        retrying(|| self.try_commit(&txn.conditions, &puts, &deletes)).await
    }
}

impl PostgresStore {
    async fn try_commit(
        &self,
        conditions: &[Condition],
        puts: &Puts<'_>,
        deletes: &[&[u8]],
    ) -> Result<TxnOutcome, Failure> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::Serializable)
            .start()
            .await?;
        if !conditions.is_empty() {
            let keys: Vec<&[u8]> = conditions.iter().map(condition_key).collect();
            let stmt = tx
                .prepare_cached("SELECT key, value FROM guardyn_kv WHERE key = ANY($1)")
                .await?;
            let found: HashMap<Vec<u8>, Vec<u8>> = tx
                .query(&stmt, &[&keys])
                .await?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if let Some(condition) = first_failing(conditions, &found) {
                tx.rollback().await?;
                return Ok(TxnOutcome::Conflict { condition });
            }
        }
        if !puts.keys.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO guardyn_kv (key, value) \
                     SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await?;
            tx.execute(&stmt, &[&puts.keys, &puts.values]).await?;
        }
        if !deletes.is_empty() {
            let stmt = tx
                .prepare_cached("DELETE FROM guardyn_kv WHERE key = ANY($1)")
                .await?;
            tx.execute(&stmt, &[&deletes]).await?;
        }
        tx.commit().await?;
        Ok(TxnOutcome::Committed)
    }
}

fn validate(txn: &Txn) -> StorageResult<()> {
    let keys = txn
        .conditions
        .iter()
        .map(condition_key)
        .chain(txn.mutations.iter().map(|m| match m {
            Mutation::Put(k, _) | Mutation::Delete(k) => k.as_slice(),
        }));
    for key in keys {
        if key.len() > MAX_KEY_LEN {
            return Err(StorageError::InvalidRequest(format!(
                "key of {} bytes exceeds {MAX_KEY_LEN}",
                key.len()
            )));
        }
    }
    for m in &txn.mutations {
        if let Mutation::Put(_, v) = m
            && v.len() > MAX_VALUE_LEN
        {
            return Err(StorageError::InvalidRequest(format!(
                "value of {} bytes exceeds {MAX_VALUE_LEN}",
                v.len()
            )));
        }
    }
    Ok(())
}

fn condition_key(c: &Condition) -> &[u8] {
    match c {
        Condition::Absent(k) | Condition::Exists(k) | Condition::Equals(k, _) => k,
    }
}

/// Index of the first condition that does not hold against `found` (key → current value).
pub(crate) fn first_failing(
    conditions: &[Condition],
    found: &HashMap<Vec<u8>, Vec<u8>>,
) -> Option<usize> {
    conditions.iter().position(|c| match c {
        Condition::Absent(k) => found.contains_key(k),
        Condition::Exists(k) => !found.contains_key(k),
        Condition::Equals(k, v) => found.get(k) != Some(v),
    })
}

/// The puts of a transaction as two parallel arrays (for `unnest`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Puts<'a> {
    pub(crate) keys: Vec<&'a [u8]>,
    pub(crate) values: Vec<&'a [u8]>,
}

/// Reduce the mutations to each key's last write: one upsert and one delete statement then
/// apply them (an upsert may not touch one row twice), and later mutations still win.
pub(crate) fn final_writes(mutations: &[Mutation]) -> (Puts<'_>, Vec<&[u8]>) {
    let mut last: HashMap<&[u8], usize> = HashMap::new();
    for (i, m) in mutations.iter().enumerate() {
        let (Mutation::Put(k, _) | Mutation::Delete(k)) = m;
        last.insert(k.as_slice(), i);
    }
    let mut puts = Puts::default();
    let mut deletes = Vec::new();
    for (i, m) in mutations.iter().enumerate() {
        match m {
            Mutation::Put(k, v) if last.get(k.as_slice()) == Some(&i) => {
                puts.keys.push(k);
                puts.values.push(v);
            }
            Mutation::Delete(k) if last.get(k.as_slice()) == Some(&i) => deletes.push(k.as_slice()),
            _ => {}
        }
    }
    (puts, deletes)
}

/// The SQL of a scan and its bound parameters (`$1`, `$2` in that order; the limit follows).
pub(crate) fn scan_statement(range: &KeyRange, direction: Direction) -> (String, Vec<Vec<u8>>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    let mut bound = |b: &Bound<Vec<u8>>, inclusive: &str, exclusive: &str| {
        let (op, key) = match b {
            Bound::Included(k) => (inclusive, k),
            Bound::Excluded(k) => (exclusive, k),
            Bound::Unbounded => return,
        };
        params.push(key.clone());
        clauses.push(format!("key {op} ${}", params.len()));
    };
    bound(&range.start, ">=", ">");
    bound(&range.end, "<=", "<");
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let order = match direction {
        Direction::Forward => "ASC",
        Direction::Reverse => "DESC",
    };
    let sql = format!(
        "SELECT key, value FROM guardyn_kv{filter} ORDER BY key {order} LIMIT ${}",
        params.len() + 1
    );
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_statements_follow_the_bounds() {
        let (sql, params) = scan_statement(&KeyRange::between(b"a", b"c"), Direction::Reverse);
        assert_eq!(
            sql,
            "SELECT key, value FROM guardyn_kv WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3"
        );
        assert_eq!(params, vec![b"a".to_vec(), b"c".to_vec()]);
        let range = KeyRange {
            start: Bound::Excluded(b"x".to_vec()),
            end: Bound::Unbounded,
        };
        let (sql, params) = scan_statement(&range, Direction::Forward);
        assert_eq!(
            sql,
            "SELECT key, value FROM guardyn_kv WHERE key > $1 ORDER BY key ASC LIMIT $2"
        );
        assert_eq!(params.len(), 1);
        let (sql, _) = scan_statement(&KeyRange::all(), Direction::Forward);
        assert_eq!(
            sql,
            "SELECT key, value FROM guardyn_kv ORDER BY key ASC LIMIT $1"
        );
    }

    #[test]
    fn later_mutations_win() {
        let txn = Txn::new()
            .put(b"a".to_vec(), b"1".to_vec())
            .put(b"a".to_vec(), b"2".to_vec())
            .put(b"b".to_vec(), b"1".to_vec())
            .delete(b"b".to_vec())
            .delete(b"c".to_vec())
            .put(b"c".to_vec(), b"3".to_vec());
        let (puts, deletes) = final_writes(&txn.mutations);
        assert_eq!(puts.keys, vec![&b"a"[..], &b"c"[..]]);
        assert_eq!(puts.values, vec![&b"2"[..], &b"3"[..]]);
        assert_eq!(deletes, vec![&b"b"[..]]);
    }

    #[test]
    fn conditions_report_the_first_failure() {
        let found: HashMap<Vec<u8>, Vec<u8>> =
            [(b"k".to_vec(), b"v".to_vec()), (b"e".to_vec(), Vec::new())].into();
        let conds = |t: Txn| first_failing(&t.conditions, &found);
        assert_eq!(conds(Txn::new().require_exists(b"k".to_vec())), None);
        assert_eq!(
            conds(Txn::new().require_equals(b"e".to_vec(), Vec::new())),
            None
        );
        assert_eq!(
            conds(
                Txn::new()
                    .require_absent(b"x".to_vec())
                    .require_equals(b"k".to_vec(), b"w".to_vec())
                    .require_absent(b"k".to_vec())
            ),
            Some(1)
        );
        assert_eq!(conds(Txn::new().require_exists(b"x".to_vec())), Some(0));
    }
}
