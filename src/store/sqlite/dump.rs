//! `DumpStore` for SQLite: scans in key order (`tenant`, then the table's key columns, which
//! every table has a unique index on), resumed from the last key read; the cursor is that
//! key as a JSON array.

use async_trait::async_trait;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, Row, ToSql};
use serde_json::Value;

use super::doc::{self, key};
use super::runs::{RUNS, encode, run_columns};
use super::{DbError, SqliteStore};
use crate::model::RunRecord;
use crate::store::dump::{ChunkRow, Cursor, DumpStore, Kind, Record, Scan};
use crate::store::{StoreError, StoreResult, Tenant, apply_activity};

/// Where a kind's rows live: the table, its key columns after `tenant`, the value columns.
struct Source {
    table: &'static str,
    keys: &'static [&'static str],
    values: &'static str,
}

fn source(kind: Kind) -> Source {
    let (table, keys, values): (_, &'static [&'static str], _) = match kind {
        Kind::Assistants => ("assistants", &["id"], "body"),
        Kind::FileParts => ("file_parts", &["file_id", "idx"], "data"),
        Kind::Files => ("files", &["id"], "body"),
        Kind::VectorStores => ("vector_stores", &["id"], "body, last_active_at"),
        Kind::Batches => ("vs_batches", &["vs_id", "id"], "body"),
        Kind::VsFiles => ("vs_files", &["vs_id", "id"], "body"),
        // Chunks are read per membership (every chunk belongs to one), whole files at a time.
        Kind::Chunks => ("vs_files", &["vs_id", "id"], "id"),
        Kind::Threads => ("threads", &["id"], "body"),
        Kind::Messages => ("messages", &["thread_id", "id"], "body"),
        Kind::Runs => ("runs", &["thread_id", "id"], "body"),
        Kind::Steps => ("run_steps", &["thread_id", "run_id", "id"], "body"),
    };
    Source {
        table,
        keys,
        values,
    }
}

fn bad_cursor(c: &str) -> DbError {
    DbError::Invalid(format!("not a SQLite scan position: {c:?}"))
}

/// The key a cursor names, as bind values (text, or integer for `idx`).
fn cursor_values(c: &str, n: usize) -> Result<Vec<SqlValue>, DbError> {
    let parts: Vec<Value> = serde_json::from_str(c).map_err(|_| bad_cursor(c))?;
    if parts.len() != n {
        return Err(bad_cursor(c));
    }
    parts
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(SqlValue::Text(s)),
            Value::Number(n) => n
                .as_i64()
                .map(SqlValue::Integer)
                .ok_or_else(|| bad_cursor(c)),
            _ => Err(bad_cursor(c)),
        })
        .collect()
}

fn cursor_of(key: &[SqlValue]) -> Cursor {
    let parts: Vec<Value> = key
        .iter()
        .map(|v| match v {
            SqlValue::Integer(i) => Value::from(*i),
            SqlValue::Text(s) => Value::from(s.as_str()),
            _ => Value::Null,
        })
        .collect();
    Value::Array(parts).to_string()
}

fn body<T: serde::de::DeserializeOwned>(row: &Row<'_>, i: usize) -> Result<T, DbError> {
    Ok(serde_json::from_str(row.get_ref(i)?.as_str()?)?)
}

fn text(v: &SqlValue) -> String {
    match v {
        SqlValue::Text(s) => s.clone(),
        SqlValue::Integer(i) => i.to_string(),
        _ => String::new(),
    }
}

fn scan_page(
    conn: &Connection,
    kind: Kind,
    tenant: Option<&str>,
    from: Option<&str>,
    limit: usize,
) -> Result<Scan, DbError> {
    let src = source(kind);
    let cols: Vec<&str> = std::iter::once("tenant")
        .chain(src.keys.iter().copied())
        .collect();
    let mut sql = format!(
        "SELECT {}, {} FROM {}",
        cols.join(", "),
        src.values,
        src.table
    );
    let mut params: Vec<SqlValue> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    if let Some(t) = tenant {
        params.push(SqlValue::Text(t.to_owned()));
        conds.push(format!("tenant = ?{}", params.len()));
    }
    if let Some(c) = from {
        let first = params.len() + 1;
        params.extend(cursor_values(c, cols.len())?);
        let marks: Vec<String> = (first..=params.len()).map(|i| format!("?{i}")).collect();
        conds.push(format!("({}) > ({})", cols.join(", "), marks.join(", ")));
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    params.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(
        " ORDER BY {} LIMIT ?{}",
        cols.join(", "),
        params.len()
    ));
    let mut stmt = conn.prepare_cached(&sql)?;
    let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
    let mut rows = stmt.query(&*refs)?;
    let mut out = Scan::default();
    let mut last: Option<Vec<SqlValue>> = None;
    let mut read = 0;
    while let Some(row) = rows.next()? {
        read += 1;
        let key: Vec<SqlValue> = (0..cols.len())
            .map(|i| row.get::<_, SqlValue>(i))
            .collect::<Result<_, _>>()?;
        let tenant = text(&key[0]);
        let v = cols.len();
        match kind {
            Kind::Chunks => chunks_of(conn, &tenant, &text(&key[1]), &text(&key[2]), &mut out)?,
            _ => out.records.push(decode(kind, tenant, &key, row, v)?),
        }
        last = Some(key);
    }
    // A short page is the last one.
    out.next = if read < limit {
        None
    } else {
        last.as_deref().map(cursor_of)
    };
    Ok(out)
}

