//! `/v1/vector_stores`: stores, their files, batches and search, with ingestion running
//! against the fake upstream's deterministic embeddings (whose cosine similarity tracks
//! shared words, so texts with distinct vocabularies rank predictably).

use std::time::Duration;

use assistants_proxy::ids::now_secs;
use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::{docx, pdf, tenant_of, upload, wait_batch, wait_file, wait_store};
use crate::support::{assert_error, id, setup};

const FRUIT: &str =
    "apples bananas cherries orchard harvest ripe juicy fruit basket orchard apples";
const SPACE: &str =
    "rockets planets galaxies orbit astronaut launch telescope nebula rockets orbit";
const MUSIC: &str = "violins cellos orchestra symphony concert conductor melody rehearsal violins";

fn doc(words: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{words} line{i}."))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

both_backends!(store_lifecycle_and_validation, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    let vs = api
        .ok(
            "/v1/vector_stores",
            json!({"name": "Docs", "description": "not returned", "metadata": {"team": "a"},
                   "expires_after": {"anchor": "last_active_at", "days": 7}}),
        )
        .await;
    let keys: Vec<&str> = vs.as_object().unwrap().keys().map(String::as_str).collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "created_at",
            "expires_after",
            "expires_at",
            "file_counts",
            "id",
            "last_active_at",
            "metadata",
            "name",
            "object",
            "status",
            "usage_bytes"
        ]
    );
    assert_eq!(vs["object"], "vector_store");
    assert_eq!(vs["status"], "completed");
    assert_eq!(vs["usage_bytes"], 0);
    assert_eq!(
        vs["file_counts"],
        json!({"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0})
    );
    assert_eq!(
        vs["expires_at"],
        vs["last_active_at"].as_i64().unwrap() + 7 * 86_400
    );
    let vs_id = id(&vs);
    assert!(vs_id.starts_with("vs_"));

    let (status, got) = api.get(&format!("/v1/vector_stores/{vs_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "Docs");
    let modified = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}"),
            json!({"name": "Renamed", "expires_after": null, "metadata": {"team": "b"}}),
        )
        .await;
    assert_eq!(modified["name"], "Renamed");
    assert!(modified["expires_at"].is_null());
    assert!(modified["expires_after"].is_null());
    assert_eq!(modified["metadata"], json!({"team": "b"}));

    let second = api.ok("/v1/vector_stores", json!({})).await;
    let (_, list) = api.get("/v1/vector_stores?limit=1").await;
    assert_eq!(list["data"][0]["id"], second["id"]);
    assert_eq!(list["has_more"], true);
    let (_, list) = api
        .get(&format!("/v1/vector_stores?after={}", id(&second)))
        .await;
    assert_eq!(list["data"][0]["id"], vs_id.as_str());

    assert_error(
        &api.post("/v1/vector_stores", json!({"file_ids": ["file-nope"]}))
            .await,
        404,
        None,
        Some("file_id"),
    );
    assert_error(
        &api.post("/v1/vector_stores", json!({"bogus": 1})).await,
        400,
        Some("unknown_parameter"),
        Some("bogus"),
    );
    assert_error(
        &api.post(
            "/v1/vector_stores",
            json!({"expires_after": {"anchor": "created_at", "days": 1}}),
        )
        .await,
        400,
        Some("invalid_value"),
        Some("expires_after.anchor"),
    );
    let ids: Vec<String> = (0..501).map(|i| format!("file-{i}")).collect();
    assert_error(
        &api.post("/v1/vector_stores", json!({ "file_ids": ids }))
            .await,
        400,
        Some("array_above_max_length"),
        Some("file_ids"),
    );
    assert_error(
        &api.post(
            "/v1/vector_stores",
            json!({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 401}}}),
        )
        .await,
        400,
        None,
        Some("chunking_strategy.static.chunk_overlap_tokens"),
    );
    assert_error(
        &api.get("/v1/vector_stores/asst_123").await,
        400,
        None,
        Some("vector_store_id"),
    );
    let missing = api.get("/v1/vector_stores/vs_missing").await;
    assert_error(&missing, 404, None, None);
    assert_eq!(
        missing.1["error"]["message"],
        "No vector store found with id 'vs_missing'."
    );

    let (status, del) = api.delete(&format!("/v1/vector_stores/{vs_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        del,
        json!({"id": vs_id, "object": "vector_store.deleted", "deleted": true})
    );
    assert_error(
        &api.get(&format!("/v1/vector_stores/{vs_id}")).await,
        404,
        None,
        None,
    );
    assert_error(
        &api.delete(&format!("/v1/vector_stores/{vs_id}")).await,
        404,
        None,
        None,
    );
});

