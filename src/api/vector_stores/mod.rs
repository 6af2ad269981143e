//! `/v1/vector_stores`: stores (create, list, retrieve, modify, delete, search), their files
//! (`files`) and file batches (`batches`). Handlers decode, call `service`, and encode with
//! `types`; ingestion and search live in `crate::retrieval`.

pub mod batches;
pub mod files;
pub mod service;
pub mod types;

use http::StatusCode;

use crate::api::common;
use crate::api::ctx::{Ctx, Reply, ok_json};
use crate::error::Error;
use crate::retrieval::{rewrite, search, stores};

/// Poll interval suggested to the SDKs' `create_and_poll` helpers while files ingest.
const POLL_HINT_MS: u32 = 500;

fn respond(value: &serde_json::Value) -> Reply {
    Ok(common::with_poll_hint(
        common::json_response(StatusCode::OK, value),
        POLL_HINT_MS,
    ))
}

/// The path's vector store id, checked.
fn vs_id(ctx: &Ctx<'_>) -> Result<String, Error> {
    ctx.id("vector_store_id", "vs_")
}

pub async fn create(mut ctx: Ctx<'_>) -> Reply {
    let fields = ctx.json().await?;
    let new = types::parse_create(fields)?;
    let vs = service::create(ctx.state, &ctx.caller, new).await?;
    respond(&types::render_store(&vs))
}

pub async fn list(ctx: Ctx<'_>) -> Reply {
    let p = ctx.list_params()?;
    let (state, caller) = (ctx.state, &ctx.caller);
    let page = caller
        .store
        .vector_stores
        .list_vector_stores(&caller.tenant, &p.query)
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for vs in page.items {
        items.push(stores::derive(&state.retrieval, &caller.store, &caller.tenant, vs).await?);
    }
    let page = crate::store::Page {
        items,
        has_more: page.has_more,
    };
    Ok(common::list_response(&page, |v| &v.id, types::render_store))
}

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    let id = vs_id(&ctx)?;
    let vs = service::load(ctx.state, &ctx.caller.store, &ctx.caller.tenant, &id).await?;
    respond(&types::render_store(&vs))
}

pub async fn modify(mut ctx: Ctx<'_>) -> Reply {
    let id = vs_id(&ctx)?;
    let fields = ctx.json().await?;
    let changes = types::parse_modify(fields)?;
    let caller = &ctx.caller;
    let vs = service::modify(ctx.state, &caller.store, &caller.tenant, &id, changes).await?;
    respond(&types::render_store(&vs))
}

pub async fn delete(ctx: Ctx<'_>) -> Reply {
    let id = vs_id(&ctx)?;
    if !service::delete(ctx.state, &ctx.caller.store, &ctx.caller.tenant, &id).await? {
        return Err(service::not_found(&id));
    }
    Ok(common::deleted(&id, "vector_store.deleted"))
}

pub async fn search(mut ctx: Ctx<'_>) -> Reply {
    let id = vs_id(&ctx)?;
    let fields = ctx.json().await?;
    let mut s = types::parse_search(fields)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    let vs = service::load(state, &caller.store, &caller.tenant, &id).await?;
    service::check_not_expired(&vs, state.clock.now())?;
    if s.rewrite_query {
        s.queries = rewrite::rewrite_all(&state.retrieval, caller, &s.queries).await?;
    }
    let hits = search::search_many(
        &state.retrieval,
        caller,
        std::slice::from_ref(&vs.id),
        &s.queries,
        s.max_num_results,
        s.ranking.as_ref(),
        s.filters.as_ref(),
    )
    .await?;
    stores::touch(&state.retrieval, &caller.store, &caller.tenant, &vs.id).await?;
    ok_json(&types::render_search(&s.queries, &hits))
}
