//! Logging set-up. Headers are never logged by the proxy; `redacted` exists for the few debug
//! paths that must show a header map, and masks every credential-bearing header.
//!
//! Values in log lines often come from requests (a refused field's value, an error message
//! quoting it). In the pretty format every field, the message and span fields included, is
//! written through [`EscapedFields`], which escapes control characters: a value holding a
//! newline and a made-up log line cannot forge a line of its own, and NULs or terminal escapes
//! do not reach the log raw. The JSON format quotes (and so escapes) every string already.

use std::fmt::{self, Write as _};

use http::HeaderMap;
use tracing::field::{Field, Visit};
use tracing::{Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};
use tracing_subscriber::fmt::{FormattedFields, MakeWriter};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

use crate::secrets::SECRET_HEADERS;

/// Installs the global subscriber (`RUST_LOG` filters; default `info`) writing to stderr.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // As the fmt builder's own `try_init`: also routes `log` records of dependencies here.
    if subscriber(format, filter, std::io::stderr)
        .try_init()
        .is_err()
    {
        // A subscriber is already installed (tests); keep it.
    }
}

/// The subscriber `init` installs, writing to `writer` (tests capture its output).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Pretty => Box::new(builder.fmt_fields(EscapedFields).compact().finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// Formats fields as tracing-subscriber's default does (the message, then `name=value`
/// pairs, values in their `Debug` form), with every control character escaped as Rust
/// escapes it (`\n`, `\0`, `\u{1b}`).
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        let mut visitor = FieldVisitor {
            out: Escaping(writer),
            ansi,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        if !current.fields.is_empty() {
            current.fields.push(' ');
        }
        self.format_fields(current.as_writer(), fields)
    }
}

/// Writes through to the log line, escaping what must not appear raw in it.
struct Escaping<'w>(Writer<'w>);

/// Characters that could end a log line or act on a terminal: the C0 and C1 controls (NUL,
/// newline, ESC…), DEL, and the Unicode line and paragraph separators.
fn must_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| must_escape(c)) {
            self.0.write_str(&rest[..at])?;
            write!(self.0, "{}", c.escape_debug())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

struct FieldVisitor<'w> {
    out: Escaping<'w>,
    /// Field names are set off in italics, as the default formatter does on a terminal.
    ansi: bool,
    empty: bool,
    result: fmt::Result,
}

impl FieldVisitor<'_> {
    /// Writes one field; `value` writes the value, escaped.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Escaping<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        // `log` records carry their metadata as fields, already shown by the formatter.
        if name.starts_with("log.") {
            return;
        }
        self.result = (|| {
            if !self.empty {
                self.out.0.write_char(' ')?;
            }
            self.empty = false;
            if name != "message" {
                let name = name.strip_prefix("r#").unwrap_or(name);
                if self.ansi {
                    write!(self.out.0, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
                } else {
                    write!(self.out.0, "{name}=")?;
                }
            }
            value(&mut self.out)
        })();
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, |out| out.write_str(value));
        } else {
            self.field(field, |out| write!(out, "{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |out| {
            write!(out, "{value}")?;
            let mut source = value.source();
            while let Some(s) = source {
                write!(out, ": {s}")?;
                source = s.source();
            }
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| write!(out, "{value:?}"));
    }
}

/// A printable copy of a header map with secret values masked.
pub fn redacted(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let value = if SECRET_HEADERS.contains(&k.as_str()) {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn secrets_are_masked() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        h.insert("astra-api-token", "AstraCS:secret".parse().unwrap());
        h.insert("x-ok", "visible".parse().unwrap());
        let text = format!("{:?}", redacted(&h));
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("visible"));
    }

    /// Everything a subscriber writes, for inspection.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    const FORGED: &str = "x\n2026-12-07T00:00:00.000000Z  INFO assistants_proxy: forged\0";

    /// Logs a request-controlled value every way the proxy logs values: in a span field, as a
    /// `%` (Display) and a `?` (Debug) field, a plain string field, an error, and the message.
    fn log_everything(format: LogFormat) -> String {
        let out = Captured::default();
        let sub = subscriber(format, EnvFilter::new("trace"), out.clone());
        tracing::subscriber::with_default(sub, || {
            let err = std::io::Error::other(FORGED);
            let span = tracing::info_span!("request", path = %FORGED);
            let _g = span.enter();
            tracing::info!(shown = %FORGED, debug = ?FORGED, plain = FORGED, error = &err as &(dyn std::error::Error + 'static), "refused {FORGED}");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn pretty_lines_escape_control_characters_in_every_value() {
        let text = log_everything(LogFormat::Pretty);
        assert_eq!(text.lines().count(), 1, "one event, one line:\n{text}");
        assert!(!text.contains('\0'), "{text:?}");
        // Every value appears escaped: the message, the span field, the Display, Debug and
        // string fields and the error.
        let escaped = r"x\n2026-12-07T00:00:00.000000Z  INFO assistants_proxy: forged\0";
        assert!(
            text.matches(escaped).count() >= 6,
            "expected six escaped copies in {text:?}"
        );
        assert!(text.contains("refused x\\n2026"), "{text:?}");
    }

    #[test]
    fn escaping_leaves_ordinary_text_alone() {
        let mut out = String::new();
        write!(Escaping(Writer::new(&mut out)), "héllo wörld \" \\ {{}} ✓").unwrap();
        assert_eq!(out, "héllo wörld \" \\ {} ✓");
        let mut out = String::new();
        write!(
            Escaping(Writer::new(&mut out)),
            "a\r\nb\tc\u{1b}[31md\u{7f}e\u{85}f\u{2028}g"
        )
        .unwrap();
        assert_eq!(out, r"a\r\nb\tc\u{1b}[31md\u{7f}e\u{85}f\u{2028}g");
    }

    #[test]
    fn json_lines_quote_control_characters() {
        let text = log_everything(LogFormat::Json);
        assert_eq!(text.lines().count(), 1, "one event, one line:\n{text}");
        assert!(!text.contains('\0'), "{text:?}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        // The values come back exactly, the newline and NUL included.
        assert_eq!(line["shown"], FORGED);
        assert_eq!(line["plain"], FORGED);
        assert_eq!(line["message"], format!("refused {FORGED}"));
        assert_eq!(line["span"]["path"], FORGED);
    }
}
