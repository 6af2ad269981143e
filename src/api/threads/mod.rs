//! `/v1/threads`: create (with initial messages and tool resources), retrieve, modify,
//! delete. Runs live in `runs`; messages in `messages`.

pub mod service;

use serde_json::{Value, json};

use crate::api::common;
use crate::api::ctx::{Ctx, Reply, ok_json};
use crate::api::validate::ApiVersion;
use crate::model::Thread;

pub fn render(t: &Thread, version: ApiVersion) -> Value {
    let mut v = json!({
        "id": t.id,
        "object": "thread",
        "created_at": t.created_at,
        "metadata": t.metadata,
    });
    if version == ApiVersion::V2 {
        v["tool_resources"] = json!(t.tool_resources);
    }
    v
}

pub async fn create(mut ctx: Ctx<'_>) -> Reply {
    let fields = ctx.json().await?;
    let new = service::parse_create(fields, ctx.version(), "")?;
    let (thread, _) = service::create(ctx.state, &ctx.caller, new).await?;
    ok_json(&render(&thread, ctx.version()))
}

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("thread_id", "thread_")?;
    let t = service::load_thread(&ctx.caller.store, &ctx.caller.tenant, &id).await?;
    ok_json(&render(&t, ctx.version()))
}

pub async fn modify(mut ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("thread_id", "thread_")?;
    let fields = ctx.json().await?;
    let t = service::modify(&ctx.caller, &id, fields).await?;
    ok_json(&render(&t, ctx.version()))
}

pub async fn delete(ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("thread_id", "thread_")?;
    service::delete(ctx.state, &ctx.caller, &id).await?;
    Ok(common::deleted(&id, "thread.deleted"))
}
