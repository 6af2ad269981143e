//! Pure translation of one model turn: upstream `chat.completion.chunk`s in, Assistants
//! events and objects out. No I/O: the engine persists the objects the events carry.
//!
//! The SDKs deep-merge deltas (strings concatenate, numbers add, arrays merge by `index`), so
//! every fragment is sent once, ids and names only in a call's first delta, and the first
//! text delta of a part carries `annotations: []`.
//!
//! About 420 lines of rules; the rest are chunk-by-chunk tests, kept beside them.

use serde_json::{Value, json};

use super::code_args::CodeArgs;
use super::events::{Event, MessageNews, StepNews};
use crate::ids::new_id;
use crate::model::{Message, RunStep, StepStatus, Usage};

/// Identity of the run a turn belongs to.
#[derive(Debug, Clone)]
pub struct TurnCtx {
    pub thread_id: String,
    pub run_id: String,
    pub assistant_id: String,
    pub now: i64,
    /// The function name under which file_search is offered to the model, if it is.
    pub file_search_name: Option<String>,
    /// The function name under which code_interpreter is offered to the model, if it is.
    pub code_interpreter_name: Option<String>,
    /// Figures this run's code showed and no message has shown yet: the turn's message
    /// starts with them (`image_file` parts before the text, as OpenAI placed them).
    pub images: Vec<String>,
}

/// Which tool a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// A client function: the run waits for its output.
    Function,
    /// file_search, run by the proxy.
    FileSearch,
    /// code_interpreter, run by the proxy in its sandbox.
    CodeInterpreter,
}

/// A tool call the model made this turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub kind: ToolKind,
    /// Its position in the turn's calls (the `index` of its step deltas).
    pub index: usize,
}

/// How the model ended the turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Stop,
    ToolCalls,
    /// Output token limit (`max_completion_tokens`).
    Length,
    ContentFilter,
}

