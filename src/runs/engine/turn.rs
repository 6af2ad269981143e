//! One model turn: builds the prompt, calls the model (retrying failures before any output),
//! streams and translates the answer, persists what it produced, and runs file_search calls.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::history::{
    Resources, code_setup, file_search_setup, images_of, prompt_messages, run_history,
};
use super::lease::{Held, renew, renew_if_due};
use super::retry::{Retry, before_retry};
use super::tools::tool_calls;
use super::{RunRef, Sink, TurnEnd, emit};
use crate::error::Error;
use crate::model::{Message, RunRecord, RunStep, StepStatus, Usage};
use crate::runs::Runs;
use crate::runs::code_interpreter::{CodeOffer, TOOL_NAME as CODE_TOOL, file_path_annotations};
use crate::runs::engine_state::EngineState;
use crate::runs::events::Event;
use crate::runs::prompt::{self, FileSearchOffer, Limit, Prompt, PromptInput};
use crate::runs::translate::{Finish, ToolCall, Turn, TurnCtx, citations};
use crate::runs::{Stop, StopSignal};
use crate::tenancy::Caller;
use crate::upstream::chat::{CallError, ChatStream};

/// How often a streamed partial answer is saved, so a crash keeps most of it.
const PARTIAL_SAVE_EVERY: Duration = Duration::from_secs(1);

/// What a turn works with besides the run record it holds.
pub(super) struct Env<'a> {
    pub(super) state: &'a Arc<Runs>,
    pub(super) caller: &'a Caller,
    pub(super) r: &'a RunRef,
    pub(super) sink: &'a Option<Sink>,
    pub(super) signal: &'a StopSignal,
}

/// How a turn ended, what its upstream call used, and the closing events of its answer.
type TurnOut = (TurnEnd, Usage, Vec<Event>);

/// A turn that ended before the model produced anything to count.
fn nothing(end: TurnEnd) -> Result<TurnOut, Error> {
    Ok((end, Usage::default(), Vec::new()))
}

/// The run's file_search offer, the stores it searches, and their ranking options.
pub(super) type Offer = (FileSearchOffer, Vec<String>, Value);

/// What a turn's prompt was built from, and the prompt.
pub(super) struct Prepared {
    pub(super) fs: Option<Offer>,
    pub(super) code: Option<CodeOffer>,
    /// Figures of this run's code not yet shown in a message.
    pub(super) figures: Vec<String>,
    pub(super) messages: Vec<Message>,
    pub(super) steps: Vec<RunStep>,
    pub(super) prompt: Prompt,
}

/// One model turn, what its upstream call used (not yet recorded: the caller adds it in the
/// write that follows the turn), and the events of the answer that ends the run, not yet
/// persisted nor sent (end_run does both). None means the run was cancelled while the turn
/// was running.
pub(super) async fn one_turn(
    state: &Arc<Runs>,
    caller: &Caller,
    r: &RunRef,
    held: &mut Held,
    sink: &Option<Sink>,
    signal: &StopSignal,
) -> Result<TurnOut, Error> {
    let env = Env {
        state,
        caller,
        r,
        sink,
        signal,
    };
    let rec = held.rec.clone();
    let prep = match prepare(state, r, &rec).await? {
        Ok(prep) => prep,
        Err(limit) => return nothing(TurnEnd::Incomplete(limit_reason(limit))),
    };
    // Loading and tokenizing a long thread takes time: renew before the call if a good part
    // of the lease has gone (a just-claimed run goes straight on).
    if let Some(stop) = renew_if_due(state, r, held).await? {
        return nothing(TurnEnd::Stopped(stop));
    }
    tracing::debug!(run_id = %r.run_id, model = %rec.run.model, dropped = prep.prompt.dropped_messages, "calling the model");
    let ctx = TurnCtx {
        thread_id: r.thread_id.clone(),
        run_id: r.run_id.clone(),
        assistant_id: rec.run.assistant_id.clone(),
        now: state.clock.now(),
        file_search_name: prep.fs.as_ref().map(|(o, _, _)| o.name.clone()),
        code_interpreter_name: prep.code.as_ref().map(|_| CODE_TOOL.to_owned()),
        images: prep.figures.clone(),
    };
    let (mut turn, failure) = match call_model(&env, held, &prep.prompt.body, ctx).await? {
        Called::Done(turn, failure) => (*turn, failure),
        Called::Ended(end) => return nothing(end),
    };
    tracing::debug!(run_id = %r.run_id, failed = failure.is_some(), "model turn ended");
    let usage = turn
        .usage()
        .unwrap_or_else(|| estimate_usage(prep.prompt.estimated_tokens, &turn));
    if let Some(e) = failure {
        // Keep the partial answer; close_open_items marks it incomplete. The usage still
        // counts: the caller records it with the failure.
        save_partial(r, &turn).await?;
        return Ok((TurnEnd::Failed(e), usage, Vec::new()));
    }
    let now = state.clock.now();
    let calls = turn.tool_calls();
    let closing = close_answer(&mut turn, &prep.steps, &rec, usage, now);
    if calls.is_empty() {
        // The answer ends the run: its message and step are written together with the run's
        // end (end_run), one commit instead of two.
        return Ok((answer_end(turn.finish()), usage, closing));
    }
    persist(r, &closing).await?;
    for ev in closing {
        emit(sink, ev);
    }
    let end = tool_calls(&env, held, &prep, &turn, &calls, usage, now).await?;
    Ok((end, usage, Vec::new()))
}

