//! The few kernel messages we send and read (Jupyter messaging protocol 5.3 as the gateway
//! carries it over its WebSocket: JSON text frames with a `channel` field), and the collector
//! that turns one cell's messages into logs and images.

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::python::HIDDEN_MIME;
use crate::interpreter::executor::Output;

#[derive(Serialize)]
struct Header<'a> {
    msg_id: &'a str,
    session: &'a str,
    username: &'a str,
    date: String,
    msg_type: &'a str,
    version: &'a str,
}

#[derive(Serialize)]
struct ExecuteContent<'a> {
    code: &'a str,
    silent: bool,
    store_history: bool,
    user_expressions: serde_json::Map<String, Value>,
    allow_stdin: bool,
    stop_on_error: bool,
}

#[derive(Serialize)]
struct Request<'a> {
    header: Header<'a>,
    parent_header: serde_json::Map<String, Value>,
    metadata: serde_json::Map<String, Value>,
    content: ExecuteContent<'a>,
    channel: &'a str,
}

/// An `execute_request` on the shell channel. Hidden cells (our own set-up and listings)
/// stay out of the history, so `In`/`Out` and the execution count are the user's alone.
/// `stop_on_error` is off: with it, ipykernel aborts requests that arrive shortly after a
/// failed cell, and our listing cell follows every cell at once.
/// `expressions` are evaluated after the code when it succeeds (`user_expressions`); their
/// values come back in the `execute_reply`.
pub fn execute_request(
    msg_id: &str,
    session: &str,
    code: &str,
    user: bool,
    expressions: &[(&str, &str)],
) -> String {
    let req = Request {
        header: Header {
            msg_id,
            session,
            username: "assistants-proxy",
            date: now_iso8601(),
            msg_type: "execute_request",
            version: "5.3",
        },
        parent_header: Default::default(),
        metadata: Default::default(),
        content: ExecuteContent {
            code,
            silent: false,
            store_history: user,
            user_expressions: expressions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect(),
            allow_stdin: false,
            stop_on_error: false,
        },
        channel: "shell",
    };
    serde_json::to_string(&req).unwrap_or_default()
}

/// A message read from the channels; only the fields we use.
#[derive(Deserialize, Debug)]
pub struct Incoming {
    #[serde(default)]
    pub header: InHeader,
    #[serde(default)]
    pub parent_header: ParentHeader,
    #[serde(default)]
    pub content: Value,
}

#[derive(Deserialize, Debug, Default)]
pub struct InHeader {
    #[serde(default)]
    pub msg_type: String,
}

#[derive(Deserialize, Debug, Default)]
pub struct ParentHeader {
    #[serde(default)]
    pub msg_id: Option<String>,
}

impl Incoming {
    pub fn parse(text: &str) -> Option<Incoming> {
        serde_json::from_str(text).ok()
    }

    fn str_field(&self, key: &str) -> &str {
        self.content.get(key).and_then(Value::as_str).unwrap_or("")
    }

    /// `status` content's `execution_state`.
    pub fn execution_state(&self) -> Option<&str> {
        (self.header.msg_type == "status").then(|| self.str_field("execution_state"))
    }

    pub fn is_for(&self, msg_id: &str) -> bool {
        self.parent_header.msg_id.as_deref() == Some(msg_id)
    }
}

/// Figures kept per execution (a loop that shows one per iteration would otherwise hold
/// them all in memory and turn each into a File).
pub const MAX_IMAGES: usize = 32;

/// What one cell gave, as it arrives.
#[derive(Default)]
pub struct Collector {
    /// Bytes of logs kept per execution (0: no cap, for hidden cells we parse).
    cap: usize,
    kept: usize,
    dropped: usize,
    images: usize,
    images_dropped: usize,
    logs: String,
    pub outputs: Vec<Output>,
    pub error: bool,
    pub reply: bool,
    pub idle: bool,
    /// The kernel was restarted or died under the cell: its state is gone.
    pub died: bool,
    /// `error` content's `ename: evalue`, for hidden cells' failures.
    pub error_text: Option<String>,
    /// Results of our hidden cells (`python::HIDDEN_MIME`), in order.
    pub hidden: Vec<String>,
    /// The `execute_reply`'s `user_expressions` (name → `{status, data}`).
    pub expressions: Option<Value>,
    /// A message of this request arrived (the kernel is alive and has the request).
    pub started: bool,
}

impl Collector {
    pub fn new(cap: usize) -> Collector {
        Collector {
            cap,
            ..Default::default()
        }
    }

