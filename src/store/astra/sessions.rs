//! The per-request session cache: one open store per (token, database), shared by every
//! request that names them.
//!
//! - **Key**: a domain-separated SHA-256 of the token plus the database id. The token itself
//!   lives only in the connect future and the driver's login; the map never holds it.
//! - **Single flight**: the first request for a key inserts a shared connect future; requests
//!   arriving meanwhile await the same future. A failure (bad token, missing database,
//!   Astra down) is handed to every waiter and the entry removed: failures are not cached.
//! - **Bounded**: at most `max_sessions` entries. Making room evicts the least recently used
//!   session nobody is using (a request or a run holding its store), else the least recently
//!   used one; connects in flight are never evicted. An evicted store stays usable by whoever
//!   still holds it and closes when they let go.
//! - **Idle close**: a tracked sweeper drops sessions unused for `idle_timeout` (and
//!   connects abandoned by every waiter).
//! - **Default database**: without `astra-db-id`, the token's database named
//!   `database_name` is found through the DevOps API, or created; while it is not ACTIVE the
//!   caller gets 503 with `Retry-After`. Found ids are remembered per token hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio_util::sync::CancellationToken;

use super::connector::{self, ConnectError, ForwardEnv};
use super::devops::{Devops, DevopsError, NewDatabase};
use super::{AstraTarget, Token, TokenHash};
use crate::store::astra::AstraConfig;
use crate::store::{Store, StoreEnv, StoreError};

/// Default-database ids remembered (per token hash); beyond this the oldest is forgotten.
const MAX_DEFAULT_DBS: usize = 4096;
/// After asking for a database, don't ask again for this long while the list doesn't show
/// it yet (creation requests are not idempotent).
const CREATION_GRACE: Duration = Duration::from_secs(600);

type ConnectResult = Result<Store, ConnectError>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    token: TokenHash,
    database: String,
}

enum Slot {
    Connecting {
        generation: u64,
        started: Instant,
        future: Shared<BoxFuture<'static, ConnectResult>>,
    },
    Ready {
        store: Store,
        /// How much one `Store` value adds to the backend's reference count; more than this
        /// means someone besides the cache holds it (see [`in_use`]).
        own_refs: usize,
    },
}

struct Entry {
    slot: Slot,
    last_used: Instant,
}

/// What is known about a token's default database.
enum DefaultDb {
    Active(String),
    /// Asked for at `since`; the id when the API said it.
    Requested {
        since: Instant,
    },
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    default_dbs: HashMap<TokenHash, (DefaultDb, Instant)>,
    next_generation: u64,
}

/// The cache (one per process, in `AppState`).
pub struct AstraSessions {
    config: AstraConfig,
    devops: Arc<Devops>,
    forward: ForwardEnv,
    inner: Mutex<Inner>,
    /// Serializes finding or creating default databases in this process, so concurrent
    /// first requests of one token ask for one database, not several.
    resolving: tokio::sync::Mutex<()>,
}

