//! The code of a code_interpreter call, decoded while its JSON arguments stream in: the
//! model writes `{"code": "import pandas as pd\n…"}` in fragments that may cut anywhere,
//! even inside an escape (`\`, then `n` in the next chunk), and clients are shown the code
//! as it is generated (`code_interpreter.input` deltas), not all at once at the end. Pure.

/// Where the decoder is in the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening quote of the `code` value.
    Seeking,
    /// Inside the `code` string.
    InCode,
    /// After its closing quote: the rest is ignored.
    Done,
}

/// Decodes the `code` string of streamed call arguments incrementally.
#[derive(Debug, Clone)]
pub struct CodeArgs {
    state: State,
    /// Text not decoded yet: while seeking, everything so far; in the string, an escape
    /// cut by a fragment boundary.
    pending: String,
    /// All arguments seen (the final code is taken from the whole JSON when it parses).
    raw: String,
}

impl Default for CodeArgs {
    fn default() -> Self {
        CodeArgs::new()
    }
}

impl CodeArgs {
    pub fn new() -> CodeArgs {
        CodeArgs {
            state: State::Seeking,
            pending: String::new(),
            raw: String::new(),
        }
    }

    /// Consumes one fragment of the arguments; returns the code it completes (possibly
    /// empty).
    pub fn push(&mut self, fragment: &str) -> String {
        self.raw.push_str(fragment);
        let mut out = String::new();
        match self.state {
            State::Done => return out,
            State::Seeking => {
                self.pending.push_str(fragment);
                let Some(start) = code_value_start(&self.pending) else {
                    return out;
                };
                let rest = self.pending[start..].to_owned();
                self.pending.clear();
                self.state = State::InCode;
                self.decode(&rest, &mut out);
            }
            State::InCode => {
                let text = std::mem::take(&mut self.pending) + fragment;
                self.decode(&text, &mut out);
            }
        }
        out
    }

    /// The whole code once the arguments are complete: the `code` field when they parse as
    /// JSON, else the raw arguments themselves (some models send bare code).
    pub fn finish(arguments: &str) -> String {
        match serde_json::from_str::<serde_json::Value>(arguments) {
            Ok(v) => match v.get("code").and_then(|c| c.as_str()) {
                Some(code) => code.to_owned(),
                None => v
                    .as_str()
                    .map_or_else(|| arguments.to_owned(), str::to_owned),
            },
            Err(_) => arguments.to_owned(),
        }
    }

    /// Decodes string content from `text`, keeping an incomplete escape for later.
    fn decode(&mut self, text: &str, out: &mut String) {
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.state = State::Done;
                    return;
                }
                '\\' => match decode_escape(&text[i..]) {
                    Escape::Char(ch, len) => {
                        out.push(ch);
                        // Skip the rest of the escape (all ASCII: byte count = char count).
                        for _ in 1..len {
                            chars.next();
                        }
                    }
                    Escape::Incomplete => {
                        self.pending = text[i..].to_owned();
                        return;
                    }
                    Escape::Invalid(len) => {
                        for _ in 1..len {
                            chars.next();
                        }
                    }
                },
                c => out.push(c),
            }
        }
    }
}

/// Byte offset just after the opening quote of the `code` value, if it has arrived.
fn code_value_start(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = text[from..].find("\"code\"") {
        let after = from + pos + "\"code\"".len();
        let rest = &text[after..];
        let trimmed = rest.trim_start();
        if let Some(r) = trimmed.strip_prefix(':') {
            let value = r.trim_start();
            if let Some(stripped) = value.strip_prefix('"') {
                return Some(text.len() - stripped.len());
            }
            if value.is_empty() {
                return None;
            }
        } else if trimmed.is_empty() {
            return None;
        }
        from = after;
    }
    None
}

enum Escape {
    /// The character and the escape's length in bytes.
    Char(char, usize),
    Incomplete,
    /// Not a valid escape: skipped (its length in bytes).
    Invalid(usize),
}

