//! Run rules behind the HTTP routes: creating a run (effective model, instructions, tools),
//! the one-active-run-per-thread lock, cancelling, submitting tool outputs, and starting the
//! engine (`crate::runs`) as tracked background work that outlives the request.
//!
//! One file on purpose: every rule of a run's life that the API enforces (create, the thread
//! lock, cancel, tool outputs) in one place, read top to bottom; the engine is `crate::runs`.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::assistants::service as assistants;
use crate::api::common::check_id;
use crate::api::fields::{Field, Fields, invalid_type, missing};
use crate::api::messages::service as messages;
use crate::api::messages::types::{self as message_types, NewMessage};
use crate::api::threads::service::{self as threads, NewThread};
use crate::api::validate::{self, ApiVersion};
use crate::app::AppState;
use crate::error::Error;
use crate::ids::new_id;
use crate::model::{Metadata, Run, RunRecord, RunStatus, StepStatus, Thread};
use crate::runs::engine::{self, Apply, RunRef, Sink, transition};
use crate::runs::engine_state::{self, EngineState};
use crate::runs::events::{Event, RunNews};
use crate::runs::expire;
use crate::runs::state::{self as machine, RunEvent};
use crate::store::CreateRun;
use crate::tenancy::Caller;

/// Tools a run may override with (the spec's limit for runs).
pub const MAX_RUN_TOOLS: usize = 20;
/// The only value `include[]` takes.
pub const INCLUDE_CONTENT: &str = "step_details.tool_calls[*].file_search.results[*].content";

/// The options of a run request, validated.
#[derive(Debug, Default)]
pub struct RunOptions {
    pub assistant_id: String,
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub additional_instructions: Option<String>,
    pub additional_messages: Vec<NewMessage>,
    pub tools: Option<Vec<Value>>,
    pub metadata: Metadata,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stream: bool,
    pub max_prompt_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub truncation_strategy: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    /// create-thread-and-run only: the new thread and resource overrides.
    pub thread: Option<NewThread>,
    pub tool_resources_stores: Vec<String>,
    pub include_content: bool,
    /// Sent upstream as the chat request's `reasoning_effort` (over the assistant's).
    pub reasoning_effort: Option<String>,
}

fn set<T>(f: Field<T>) -> Option<T> {
    f.into_option()
}

/// Parses a create-run (`thread_and_run = false`) or create-thread-and-run body.
pub fn parse(
    mut f: Fields,
    version: ApiVersion,
    thread_and_run: bool,
) -> Result<RunOptions, Error> {
    let assistant_id = f.required_string("assistant_id", 128)?;
    check_id("assistant_id", &assistant_id, "asst_")?;
    let mut o = RunOptions {
        assistant_id,
        model: set(f.non_empty_string("model", 256)?),
        instructions: set(f.string(
            "instructions",
            crate::api::assistants::types::MAX_INSTRUCTIONS,
        )?),
        ..RunOptions::default()
    };
    if !thread_and_run {
        o.reasoning_effort = set(f.enumeration(
            "reasoning_effort",
            crate::api::assistants::types::REASONING_EFFORTS,
        )?);
        o.additional_instructions = set(f.string(
            "additional_instructions",
            crate::api::assistants::types::MAX_INSTRUCTIONS,
        )?);
        if let Field::Set(items) = f.array("additional_messages", 32)? {
            for (i, m) in items.into_iter().enumerate() {
                let mf = Fields::nested(m, &format!("additional_messages[{i}]"))?;
                o.additional_messages
                    .push(message_types::parse(mf, version)?);
            }
        }
    } else {
        o.thread = Some(match f.object("thread")? {
            Field::Set(t) => threads::parse_create(t, version, "thread.")?,
            _ => threads::parse_create(Fields::new(Default::default()), version, "thread.")?,
        });
        if let Field::Set(tr) = f.object("tool_resources")? {
            let (tr, _) = validate::tool_resources(tr, false)?;
            o.tool_resources_stores = tr.vector_store_ids().to_vec();
        }
    }
    if let Field::Set(items) = f.array("tools", MAX_RUN_TOOLS)? {
        o.tools = Some(validate::tools(items, "tools", MAX_RUN_TOOLS, version)?);
    }
    o.metadata = set(f.metadata()?).unwrap_or_default();
    o.temperature = set(f.number("temperature", 0.0, 2.0)?);
    o.top_p = set(f.number("top_p", 0.0, 1.0)?);
    o.stream = set(f.boolean("stream")?).unwrap_or(false);
    o.max_prompt_tokens = set(f.integer("max_prompt_tokens", 256, i64::MAX)?).map(|n| n as u64);
    o.max_completion_tokens =
        set(f.integer("max_completion_tokens", 256, i64::MAX)?).map(|n| n as u64);
    o.truncation_strategy = match f.take("truncation_strategy") {
        Field::Set(v) => Some(validate::truncation_strategy(v, "truncation_strategy")?),
        _ => None,
    };
    o.tool_choice = match f.take("tool_choice") {
        Field::Set(v) => Some(validate::tool_choice(v, "tool_choice")?),
        _ => None,
    };
    o.parallel_tool_calls = set(f.boolean("parallel_tool_calls")?);
    o.response_format = match f.take("response_format") {
        Field::Set(v) => Some(validate::response_format(v, "response_format")?),
        _ => None,
    };
    f.finish()?;
    Ok(o)
}

