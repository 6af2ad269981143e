//! The `OpenAI-Beta` header: on the Assistants beta routes (assistants, threads and everything
//! under them) no header means v2, `assistants=v1` / `assistants=v2` pick the shape (other
//! betas' tokens beside it are fine), and anything else is OpenAI's 400 `invalid_beta`. Files
//! and vector stores are GA: they ignore the header.

use serde_json::json;

use crate::both_backends;
use crate::support::{Api, FakeUpstream, TestProxy, assert_error};

const INVALID_BETA: &str = "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please try again by setting the header 'OpenAI-Beta: assistants=v2'.";

both_backends!(
    the_beta_header_picks_the_shape_or_is_refused,
    |backend| async move {
        let up = FakeUpstream::start().await;
        let proxy = TestProxy::start_backend(&up.url(), backend).await;
        let v2 = Api::new(&proxy);
        let mut bare = v2.clone();
        bare.headers.clear();

        // No header: served as v2 (OpenAI refused this; the proxy is lenient).
        let a = bare
            .ok(
                "/v1/assistants",
                json!({"model": "gpt-4o", "tools": [{"type": "file_search"}]}),
            )
            .await;
        assert!(a.get("tool_resources").is_some(), "{a}");
        assert!(a.get("file_ids").is_none(), "{a}");
        let aid = a["id"].as_str().unwrap().to_owned();

        // v1 and v2, alone or beside other betas' tokens, in one field or several.
        for (value, v1) in [
            ("assistants=v2", false),
            ("assistants=v1", true),
            ("assistants=v2, realtime=v1", false),
            ("realtime=v1,assistants=v1", true),
        ] {
            let api = v2.clone().with_header("openai-beta", value);
            let (s, got) = api.get(&format!("/v1/assistants/{aid}")).await;
            assert_eq!(s, 200, "{value}: {got}");
            assert_eq!(got.get("file_ids").is_some(), v1, "{value}: {got}");
            assert_eq!(got.get("tool_resources").is_none(), v1, "{value}: {got}");
        }

        // Anything else, on every kind of beta route (before the object is even looked up).
        let t = v2.ok("/v1/threads", json!({})).await;
        let tid = t["id"].as_str().unwrap();
        for value in [
            "",
            "realtime=v1",
            "assistants=v3",
            "assistants",
            "assistants=v1, assistants=v2",
        ] {
            let api = v2.clone().with_header("openai-beta", value);
            for (method, path) in [
                ("GET", "/v1/assistants".to_owned()),
                ("POST", "/v1/assistants".to_owned()),
                ("POST", "/v1/threads".to_owned()),
                ("GET", format!("/v1/threads/{tid}")),
                ("GET", format!("/v1/threads/{tid}/messages")),
                ("GET", format!("/v1/threads/{tid}/runs")),
                ("GET", format!("/v1/threads/{tid}/runs/run_x/steps")),
                ("POST", "/v1/threads/runs".to_owned()),
            ] {
                let got = match method {
                    "GET" => api.get(&path).await,
                    _ => api.post(&path, json!({"model": "gpt-4o"})).await,
                };
                assert_error(&got, 400, Some("invalid_beta"), None);
                assert_eq!(got.1["error"]["type"], "invalid_request_error");
                assert_eq!(
                    got.1["error"]["message"], INVALID_BETA,
                    "{value} {method} {path}"
                );
            }
        }

        // Files and vector stores work with or without the header, whatever other betas it names.
        for value in [
            None,
            Some("assistants=v2"),
            Some("realtime=v1"),
            Some("assistants=v3"),
            Some(""),
        ] {
            let api = match value {
                Some(v) => bare.clone().with_header("openai-beta", v),
                None => bare.clone(),
            };
            let vs = api.ok("/v1/vector_stores", json!({"name": "ga"})).await;
            assert_eq!(vs["object"], "vector_store", "{value:?}");
            let (s, got) = api
                .get(&format!("/v1/vector_stores/{}", vs["id"].as_str().unwrap()))
                .await;
            assert_eq!(s, 200, "{value:?}: {got}");
            let (s, got) = api.get("/v1/files").await;
            assert_eq!(s, 200, "{value:?}: {got}");
        }
        proxy.shutdown().await;
    }
);
