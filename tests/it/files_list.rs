//! `GET /v1/files` lists the caller's files on both sides: the local ones (assistants,
//! vision, user_data) and the upstream's (batch, fine-tune, evals uploads forwarded there),
//! merged by `created_at` with OpenAI's cursor semantics; purposes the upstream owns are
//! its list; a failing upstream leaves the local files listed and says so.

use std::collections::HashSet;

use serde_json::Value;

use crate::both_backends;
use crate::fixtures::upload;
use crate::support::{Api, assert_error, id, setup};

const PARTIAL: &str = "x-assistants-proxy-upstream-files";

/// One page: ids, has_more, and whether the upstream half was marked unavailable.
async fn page(api: &Api, query: &str) -> (Vec<String>, bool, bool) {
    let (status, headers, body) = api
        .raw(
            http::Method::GET,
            &format!("/v1/files{query}"),
            None,
            Default::default(),
        )
        .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    let ids: Vec<String> = v["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(v["first_id"].as_str(), ids.first().map(String::as_str));
    assert_eq!(v["last_id"].as_str(), ids.last().map(String::as_str));
    let partial = headers.get(PARTIAL).is_some();
    (ids, v["has_more"].as_bool().unwrap(), partial)
}

/// Every page of `limit` in `order`, following `after` as the SDKs do.
async fn walk(api: &Api, order: &str, limit: usize) -> Vec<String> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..50 {
        let q = match &after {
            Some(a) => format!("?order={order}&limit={limit}&after={a}"),
            None => format!("?order={order}&limit={limit}"),
        };
        let (ids, more, partial) = page(api, &q).await;
        assert!(!partial);
        assert!(ids.len() <= limit);
        all.extend(ids.iter().cloned());
        if !more {
            return all;
        }
        assert_eq!(ids.len(), limit, "a page short of its limit said has_more");
        after = ids.last().cloned();
    }
    panic!("pagination did not end");
}

both_backends!(local_and_upstream_files_merge, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let l1 = upload(&api, "l1.txt", "assistants", b"one").await;
    let l2 = upload(&api, "l2.png", "vision", b"two").await;
    let t = l1["created_at"].as_i64().unwrap();
    // Forwarded upstream by the proxy itself.
    let batch = upload(&api, "in.jsonl", "batch", b"{}\n").await;
    assert!(
        !id(&batch).is_empty() && up.requests().iter().any(|r| r.path == "/v1/files"),
        "batch uploads go upstream"
    );
    // Older, newer and same-second files upstream.
    let u_old = up.add_file("fine-tune", "old.jsonl", t - 100);
    let u_tie = up.add_file("evals", "tie.jsonl", t);
    let u_new = up.add_file("batch", "new.jsonl", t + 100);
    let u_mid = up.add_file("assistants", "mid.txt", t - 50);

    // The merged order, computed apart: created_at; in one second upstream files first when
    // newest first; locals by id, upstream files in the order they were added.
    let mut expected: Vec<(i64, u8, String, usize)> = Vec::new();
    for f in [&l1, &l2] {
        expected.push((f["created_at"].as_i64().unwrap(), 0, id(f), 0));
    }
    for (i, f) in [&batch, &u_old, &u_tie, &u_new, &u_mid]
        .into_iter()
        .enumerate()
    {
        expected.push((f["created_at"].as_i64().unwrap(), 1, id(f), i));
    }
    expected.sort_by(|a, b| {
        (a.0, a.1).cmp(&(b.0, b.1)).then(if a.1 == 0 {
            a.2.cmp(&b.2)
        } else {
            a.3.cmp(&b.3)
        })
    });
    let asc: Vec<String> = expected.into_iter().map(|e| e.2).collect();
    let desc: Vec<String> = asc.iter().rev().cloned().collect();

    let (all, more, partial) = page(&api, "").await;
    assert_eq!(all, desc, "default: newest first");
    assert!(!more && !partial);
    assert_eq!(page(&api, "?order=asc").await.0, asc);
    // Pages across the seam between the two lists, both ways, any size.
    for limit in [1, 2, 3, 5] {
        assert_eq!(walk(&api, "desc", limit).await, desc, "desc by {limit}");
        assert_eq!(walk(&api, "asc", limit).await, asc, "asc by {limit}");
    }
    // The proxy asked with the caller's own key.
    let lists: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/files"))
        .collect();
    assert!(!lists.is_empty());
    for r in &lists {
        assert_eq!(
            r.header("authorization").unwrap(),
            format!("Bearer {}", api.key)
        );
    }
    // Another tenant sees the upstream's files but not these local ones.
    let other = page(&api.other_tenant(), "").await.0;
    assert!(!other.contains(&id(&l1)) && other.contains(&id(&u_new)));
    // An unknown cursor is OpenAI's 404 for files.
    assert_error(
        &api.get("/v1/files?after=file-nosuchfile").await,
        404,
        None,
        Some("after"),
    );
    proxy.shutdown().await;
});