    pub fn done(&self) -> bool {
        (self.reply && self.idle) || self.died
    }

    /// Takes one message of the channels; those of other requests are left alone, except
    /// the kernel's own death or restart, which the gateway announces without a parent.
    pub fn take(&mut self, msg: &Incoming, msg_id: &str) {
        if let Some(state) = msg.execution_state()
            && matches!(state, "dead" | "restarting" | "autorestarting")
        {
            self.died = true;
            return;
        }
        if !msg.is_for(msg_id) {
            return;
        }
        self.started = true;
        match msg.header.msg_type.as_str() {
            "status" if msg.execution_state() == Some("idle") => self.idle = true,
            "stream" => {
                let text = msg.str_field("text").to_owned();
                self.push_text(&text);
            }
            "execute_result" | "display_data" => self.take_data(&msg.content),
            "error" => {
                self.error = true;
                let ename = msg.str_field("ename");
                let evalue = msg.str_field("evalue");
                self.error_text = Some(format!("{ename}: {evalue}"));
                let lines: Vec<String> = msg
                    .content
                    .get("traceback")
                    .and_then(Value::as_array)
                    .map(|l| l.iter().filter_map(Value::as_str).map(strip_ansi).collect())
                    .unwrap_or_default();
                let text = if lines.is_empty() {
                    format!("{ename}: {evalue}")
                } else {
                    lines.join("\n")
                };
                self.push_piece(&text);
            }
            "execute_reply" => {
                self.reply = true;
                self.expressions = msg.content.get("user_expressions").cloned();
                if msg.str_field("status") != "ok" {
                    self.error = true;
                }
            }
            _ => {}
        }
    }

    fn take_data(&mut self, content: &Value) {
        let data = content.get("data");
        if let Some(v) = data
            .and_then(|d| d.get(HIDDEN_MIME))
            .and_then(Value::as_str)
        {
            self.hidden.push(v.to_owned());
            return;
        }
        let png = data
            .and_then(|d| d.get("image/png"))
            .and_then(Value::as_str);
        if let Some(png) = png {
            if self.images >= MAX_IMAGES {
                self.images_dropped += 1;
                return;
            }
            let clean: String = png.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(clean) {
                self.flush();
                self.outputs.push(Output::Image(Bytes::from(bytes)));
                self.images += 1;
                return;
            }
        }
        if let Some(text) = data
            .and_then(|d| d.get("text/plain"))
            .and_then(Value::as_str)
        {
            self.push_piece(text);
        }
    }

    /// A value or a traceback: on a line of its own.
    fn push_piece(&mut self, text: &str) {
        if !self.logs.is_empty() && !self.logs.ends_with('\n') {
            self.push_text("\n");
        }
        self.push_text(text);
    }

    fn push_text(&mut self, text: &str) {
        if self.cap == 0 {
            self.logs.push_str(text);
            return;
        }
        let room = self.cap.saturating_sub(self.kept);
        if text.len() <= room {
            self.logs.push_str(text);
            self.kept += text.len();
            return;
        }
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.logs.push_str(&text[..end]);
        self.kept += end;
        self.dropped += text.len() - end;
    }

    /// Logs so far become an output (before an image, and at the end).
    fn flush(&mut self) {
        if !self.logs.is_empty() {
            self.outputs
                .push(Output::Logs(std::mem::take(&mut self.logs)));
        }
    }

    /// Appends a line of our own (a timeout notice), outside the cap.
    pub fn note(&mut self, text: &str) {
        if !self.logs.is_empty() && !self.logs.ends_with('\n') {
            self.logs.push('\n');
        }
        self.logs.push_str(text);
    }

    /// The `text/plain` of a user expression that evaluated.
    pub fn expression(&self, name: &str) -> Option<&str> {
        let e = self.expressions.as_ref()?.get(name)?;
        if e.get("status").and_then(Value::as_str) != Some("ok") {
            return None;
        }
        e.get("data")?.get("text/plain")?.as_str()
    }

    /// The outputs in order, the note about dropped logs last.
    pub fn finish(mut self) -> (Vec<Output>, bool) {
        if self.images_dropped > 0 {
            let note = format!(
                "[{} more figures were not kept (limit {MAX_IMAGES} per execution)]",
                self.images_dropped
            );
            self.note(&note);
        }
        if self.dropped > 0 {
            let note = format!(
                "[output truncated: {} more bytes were dropped (limit {} bytes)]",
                self.dropped, self.cap
            );
            // The note goes after the last logs, even when a figure came later.
            self.note(&note);
        }
        self.flush();
        (self.outputs, self.error)
    }

