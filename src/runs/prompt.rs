//! Builds the upstream chat request for one turn of a run: instructions, the thread's
//! messages under the truncation strategy, this run's own history (tool calls and their
//! results), tools, tool choice, response format and limits. Pure: the engine loads
//! everything it needs first.

use serde_json::{Map, Value, json};

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
    /// Thread messages in creation order, without the messages this run created.
    pub thread_messages: &'a [Message],
    pub run_items: &'a [RunItem],
    pub file_search: Option<&'a FileSearchOffer>,
    /// Context window assumed for unknown models.
    pub default_context: u64,
    /// Prompt tokens already spent by earlier turns of this run (for `max_prompt_tokens`).
    pub prompt_tokens_used: u64,
    /// Completion tokens already spent (for `max_completion_tokens`).
    pub completion_tokens_used: u64,
    /// `data:` URLs for `image_file` parts, by file id (files the engine could load).
    pub images: &'a dyn Fn(&str) -> Option<String>,
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
/// assistant or thread has a vector store. code_interpreter is accepted but not offered until
/// a sandbox exists.
pub fn offered_tools(run: &Run, file_search: Option<&FileSearchOffer>) -> Vec<Value> {
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
    out
}

fn tool_choice(run: &Run, file_search: Option<&FileSearchOffer>) -> Option<Value> {
    match &run.tool_choice {
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => Some(run.tool_choice.clone()),
            Some("file_search") => {
                file_search.map(|fs| json!({"type": "function", "function": {"name": fs.name}}))
            }
            _ => Some(json!("auto")),
        },
        Value::String(s) if s == "auto" => None,
        Value::String(_) => Some(run.tool_choice.clone()),
        _ => None,
    }
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
    let tools = offered_tools(run, input.file_search);
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

    // Newest messages first, under `last_messages` and the token budget.
    let keep_last = match run.truncation_strategy["type"].as_str() {
        Some("last_messages") => run.truncation_strategy["last_messages"]
            .as_u64()
            .map_or(usize::MAX, |n| n as usize),
        _ => usize::MAX,
    };
    let mut used = fixed;
    let mut kept: Vec<Value> = Vec::new();
    let total = input.thread_messages.len();
    for m in input.thread_messages.iter().rev().take(keep_last) {
        let cm = chat_message(m, input.images);
        let t = tokens_of(&cm);
        if used + t > budget {
            break;
        }
        used += t;
        kept.push(cm);
    }
    if kept.is_empty() && total > 0 && tail.is_empty() {
        // Not even the newest message fits. With an explicit prompt budget the run stops
        // `incomplete`; otherwise the upstream gets the newest message and judges itself.
        if prompt_budget.is_some_and(|p| p < window) {
            return Err(Limit::MaxPromptTokens);
        }
        if let Some(m) = input.thread_messages.last() {
            let cm = chat_message(m, input.images);
            used += tokens_of(&cm);
            kept.push(cm);
        }
    }
    let dropped = total - kept.len();
    kept.reverse();

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
        if let Some(tc) = tool_choice(run, input.file_search) {
            body["tool_choice"] = tc;
        }
        body["tools"] = Value::Array(tools);
        body["parallel_tool_calls"] = json!(run.parallel_tool_calls);
    }
    if run.response_format.is_object() {
        body["response_format"] = run.response_format.clone();
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
            default_context: 128_000,
            prompt_tokens_used: 0,
            completion_tokens_used: 0,
            images: &|_| None,
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
}
