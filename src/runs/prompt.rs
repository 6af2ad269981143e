//! Builds the upstream chat request for one turn of a run: instructions, the thread's
//! messages under the truncation strategy, this run's own history (tool calls and their
//! results), tools, tool choice, response format and limits. Pure: the engine loads
//! everything it needs first.
//!
//! About 360 lines of rules; the rest are tests (truncation cases), kept beside them.

use serde_json::{Map, Value, json};

use super::code_interpreter::{CodeOffer, TOOL_NAME as CODE_TOOL};
use crate::model::{Message, Run};

/// Tokens a chat message costs beyond its text (role and framing).
const MESSAGE_OVERHEAD: u64 = 4;
/// Completion room kept free when fitting a prompt into the model's context.
const COMPLETION_RESERVE: u64 = 4096;

/// Counts tokens the way current OpenAI models do (o200k_base).
pub fn count_tokens(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// The context window of well-known models; `fallback` for the rest (any OpenAI-compatible
/// upstream may serve models this table has never heard of).
pub fn context_window(model: &str, fallback: u64) -> u64 {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-4.1") {
        1_047_576
    } else if m.starts_with("gpt-5") {
        400_000
    } else if m.starts_with("gpt-4o")
        || m.starts_with("gpt-4-turbo")
        || m.starts_with("o1")
        || m.starts_with("o3")
        || m.starts_with("o4")
    {
        128_000
    } else if m.starts_with("gpt-3.5") {
        16_385
    } else if m == "gpt-4" || m.starts_with("gpt-4-0") {
        8_192
    } else {
        fallback
    }
}

/// This run's own history, in step order.
#[derive(Debug, Clone, PartialEq)]
pub enum RunItem {
    /// Text the assistant already produced in an earlier turn of this run.
    Assistant(String),
    /// Tool calls `(id, function name, arguments)` with their outputs `(id, output)`.
    ToolCalls {
        calls: Vec<(String, String, String)>,
        outputs: Vec<(String, String)>,
    },
}

/// The file_search tool as offered to the model (a function the proxy executes itself).
#[derive(Debug, Clone)]
pub struct FileSearchOffer {
    pub name: String,
}

impl FileSearchOffer {
    pub fn definition(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name,
            "description": "Search the files attached to this assistant and conversation. Returns numbered passages; cite a passage you use with its marker, e.g. 【0:1†file.txt】, placed right after the sentence that uses it.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to look for."}},
                "required": ["query"],
                "additionalProperties": false
            }
        }})
    }
}

pub struct PromptInput<'a> {
    pub run: &'a Run,
    /// Thread messages in creation order, without the messages this run created: the
    /// thread's opening message first, then its newest messages (a gap may lie between).
    pub thread_messages: &'a [Message],
    pub run_items: &'a [RunItem],
    pub file_search: Option<&'a FileSearchOffer>,
    pub code_interpreter: Option<&'a CodeOffer>,
    /// Context window assumed for unknown models.
    pub default_context: u64,
    /// Prompt tokens already spent by earlier turns of this run (for `max_prompt_tokens`).
    pub prompt_tokens_used: u64,
    /// Completion tokens already spent (for `max_completion_tokens`).
    pub completion_tokens_used: u64,
    /// `data:` URLs for `image_file` parts, by file id (files the engine could load).
    pub images: &'a dyn Fn(&str) -> Option<String>,
    /// The run's (or its assistant's) `reasoning_effort`, passed on as it is.
    pub reasoning_effort: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub body: Value,
    /// Our own estimate of the prompt size, for budgets when the upstream reports no usage.
    pub estimated_tokens: u64,
    /// How many thread messages were left out by truncation.
    pub dropped_messages: usize,
}

/// Why no request can be made within the run's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    MaxPromptTokens,
    MaxCompletionTokens,
}

fn user_content(m: &Message, images: &dyn Fn(&str) -> Option<String>) -> Value {
    let mut parts = Vec::new();
    let mut only_text = true;
    for p in &m.content.parts() {
        match p["type"].as_str() {
            Some("text") => parts.push(json!({"type": "text", "text": p["text"]["value"]})),
            Some("image_url") => {
                only_text = false;
                parts.push(json!({"type": "image_url", "image_url": p["image_url"]}));
            }
            Some("image_file") => {
                let id = p["image_file"]["file_id"].as_str().unwrap_or("");
                if let Some(url) = images(id) {
                    only_text = false;
                    let mut img = json!({"url": url});
                    if let Some(d) = p["image_file"]["detail"].as_str() {
                        img["detail"] = json!(d);
                    }
                    parts.push(json!({"type": "image_url", "image_url": img}));
                }
            }
            Some("refusal") => parts.push(json!({"type": "text", "text": p["refusal"]})),
            _ => {}
        }
    }
    if only_text {
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        json!(text.join("\n"))
    } else {
        Value::Array(parts)
    }
}

