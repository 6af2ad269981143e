//! `DumpStore` for Cassandra: whole-table scans in token order, one driver page per call,
//! resumed from the driver's paging state (the cursor, base64). A paging state names the
//! last partition and row read, so it stays valid in a later session for the same query.
//! `--tenant` filters here, client side: most tables' partition keys hold more than the
//! tenant, so a tenant's rows are not one range.
//!
//! Two rules are repeated from files this module may not share private items with: a chunk's
//! partition bucket (`chunks.rs`: FNV-1a of the file id mod 4) and the active-run shard
//! (`runs.rs`: mod 16). The migration tests read copied chunks and active runs back through
//! the ordinary store, so a drift would fail them.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::Consistency;
use scylla::value::CqlValue;

use super::schema::chunk_table;
use super::{Applied, CassandraStore, Conn, fault, from_json, to_json};
use crate::model::RunRecord;
use crate::store::dump::{ChunkRow, Cursor, DumpStore, Kind, Record, Scan};
use crate::store::{StoreError, StoreResult, Tenant, apply_activity};

/// The table a kind is scanned from and the columns read (tenant first).
fn source(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Assistants => ("assistants", "tenant, doc"),
        Kind::FileParts => ("file_parts", "tenant, file_id, idx, data"),
        Kind::Files => ("files", "tenant, doc"),
        Kind::VectorStores => ("vector_stores", "tenant, doc, last_active_at"),
        Kind::Batches => ("vs_batches", "tenant, doc"),
        Kind::VsFiles => ("vs_files", "tenant, doc"),
        // Chunks are read per membership (every chunk belongs to one), whole files at a time.
        Kind::Chunks => ("vs_files", "tenant, vector_store_id, id"),
        Kind::Threads => ("threads", "tenant, doc"),
        Kind::Messages => ("messages", "tenant, doc"),
        // A runs partition holding only its lock (static) reads as a row without a doc.
        Kind::Runs => ("runs", "tenant, doc"),
        Kind::Steps => ("run_steps", "tenant, doc"),
    }
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_owned())
}

fn col_text(v: Option<&Option<CqlValue>>) -> Option<String> {
    match v {
        Some(Some(CqlValue::Text(s) | CqlValue::Ascii(s))) => Some(s.clone()),
        _ => None,
    }
}

fn doc_record(kind: Kind, tenant: String, doc: &str) -> StoreResult<Record> {
    Ok(match kind {
        Kind::Assistants => Record::Assistant {
            tenant,
            object: from_json(doc)?,
        },
        Kind::Files => Record::File {
            tenant,
            object: from_json(doc)?,
        },
        Kind::Batches => Record::FileBatch {
            tenant,
            object: from_json(doc)?,
        },
        Kind::VsFiles => Record::VectorStoreFile {
            tenant,
            object: from_json(doc)?,
        },
        Kind::Threads => Record::Thread {
            tenant,
            object: from_json(doc)?,
        },
        Kind::Messages => Record::Message {
            tenant,
            object: from_json(doc)?,
        },
        Kind::Runs => Record::Run {
            tenant,
            object: Box::new(from_json(doc)?),
        },
        Kind::Steps => Record::RunStep {
            tenant,
            object: from_json(doc)?,
        },
        Kind::FileParts | Kind::VectorStores | Kind::Chunks => {
            return Err(StoreError::Other(format!(
                "{} rows are not plain documents",
                kind.name()
            )));
        }
    })
}