impl AstraSessions {
    pub fn new(config: &AstraConfig, env: &StoreEnv) -> Result<AstraSessions, String> {
        Ok(AstraSessions {
            devops: Arc::new(Devops::new(&config.devops_url)?),
            config: config.clone(),
            forward: ForwardEnv {
                tasks: env.tasks.clone(),
                shutdown: env.shutdown.clone(),
            },
            inner: Mutex::new(Inner::default()),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    /// The store for a caller's database, opening it on first use.
    pub async fn store_for(&self, target: &AstraTarget) -> Result<Store, StoreError> {
        let database = match &target.database_id {
            Some(id) => id.clone(),
            None => self.default_database(&target.token).await?,
        };
        let key = Key {
            token: target.token.hash(),
            database,
        };
        let (generation, future, evicted) = {
            let mut inner = lock(&self.inner);
            let now = Instant::now();
            match inner.entries.get_mut(&key) {
                Some(entry) => {
                    entry.last_used = now;
                    match &entry.slot {
                        Slot::Ready { store, .. } => return Ok(store.clone()),
                        Slot::Connecting {
                            generation, future, ..
                        } => (*generation, future.clone(), Vec::new()),
                    }
                }
                None => {
                    inner.next_generation += 1;
                    let generation = inner.next_generation;
                    let future = self.connect_future(&target.token, &key.database);
                    inner.entries.insert(
                        key.clone(),
                        Entry {
                            slot: Slot::Connecting {
                                generation,
                                started: now,
                                future: future.clone(),
                            },
                            last_used: now,
                        },
                    );
                    let evicted = make_room(&mut inner, self.config.max_sessions, &key);
                    (generation, future, evicted)
                }
            }
        };
        // Closing sessions (dropping them) happens outside the lock.
        drop(evicted);
        let outcome = future.await;
        let mut inner = lock(&self.inner);
        let same_attempt = matches!(
            inner.entries.get(&key),
            Some(Entry { slot: Slot::Connecting { generation: g, .. }, .. }) if *g == generation
        );
        match outcome {
            Ok(store) => {
                if same_attempt && let Some(entry) = inner.entries.get_mut(&key) {
                    entry.slot = Slot::Ready {
                        own_refs: own_refs(&store),
                        store: store.clone(),
                    };
                }
                Ok(store)
            }
            Err(e) => {
                if same_attempt {
                    inner.entries.remove(&key);
                }
                drop(inner);
                Err(to_error(e, &key.database, self.config.retry_after))
            }
        }
    }

    /// Stores of the open sessions (the run sweeper visits them).
    pub fn open_stores(&self) -> Vec<Store> {
        lock(&self.inner)
            .entries
            .values()
            .filter_map(|e| match &e.slot {
                Slot::Ready { store, .. } => Some(store.clone()),
                Slot::Connecting { .. } => None,
            })
            .collect()
    }

    /// How many sessions are open or opening.
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops sessions unused for `idle_timeout` (unless a request or run still holds them)
    /// and connects every waiter gave up on. Returns how many went.
    pub fn close_idle(&self) -> usize {
        let idle = self.config.idle_timeout;
        let abandoned = self.config.connect_timeout * 2;
        let removed: Vec<Entry> = {
            let mut inner = lock(&self.inner);
            let stale: Vec<Key> = inner
                .entries
                .iter()
                .filter(|(_, e)| match &e.slot {
                    Slot::Ready { store, own_refs } => {
                        e.last_used.elapsed() >= idle && !in_use(store, *own_refs)
                    }
                    Slot::Connecting { started, .. } => started.elapsed() >= abandoned,
                })
                .map(|(k, _)| k.clone())
                .collect();
            stale
                .iter()
                .filter_map(|k| inner.entries.remove(k))
                .collect()
        };
        let n = removed.len();
        if n > 0 {
            tracing::info!(closed = n, "closed idle Astra sessions");
        }
        n
    }

    /// Runs [`close_idle`](Self::close_idle) periodically until `shutdown`.
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self.config.idle_timeout / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(30));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            self.close_idle();
        }
    }