#[derive(Debug)]
pub struct Turn {
    ctx: TurnCtx,
    message: Option<Message>,
    message_step: Option<RunStep>,
    /// Content parts in order of first appearance: ("text" | "refusal", accumulated text),
    /// after the turn's figures ("image_file", file id).
    parts: Vec<(&'static str, String)>,
    tool_step: Option<RunStep>,
    calls: Vec<Option<ToolCall>>,
    /// The code of each code_interpreter call, decoded as its arguments stream (by index).
    code: Vec<Option<CodeArgs>>,
    finish: Option<Finish>,
    usage: Option<Usage>,
}

fn step(ctx: &TurnCtx, kind: &str, details: Value) -> RunStep {
    RunStep {
        id: new_id("step_"),
        object: "thread.run.step".into(),
        created_at: ctx.now,
        assistant_id: ctx.assistant_id.clone(),
        thread_id: ctx.thread_id.clone(),
        run_id: ctx.run_id.clone(),
        kind: kind.into(),
        status: StepStatus::InProgress,
        step_details: details,
        last_error: None,
        expired_at: None,
        cancelled_at: None,
        failed_at: None,
        completed_at: None,
        metadata: Default::default(),
        usage: None,
    }
}

impl Turn {
    pub fn new(ctx: TurnCtx) -> Turn {
        Turn {
            ctx,
            message: None,
            message_step: None,
            parts: Vec::new(),
            tool_step: None,
            calls: Vec::new(),
            code: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    pub fn message(&self) -> Option<&Message> {
        self.message.as_ref()
    }

    pub fn message_step(&self) -> Option<&RunStep> {
        self.message_step.as_ref()
    }

    pub fn tool_step(&self) -> Option<&RunStep> {
        self.tool_step.as_ref()
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn finish(&self) -> Option<&Finish> {
        self.finish.as_ref()
    }

    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.calls.iter().flatten().cloned().collect()
    }

    /// The text produced so far (all text parts joined).
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter(|(k, _)| *k == "text")
            .map(|(_, t)| t.as_str())
            .collect()
    }

    /// The message content in response shape (annotations are added at completion).
    pub fn content(&self) -> Vec<Value> {
        self.parts
            .iter()
            .map(|(kind, text)| match *kind {
                "refusal" => json!({"type": "refusal", "refusal": text}),
                "image_file" => json!({"type": "image_file", "image_file": {"file_id": text}}),
                _ => json!({"type": "text", "text": {"value": text, "annotations": []}}),
            })
            .collect()
    }

    fn ensure_message(&mut self, out: &mut Vec<Event>) {
        if self.message.is_some() {
            return;
        }
        let m = Message {
            id: new_id("msg_"),
            object: "thread.message".into(),
            created_at: self.ctx.now,
            thread_id: self.ctx.thread_id.clone(),
            status: "in_progress".into(),
            incomplete_details: None,
            completed_at: None,
            incomplete_at: None,
            role: "assistant".into(),
            content: Default::default(),
            assistant_id: Some(self.ctx.assistant_id.clone()),
            run_id: Some(self.ctx.run_id.clone()),
            attachments: Vec::new(),
            metadata: Default::default(),
        };
        let s = step(
            &self.ctx,
            "message_creation",
            json!({"type": "message_creation", "message_creation": {"message_id": m.id}}),
        );
        out.push(Event::Step(StepNews::Created, Box::new(s.clone())));
        out.push(Event::step_now(s.clone()));
        out.push(Event::Message(MessageNews::Created, Box::new(m.clone())));
        out.push(Event::Message(MessageNews::InProgress, Box::new(m.clone())));
        let id = m.id.clone();
        self.message = Some(m);
        self.message_step = Some(s);
        if !self.ctx.images.is_empty() {
            let mut parts = Vec::new();
            for (index, file_id) in self.ctx.images.iter().enumerate() {
                parts.push(json!({"index": index, "type": "image_file",
                                  "image_file": {"file_id": file_id}}));
                self.parts.push(("image_file", file_id.clone()));
            }
            out.push(Event::MessageDelta(json!({
                "id": id,
                "object": "thread.message.delta",
                "delta": {"content": parts},
            })));
        }
    }

    fn part_delta(&mut self, kind: &'static str, fragment: &str, out: &mut Vec<Event>) {
        if fragment.is_empty() {
            return;
        }
        self.ensure_message(out);
        let (index, first) = match self.parts.iter().position(|(k, _)| *k == kind) {
            Some(i) => (i, false),
            None => {
                self.parts.push((kind, String::new()));
                (self.parts.len() - 1, true)
            }
        };
        self.parts[index].1.push_str(fragment);
        let part = match (kind, first) {
            ("refusal", _) => json!({"index": index, "type": "refusal", "refusal": fragment}),
            (_, true) => {
                json!({"index": index, "type": "text", "text": {"value": fragment, "annotations": []}})
            }
            (_, false) => json!({"index": index, "type": "text", "text": {"value": fragment}}),
        };
        let id = self
            .message
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        out.push(Event::MessageDelta(json!({
            "id": id,
            "object": "thread.message.delta",
            "delta": {"content": [part]},
        })));
    }

    fn tool_delta(&mut self, call: &Value, out: &mut Vec<Event>) {
        let index = call["index"].as_u64().unwrap_or(0) as usize;
        if self.tool_step.is_none() {
            let s = step(
                &self.ctx,
                "tool_calls",
                json!({"type": "tool_calls", "tool_calls": []}),
            );
            out.push(Event::Step(StepNews::Created, Box::new(s.clone())));
            out.push(Event::step_now(s.clone()));
            self.tool_step = Some(s);
        }
        if self.calls.len() <= index {
            self.calls.resize(index + 1, None);
            self.code.resize(index + 1, None);
        }
        let step_id = self
            .tool_step
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let fragment = call["function"]["arguments"].as_str().unwrap_or("");
        let delta_for = |tool_call: Value| {
            Event::StepDelta(json!({
                "id": step_id,
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [tool_call]}},
            }))
        };
        match &mut self.calls[index] {
            None => {
                let name = call["function"]["name"].as_str().unwrap_or("").to_owned();
                let id = call["id"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| new_id("call_"));
                let kind = if self.ctx.file_search_name.as_deref() == Some(name.as_str()) {
                    ToolKind::FileSearch
                } else if self.ctx.code_interpreter_name.as_deref() == Some(name.as_str()) {
                    ToolKind::CodeInterpreter
                } else {
                    ToolKind::Function
                };
                // A call's identity is announced once; argument fragments follow.
                let header = match kind {
                    ToolKind::FileSearch => {
                        json!({"index": index, "id": id, "type": "file_search", "file_search": {}})
                    }
                    ToolKind::CodeInterpreter => {
                        let mut decoder = CodeArgs::new();
                        let input = decoder.push(fragment);
                        self.code[index] = Some(decoder);
                        json!({"index": index, "id": id, "type": "code_interpreter",
                               "code_interpreter": {"input": input, "outputs": []}})
                    }
                    ToolKind::Function => {
                        json!({"index": index, "id": id, "type": "function",
                               "function": {"name": name, "arguments": fragment, "output": null}})
                    }
                };
                out.push(delta_for(header));
                self.calls[index] = Some(ToolCall {
                    id,
                    name,
                    arguments: fragment.to_owned(),
                    kind,
                    index,
                });
            }
            Some(existing) => {
                existing.arguments.push_str(fragment);
                if fragment.is_empty() {
                    return;
                }
                match existing.kind {
                    ToolKind::Function => {
                        out.push(delta_for(json!({"index": index, "type": "function",
                                                   "function": {"arguments": fragment}})));
                    }
                    ToolKind::CodeInterpreter => {
                        let input = self.code[index]
                            .as_mut()
                            .map(|d| d.push(fragment))
                            .unwrap_or_default();
                        if !input.is_empty() {
                            out.push(delta_for(
                                json!({"index": index, "type": "code_interpreter",
                                                       "code_interpreter": {"input": input}}),
                            ));
                        }
                    }
                    ToolKind::FileSearch => {}
                }
            }
        }
    }

