//! Executes one run: claims it (a lease in the run record), then turn by turn builds the
//! prompt, streams the upstream completion, translates it into events, persists messages and
//! steps, runs file_search itself, and ends the run — or stops at `requires_action` when the
//! model calls the client's functions. Everything is persisted on each transition, so a
//! client that disconnects, or a proxy that dies, loses nothing that was acknowledged.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::engine_state::{self, EngineState};
use super::events::{Event, MessageNews};
use super::file_search::{self, Hit};
use super::prompt::{self, FileSearchOffer, Limit, PromptInput, RunItem};
use super::state::{self as machine, Illegal, RunEvent};
use super::translate::{Finish, Turn, TurnCtx, citations};
use super::{Stop, StopSignal};
use crate::app::AppState;
use crate::error::Error;
use crate::model::{Message, RunRecord, RunStatus, RunStep, StepStatus, Usage};
use crate::store::{ListQuery, Order, Store, Tenant};
use crate::tenancy::Caller;
use crate::upstream::chat::{CallError, ChatStream};

/// Where a run's events go: the SSE response of the request that (re)started the run, if
/// it asked to stream. Unbounded because a run's events are finite and the engine must never
/// wait on a slow client.
pub type Sink = mpsc::UnboundedSender<Event>;

/// Turns one run may take (each file_search round trip is a turn); a guard against a model
/// that searches forever.
const MAX_TURNS: usize = 16;
/// Thread messages considered for a prompt (the newest); truncation then fits them.
const MAX_PROMPT_MESSAGES: usize = 1000;
/// How often a streamed partial answer is saved, so a crash keeps most of it.
const PARTIAL_SAVE_EVERY: Duration = Duration::from_secs(1);
/// The longest a run waits for its thread's vector store to finish indexing (spec §7.2).
const STORE_READY_WAIT: Duration = Duration::from_secs(60);

pub fn emit(sink: &Option<Sink>, event: Event) {
    if let Some(s) = sink {
        // A closed receiver means the client left; the run goes on regardless.
        let _ = s.send(event);
    }
}

/// Identifies the run being executed.
#[derive(Clone)]
pub struct RunRef {
    /// The database the run lives in (the caller's, which may be an Astra database).
    pub store: Store,
    pub tenant: Tenant,
    pub thread_id: String,
    pub run_id: String,
}

/// What a compare-and-set transition closure decided.
pub enum Apply {
    Write,
    /// Leave the record as it is (the transition no longer applies).
    Skip,
}

/// Loads the freshest record, applies `f`, and writes it with compare-and-set, retrying when
/// another writer got there first. Returns the record as stored afterwards (None if the run
/// no longer exists).
pub async fn transition(
    r: &RunRef,
    f: impl FnMut(&mut RunRecord) -> Apply,
) -> Result<Option<(RunRecord, bool)>, Error> {
    transition_from(r, None, Commit::Durable, f).await
}

/// How a write of the run engine must reach the store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// On disk before going on: the states clients act on (queued, requires_action, ended).
    Durable,
    /// The run's in-flight progress (claim, lease, partial answers): visible at once, made
    /// durable by the next durable write (see `MessageStore::put_message_progress`). A power
    /// cut can only take the run back to an earlier in-flight state, which crash recovery
    /// handles like a proxy that died mid-run.
    Progress,
}

/// [`transition`] starting from a record this engine wrote last (`known`), which saves the read
/// in the common case: the compare-and-set still catches anyone who wrote since, and then the
/// transition starts over from a fresh read. A `Skip` decided on `known` is also re-checked on
/// a fresh read, since a stale record must not turn a transition down.
pub async fn transition_from(
    r: &RunRef,
    mut known: Option<RunRecord>,
    commit: Commit,
    mut f: impl FnMut(&mut RunRecord) -> Apply,
) -> Result<Option<(RunRecord, bool)>, Error> {
    for _ in 0..32 {
        let cached = known.is_some();
        let current = match known.take() {
            Some(rec) => rec,
            None => match r
                .store
                .runs
                .get_run(&r.tenant, &r.thread_id, &r.run_id)
                .await?
            {
                Some(rec) => rec,
                None => return Ok(None),
            },
        };
        let mut next = current.clone();
        match f(&mut next) {
            Apply::Skip if cached => continue,
            Apply::Skip => return Ok(Some((current, false))),
            Apply::Write => {
                next.version = current.version + 1;
                let runs = &r.store.runs;
                let written = match commit {
                    Commit::Durable => runs.update_run(&r.tenant, &next, current.version).await?,
                    Commit::Progress => {
                        runs.update_run_progress(&r.tenant, &next, current.version)
                            .await?
                    }
                };
                if written {
                    return Ok(Some((next, true)));
                }
            }
        }
    }
    Err(Error::internal("the run changed too often to update it"))
}

/// Ends the run on `event` (through the state machine), marks the terminal timestamps and
/// clears what only active runs carry. The callers have checked the run may end so: a refusal
/// is an internal error, logged, and the record is left as it is.
pub fn finish_run(rec: &mut RunRecord, event: RunEvent, now: i64) -> Apply {
    let usage = usage_of(rec);
    let run = &mut rec.run;
    let status = match machine::advance(run, event) {
        Ok(status) => status,
        Err(e) => return refused(e, &run.id),
    };
    run.required_action = None;
    match status {
        RunStatus::Completed => run.completed_at = Some(now),
        RunStatus::Failed => run.failed_at = Some(now),
        RunStatus::Cancelled => run.cancelled_at = Some(now),
        _ => {}
    }
    if status != RunStatus::Expired {
        run.expires_at = None;
    }
    run.usage = Some(usage);
    rec.lease_owner = None;
    rec.lease_until = None;
    Apply::Write
}