    fn connect_future(
        &self,
        token: &Token,
        database: &str,
    ) -> Shared<BoxFuture<'static, ConnectResult>> {
        let devops = self.devops.clone();
        let token = token.clone();
        let database = database.to_owned();
        let keyspace = connector::KeyspaceChoice {
            name: self.config.keyspace.clone(),
            from_bundle: self.config.keyspace_from_bundle,
        };
        let forward = self.forward.clone();
        let budget = self.config.connect_timeout;
        async move {
            let connected =
                connector::connect(&devops, &token, &database, &keyspace, &forward, budget).await?;
            crate::store::cassandra::open_connected(connected)
                .await
                .map_err(|e| {
                    let text = e.to_string();
                    if text.contains("Unauthorized") {
                        ConnectError::Unauthorized(format!(
                            "the token may not create the tables in Astra database {database}"
                        ))
                    } else {
                        match e {
                            StoreError::Unavailable(m) => ConnectError::Unavailable(m),
                            StoreError::Refused(m) => ConnectError::Unauthorized(m),
                            StoreError::NoDatabase(m) => ConnectError::NotFound(m),
                            StoreError::NotReady { message, .. } => ConnectError::NotReady(message),
                            StoreError::Other(m) => ConnectError::Other(m),
                        }
                    }
                })
        }
        .boxed()
        .shared()
    }

    /// The id of the token's default database, creating it when there is none. Anything
    /// short of ACTIVE answers 503 with `Retry-After`.
    async fn default_database(&self, token: &Token) -> Result<String, StoreError> {
        let hash = token.hash();
        if let Some(id) = self.known_default(&hash) {
            return Ok(id);
        }
        let _one_at_a_time = self.resolving.lock().await;
        if let Some(id) = self.known_default(&hash) {
            return Ok(id);
        }
        let name = self.config.database_name.as_str();
        let not_ready = |message: String| StoreError::NotReady {
            message,
            retry_after_secs: self.config.retry_after,
        };
        let dbs = self
            .devops
            .list_databases(token)
            .await
            .map_err(|e| to_error(e.into(), name, self.config.retry_after))?;
        let named: Vec<_> = dbs.iter().filter(|d| d.name == name).collect();
        if let Some(db) = named.iter().find(|d| d.status == "ACTIVE") {
            self.remember(hash, DefaultDb::Active(db.id.clone()));
            return Ok(db.id.clone());
        }
        if let Some(db) = named
            .iter()
            .find(|d| !matches!(d.status.as_str(), "TERMINATING" | "TERMINATED"))
        {
            if db.status == "HIBERNATED" {
                // Any DevOps call on a hibernated database wakes it; this one is harmless.
                if let Err(DevopsError::Unauthorized(m)) = self
                    .devops
                    .create_keyspace(token, &db.id, &self.config.keyspace)
                    .await
                {
                    return Err(to_error(
                        ConnectError::Unauthorized(m),
                        &db.id,
                        self.config.retry_after,
                    ));
                }
            }
            return Err(not_ready(format!(
                "The Astra database '{name}' ({}) is {}; retry shortly.",
                db.id, db.status
            )));
        }
        let recently_requested = matches!(
            lock(&self.inner).default_dbs.get(&hash),
            Some((DefaultDb::Requested { since }, _)) if since.elapsed() < CREATION_GRACE
        );
        if !recently_requested {
            let id = self
                .devops
                .create_database(
                    token,
                    &NewDatabase {
                        name,
                        keyspace: &self.config.keyspace,
                        cloud_provider: &self.config.cloud_provider,
                        region: &self.config.region,
                    },
                )
                .await
                .map_err(|e| to_error(e.into(), name, self.config.retry_after))?;
            tracing::info!(
                database = id.as_deref().unwrap_or("(id not told)"),
                name,
                "asked Astra to create the caller's database"
            );
            self.remember(
                hash,
                DefaultDb::Requested {
                    since: Instant::now(),
                },
            );
        }
        Err(not_ready(format!(
            "The Astra database '{name}' is being created; retry shortly."
        )))
    }

    fn known_default(&self, hash: &TokenHash) -> Option<String> {
        match lock(&self.inner).default_dbs.get(hash) {
            Some((DefaultDb::Active(id), _)) => Some(id.clone()),
            _ => None,
        }
    }

    fn remember(&self, hash: TokenHash, what: DefaultDb) {
        let mut inner = lock(&self.inner);
        if inner.default_dbs.len() >= MAX_DEFAULT_DBS && !inner.default_dbs.contains_key(&hash) {
            let oldest = inner
                .default_dbs
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                inner.default_dbs.remove(&k);
            }
        }
        inner.default_dbs.insert(hash, (what, Instant::now()));
    }
}

/// Evicts entries until at most `cap` remain, never `keep` and never a connect in flight.
/// Returns the evicted entries, for the caller to drop outside the lock.
fn make_room(inner: &mut Inner, cap: usize, keep: &Key) -> Vec<Entry> {
    let mut out = Vec::new();
    while inner.entries.len() > cap {
        let candidates = inner.entries.iter().filter_map(|(k, e)| match &e.slot {
            Slot::Ready { store, own_refs } if k != keep => {
                Some((k, e.last_used, in_use(store, *own_refs)))
            }
            _ => None,
        });
        // Idle ones first (false < true), then the least recently used.
        let victim = candidates
            .min_by_key(|(_, used, busy)| (*busy, *used))
            .map(|(k, _, _)| k.clone());
        match victim.and_then(|k| inner.entries.remove(&k)) {
            Some(e) => out.push(e),
            None => break,
        }
    }
    if !out.is_empty() {
        tracing::debug!(evicted = out.len(), "Astra session cache full; evicted");
    }
    out
}

/// How much one `Store` value adds to its backend's reference count.
fn own_refs(store: &Store) -> usize {
    let before = Arc::strong_count(&store.health);
    let copy = store.clone();
    let after = Arc::strong_count(&copy.health);
    after.saturating_sub(before)
}

/// Whether anyone but the cache holds the store (a request in flight, a run executing).
fn in_use(store: &Store, own_refs: usize) -> bool {
    Arc::strong_count(&store.health) > own_refs
}

fn to_error(e: ConnectError, database: &str, retry_after: u32) -> StoreError {
    match e {
        ConnectError::Unauthorized(m) => StoreError::Refused(format!(
            "Astra refused the token given in astra-api-token (wrong, revoked, or without access to database '{database}'): {m}"
        )),
        ConnectError::NotFound(_) => StoreError::NoDatabase(format!(
            "No Astra database '{database}' was found for the token given in astra-api-token."
        )),
        ConnectError::NotReady(m) => StoreError::NotReady {
            message: format!("The Astra database is not ready: {m}; retry shortly."),
            retry_after_secs: retry_after,
        },
        ConnectError::Unavailable(message) => StoreError::Unavailable(message),
        ConnectError::Other(message) => StoreError::Other(message),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