/// Whether `include[]` asks for file_search result content.
pub fn include_content(query: Option<&str>) -> Result<bool, Error> {
    let mut wanted = false;
    for (k, v) in crate::api::common::query_pairs(query) {
        if k == "include[]" || k == "include" {
            if v != INCLUDE_CONTENT {
                return Err(crate::api::fields::invalid_value(
                    "include[]",
                    &v,
                    &[INCLUDE_CONTENT],
                ));
            }
            wanted = true;
        }
    }
    Ok(wanted)
}

pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("No run found with id '{id}'."))
}

pub async fn load(
    state: &AppState,
    caller: &Caller,
    thread_id: &str,
    run_id: &str,
) -> Result<RunRecord, Error> {
    threads::load_thread(&caller.store, &caller.tenant, thread_id).await?;
    let rec = caller
        .store
        .runs
        .get_run(&caller.tenant, thread_id, run_id)
        .await?
        .ok_or_else(|| not_found(run_id))?;
    expire_if_due(state, caller, rec).await
}

/// A run waiting past `expires_at` for tool outputs (or never started) is expired now.
pub async fn expire_if_due(
    state: &AppState,
    caller: &Caller,
    rec: RunRecord,
) -> Result<RunRecord, Error> {
    let now = state.clock.now();
    let due = matches!(
        rec.run.status,
        RunStatus::RequiresAction | RunStatus::Queued
    ) && rec.run.expires_at.is_some_and(|at| at <= now)
        && !state.runs.registry.is_running(&rec.run.id);
    if !due {
        return Ok(rec);
    }
    let r = RunRef {
        store: caller.store.clone(),
        tenant: caller.tenant.clone(),
        thread_id: rec.run.thread_id.clone(),
        run_id: rec.run.id.clone(),
    };
    expire(&state.runs, &r).await?;
    caller
        .store
        .runs
        .get_run(&caller.tenant, &r.thread_id, &r.run_id)
        .await?
        .ok_or_else(|| not_found(&r.run_id))
}

/// Starts the engine as tracked background work: the run continues if the client leaves.
/// `start` is the run as just written (queued), so the engine's claim need not read it back.
pub fn spawn(
    state: &Arc<AppState>,
    caller: &Caller,
    r: RunRef,
    start: RunRecord,
    sink: Option<Sink>,
) {
    let runs = state.runs.clone();
    let caller = caller.clone();
    state
        .tasks
        .spawn(async move { engine::execute(runs, caller, r, Some(start), sink).await });
}

