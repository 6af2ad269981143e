//! Storage: per-resource traits, one implementation per backend (`sqlite/`, `cassandra/`),
//! and the choice of backend, made once at start-up from `--store`. Services never see which
//! backend runs.
//!
//! Rules every backend follows (the contract suite in `tests/it/store_contract.rs` checks them):
//! - The service layer makes ids, timestamps and transitions; a store writes what it is given.
//! - Every row carries its tenant and every read and write is scoped by it: an object of
//!   another tenant is simply not found.
//! - Lists are key-range reads over the creation-ordered ids (see `ids`), `limit + 1` rows to
//!   learn `has_more`. A store's files are the exception: they are listed by attach time
//!   ([`VsFilePos`]), which their ids do not encode.
//! - Run writes are compare-and-set on `RunRecord::version`; at most one active run per thread.

pub mod content;
pub mod dump;
pub mod url;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{
    Assistant, AttributeFilter, Attributes, Chunk, FileBatch, FileCounts, FileObject, Message,
    RunRecord, RunStep, ScoredChunk, Thread, VectorStore, VectorStoreFile,
};

pub use url::{CassandraUrl, StoreUrl};

/// The owner of stored objects: an opaque key (a hash of the caller's API key by default).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(String);

impl Tenant {
    pub fn new(key: impl Into<String>) -> Tenant {
        Tenant(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A store failure, classified by what the caller can do about it (`crate::error` maps each
/// to an HTTP answer; the store itself knows nothing of HTTP).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now (a retry may work).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: corrupt data, a failed statement, a bug.
    #[error("{0}")]
    Other(String),
    /// The database refused the caller's own credentials (an Astra token).
    #[error("{0}")]
    Refused(String),
    /// The caller's own database does not exist.
    #[error("{0}")]
    NoDatabase(String),
    /// The caller's own database exists but cannot serve yet (being created or resumed).
    #[error("{message}")]
    NotReady {
        message: String,
        retry_after_secs: u32,
    },
}

impl StoreError {
    /// The failure's text, whatever its kind.
    pub fn message(&self) -> &str {
        match self {
            StoreError::Unavailable(m)
            | StoreError::Other(m)
            | StoreError::Refused(m)
            | StoreError::NoDatabase(m) => m,
            StoreError::NotReady { message, .. } => message,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// Cursor pagination as OpenAI defines it: `after`/`before` are ids relative to `order`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: usize,
    pub order: Order,
    pub after: Option<String>,
    pub before: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: 20,
            order: Order::Desc,
            after: None,
            before: None,
        }
    }
}

/// One page of a list, in the requested order.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More items exist beyond this page in the direction of travel.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Cuts `limit + 1` rows read in the direction of travel down to a page. `reversed` rows
    /// were read against the requested order (a `before` cursor) and are flipped back.
    pub fn from_rows(mut rows: Vec<T>, limit: usize, reversed: bool) -> Page<T> {
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        if reversed {
            rows.reverse();
        }
        Page {
            items: rows,
            has_more,
        }
    }
}

/// Outcome of creating a run under the one-active-run-per-thread rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRun {
    Created,
    /// The thread already has this active run.
    ThreadBusy(String),
}

/// Applies a store's activity record (see [`VectorStoreStore::touch_vector_store`]) to the
/// row it was read with: the later `last_active_at` wins, and an expiry anchored on it
/// (`expires_after`) is counted from that.
pub fn apply_activity(vs: &mut VectorStore, active: Option<i64>) {
    let Some(at) = active else { return };
    if vs.last_active_at.is_some_and(|d| d >= at) {
        return;
    }
    vs.last_active_at = Some(at);
    if let Some(e) = &vs.expires_after {
        vs.expires_at = Some(at.saturating_add(i64::from(e.days) * 86_400));
    }
}

/// Which vector-store files a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VsFileFilter {
    pub status: Option<String>,
    pub batch_id: Option<String>,
}

impl VsFileFilter {
    pub fn matches(&self, f: &VectorStoreFile) -> bool {
        self.status.as_ref().is_none_or(|s| *s == f.status)
            && self
                .batch_id
                .as_ref()
                .is_none_or(|b| f.batch_id.as_ref() == Some(b))
    }
}

/// Where a file sits in its vector store's list. OpenAI lists a store's (and a batch's) files
/// by attach time, `created_at`, not by file id: a file uploaded first may be attached last.
/// Seconds tie often (a batch attaches its files in one second), so the id breaks ties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VsFilePos {
    pub created_at: i64,
    pub file_id: String,
}

impl VsFilePos {
    pub fn of(f: &VectorStoreFile) -> VsFilePos {
        VsFilePos {
            created_at: f.created_at,
            file_id: f.id.clone(),
        }
    }
}

