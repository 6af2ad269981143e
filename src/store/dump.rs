//! Bulk access for moving a whole store: every row of one kind, across tenants, in pages from
//! a resume position ([`DumpStore::scan`]), and rows written back verbatim ([`write_page`]).
//!
//! What a backend must give: a stable scan order (SQLite: key order; Cassandra: token order
//! through the driver's paging state) and an opaque [`Cursor`] after each page that the same
//! backend accepts again in a later process, so an interrupted copy resumes. Writes are
//! upserts keyed by tenant and id (the trait `put_*` methods, and [`DumpStore::restore_run`]
//! for runs, whose ordinary writes are compare-and-set), so writing a page twice changes
//! nothing.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};

use super::{Store, StoreResult, Tenant};
use crate::model::{
    Assistant, Attributes, Chunk, FileBatch, FileObject, Message, RunRecord, RunStep, Thread,
    VectorStore, VectorStoreFile,
};

/// The kinds of stored rows, in the order a copy writes them: content before the file it
/// belongs to (a listed file is whole), parents before children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Assistants,
    FileParts,
    Files,
    VectorStores,
    Batches,
    VsFiles,
    Chunks,
    Threads,
    Messages,
    Runs,
    Steps,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Assistants,
        Kind::FileParts,
        Kind::Files,
        Kind::VectorStores,
        Kind::Batches,
        Kind::VsFiles,
        Kind::Chunks,
        Kind::Threads,
        Kind::Messages,
        Kind::Runs,
        Kind::Steps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Assistants => "assistants",
            Kind::FileParts => "file_parts",
            Kind::Files => "files",
            Kind::VectorStores => "vector_stores",
            Kind::Batches => "file_batches",
            Kind::VsFiles => "vector_store_files",
            Kind::Chunks => "chunks",
            Kind::Threads => "threads",
            Kind::Messages => "messages",
            Kind::Runs => "runs",
            Kind::Steps => "run_steps",
        }
    }

    /// Rows per scanned page: small for the kinds whose rows are big (a file part is up to
    /// 1 MiB; a chunks page holds every chunk of a few files).
    pub fn page_size(self) -> usize {
        match self {
            Kind::FileParts => 8,
            Kind::Chunks => 4,
            _ => 500,
        }
    }
}

/// A chunk as stored: its file's key is in the [`Record`] around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRow {
    pub index: u32,
    pub text: String,
    pub attributes: Attributes,
    pub embedding: Vec<f32>,
}

