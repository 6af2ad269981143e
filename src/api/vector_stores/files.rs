//! `/v1/vector_stores/{vector_store_id}/files`: add, list, retrieve, update attributes,
//! remove, and read back the parsed content.

use serde_json::{Value, json};

use super::{respond, service, types, vs_id};
use crate::api::common;
use crate::api::ctx::{Ctx, Reply, ok_json};
use crate::error::Error;
use crate::retrieval::ingest;
use crate::store::{Page, VsFileFilter};

/// The path's file id, checked.
fn file_id(ctx: &Ctx<'_>) -> Result<String, Error> {
    ctx.id("file_id", "file-")
}

pub async fn create(mut ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let fields = ctx.json().await?;
    let new = types::parse_add_file(fields)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    let store = service::load(state, &caller.store, &caller.tenant, &vs).await?;
    service::check_not_expired(&store, state.clock.now())?;
    let f = service::add_file(
        state,
        caller,
        &vs,
        &new.file_id,
        new.chunking_strategy,
        new.attributes,
        None,
    )
    .await?;
    respond(&types::render_file(&f))
}

/// Lists a store's files (or a batch's, with `batch_id`), repairing dead ingestions first.
pub async fn list_in(ctx: Ctx<'_>, vs: &str, batch_id: Option<String>) -> Reply {
    let p = ctx.list_params()?;
    let status = types::status_filter(&p)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    // 404 for a missing store (or batch), not an empty list.
    service::load(state, &caller.store, &caller.tenant, vs).await?;
    if let Some(b) = &batch_id {
        service::load_batch(state, &caller.store, &caller.tenant, vs, b).await?;
    }
    let filter = VsFileFilter { status, batch_id };
    let page = service::list_files(&caller.store, &caller.tenant, vs, &filter, &p.query).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for mut f in page.items {
        ingest::repair(&state.retrieval, &caller.store, &caller.tenant, &mut f).await?;
        items.push(f);
    }
    let page = Page {
        items,
        has_more: page.has_more,
    };
    Ok(common::list_response(&page, |f| &f.id, types::render_file))
}

pub async fn list(ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    list_in(ctx, &vs, None).await
}

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let id = file_id(&ctx)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let f = service::load_file(state, &caller.store, &caller.tenant, &vs, &id).await?;
    respond(&types::render_file(&f))
}

pub async fn update(mut ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let id = file_id(&ctx)?;
    let fields = ctx.json().await?;
    let attributes = types::parse_update_file(fields)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let f =
        service::set_attributes(state, &caller.store, &caller.tenant, &vs, &id, attributes).await?;
    respond(&types::render_file(&f))
}

pub async fn delete(ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let id = file_id(&ctx)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    if !service::remove_file(state, &caller.store, &caller.tenant, &vs, &id).await? {
        return Err(service::file_not_found(&vs, &id));
    }
    Ok(common::deleted(&id, "vector_store.file.deleted"))
}

pub async fn content(ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let id = file_id(&ctx)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    service::load_file(state, &caller.store, &caller.tenant, &vs, &id).await?;
    let chunks = caller
        .store
        .chunks
        .file_chunks(&caller.tenant, &vs, &id)
        .await?;
    let data: Vec<Value> = chunks
        .iter()
        .map(|c| json!({"type": "text", "text": c.text}))
        .collect();
    ok_json(&json!({
        "object": "vector_store.file_content.page",
        "data": data,
        "has_more": false,
        "next_page": null,
    }))
}
