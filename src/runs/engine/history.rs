//! What a turn's prompt is built from: the thread's messages, this run's steps so far, the
//! file_search offer and the images the messages show.

use std::collections::HashMap;

use serde_json::Value;

use super::RunRef;
use crate::error::Error;
use crate::model::{Message, RunRecord, RunStep, ToolResources};
use crate::runs::code_interpreter::{self, CodeOffer};
use crate::runs::engine_state::EngineState;
use crate::runs::file_search::{self, Hit};
use crate::runs::prompt::{FileSearchOffer, RunItem};
use crate::store::{ListQuery, Order};

/// Thread messages considered for a prompt (the newest); truncation then fits them.
const MAX_PROMPT_MESSAGES: usize = 1000;

/// The `tool_resources` of the run's assistant and thread, which the file_search and
/// code_interpreter offers are built from: read once per turn, and only when the run has
/// one of those tools.
#[derive(Default)]
pub(super) struct Resources {
    assistant: ToolResources,
    thread: ToolResources,
}

impl Resources {
    pub(super) async fn load(r: &RunRef, rec: &RunRecord) -> Result<Resources, Error> {
        let wanted = rec
            .run
            .tools
            .iter()
            .any(|t| t["type"] == "file_search" || t["type"] == "code_interpreter");
        if !wanted {
            return Ok(Resources::default());
        }
        let assistant = r
            .store
            .assistants
            .get_assistant(&r.tenant, &rec.run.assistant_id)
            .await?
            .map(|a| a.tool_resources)
            .unwrap_or_default();
        let thread = r
            .store
            .threads
            .get_thread(&r.tenant, &r.thread_id)
            .await?
            .map(|t| t.tool_resources)
            .unwrap_or_default();
        Ok(Resources { assistant, thread })
    }
}