/// The record of one row; `v` is the index of the first value column.
fn decode(
    kind: Kind,
    tenant: String,
    key: &[SqlValue],
    row: &Row<'_>,
    v: usize,
) -> Result<Record, DbError> {
    Ok(match kind {
        Kind::Assistants => Record::Assistant {
            tenant,
            object: body(row, v)?,
        },
        Kind::FileParts => Record::FilePart {
            tenant,
            file_id: text(&key[1]),
            index: match &key[2] {
                SqlValue::Integer(i) => u32::try_from(*i)
                    .map_err(|_| DbError::Invalid(format!("file part index {i}")))?,
                _ => return Err(DbError::Invalid("file part index is not a number".into())),
            },
            data: match row.get_ref(v)? {
                ValueRef::Blob(b) => bytes::Bytes::copy_from_slice(b),
                _ => return Err(DbError::Invalid("file part is not a blob".into())),
            },
        },
        Kind::Files => Record::File {
            tenant,
            object: body(row, v)?,
        },
        Kind::VectorStores => {
            let mut object = body(row, v)?;
            apply_activity(&mut object, row.get::<_, Option<i64>>(v + 1)?);
            Record::VectorStore { tenant, object }
        }
        Kind::Batches => Record::FileBatch {
            tenant,
            object: body(row, v)?,
        },
        Kind::VsFiles => Record::VectorStoreFile {
            tenant,
            object: body(row, v)?,
        },
        Kind::Threads => Record::Thread {
            tenant,
            object: body(row, v)?,
        },
        Kind::Messages => Record::Message {
            tenant,
            object: body(row, v)?,
        },
        Kind::Runs => Record::Run {
            tenant,
            object: Box::new(body(row, v)?),
        },
        Kind::Steps => Record::RunStep {
            tenant,
            object: body(row, v)?,
        },
        Kind::Chunks => return Err(DbError::Invalid("chunks are read per file".into())),
    })
}

/// Every chunk of one file in one store, in order, embeddings included.
fn chunks_of(
    conn: &Connection,
    tenant: &str,
    vs_id: &str,
    file_id: &str,
    out: &mut Scan,
) -> Result<(), DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, text, attributes, embedding FROM chunks \
         WHERE tenant = ?1 AND vs_id = ?2 AND file_id = ?3 ORDER BY idx",
    )?;
    let mut rows = stmt.query([tenant, vs_id, file_id])?;
    while let Some(row) = rows.next()? {
        let mut embedding = Vec::new();
        super::index::decode_f32(row.get_ref(3)?.as_blob()?, &mut embedding);
        out.records.push(Record::Chunk {
            tenant: tenant.to_owned(),
            vector_store_id: vs_id.to_owned(),
            file_id: file_id.to_owned(),
            chunk: ChunkRow {
                index: row.get(0)?,
                text: row.get(1)?,
                attributes: body(row, 2)?,
                embedding,
            },
        });
    }
    Ok(())
}

#[async_trait]
impl DumpStore for SqliteStore {
    async fn scan(
        &self,
        kind: Kind,
        tenant: Option<&Tenant>,
        from: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Scan> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        let from = from.cloned();
        self.db
            .read_long(move |conn| {
                scan_page(conn, kind, tenant.as_deref(), from.as_deref(), limit.max(1))
            })
            .await
    }

    async fn count(&self, kind: Kind, tenant: Option<&Tenant>) -> StoreResult<u64> {
        let table = match kind {
            Kind::Chunks => "chunks",
            other => source(other).table,
        };
        let tenant = tenant.map(|t| t.as_str().to_owned());
        self.db
            .read_long(move |conn| {
                let n: i64 = match &tenant {
                    Some(t) => conn.query_row(
                        &format!("SELECT COUNT(*) FROM {table} WHERE tenant = ?1"),
                        [t],
                        |r| r.get(0),
                    )?,
                    None => {
                        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?
                    }
                };
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }

    async fn restore_run(&self, t: &Tenant, run: &RunRecord) -> StoreResult<()> {
        let key = key(t, &[&run.run.thread_id, &run.run.id]);
        let extras = run_columns(run)?;
        let body = encode(run)?;
        self.db
            .write(move |tx| doc::put(tx.conn, &RUNS, &key, &extras, &body))
            .await
            .map_err(|e| match e {
                StoreError::Other(m) if m.contains("UNIQUE") => {
                    StoreError::Other(format!("{m} (the thread already has another active run)"))
                }
                other => other,
            })
    }
}