    #[cfg(test)]
    pub fn text(&self) -> &str {
        &self.logs
    }
}

/// Removes ANSI escape sequences (IPython colours its tracebacks).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            // CSI: parameters and intermediates up to a final byte in @..~.
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ST.
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// UTC now as ISO 8601, which the protocol's `date` field expects.
fn now_iso8601() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(v: Value) -> Incoming {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ansi_colours_are_stripped() {
        let tb = "\u{1b}[0;31mZeroDivisionError\u{1b}[0m: division by zero \u{1b}]8;;x\u{7}l\u{1b}]8;;\u{7}";
        assert_eq!(strip_ansi(tb), "ZeroDivisionError: division by zero l");
    }

    #[test]
    fn a_cell_is_collected_in_order_and_capped() {
        let mut c = Collector::new(10);
        let p = json!({"msg_id": "m"});
        c.take(&msg(json!({"header": {"msg_type": "status"}, "parent_header": {"msg_id": "other"}, "content": {"execution_state": "idle"}})), "m");
        assert!(!c.idle);
        c.take(&msg(json!({"header": {"msg_type": "stream"}, "parent_header": p, "content": {"name": "stdout", "text": "hello\n"}})), "m");
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG");
        c.take(&msg(json!({"header": {"msg_type": "display_data"}, "parent_header": p, "content": {"data": {"text/plain": "<Figure>", "image/png": png}}})), "m");
        c.take(&msg(json!({"header": {"msg_type": "execute_result"}, "parent_header": p, "content": {"data": {"text/plain": "123456789"}}})), "m");
        c.take(&msg(json!({"header": {"msg_type": "execute_reply"}, "parent_header": p, "content": {"status": "ok"}})), "m");
        assert!(!c.done());
        c.take(&msg(json!({"header": {"msg_type": "status"}, "parent_header": p, "content": {"execution_state": "idle"}})), "m");
        assert!(c.done());
        let (outputs, error) = c.finish();
        assert!(!error);
        assert_eq!(outputs.len(), 3);
        assert_eq!(outputs[0], Output::Logs("hello\n".into()));
        assert_eq!(outputs[1], Output::Image(Bytes::from_static(b"\x89PNG")));
        let Output::Logs(last) = &outputs[2] else {
            panic!()
        };
        assert!(
            last.starts_with("1234\n[output truncated: 5 more bytes"),
            "{last}"
        );
    }

    #[test]
    fn figures_past_the_limit_are_counted_not_kept() {
        let mut c = Collector::new(100);
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG");
        for _ in 0..MAX_IMAGES + 3 {
            c.take(&msg(json!({"header": {"msg_type": "display_data"}, "parent_header": {"msg_id": "m"}, "content": {"data": {"image/png": png}}})), "m");
        }
        let (outputs, _) = c.finish();
        assert_eq!(outputs.len(), MAX_IMAGES + 1);
        assert_eq!(
            outputs[MAX_IMAGES],
            Output::Logs(format!(
                "[3 more figures were not kept (limit {MAX_IMAGES} per execution)]"
            ))
        );
    }

    #[test]
    fn errors_and_deaths_are_flagged() {
        let mut c = Collector::new(0);
        let p = json!({"msg_id": "m"});
        c.take(&msg(json!({"header": {"msg_type": "error"}, "parent_header": p, "content": {"ename": "E", "evalue": "v", "traceback": ["\u{1b}[31mE\u{1b}[0m: v"]}})), "m");
        assert!(c.error);
        assert_eq!(c.text(), "E: v");
        c.take(&msg(json!({"header": {"msg_type": "status"}, "parent_header": {}, "content": {"execution_state": "restarting"}})), "m");
        assert!(c.done() && c.died);
    }

    #[test]
    fn requests_carry_the_code_and_a_date() {
        let r: Value = serde_json::from_str(&execute_request(
            "m",
            "s",
            "print(1)",
            false,
            &[("l", "1 + 1")],
        ))
        .unwrap();
        assert_eq!(r["content"]["code"], "print(1)");
        assert_eq!(r["content"]["store_history"], false);
        assert_eq!(r["channel"], "shell");
        assert_eq!(r["content"]["user_expressions"]["l"], "1 + 1");
        let date = r["header"]["date"].as_str().unwrap();
        assert!(
            date.len() == 27 && date.ends_with('Z') && date.starts_with("20"),
            "{date}"
        );
    }
}
