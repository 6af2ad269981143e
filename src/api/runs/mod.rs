//! `/v1/threads/{thread_id}/runs…` and `/v1/threads/runs`: create (streamed or not), list,
//! retrieve, modify, cancel, submit tool outputs, run steps. The rules live in
//! [`service`]; these handlers decode, call, and encode (JSON or SSE).

pub mod service;

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::common;
use crate::api::ctx::{Ctx, Reply, ok_json};
use crate::api::validate::{ApiVersion, tools_for};
use crate::api::{messages, threads};
use crate::body::ProxyBody;
use crate::error::Error;
use crate::model::{Run, RunStep};
use crate::runs::events::Event;

/// How soon the SDKs' polling helpers should look again (their default is 1–5 s).
const POLL_AFTER_MS: u32 = 250;

pub fn render_run(run: &Run, version: ApiVersion) -> Value {
    let mut v = serde_json::to_value(run).unwrap_or(Value::Null);
    if version == ApiVersion::V1 {
        v["tools"] = json!(tools_for(version, &run.tools));
        v["file_ids"] = json!([]);
    }
    v
}

/// A step as the caller may see it: file_search result content only with `include[]`.
pub fn render_step(step: &RunStep, include_content: bool) -> Value {
    let mut v = serde_json::to_value(step).unwrap_or(Value::Null);
    // `get_mut`, not indexing: indexing a Value mutably inserts the keys it looks for, and a
    // step must carry only the keys of its type.
    let calls = v
        .get_mut("step_details")
        .and_then(|d| d.get_mut("tool_calls"))
        .and_then(Value::as_array_mut);
    if !include_content && let Some(calls) = calls {
        for c in calls {
            let results = c
                .get_mut("file_search")
                .and_then(|f| f.get_mut("results"))
                .and_then(Value::as_array_mut);
            for r in results.into_iter().flatten() {
                if let Some(o) = r.as_object_mut() {
                    o.remove("content");
                }
            }
        }
    }
    v
}

fn render_event(ev: &Event, version: ApiVersion, include: bool) -> Value {
    match ev {
        Event::ThreadCreated(t) => threads::render(t, version),
        Event::Run(_, r) => render_run(r, version),
        Event::Step(_, s) => render_step(s, include),
        Event::Message(_, m) => messages::render(m, version),
        Event::StepDelta(v) | Event::MessageDelta(v) | Event::Error(v) => v.clone(),
        Event::Done => Value::Null,
    }
}