/// Loads what the prompt is built from and builds it; a token limit the run has reached
/// instead.
async fn prepare(
    state: &Runs,
    r: &RunRef,
    rec: &RunRecord,
) -> Result<Result<Prepared, Limit>, Error> {
    let res = Resources::load(r, rec).await?;
    let fs = file_search_setup(rec, &res)?;
    let code = code_setup(r, rec, &res, state.interpreter.data_dir_hint()).await?;
    let messages = prompt_messages(r).await?;
    let (steps, items, figures) = run_history(r, rec).await?;
    let images = images_of(r, &messages).await;
    let engine = EngineState::of(rec)?;
    let usage = engine.usage();
    let lookup = |id: &str| images.get(id).cloned();
    let built = prompt::build(&PromptInput {
        run: &rec.run,
        thread_messages: &messages,
        run_items: &items,
        file_search: fs.as_ref().map(|(o, _, _)| o),
        code_interpreter: code.as_ref(),
        default_context: state.config.default_context_tokens,
        prompt_tokens_used: usage.prompt_tokens,
        completion_tokens_used: usage.completion_tokens,
        images: &lookup,
        reasoning_effort: engine.reasoning_effort.as_deref(),
    });
    Ok(built.map(|prompt| Prepared {
        fs,
        code,
        figures,
        messages,
        steps,
        prompt,
    }))
}

/// The run's `incomplete_details.reason` when a token limit keeps it from another turn.
fn limit_reason(limit: Limit) -> &'static str {
    match limit {
        Limit::MaxPromptTokens => "max_prompt_tokens",
        Limit::MaxCompletionTokens => "max_completion_tokens",
    }
}

/// What the model call came to.
enum Called {
    /// The turn as streamed, and the failure that cut it, if one did (after output, or
    /// after the last attempt).
    Done(Box<Turn>, Option<CallError>),
    /// The turn ends without an answer to keep (stopped, or no attempt got through).
    Ended(TurnEnd),
}

/// Calls the model, trying again (see [`before_retry`]) while a failure comes before any
/// output.
async fn call_model(
    env: &Env<'_>,
    held: &mut Held,
    body: &Value,
    ctx: TurnCtx,
) -> Result<Called, Error> {
    let mut attempt = 1;
    loop {
        let opened = tokio::select! {
            s = ChatStream::open(&env.state.upstream, &env.caller.upstream_headers, body) => s,
            () = env.signal.stopped() => {
                let stop = env.signal.reason().unwrap_or(Stop::Cancel);
                return Ok(Called::Ended(TurnEnd::Stopped(stop)));
            }
        };
        let (partial, e) = match opened {
            Ok(stream) => match stream_answer(env, held, stream, Turn::new(ctx.clone())).await? {
                Streamed::Finished(turn) => return Ok(Called::Done(turn, None)),
                Streamed::Stopped(stop) => return Ok(Called::Ended(TurnEnd::Stopped(stop))),
                // Clients have been sent part of this turn: the failure is final (the partial
                // answer is kept, `incomplete`), never retried.
                Streamed::Failed(turn, e, true) => return Ok(Called::Done(turn, Some(e))),
                Streamed::Failed(turn, e, false) => (Some(turn), e),
            },
            Err(e) => (None, e),
        };
        match before_retry(env.state, env.r, held, env.signal, e, attempt).await? {
            Retry::Again => attempt += 1,
            Retry::Stop(stop) => return Ok(Called::Ended(TurnEnd::Stopped(stop))),
            Retry::GiveUp(e) => {
                return Ok(match partial {
                    Some(turn) => Called::Done(turn, Some(e)),
                    None => Called::Ended(TurnEnd::Failed(e)),
                });
            }
        }
    }
}