/// [`ListQuery`] for a store's files, with its cursors resolved to positions: a file id alone
/// does not say when the file was attached, so the service looks the cursors up first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsFileQuery {
    pub limit: usize,
    pub order: Order,
    pub after: Option<VsFilePos>,
    pub before: Option<VsFilePos>,
}

impl VsFileQuery {
    /// The first page in `order`.
    pub fn first(limit: usize, order: Order) -> VsFileQuery {
        VsFileQuery {
            limit,
            order,
            after: None,
            before: None,
        }
    }

    /// Reads against the requested order: a `before` cursor alone pages backwards from it
    /// (the page is flipped back by [`Page::from_rows`]).
    pub fn reversed(&self) -> bool {
        self.before.is_some() && self.after.is_none()
    }

    /// Whether rows are read in ascending position order.
    pub fn ascending(&self) -> bool {
        (self.order == Order::Asc) != self.reversed()
    }

    /// The exclusive position bounds `(lower, upper)` the cursors set.
    pub fn bounds(&self) -> (Option<&VsFilePos>, Option<&VsFilePos>) {
        match self.order {
            Order::Asc => (self.after.as_ref(), self.before.as_ref()),
            Order::Desc => (self.before.as_ref(), self.after.as_ref()),
        }
    }

    /// One page cut from every file of a store (already filtered), for backends that read
    /// the store's files whole rather than by a position range.
    pub fn page_of(&self, mut files: Vec<VectorStoreFile>) -> Page<VectorStoreFile> {
        let (lower, upper) = self.bounds();
        files.retain(|f| {
            let pos = VsFilePos::of(f);
            lower.is_none_or(|l| pos > *l) && upper.is_none_or(|u| pos < *u)
        });
        files.sort_by(|a, b| VsFilePos::of(a).cmp(&VsFilePos::of(b)));
        if !self.ascending() {
            files.reverse();
        }
        files.truncate(self.limit.saturating_add(1));
        Page::from_rows(files, self.limit, self.reversed())
    }
}

/// The compare-and-set rule of [`RunStore::update_run`] that every backend checks first: the
/// written record's version follows the one it replaces.
pub(crate) fn check_successor(run: &RunRecord, expected_version: u64) -> StoreResult<()> {
    if run.version == expected_version.wrapping_add(1) {
        return Ok(());
    }
    Err(StoreError::Other(format!(
        "run {} written with version {} over version {expected_version} (must be +1)",
        run.run.id, run.version
    )))
}

#[async_trait]
pub trait StoreHealth: Send + Sync {
    /// Cheap round trip to the database, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
}