/// A transition the caller's own checks let through but the state machine refuses: a bug in
/// the proxy, not in the request. Logged; the record is left as it is.
fn refused(e: Illegal, run_id: &str) -> Apply {
    tracing::error!(run_id, error = %e, "internal error: illegal run transition refused");
    Apply::Skip
}

/// Usage accumulated over the run's upstream calls (kept in engine state until it is shown).
/// An unreadable state counts nothing, logged: the run still ends.
pub fn usage_of(rec: &RunRecord) -> Usage {
    match EngineState::of(rec) {
        Ok(st) => st.usage(),
        Err(e) => {
            tracing::error!(run_id = %rec.run.id, error = %e, "internal error");
            Usage::default()
        }
    }
}

/// Changes the engine state of `rec`; an unreadable state is an internal error, logged, and
/// the record is then left as it is (`Skip`).
fn with_state(rec: &mut RunRecord, f: impl FnOnce(&mut EngineState)) -> Apply {
    match engine_state::update(rec, f) {
        Ok(()) => Apply::Write,
        Err(e) => {
            tracing::error!(run_id = %rec.run.id, error = %e, "internal error");
            Apply::Skip
        }
    }
}

/// Ends the run's open message and steps after a failure, cancel or expiry, keeping what was
/// produced (the message becomes `incomplete`).
pub async fn close_open_items(
    r: &RunRef,
    step_status: StepStatus,
    message_reason: &str,
    last_error: Option<&Value>,
    now: i64,
    sink: &Option<Sink>,
) -> Result<(), Error> {
    let q = ListQuery {
        limit: 100,
        order: Order::Asc,
        after: None,
        before: None,
    };
    let steps = r
        .store
        .runs
        .list_steps(&r.tenant, &r.thread_id, &r.run_id, &q)
        .await?;
    for mut s in steps
        .items
        .into_iter()
        .filter(|s| s.status == StepStatus::InProgress)
    {
        if s.kind == "message_creation"
            && let Some(mid) = s.step_details["message_creation"]["message_id"].as_str()
            && let Some(mut m) = r
                .store
                .messages
                .get_message(&r.tenant, &r.thread_id, mid)
                .await?
            && m.status == "in_progress"
        {
            m.status = "incomplete".into();
            m.incomplete_at = Some(now);
            m.incomplete_details = Some(json!({"reason": message_reason}));
            r.store.messages.put_message(&r.tenant, &m).await?;
            emit(sink, Event::Message(MessageNews::Incomplete, Box::new(m)));
        }
        s.status = step_status;
        match step_status {
            StepStatus::Failed => {
                s.failed_at = Some(now);
                s.last_error = last_error.cloned();
            }
            StepStatus::Cancelled => s.cancelled_at = Some(now),
            StepStatus::Expired => s.expired_at = Some(now),
            StepStatus::InProgress | StepStatus::Completed => {}
        }
        r.store.runs.put_step(&r.tenant, &s).await?;
        emit(sink, Event::step_now(s));
    }
    Ok(())
}

