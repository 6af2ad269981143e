//! The schema and its versioned migrations, applied at open.
//!
//! The version is `PRAGMA user_version` (stored in the file header, so it needs no table of
//! its own). Migrations are append-only: a released entry of [`MIGRATIONS`] is never edited,
//! a change is a new entry. They run in one `BEGIN IMMEDIATE` transaction, so two processes
//! opening a fresh file at once cannot both migrate, and a failed migration leaves the file
//! as it was.
//!
//! Layout rules: every table leads with `tenant` and every index starts with it, so every
//! query is a range of one tenant's rows. Objects are JSON text (`body`) plus the columns
//! queries filter or sort on. No foreign keys: cascades are explicit deletes inside one
//! transaction (see `threads.rs`, `files.rs`, `vector_stores.rs`).

use rusqlite::Connection;

use super::DbError;

/// Migration `n` (1-based) takes the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE assistants (
        tenant TEXT NOT NULL,
        id     TEXT NOT NULL,
        body   TEXT NOT NULL
    );
    CREATE UNIQUE INDEX assistants_key ON assistants (tenant, id);

    CREATE TABLE threads (
        tenant TEXT NOT NULL,
        id     TEXT NOT NULL,
        body   TEXT NOT NULL
    );
    CREATE UNIQUE INDEX threads_key ON threads (tenant, id);

    CREATE TABLE messages (
        tenant    TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        id        TEXT NOT NULL,
        run_id    TEXT,
        body      TEXT NOT NULL
    );
    CREATE UNIQUE INDEX messages_key ON messages (tenant, thread_id, id);
    -- Lists of the messages one run created.
    CREATE INDEX messages_run ON messages (tenant, thread_id, run_id, id) WHERE run_id IS NOT NULL;

    -- `active` is 1 while the status is non-terminal. The thread lock *is* this flag: there is
    -- no separate lock row that could outlive its run, and the partial unique index makes
    -- 'one active run per thread' a constraint of the file, whichever process writes.
    CREATE TABLE runs (
        tenant    TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        id        TEXT NOT NULL,
        status    TEXT NOT NULL,
        active    INTEGER NOT NULL,
        version   INTEGER NOT NULL,
        body      TEXT NOT NULL
    );
    CREATE UNIQUE INDEX runs_key ON runs (tenant, thread_id, id);
    CREATE UNIQUE INDEX runs_active ON runs (tenant, thread_id) WHERE active = 1;

    CREATE TABLE run_steps (
        tenant    TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        run_id    TEXT NOT NULL,
        id        TEXT NOT NULL,
        body      TEXT NOT NULL
    );
    CREATE UNIQUE INDEX run_steps_key ON run_steps (tenant, thread_id, run_id, id);

    CREATE TABLE files (
        tenant  TEXT NOT NULL,
        id      TEXT NOT NULL,
        purpose TEXT NOT NULL,
        body    TEXT NOT NULL
    );
    CREATE UNIQUE INDEX files_key ON files (tenant, id);
    CREATE INDEX files_purpose ON files (tenant, purpose, id);

    -- File content in pieces of at most 1 MiB, so neither an upload nor a download needs the
    -- whole file in memory.
    CREATE TABLE file_parts (
        tenant  TEXT NOT NULL,
        file_id TEXT NOT NULL,
        idx     INTEGER NOT NULL,
        data    BLOB NOT NULL,
        PRIMARY KEY (tenant, file_id, idx)
    );

    CREATE TABLE vector_stores (
        tenant TEXT NOT NULL,
        id     TEXT NOT NULL,
        body   TEXT NOT NULL
    );
    CREATE UNIQUE INDEX vector_stores_key ON vector_stores (tenant, id);

    -- A file's membership in a store (`id` is the file id). Counts and usage are derived
    -- from these rows when asked for, never kept as counters that could drift.
    CREATE TABLE vs_files (
        tenant      TEXT NOT NULL,
        vs_id       TEXT NOT NULL,
        id          TEXT NOT NULL,
        status      TEXT NOT NULL,
        batch_id    TEXT,
        usage_bytes INTEGER NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX vs_files_key ON vs_files (tenant, vs_id, id);
    CREATE INDEX vs_files_status ON vs_files (tenant, vs_id, status, id);
    CREATE INDEX vs_files_batch ON vs_files (tenant, vs_id, batch_id, id) WHERE batch_id IS NOT NULL;
    -- Deleting a file finds its memberships in every store.
    CREATE INDEX vs_files_file ON vs_files (tenant, id);

    CREATE TABLE vs_batches (
        tenant TEXT NOT NULL,
        vs_id  TEXT NOT NULL,
        id     TEXT NOT NULL,
        body   TEXT NOT NULL
    );
    CREATE UNIQUE INDEX vs_batches_key ON vs_batches (tenant, vs_id, id);

    -- The embedding is little-endian f32 and the last column, so reading a chunk's text does
    -- not walk the embedding's overflow pages.
    CREATE TABLE chunks (
        tenant     TEXT NOT NULL,
        vs_id      TEXT NOT NULL,
        file_id    TEXT NOT NULL,
        idx        INTEGER NOT NULL,
        text       TEXT NOT NULL,
        attributes TEXT NOT NULL,
        embedding  BLOB NOT NULL
    );
    CREATE UNIQUE INDEX chunks_key ON chunks (tenant, vs_id, file_id, idx);
    -- Deleting a file finds the stores holding its chunks (covering, so no table reads).
    CREATE INDEX chunks_file ON chunks (tenant, file_id, vs_id);

    -- Bumped by every chunk write of a store, in the same transaction. An in-memory search
    -- index remembers the epoch it reflects; a newer epoch in the file means another process
    -- changed the chunks, and the index is reloaded.
    CREATE TABLE vs_epochs (
        tenant TEXT NOT NULL,
        vs_id  TEXT NOT NULL,
        epoch  INTEGER NOT NULL,
        PRIMARY KEY (tenant, vs_id)
    );
    ",
    // 2: messages clustered by their key. A page of a thread's messages is then one seek and
    // a run of adjacent rows, instead of an index walk plus a table lookup per row (measured:
    // the lookups were a fifth of a list-20 page's CPU). No code uses a message's rowid.
    "
    CREATE TABLE messages_by_key (
        tenant    TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        id        TEXT NOT NULL,
        run_id    TEXT,
        body      TEXT NOT NULL,
        PRIMARY KEY (tenant, thread_id, id)
    ) WITHOUT ROWID;
    INSERT INTO messages_by_key (tenant, thread_id, id, run_id, body)
        SELECT tenant, thread_id, id, run_id, body FROM messages;
    DROP TABLE messages;
    ALTER TABLE messages_by_key RENAME TO messages;
    CREATE INDEX messages_run ON messages (tenant, thread_id, run_id, id) WHERE run_id IS NOT NULL;
    ",
    // 3: a store's files are listed by attach time, then id (as OpenAI lists them), so the
    // membership's `created_at` becomes a column, filled from the bodies, and the list
    // indexes (all files, by status, by batch) order by it.
    "
    ALTER TABLE vs_files ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    UPDATE vs_files SET created_at = COALESCE(json_extract(body, '$.created_at'), 0);
    DROP INDEX vs_files_status;
    DROP INDEX vs_files_batch;
    CREATE INDEX vs_files_created ON vs_files (tenant, vs_id, created_at, id);
    CREATE INDEX vs_files_status ON vs_files (tenant, vs_id, status, created_at, id);
    CREATE INDEX vs_files_batch ON vs_files (tenant, vs_id, batch_id, created_at, id)
        WHERE batch_id IS NOT NULL;
    ",
    // 4: a store's activity (`last_active_at`) in a column of its own, written alone, so it
    // and whole-row rewrites (a rename, the embedding dimension) never undo each other.
    // NULL: the body's value stands.
    "
    ALTER TABLE vector_stores ADD COLUMN last_active_at INTEGER;
    ",
];

