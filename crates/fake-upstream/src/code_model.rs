//! The `code-interpreter` models of the fake upstream: a deterministic "model" that runs the
//! fenced code blocks of the user's last message through a function tool named
//! `code_interpreter`, one block per call, so the proxy's code_interpreter tool can be driven end
//! to end (and through the official SDKs) with code chosen by the test.
//!
//! Kept apart from `openai.rs` because it is one self-contained rule set: which block to run
//! next ([`code_reply`]), and how its JSON arguments are cut for streaming ([`code_pieces`]),
//! finer than other calls so the proxy must decode the code incrementally.

use serde_json::{Value, json};

use super::openai::{ScriptedReply, content_text, tool_results_text};

/// The function name the proxy offers code_interpreter under.
pub const CODE_TOOL: &str = "code_interpreter";
/// Characters per streamed argument piece of a `code_interpreter` call.
pub const CODE_PIECE_CHARS: usize = 12;

/// The fenced code blocks of `text`, in order: ```` ```…``` ```` or ```` ```python\n…``` ````.
/// A language tag directly followed by a line break is dropped, as is the line break before
/// the closing fence. An unclosed fence is not a block.
pub fn code_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let tag_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-')))
            .unwrap_or(after.len());
        let body = match after[tag_len..].strip_prefix("\r\n") {
            Some(b) => b,
            None => after[tag_len..].strip_prefix('\n').unwrap_or(after),
        };
        let Some(close) = body.find("```") else {
            break;
        };
        let code = &body[..close];
        let code = code
            .strip_suffix("\r\n")
            .or_else(|| code.strip_suffix('\n'))
            .unwrap_or(code);
        out.push(code.to_owned());
        rest = &body[close + 3..];
    }
    out
}

/// Number of `tool` messages after the last user message: the blocks already run.
pub fn tool_messages_since_user(request: &Value) -> usize {
    let Some(messages) = request["messages"].as_array() else {
        return 0;
    };
    messages
        .iter()
        .rev()
        .take_while(|m| m["role"] != "user")
        .filter(|m| m["role"] == "tool")
        .count()
}

fn offers_code_tool(request: &Value) -> bool {
    request["tools"].as_array().is_some_and(|tools| {
        tools
            .iter()
            .any(|t| t["type"] == "function" && t["function"]["name"] == CODE_TOOL)
    })
}

/// The reply of a model whose name contains `code-interpreter`: while blocks of the last user
/// message remain un-run (`k` = tool messages since it) and the request offers the
/// `code_interpreter` function and `tool_choice` allows it, call it with `{"code": blocks[k]}`
/// (with `parallel` in the model name and `parallel_tool_calls` not false: every remaining
/// block, one call each). Otherwise the `tool-call` model's `Tool results: …` summary of the
/// trailing tool messages, or the default echo when none ran (`None`).
pub fn code_reply(request: &Value, parallel: bool) -> Option<ScriptedReply> {
    let choice = &request["tool_choice"];
    let allowed = choice != "none"
        && choice["function"]["name"]
            .as_str()
            .is_none_or(|forced| forced == CODE_TOOL);
    if allowed && offers_code_tool(request) {
        let blocks = request["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| content_text(&m["content"]))
            .map(|t| code_blocks(&t))
            .unwrap_or_default();
        let k = tool_messages_since_user(request);
        if k < blocks.len() {
            let take = if parallel && request["parallel_tool_calls"] != false {
                blocks.len() - k
            } else {
                1
            };
            let calls = blocks[k..k + take]
                .iter()
                .map(|code| (CODE_TOOL.to_owned(), json!({ "code": code }).to_string()))
                .collect();
            return Some(ScriptedReply::ToolCalls(calls));
        }
    }
    tool_results_text(request).map(ScriptedReply::Text)
}

/// A `code_interpreter` call's argument text cut into [`CODE_PIECE_CHARS`]-character pieces on
/// character boundaries, plus one cut right after the backslash of the first JSON escape and one
/// inside the first `\uXXXX` escape: a proxy that decodes escapes chunk by chunk is exercised.
pub fn code_pieces(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    let mut cuts: Vec<usize> = (1..)
        .map(|i| i * CODE_PIECE_CHARS)
        .take_while(|c| *c < chars.len())
        .collect();
    let mut escaped = false;
    let mut first_escape = None;
    let mut first_unicode = None;
    for (i, c) in chars.iter().enumerate() {
        if escaped {
            escaped = false;
            if *c == 'u' && first_unicode.is_none() {
                first_unicode = Some(i + 3);
            }
        } else if *c == '\\' {
            escaped = true;
            first_escape.get_or_insert(i + 1);
        }
    }
    cuts.extend(first_escape.into_iter().chain(first_unicode));
    cuts.retain(|c| *c > 0 && *c < chars.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts.into_iter().chain(std::iter::once(chars.len())) {
        out.push(chars[start..cut].iter().collect());
        start = cut;
    }
    out
}