/// Decodes the escape at the start of `s` (which begins with `\`).
fn decode_escape(s: &str) -> Escape {
    let b = s.as_bytes();
    let Some(&kind) = b.get(1) else {
        return Escape::Incomplete;
    };
    let simple = match kind {
        b'n' => Some('\n'),
        b't' => Some('\t'),
        b'r' => Some('\r'),
        b'b' => Some('\u{8}'),
        b'f' => Some('\u{c}'),
        b'/' => Some('/'),
        b'\\' => Some('\\'),
        b'"' => Some('"'),
        b'u' => None,
        _ => return Escape::Invalid(1 + s[1..].chars().next().map_or(0, char::len_utf8)),
    };
    if let Some(c) = simple {
        return Escape::Char(c, 2);
    }
    let Some(hi) = hex4(s, 2) else {
        return if s.len() < 6 {
            Escape::Incomplete
        } else {
            Escape::Invalid(2)
        };
    };
    if !(0xD800..0xDC00).contains(&hi) {
        return match char::from_u32(hi) {
            Some(c) => Escape::Char(c, 6),
            None => Escape::Char('\u{FFFD}', 6),
        };
    }
    // A high surrogate: its low half follows as another \u escape.
    if s.len() < 12 {
        let tail = &s[6..];
        let could_follow = "\\u".starts_with(&tail[..tail.len().min(2)]);
        return if could_follow {
            Escape::Incomplete
        } else {
            Escape::Char('\u{FFFD}', 6)
        };
    }
    match (&s[6..8], hex4(s, 8)) {
        ("\\u", Some(lo)) if (0xDC00..0xE000).contains(&lo) => {
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            Escape::Char(char::from_u32(c).unwrap_or('\u{FFFD}'), 12)
        }
        _ => Escape::Char('\u{FFFD}', 6),
    }
}

fn hex4(s: &str, at: usize) -> Option<u32> {
    let h = s.get(at..at + 4)?;
    if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(h, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `args` cut at every `size` bytes (on char boundaries) and joins the output.
    fn streamed(args: &str, size: usize) -> (String, usize) {
        let mut d = CodeArgs::new();
        let mut out = String::new();
        let mut pieces = 0;
        let chars: Vec<char> = args.chars().collect();
        for piece in chars.chunks(size) {
            let s: String = piece.iter().collect();
            let got = d.push(&s);
            pieces += usize::from(!got.is_empty());
            out.push_str(&got);
        }
        (out, pieces)
    }

    #[test]
    fn code_decodes_the_same_whatever_the_cuts() {
        let code = "import pandas as pd\nprint(\"a\\tb\")\t# é → 😀 \u{1}\n";
        let args = serde_json::json!({ "code": code }).to_string();
        let ascii = serde_json::to_string(&serde_json::json!({ "code": code }))
            .unwrap()
            .replace('é', "\\u00e9")
            .replace('😀', "\\ud83d\\ude00");
        for a in [&args, &ascii] {
            for size in 1..=a.chars().count() {
                assert_eq!(streamed(a, size).0, code, "cut every {size}: {a}");
            }
            assert_eq!(CodeArgs::finish(a), code);
        }
        assert!(
            streamed(&args, 5).1 > 3,
            "the code arrives in several pieces"
        );
    }

    #[test]
    fn other_fields_and_spacing_around_the_code_are_skipped() {
        let args = r#"{ "lang" : "py", "code" :  "x = 1\n", "note": "\"code\""}"#;
        for size in 1..=args.len() {
            assert_eq!(streamed(args, size).0, "x = 1\n", "{size}");
        }
        assert_eq!(CodeArgs::finish(args), "x = 1\n");
    }

    #[test]
    fn bare_code_and_broken_escapes_do_not_break_the_decoder() {
        assert_eq!(streamed("print(1)", 3).0, "");
        assert_eq!(CodeArgs::finish("print(1)"), "print(1)");
        assert_eq!(CodeArgs::finish("\"print(2)\""), "print(2)");
        assert_eq!(streamed(r#"{"code": "a\qb\ud83dc"}"#, 2).0, "ab\u{FFFD}c");
        assert_eq!(streamed(r#"{"code": "a\u12"#, 1).0, "a");
    }
}