both_backends!(ingestion_and_search, |backend| async move {
    let (up, _proxy, api) = setup(backend, "").await;
    let fruit = upload(&api, "fruit.txt", "assistants", &doc(FRUIT, 40)).await;
    let space = upload(&api, "space.md", "assistants", &doc(SPACE, 40)).await;
    let music = upload(&api, "music.html", "assistants",
        format!("<html><body><h1>Concert</h1><p>{MUSIC}</p><script>var rockets = 1;</script></body></html>").as_bytes()).await;
    let vs = api
        .ok(
            "/v1/vector_stores",
            json!({"name": "kb", "file_ids": [id(&fruit), id(&space), id(&music)],
                   "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}}),
        )
        .await;
    assert_eq!(vs["file_counts"]["total"], 3);
    let vs_id = id(&vs);
    let done = wait_store(&api, &vs_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["file_counts"]["completed"], 3, "{done}");
    assert!(done["usage_bytes"].as_u64().unwrap() > 3 * 1536 * 4);
    // Every chunk was embedded with the store's default model, as floats, with the caller's key.
    let embeds = up.embedding_requests();
    assert!(!embeds.is_empty());
    for e in &embeds {
        assert_eq!(e["model"], "text-embedding-3-small");
        assert_eq!(e["encoding_format"], "float");
    }
    let auth: Vec<String> = up
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/embeddings")
        .map(|r| r.header("authorization").unwrap())
        .collect();
    assert!(auth.iter().all(|a| *a == format!("Bearer {}", api.key)));

    let vf = wait_file(&api, &vs_id, &id(&space)).await;
    assert_eq!(vf["object"], "vector_store.file");
    assert_eq!(vf["status"], "completed");
    assert!(vf["last_error"].is_null());
    assert_eq!(
        vf["chunking_strategy"],
        json!({"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}})
    );
    assert!(vf.get("batch_id").is_none() && vf.get("ingest_lease_until").is_none());

    let before = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1["last_active_at"].clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "planets orbit rockets telescope", "max_num_results": 5}),
        )
        .await;
    assert_eq!(res["object"], "vector_store.search_results.page");
    assert_eq!(
        res["search_query"],
        json!(["planets orbit rockets telescope"])
    );
    assert_eq!(res["has_more"], false);
    assert!(res["next_page"].is_null());
    let data = res["data"].as_array().unwrap();
    assert!(!data.is_empty() && data.len() <= 5);
    assert_eq!(data[0]["file_id"], id(&space).as_str());
    assert_eq!(data[0]["filename"], "space.md");
    assert_eq!(data[0]["content"][0]["type"], "text");
    assert!(
        data[0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("rockets")
    );
    let scores: Vec<f64> = data.iter().map(|d| d["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    // Search counts as activity.
    let after = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1["last_active_at"].clone();
    assert!(after.as_i64() > before.as_i64(), "{before} {after}");

    // HTML was extracted without its script.
    let music_hits = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "symphony orchestra violins", "max_num_results": 1}),
        )
        .await;
    assert_eq!(music_hits["data"].as_array().unwrap().len(), 1);
    assert_eq!(music_hits["data"][0]["file_id"], id(&music).as_str());
    let text = music_hits["data"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        text.contains("Concert") && !text.contains("var rockets"),
        "{text}"
    );

    // An array query: each query's best file is found.
    let both = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": ["apples orchard harvest", "violins cellos symphony"], "max_num_results": 50}),
        )
        .await;
    assert_eq!(both["search_query"].as_array().unwrap().len(), 2);
    let files: Vec<&str> = both["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["file_id"].as_str().unwrap())
        .collect();
    assert!(files.contains(&id(&fruit).as_str()) && files.contains(&id(&music).as_str()));

    // A threshold above every score leaves nothing.
    let none = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "planets", "ranking_options": {"ranker": "none", "score_threshold": 0.999}}),
        )
        .await;
    assert!(none["data"].as_array().unwrap().is_empty(), "{none}");
    let top = scores[0];
    let some = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "planets orbit rockets telescope", "ranking_options": {"score_threshold": top - 1e-6}}),
        )
        .await;
    assert!(
        some["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["score"].as_f64().unwrap() >= top - 1e-6)
    );
    assert!(!some["data"].as_array().unwrap().is_empty());

    assert_error(
        &api.post(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "x", "max_num_results": 0}),
        )
        .await,
        400,
        Some("integer_below_min_value"),
        Some("max_num_results"),
    );
    assert_error(
        &api.post(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": 3}),
        )
        .await,
        400,
        Some("invalid_type"),
        Some("query"),
    );
    assert_error(
        &api.post(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "x", "filters": {"type": "eq", "key": "a"}}),
        )
        .await,
        400,
        Some("missing_required_parameter"),
        Some("filters.value"),
    );
});