/// How streaming one attempt's answer ended.
enum Streamed {
    Finished(Box<Turn>),
    /// The stream failed; whether clients had been sent anything of the turn by then.
    Failed(Box<Turn>, CallError, bool),
    Stopped(Stop),
}

/// Streams the model's answer into `turn`, persisting and sending its events as they come,
/// renewing the lease, and saving the partial answer now and then.
async fn stream_answer(
    env: &Env<'_>,
    held: &mut Held,
    mut stream: ChatStream,
    mut turn: Turn,
) -> Result<Streamed, Error> {
    let mut produced = false;
    // The first renewal is a third of a lease away. (Not `interval` plus awaiting its
    // immediate first tick: a timer only fires on the time driver's next millisecond, so
    // that "immediate" tick cost every turn up to 1 ms.)
    let every = env.state.config.lease / 3;
    let mut renew_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut last_save = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            n = stream.next() => n,
            () = env.signal.stopped() => {
                return stopped(env.r, env.signal.reason().unwrap_or(Stop::Cancel), &turn).await;
            }
            _ = renew_tick.tick() => {
                match renew(env.state, env.r, held, None).await? {
                    None => continue,
                    Some(stop) => return stopped(env.r, stop, &turn).await,
                }
            }
        };
        match next {
            Ok(Some(chunk)) => {
                let events = turn.push(&chunk);
                produced |= !events.is_empty();
                persist(env.r, &events).await?;
                for ev in events {
                    emit(env.sink, ev);
                }
                if last_save.elapsed() >= PARTIAL_SAVE_EVERY {
                    save_partial(env.r, &turn).await?;
                    last_save = tokio::time::Instant::now();
                }
            }
            Ok(None) => return Ok(Streamed::Finished(Box::new(turn))),
            Err(e) => return Ok(Streamed::Failed(Box::new(turn), e, produced)),
        }
    }
}

/// A stop while the turn streams keeps what it produced so far, unless the run is no longer
/// this engine's to write.
async fn stopped(r: &RunRef, stop: Stop, turn: &Turn) -> Result<Streamed, Error> {
    if stop != Stop::Lost {
        save_partial(r, turn).await?;
    }
    Ok(Streamed::Stopped(stop))
}

/// A turn's usage when the upstream reported none: the prompt as estimated, and the answer's
/// text and tool-call arguments counted.
fn estimate_usage(prompt_tokens: u64, turn: &Turn) -> Usage {
    count_usage(prompt_tokens, &turn.text(), &turn.tool_calls())
}

fn count_usage(prompt_tokens: u64, text: &str, calls: &[ToolCall]) -> Usage {
    let completion = prompt::count_tokens(text)
        + calls
            .iter()
            .map(|c| prompt::count_tokens(&c.arguments))
            .sum::<u64>();
    Usage {
        prompt_tokens,
        completion_tokens: completion,
        total_tokens: prompt_tokens + completion,
    }
}

/// Completes the turn's message, if it has one, with its citations; returns the completion
/// events (not yet persisted nor sent).
fn close_answer(
    turn: &mut Turn,
    steps: &[RunStep],
    rec: &RunRecord,
    usage: Usage,
    now: i64,
) -> Vec<Event> {
    if turn.message().is_none() {
        return Vec::new();
    }
    let has_tool_step = turn.tool_step().is_some();
    let anns = citation_annotations(steps, rec, &turn.text());
    let message_usage = (!has_tool_step).then_some(usage);
    turn.complete_message(anns, incomplete_reason(turn.finish()), now, message_usage)
}