    /// Consumes one upstream chunk.
    pub fn push(&mut self, chunk: &Value) -> Vec<Event> {
        let mut out = Vec::new();
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
            let completion = u["completion_tokens"].as_u64().unwrap_or(0);
            self.usage = Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            });
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return out;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str() {
            self.part_delta("text", text, &mut out);
        }
        if let Some(text) = delta["refusal"].as_str() {
            self.part_delta("refusal", text, &mut out);
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for call in calls {
                self.tool_delta(call, &mut out);
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish = Some(match reason {
                "tool_calls" | "function_call" => Finish::ToolCalls,
                "length" => Finish::Length,
                "content_filter" => Finish::ContentFilter,
                _ => Finish::Stop,
            });
        }
        out
    }

    /// Completes the turn's message (with final annotations on its first text part): the
    /// annotation delta, `thread.message.completed` (or `.incomplete`), and the step's end.
    /// `incomplete` is the message's incomplete reason, if any.
    pub fn complete_message(
        &mut self,
        annotations: Vec<Value>,
        incomplete: Option<&str>,
        now: i64,
        usage: Option<Usage>,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let mut content = self.content();
        if !annotations.is_empty()
            && let Some(index) = self.parts.iter().position(|(k, _)| *k == "text")
        {
            content[index]["text"]["annotations"] = Value::Array(annotations.clone());
            let indexed: Vec<Value> = annotations
                .into_iter()
                .enumerate()
                .map(|(i, mut a)| {
                    a["index"] = json!(i);
                    a
                })
                .collect();
            let id = self
                .message
                .as_ref()
                .map(|m| m.id.clone())
                .unwrap_or_default();
            out.push(Event::MessageDelta(json!({
                    "id": id,
                    "object": "thread.message.delta",
                    "delta": {"content": [{"index": index, "type": "text", "text": {"annotations": indexed}}]},
                })));
        }
        if let Some(m) = &mut self.message {
            m.content = content.into();
            match incomplete {
                Some(reason) => {
                    m.status = "incomplete".into();
                    m.incomplete_at = Some(now);
                    m.incomplete_details = Some(json!({"reason": reason}));
                    out.push(Event::Message(MessageNews::Incomplete, Box::new(m.clone())));
                }
                None => {
                    m.status = "completed".into();
                    m.completed_at = Some(now);
                    out.push(Event::Message(MessageNews::Completed, Box::new(m.clone())));
                }
            }
        }
        if let Some(s) = &mut self.message_step {
            s.status = StepStatus::Completed;
            s.completed_at = Some(now);
            s.usage = usage;
            out.push(Event::step_now(s.clone()));
        }
        out
    }

    /// The tool_calls step as the model left it (function outputs still null); `details`
    /// gives the body of each proxy-run call (`file_search`, `code_interpreter`).
    pub fn tool_step_with_calls(&self, details: &dyn Fn(&ToolCall) -> Value) -> Option<RunStep> {
        let mut s = self.tool_step.clone()?;
        let calls: Vec<Value> = self
            .tool_calls()
            .iter()
            .map(|c| match c.kind {
                ToolKind::FileSearch => {
                    json!({"id": c.id, "type": "file_search", "file_search": details(c)})
                }
                ToolKind::CodeInterpreter => {
                    json!({"id": c.id, "type": "code_interpreter", "code_interpreter": details(c)})
                }
                ToolKind::Function => json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments, "output": null}}),
            })
            .collect();
        s.step_details = json!({"type": "tool_calls", "tool_calls": calls});
        Some(s)
    }
}