both_backends!(vector_store_files_and_attributes, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    let vs_id = id(&api.ok("/v1/vector_stores", json!({"name": "attrs"})).await);
    let fruit = upload(&api, "fruit.txt", "assistants", &doc(FRUIT, 5)).await;
    let space = upload(&api, "space.txt", "assistants", &doc(SPACE, 5)).await;
    let base = format!("/v1/vector_stores/{vs_id}/files");
    let f1 = api
        .ok(&base, json!({"file_id": id(&fruit), "attributes": {"kind": "food", "year": 2024, "draft": false}}))
        .await;
    assert_eq!(f1["id"], id(&fruit).as_str());
    assert_eq!(f1["vector_store_id"], vs_id.as_str());
    assert_eq!(f1["status"], "in_progress");
    assert_eq!(f1["attributes"]["year"], 2024);
    api.ok(
        &base,
        json!({"file_id": id(&space), "attributes": {"kind": "science", "year": 2020}}),
    )
    .await;
    wait_store(&api, &vs_id).await;

    let (_, list) = api.get(&format!("{base}?filter=completed&order=asc")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["data"][0]["id"], id(&fruit).as_str());
    let (_, list) = api.get(&format!("{base}?filter=failed")).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    let (_, page) = api.get(&format!("{base}?limit=1")).await;
    assert_eq!(page["data"][0]["id"], id(&space).as_str());
    assert_eq!(page["has_more"], true);
    assert_error(
        &api.get(&format!("{base}?filter=done")).await,
        400,
        Some("invalid_value"),
        Some("filter"),
    );

    // Filters: the query matches the fruit text, but the filter keeps only science.
    let search = format!("/v1/vector_stores/{vs_id}/search");
    let hits = api
        .ok(
            &search,
            json!({"query": FRUIT, "filters": {"type": "eq", "key": "kind", "value": "science"}}),
        )
        .await;
    assert!(
        hits["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["file_id"] == id(&space).as_str())
    );
    assert!(!hits["data"].as_array().unwrap().is_empty());
    let hits = api
        .ok(&search, json!({"query": FRUIT, "filters": {"type": "and", "filters": [
            {"type": "gte", "key": "year", "value": 2021}, {"type": "eq", "key": "draft", "value": false}]}}))
        .await;
    assert_eq!(hits["data"][0]["file_id"], id(&fruit).as_str());
    assert_eq!(hits["data"][0]["attributes"]["kind"], "food");

    // Updating attributes also updates what search filters on.
    let updated = api
        .ok(
            &format!("{base}/{}", id(&space)),
            json!({"attributes": {"kind": "food"}}),
        )
        .await;
    assert_eq!(updated["attributes"], json!({"kind": "food"}));
    let hits = api
        .ok(&search, json!({"query": SPACE, "filters": {"type": "eq", "key": "kind", "value": "food"}, "max_num_results": 50}))
        .await;
    assert_eq!(hits["data"][0]["file_id"], id(&space).as_str());
    assert_error(
        &api.post(&format!("{base}/{}", id(&space)), json!({})).await,
        400,
        Some("missing_required_parameter"),
        Some("attributes"),
    );
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!(i))).collect();
    assert_error(
        &api.post(&base, json!({"file_id": id(&fruit), "attributes": many}))
            .await,
        400,
        Some("object_above_max_properties"),
        None,
    );
    assert_error(
        &api.post(
            &base,
            json!({"file_id": id(&fruit), "attributes": {"k": "v".repeat(513)}}),
        )
        .await,
        400,
        Some("string_above_max_length"),
        None,
    );
    assert_error(
        &api.post(
            &base,
            json!({"file_id": id(&fruit), "attributes": {"k": {"nested": 1}}}),
        )
        .await,
        400,
        Some("invalid_type"),
        None,
    );
    assert_error(
        &api.post(&base, json!({"file_id": "file-unknown"})).await,
        404,
        None,
        Some("file_id"),
    );
    assert_error(
        &api.get(&format!("{base}/file-unknown")).await,
        404,
        None,
        None,
    );
    assert_error(
        &api.get(&format!("{base}/vs_bad")).await,
        400,
        None,
        Some("file_id"),
    );

    // Content: the stored chunks, in order.
    let (status, content) = api.get(&format!("{base}/{}/content", id(&fruit))).await;
    assert_eq!(status, 200);
    assert_eq!(content["object"], "vector_store.file_content.page");
    assert_eq!(content["has_more"], false);
    assert!(content["next_page"].is_null());
    let text: String = content["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "text");
            d["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        text.starts_with("apples bananas") && text.contains("line4."),
        "{text}"
    );

    // Removing a file from the store keeps the file.
    let (status, del) = api.delete(&format!("{base}/{}", id(&fruit))).await;
    assert_eq!(status, 200);
    assert_eq!(
        del,
        json!({"id": id(&fruit), "object": "vector_store.file.deleted", "deleted": true})
    );
    assert_eq!(api.get(&format!("/v1/files/{}", id(&fruit))).await.0, 200);
    assert_error(
        &api.delete(&format!("{base}/{}", id(&fruit))).await,
        404,
        None,
        None,
    );
    let vs = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1;
    assert_eq!(vs["file_counts"]["total"], 1);
    // Deleting the file itself removes it from every store, with its chunks.
    let other_vs = api
        .ok("/v1/vector_stores", json!({"file_ids": [id(&space)]}))
        .await;
    wait_store(&api, &id(&other_vs)).await;
    assert_eq!(
        api.delete(&format!("/v1/files/{}", id(&space))).await.0,
        200
    );
    for store in [vs_id.clone(), id(&other_vs)] {
        let vs = api.get(&format!("/v1/vector_stores/{store}")).await.1;
        assert_eq!(vs["file_counts"]["total"], 0, "{vs}");
        assert_eq!(vs["usage_bytes"], 0);
        assert_error(
            &api.get(&format!("/v1/vector_stores/{store}/files/{}", id(&space)))
                .await,
            404,
            None,
            None,
        );
        let hits = api
            .ok(
                &format!("/v1/vector_stores/{store}/search"),
                json!({"query": SPACE}),
            )
            .await;
        assert!(hits["data"].as_array().unwrap().is_empty());
    }
});