fn chat_message(m: &Message, images: &dyn Fn(&str) -> Option<String>) -> Value {
    if m.role == "assistant" {
        let text = m.content.texts(true);
        json!({"role": "assistant", "content": text.join("\n")})
    } else {
        json!({"role": "user", "content": user_content(m, images)})
    }
}

fn tokens_of(message: &Value) -> u64 {
    let text = match &message["content"] {
        Value::String(s) => count_tokens(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| p["text"].as_str().map_or(85, count_tokens))
            .sum(),
        _ => 0,
    };
    let calls = message["tool_calls"]
        .as_array()
        .map_or(0, |c| c.iter().map(|c| count_tokens(&c.to_string())).sum());
    text + calls + MESSAGE_OVERHEAD
}

/// The tools the model is offered: the run's function tools, plus file_search when the
/// assistant or thread has a vector store, plus code_interpreter when the run has it.
pub fn offered_tools(
    run: &Run,
    file_search: Option<&FileSearchOffer>,
    code: Option<&CodeOffer>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for t in &run.tools {
        if t["type"] == "function" {
            let mut f: Map<String, Value> = t["function"].as_object().cloned().unwrap_or_default();
            f.remove("output");
            f.retain(|_, v| !v.is_null());
            out.push(json!({"type": "function", "function": Value::Object(f)}));
        }
    }
    if let Some(fs) = file_search {
        out.push(fs.definition());
    }
    if let Some(ci) = code {
        out.push(ci.definition());
    }
    out
}

fn tool_choice(
    run: &Run,
    file_search: Option<&FileSearchOffer>,
    code: Option<&CodeOffer>,
) -> Option<Value> {
    match &run.tool_choice {
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => Some(run.tool_choice.clone()),
            Some("file_search") => {
                file_search.map(|fs| json!({"type": "function", "function": {"name": fs.name}}))
            }
            Some("code_interpreter") => {
                code.map(|_| json!({"type": "function", "function": {"name": CODE_TOOL}}))
            }
            _ => Some(json!("auto")),
        },
        Value::String(s) if s == "auto" => None,
        Value::String(_) => Some(run.tool_choice.clone()),
        _ => None,
    }
}

/// The thread's messages that go into the prompt, in order, how many were left out, and the
/// tokens used with them (`fixed` included).
///
/// The rule, by truncation strategy:
/// - `last_messages: n`: the newest `n` messages, fewer if the budget runs out first.
/// - `auto` (and `last_messages` without a number): OpenAI drops messages from the *middle*
///   of a long thread. The thread's opening message (usually the task the user set) is kept
///   if it fits in half the budget; then the newest messages that fit, newest first; the
///   messages between are dropped.
///
/// When not even the newest message fits: with an explicit `max_prompt_tokens` the run stops
/// `incomplete`; otherwise the upstream gets the newest message and judges itself.
fn fit_thread(
    input: &PromptInput<'_>,
    fixed: u64,
    budget: u64,
    window: u64,
    prompt_budget: Option<u64>,
) -> Result<(Vec<Value>, usize, u64), Limit> {
    let run = input.run;
    let all = input.thread_messages;
    let total = all.len();
    let keep_last = match run.truncation_strategy["type"].as_str() {
        Some("last_messages") => run.truncation_strategy["last_messages"].as_u64(),
        _ => None,
    };
    let mut used = fixed;
    let mut opening: Option<Value> = None;
    let mut rest = all;
    if keep_last.is_none()
        && let Some((first, later)) = all.split_first()
    {
        let cm = chat_message(first, input.images);
        let t = tokens_of(&cm);
        if used + t <= fixed + budget.saturating_sub(fixed) / 2 {
            used += t;
            opening = Some(cm);
            rest = later;
        }
    }
    let limit = keep_last.map_or(usize::MAX, |n| n as usize);
    let mut newest: Vec<Value> = Vec::new();
    for m in rest.iter().rev().take(limit) {
        let cm = chat_message(m, input.images);
        let t = tokens_of(&cm);
        if used + t > budget {
            break;
        }
        used += t;
        newest.push(cm);
    }
    if newest.is_empty() && opening.is_none() && total > 0 && input.run_items.is_empty() {
        if prompt_budget.is_some_and(|p| p < window) {
            return Err(Limit::MaxPromptTokens);
        }
        if let Some(m) = all.last() {
            let cm = chat_message(m, input.images);
            used += tokens_of(&cm);
            newest.push(cm);
        }
    }
    newest.reverse();
    let kept: Vec<Value> = opening.into_iter().chain(newest).collect();
    let dropped = total - kept.len();
    Ok((kept, dropped, used))
}