/// How a turn ended.
enum TurnEnd {
    /// The model answered; the run is complete.
    Answered,
    /// The model called file_search only; search results were recorded; take another turn.
    Searched,
    /// The model called client functions: wait for tool outputs.
    NeedsOutputs(Vec<Value>),
    /// A token limit stopped the answer.
    Incomplete(&'static str),
    Failed(CallError),
    /// The engine must stop driving the run (cancel, expiry, shutdown, or it is no longer
    /// this engine's).
    Stopped(Stop),
}

/// Runs the engine for one run, until it completes, fails, is cancelled, or needs outputs.
/// `start` is the record as the caller just wrote it (queued), which saves the claim a read.
pub async fn execute(
    state: Arc<AppState>,
    caller: Caller,
    r: RunRef,
    start: Option<RunRecord>,
    sink: Option<Sink>,
) {
    let (signal, _guard) = state.run_registry.enter(&r.run_id, &state.shutdown);
    if let Err(e) = drive(&state, &caller, &r, start, &sink, &signal).await {
        tracing::error!(run_id = %r.run_id, error = %e, "run failed inside the proxy");
        let now = state.clock.now();
        let last_error = json!({"code": "server_error", "message": format!("The proxy failed while executing the run: {e}")});
        let _ = close_open_items(
            &r,
            StepStatus::Failed,
            "run_failed",
            Some(&last_error),
            now,
            &sink,
        )
        .await;
        if let Ok(Some((rec, true))) = transition(&r, |rec| {
            // A cancel asked for ends `cancelled` (the sweeper finishes it once this engine's
            // lease runs out); a run waiting for outputs, or ended, has nothing to fail.
            if let Err(e) = machine::next(rec.run.status, RunEvent::Fail) {
                tracing::warn!(run_id = %r.run_id, error = %e, "run left as it is");
                return Apply::Skip;
            }
            rec.run.last_error = Some(last_error.clone());
            finish_run(rec, RunEvent::Fail, now)
        })
        .await
        {
            emit(&sink, Event::run_now(rec.run));
        }
    }
    emit(&sink, Event::Done);
}

/// The run as this engine last wrote it, and when it last extended its lease. Transitions
/// start from `rec` (no read unless someone else wrote meanwhile), and a lease renewed less
/// than a third of its length ago needs no renewing yet.
struct Held {
    rec: RunRecord,
    renewed: tokio::time::Instant,
}

impl Held {
    fn new(rec: RunRecord) -> Held {
        Held {
            rec,
            renewed: tokio::time::Instant::now(),
        }
    }
}

async fn drive(
    state: &Arc<AppState>,
    caller: &Caller,
    r: &RunRef,
    start: Option<RunRecord>,
    sink: &Option<Sink>,
    signal: &StopSignal,
) -> Result<(), Error> {
    // Claim: queued → in_progress, with this proxy's lease.
    let lease_ms = state.config.runs.lease.as_millis() as i64;
    let now = state.clock.now();
    let claimed = transition_from(r, start, Commit::Progress, |rec| {
        // Refused: someone else has taken the run up or ended it.
        if machine::advance(&mut rec.run, RunEvent::Claim).is_err() {
            return Apply::Skip;
        }
        rec.run.started_at.get_or_insert(now);
        rec.lease_owner = Some(state.instance_id.clone());
        rec.lease_until = Some(state.clock.now_millis() + lease_ms);
        Apply::Write
    })
    .await?;
    let Some((rec, true)) = claimed else {
        if let Some((rec, _)) = claimed
            && rec.run.status == RunStatus::Cancelling
        {
            return finalize_cancel(state, r, sink).await;
        }
        return Ok(());
    };
    emit(sink, Event::run_now(rec.run.clone()));
    tracing::debug!(run_id = %r.run_id, "run claimed");
    let mut held = Held::new(rec);

    // A run that may search its thread's store first waits for that store (spec §7.2); an
    // expired store or a cancel ends the run through the same arms as a turn would.
    let mut before = await_thread_store(state, caller, r, &mut held, signal).await?;
    for _ in 0..MAX_TURNS {
        let (end, usage, closing) = match before.take() {
            Some(end) => (end, Usage::default(), Vec::new()),
            None => one_turn(state, caller, r, &mut held, sink, signal).await?,
        };
        let now = state.clock.now();
        let known = held.rec.clone();
        match end {
            TurnEnd::Searched => {
                // Record the turn's usage, renew the lease, and pick up concurrent changes (a
                // cancel) between turns, in one write.
                if let Some(stop) = renew(state, r, &mut held, Some(usage)).await? {
                    return stop_run(state, r, sink, stop).await;
                }
            }
            TurnEnd::Answered => {
                let mut end = Ending::new(RunEvent::Complete, usage);
                end.closing = closing;
                return end_run(state, r, known, sink, end).await;
            }
            TurnEnd::Incomplete(reason) => {
                let mut end = Ending::new(RunEvent::Incomplete, usage);
                end.incomplete = Some(json!({"reason": reason}));
                end.closing = closing;
                return end_run(state, r, known, sink, end).await;
            }
            TurnEnd::Failed(e) => {
                let last_error = json!({"code": e.code, "message": e.message});
                close_open_items(
                    r,
                    StepStatus::Failed,
                    "run_failed",
                    Some(&last_error),
                    now,
                    sink,
                )
                .await?;
                let mut end = Ending::new(RunEvent::Fail, usage);
                end.last_error = Some(last_error);
                return end_run(state, r, known, sink, end).await;
            }
            TurnEnd::Stopped(stop) => return stop_run(state, r, sink, stop).await,
            TurnEnd::NeedsOutputs(calls) => {
                let written = transition_from(r, Some(known), Commit::Durable, |rec| {
                    // Refused: a cancel, or someone else resolved the run (stop_for).
                    if machine::advance(&mut rec.run, RunEvent::NeedOutputs).is_err() {
                        return Apply::Skip;
                    }
                    if let Apply::Skip = with_state(rec, |st| {
                        st.add_usage(usage);
                        st.tool_step_usage = Some(usage);
                    }) {
                        return Apply::Skip;
                    }
                    rec.run.required_action = Some(json!({
                        "type": "submit_tool_outputs",
                        "submit_tool_outputs": {"tool_calls": calls},
                    }));
                    rec.run.usage = Some(usage_of(rec));
                    rec.lease_owner = None;
                    rec.lease_until = None;
                    Apply::Write
                })
                .await?;
                match written {
                    Some((rec, true)) => emit(sink, Event::run_now(rec.run)),
                    Some((rec, false)) => {
                        let stop = stop_for(state, &rec);
                        return stop_run(state, r, sink, stop).await;
                    }
                    None => {}
                }
                return Ok(());
            }
        }
    }
    let mut end = Ending::new(RunEvent::Fail, Usage::default());
    end.last_error = Some(
        json!({"code": "server_error", "message": format!("The run stopped after {MAX_TURNS} tool rounds without an answer.")}),
    );
    end_run(state, r, held.rec, sink, end).await
}

/// Waits while the thread's vector store still has files `in_progress`, at most
/// `STORE_READY_WAIT`, then lets the run search whatever is indexed by then (the spec's
/// 60-second fallback). Polls the store rather than listening for ingestion: the file may be
/// ingested by another proxy sharing the database. Returns how the run ends instead, if it
/// does: the store expired, or the run was stopped meanwhile.
async fn await_thread_store(
    state: &AppState,
    caller: &Caller,
    r: &RunRef,
    held: &mut Held,
    signal: &StopSignal,
) -> Result<Option<TurnEnd>, Error> {
    if !held
        .rec
        .run
        .tools
        .iter()
        .any(|t| t["type"] == "file_search")
    {
        return Ok(None);
    }
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match file_search::thread_store(state, caller, &r.thread_id).await? {
            file_search::ThreadStore::Ready => return Ok(None),
            file_search::ThreadStore::Expired(id) => {
                return Ok(Some(TurnEnd::Failed(CallError::server(format!(
                    "Vector store '{id}' has expired."
                )))));
            }
            file_search::ThreadStore::Indexing => {}
        }
        let Some(left) = STORE_READY_WAIT.checked_sub(started.elapsed()) else {
            tracing::info!(run_id = %r.run_id, waited_s = STORE_READY_WAIT.as_secs(), "thread vector store still indexing; searching what is ready");
            return Ok(None);
        };
        if let Some(stop) = wait_renewing(state, r, held, signal, pause.min(left)).await? {
            return Ok(Some(TurnEnd::Stopped(stop)));
        }
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Renews this proxy's lease (adding a finished turn's usage, if any). None: the run is
/// still this engine's to drive; otherwise why it must stop: a cancel arrived, the run
/// reached its `expires_at` (a lease is never extended past it, so a run that cannot finish
/// cannot hold its thread for ever), or it is no longer this engine's.
async fn renew(
    state: &AppState,
    r: &RunRef,
    held: &mut Held,
    usage: Option<Usage>,
) -> Result<Option<Stop>, Error> {
    let lease_ms = state.config.runs.lease.as_millis() as i64;
    let owner = state.instance_id.clone();
    let now = state.clock.now();
    let out = transition_from(r, Some(held.rec.clone()), Commit::Progress, |rec| {
        if rec.run.status != RunStatus::InProgress
            || rec.lease_owner.as_deref() != Some(owner.as_str())
            || rec.run.expires_at.is_some_and(|at| at <= now)
        {
            return Apply::Skip;
        }
        if let Some(u) = usage
            && let Apply::Skip = with_state(rec, |st| st.add_usage(u))
        {
            return Apply::Skip;
        }
        rec.lease_until = Some(state.clock.now_millis() + lease_ms);
        Apply::Write
    })
    .await?;
    Ok(match out {
        Some((rec, true)) => {
            held.rec = rec;
            held.renewed = tokio::time::Instant::now();
            None
        }
        Some((rec, false)) => Some(stop_for(state, &rec)),
        None => Some(Stop::Lost),
    })
}

/// Why the engine must stop, judged from a record it may no longer write to.
fn stop_for(state: &AppState, rec: &RunRecord) -> Stop {
    let ours = rec.lease_owner.as_deref() == Some(state.instance_id.as_str());
    match rec.run.status {
        RunStatus::Cancelling => Stop::Cancel,
        RunStatus::InProgress
            if ours && rec.run.expires_at.is_some_and(|at| at <= state.clock.now()) =>
        {
            Stop::Expire
        }
        _ => Stop::Lost,
    }
}

/// Renews the lease if a third of it has gone since the last renewal; otherwise as [`renew`].
async fn renew_if_due(
    state: &AppState,
    r: &RunRef,
    held: &mut Held,
) -> Result<Option<Stop>, Error> {
    if held.renewed.elapsed() < state.config.runs.lease / 3 {
        return Ok(None);
    }
    renew(state, r, held, None).await
}

/// Sleeps for `wait` (a retry's back-off, a store's indexing), renewing the lease as it goes;
/// returns early if the run must stop.
async fn wait_renewing(
    state: &AppState,
    r: &RunRef,
    held: &mut Held,
    signal: &StopSignal,
    wait: Duration,
) -> Result<Option<Stop>, Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(stop) = renew_if_due(state, r, held).await? {
            return Ok(Some(stop));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        tokio::select! {
            () = tokio::time::sleep(left.min(state.config.runs.lease / 3)) => {}
            () = signal.stopped() => return Ok(signal.reason()),
        }
    }
}