both_backends!(file_batches, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    let vs_id = id(&api.ok("/v1/vector_stores", json!({})).await);
    // One by one: ids sort in creation order, which the listing below relies on.
    let mut files = Vec::new();
    for i in 0..5 {
        files.push(id(&upload(
            &api,
            &format!("f{i}.txt"),
            "assistants",
            &doc(FRUIT, 3 + i),
        )
        .await));
    }
    let base = format!("/v1/vector_stores/{vs_id}/file_batches");
    let b1 = api
        .ok(&base, json!({"file_ids": files[..3], "attributes": {"batch": "one"},
            "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 0}}}))
        .await;
    assert_eq!(b1["object"], "vector_store.files_batch");
    assert!(id(&b1).starts_with("vsfb_"));
    assert_eq!(b1["vector_store_id"], vs_id.as_str());
    assert_eq!(b1["file_counts"]["total"], 3);
    assert_eq!(
        b1["status"],
        if b1["file_counts"]["in_progress"] == 0 {
            "completed"
        } else {
            "in_progress"
        }
    );
    assert!(b1.get("cancel_requested").is_none());
    let done = wait_batch(&api, &vs_id, &id(&b1)).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["file_counts"],
        json!({"in_progress": 0, "completed": 3, "failed": 0, "cancelled": 0, "total": 3})
    );
    let vf = api
        .get(&format!("/v1/vector_stores/{vs_id}/files/{}", files[0]))
        .await
        .1;
    assert_eq!(vf["attributes"], json!({"batch": "one"}));
    assert_eq!(
        vf["chunking_strategy"]["static"]["max_chunk_size_tokens"],
        200
    );

    let b2 = api
        .ok(
            &base,
            json!({"files": [
            {"file_id": files[3], "attributes": {"n": 3}},
            {"file_id": files[4], "chunking_strategy": {"type": "auto"}}]}),
        )
        .await;
    let done = wait_batch(&api, &vs_id, &id(&b2)).await;
    assert_eq!(done["file_counts"]["completed"], 2);
    let (_, listed) = api
        .get(&format!("{base}/{}/files?order=asc", id(&b2)))
        .await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![files[3].as_str(), files[4].as_str()]);
    assert_eq!(listed["data"][0]["attributes"], json!({"n": 3}));
    assert_eq!(
        listed["data"][1]["chunking_strategy"]["static"]["max_chunk_size_tokens"],
        800
    );
    let (_, failed) = api
        .get(&format!("{base}/{}/files?filter=failed", id(&b2)))
        .await;
    assert!(failed["data"].as_array().unwrap().is_empty());
    let vs = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1;
    assert_eq!(vs["file_counts"]["completed"], 5);

    // Cancelling a finished batch changes nothing.
    let same = api
        .ok(&format!("{base}/{}/cancel", id(&b2)), json!({}))
        .await;
    assert_eq!(same["status"], "completed");

    assert_error(
        &api.post(
            &base,
            json!({"file_ids": [files[0]], "files": [{"file_id": files[1]}]}),
        )
        .await,
        400,
        None,
        None,
    );
    assert_error(
        &api.post(&base, json!({})).await,
        400,
        Some("missing_required_parameter"),
        Some("file_ids"),
    );
    assert_error(
        &api.post(&base, json!({"file_ids": []})).await,
        400,
        Some("empty_array"),
        Some("file_ids"),
    );
    assert_error(
        &api.post(&base, json!({"files": [{"attributes": {}}]}))
            .await,
        400,
        Some("missing_required_parameter"),
        Some("files[0].file_id"),
    );
    assert_error(
        &api.post(&base, json!({"file_ids": ["file-missing"]})).await,
        404,
        None,
        Some("file_id"),
    );
    assert_error(
        &api.get(&format!("{base}/vsfb_missing")).await,
        404,
        None,
        None,
    );
    assert_error(
        &api.get(&format!("{base}/batch_1")).await,
        400,
        None,
        Some("batch_id"),
    );
});

