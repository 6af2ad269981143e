//! Vector-store rules both the API and the run engine apply: the derived fields of a store
//! (file counts, usage, status), expiry, and activity (`last_active_at`).
//!
//! Derived fields are computed on read rather than kept on the store row: `file_counts` and
//! `usage_bytes` from the memberships, `status` from expiry and in-progress files. Readers
//! also repair memberships whose ingestion died (see [`ingest`]), so a status read here is
//! never stuck.

use super::{Retrieval, ingest};
use crate::error::Error;
use crate::model::VectorStore;
use crate::store::{Store, Tenant};

/// Whether the store has expired at `now` (the process clock, `Retrieval::clock`).
pub fn is_expired(vs: &VectorStore, now: i64) -> bool {
    vs.expires_at.is_some_and(|at| at <= now)
}

/// Fills in the derived fields of a stored row.
pub async fn derive(
    retrieval: &Retrieval,
    store: &Store,
    tenant: &Tenant,
    mut vs: VectorStore,
) -> Result<VectorStore, Error> {
    let vss = &store.vector_stores;
    let (mut counts, mut usage) = vss.count_vs_files(tenant, &vs.id, None).await?;
    if counts.in_progress > 0 && ingest::repair_store(retrieval, store, tenant, &vs.id).await? > 0 {
        (counts, usage) = vss.count_vs_files(tenant, &vs.id, None).await?;
    }
    vs.file_counts = counts;
    vs.usage_bytes = usage;
    vs.status = if is_expired(&vs, retrieval.clock.now()) {
        "expired".into()
    } else if counts.in_progress > 0 {
        "in_progress".into()
    } else {
        "completed".into()
    };
    Ok(vs)
}

/// Records use of a store: a search, a run that searches it or runs with it as its thread's
/// store, a file added to it. `last_active_at` moves to now and an expiry anchored on it
/// (`expires_after`, e.g. a thread's store: 7 days) is counted from there, so a store in use
/// does not expire under its thread. An expired store stays expired.
pub async fn touch(
    retrieval: &Retrieval,
    store: &Store,
    tenant: &Tenant,
    id: &str,
) -> Result<(), Error> {
    let Some(vs) = store.vector_stores.get_vector_store(tenant, id).await? else {
        return Ok(());
    };
    touch_loaded(retrieval, store, tenant, &vs).await
}

/// [`touch`] of a store the caller has just read.
pub async fn touch_loaded(
    retrieval: &Retrieval,
    store: &Store,
    tenant: &Tenant,
    vs: &VectorStore,
) -> Result<(), Error> {
    let now = retrieval.clock.now();
    // The throttle is the field's own resolution: a store already active this second is not
    // written again, so one searched by many runs at once costs at most one small write a
    // second (of the activity alone, never the whole row), while `last_active_at` stays
    // exact. A coarser step (a minute) would save little more — the expiry it feeds is
    // counted in days — and would make the value lag behind what OpenAI reports.
    if vs.last_active_at.is_some_and(|at| at >= now) || is_expired(vs, now) {
        return Ok(());
    }
    store
        .vector_stores
        .touch_vector_store(tenant, &vs.id, now)
        .await?;
    Ok(())
}