/// Whether a failed model call is tried again, after a wait: only a transient failure (429,
/// 5xx, an unreachable, broken or silent upstream), only before the turn has produced any
/// output (a retry cannot take back what clients were sent), at most `runs.model_attempts`
/// times, never longer than the upstream's `retry-after` or `runs.model_retry_max_wait`
/// allow, and never past the run's `expires_at`.
enum Retry {
    Again,
    Stop(Stop),
    GiveUp(CallError),
}

async fn before_retry(
    state: &AppState,
    r: &RunRef,
    held: &mut Held,
    signal: &StopSignal,
    e: CallError,
    attempt: u32,
) -> Result<Retry, Error> {
    let cfg = &state.config.runs;
    let give_up = |mut e: CallError| {
        if attempt > 1 {
            e.message = format!("{} (gave up after {attempt} attempts)", e.message);
        }
        Ok(Retry::GiveUp(e))
    };
    if !e.transient || attempt >= cfg.model_attempts {
        return give_up(e);
    }
    let wait = match e.retry_after {
        // Waiting less than the upstream asked would only be refused again.
        Some(hint) if hint > cfg.model_retry_max_wait => return give_up(e),
        Some(hint) => hint,
        None => cfg
            .model_retry_base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(cfg.model_retry_max_wait),
    };
    let expires_at = held.rec.run.expires_at;
    if expires_at.is_some_and(|at| state.clock.now_millis() + wait.as_millis() as i64 >= at * 1000)
    {
        return give_up(e);
    }
    tracing::info!(run_id = %r.run_id, attempt, wait_ms = wait.as_millis() as u64, error = %e, "model call failed before any output; retrying");
    Ok(match wait_renewing(state, r, held, signal, wait).await? {
        Some(stop) => Retry::Stop(stop),
        None => Retry::Again,
    })
}

/// How a run ends: the event that ends it, what the last turn used, why, and the completion
/// events of the final answer (message and step), written beside the run's end.
struct Ending {
    event: RunEvent,
    usage: Usage,
    last_error: Option<Value>,
    incomplete: Option<Value>,
    closing: Vec<Event>,
}

impl Ending {
    fn new(event: RunEvent, usage: Usage) -> Ending {
        Ending {
            event,
            usage,
            last_error: None,
            incomplete: None,
            closing: Vec::new(),
        }
    }
}

