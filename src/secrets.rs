//! Keeping credentials out of what the proxy keeps and returns: text that comes from the
//! upstream (an error message, which some upstreams write with the caller's whole key in it:
//! "Incorrect API key provided: sk-…") passes through a [`Scrubber`] before the proxy stores
//! it in a run's `last_error`, answers it to a client or logs it.

use http::HeaderMap;

/// Headers whose values are secrets: API keys, database tokens, cookies. Logs mask them, and
/// upstream text is scrubbed of the credentials among them.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "openai-api-key",
    "astra-api-token",
    "cookie",
    "set-cookie",
];
/// Shown in place of a credential.
const REDACTED: &str = "[redacted]";
/// Prefixes of credentials hidden wherever they appear, whoever's they are: OpenAI keys
/// (`sk-`, `sk-proj-`, `sk-svcacct-`, `sk-admin-`), Astra tokens, and bearer values.
const KEY_PREFIXES: &[&str] = &["sk-", "AstraCS:", "Bearer "];
/// Characters after a prefix that a key shaped like one must have (short words such as
/// "sk-learn" are not keys).
const MIN_KEY_TAIL: usize = 12;
/// The caller's own keys are replaced wherever they appear, even inside other words; a
/// value this short would be no secret, and replacing it everywhere would garble the text.
const MIN_KNOWN_LEN: usize = 6;

/// Hides the credentials of one request (and anything shaped like a credential) in text.
#[derive(Clone, Default)]
pub struct Scrubber {
    known: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("known", &self.known.len())
            .finish()
    }
}

impl Scrubber {
    /// The scrubber for a request with these headers: its bearer key (the caller's, or the
    /// proxy's configured one) and any other credential header is hidden.
    pub fn for_headers(headers: &HeaderMap) -> Scrubber {
        let mut known = Vec::new();
        // Cookies are no key an upstream would quote back.
        let keys = SECRET_HEADERS.iter().filter(|h| !h.ends_with("cookie"));
        for name in keys {
            for v in headers.get_all(*name) {
                let Ok(text) = v.to_str() else { continue };
                let text = text.trim();
                let key = match text.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                    _ => text,
                };
                if key.len() >= MIN_KNOWN_LEN {
                    known.push(key.to_owned());
                }
            }
        }
        Scrubber { known }
    }

    /// `text` with every known key and every key-shaped token replaced.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for key in &self.known {
            if out.contains(key.as_str()) {
                out = out.replace(key.as_str(), REDACTED);
            }
        }
        scrub_key_shapes(&out)
    }
}

/// Whether `c` can be part of a key (base64 and URL-safe alphabets, the separators keys use,
/// and the `*` of a key an upstream masked only in part).
fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+' | '/' | '=' | '*')
}

/// Replaces every token that starts with a key prefix (at a word boundary) and goes on for
/// at least [`MIN_KEY_TAIL`] key characters.
pub fn scrub_key_shapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    'scan: while let Some(c) = rest.chars().next() {
        let at_boundary = prev.is_none_or(|p| !(p.is_ascii_alphanumeric() || p == '_' || p == '-'));
        if at_boundary {
            for prefix in KEY_PREFIXES {
                let Some(tail) = rest.strip_prefix(prefix) else {
                    continue;
                };
                let len: usize = tail
                    .chars()
                    .take_while(|c| key_char(*c))
                    .map(char::len_utf8)
                    .sum();
                if tail[..len].chars().count() >= MIN_KEY_TAIL {
                    out.push_str(prefix);
                    out.push_str(REDACTED);
                    rest = &tail[len..];
                    prev = Some(']');
                    continue 'scan;
                }
            }
        }
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_key_is_hidden_wherever_it_appears() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer my-own-key-123".parse().unwrap());
        let s = Scrubber::for_headers(&h);
        assert_eq!(
            s.scrub("Incorrect API key provided: my-own-key-123. See docs (my-own-key-123x)."),
            "Incorrect API key provided: [redacted]. See docs ([redacted]x)."
        );
        assert!(!format!("{s:?}").contains("my-own"));
    }

    #[test]
    fn key_shaped_tokens_are_hidden_whoever_they_belong_to() {
        assert_eq!(
            scrub_key_shapes("key sk-proj-abcdefghijklmnop1234 is wrong"),
            "key sk-[redacted] is wrong"
        );
        assert_eq!(
            scrub_key_shapes("Incorrect API key provided: sk-proj-********************abcd."),
            "Incorrect API key provided: sk-[redacted]"
        );
        assert_eq!(
            scrub_key_shapes("token=AstraCS:abcdefgh:0123456789abcdef\nnext"),
            "token=AstraCS:[redacted]\nnext"
        );
        assert_eq!(
            scrub_key_shapes("header Authorization: Bearer abcdefghijklmnopq"),
            "header Authorization: Bearer [redacted]"
        );
        // Words that merely contain a prefix, and short tails, are left alone.
        for plain in [
            "task-manager-of-the-year-2026",
            "use sk-learn here",
            "risk-assessment-document-final",
            "Bearer token",
            "résumé sk-é",
        ] {
            assert_eq!(scrub_key_shapes(plain), plain);
        }
    }

    #[test]
    fn short_header_values_are_not_treated_as_secrets() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer ab".parse().unwrap());
        assert_eq!(Scrubber::for_headers(&h).scrub("a cab"), "a cab");
    }
}