/// Finds citation markers `【t:i†name】` in `text` and turns those whose (t, i) resolve to a
/// file into `file_citation` annotations with character offsets (as the SDKs index strings).
pub fn citations(text: &str, resolve: &dyn Fn(usize, usize) -> Option<String>) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '【' {
            i += 1;
            continue;
        }
        let Some(len) = chars[i..].iter().position(|&c| c == '】') else {
            break;
        };
        let inner: String = chars[i + 1..i + len].iter().collect();
        let end = i + len + 1;
        let key = inner.split('†').next().unwrap_or("");
        let parsed = key
            .split_once(':')
            .and_then(|(t, n)| Some((t.trim().parse().ok()?, n.trim().parse().ok()?)));
        if let Some((turn, idx)) = parsed
            && let Some(file_id) = resolve(turn, idx)
        {
            out.push(json!({
                "type": "file_citation",
                "text": chars[i..end].iter().collect::<String>(),
                "file_citation": {"file_id": file_id},
                "start_index": i,
                "end_index": end,
            }));
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TurnCtx {
        TurnCtx {
            thread_id: "thread_1".into(),
            run_id: "run_1".into(),
            assistant_id: "asst_1".into(),
            now: 1_700_000_000,
            file_search_name: Some("file_search".into()),
            code_interpreter_name: Some("code_interpreter".into()),
            images: Vec::new(),
        }
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn names(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(Event::name).collect()
    }

    #[test]
    fn text_turn_creates_step_and_message_then_deltas() {
        let mut t = Turn::new(ctx());
        assert!(
            t.push(&chunk(json!({"role": "assistant", "content": ""}), None))
                .is_empty()
        );
        let e = t.push(&chunk(json!({"content": "Hel"}), None));
        assert_eq!(
            names(&e),
            vec![
                "thread.run.step.created",
                "thread.run.step.in_progress",
                "thread.message.created",
                "thread.message.in_progress",
                "thread.message.delta"
            ]
        );
        let Event::MessageDelta(d) = &e[4] else {
            panic!()
        };
        assert_eq!(
            d["delta"]["content"][0],
            json!({"index": 0, "type": "text", "text": {"value": "Hel", "annotations": []}})
        );
        let e = t.push(&chunk(json!({"content": "lo"}), None));
        let Event::MessageDelta(d) = &e[0] else {
            panic!()
        };
        assert_eq!(
            d["delta"]["content"][0],
            json!({"index": 0, "type": "text", "text": {"value": "lo"}})
        );
        assert!(t.push(&chunk(json!({}), Some("stop"))).is_empty());
        t.push(&json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}));
        assert_eq!(t.finish(), Some(&Finish::Stop));
        assert_eq!(t.usage().unwrap().total_tokens, 7);
        assert_eq!(t.text(), "Hello");
        let done = t.complete_message(vec![], None, 1_700_000_001, t.usage());
        assert_eq!(
            names(&done),
            vec!["thread.message.completed", "thread.run.step.completed"]
        );
        let Event::Message(_, m) = &done[0] else {
            panic!()
        };
        assert_eq!(m.content.parts()[0]["text"]["value"], "Hello");
        assert_eq!(m.status, "completed");
        let Event::Step(_, s) = &done[1] else {
            panic!()
        };
        assert_eq!(s.step_details["message_creation"]["message_id"], m.id);
        assert_eq!(s.usage.unwrap().prompt_tokens, 5);
    }

    #[test]
    fn parallel_function_calls_stream_each_fragment_once() {
        let mut t = Turn::new(ctx());
        let e = t.push(&chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]}),
            None,
        ));
        assert_eq!(
            names(&e),
            vec![
                "thread.run.step.created",
                "thread.run.step.in_progress",
                "thread.run.step.delta"
            ]
        );
        let Event::StepDelta(d) = &e[2] else { panic!() };
        assert_eq!(
            d["delta"]["step_details"]["tool_calls"][0],
            json!({"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "", "output": null}})
        );
        let e = t.push(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            None,
        ));
        let Event::StepDelta(d) = &e[0] else { panic!() };
        assert_eq!(
            d["delta"]["step_details"]["tool_calls"][0],
            json!({"index": 0, "type": "function", "function": {"arguments": "{\"city\":"}})
        );
        t.push(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
            None,
        ));
        t.push(&chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}),
            None,
        ));
        t.push(&chunk(json!({}), Some("tool_calls")));
        let calls = t.tool_calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(calls[1].name, "get_time");
        assert!(t.message().is_none(), "no message for a pure tool turn");
        let step = t.tool_step_with_calls(&|_| json!({})).unwrap();
        assert_eq!(
            step.step_details["tool_calls"][1]["function"]["output"],
            Value::Null
        );
    }

    #[test]
    fn file_search_calls_show_as_file_search() {
        let mut t = Turn::new(ctx());
        let e = t.push(&chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_fs", "type": "function", "function": {"name": "file_search", "arguments": "{\"query\""}}]}),
            None,
        ));
        let Event::StepDelta(d) = &e[2] else { panic!() };
        assert_eq!(
            d["delta"]["step_details"]["tool_calls"][0],
            json!({"index": 0, "id": "call_fs", "type": "file_search", "file_search": {}})
        );
        // Argument fragments of file_search are not streamed to the client.
        assert!(
            t.push(&chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": ":\"x\"}"}}]}),
                None
            ))
            .is_empty()
        );
        assert_eq!(t.tool_calls()[0].kind, ToolKind::FileSearch);
        assert_eq!(t.tool_calls()[0].arguments, "{\"query\":\"x\"}");
    }

    #[test]
    fn annotations_are_sent_once_with_char_offsets() {
        let mut t = Turn::new(ctx());
        t.push(&chunk(
            json!({"content": "Café facts 【0:1†notes.txt】 end"}),
            Some("stop"),
        ));
        let text = t.text();
        let anns = citations(&text, &|turn, idx| {
            (turn == 0 && idx == 1).then(|| "file-x".to_owned())
        });
        assert_eq!(anns.len(), 1);
        assert_eq!(anns[0]["start_index"], 11);
        assert_eq!(
            anns[0]["end_index"],
            11 + "【0:1†notes.txt】".chars().count()
        );
        assert_eq!(anns[0]["text"], "【0:1†notes.txt】");
        let done = t.complete_message(anns, None, 1, None);
        let Event::MessageDelta(d) = &done[0] else {
            panic!()
        };
        assert_eq!(
            d["delta"]["content"][0]["text"]["annotations"][0]["index"],
            0
        );
        let Event::Message(_, m) = &done[1] else {
            panic!()
        };
        assert_eq!(
            m.content.parts()[0]["text"]["annotations"][0]["file_citation"]["file_id"],
            "file-x"
        );
        // Unresolvable markers are left as plain text.
        assert!(citations("【9:9†x】", &|_, _| None).is_empty());
    }

    #[test]
    fn length_finish_makes_the_message_incomplete() {
        let mut t = Turn::new(ctx());
        t.push(&chunk(json!({"content": "partial"}), Some("length")));
        assert_eq!(t.finish(), Some(&Finish::Length));
        let done = t.complete_message(vec![], Some("max_tokens"), 2, None);
        assert_eq!(names(&done)[0], "thread.message.incomplete");
        let Event::Message(_, m) = &done[0] else {
            panic!()
        };
        assert_eq!(m.incomplete_details, Some(json!({"reason": "max_tokens"})));
    }

    #[test]
    fn code_interpreter_input_streams_decoded_in_several_deltas() {
        let mut turn = Turn::new(ctx());
        let code = "import math\nprint(\"x\", math.pi)\n";
        let args = json!({ "code": code }).to_string();
        let mut events = Vec::new();
        let pieces: Vec<String> = args
            .chars()
            .collect::<Vec<_>>()
            .chunks(7)
            .map(|c| c.iter().collect())
            .collect();
        for (i, p) in pieces.iter().enumerate() {
            let call = if i == 0 {
                json!({"index": 0, "id": "call_c", "type": "function",
                       "function": {"name": "code_interpreter", "arguments": p}})
            } else {
                json!({"index": 0, "function": {"arguments": p}})
            };
            events.extend(turn.push(&chunk(json!({"tool_calls": [call]}), None)));
        }
        let deltas: Vec<&Value> = events
            .iter()
            .filter_map(|e| match e {
                Event::StepDelta(d) => Some(&d["delta"]["step_details"]["tool_calls"][0]),
                _ => None,
            })
            .collect();
        assert_eq!(deltas[0]["type"], "code_interpreter");
        assert_eq!(deltas[0]["id"], "call_c");
        assert_eq!(deltas[0]["code_interpreter"]["outputs"], json!([]));
        let input: String = deltas
            .iter()
            .map(|d| d["code_interpreter"]["input"].as_str().unwrap())
            .collect();
        assert_eq!(input, code);
        assert!(deltas.len() > 3, "{deltas:?}");
        assert!(deltas[1..].iter().all(|d| d.get("id").is_none()));
        let calls = turn.tool_calls();
        assert_eq!(calls[0].kind, ToolKind::CodeInterpreter);
        assert_eq!(calls[0].arguments, args);
        let step = turn
            .tool_step_with_calls(&|_| json!({"input": code, "outputs": []}))
            .unwrap();
        assert_eq!(
            step.step_details["tool_calls"][0],
            json!({"id": "call_c", "type": "code_interpreter",
                   "code_interpreter": {"input": code, "outputs": []}})
        );
    }

    #[test]
    fn the_runs_figures_open_the_message_before_its_text() {
        let mut c = ctx();
        c.images = vec!["file-img1".into(), "file-img2".into()];
        let mut turn = Turn::new(c);
        let events = turn.push(&chunk(json!({"content": "Here"}), None));
        let deltas: Vec<&Value> = events
            .iter()
            .filter_map(|e| match e {
                Event::MessageDelta(d) => Some(&d["delta"]["content"]),
                _ => None,
            })
            .collect();
        assert_eq!(deltas[0][1]["image_file"]["file_id"], "file-img2");
        assert_eq!(deltas[1][0]["index"], 2);
        assert_eq!(deltas[1][0]["text"]["value"], "Here");
        let content = turn.content();
        assert_eq!(content[0]["type"], "image_file");
        assert_eq!(content[2]["text"]["value"], "Here");
        assert_eq!(turn.text(), "Here");
    }
}
