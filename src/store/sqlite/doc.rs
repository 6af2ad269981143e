//! The pattern most resources share: an object stored as JSON text in a row keyed by
//! `(tenant, [parent…,] id)`, with a few indexed columns beside it, read back by key or as a
//! cursor page over the creation-ordered ids.
//!
//! A [`Table`] names the key and extra columns; the SQL is assembled from those static names
//! only (every value is a bound parameter) and cached per statement shape by rusqlite. The
//! async `SqliteStore::*_doc` wrappers at the end are what the per-resource files call.

use std::sync::OnceLock;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ToSql};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DbError, Durability, SqliteStore};
use crate::store::{ListQuery, Order, Page, StoreResult, Tenant};

/// Pages up to this many rows are short reads (every API list but files caps `limit` at
/// 100); the files list allows 10,000, which is read apart so it cannot hold up others.
const SHORT_PAGE: usize = 100;

/// A document table. Every one has `tenant` first and `body` last; `keys` end with `id`, the
/// column pages are ordered by, and the unique index `(tenant, keys…)` exists (schema.rs).
pub(super) struct Table {
    pub name: &'static str,
    /// Key columns after `tenant`, outermost first, ending with `id`.
    pub keys: &'static [&'static str],
    /// Columns written beside the body (values given by each put, in this order).
    pub extras: &'static [&'static str],
    put_sql: OnceLock<String>,
    get_sql: OnceLock<String>,
    delete_sql: OnceLock<String>,
}

impl Table {
    pub const fn new(
        name: &'static str,
        keys: &'static [&'static str],
        extras: &'static [&'static str],
    ) -> Table {
        Table {
            name,
            keys,
            extras,
            put_sql: OnceLock::new(),
            get_sql: OnceLock::new(),
            delete_sql: OnceLock::new(),
        }
    }

    /// `tenant = ?1 AND k1 = ?2 AND …` over the first `n` key columns.
    fn key_filter(&self, sql: &mut String, n: usize) {
        sql.push_str("tenant = ?1");
        for (i, k) in self.keys[..n].iter().enumerate() {
            sql.push_str(&format!(" AND {k} = ?{}", i + 2));
        }
    }

    /// Upsert: the update keeps the row (and its rowid) rather than delete-and-insert.
    fn put_sql(&self) -> &str {
        self.put_sql.get_or_init(|| {
            let cols: Vec<&str> = std::iter::once("tenant")
                .chain(self.keys.iter().copied())
                .chain(self.extras.iter().copied())
                .chain(std::iter::once("body"))
                .collect();
            let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            let updates: Vec<String> = self
                .extras
                .iter()
                .chain(std::iter::once(&"body"))
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (tenant, {}) DO UPDATE SET {}",
                self.name,
                cols.join(", "),
                params.join(", "),
                self.keys.join(", "),
                updates.join(", ")
            )
        })
    }

    fn get_sql(&self) -> &str {
        self.get_sql.get_or_init(|| {
            let mut sql = format!("SELECT body FROM {} WHERE ", self.name);
            self.key_filter(&mut sql, self.keys.len());
            sql
        })
    }

    fn delete_sql(&self) -> &str {
        self.delete_sql.get_or_init(|| {
            let mut sql = format!("DELETE FROM {} WHERE ", self.name);
            self.key_filter(&mut sql, self.keys.len());
            sql
        })
    }
}

/// Inserts or replaces the row `key` (tenant first, then `table.keys`).
pub(super) fn put(
    conn: &Connection,
    table: &Table,
    key: &[String],
    extras: &[SqlValue],
    body: &str,
) -> Result<(), DbError> {
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(key.len() + extras.len() + 1);
    params.extend(key.iter().map(|k| k as &dyn ToSql));
    params.extend(extras.iter().map(|v| v as &dyn ToSql));
    params.push(&body);
    conn.prepare_cached(table.put_sql())?.execute(&*params)?;
    Ok(())
}

/// The object at `key`, if any.
pub(super) fn get<T: DeserializeOwned>(
    conn: &Connection,
    table: &Table,
    key: &[String],
) -> Result<Option<T>, DbError> {
    let mut stmt = conn.prepare_cached(table.get_sql())?;
    let mut rows = stmt.query(rusqlite::params_from_iter(key))?;
    match rows.next()? {
        Some(row) => Ok(Some(serde_json::from_str(row.get_ref(0)?.as_str()?)?)),
        None => Ok(None),
    }
}

/// Deletes the row at `key`; whether it existed.
pub(super) fn delete(conn: &Connection, table: &Table, key: &[String]) -> Result<bool, DbError> {
    let n = conn
        .prepare_cached(table.delete_sql())?
        .execute(rusqlite::params_from_iter(key))?;
    Ok(n > 0)
}