/// Creates a run on an existing thread, or a new thread and a run on it. Returns the run and,
/// when streaming, the receiver of its events (already holding `thread.created`,
/// `thread.run.created` and `thread.run.queued`).
pub async fn create(
    state: &Arc<AppState>,
    caller: &Caller,
    thread_id: Option<&str>,
    opts: RunOptions,
) -> Result<(RunRecord, Option<mpsc::UnboundedReceiver<Event>>), Error> {
    // The assistant and the thread are read together (two round trips to a remote store
    // become one); the assistant's error still comes first when both are missing.
    let (assistant, existing) = match thread_id {
        Some(id) => {
            let (a, t) = tokio::join!(
                assistants::load(&caller.store, &caller.tenant, &opts.assistant_id),
                threads::load_thread(&caller.store, &caller.tenant, id)
            );
            (a?, Some(t?))
        }
        None => (
            assistants::load(&caller.store, &caller.tenant, &opts.assistant_id).await?,
            None,
        ),
    };
    let (tx, rx) = if opts.stream {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let mut new_thread: Option<Thread> = None;
    let thread = match existing {
        Some(mut thread) => {
            let id = thread.id.clone();
            let id = id.as_str();
            // Messages may not join a thread whose run is active, so that is checked before
            // adding them. Without messages to add, `create_run` below is the check: its
            // lock is what decides, so a read of it here would only cost a round trip.
            if !opts.additional_messages.is_empty()
                && let Some(active) = caller.store.runs.active_run(&caller.tenant, id).await?
            {
                return Err(busy(id, &active));
            }
            for (i, m) in opts.additional_messages.iter().enumerate() {
                let path = format!("additional_messages[{i}]");
                messages::check_images(state, caller, m, &path).await?;
            }
            for m in opts.additional_messages.iter().cloned() {
                messages::apply_attachments(state, caller, &mut thread, &m).await?;
                messages::insert(&caller.store, &caller.tenant, id, m, None, None).await?;
            }
            thread
        }
        None => {
            let spec = opts.thread.unwrap_or_default();
            let (thread, _) = threads::create(state, caller, spec).await?;
            new_thread = Some(thread.clone());
            thread
        }
    };
    if let Some(t) = new_thread {
        engine::emit(&tx, Event::ThreadCreated(t));
    }

    let now = state.clock.now();
    let base_instructions = opts
        .instructions
        .or(assistant.instructions)
        .unwrap_or_default();
    let instructions = match opts.additional_instructions {
        Some(extra) if base_instructions.is_empty() => extra,
        Some(extra) => format!("{base_instructions}\n\n{extra}"),
        None => base_instructions,
    };
    let run = Run {
        id: new_id("run_"),
        object: "thread.run".into(),
        created_at: now,
        thread_id: thread.id.clone(),
        assistant_id: assistant.id.clone(),
        status: RunStatus::Queued,
        required_action: None,
        last_error: None,
        expires_at: Some(now + state.config.runs.expires_after.as_secs() as i64),
        started_at: None,
        cancelled_at: None,
        failed_at: None,
        completed_at: None,
        incomplete_details: None,
        model: opts.model.unwrap_or(assistant.model),
        instructions,
        tools: opts.tools.unwrap_or(assistant.tools),
        metadata: opts.metadata,
        usage: None,
        temperature: Some(opts.temperature.or(assistant.temperature).unwrap_or(1.0)),
        top_p: Some(opts.top_p.or(assistant.top_p).unwrap_or(1.0)),
        max_prompt_tokens: opts.max_prompt_tokens,
        max_completion_tokens: opts.max_completion_tokens,
        truncation_strategy: opts
            .truncation_strategy
            .unwrap_or_else(|| json!({"type": "auto", "last_messages": null})),
        tool_choice: opts.tool_choice.unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: opts.parallel_tool_calls.unwrap_or(true),
        response_format: opts.response_format.unwrap_or(assistant.response_format),
    };
    let mut rec = RunRecord {
        run,
        version: 1,
        // Held from creation so a proxy dying before its engine starts is noticed too.
        lease_owner: Some(state.runs.instance_id.clone()),
        lease_until: Some(state.clock.now_millis() + state.config.runs.lease.as_millis() as i64),
        state: Value::Null,
    };
    EngineState {
        include_content: opts.include_content,
        vector_store_ids: opts.tool_resources_stores,
        reasoning_effort: opts.reasoning_effort.or(assistant.reasoning_effort),
        ..EngineState::default()
    }
    .put(&mut rec)?;
    match caller.store.runs.create_run(&caller.tenant, &rec).await? {
        CreateRun::Created => {}
        CreateRun::ThreadBusy(active) => return Err(busy(&thread.id, &active)),
    }
    engine::emit(&tx, Event::Run(RunNews::Created, Box::new(rec.run.clone())));
    engine::emit(&tx, Event::run_now(rec.run.clone()));
    let r = RunRef {
        store: caller.store.clone(),
        tenant: caller.tenant.clone(),
        thread_id: thread.id.clone(),
        run_id: rec.run.id.clone(),
    };
    spawn(state, caller, r, rec.clone(), tx);
    Ok((rec, rx))
}

fn busy(thread_id: &str, run_id: &str) -> Error {
    Error::invalid(
        format!("Thread {thread_id} already has an active run {run_id}."),
        None,
    )
}

/// Cancels a queued, in-progress or waiting run. Returns the run as `cancelling`.
pub async fn cancel(
    state: &Arc<AppState>,
    caller: &Caller,
    thread_id: &str,
    run_id: &str,
) -> Result<RunRecord, Error> {
    let rec = load(state, caller, thread_id, run_id).await?;
    // A cancel of a run already cancelling answers with the run as it is.
    if rec.run.status != RunStatus::Cancelling
        && machine::next(rec.run.status, RunEvent::CancelRequested).is_err()
    {
        return Err(Error::invalid(
            format!(
                "Cannot cancel run with status '{}'.",
                rec.run.status.as_str()
            ),
            None,
        ));
    }
    let r = RunRef {
        store: caller.store.clone(),
        tenant: caller.tenant.clone(),
        thread_id: thread_id.to_owned(),
        run_id: run_id.to_owned(),
    };
    let Some((written, _)) = transition(&r, |rec| {
        // Refused: already cancelling (the answer below), or the run ended meanwhile.
        if machine::advance(&mut rec.run, RunEvent::CancelRequested).is_err() {
            return Apply::Skip;
        }
        // `required_action` belongs to `requires_action` alone (spec §5.1).
        rec.run.required_action = None;
        Apply::Write
    })
    .await?
    else {
        return Err(not_found(run_id));
    };
    if written.run.status != RunStatus::Cancelling {
        return Err(Error::invalid(
            format!(
                "Cannot cancel run with status '{}'.",
                written.run.status.as_str()
            ),
            None,
        ));
    }
    // An engine running here stops at once. With no live engine anywhere (waiting for tool
    // outputs, or its proxy is gone) the cancel completes now; an engine on another proxy
    // sees it at its next lease renewal.
    let lease_live = written
        .lease_until
        .is_some_and(|until| until > state.clock.now_millis())
        && written.lease_owner.as_deref() != Some(state.runs.instance_id.as_str());
    if !state.runs.registry.cancel(run_id) && !lease_live {
        engine::finalize_cancel(&state.runs, &r, &None).await?;
    }
    Ok(written)
}

/// Accepts the outputs of every pending function call and resumes the run.
pub async fn submit_tool_outputs(
    state: &Arc<AppState>,
    caller: &Caller,
    thread_id: &str,
    run_id: &str,
    mut f: Fields,
) -> Result<(RunRecord, Option<mpsc::UnboundedReceiver<Event>>), Error> {
    let outputs = match f.array("tool_outputs", 128)? {
        Field::Set(items) => items,
        _ => return Err(missing("tool_outputs")),
    };
    let stream = f.boolean("stream")?.into_option().unwrap_or(false);
    f.finish()?;
    let mut given: Vec<(String, String)> = Vec::new();
    for (i, o) in outputs.into_iter().enumerate() {
        let mut of = Fields::nested(o, &format!("tool_outputs[{i}]"))?;
        let id = of
            .string("tool_call_id", 128)?
            .into_option()
            .unwrap_or_default();
        let output = match of.take("output") {
            Field::Set(Value::String(s)) => s,
            Field::Set(other) => {
                return Err(invalid_type(
                    &format!("tool_outputs[{i}].output"),
                    "a string",
                    &other,
                ));
            }
            _ => String::new(),
        };
        of.finish()?;
        given.push((id, output));
    }

    let rec = load(state, caller, thread_id, run_id).await?;
    if machine::next(rec.run.status, RunEvent::OutputsSubmitted).is_err() {
        return Err(Error::invalid(
            format!(
                "Runs in status \"{}\" do not accept tool outputs.",
                rec.run.status.as_str()
            ),
            None,
        ));
    }
    let expected: Vec<String> = rec.run.required_action.as_ref().map_or(Vec::new(), |ra| {
        ra["submit_tool_outputs"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect()
    });
    let got: Vec<String> = given.iter().map(|(id, _)| id.clone()).collect();
    let mut exp_sorted = expected.clone();
    exp_sorted.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    got_sorted.dedup();
    if exp_sorted != got_sorted || got.len() != got_sorted.len() {
        let list = |v: &[String]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("'{s}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Error::invalid(
            format!(
                "Expected tool outputs for call_ids {}, got {}",
                list(&expected),
                list(&got)
            ),
            Some("tool_outputs"),
        ));
    }

    let r = RunRef {
        store: caller.store.clone(),
        tenant: caller.tenant.clone(),
        thread_id: thread_id.to_owned(),
        run_id: run_id.to_owned(),
    };
    let lease_ms = state.config.runs.lease.as_millis() as i64;
    let mut step_usage = None;
    let written = transition(&r, |rec| {
        if machine::advance(&mut rec.run, RunEvent::OutputsSubmitted).is_err() {
            return Apply::Skip;
        }
        step_usage =
            engine_state::update(rec, |st| st.tool_step_usage.take()).unwrap_or_else(|e| {
                tracing::error!(run_id, error = %e, "internal error");
                None
            });
        rec.run.required_action = None;
        rec.lease_owner = Some(state.runs.instance_id.clone());
        rec.lease_until = Some(state.clock.now_millis() + lease_ms);
        Apply::Write
    })
    .await?;
    let rec = match written {
        Some((rec, true)) => rec,
        Some((rec, false)) => {
            return Err(Error::invalid(
                format!(
                    "Runs in status \"{}\" do not accept tool outputs.",
                    rec.run.status.as_str()
                ),
                None,
            ));
        }
        None => return Err(not_found(run_id)),
    };

    // Fill the outputs into the waiting tool_calls step and complete it.
    let now = state.clock.now();
    let q = crate::store::ListQuery {
        limit: 100,
        order: crate::store::Order::Desc,
        after: None,
        before: None,
    };
    let steps = caller
        .store
        .runs
        .list_steps(&caller.tenant, thread_id, run_id, &q)
        .await?;
    let (tx, rx) = if stream {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    if let Some(mut step) = steps
        .items
        .into_iter()
        .find(|s| s.kind == "tool_calls" && s.status == StepStatus::InProgress)
    {
        if let Some(calls) = step.step_details["tool_calls"].as_array_mut() {
            for c in calls.iter_mut() {
                if let Some((_, out)) = given.iter().find(|(id, _)| c["id"] == id.as_str()) {
                    c["function"]["output"] = json!(out);
                }
            }
        }
        step.status = StepStatus::Completed;
        step.completed_at = Some(now);
        step.usage = step_usage;
        caller.store.runs.put_step(&caller.tenant, &step).await?;
        engine::emit(&tx, Event::step_now(step));
    }
    engine::emit(&tx, Event::run_now(rec.run.clone()));
    spawn(state, caller, r, rec.clone(), tx);
    Ok((rec, rx))
}

/// Modify: metadata only.
pub async fn modify(
    state: &Arc<AppState>,
    caller: &Caller,
    thread_id: &str,
    run_id: &str,
    mut f: Fields,
) -> Result<RunRecord, Error> {
    let metadata = f.metadata()?;
    f.finish()?;
    load(state, caller, thread_id, run_id).await?;
    let r = RunRef {
        store: caller.store.clone(),
        tenant: caller.tenant.clone(),
        thread_id: thread_id.to_owned(),
        run_id: run_id.to_owned(),
    };
    let out = transition(&r, |rec| {
        match &metadata {
            Field::Set(m) => rec.run.metadata = m.clone(),
            Field::Null => rec.run.metadata.clear(),
            Field::Absent => return Apply::Skip,
        }
        Apply::Write
    })
    .await?;
    out.map(|(rec, _)| rec).ok_or_else(|| not_found(run_id))
}
