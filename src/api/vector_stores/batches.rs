//! `/v1/vector_stores/{vector_store_id}/file_batches`: create, retrieve, cancel, list files.

use super::{respond, service, types, vs_id};
use crate::api::ctx::{Ctx, Reply};
use crate::error::Error;

/// The path's batch id, checked.
fn batch_id(ctx: &Ctx<'_>) -> Result<String, Error> {
    ctx.id("batch_id", "vsfb_")
}

pub async fn create(mut ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let fields = ctx.json().await?;
    let items = types::parse_batch(fields)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    let store = service::load(state, &caller.store, &caller.tenant, &vs).await?;
    service::check_not_expired(&store, state.clock.now())?;
    let b = service::create_batch(state, caller, &vs, items).await?;
    respond(&types::render_batch(&b))
}

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let id = batch_id(&ctx)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let b = service::load_batch(state, &caller.store, &caller.tenant, &vs, &id).await?;
    respond(&types::render_batch(&b))
}

pub async fn cancel(ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let id = batch_id(&ctx)?;
    let (state, caller) = (ctx.state, &ctx.caller);
    service::load(state, &caller.store, &caller.tenant, &vs).await?;
    let b = service::cancel_batch(state, &caller.store, &caller.tenant, &vs, &id).await?;
    respond(&types::render_batch(&b))
}

pub async fn list_files(ctx: Ctx<'_>) -> Reply {
    let vs = vs_id(&ctx)?;
    let id = batch_id(&ctx)?;
    super::files::list_in(ctx, &vs, Some(id)).await
}