/// Ends the run with a terminal status (unless a cancel won the race), adding the last turn's
/// usage in the same write.
async fn end_run(
    state: &AppState,
    r: &RunRef,
    known: RunRecord,
    sink: &Option<Sink>,
    mut end: Ending,
) -> Result<(), Error> {
    let now = state.clock.now();
    let mut cancelled = false;
    let closing = std::mem::take(&mut end.closing);
    // The answer's message and step, and the run's end, go out together (one commit on
    // SQLite). Should a cancel win the race, the answer was still given in full: the message
    // stays completed and the run becomes cancelled.
    let ending = transition_from(r, Some(known), Commit::Durable, |rec| {
        cancelled = false;
        match rec.run.status {
            RunStatus::InProgress => {}
            RunStatus::Cancelling => {
                cancelled = true;
                return Apply::Skip;
            }
            _ => return Apply::Skip,
        }
        if let Apply::Skip = with_state(rec, |st| st.add_usage(end.usage)) {
            return Apply::Skip;
        }
        rec.run.last_error = end.last_error.clone();
        rec.run.incomplete_details = end.incomplete.clone();
        finish_run(rec, end.event, now)
    });
    let (persisted, written) = tokio::join!(persist(r, &closing), ending);
    persisted?;
    let written = written?;
    for ev in closing {
        emit(sink, ev);
    }
    if cancelled {
        return finalize_cancel(state, r, sink).await;
    }
    if let Some((rec, true)) = written {
        emit(sink, Event::run_now(rec.run));
    }
    Ok(())
}

/// How a run that will not be finished ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfinished {
    Cancelled,
    Expired,
    /// Failed by the proxy (shut down, or its executor is gone).
    Failed,
}

impl Unfinished {
    pub fn event(self) -> RunEvent {
        match self {
            Unfinished::Cancelled => RunEvent::Cancelled,
            Unfinished::Expired => RunEvent::Expire,
            Unfinished::Failed => RunEvent::Fail,
        }
    }

    /// What the run's open steps become, and the `incomplete_details.reason` of its open
    /// message.
    pub fn labels(self) -> (StepStatus, &'static str) {
        match self {
            Unfinished::Cancelled => (StepStatus::Cancelled, "run_cancelled"),
            Unfinished::Expired => (StepStatus::Expired, "run_expired"),
            Unfinished::Failed => (StepStatus::Failed, "run_failed"),
        }
    }
}

/// Ends a run that will not be finished (cancelled, expired, or failed by the proxy): closes
/// its open message (`incomplete`) and steps, then ends the run `how` if it is still in one
/// of `from` (the statuses the caller may end it from: whoever else holds it ends it itself).
pub async fn end_unfinished(
    state: &AppState,
    r: &RunRef,
    sink: &Option<Sink>,
    from: &[RunStatus],
    how: Unfinished,
    last_error: Option<Value>,
) -> Result<(), Error> {
    let now = state.clock.now();
    let (step_status, reason) = how.labels();
    close_open_items(r, step_status, reason, last_error.as_ref(), now, sink).await?;
    let written = transition(r, |rec| {
        if !from.contains(&rec.run.status) {
            return Apply::Skip;
        }
        if last_error.is_some() {
            rec.run.last_error = last_error.clone();
        }
        finish_run(rec, how.event(), now)
    })
    .await?;
    if let Some((rec, true)) = written {
        emit(sink, Event::run_now(rec.run));
    }
    Ok(())
}

/// cancelling → cancelled, closing the run's open message and steps.
pub async fn finalize_cancel(
    state: &AppState,
    r: &RunRef,
    sink: &Option<Sink>,
) -> Result<(), Error> {
    let from = [
        RunStatus::Cancelling,
        RunStatus::InProgress,
        RunStatus::Queued,
    ];
    end_unfinished(state, r, sink, &from, Unfinished::Cancelled, None).await
}

/// Ends a run the engine was told to stop. A run that is no longer this engine's is left to
/// whoever has it.
async fn stop_run(
    state: &AppState,
    r: &RunRef,
    sink: &Option<Sink>,
    stop: Stop,
) -> Result<(), Error> {
    let active = [RunStatus::InProgress, RunStatus::Queued];
    match stop {
        Stop::Cancel => finalize_cancel(state, r, sink).await,
        Stop::Expire => {
            tracing::info!(run_id = %r.run_id, "run reached its expires_at while executing");
            end_unfinished(state, r, sink, &active, Unfinished::Expired, None).await
        }
        Stop::Shutdown => {
            tracing::warn!(run_id = %r.run_id, "shutdown grace period over; failing the run");
            let last_error = json!({
                "code": "server_error",
                "message": "The proxy shut down before the run finished.",
            });
            end_unfinished(
                state,
                r,
                sink,
                &active,
                Unfinished::Failed,
                Some(last_error),
            )
            .await
        }
        Stop::Lost => {
            tracing::info!(run_id = %r.run_id, "run resolved elsewhere; this engine stops");
            Ok(())
        }
    }
}

/// The run's file_search offer and the stores it searches (assistant's and thread's).
async fn file_search_setup(
    r: &RunRef,
    rec: &RunRecord,
) -> Result<Option<(FileSearchOffer, Vec<String>, Value)>, Error> {
    let Some(tool) = rec.run.tools.iter().find(|t| t["type"] == "file_search") else {
        return Ok(None);
    };
    let mut stores: Vec<String> = Vec::new();
    if let Some(a) = r
        .store
        .assistants
        .get_assistant(&r.tenant, &rec.run.assistant_id)
        .await?
    {
        stores.extend(a.tool_resources.vector_store_ids().iter().cloned());
    }
    if let Some(t) = r.store.threads.get_thread(&r.tenant, &r.thread_id).await? {
        stores.extend(t.tool_resources.vector_store_ids().iter().cloned());
    }
    stores.extend(EngineState::of(rec)?.vector_store_ids);
    stores.sort();
    stores.dedup();
    if stores.is_empty() {
        return Ok(None);
    }
    let clashes = rec
        .run
        .tools
        .iter()
        .any(|t| t["type"] == "function" && t["function"]["name"] == "file_search");
    let name = if clashes {
        "proxy_file_search"
    } else {
        "file_search"
    };
    Ok(Some((
        FileSearchOffer { name: name.into() },
        stores,
        tool.get("file_search").cloned().unwrap_or(Value::Null),
    )))
}

