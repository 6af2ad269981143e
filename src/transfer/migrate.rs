//! `migrate`: copies every kind, in dependency order, page by page from the source's scan to
//! verbatim writes in the target, with a checkpoint after each page.
//!
//! The checkpoint is a small JSON state file (not a table in the target): it describes a
//! (source, target, tenant) pair rather than the target alone, so it needs no schema change
//! in either backend, and an operator can see, keep or delete it. It records, per kind,
//! whether the kind is done and the scan position after the last page written; it is
//! replaced atomically (write, fsync, rename) after every page, and removed once the copy
//! completes. A page is written before its position is recorded, so an interruption at
//! worst writes one page again, and writes are idempotent upserts: no duplicates.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::{Failure, Opened};
use crate::store::Tenant;
use crate::store::dump::{Cursor, Kind, write_page};

const STATE_FORMAT: &str = "assistants-proxy-migrate/1";

/// What one `migrate` run does.
pub struct Plan<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub tenant: Option<Tenant>,
    /// The state file; None: derived from the pair (see [`default_state_path`]).
    pub state: Option<PathBuf>,
    /// Stop (as if interrupted) once at least this many objects were copied in this run.
    pub stop_after: Option<u64>,
}

/// Per-kind progress, as kept in the state file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct KindState {
    done: bool,
    cursor: Option<Cursor>,
    objects: u64,
    bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    format: String,
    /// A hash of the source, target and tenant, so a state file is never applied to
    /// another pair (and the URLs themselves are not written to disk).
    pair: String,
    kinds: BTreeMap<Kind, KindState>,
}

/// How a copy ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every kind copied: objects and content bytes per kind (this run and earlier ones),
    /// and this run's objects and time.
    Complete {
        kinds: Vec<(Kind, u64, u64)>,
        copied: u64,
        elapsed: std::time::Duration,
    },
    /// Stopped early (`--stop-after` or a signal); the state file holds the position.
    Interrupted { state: PathBuf, copied: u64 },
}

fn pair_id(from: &str, to: &str, tenant: Option<&Tenant>) -> String {
    let mut h = Sha256::new();
    for part in [from, "\n", to, "\n", tenant.map_or("", |t| t.as_str())] {
        h.update(part.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `assistants-proxy-migrate-<pair>.json` in the current directory.
pub fn default_state_path(from: &str, to: &str, tenant: Option<&Tenant>) -> PathBuf {
    PathBuf::from(format!(
        "assistants-proxy-migrate-{}.json",
        pair_id(from, to, tenant)
    ))
}

fn load_state(path: &Path, pair: &str) -> Result<State, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(State {
                format: STATE_FORMAT.into(),
                pair: pair.into(),
                kinds: BTreeMap::new(),
            });
        }
        Err(e) => return Err(Failure::new(format!("reading {}: {e}", path.display()))),
    };
    let state: State = serde_json::from_str(&text).map_err(|e| {
        Failure::new(format!(
            "{} is not a migration state file: {e}",
            path.display()
        ))
    })?;
    if state.format != STATE_FORMAT || state.pair != pair {
        return Err(Failure::new(format!(
            "{} belongs to another migration (other stores or tenant); remove it or pass \
             another --state",
            path.display()
        )));
    }
    Ok(state)
}

fn save_state(path: &Path, state: &State) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::new(format!("writing {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_vec_pretty(state)
        .map_err(|e| Failure::new(format!("encoding the migration state: {e}")))?;
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(&text).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Copies the source into the target, resuming from the state file if there is one.
pub async fn migrate(
    plan: &Plan<'_>,
    stores: &Opened,
    stop: Arc<AtomicBool>,
) -> Result<Outcome, Failure> {
    let pair = pair_id(plan.from, plan.to, plan.tenant.as_ref());
    let path = plan
        .state
        .clone()
        .unwrap_or_else(|| default_state_path(plan.from, plan.to, plan.tenant.as_ref()));
    let mut state = load_state(&path, &pair)?;
    let resumed = !state.kinds.is_empty();
    if resumed {
        eprintln!("resuming the migration recorded in {}", path.display());
    }
    let progress = Progress::new("migrate");
    let started = std::time::Instant::now();
    let mut copied = 0u64;
    let tenant = plan.tenant.as_ref();
    for kind in Kind::ALL {
        let mut ks = state.kinds.get(&kind).cloned().unwrap_or_default();
        if ks.done {
            continue;
        }
        let total = stores.from.dump.count(kind, tenant).await.ok();
        let mut bar = progress.kind(kind.name(), total, ks.objects, ks.bytes);
        loop {
            if stop.load(Ordering::Relaxed) || plan.stop_after.is_some_and(|limit| copied >= limit)
            {
                state.kinds.insert(kind, ks);
                save_state(&path, &state)?;
                return Ok(Outcome::Interrupted {
                    state: path,
                    copied,
                });
            }
            let page = stores
                .from
                .dump
                .scan(kind, tenant, ks.cursor.as_ref(), kind.page_size())
                .await
                .map_err(|e| Failure::new(format!("reading {}: {e}", kind.name())))?;
            let objects = page.records.len() as u64;
            let bytes: u64 = page.records.iter().map(|r| r.content_bytes()).sum();
            write_page(&stores.to, page.records)
                .await
                .map_err(|e| Failure::new(format!("writing {}: {e}", kind.name())))?;
            ks.objects += objects;
            ks.bytes += bytes;
            copied += objects;
            bar.advance(objects, bytes);
            match page.next {
                Some(next) => ks.cursor = Some(next),
                None => {
                    ks.done = true;
                    ks.cursor = None;
                }
            }
            let done = ks.done;
            state.kinds.insert(kind, ks.clone());
            save_state(&path, &state)?;
            if done {
                break;
            }
        }
        bar.finish();
    }
    let summary = Kind::ALL
        .iter()
        .map(|k| {
            let s = state.kinds.get(k).cloned().unwrap_or_default();
            (*k, s.objects, s.bytes)
        })
        .collect();
    if let Err(e) = std::fs::remove_file(&path) {
        eprintln!("warning: could not remove {}: {e}", path.display());
    }
    Ok(Outcome::Complete {
        kinds: summary,
        copied,
        elapsed: started.elapsed(),
    })
}