/// Which rows a list covers: the scope key (tenant and every key column but `id`) and
/// optional equality filters on extra columns.
pub(super) struct Scope<'a> {
    pub key: &'a [String],
    pub filters: &'a [(&'static str, SqlValue)],
}

/// One page of the scope, ordered by id: a key-range read of `limit + 1` rows.
pub(super) fn list<T: DeserializeOwned>(
    conn: &Connection,
    table: &Table,
    scope: &Scope<'_>,
    q: &ListQuery,
) -> Result<Page<T>, DbError> {
    // `after` continues in the requested order; `before` alone reads backwards from the
    // cursor (against the order) and the page is flipped back by `Page::from_rows`.
    let (lower, upper) = match q.order {
        Order::Asc => (q.after.as_deref(), q.before.as_deref()),
        Order::Desc => (q.before.as_deref(), q.after.as_deref()),
    };
    let reversed = q.before.is_some() && q.after.is_none();
    let ascending = (q.order == Order::Asc) != reversed;

    let mut sql = format!("SELECT body FROM {} WHERE ", table.name);
    let scoped = scope.key.len().saturating_sub(1);
    table.key_filter(&mut sql, scoped);
    let mut params: Vec<&dyn ToSql> = scope.key.iter().map(|k| k as &dyn ToSql).collect();
    for (col, value) in scope.filters {
        params.push(value);
        sql.push_str(&format!(" AND {col} = ?{}", params.len()));
    }
    if let Some(lower) = &lower {
        params.push(lower);
        sql.push_str(&format!(" AND id > ?{}", params.len()));
    }
    if let Some(upper) = &upper {
        params.push(upper);
        sql.push_str(&format!(" AND id < ?{}", params.len()));
    }
    let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
    params.push(&fetch);
    sql.push_str(&format!(
        " ORDER BY id {} LIMIT ?{}",
        if ascending { "ASC" } else { "DESC" },
        params.len()
    ));

    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(&*params)?;
    let mut out = Vec::with_capacity(q.limit.min(1000));
    let mut more = false;
    while let Some(row) = rows.next()? {
        if out.len() == q.limit {
            // The extra row only says the page is not the last: no need to decode it.
            more = true;
            break;
        }
        out.push(serde_json::from_str(row.get_ref(0)?.as_str()?)?);
    }
    let mut page = Page::from_rows(out, q.limit, reversed);
    page.has_more |= more;
    Ok(page)
}

/// The key vector of a row: the tenant, then the given key values.
pub(super) fn key(t: &Tenant, rest: &[&str]) -> Vec<String> {
    std::iter::once(t.as_str())
        .chain(rest.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// An optional text column value.
pub(super) fn opt_text(v: Option<&str>) -> SqlValue {
    v.map_or(SqlValue::Null, |s| SqlValue::Text(s.to_owned()))
}

// The async wrappers the per-resource files use.
impl SqliteStore {
    pub(super) async fn put_doc<T: Serialize>(
        &self,
        table: &'static Table,
        key: Vec<String>,
        extras: Vec<SqlValue>,
        object: &T,
    ) -> StoreResult<()> {
        self.put_doc_with(Durability::Flush, table, key, extras, object)
            .await
    }

    pub(super) async fn put_doc_with<T: Serialize>(
        &self,
        durability: Durability,
        table: &'static Table,
        key: Vec<String>,
        extras: Vec<SqlValue>,
        object: &T,
    ) -> StoreResult<()> {
        // Serialized on the caller's task: cheap, and it keeps the writer thread on SQL only.
        let body = serde_json::to_string(object)
            .map_err(|e| crate::store::StoreError::Other(format!("cannot encode object: {e}")))?;
        self.db
            .write_with(durability, move |tx| {
                put(tx.conn, table, &key, &extras, &body)
            })
            .await
    }

    pub(super) async fn get_doc<T: DeserializeOwned + Send + 'static>(
        &self,
        table: &'static Table,
        key: Vec<String>,
    ) -> StoreResult<Option<T>> {
        self.db.read(move |conn| get(conn, table, &key)).await
    }

    pub(super) async fn delete_doc(
        &self,
        table: &'static Table,
        key: Vec<String>,
    ) -> StoreResult<bool> {
        self.db.write(move |tx| delete(tx.conn, table, &key)).await
    }

    pub(super) async fn list_doc<T: DeserializeOwned + Send + 'static>(
        &self,
        table: &'static Table,
        key: Vec<String>,
        filters: Vec<(&'static str, SqlValue)>,
        q: &ListQuery,
    ) -> StoreResult<Page<T>> {
        let q = q.clone();
        let long = q.limit > SHORT_PAGE;
        let read = move |conn: &Connection| {
            let scope = Scope {
                key: &key,
                filters: &filters,
            };
            list(conn, table, &scope, &q)
        };
        if long {
            self.db.read_long(read).await
        } else {
            self.db.read(read).await
        }
    }
}