/// The thread's messages for the prompt, without those this run created: its opening
/// message, then (oldest first) at most the newest `MAX_PROMPT_MESSAGES`, which is as far as
/// a prompt looks back (the memory one run holds however long its thread). Truncation then
/// fits them (`prompt::build`: the opening is kept and the middle dropped first).
async fn prompt_messages(r: &RunRef) -> Result<Vec<Message>, Error> {
    let not_this_run = |m: &Message| m.run_id.as_deref() != Some(r.run_id.as_str());
    let mut out = Vec::new();
    let mut q = ListQuery {
        limit: 100,
        order: Order::Desc,
        after: None,
        before: None,
    };
    let reached_start = loop {
        let page = r
            .store
            .messages
            .list_messages(&r.tenant, &r.thread_id, None, &q)
            .await?;
        let last = page.items.last().map(|m| m.id.clone());
        out.extend(page.items.into_iter().filter(not_this_run));
        if !page.has_more {
            break true;
        }
        if out.len() >= MAX_PROMPT_MESSAGES {
            break false;
        }
        q.after = last;
    };
    out.truncate(MAX_PROMPT_MESSAGES);
    out.reverse();
    if !reached_start || out.len() == MAX_PROMPT_MESSAGES {
        // The window does not reach back to the start: read the opening on its own.
        let first = ListQuery {
            limit: 2,
            order: Order::Asc,
            after: None,
            before: None,
        };
        let page = r
            .store
            .messages
            .list_messages(&r.tenant, &r.thread_id, None, &first)
            .await?;
        if let Some(opening) = page.items.into_iter().find(not_this_run)
            && out.first().is_none_or(|m| m.id != opening.id)
        {
            out.insert(0, opening);
        }
    }
    Ok(out)
}

