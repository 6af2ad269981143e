//! Values from requests cannot forge log lines: the binary logs a refused value holding a
//! newline, a made-up log line and a NUL, in both log formats.

use serde_json::json;

use crate::binary::Proc;
use crate::support::{Api, FakeUpstream, client, new_key};

const FORGED_LINE: &str = "2026-12-07T00:00:00.000000Z  INFO assistants_proxy: admin logged in";

#[tokio::test]
async fn a_refused_value_with_a_newline_and_a_nul_is_logged_escaped() {
    let up = FakeUpstream::start().await;
    for format in ["pretty", "json"] {
        let dir = tempfile::tempdir().unwrap();
        // Refusals are logged at debug.
        let env = [
            ("RUST_LOG", "assistants_proxy=debug"),
            ("ASSISTANTS_PROXY_LOG_FORMAT", format),
            // No colours: the assertions read the text.
            ("NO_COLOR", "1"),
        ];
        let mut proxy = Proc::start(&up.url(), &env, dir.path()).await;
        let api = Api {
            base: proxy.url(""),
            key: new_key(),
            client: client(),
            headers: vec![],
        };
        let value = format!("x\n{FORGED_LINE}\0");
        let (status, body) = api
            .post(
                "/v1/assistants",
                json!({"model": "gpt-4o", "tools": [{"type": value}]}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_value");
        let (_, logs) = proxy.terminate();
        assert!(
            logs.lines().all(|l| !l.starts_with(FORGED_LINE)),
            "{format}: a log line was forged:\n{logs}"
        );
        assert!(!logs.contains('\0'), "{format}: a raw NUL in the log");
        let refused = logs
            .lines()
            .find(|l| l.contains("request refused"))
            .unwrap_or_else(|| panic!("{format}: the refusal was not logged:\n{logs}"));
        match format {
            "pretty" => assert!(
                refused.contains(&format!("x\\n{FORGED_LINE}\\0")),
                "the value is shown escaped: {refused}"
            ),
            _ => {
                let line: serde_json::Value = serde_json::from_str(refused).unwrap();
                assert!(
                    line["error"].as_str().unwrap().contains(&value),
                    "the value comes back exactly: {line}"
                );
            }
        }
    }
}