both_backends!(purpose_filters_pick_a_side, |backend| async move {
    let (up, proxy, api) = setup(backend, "").await;
    let local = id(&upload(&api, "a.txt", "assistants", b"a").await);
    let vision = id(&upload(&api, "v.png", "vision", b"v").await);
    let b1 = id(&upload(&api, "b.jsonl", "batch", b"{}\n").await);
    let ft = id(&upload(&api, "f.jsonl", "fine-tune", b"{}\n").await);
    let up_assistants = id(&up.add_file("assistants", "theirs.txt", 1_700_000_000));
    let out = id(&up.add_file("batch_output", "out.jsonl", 1_700_000_000));

    let set = |v: Vec<String>| v.into_iter().collect::<HashSet<_>>();
    // Upstream purposes are the upstream's list, as it answers it.
    assert_eq!(
        set(page(&api, "?purpose=batch").await.0),
        set(vec![b1.clone()])
    );
    assert_eq!(
        set(page(&api, "?purpose=fine-tune").await.0),
        set(vec![ft.clone()])
    );
    assert_eq!(
        set(page(&api, "?purpose=batch_output").await.0),
        set(vec![out.clone()])
    );
    // Local purposes are local only.
    assert_eq!(
        page(&api, "?purpose=assistants").await.0,
        vec![local.clone()]
    );
    assert_eq!(page(&api, "?purpose=vision").await.0, vec![vision.clone()]);
    // No purpose: everything.
    assert_eq!(
        set(page(&api, "").await.0),
        set(vec![local, vision, b1, ft, up_assistants, out])
    );
    proxy.shutdown().await;
});

both_backends!(
    a_failing_upstream_hides_no_local_file,
    |backend| async move {
        let (up, proxy, api) = setup(backend, "").await;
        let a = id(&upload(&api, "a.txt", "assistants", b"a").await);
        let b = id(&upload(&api, "b.txt", "user_data", b"b").await);
        let theirs = id(&up.add_file("batch", "x.jsonl", 1_700_000_000));
        let mut local = vec![a.clone(), b.clone()];
        local.sort();
        local.reverse();

        // An upstream error: the local files, marked as a partial list.
        up.fail_file_list(Some(500));
        let (ids, more, partial) = page(&api, "").await;
        assert_eq!(ids, local);
        assert!(!more && partial);
        // Paging the local files still works meanwhile.
        let (first, more, _) = page(&api, "?limit=1").await;
        assert_eq!((first.clone(), more), (vec![local[0].clone()], true));
        assert_eq!(
            page(&api, &format!("?limit=1&after={}", first[0])).await.0,
            vec![local[1].clone()]
        );
        // An upstream without a file API (404) simply has no files: nothing is marked.
        up.fail_file_list(Some(404));
        assert_eq!(page(&api, "").await, (local.clone(), false, false));
        up.fail_file_list(None);
        assert!(page(&api, "").await.0.contains(&theirs));

        // The upstream gone altogether: still the local files.
        up.shutdown().await;
        let (ids, more, partial) = page(&api, "").await;
        assert_eq!(ids, local);
        assert!(!more && partial);
        // A cursor that only the upstream could place cannot be: a clear 502.
        let e = api.get(&format!("/v1/files?after={theirs}")).await;
        assert_error(&e, 502, None, None);
        proxy.shutdown().await;
    }
);