/// This run's steps in order, and the prompt history they imply.
async fn run_history(r: &RunRef, rec: &RunRecord) -> Result<(Vec<RunStep>, Vec<RunItem>), Error> {
    let q = ListQuery {
        limit: 100,
        order: Order::Asc,
        after: None,
        before: None,
    };
    let steps = r
        .store
        .runs
        .list_steps(&r.tenant, &r.thread_id, &r.run_id, &q)
        .await?
        .items;
    let engine = EngineState::of(rec)?;
    let mut items = Vec::new();
    let mut fs_turn = 0usize;
    for s in &steps {
        if s.kind == "message_creation" {
            if let Some(mid) = s.step_details["message_creation"]["message_id"].as_str()
                && let Some(m) = r
                    .store
                    .messages
                    .get_message(&r.tenant, &r.thread_id, mid)
                    .await?
            {
                let text = m.content.texts(false);
                if !text.is_empty() {
                    items.push(RunItem::Assistant(text.join("\n")));
                }
            }
            continue;
        }
        let mut calls = Vec::new();
        let mut outputs = Vec::new();
        for c in s.step_details["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = c["id"].as_str().unwrap_or_default().to_owned();
            if c["type"] == "function" {
                calls.push((
                    id.clone(),
                    c["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    c["function"]["arguments"]
                        .as_str()
                        .unwrap_or("{}")
                        .to_owned(),
                ));
                outputs.push((
                    id,
                    c["function"]["output"].as_str().unwrap_or("").to_owned(),
                ));
            } else if c["type"] == "file_search" {
                let name = engine
                    .file_search_name
                    .clone()
                    .unwrap_or_else(|| "file_search".to_owned());
                let args = engine
                    .file_search_args
                    .get(&id)
                    .and_then(Value::as_str)
                    .unwrap_or("{}")
                    .to_owned();
                let hits: Vec<Hit> = c["file_search"]["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(Hit::from_result)
                    .collect();
                calls.push((id.clone(), name, args));
                outputs.push((id, file_search::render_for_model(fs_turn, &hits)));
                fs_turn += 1;
            }
        }
        if !calls.is_empty() {
            items.push(RunItem::ToolCalls { calls, outputs });
        }
    }
    Ok((steps, items))
}

/// Loads `image_file` parts of the prompt's messages as data URLs (vision), best effort.
async fn images_of(r: &RunRef, messages: &[Message]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for m in messages {
        for p in &m.content.parts() {
            if let Some(id) = p["image_file"]["file_id"].as_str() {
                if out.contains_key(id) {
                    continue;
                }
                if let Some(url) = file_search::data_url(&r.store, &r.tenant, id).await {
                    out.insert(id.to_owned(), url);
                }
            }
        }
    }
    out
}

/// One model turn, what its upstream call used (not yet recorded: the caller adds it in the
/// write that follows the turn), and the events of the answer that ends the run, not yet
/// persisted nor sent (end_run does both). None means the run was cancelled while the turn
/// was running.
async fn one_turn(
    state: &Arc<AppState>,
    caller: &Caller,
    r: &RunRef,
    held: &mut Held,
    sink: &Option<Sink>,
    signal: &StopSignal,
) -> Result<(TurnEnd, Usage, Vec<Event>), Error> {
    let rec = &held.rec.clone();
    let fs = file_search_setup(r, rec).await?;
    let messages = prompt_messages(r).await?;
    let (steps, items) = run_history(r, rec).await?;
    let images = images_of(r, &messages).await;
    let engine = EngineState::of(rec)?;
    let usage = engine.usage();
    let built = {
        let lookup = |id: &str| images.get(id).cloned();
        prompt::build(&PromptInput {
            run: &rec.run,
            thread_messages: &messages,
            run_items: &items,
            file_search: fs.as_ref().map(|(o, _, _)| o),
            default_context: state.config.runs.default_context_tokens,
            prompt_tokens_used: usage.prompt_tokens,
            completion_tokens_used: usage.completion_tokens,
            images: &lookup,
            reasoning_effort: engine.reasoning_effort.as_deref(),
        })
    };
    let nothing = |end| Ok((end, Usage::default(), Vec::new()));
    let p = match built {
        Ok(p) => p,
        Err(Limit::MaxPromptTokens) => return nothing(TurnEnd::Incomplete("max_prompt_tokens")),
        Err(Limit::MaxCompletionTokens) => {
            return nothing(TurnEnd::Incomplete("max_completion_tokens"));
        }
    };

    // Loading and tokenizing a long thread takes time: renew before the call if a good part
    // of the lease has gone (a just-claimed run goes straight on).
    if let Some(stop) = renew_if_due(state, r, held).await? {
        return nothing(TurnEnd::Stopped(stop));
    }
    tracing::debug!(run_id = %r.run_id, model = %rec.run.model, dropped = p.dropped_messages, "calling the model");
    let ctx = TurnCtx {
        thread_id: r.thread_id.clone(),
        run_id: r.run_id.clone(),
        assistant_id: rec.run.assistant_id.clone(),
        now: state.clock.now(),
        file_search_name: fs.as_ref().map(|(o, _, _)| o.name.clone()),
    };
    // A stop while the turn streams keeps what it produced so far, unless the run is no
    // longer this engine's to write.
    let stopped = |stop: Stop, turn: Turn| async move {
        if stop != Stop::Lost {
            save_partial(r, &turn).await?;
        }
        nothing(TurnEnd::Stopped(stop))
    };
    let mut attempt = 1;
    let (turn, failure) = 'call: loop {
        let opened = tokio::select! {
            s = ChatStream::open(&state.upstream, &caller.upstream_headers, &p.body) => s,
            () = signal.stopped() => {
                return nothing(TurnEnd::Stopped(signal.reason().unwrap_or(Stop::Cancel)));
            }
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => match before_retry(state, r, held, signal, e, attempt).await? {
                Retry::Again => {
                    attempt += 1;
                    continue 'call;
                }
                Retry::Stop(stop) => return nothing(TurnEnd::Stopped(stop)),
                Retry::GiveUp(e) => return nothing(TurnEnd::Failed(e)),
            },
        };
        let mut turn = Turn::new(ctx.clone());
        // Whether clients have been sent anything of this turn: from then on a failure is
        // final (the partial answer is kept, `incomplete`), never retried.
        let mut produced = false;
        // The first renewal is a third of a lease away. (Not `interval` plus awaiting its
        // immediate first tick: a timer only fires on the time driver's next millisecond, so
        // that "immediate" tick cost every turn up to 1 ms.)
        let every = state.config.runs.lease / 3;
        let mut renew_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut last_save = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                n = stream.next() => n,
                () = signal.stopped() => {
                    return stopped(signal.reason().unwrap_or(Stop::Cancel), turn).await;
                }
                _ = renew_tick.tick() => {
                    match renew(state, r, held, None).await? {
                        None => continue,
                        Some(stop) => return stopped(stop, turn).await,
                    }
                }
            };
            match next {
                Ok(Some(chunk)) => {
                    let events = turn.push(&chunk);
                    produced |= !events.is_empty();
                    persist(r, &events).await?;
                    for ev in events {
                        emit(sink, ev);
                    }
                    if last_save.elapsed() >= PARTIAL_SAVE_EVERY {
                        save_partial(r, &turn).await?;
                        last_save = tokio::time::Instant::now();
                    }
                }
                Ok(None) => break 'call (turn, None),
                Err(e) if produced => break 'call (turn, Some(e)),
                Err(e) => match before_retry(state, r, held, signal, e, attempt).await? {
                    Retry::Again => {
                        attempt += 1;
                        continue 'call;
                    }
                    Retry::Stop(stop) => return nothing(TurnEnd::Stopped(stop)),
                    Retry::GiveUp(e) => break 'call (turn, Some(e)),
                },
            }
        }
    };
    let mut turn = turn;

    tracing::debug!(run_id = %r.run_id, failed = failure.is_some(), "model turn ended");
    let turn_usage = turn.usage().unwrap_or_else(|| {
        let completion = prompt::count_tokens(&turn.text())
            + turn
                .tool_calls()
                .iter()
                .map(|c| prompt::count_tokens(&c.arguments))
                .sum::<u64>();
        Usage {
            prompt_tokens: p.estimated_tokens,
            completion_tokens: completion,
            total_tokens: p.estimated_tokens + completion,
        }
    });
    if let Some(e) = failure {
        // Keep the partial answer; close_open_items marks it incomplete. The usage still
        // counts: the caller records it with the failure.
        save_partial(r, &turn).await?;
        return Ok((TurnEnd::Failed(e), turn_usage, Vec::new()));
    }

    let now = state.clock.now();
    let calls = turn.tool_calls();
    let has_tool_step = turn.tool_step().is_some();
    let mut closing = Vec::new();
    if turn.message().is_some() {
        let anns = citation_annotations(&steps, rec, &turn.text());
        // A cut answer is kept `incomplete`, saying why: the token limit, or the upstream's
        // content filter.
        let incomplete = match turn.finish() {
            Some(Finish::Length) => Some("max_tokens"),
            Some(Finish::ContentFilter) => Some("content_filter"),
            _ => None,
        };
        let message_usage = (!has_tool_step).then_some(turn_usage);
        closing = turn.complete_message(anns, incomplete, now, message_usage);
    }
    if calls.is_empty() {
        // The answer ends the run: its message and step are written together with the run's
        // end (end_run), one commit instead of two.
        let end = if turn.finish() == Some(&Finish::Length) {
            TurnEnd::Incomplete("max_completion_tokens")
        } else {
            TurnEnd::Answered
        };
        return Ok((end, turn_usage, closing));
    }
    persist(r, &closing).await?;
    for ev in closing {
        emit(sink, ev);
    }

    // Tool calls: run file_search now; client functions wait for outputs.
    let (offer_stores, ranking) = match &fs {
        Some((_, stores, opts)) => (stores.clone(), opts.clone()),
        None => (Vec::new(), Value::Null),
    };
    let mut results: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    let mut args_state = serde_json::Map::new();
    for c in calls.iter().filter(|c| c.file_search) {
        let query = file_search::query_of(&c.arguments, &messages);
        let hits = tokio::select! {
            hits = file_search::search(state, caller, &offer_stores, &query, &ranking) => hits,
            () = signal.stopped() => {
                let stop = signal.reason().unwrap_or(Stop::Cancel);
                return Ok((TurnEnd::Stopped(stop), turn_usage, Vec::new()));
            }
        };
        let hits = match hits {
            Ok(h) => h,
            Err(e) => {
                let e = CallError::server(format!("file_search failed: {e}"));
                return Ok((TurnEnd::Failed(e), turn_usage, Vec::new()));
            }
        };
        results.insert(c.id.clone(), file_search::step_details(&ranking, &hits));
        args_state.insert(c.id.clone(), json!(c.arguments));
    }
    if !args_state.is_empty() {
        let name = fs
            .as_ref()
            .map(|(o, _, _)| o.name.clone())
            .unwrap_or_default();
        let written = transition_from(r, Some(held.rec.clone()), Commit::Progress, |rec| {
            with_state(rec, |st| {
                st.file_search_name = Some(name.clone());
                st.file_search_args.extend(args_state.clone());
            })
        })
        .await?;
        if let Some((rec, true)) = written {
            held.rec = rec;
        }
    }
    let Some(mut step) =
        turn.tool_step_with_calls(&|c| results.get(&c.id).cloned().unwrap_or(json!({})))
    else {
        return Ok((TurnEnd::Answered, turn_usage, Vec::new()));
    };
    let functions: Vec<Value> = calls
        .iter()
        .filter(|c| !c.file_search)
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    if functions.is_empty() {
        step.status = StepStatus::Completed;
        step.completed_at = Some(now);
        step.usage = Some(turn_usage);
        r.store.runs.put_step(&r.tenant, &step).await?;
        emit(sink, Event::step_now(step));
        Ok((TurnEnd::Searched, turn_usage, Vec::new()))
    } else {
        // The step waits for the client's outputs, `in_progress`: its usage is shown once it
        // completes (OpenAI's steps carry none before), so the run keeps it until then.
        r.store.runs.put_step(&r.tenant, &step).await?;
        Ok((TurnEnd::NeedsOutputs(functions), turn_usage, Vec::new()))
    }
}

