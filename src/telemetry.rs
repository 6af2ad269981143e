//! Logging set-up. Headers are never logged by the proxy; `redacted` exists for the few debug
//! paths that must show a header map, and masks every credential-bearing header.

use http::HeaderMap;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Headers whose values are secrets: API keys, database tokens, cookies.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "openai-api-key",
    "astra-api-token",
    "cookie",
    "set-cookie",
];

/// Installs the global subscriber (`RUST_LOG` filters; default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if result.is_err() {
        // A subscriber is already installed (tests); keep it.
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
}