/// One stored row with its tenant. Serialized (tagged by `kind`) it is one line of the
/// export format (docs/export-format.md); [`Record::from_line`] reads it back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Assistant {
        tenant: String,
        object: Assistant,
    },
    FilePart {
        tenant: String,
        file_id: String,
        index: u32,
        #[serde(with = "base64_bytes")]
        data: Bytes,
    },
    File {
        tenant: String,
        object: FileObject,
    },
    VectorStore {
        tenant: String,
        object: VectorStore,
    },
    FileBatch {
        tenant: String,
        object: FileBatch,
    },
    VectorStoreFile {
        tenant: String,
        object: VectorStoreFile,
    },
    /// One chunk; a file's chunks are consecutive records (written together, since a
    /// store replaces a file's chunks as a whole).
    Chunk {
        tenant: String,
        vector_store_id: String,
        file_id: String,
        #[serde(flatten)]
        chunk: ChunkRow,
    },
    Thread {
        tenant: String,
        object: Thread,
    },
    Message {
        tenant: String,
        object: Message,
    },
    Run {
        tenant: String,
        object: Box<RunRecord>,
    },
    RunStep {
        tenant: String,
        object: RunStep,
    },
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Assistant { .. } => Kind::Assistants,
            Record::FilePart { .. } => Kind::FileParts,
            Record::File { .. } => Kind::Files,
            Record::VectorStore { .. } => Kind::VectorStores,
            Record::FileBatch { .. } => Kind::Batches,
            Record::VectorStoreFile { .. } => Kind::VsFiles,
            Record::Chunk { .. } => Kind::Chunks,
            Record::Thread { .. } => Kind::Threads,
            Record::Message { .. } => Kind::Messages,
            Record::Run { .. } => Kind::Runs,
            Record::RunStep { .. } => Kind::Steps,
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            Record::Assistant { tenant, .. }
            | Record::FilePart { tenant, .. }
            | Record::File { tenant, .. }
            | Record::VectorStore { tenant, .. }
            | Record::FileBatch { tenant, .. }
            | Record::VectorStoreFile { tenant, .. }
            | Record::Chunk { tenant, .. }
            | Record::Thread { tenant, .. }
            | Record::Message { tenant, .. }
            | Record::Run { tenant, .. }
            | Record::RunStep { tenant, .. } => tenant,
        }
    }

    /// File content bytes the record carries (for progress).
    pub fn content_bytes(&self) -> u64 {
        match self {
            Record::FilePart { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}

/// The pieces of a line, read per kind. Serde's own tagged-enum reading buffers the object
/// first, which the raw JSON inside a message (`model::Content`) cannot be read from.
mod line {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Tag<'a> {
        #[serde(borrow)]
        pub kind: std::borrow::Cow<'a, str>,
    }

    #[derive(Deserialize)]
    pub struct Object<T> {
        pub tenant: String,
        pub object: T,
    }

    #[derive(Deserialize)]
    pub struct Part {
        pub tenant: String,
        pub file_id: String,
        pub index: u32,
        #[serde(with = "super::base64_bytes")]
        pub data: bytes::Bytes,
    }

    #[derive(Deserialize)]
    pub struct Chunk {
        pub tenant: String,
        pub vector_store_id: String,
        pub file_id: String,
        pub index: u32,
        pub text: String,
        pub attributes: crate::model::Attributes,
        pub embedding: Vec<f32>,
    }
}

impl Record {
    /// The `kind` of a JSON line, without reading the rest.
    pub fn kind_of(line: &[u8]) -> serde_json::Result<String> {
        Ok(serde_json::from_slice::<line::Tag<'_>>(line)?
            .kind
            .into_owned())
    }

    /// Reads one record line (as serialized).
    pub fn from_line(bytes: &[u8]) -> serde_json::Result<Record> {
        use serde::de::Error;
        use serde_json::from_slice;
        fn obj<T: serde::de::DeserializeOwned>(b: &[u8]) -> serde_json::Result<(String, T)> {
            let o: line::Object<T> = from_slice(b)?;
            Ok((o.tenant, o.object))
        }
        let kind = Record::kind_of(bytes)?;
        Ok(match kind.as_str() {
            "assistant" => {
                let (tenant, object) = obj(bytes)?;
                Record::Assistant { tenant, object }
            }
            "file_part" => {
                let p: line::Part = from_slice(bytes)?;
                Record::FilePart {
                    tenant: p.tenant,
                    file_id: p.file_id,
                    index: p.index,
                    data: p.data,
                }
            }
            "file" => {
                let (tenant, object) = obj(bytes)?;
                Record::File { tenant, object }
            }
            "vector_store" => {
                let (tenant, object) = obj(bytes)?;
                Record::VectorStore { tenant, object }
            }
            "file_batch" => {
                let (tenant, object) = obj(bytes)?;
                Record::FileBatch { tenant, object }
            }
            "vector_store_file" => {
                let (tenant, object) = obj(bytes)?;
                Record::VectorStoreFile { tenant, object }
            }
            "chunk" => {
                let c: line::Chunk = from_slice(bytes)?;
                Record::Chunk {
                    tenant: c.tenant,
                    vector_store_id: c.vector_store_id,
                    file_id: c.file_id,
                    chunk: ChunkRow {
                        index: c.index,
                        text: c.text,
                        attributes: c.attributes,
                        embedding: c.embedding,
                    },
                }
            }
            "thread" => {
                let (tenant, object) = obj(bytes)?;
                Record::Thread { tenant, object }
            }
            "message" => {
                let (tenant, object) = obj(bytes)?;
                Record::Message { tenant, object }
            }
            "run" => {
                let (tenant, object) = obj::<RunRecord>(bytes)?;
                Record::Run {
                    tenant,
                    object: Box::new(object),
                }
            }
            "run_step" => {
                let (tenant, object) = obj(bytes)?;
                Record::RunStep { tenant, object }
            }
            other => return Err(serde_json::Error::custom(format!("unknown kind {other:?}"))),
        })
    }
}

/// Where a scan stopped, in the backend's own terms (opaque to callers; kept in checkpoints).
pub type Cursor = String;

/// One scanned page: its records and where the next page starts (None: the kind is done).
#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<Record>,
    pub next: Option<Cursor>,
}

