//! The lock that keeps a second proxy off the SQLite file this one uses.
//!
//! Two proxies on one SQLite file are not supported. The code would mostly cope (run claims
//! are conditional writes, run and ingestion leases expire, the search indexes notice other
//! writers by their epoch), but each process funnels its writes through its own writer
//! thread: the two take turns on SQLite's one write lock, and a proxy that waits longer than
//! the busy timeout (5 s) for the other's batch fails the request (a 503) or a run's state
//! write. On a network filesystem SQLite's own locking may not work at all. So the second
//! proxy refuses to start instead, naming the file and the process that holds it.
//!
//! The lock is an exclusive advisory lock (`flock`) on `<database>.lock` beside the file,
//! taken before the database is opened and held as long as the store is open (the process's
//! life, for the server). The kernel releases it when its holder's descriptor closes, so a
//! crashed or `kill -9`ed proxy leaves no stale lock; the file itself stays (removing it
//! could let two openers lock two different files). The holder writes its process id into
//! it, for the refusal's message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::store::{StoreError, StoreResult};

/// The lock file of database `db`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of database `db`; the lock lasts as long as the returned file is open.
/// `None` when the filesystem has no such locks (the proxy then runs unguarded, and says so).
pub(crate) fn acquire(db: &Path) -> StoreResult<Option<File>> {
    let path = lock_path(db);
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Other(format!(
            "cannot {what} the lock file {} of SQLite database {}: {e}",
            path.display(),
            db.display()
        ))
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| fail("open", &e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // The holder may not have written its id yet; the message does without it.
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_owned(),
                pid => format!("process {pid}"),
            };
            return Err(StoreError::Other(format!(
                "SQLite database {} is in use by another assistants-proxy ({holder} holds the \
                 lock on {}). Two proxies on one SQLite file are not supported: stop the other \
                 one, give this one another file, or share a Cassandra database instead.",
                db.display(),
                path.display()
            )));
        }
        Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(
                lock = %path.display(),
                error = %e,
                "this filesystem cannot lock files: a second proxy started on the same SQLite \
                 file would not be refused"
            );
            return Ok(None);
        }
        Err(TryLockError::Error(e)) => return Err(fail("lock", &e)),
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    if let Err(e) = written {
        // The lock holds without the id; only the refusal's message would lack it.
        tracing::debug!(lock = %path.display(), error = %e, "could not write the process id");
    }
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = acquire(&db).unwrap().expect("local filesystems lock");
        assert_eq!(lock_path(&db), dir.path().join("x.db.lock"));
        let e = acquire(&db).unwrap_err().to_string();
        assert!(e.contains(&db.display().to_string()), "{e}");
        assert!(e.contains("x.db.lock"), "{e}");
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(first);
        let again = acquire(&db).unwrap();
        assert!(again.is_some());
    }
}