#[async_trait]
pub trait AssistantStore: Send + Sync {
    /// Inserts or replaces.
    async fn put_assistant(&self, t: &Tenant, a: &Assistant) -> StoreResult<()>;
    async fn get_assistant(&self, t: &Tenant, id: &str) -> StoreResult<Option<Assistant>>;
    async fn list_assistants(&self, t: &Tenant, q: &ListQuery) -> StoreResult<Page<Assistant>>;
    async fn delete_assistant(&self, t: &Tenant, id: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait ThreadStore: Send + Sync {
    async fn put_thread(&self, t: &Tenant, thread: &Thread) -> StoreResult<()>;
    async fn get_thread(&self, t: &Tenant, id: &str) -> StoreResult<Option<Thread>>;
    /// Deletes the thread with its messages, runs and run steps.
    async fn delete_thread(&self, t: &Tenant, id: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Inserts or replaces (the thread id is inside the message).
    async fn put_message(&self, t: &Tenant, m: &Message) -> StoreResult<()>;
    /// [`put_message`](Self::put_message) of a run's in-flight progress (a message being
    /// written). A backend may acknowledge it before it is on disk, provided its next ordinary
    /// write makes it durable as well; a power cut may then lose this write, never reorder it.
    async fn put_message_progress(&self, t: &Tenant, m: &Message) -> StoreResult<()> {
        self.put_message(t, m).await
    }
    async fn get_message(
        &self,
        t: &Tenant,
        thread_id: &str,
        id: &str,
    ) -> StoreResult<Option<Message>>;
    /// Messages of a thread; with `run_id`, only those that run created.
    async fn list_messages(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: Option<&str>,
        q: &ListQuery,
    ) -> StoreResult<Page<Message>>;
    async fn delete_message(&self, t: &Tenant, thread_id: &str, id: &str) -> StoreResult<bool>;
}

#[async_trait]
pub trait RunStore: Send + Sync {
    /// Inserts a new run (version 1) unless its thread has an active run. A lock left by a
    /// run that has since ended does not count.
    async fn create_run(&self, t: &Tenant, run: &RunRecord) -> StoreResult<CreateRun>;
    async fn get_run(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
    ) -> StoreResult<Option<RunRecord>>;
    async fn list_runs(
        &self,
        t: &Tenant,
        thread_id: &str,
        q: &ListQuery,
    ) -> StoreResult<Page<RunRecord>>;
    /// Compare-and-set: writes `run` (whose `version` must be `expected_version + 1`) only if
    /// the stored version is still `expected_version`. Returns whether it was written. A run
    /// that becomes terminal releases its thread.
    async fn update_run(
        &self,
        t: &Tenant,
        run: &RunRecord,
        expected_version: u64,
    ) -> StoreResult<bool>;
    /// [`update_run`](Self::update_run) of in-flight progress (claim, lease renewal), with the
    /// durability of [`MessageStore::put_message_progress`].
    async fn update_run_progress(
        &self,
        t: &Tenant,
        run: &RunRecord,
        expected_version: u64,
    ) -> StoreResult<bool> {
        self.update_run(t, run, expected_version).await
    }
    /// The thread's active run, if any.
    async fn active_run(&self, t: &Tenant, thread_id: &str) -> StoreResult<Option<String>>;
    /// Every active run of every tenant (for expiry and crash recovery).
    async fn list_active_runs(&self) -> StoreResult<Vec<(Tenant, RunRecord)>>;
    /// Inserts or replaces a run step.
    async fn put_step(&self, t: &Tenant, step: &RunStep) -> StoreResult<()>;
    /// [`put_step`](Self::put_step) of in-flight progress, with the durability of
    /// [`MessageStore::put_message_progress`].
    async fn put_step_progress(&self, t: &Tenant, step: &RunStep) -> StoreResult<()> {
        self.put_step(t, step).await
    }
    async fn get_step(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
        step_id: &str,
    ) -> StoreResult<Option<RunStep>>;
    async fn list_steps(
        &self,
        t: &Tenant,
        thread_id: &str,
        run_id: &str,
        q: &ListQuery,
    ) -> StoreResult<Page<RunStep>>;
}

#[async_trait]
pub trait FileStore: Send + Sync {
    /// Inserts or replaces the metadata; written after the content, so a listed file is whole.
    async fn put_file(&self, t: &Tenant, f: &FileObject) -> StoreResult<()>;
    async fn get_file(&self, t: &Tenant, id: &str) -> StoreResult<Option<FileObject>>;
    async fn list_files(
        &self,
        t: &Tenant,
        purpose: Option<&str>,
        q: &ListQuery,
    ) -> StoreResult<Page<FileObject>>;
    /// Deletes the file, its content, its chunks and its vector-store memberships.
    async fn delete_file(&self, t: &Tenant, id: &str) -> StoreResult<bool>;
    /// Stores piece `index` (≤ 1 MiB) of a file's content.
    async fn put_file_part(
        &self,
        t: &Tenant,
        file_id: &str,
        index: u32,
        data: Bytes,
    ) -> StoreResult<()>;
    async fn get_file_part(
        &self,
        t: &Tenant,
        file_id: &str,
        index: u32,
    ) -> StoreResult<Option<Bytes>>;
}

#[async_trait]
pub trait VectorStoreStore: Send + Sync {
    /// Inserts or replaces the row (its activity record, see `touch_vector_store`, stays).
    async fn put_vector_store(&self, t: &Tenant, vs: &VectorStore) -> StoreResult<()>;
    /// The store with its activity applied ([`apply_activity`]); lists apply it too.
    async fn get_vector_store(&self, t: &Tenant, id: &str) -> StoreResult<Option<VectorStore>>;
    /// Records activity at `at` (Unix seconds) without rewriting the row: a store is touched
    /// by every run and attach while other writers (a rename, the first file's ingestion
    /// setting the embedding dimension) rewrite the row, so neither may undo the other. The
    /// later time wins; a touch of a store deleted meanwhile leaves nothing readable.
    async fn touch_vector_store(&self, t: &Tenant, id: &str, at: i64) -> StoreResult<()>;
    async fn list_vector_stores(&self, t: &Tenant, q: &ListQuery)
    -> StoreResult<Page<VectorStore>>;
    /// Deletes the store with its file memberships, batches and chunks (files survive).
    async fn delete_vector_store(&self, t: &Tenant, id: &str) -> StoreResult<bool>;
    /// Inserts or replaces a file's membership in a store.
    async fn put_vs_file(&self, t: &Tenant, f: &VectorStoreFile) -> StoreResult<()>;
    async fn get_vs_file(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
    ) -> StoreResult<Option<VectorStoreFile>>;
    /// Memberships ordered by attach time, then file id ([`VsFilePos`]).
    async fn list_vs_files(
        &self,
        t: &Tenant,
        vs_id: &str,
        filter: &VsFileFilter,
        q: &VsFileQuery,
    ) -> StoreResult<Page<VectorStoreFile>>;
    /// Removes the membership and its chunks (the file survives).
    async fn delete_vs_file(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<bool>;
    /// Status counts and summed `usage_bytes` of a store's files (of one batch, if given).
    async fn count_vs_files(
        &self,
        t: &Tenant,
        vs_id: &str,
        batch_id: Option<&str>,
    ) -> StoreResult<(FileCounts, u64)>;
    async fn put_batch(&self, t: &Tenant, b: &FileBatch) -> StoreResult<()>;
    async fn get_batch(&self, t: &Tenant, vs_id: &str, id: &str) -> StoreResult<Option<FileBatch>>;
}

#[async_trait]
pub trait ChunkStore: Send + Sync {
    /// Replaces the chunks of one file in one store (all with the same dimension).
    async fn put_chunks(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
        chunks: Vec<Chunk>,
    ) -> StoreResult<()>;
    async fn delete_chunks(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<()>;
    /// A file's chunks in order (embeddings may be left empty).
    async fn file_chunks(&self, t: &Tenant, vs_id: &str, file_id: &str) -> StoreResult<Vec<Chunk>>;
    /// Copies new file attributes onto the file's chunks.
    async fn set_chunk_attributes(
        &self,
        t: &Tenant,
        vs_id: &str,
        file_id: &str,
        attributes: &Attributes,
    ) -> StoreResult<()>;
    /// The `k` chunks most similar (cosine) to `query` across the given stores, best first,
    /// restricted to chunks whose attributes pass `filter`.
    async fn search(
        &self,
        t: &Tenant,
        vs_ids: &[String],
        query: &[f32],
        k: usize,
        filter: Option<&AttributeFilter>,
    ) -> StoreResult<Vec<ScoredChunk>>;
}

/// The opened store: one handle per resource trait, all backed by the same database.
#[derive(Clone)]
pub struct Store {
    pub health: Arc<dyn StoreHealth>,
    pub assistants: Arc<dyn AssistantStore>,
    pub threads: Arc<dyn ThreadStore>,
    pub messages: Arc<dyn MessageStore>,
    pub runs: Arc<dyn RunStore>,
    pub files: Arc<dyn FileStore>,
    pub vector_stores: Arc<dyn VectorStoreStore>,
    pub chunks: Arc<dyn ChunkStore>,
    /// Bulk reads and verbatim writes, for moving a whole store (`store::dump`).
    pub dump: Arc<dyn dump::DumpStore>,
}

impl Store {
    /// A store whose every handle is the same backend object.
    pub fn from_backend<B>(backend: Arc<B>) -> Store
    where
        B: StoreHealth
            + AssistantStore
            + ThreadStore
            + MessageStore
            + RunStore
            + FileStore
            + VectorStoreStore
            + ChunkStore
            + dump::DumpStore
            + 'static,
    {
        Store {
            health: backend.clone(),
            assistants: backend.clone(),
            threads: backend.clone(),
            messages: backend.clone(),
            runs: backend.clone(),
            files: backend.clone(),
            vector_stores: backend.clone(),
            chunks: backend.clone(),
            dump: backend,
        }
    }

    /// Opens the backend named by the URL, applying schema migrations. Background work a
    /// backend needs (the Astra connector's forwarders) runs detached from any server: use
    /// [`Store::open_with`] to tie it to one.
    pub async fn open(url: &StoreUrl) -> StoreResult<Store> {
        Store::open_with(
            url,
            &StoreEnv::new(crate::store::astra::AstraConfig::default()),
        )
        .await
    }

    /// Opens the backend named by the URL with the process's store environment.
    pub async fn open_with(url: &StoreUrl, env: &StoreEnv) -> StoreResult<Store> {
        match url {
            StoreUrl::Sqlite { path } => sqlite::open(path).await,
            StoreUrl::Cassandra(c) => cassandra::open(c).await,
            StoreUrl::Astra(a) => astra::open(a, env).await,
        }
    }
}

/// What stores get from the process: a tracker for their background tasks and the token
/// that stops them, plus the Astra settings. Store work is closed *after* the server's own
/// tasks (runs, ingestion) have finished, since those write to the stores until the end.
#[derive(Clone)]
pub struct StoreEnv {
    pub tasks: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub astra: crate::store::astra::AstraConfig,
}

impl StoreEnv {
    pub fn new(astra: crate::store::astra::AstraConfig) -> StoreEnv {
        StoreEnv {
            tasks: tokio_util::task::TaskTracker::new(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            astra,
        }
    }

    /// Stops the stores' background work and waits for it.
    pub async fn close(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

pub mod astra;
pub mod cassandra;
pub mod sqlite;