/// A cut answer is kept `incomplete`, saying why: the token limit, or the upstream's content
/// filter.
fn incomplete_reason(finish: Option<&Finish>) -> Option<&'static str> {
    match finish {
        Some(Finish::Length) => Some("max_tokens"),
        Some(Finish::ContentFilter) => Some("content_filter"),
        _ => None,
    }
}

/// How a turn whose answer calls no tools ends the run.
fn answer_end(finish: Option<&Finish>) -> TurnEnd {
    if finish == Some(&Finish::Length) {
        TurnEnd::Incomplete("max_completion_tokens")
    } else {
        TurnEnd::Answered
    }
}

/// Persists the objects that a batch of creation/completion events carry (a step and its
/// message, typically), all at once: on SQLite they share one commit, on Cassandra the writes
/// overlap instead of queueing behind each other. The events are only sent afterwards, so a
/// client never hears of an object it cannot read back.
pub(super) async fn persist(r: &RunRef, events: &[Event]) -> Result<(), Error> {
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

/// Annotations of the final answer: citations resolved against this run's file_search
/// results (marker `【t:i†…】` = result i of the run's t-th search), and `sandbox:` links to
/// files this run's code wrote; in text order.
fn citation_annotations(steps: &[RunStep], rec: &RunRecord, text: &str) -> Vec<Value> {
    let mut anns = search_citations(steps, text);
    if let Ok(engine) = EngineState::of(rec)
        && !engine.code_files.is_empty()
    {
        let files: std::collections::HashMap<String, String> = engine
            .code_files
            .iter()
            .filter_map(|(path, id)| Some((path.clone(), id.as_str()?.to_owned())))
            .collect();
        anns.extend(file_path_annotations(text, &files));
        anns.sort_by_key(|a| a["start_index"].as_u64());
    }
    anns
}

fn search_citations(steps: &[RunStep], text: &str) -> Vec<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::engine::test_call as call;

    #[test]
    fn an_unreported_usage_counts_the_answer_and_the_call_arguments() {
        let calls = [call("c1", "f", r#"{"city":"Paris"}"#, false)];
        let text = "The weather in Paris is mild today.";
        let u = count_usage(120, text, &calls);
        let expected = prompt::count_tokens(text) + prompt::count_tokens(r#"{"city":"Paris"}"#);
        assert!(expected > 0);
        assert_eq!(u.prompt_tokens, 120);
        assert_eq!(u.completion_tokens, expected);
        assert_eq!(u.total_tokens, 120 + expected);
        assert_eq!(
            count_usage(7, "", &[]),
            Usage {
                prompt_tokens: 7,
                completion_tokens: 0,
                total_tokens: 7,
            }
        );
    }

    #[test]
    fn a_cut_answer_says_why_it_is_incomplete() {
        assert_eq!(incomplete_reason(Some(&Finish::Length)), Some("max_tokens"));
        assert_eq!(
            incomplete_reason(Some(&Finish::ContentFilter)),
            Some("content_filter")
        );
        assert_eq!(incomplete_reason(Some(&Finish::Stop)), None);
        assert_eq!(incomplete_reason(Some(&Finish::ToolCalls)), None);
        assert_eq!(incomplete_reason(None), None);
    }

    #[test]
    fn an_answer_cut_by_the_token_limit_leaves_the_run_incomplete() {
        assert!(matches!(
            answer_end(Some(&Finish::Length)),
            TurnEnd::Incomplete("max_completion_tokens")
        ));
        for finish in [Some(&Finish::Stop), Some(&Finish::ContentFilter), None] {
            assert!(
                matches!(answer_end(finish), TurnEnd::Answered),
                "{finish:?}"
            );
        }
    }

    #[test]
    fn a_token_limit_names_the_runs_incomplete_reason() {
        assert_eq!(limit_reason(Limit::MaxPromptTokens), "max_prompt_tokens");
        assert_eq!(
            limit_reason(Limit::MaxCompletionTokens),
            "max_completion_tokens"
        );
    }
}