both_backends!(cancelling_a_batch_stops_its_files, |backend| async move {
    // Embeddings always answer 429 with long retry delays: files stay in progress.
    let (_up, _proxy, api) = setup(
        backend,
        "[retrieval]\nembedding_model = \"fake-error-429\"\nembed_retry_base_ms = 60000\n",
    )
    .await;
    let vs_id = id(&api.ok("/v1/vector_stores", json!({})).await);
    let f = id(&upload(&api, "a.txt", "assistants", b"some words").await);
    let g = id(&upload(&api, "b.txt", "assistants", b"other words").await);
    let base = format!("/v1/vector_stores/{vs_id}/file_batches");
    let b = api.ok(&base, json!({"file_ids": [f, g]})).await;
    assert_eq!(b["status"], "in_progress");
    assert_eq!(b["file_counts"]["in_progress"], 2);
    let vs = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1;
    assert_eq!(vs["status"], "in_progress");
    let cancelled = api
        .ok(&format!("{base}/{}/cancel", id(&b)), json!({}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        cancelled["file_counts"],
        json!({"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 2, "total": 2})
    );
    let again = api.get(&format!("{base}/{}", id(&b))).await.1;
    assert_eq!(again["status"], "cancelled");
    let vf = api
        .get(&format!("/v1/vector_stores/{vs_id}/files/{f}"))
        .await
        .1;
    assert_eq!(vf["status"], "cancelled");
    let vs = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1;
    assert_eq!(vs["status"], "completed");
    assert_eq!(vs["file_counts"]["cancelled"], 2);
});

both_backends!(pdf_and_docx_are_ingested, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    let pdf_bytes = pdf(&[SPACE, "second page about quasars and pulsars"]);
    let docx_bytes = docx(&[MUSIC, "A final paragraph about encores & applause"]);
    let p = id(&upload(&api, "report.pdf", "assistants", &pdf_bytes).await);
    // No extension: recognized from the content.
    let d = id(&upload(&api, "upload", "assistants", &docx_bytes).await);
    let vs_id = id(&api
        .ok("/v1/vector_stores", json!({"file_ids": [p, d]}))
        .await);
    for f in [&p, &d] {
        let vf = wait_file(&api, &vs_id, f).await;
        assert_eq!(vf["status"], "completed", "{vf}");
    }
    let text = |f: String| {
        let api = api.clone();
        let vs_id = vs_id.clone();
        async move {
            let c = api
                .get(&format!("/v1/vector_stores/{vs_id}/files/{f}/content"))
                .await
                .1;
            c["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["text"].as_str().unwrap().to_owned())
                .collect::<String>()
        }
    };
    let pdf_text = text(p.clone()).await;
    assert!(
        pdf_text.contains("astronaut") && pdf_text.contains("pulsars"),
        "{pdf_text}"
    );
    let docx_text = text(d.clone()).await;
    assert!(
        docx_text.contains("symphony") && docx_text.contains("encores & applause"),
        "{docx_text}"
    );
    let hits = api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "galaxies nebula orbit"}),
        )
        .await;
    assert_eq!(hits["data"][0]["file_id"], p.as_str());
    assert_eq!(hits["data"][0]["filename"], "report.pdf");
});