/// The schema version this binary writes.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the file to [`VERSION`], refusing a file written by a newer binary.
pub(super) fn migrate(conn: &Connection) -> Result<(), DbError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = apply(conn);
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            // The original error is the one worth reporting.
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    result
}

fn apply(conn: &Connection) -> Result<(), DbError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > VERSION {
        return Err(DbError::Invalid(format!(
            "the schema is at version {current}, newer than the {VERSION} this binary knows; \
             upgrade the proxy"
        )));
    }
    for (n, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        conn.execute_batch(sql)?;
        conn.pragma_update(None, "user_version", n as i64 + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent_and_versioned() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let e = migrate(&conn).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn a_version_2_file_lists_its_store_files_by_attach_time() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        for (id, at) in [("file-a", 300), ("file-b", 100)] {
            conn.execute(
                "INSERT INTO vs_files (tenant, vs_id, id, status, usage_bytes, body) \
                 VALUES ('t', 'vs', ?1, 'completed', 0, ?2)",
                rusqlite::params![id, format!("{{\"created_at\": {at}}}")],
            )
            .unwrap();
        }
        migrate(&conn).unwrap();
        let ids: Vec<String> = conn
            .prepare(
                "SELECT id FROM vs_files INDEXED BY vs_files_created \
                 WHERE tenant = 't' AND vs_id = 'vs' ORDER BY created_at, id",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, ["file-b", "file-a"]);
    }

    #[test]
    fn a_version_1_file_keeps_its_messages_when_they_are_clustered() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (id, run) in [("msg_b", Some("run_1")), ("msg_a", None)] {
            conn.execute(
                "INSERT INTO messages (tenant, thread_id, id, run_id, body) VALUES ('t', 'th', ?1, ?2, '{}')",
                rusqlite::params![id, run],
            )
            .unwrap();
        }
        migrate(&conn).unwrap();
        let ids: Vec<String> = conn
            .prepare("SELECT id FROM messages WHERE tenant = 't' AND thread_id = 'th' ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, ["msg_a", "msg_b"]);
        // Clustered: no rowid; the key is the primary key, and the run index is back.
        assert!(conn.prepare("SELECT rowid FROM messages").is_err());
        let dup = conn.execute(
            "INSERT INTO messages (tenant, thread_id, id, body) VALUES ('t', 'th', 'msg_a', '{}')",
            [],
        );
        assert!(dup.is_err());
        let by_run: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM messages INDEXED BY messages_run \
                 WHERE tenant = 't' AND thread_id = 'th' AND run_id = 'run_1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(by_run, 1);
    }
}