/// An SSE response fed by the run's event channel; it ends when the engine drops the sender
/// (after `done`). Dropping the response (a client that leaves) does not touch the run.
fn sse(
    rx: mpsc::UnboundedReceiver<Event>,
    version: ApiVersion,
    include: bool,
) -> Response<ProxyBody> {
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        let ev = rx.recv().await?;
        let bytes: Bytes = ev.to_sse(&|e| render_event(e, version, include));
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let body = StreamBody::new(stream)
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies in front of this one must not buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn run_response(run: &Run, version: ApiVersion) -> Response<ProxyBody> {
    common::with_poll_hint(
        common::json_response(StatusCode::OK, &render_run(run, version)),
        POLL_AFTER_MS,
    )
}

/// The thread and run ids of a single-run route, checked in path order.
fn ids(ctx: &Ctx<'_>) -> Result<(String, String), Error> {
    let thread_id = ctx.id("thread_id", "thread_")?;
    Ok((thread_id, ctx.id("run_id", "run_")?))
}

pub async fn create(mut ctx: Ctx<'_>) -> Reply {
    let thread_id = ctx.id("thread_id", "thread_")?;
    start(&mut ctx, Some(&thread_id)).await
}

pub async fn create_thread_and_run(mut ctx: Ctx<'_>) -> Reply {
    start(&mut ctx, None).await
}

/// Creates a run on `thread_id`, or on a new thread from the body when `None`.
async fn start(ctx: &mut Ctx<'_>, thread_id: Option<&str>) -> Reply {
    let include = service::include_content(ctx.query())?;
    let fields = ctx.json().await?;
    let mut opts = service::parse(fields, ctx.version(), thread_id.is_none())?;
    opts.include_content = include;
    let (rec, rx) = service::create(ctx.state, &ctx.caller, thread_id, opts).await?;
    Ok(match rx {
        Some(rx) => sse(rx, ctx.version(), include),
        None => run_response(&rec.run, ctx.version()),
    })
}

pub async fn list(ctx: Ctx<'_>) -> Reply {
    let thread_id = ctx.id("thread_id", "thread_")?;
    let p = ctx.list_params()?;
    let caller = &ctx.caller;
    threads::service::load_thread(&caller.store, &caller.tenant, &thread_id).await?;
    let page = caller
        .store
        .runs
        .list_runs(&caller.tenant, &thread_id, &p.query)
        .await?;
    let mut items = Vec::with_capacity(page.items.len());
    for rec in page.items {
        items.push(service::expire_if_due(ctx.state, caller, rec).await?);
    }
    let page = crate::store::Page {
        items,
        has_more: page.has_more,
    };
    Ok(common::list_response(
        &page,
        |r| &r.run.id,
        |r| render_run(&r.run, caller.version),
    ))
}

pub async fn retrieve(ctx: Ctx<'_>) -> Reply {
    let (thread_id, run_id) = ids(&ctx)?;
    let rec = service::load(ctx.state, &ctx.caller, &thread_id, &run_id).await?;
    Ok(run_response(&rec.run, ctx.version()))
}

pub async fn modify(mut ctx: Ctx<'_>) -> Reply {
    let (thread_id, run_id) = ids(&ctx)?;
    let fields = ctx.json().await?;
    let rec = service::modify(ctx.state, &ctx.caller, &thread_id, &run_id, fields).await?;
    Ok(run_response(&rec.run, ctx.version()))
}

pub async fn cancel(mut ctx: Ctx<'_>) -> Reply {
    let (thread_id, run_id) = ids(&ctx)?;
    // The body is ignored (the spec defines none), but must not be unreadable garbage.
    ctx.body().await?;
    let rec = service::cancel(ctx.state, &ctx.caller, &thread_id, &run_id).await?;
    Ok(run_response(&rec.run, ctx.version()))
}

pub async fn submit_tool_outputs(mut ctx: Ctx<'_>) -> Reply {
    let (thread_id, run_id) = ids(&ctx)?;
    let fields = ctx.json().await?;
    let (rec, rx) =
        service::submit_tool_outputs(ctx.state, &ctx.caller, &thread_id, &run_id, fields).await?;
    Ok(match rx {
        Some(rx) => sse(rx, ctx.version(), false),
        None => run_response(&rec.run, ctx.version()),
    })
}

pub async fn list_steps(ctx: Ctx<'_>) -> Reply {
    let (thread_id, run_id) = ids(&ctx)?;
    let include = service::include_content(ctx.query())?;
    let p = ctx.list_params()?;
    let caller = &ctx.caller;
    service::load(ctx.state, caller, &thread_id, &run_id).await?;
    let page = caller
        .store
        .runs
        .list_steps(&caller.tenant, &thread_id, &run_id, &p.query)
        .await?;
    Ok(common::list_response(
        &page,
        |s| &s.id,
        |s| render_step(s, include),
    ))
}

pub async fn retrieve_step(ctx: Ctx<'_>) -> Reply {
    let (thread_id, run_id) = ids(&ctx)?;
    let step_id = ctx.id("step_id", "step_")?;
    let include = service::include_content(ctx.query())?;
    let caller = &ctx.caller;
    service::load(ctx.state, caller, &thread_id, &run_id).await?;
    let step = caller
        .store
        .runs
        .get_step(&caller.tenant, &thread_id, &run_id, &step_id)
        .await?
        .ok_or_else(|| Error::not_found(format!("No run step found with id '{step_id}'.")))?;
    ok_json(&render_step(&step, include))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(details: Value) -> RunStep {
        RunStep {
            id: "step_1".into(),
            object: "thread.run.step".into(),
            created_at: 1,
            assistant_id: "asst_1".into(),
            thread_id: "thread_1".into(),
            run_id: "run_1".into(),
            kind: details["type"].as_str().unwrap().into(),
            status: crate::model::StepStatus::Completed,
            step_details: details,
            last_error: None,
            expired_at: None,
            cancelled_at: None,
            failed_at: None,
            completed_at: Some(2),
            metadata: Default::default(),
            usage: None,
        }
    }

    #[test]
    fn steps_carry_only_the_keys_of_their_type() {
        let m = json!({"type": "message_creation", "message_creation": {"message_id": "msg_1"}});
        assert_eq!(render_step(&step(m.clone()), false)["step_details"], m);

        let calls = json!({"type": "tool_calls", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{}", "output": null}},
            {"id": "call_2", "type": "file_search", "file_search": {
                "ranking_options": {"ranker": "auto", "score_threshold": 0.0},
                "results": [{"file_id": "file-1", "file_name": "a.txt", "score": 0.5,
                             "content": [{"type": "text", "text": "x"}]}]}},
        ]});
        let shown = render_step(&step(calls.clone()), false);
        assert_eq!(
            shown["step_details"]["tool_calls"][0],
            calls["tool_calls"][0]
        );
        let result = &shown["step_details"]["tool_calls"][1]["file_search"]["results"][0];
        assert!(result.get("content").is_none(), "{result}");
        assert_eq!(result["file_id"], "file-1");
        let full = render_step(&step(calls.clone()), true);
        assert_eq!(full["step_details"], calls);
    }
}