both_backends!(
    unreadable_files_fail_with_last_error,
    |backend| async move {
        let (_up, _proxy, api) = setup(backend, "").await;
        let png = id(&upload(
            &api,
            "image.png",
            "assistants",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
        )
        .await);
        let blob = id(&upload(
            &api,
            "blob",
            "assistants",
            &[0u8, 159, 146, 150, 0, 1, 2, 255],
        )
        .await);
        let empty = id(&upload(&api, "empty.txt", "assistants", b"   \n\n ").await);
        let broken = id(&upload(&api, "broken.pdf", "assistants", b"%PDF-1.7 not really").await);
        let vs_id = id(&api
            .ok(
                "/v1/vector_stores",
                json!({"file_ids": [png, blob, empty, broken]}),
            )
            .await);
        for (f, code) in [
            (&png, "unsupported_file"),
            (&blob, "unsupported_file"),
            (&empty, "invalid_file"),
            (&broken, "invalid_file"),
        ] {
            let vf = wait_file(&api, &vs_id, f).await;
            assert_eq!(vf["status"], "failed", "{vf}");
            assert_eq!(vf["last_error"]["code"], code, "{vf}");
            assert!(!vf["last_error"]["message"].as_str().unwrap().is_empty());
            assert_eq!(vf["usage_bytes"], 0);
        }
        let vs = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1;
        assert_eq!(vs["status"], "completed");
        assert_eq!(vs["file_counts"]["failed"], 4);
    }
);

