//! `rewrite_query: true` on `POST /v1/vector_stores/{id}/search`: the upstream's chat model
//! (`[retrieval] rewrite_model`) rewrites the query, the rewrite is what is searched and what
//! `search_query` reports, and an upstream that cannot rewrite is a clear error.

use serde_json::json;

use crate::both_backends;
use crate::fixtures::{upload, wait_store};
use crate::support::fake_upstream::ScriptedReply;
use crate::support::{Api, FakeUpstream, TestProxy, assert_error, id};

const SPACE: &str = "rockets planets galaxies orbit astronaut launch telescope nebula";
const FRUIT: &str = "apples bananas cherries orchard harvest ripe juicy fruit basket";

both_backends!(rewrite_query_asks_the_model, |backend| async move {
    let up = FakeUpstream::start().await;
    let proxy = TestProxy::start_backend_with(
        &up.url(),
        backend,
        "[retrieval]\nrewrite_model = \"fake-rewriter\"\n",
    )
    .await;
    let api = Api::new(&proxy);
    let space = id(&upload(&api, "space.md", "assistants", SPACE.as_bytes()).await);
    let fruit = id(&upload(&api, "fruit.md", "assistants", FRUIT.as_bytes()).await);
    let vs = id(&api
        .ok("/v1/vector_stores", json!({"file_ids": [space, fruit]}))
        .await);
    wait_store(&api, &vs).await;
    let search = format!("/v1/vector_stores/{vs}/search");
    let question = "what do the things that circle the sun look like?";

    // Without rewrite_query nothing is asked and the question is searched as is.
    up.clear_requests();
    let plain = api
        .ok(&search, json!({"query": question, "max_num_results": 1}))
        .await;
    assert_eq!(plain["search_query"], json!([question]));
    assert!(up.chat_requests().is_empty());

    // With it, the model's rewrite is searched and reported.
    up.push_chat_script(ScriptedReply::text("\"rockets planets orbit\"\n"));
    let res = api
        .ok(
            &search,
            json!({"query": question, "rewrite_query": true, "max_num_results": 1}),
        )
        .await;
    assert_eq!(res["search_query"], json!(["rockets planets orbit"]));
    assert_eq!(res["data"][0]["file_id"], space.as_str(), "{res}");
    let chats = up.chat_requests();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["model"], "fake-rewriter");
    assert_eq!(chats[0]["stream"], false);
    assert_eq!(chats[0]["messages"][1]["content"], question);
    let sent = up
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(
        sent.header("authorization").unwrap(),
        format!("Bearer {}", api.key)
    );

    // Each query of a list is rewritten.
    up.push_chat_script(ScriptedReply::text("apples orchard"));
    up.push_chat_script(ScriptedReply::text("telescope nebula"));
    let res = api
        .ok(
            &search,
            json!({"query": ["fruit?", "stars?"], "rewrite_query": true}),
        )
        .await;
    let mut reported: Vec<String> = res["search_query"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap().to_owned())
        .collect();
    reported.sort();
    assert_eq!(reported, ["apples orchard", "telescope nebula"]);

    // An upstream failure is the search's failure, said plainly (no silent raw search).
    up.push_chat_script(ScriptedReply::server_error());
    let e = api
        .post(&search, json!({"query": question, "rewrite_query": true}))
        .await;
    assert_error(&e, 502, Some("rewrite_failed"), None);
    assert!(
        e.1["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("rewrite_query: the upstream model 'fake-rewriter' could not rewrite")
    );
    // A model the upstream does not serve is the caller's 400, naming the setting.
    up.push_chat_script(ScriptedReply::Error {
        status: 404,
        body: json!({"error": {"message": "The model `fake-rewriter` does not exist.",
            "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
    });
    let e = api
        .post(&search, json!({"query": question, "rewrite_query": true}))
        .await;
    assert_error(&e, 400, None, Some("rewrite_query"));
    assert!(
        e.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rewrite_model")
    );
    proxy.shutdown().await;
});
