//! `/v1/assistants`: create, list, retrieve, modify, delete (and the v1 assistant-files
//! routes, which map onto the assistant's `file_ids`).

pub mod service;
pub mod types;

use serde_json::{Value, json};

use crate::api::common;
use crate::api::ctx::{Ctx, Reply, ok_json};
use crate::api::validate::{ApiVersion, tools_for};
use crate::model::Assistant;

/// The wire form for the caller's API version.
pub fn render(a: &Assistant, version: ApiVersion) -> Value {
    let mut v = json!({
        "id": a.id,
        "object": "assistant",
        "created_at": a.created_at,
        "name": a.name,
        "description": a.description,
        "model": a.model,
        "instructions": a.instructions,
        "tools": tools_for(version, &a.tools),
        "metadata": a.metadata,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "response_format": a.response_format,
    });
    match version {
        ApiVersion::V2 => v["tool_resources"] = json!(a.tool_resources),
        ApiVersion::V1 => v["file_ids"] = json!(a.v1_file_ids),
    }
    v
}

pub async fn create(mut ctx: Ctx<'_>) -> Reply {
    let fields = ctx.json().await?;
    let parsed = types::parse(fields, ctx.version(), true)?;
    let a = service::create(ctx.state, &ctx.caller, parsed).await?;
    ok_json(&render(&a, ctx.version()))
}

pub async fn list(ctx: Ctx<'_>) -> Reply {
    let p = ctx.list_params()?;
    let page = service::list(&ctx.caller, &p.query).await?;
    Ok(common::list_response(
        &page,
        |a| &a.id,
        |a| render(a, ctx.version()),
    ))
}

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("assistant_id", "asst_")?;
    let a = service::load(&ctx.caller.store, &ctx.caller.tenant, &id).await?;
    ok_json(&render(&a, ctx.version()))
}

pub async fn modify(mut ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("assistant_id", "asst_")?;
    let fields = ctx.json().await?;
    let parsed = types::parse(fields, ctx.version(), false)?;
    let a = service::modify(&ctx.caller, &id, parsed).await?;
    ok_json(&render(&a, ctx.version()))
}

pub async fn delete(ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("assistant_id", "asst_")?;
    service::delete(&ctx.caller, &id).await?;
    Ok(common::deleted(&id, "assistant.deleted"))
}

// ---- v1 assistant files ----------------------------------------------------------------

fn assistant_file(a: &Assistant, file_id: &str) -> Value {
    json!({"id": file_id, "object": "assistant.file", "created_at": a.created_at, "assistant_id": a.id})
}

pub async fn create_file(mut ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("assistant_id", "asst_")?;
    let mut fields = ctx.json().await?;
    let file_id = fields.required_string("file_id", 128)?;
    fields.finish()?;
    let a = service::add_file(&ctx.caller, &id, &file_id).await?;
    ok_json(&assistant_file(&a, &file_id))
}

pub async fn list_files(ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("assistant_id", "asst_")?;
    let p = ctx.list_params()?;
    let a = service::load(&ctx.caller.store, &ctx.caller.tenant, &id).await?;
    let page = common::page_of_ids(&a.v1_file_ids, &p.query);
    Ok(common::list_response(
        &page,
        |f| f.as_str(),
        |f| assistant_file(&a, f),
    ))
}

pub async fn retrieve_file(ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("assistant_id", "asst_")?;
    let a = service::load(&ctx.caller.store, &ctx.caller.tenant, &id).await?;
    let f = service::file_of(&a, ctx.param("file_id"))?;
    ok_json(&assistant_file(&a, f))
}

pub async fn delete_file(ctx: Ctx<'_>) -> Reply {
    let id = ctx.id("assistant_id", "asst_")?;
    let file_id = service::remove_file(&ctx.caller, &id, ctx.param("file_id")).await?;
    Ok(common::deleted(&file_id, "assistant.file.deleted"))
}