impl Conn {
    /// One page of a whole-table read from `from`, as raw rows, and the next position.
    async fn dump_page(
        &self,
        cql: &str,
        from: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<(Vec<Vec<Option<CqlValue>>>, Option<Cursor>)> {
        let mut p = self.prepare(cql).await?;
        p.set_page_size(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        let state =
            match from {
                Some(c) => PagingState::new_from_raw_bytes(STANDARD.decode(c).map_err(|_| {
                    StoreError::Other(format!("not a Cassandra scan position: {c:?}"))
                })?),
                None => PagingState::start(),
            };
        let (result, paging) = self
            .session
            .execute_single_page(&p, (), state)
            .await
            .map_err(|e| fault("reading", e))?;
        let rows: Vec<scylla::value::Row> = super::typed_rows(result)?;
        let next = match paging {
            PagingStateResponse::HasMorePages { state } => {
                state.as_bytes_slice().map(|b| STANDARD.encode(b.as_ref()))
            }
            PagingStateResponse::NoMorePages => None,
        };
        Ok((rows.into_iter().map(|r| r.columns).collect(), next))
    }

    /// Every chunk of one file in one store, in order, embeddings included (a chunk stored
    /// without one, see `chunks.rs`, gets zeros of its table's dimension back).
    async fn dump_chunks(
        &self,
        tenant: &str,
        vs_id: &str,
        file_id: &str,
        out: &mut Vec<Record>,
    ) -> StoreResult<()> {
        let dims: Vec<(i32,)> = self
            .rows(
                &format!(
                    "SELECT dims FROM {} WHERE tenant = ? AND vector_store_id = ?",
                    self.table("vs_chunk_dims")
                ),
                (tenant, vs_id),
            )
            .await?;
        let bucket = super::chunks::bucket(file_id);
        let mut found: Vec<ChunkRow> = Vec::new();
        for (d,) in dims {
            let Ok(d) = u32::try_from(d) else { continue };
            let cql = format!(
                "SELECT chunk_no, content, attributes, embedding FROM {} WHERE tenant = ? \
                 AND vector_store_id = ? AND bucket = ? AND file_id = ?",
                self.table(&chunk_table(d))
            );
            type Row = (i32, Option<String>, Option<String>, Option<Vec<f32>>);
            let mut bad = None;
            self.scan::<Row>(&cql, (tenant, vs_id, bucket, file_id), |(no, c, a, e)| {
                let attributes = match a.as_deref().map(from_json) {
                    Some(Ok(a)) => a,
                    Some(Err(err)) => {
                        bad = Some(err);
                        return false;
                    }
                    None => Default::default(),
                };
                found.push(ChunkRow {
                    index: u32::try_from(no).unwrap_or(0),
                    text: c.unwrap_or_default(),
                    attributes,
                    embedding: e.unwrap_or_else(|| vec![0.0; d as usize]),
                });
                true
            })
            .await?;
            if let Some(e) = bad {
                return Err(e);
            }
        }
        found.sort_by_key(|c| c.index);
        out.extend(found.into_iter().map(|chunk| Record::Chunk {
            tenant: tenant.to_owned(),
            vector_store_id: vs_id.to_owned(),
            file_id: file_id.to_owned(),
            chunk,
        }));
        Ok(())
    }
}

#[async_trait]
impl DumpStore for CassandraStore {
    async fn scan(
        &self,
        kind: Kind,
        tenant: Option<&Tenant>,
        from: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Scan> {
        let conn = self.conn().await?;
        let (table, cols) = source(kind);
        let cql = format!("SELECT {cols} FROM {}", conn.table(table));
        let (rows, next) = conn.dump_page(&cql, from, limit).await?;
        let mut out = Scan {
            records: Vec::with_capacity(rows.len()),
            next,
        };
        for row in rows {
            let Some(t) = col_text(row.first()) else {
                continue;
            };
            if tenant.is_some_and(|want| want.as_str() != t) {
                continue;
            }
            match kind {
                Kind::FileParts => {
                    let (Some(file_id), Some(Some(CqlValue::Int(idx))), Some(Some(data))) =
                        (col_text(row.get(1)), row.get(2), row.get(3))
                    else {
                        continue;
                    };
                    let data = match data {
                        CqlValue::Blob(b) => bytes::Bytes::from(b.clone()),
                        _ => return Err(StoreError::Other("file part is not a blob".into())),
                    };
                    out.records.push(Record::FilePart {
                        tenant: t,
                        file_id,
                        index: u32::try_from(*idx).unwrap_or(0),
                        data,
                    });
                }
                Kind::VectorStores => {
                    let Some(doc) = col_text(row.get(1)) else {
                        continue;
                    };
                    let mut object = from_json(&doc)?;
                    let active = match row.get(2) {
                        Some(Some(CqlValue::BigInt(at))) => Some(*at),
                        _ => None,
                    };
                    apply_activity(&mut object, active);
                    out.records.push(Record::VectorStore { tenant: t, object });
                }
                Kind::Chunks => {
                    let (Some(vs), Some(file)) = (col_text(row.get(1)), col_text(row.get(2)))
                    else {
                        continue;
                    };
                    conn.dump_chunks(&t, &vs, &file, &mut out.records).await?;
                }
                _ => {
                    if let Some(doc) = col_text(row.get(1)) {
                        out.records.push(doc_record(kind, t, &doc)?);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn count(&self, kind: Kind, tenant: Option<&Tenant>) -> StoreResult<u64> {
        let conn = self.conn().await?;
        let tables: Vec<String> = match kind {
            Kind::Chunks => {
                let names: Vec<(String,)> = conn
                    .rows(
                        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
                        (conn.keyspace.as_str(),),
                    )
                    .await?;
                names
                    .into_iter()
                    .map(|(n,)| n)
                    .filter(|n| {
                        n.strip_prefix("chunks_v")
                            .is_some_and(|d| d.parse::<u32>().is_ok())
                    })
                    .collect()
            }
            other => vec![source(other).0.to_owned()],
        };
        // Rows of a runs partition holding only its lock have no id: not counted.
        let key = match kind {
            Kind::Chunks => "chunk_no",
            Kind::FileParts => "idx",
            _ => "id",
        };
        let mut n = 0u64;
        for table in tables {
            let cql = format!("SELECT tenant, {key} FROM {}", conn.table(&table));
            conn.scan::<(String, Option<CqlValue>)>(&cql, (), |(t, k)| {
                if k.is_some() && tenant.is_none_or(|want| want.as_str() == t) {
                    n += 1;
                }
                true
            })
            .await?;
        }
        Ok(n)
    }

    async fn restore_run(&self, t: &Tenant, run: &RunRecord) -> StoreResult<()> {
        let conn = self.conn().await?;
        let r = &run.run;
        let doc = to_json(run)?;
        let version = CqlValue::BigInt(i64::try_from(run.version).unwrap_or(i64::MAX));
        let write_id = crate::ids::new_body();
        // Run rows are written by lightweight transactions only (see `runs.rs`).
        let insert = format!(
            "INSERT INTO {} (tenant, thread_id, id, doc, version, status, write_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
            conn.table("runs")
        );
        let inserted = conn
            .lwt_settled(
                &insert,
                vec![
                    text(t.as_str()),
                    text(&r.thread_id),
                    text(&r.id),
                    text(&doc),
                    version.clone(),
                    text(r.status.as_str()),
                    text(&write_id),
                ],
            )
            .await?;
        if inserted != Applied::Yes {
            let update = format!(
                "UPDATE {} SET doc = ?, version = ?, status = ?, write_id = ? \
                 WHERE tenant = ? AND thread_id = ? AND id = ? IF EXISTS",
                conn.table("runs")
            );
            conn.lwt_settled(
                &update,
                vec![
                    text(&doc),
                    version,
                    text(r.status.as_str()),
                    text(&write_id),
                    text(t.as_str()),
                    text(&r.thread_id),
                    text(&r.id),
                ],
            )
            .await?;
        }
        if !r.status.is_active() {
            return Ok(());
        }
        // An active run: indexed for the sweeper (which resolves it by lease and expiry),
        // and holding its thread's lock.
        conn.index_active(t, &r.thread_id, &r.id).await?;
        let lock = format!(
            "UPDATE {} SET active_run = ? WHERE tenant = ? AND thread_id = ? IF active_run = null",
            conn.table("runs")
        );
        let locked = conn
            .lwt_settled(
                &lock,
                vec![text(&r.id), text(t.as_str()), text(&r.thread_id)],
            )
            .await?;
        if locked == Applied::Yes {
            return Ok(());
        }
        let mut read = conn
            .prepare(&format!(
                "SELECT active_run FROM {} WHERE tenant = ? AND thread_id = ? LIMIT 1",
                conn.table("runs")
            ))
            .await?;
        read.set_consistency(Consistency::LocalSerial);
        let holder: Vec<(Option<String>,)> = super::typed_rows(
            conn.exec_prepared(&read, (t.as_str(), r.thread_id.as_str()))
                .await?,
        )?;
        match holder.into_iter().next().and_then(|(h,)| h) {
            Some(h) if h == r.id => Ok(()),
            other => Err(StoreError::Other(format!(
                "run {} is active but its thread {} is held by {:?}",
                r.id, r.thread_id, other
            ))),
        }
    }
}