/// The run's file_search offer and the stores it searches (assistant's and thread's).
pub(super) fn file_search_setup(
    rec: &RunRecord,
    res: &Resources,
) -> Result<Option<(FileSearchOffer, Vec<String>, Value)>, Error> {
    let Some(tool) = rec.run.tools.iter().find(|t| t["type"] == "file_search") else {
        return Ok(None);
    };
    let mut stores: Vec<String> = Vec::new();
    stores.extend(res.assistant.vector_store_ids().iter().cloned());
    stores.extend(res.thread.vector_store_ids().iter().cloned());
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

/// The run's code_interpreter offer, if it has the tool: the assistant's and the thread's
/// code_interpreter files (message attachments join the thread's), with the names they get
/// in the data directory (`data_dir`).
pub(super) async fn code_setup(
    r: &RunRef,
    rec: &RunRecord,
    res: &Resources,
    data_dir: String,
) -> Result<Option<CodeOffer>, Error> {
    if !rec
        .run
        .tools
        .iter()
        .any(|t| t["type"] == "code_interpreter")
    {
        return Ok(None);
    }
    let mut ids: Vec<String> = Vec::new();
    ids.extend(res.assistant.code_interpreter_file_ids().iter().cloned());
    ids.extend(res.thread.code_interpreter_file_ids().iter().cloned());
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    let mut files = Vec::new();
    for id in ids {
        // A file deleted since it was attached is left out, not an error.
        if let Some(f) = r.store.files.get_file(&r.tenant, &id).await? {
            files.push((id, f.filename));
        }
    }
    Ok(Some(CodeOffer {
        files: code_interpreter::staged_names(&files),
        data_dir,
    }))
}

/// The thread's messages for the prompt, without those this run created: its opening
/// message, then (oldest first) at most the newest `MAX_PROMPT_MESSAGES`, which is as far as
/// a prompt looks back (the memory one run holds however long its thread). Truncation then
/// fits them (`prompt::build`: the opening is kept and the middle dropped first).
pub(super) async fn prompt_messages(r: &RunRef) -> Result<Vec<Message>, Error> {
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

/// This run's steps in creation order (the first page of 100, as the engine always read them).
pub(super) async fn run_steps(r: &RunRef) -> Result<Vec<RunStep>, Error> {
    let q = ListQuery {
        limit: 100,
        order: Order::Asc,
        after: None,
        before: None,
    };
    Ok(r.store
        .runs
        .list_steps(&r.tenant, &r.thread_id, &r.run_id, &q)
        .await?
        .items)
}

/// This run's steps in order, the prompt history they imply, and the figures its code
/// showed that none of its messages shows yet (the next message starts with them).
pub(super) async fn run_history(
    r: &RunRef,
    rec: &RunRecord,
) -> Result<(Vec<RunStep>, Vec<RunItem>, Vec<String>), Error> {
    let steps = run_steps(r).await?;
    let engine = EngineState::of(rec)?;
    let mut items = Vec::new();
    let mut fs_turn = 0usize;
    let mut figures: Vec<String> = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    for s in &steps {
        figures.extend(figures_of(&s.step_details));
        if s.kind == "message_creation" {
            if let Some(mid) = s.step_details["message_creation"]["message_id"].as_str()
                && let Some(m) = r
                    .store
                    .messages
                    .get_message(&r.tenant, &r.thread_id, mid)
                    .await?
            {
                shown.extend(
                    m.content
                        .parts()
                        .iter()
                        .filter_map(|p| p["image_file"]["file_id"].as_str().map(str::to_owned)),
                );
                let text = m.content.texts(false);
                if !text.is_empty() {
                    items.push(RunItem::Assistant(text.join("\n")));
                }
            }
            continue;
        }
        if let Some(item) = tool_calls_item(&s.step_details, &engine, &mut fs_turn) {
            items.push(item);
        }
    }
    figures.retain(|id| !shown.contains(id));
    Ok((steps, items, figures))
}

/// The figures (image outputs) of a tool_calls step's code_interpreter calls, in order.
fn figures_of(details: &Value) -> Vec<String> {
    details["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "code_interpreter")
        .flat_map(|c| {
            c["code_interpreter"]["outputs"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|o| o["image"]["file_id"].as_str().map(str::to_owned))
        .collect()
}

/// Loads `image_file` parts of the prompt's messages as data URLs (vision), best effort.
pub(super) async fn images_of(r: &RunRef, messages: &[Message]) -> HashMap<String, String> {
    let mut out = HashMap::new();
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

/// The prompt history of one tool-call step (`details`: its `step_details`): each call with
/// its output, file_search results rendered as the model was shown them. `fs_turn` counts
/// the run's searches so far (citation markers name the search by it).
fn tool_calls_item(details: &Value, engine: &EngineState, fs_turn: &mut usize) -> Option<RunItem> {
    let mut calls = Vec::new();
    let mut outputs = Vec::new();
    for c in details["tool_calls"].as_array().into_iter().flatten() {
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
            outputs.push((id, file_search::render_for_model(*fs_turn, &hits)));
            *fs_turn += 1;
        } else if c["type"] == "code_interpreter" {
            let input = c["code_interpreter"]["input"].as_str().unwrap_or_default();
            let told = match engine.code_outputs.get(&id).and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                // Recorded before the state kept it: the logs the step shows.
                None => c["code_interpreter"]["outputs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o["logs"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            let args = serde_json::json!({ "code": input }).to_string();
            calls.push((id.clone(), code_interpreter::TOOL_NAME.to_owned(), args));
            outputs.push((id, told));
        }
    }
    (!calls.is_empty()).then_some(RunItem::ToolCalls { calls, outputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_function_step_becomes_its_calls_and_outputs() {
        let details = json!({"tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "f", "arguments": "{\"a\":1}", "output": "42"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "output": null}},
        ]});
        let mut fs_turn = 0;
        let item = tool_calls_item(&details, &EngineState::default(), &mut fs_turn);
        assert_eq!(
            item,
            Some(RunItem::ToolCalls {
                calls: vec![
                    ("c1".into(), "f".into(), "{\"a\":1}".into()),
                    ("c2".into(), "g".into(), "{}".into()),
                ],
                outputs: vec![("c1".into(), "42".into()), ("c2".into(), String::new())],
            })
        );
        assert_eq!(fs_turn, 0);
    }

    #[test]
    fn a_search_step_is_shown_as_the_model_saw_it_and_counted() {
        let mut engine = EngineState {
            file_search_name: Some("proxy_file_search".into()),
            ..EngineState::default()
        };
        engine
            .file_search_args
            .insert("c1".into(), json!("{\"query\":\"q\"}"));
        let hit = json!({"file_id": "file_a", "file_name": "a.txt", "score": 0.5,
                         "content": [{"type": "text", "text": "a passage"}]});
        let details = json!({"tool_calls": [
            {"id": "c1", "type": "file_search", "file_search": {"results": [hit.clone()]}},
            {"id": "c2", "type": "file_search", "file_search": {}},
        ]});
        let mut fs_turn = 3;
        let Some(RunItem::ToolCalls { calls, outputs }) =
            tool_calls_item(&details, &engine, &mut fs_turn)
        else {
            panic!("no item");
        };
        assert_eq!(
            calls,
            vec![
                (
                    "c1".into(),
                    "proxy_file_search".into(),
                    "{\"query\":\"q\"}".into()
                ),
                ("c2".into(), "proxy_file_search".into(), "{}".into()),
            ]
        );
        let first = file_search::render_for_model(3, &[Hit::from_result(&hit)]);
        assert!(first.contains("【3:0†a.txt】"), "{first}");
        let second = file_search::render_for_model(4, &[]);
        assert_eq!(outputs, vec![("c1".into(), first), ("c2".into(), second)]);
        assert_eq!(fs_turn, 5);
    }

    #[test]
    fn a_step_without_calls_adds_nothing() {
        let mut fs_turn = 0;
        let engine = EngineState::default();
        assert_eq!(tool_calls_item(&json!({}), &engine, &mut fs_turn), None);
        let other = json!({"tool_calls": [{"id": "c1", "type": "web_search"}]});
        assert_eq!(tool_calls_item(&other, &engine, &mut fs_turn), None);
    }

    #[test]
    fn a_code_step_becomes_the_call_and_what_the_model_was_told() {
        let mut fs_turn = 0;
        let mut engine = EngineState::default();
        let details = json!({"tool_calls": [
            {"id": "c1", "type": "code_interpreter",
             "code_interpreter": {"input": "print(1)", "outputs": [{"type": "logs", "logs": "1\n"}]}},
            {"id": "c2", "type": "code_interpreter",
             "code_interpreter": {"input": "x", "outputs": [{"type": "logs", "logs": "2"}]}},
        ]});
        engine.code_outputs.insert(
            "c1".into(),
            json!("1\n[file saved: sandbox:/mnt/data/a (file-a)]"),
        );
        let Some(RunItem::ToolCalls { calls, outputs }) =
            tool_calls_item(&details, &engine, &mut fs_turn)
        else {
            panic!("no item")
        };
        assert_eq!(
            calls[0],
            (
                "c1".into(),
                "code_interpreter".into(),
                r#"{"code":"print(1)"}"#.into()
            )
        );
        assert_eq!(
            outputs[0].1,
            "1\n[file saved: sandbox:/mnt/data/a (file-a)]"
        );
        // Recorded before the state kept what the model was told: the logs.
        assert_eq!(outputs[1].1, "2");
        assert_eq!(fs_turn, 0);
    }
}