/// Persists the objects that a batch of creation/completion events carry (a step and its
/// message, typically), all at once: on SQLite they share one commit, on Cassandra the writes
/// overlap instead of queueing behind each other. The events are only sent afterwards, so a
/// client never hears of an object it cannot read back.
async fn persist(r: &RunRef, events: &[Event]) -> Result<(), Error> {
    // Concurrent writes of one object could land in either order, so only its last state in
    // the batch is written.
    let last_of = |id: &str| {
        events.iter().rposition(|ev| match ev {
            Event::Message(_, m) => m.id == id,
            Event::Step(_, s) => s.id == id,
            _ => false,
        })
    };
    // An object still in progress is the run's in-flight progress; once it has ended, clients
    // act on it, so it is written durably.
    let (messages, steps) = (&r.store.messages, &r.store.runs);
    let writes = events.iter().enumerate().filter_map(|(i, ev)| match ev {
        Event::Message(_, m) if last_of(&m.id) == Some(i) => Some(if m.status == "in_progress" {
            messages.put_message_progress(&r.tenant, m)
        } else {
            messages.put_message(&r.tenant, m)
        }),
        Event::Step(_, s) if last_of(&s.id) == Some(i) => {
            Some(if s.status == StepStatus::InProgress {
                steps.put_step_progress(&r.tenant, s)
            } else {
                steps.put_step(&r.tenant, s)
            })
        }
        _ => None,
    });
    for written in futures_util::future::join_all(writes).await {
        written?;
    }
    Ok(())
}

/// Saves the partial answer of an in-progress message.
async fn save_partial(r: &RunRef, turn: &Turn) -> Result<(), Error> {
    if let Some(m) = turn.message() {
        let mut m = m.clone();
        m.content = turn.content().into();
        r.store.messages.put_message_progress(&r.tenant, &m).await?;
    }
    Ok(())
}

/// Citations in the final answer, resolved against this run's file_search results
/// (marker `【t:i†…】` = result i of the run's t-th search).
fn citation_annotations(steps: &[RunStep], rec: &RunRecord, text: &str) -> Vec<Value> {
    let _ = rec;
    let searches: Vec<&Value> = steps
        .iter()
        .flat_map(|s| {
            s.step_details["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter(|c| c["type"] == "file_search")
        .collect();
    citations(text, &|turn, idx| {
        searches
            .get(turn)
            .and_then(|c| c["file_search"]["results"].get(idx))
            .and_then(|res| res["file_id"].as_str().map(str::to_owned))
    })
}