/// What a backend adds for moving whole stores.
#[async_trait]
pub trait DumpStore: Send + Sync {
    /// Up to about `limit` rows of `kind` after `from` (None: from the start), of every
    /// tenant or only `tenant`. A chunks page holds whole files' chunks.
    async fn scan(
        &self,
        kind: Kind,
        tenant: Option<&Tenant>,
        from: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Scan>;
    /// Rows of `kind` (of `tenant`, or all), for progress totals.
    async fn count(&self, kind: Kind, tenant: Option<&Tenant>) -> StoreResult<u64>;
    /// Writes a run record exactly as given (version, status, lease), taking its thread's
    /// lock if it is active: an insert-or-replace, unlike the compare-and-set of `RunStore`.
    async fn restore_run(&self, t: &Tenant, run: &RunRecord) -> StoreResult<()>;
}

/// Concurrent writes per page: enough to hide a network store's round trips and to fill
/// SQLite's group commits (16 → 64 took a SQLite-to-SQLite copy from ~1,800 to ~6,600 objects/s).
const WRITE_CONCURRENCY: usize = 64;

/// Writes one page of records into `store`, each verbatim and idempotently. A file's
/// consecutive chunk records go in together, as one `put_chunks`.
pub async fn write_page(store: &Store, records: Vec<Record>) -> StoreResult<()> {
    let mut units: Vec<Unit> = Vec::with_capacity(records.len());
    for r in records {
        match r {
            Record::Chunk {
                tenant,
                vector_store_id,
                file_id,
                chunk,
            } => {
                let chunk = Chunk {
                    vector_store_id: vector_store_id.clone(),
                    file_id: file_id.clone(),
                    index: chunk.index,
                    text: chunk.text,
                    embedding: chunk.embedding,
                    attributes: chunk.attributes,
                };
                if let Some(Unit::Chunks(t, vs, f, chunks)) = units.last_mut()
                    && *t == tenant
                    && *vs == vector_store_id
                    && *f == file_id
                {
                    chunks.push(chunk);
                } else {
                    units.push(Unit::Chunks(tenant, vector_store_id, file_id, vec![chunk]));
                }
            }
            other => units.push(Unit::One(Box::new(other))),
        }
    }
    let store = Arc::new(store.clone());
    let results: Vec<StoreResult<()>> = stream::iter(units)
        .map(|u| {
            let store = store.clone();
            async move { write_unit(&store, u).await }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

enum Unit {
    One(Box<Record>),
    Chunks(String, String, String, Vec<Chunk>),
}

async fn write_unit(store: &Store, unit: Unit) -> StoreResult<()> {
    let record = match unit {
        Unit::Chunks(t, vs, f, chunks) => {
            return store
                .chunks
                .put_chunks(&Tenant::new(t), &vs, &f, chunks)
                .await;
        }
        Unit::One(r) => *r,
    };
    let t = Tenant::new(record.tenant());
    match &record {
        Record::Assistant { object, .. } => store.assistants.put_assistant(&t, object).await,
        Record::FilePart {
            file_id,
            index,
            data,
            ..
        } => {
            store
                .files
                .put_file_part(&t, file_id, *index, data.clone())
                .await
        }
        Record::File { object, .. } => store.files.put_file(&t, object).await,
        Record::VectorStore { object, .. } => {
            store.vector_stores.put_vector_store(&t, object).await
        }
        Record::FileBatch { object, .. } => store.vector_stores.put_batch(&t, object).await,
        Record::VectorStoreFile { object, .. } => store.vector_stores.put_vs_file(&t, object).await,
        Record::Thread { object, .. } => store.threads.put_thread(&t, object).await,
        Record::Message { object, .. } => store.messages.put_message(&t, object).await,
        Record::Run { object, .. } => store.dump.restore_run(&t, object).await,
        Record::RunStep { object, .. } => store.runs.put_step(&t, object).await,
        // Gathered into units above.
        Record::Chunk { .. } => Ok(()),
    }
}

/// Base64 (standard alphabet, padded) for file content in JSON.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let part = Record::FilePart {
            tenant: "t".into(),
            file_id: "file-1".into(),
            index: 2,
            data: Bytes::from_static(b"\x00\x01hello"),
        };
        let line = serde_json::to_string(&part).unwrap();
        assert!(line.starts_with(r#"{"kind":"file_part""#), "{line}");
        assert_eq!(Record::from_line(line.as_bytes()).unwrap(), part);
        let chunk = Record::Chunk {
            tenant: "t".into(),
            vector_store_id: "vs_1".into(),
            file_id: "file-1".into(),
            chunk: ChunkRow {
                index: 0,
                text: "x".into(),
                attributes: Attributes::new(),
                embedding: vec![0.1, -2.5e-8, 3.0],
            },
        };
        let line = serde_json::to_string(&chunk).unwrap();
        assert_eq!(Record::from_line(line.as_bytes()).unwrap(), chunk);
        assert_eq!(chunk.kind(), Kind::Chunks);
    }

    #[test]
    fn kinds_are_written_content_first_and_parents_first() {
        let pos = |k| Kind::ALL.iter().position(|x| *x == k).unwrap();
        assert!(pos(Kind::FileParts) < pos(Kind::Files));
        assert!(pos(Kind::VsFiles) < pos(Kind::Chunks));
        assert!(pos(Kind::Threads) < pos(Kind::Messages));
        assert!(pos(Kind::Runs) < pos(Kind::Steps));
    }
}