/// Builds the request body, or says which limit makes a request impossible.
pub fn build(input: &PromptInput<'_>) -> Result<Prompt, Limit> {
    let run = input.run;
    let completion_left = match run.max_completion_tokens {
        Some(max) if input.completion_tokens_used >= max => return Err(Limit::MaxCompletionTokens),
        Some(max) => Some(max - input.completion_tokens_used),
        None => None,
    };
    let prompt_budget = match run.max_prompt_tokens {
        Some(max) if input.prompt_tokens_used >= max => return Err(Limit::MaxPromptTokens),
        Some(max) => Some(max - input.prompt_tokens_used),
        None => None,
    };

    let mut head: Vec<Value> = Vec::new();
    if !run.instructions.is_empty() {
        head.push(json!({"role": "system", "content": run.instructions}));
    }
    let mut tail: Vec<Value> = Vec::new();
    for item in input.run_items {
        match item {
            RunItem::Assistant(text) => tail.push(json!({"role": "assistant", "content": text})),
            RunItem::ToolCalls { calls, outputs } => {
                let calls_json: Vec<Value> = calls
                    .iter()
                    .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                    .collect();
                tail.push(json!({"role": "assistant", "content": null, "tool_calls": calls_json}));
                for (id, output) in outputs {
                    tail.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
                }
            }
        }
    }
    let tools = offered_tools(run, input.file_search, input.code_interpreter);
    let fixed: u64 = head.iter().chain(tail.iter()).map(tokens_of).sum::<u64>()
        + tools
            .iter()
            .map(|t| count_tokens(&t.to_string()))
            .sum::<u64>();

    let window = context_window(&run.model, input.default_context);
    let reserve = completion_left
        .unwrap_or(COMPLETION_RESERVE)
        .min(COMPLETION_RESERVE);
    let mut budget = window.saturating_sub(reserve);
    if let Some(p) = prompt_budget {
        budget = budget.min(p);
    }

    let (kept, dropped, used) = fit_thread(input, fixed, budget, window, prompt_budget)?;

    let mut messages = head;
    messages.extend(kept);
    messages.extend(tail);

    let mut body = json!({
        "model": run.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(t) = run.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = run.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(c) = completion_left {
        body["max_completion_tokens"] = json!(c);
    }
    if !tools.is_empty() {
        if let Some(tc) = tool_choice(run, input.file_search, input.code_interpreter) {
            body["tool_choice"] = tc;
        }
        body["tools"] = Value::Array(tools);
        body["parallel_tool_calls"] = json!(run.parallel_tool_calls);
    }
    if run.response_format.is_object() {
        body["response_format"] = run.response_format.clone();
    }
    if let Some(effort) = input.reasoning_effort {
        body["reasoning_effort"] = json!(effort);
    }
    Ok(Prompt {
        body,
        estimated_tokens: used,
        dropped_messages: dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunStatus;

    fn run() -> Run {
        Run {
            id: "run_1".into(),
            object: "thread.run".into(),
            created_at: 0,
            thread_id: "thread_1".into(),
            assistant_id: "asst_1".into(),
            status: RunStatus::InProgress,
            required_action: None,
            last_error: None,
            expires_at: None,
            started_at: None,
            cancelled_at: None,
            failed_at: None,
            completed_at: None,
            incomplete_details: None,
            model: "gpt-4o".into(),
            instructions: "Be terse.".into(),
            tools: vec![
                json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": null}}),
                json!({"type": "code_interpreter"}),
            ],
            metadata: Default::default(),
            usage: None,
            temperature: Some(0.5),
            top_p: Some(1.0),
            max_prompt_tokens: None,
            max_completion_tokens: None,
            truncation_strategy: json!({"type": "auto", "last_messages": null}),
            tool_choice: json!("auto"),
            parallel_tool_calls: true,
            response_format: json!("auto"),
        }
    }

    fn msg(role: &str, text: &str) -> Message {
        Message {
            id: format!("msg_{text}"),
            object: "thread.message".into(),
            created_at: 0,
            thread_id: "thread_1".into(),
            status: "completed".into(),
            incomplete_details: None,
            completed_at: None,
            incomplete_at: None,
            role: role.to_owned().into(),
            content: vec![json!({"type": "text", "text": {"value": text, "annotations": []}})]
                .into(),
            assistant_id: None,
            run_id: None,
            attachments: vec![],
            metadata: Default::default(),
        }
    }

    fn input<'a>(
        run: &'a Run,
        msgs: &'a [Message],
        items: &'a [RunItem],
        fs: Option<&'a FileSearchOffer>,
    ) -> PromptInput<'a> {
        PromptInput {
            run,
            thread_messages: msgs,
            run_items: items,
            file_search: fs,
            code_interpreter: None,
            default_context: 128_000,
            prompt_tokens_used: 0,
            completion_tokens_used: 0,
            images: &|_| None,
            reasoning_effort: None,
        }
    }

    #[test]
    fn builds_a_streamed_request_with_tools() {
        let r = run();
        let msgs = vec![
            msg("user", "hi"),
            msg("assistant", "hello"),
            msg("user", "weather?"),
        ];
        let fs = FileSearchOffer {
            name: "file_search".into(),
        };
        let p = build(&input(&r, &msgs, &[], Some(&fs))).unwrap();
        let b = &p.body;
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "Be terse."})
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "user", "content": "weather?"})
        );
        let tools = b["tools"].as_array().unwrap();
        assert_eq!(
            tools.len(),
            2,
            "function + file_search; code_interpreter is not offered"
        );
        assert!(
            tools[0]["function"].get("strict").is_none(),
            "null keys are dropped"
        );
        assert_eq!(tools[1]["function"]["name"], "file_search");
        assert_eq!(b["parallel_tool_calls"], true);
        assert!(b.get("tool_choice").is_none());
        assert!(b.get("response_format").is_none());
        assert_eq!(b["temperature"], 0.5);
    }

    #[test]
    fn run_history_follows_the_thread() {
        let r = run();
        let msgs = vec![msg("user", "go")];
        let items = vec![RunItem::ToolCalls {
            calls: vec![("call_1".into(), "f".into(), "{}".into())],
            outputs: vec![("call_1".into(), "42".into())],
        }];
        let p = build(&input(&r, &msgs, &items, None)).unwrap();
        let m = p.body["messages"].as_array().unwrap();
        assert_eq!(m[2]["tool_calls"][0]["id"], "call_1");
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "42"})
        );
    }

    #[test]
    fn truncation_keeps_the_newest_messages() {
        let mut r = run();
        r.truncation_strategy = json!({"type": "last_messages", "last_messages": 2});
        let msgs: Vec<Message> = (0..5).map(|i| msg("user", &format!("m{i}"))).collect();
        let p = build(&input(&r, &msgs, &[], None)).unwrap();
        let m = p.body["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[1]["content"], "m3");
        assert_eq!(p.dropped_messages, 3);

        // auto: a small context keeps as many of the newest as fit.
        let mut r = run();
        r.model = "tiny-model".into();
        let big: Vec<Message> = (0..50)
            .map(|i| msg("user", &format!("word {i} ").repeat(200)))
            .collect();
        let mut inp = input(&r, &big, &[], None);
        inp.default_context = 4096 + 2000;
        let p = build(&inp).unwrap();
        assert!(p.dropped_messages > 0 && p.dropped_messages < 50);
        assert!(p.estimated_tokens <= 2000);
    }

    /// The texts of the thread messages a prompt carries (the system message left out).
    fn thread_texts(p: &Prompt) -> Vec<String> {
        p.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] != "system")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn auto_truncation_drops_the_middle_and_keeps_the_opening() {
        let mut r = run();
        r.model = "tiny-model".into();
        let mut msgs = vec![msg("user", "TASK: summarise the quarterly figures.")];
        msgs.extend((1..60).map(|i| msg("user", &format!("message {i} ").repeat(20))));
        let mut inp = input(&r, &msgs, &[], None);
        inp.default_context = 4096 + 1000;
        let p = build(&inp).unwrap();
        let texts = thread_texts(&p);
        assert_eq!(texts[0], "TASK: summarise the quarterly figures.");
        assert!(
            texts.last().unwrap().starts_with("message 59 "),
            "{texts:?}"
        );
        // What is left out is a run of middle messages: the newest kept are contiguous.
        let n = texts.len();
        assert!(n > 3 && n < 30, "{n} kept");
        assert!(texts[1].starts_with(&format!("message {} ", 60 - (n - 1))));
        assert_eq!(p.dropped_messages, 60 - n);
        assert!(p.estimated_tokens <= 1000);

        // `last_messages` without a number is sized the same way.
        r.truncation_strategy = json!({"type": "last_messages", "last_messages": null});
        let mut inp = input(&r, &msgs, &[], None);
        inp.default_context = 4096 + 1000;
        assert_eq!(thread_texts(&build(&inp).unwrap()), texts);

        // `last_messages: n` keeps only the newest n, opening or not.
        r.truncation_strategy = json!({"type": "last_messages", "last_messages": 3});
        let texts = thread_texts(&build(&input(&r, &msgs, &[], None)).unwrap());
        assert_eq!(texts.len(), 3);
        assert!(texts[0].starts_with("message 57 "));
    }

    #[test]
    fn an_opening_larger_than_half_the_budget_is_dropped_like_the_rest() {
        let mut r = run();
        r.model = "tiny-model".into();
        // ~700 tokens of opening, in a budget of 1000, and 30 newer messages of ~20 tokens:
        // pinning the opening would leave room for a dozen of them.
        let mut msgs = vec![msg("user", &"opening ".repeat(700))];
        msgs.extend((1..=30).map(|i| msg("user", &format!("m{i} ").repeat(8))));
        let mut inp = input(&r, &msgs, &[], None);
        inp.default_context = 4096 + 1000;
        let texts = thread_texts(&build(&inp).unwrap());
        assert_eq!(texts.len(), 30, "{texts:?}");
        assert!(texts[0].starts_with("m1 "));
    }

    #[test]
    fn reasoning_effort_reaches_the_request() {
        let r = run();
        let msgs = vec![msg("user", "hi")];
        assert!(
            build(&input(&r, &msgs, &[], None))
                .unwrap()
                .body
                .get("reasoning_effort")
                .is_none()
        );
        let mut inp = input(&r, &msgs, &[], None);
        inp.reasoning_effort = Some("low");
        assert_eq!(build(&inp).unwrap().body["reasoning_effort"], "low");
    }

    #[test]
    fn limits_stop_the_run() {
        let mut r = run();
        r.max_completion_tokens = Some(256);
        let msgs = vec![msg("user", "x")];
        let mut inp = input(&r, &msgs, &[], None);
        inp.completion_tokens_used = 256;
        assert_eq!(build(&inp), Err(Limit::MaxCompletionTokens));
        let mut r = run();
        r.max_prompt_tokens = Some(256);
        let long = vec![msg("user", &"lorem ipsum ".repeat(400))];
        assert_eq!(
            build(&input(&r, &long, &[], None)),
            Err(Limit::MaxPromptTokens)
        );
        let short = vec![msg("user", "hello")];
        let p = build(&input(&r, &short, &[], None)).unwrap();
        assert!(p.estimated_tokens < 256);
    }

    #[test]
    fn tool_choice_and_formats_map_to_chat() {
        let mut r = run();
        r.tool_choice = json!({"type": "file_search"});
        r.response_format = json!({"type": "json_object"});
        let fs = FileSearchOffer {
            name: "file_search".into(),
        };
        let msgs = vec![msg("user", "x")];
        let p = build(&input(&r, &msgs, &[], Some(&fs))).unwrap();
        assert_eq!(
            p.body["tool_choice"],
            json!({"type": "function", "function": {"name": "file_search"}})
        );
        assert_eq!(p.body["response_format"], json!({"type": "json_object"}));
        assert_eq!(context_window("gpt-4.1-mini", 1), 1_047_576);
        assert_eq!(context_window("llama3", 32_000), 32_000);
    }

    #[test]
    fn code_interpreter_is_offered_as_a_function_and_can_be_forced() {
        let mut r = run();
        r.tools = vec![json!({"type": "code_interpreter"})];
        r.tool_choice = json!({"type": "code_interpreter"});
        let ci = CodeOffer {
            files: Vec::new(),
            data_dir: "/mnt/data".into(),
        };
        let msgs = vec![msg("user", "x")];
        let mut inp = input(&r, &msgs, &[], None);
        inp.code_interpreter = Some(&ci);
        let p = build(&inp).unwrap();
        assert_eq!(p.body["tools"][0]["function"]["name"], "code_interpreter");
        assert_eq!(
            p.body["tool_choice"],
            json!({"type": "function", "function": {"name": "code_interpreter"}})
        );
        // Without the offer (the tool is not on the run), forcing it is not sent.
        let p = build(&input(&r, &msgs, &[], None)).unwrap();
        assert!(
            p.body
                .get("tools")
                .is_none_or(|t| t.as_array().is_none_or(Vec::is_empty))
        );
    }
}