both_backends!(embedding_failures_fail_the_file, |backend| async move {
    let (up, _proxy, api) = setup(
        backend,
        "[retrieval]\nembedding_model = \"fake-error-500\"\nembed_max_attempts = 3\nembed_retry_base_ms = 10\n",
    )
    .await;
    let f = id(&upload(&api, "a.txt", "assistants", b"hello world").await);
    let vs_id = id(&api.ok("/v1/vector_stores", json!({"file_ids": [f]})).await);
    let vf = wait_file(&api, &vs_id, &f).await;
    assert_eq!(vf["status"], "failed");
    assert_eq!(vf["last_error"]["code"], "server_error");
    let msg = vf["last_error"]["message"].as_str().unwrap();
    assert!(msg.contains("500") && msg.contains("3 attempts"), "{msg}");
    assert_eq!(
        up.embedding_requests().len(),
        3,
        "retried up to the attempt limit"
    );
});

both_backends!(dead_ingestions_are_repaired_on_read, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let f = id(&upload(&api, "a.txt", "assistants", b"hello").await);
    let g = id(&upload(&api, "b.txt", "assistants", b"hello").await);
    let vs_id = id(&api.ok("/v1/vector_stores", json!({})).await);
    // What a crash leaves behind: in progress, lease run out, no task anywhere.
    let t = tenant_of(&api);
    for file in [&f, &g] {
        let row = assistants_proxy::model::VectorStoreFile {
            id: file.clone(),
            object: "vector_store.file".into(),
            usage_bytes: 0,
            created_at: now_secs() - 300,
            vector_store_id: vs_id.clone(),
            status: "in_progress".into(),
            last_error: None,
            chunking_strategy: assistants_proxy::api::validate::default_chunking(),
            attributes: None,
            batch_id: None,
            ingest_lease_until: Some(now_secs() - 120),
        };
        proxy
            .state
            .store
            .vector_stores
            .put_vs_file(&t, &row)
            .await
            .unwrap();
    }
    let vf = api
        .get(&format!("/v1/vector_stores/{vs_id}/files/{f}"))
        .await
        .1;
    assert_eq!(vf["status"], "failed", "{vf}");
    assert_eq!(vf["last_error"]["code"], "server_error");
    assert!(
        vf["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
    // The store's own read repairs the rest, so its pollers end too.
    let vs = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1;
    assert_eq!(vs["status"], "completed", "{vs}");
    assert_eq!(vs["file_counts"]["failed"], 2);
    assert_eq!(vs["file_counts"]["in_progress"], 0);
});

both_backends!(expired_stores, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let f = id(&upload(&api, "a.txt", "assistants", b"hello").await);
    let vs = api
        .ok(
            "/v1/vector_stores",
            json!({"expires_after": {"anchor": "last_active_at", "days": 1}}),
        )
        .await;
    let vs_id = id(&vs);
    let t = tenant_of(&api);
    let mut row = proxy
        .state
        .store
        .vector_stores
        .get_vector_store(&t, &vs_id)
        .await
        .unwrap()
        .unwrap();
    row.expires_at = Some(now_secs() - 10);
    proxy
        .state
        .store
        .vector_stores
        .put_vector_store(&t, &row)
        .await
        .unwrap();
    let got = api.get(&format!("/v1/vector_stores/{vs_id}")).await.1;
    assert_eq!(got["status"], "expired");
    let e = api
        .post(
            &format!("/v1/vector_stores/{vs_id}/search"),
            json!({"query": "x"}),
        )
        .await;
    assert_error(&e, 400, None, None);
    assert_eq!(
        e.1["error"]["message"],
        format!("Vector store '{vs_id}' has expired")
    );
    assert_error(
        &api.post(
            &format!("/v1/vector_stores/{vs_id}/files"),
            json!({"file_id": f}),
        )
        .await,
        400,
        None,
        None,
    );
    assert_error(
        &api.post(
            &format!("/v1/vector_stores/{vs_id}/file_batches"),
            json!({"file_ids": [f]}),
        )
        .await,
        400,
        None,
        None,
    );
    assert_eq!(
        api.delete(&format!("/v1/vector_stores/{vs_id}")).await.0,
        200
    );
});

both_backends!(message_attachments_are_ingested, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    let f = id(&upload(&api, "space.txt", "assistants", &doc(SPACE, 3)).await);
    let thread = api.ok("/v1/threads", json!({})).await;
    let msg = api
        .ok(
            &format!("/v1/threads/{}/messages", id(&thread)),
            json!({"role": "user", "content": "read this", "attachments": [{"file_id": f, "tools": [{"type": "file_search"}]}]}),
        )
        .await;
    assert_eq!(msg["attachments"][0]["file_id"], f.as_str());
    let thread = api.get(&format!("/v1/threads/{}", id(&thread))).await.1;
    let vs_id = thread["tool_resources"]["file_search"]["vector_store_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let vf = wait_file(&api, &vs_id, &f).await;
    assert_eq!(vf["status"], "completed", "{vf}");
});

both_backends!(tenants_see_disjoint_data, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    let other = api.other_tenant();
    let f = id(&upload(&api, "a.txt", "assistants", &doc(FRUIT, 2)).await);
    let vs_id = id(&api.ok("/v1/vector_stores", json!({"file_ids": [f]})).await);
    wait_store(&api, &vs_id).await;
    let b = id(&api
        .ok(
            &format!("/v1/vector_stores/{vs_id}/file_batches"),
            json!({"file_ids": [f]}),
        )
        .await);
    wait_batch(&api, &vs_id, &b).await;
    let vs = format!("/v1/vector_stores/{vs_id}");
    for (method, path, body) in [
        ("GET", vs.clone(), None),
        ("POST", vs.clone(), Some(json!({"name": "stolen"}))),
        (
            "POST",
            format!("{vs}/search"),
            Some(json!({"query": "apples"})),
        ),
        ("GET", format!("{vs}/files"), None),
        ("POST", format!("{vs}/files"), Some(json!({"file_id": f}))),
        ("GET", format!("{vs}/files/{f}"), None),
        (
            "POST",
            format!("{vs}/files/{f}"),
            Some(json!({"attributes": {}})),
        ),
        ("GET", format!("{vs}/files/{f}/content"), None),
        ("DELETE", format!("{vs}/files/{f}"), None),
        (
            "POST",
            format!("{vs}/file_batches"),
            Some(json!({"file_ids": [f]})),
        ),
        ("GET", format!("{vs}/file_batches/{b}"), None),
        ("POST", format!("{vs}/file_batches/{b}/cancel"), None),
        ("GET", format!("{vs}/file_batches/{b}/files"), None),
        ("DELETE", vs.clone(), None),
    ] {
        let got = match (method, body) {
            ("GET", _) => other.get(&path).await,
            ("DELETE", _) => other.delete(&path).await,
            (_, b) => other.post(&path, b.unwrap_or(json!({}))).await,
        };
        assert_error(&got, 404, None, None);
    }
    // The other tenant's own file cannot be added to a store either: it is not theirs.
    let theirs = id(&other.ok("/v1/vector_stores", json!({})).await);
    assert_error(
        &other
            .post(
                &format!("/v1/vector_stores/{theirs}/files"),
                json!({"file_id": f}),
            )
            .await,
        404,
        None,
        Some("file_id"),
    );
    let (_, list) = other.get("/v1/vector_stores").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], theirs.as_str());
    // Nothing changed for the owner.
    let mine = api.get(&vs).await.1;
    assert_eq!(mine["file_counts"]["completed"], 1);
    assert!(mine["name"].is_null());
});
