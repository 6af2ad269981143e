//! `/v1/files`: local uploads, listing, download, deletion, forwarding of upstream-owned
//! purposes and ids, limits, and tenant isolation.

use bytes::Bytes;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::fixtures::{content_type, multipart, post_multipart, upload};
use crate::support::{Api, FakeUpstream, TestProxy, assert_error, setup};

async fn download(api: &Api, id: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
    api.raw(
        http::Method::GET,
        &format!("/v1/files/{id}/content"),
        None,
        Bytes::new(),
    )
    .await
}

both_backends!(upload_retrieve_list_download_delete, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    let doc = upload(&api, "notes.md", "assistants", b"# Notes\nhello").await;
    assert_eq!(doc["object"], "file");
    assert!(doc["id"].as_str().unwrap().starts_with("file-"));
    assert_eq!(doc["bytes"], 13);
    assert_eq!(doc["filename"], "notes.md");
    assert_eq!(doc["purpose"], "assistants");
    assert_eq!(doc["status"], "processed");
    assert!(doc["created_at"].is_i64());
    assert!(doc.get("expires_at").is_none(), "{doc}");
    // 2.5 MiB: three stored pieces, read back in order.
    let image: Vec<u8> = (0..(5 * 512 * 1024u32))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let img = upload(&api, "photo.png", "vision", &image).await;
    assert_eq!(img["bytes"], image.len());
    let data = upload(&api, "data.csv", "user_data", b"a,b\n1,2\n").await;
    let (doc_id, img_id, data_id) = (
        doc["id"].as_str().unwrap(),
        img["id"].as_str().unwrap(),
        data["id"].as_str().unwrap(),
    );

    let (status, got) = api.get(&format!("/v1/files/{doc_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got, doc);

    let (_, all) = api.get("/v1/files").await;
    assert_eq!(all["object"], "list");
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![data_id, img_id, doc_id], "newest first");
    assert_eq!(all["has_more"], false);
    assert_eq!(all["first_id"], data_id);
    let (_, vision) = api.get("/v1/files?purpose=vision").await;
    assert_eq!(vision["data"].as_array().unwrap().len(), 1);
    assert_eq!(vision["data"][0]["id"], img_id);
    let (_, page) = api.get("/v1/files?limit=1&order=asc").await;
    assert_eq!(page["data"][0]["id"], doc_id);
    assert_eq!(page["has_more"], true);
    let (_, page2) = api
        .get(&format!("/v1/files?limit=2&order=asc&after={doc_id}"))
        .await;
    assert_eq!(page2["data"][0]["id"], img_id);
    assert_eq!(page2["data"][1]["id"], data_id);
    assert_eq!(page2["has_more"], false);
    assert_error(
        &api.get("/v1/files?limit=10001").await,
        400,
        Some("integer_above_max_value"),
        Some("limit"),
    );

    let (status, headers, bytes) = download(&api, img_id).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(Sha256::digest(&bytes), Sha256::digest(&image));
    for (id, purpose) in [(doc_id, "assistants"), (data_id, "user_data")] {
        let (status, _, body) = download(&api, id).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_error(&(status, v.clone()), 400, None, None);
        assert_eq!(
            v["error"]["message"],
            format!("Not allowed to download files of purpose: {purpose}")
        );
    }

    let (status, del) = api.delete(&format!("/v1/files/{img_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        del,
        json!({"id": img_id, "object": "file", "deleted": true})
    );
    let (_, all) = api.get("/v1/files").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
});

both_backends!(expiry_and_upload_validation, |backend| async move {
    let (_up, _proxy, api) = setup(backend, "").await;
    // The Python SDK's bracketed form fields, after the file.
    let body = multipart(&[
        ("purpose", None, b"assistants"),
        ("file", Some("a.txt"), b"hello"),
        ("expires_after[anchor]", None, b"created_at"),
        ("expires_after[seconds]", None, b"3600"),
    ]);
    let (status, f) = post_multipart(&api, body).await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["expires_at"], f["created_at"].as_i64().unwrap() + 3600);

    let bad = |parts: Vec<(&'static str, Option<&'static str>, &'static [u8])>| {
        let api = api.clone();
        async move { post_multipart(&api, multipart(&parts)).await }
    };
    assert_error(
        &bad(vec![
            ("purpose", None, b"assistants"),
            ("file", Some("a.txt"), b"x"),
            ("expires_after[anchor]", None, b"created_at"),
            ("expires_after[seconds]", None, b"60"),
        ])
        .await,
        400,
        Some("integer_below_min_value"),
        Some("expires_after.seconds"),
    );
    assert_error(
        &bad(vec![("file", Some("a.txt"), b"x")]).await,
        400,
        Some("missing_required_parameter"),
        Some("purpose"),
    );
    assert_error(
        &bad(vec![
            ("purpose", None, b"answers"),
            ("file", Some("a.txt"), b"x"),
        ])
        .await,
        400,
        Some("invalid_value"),
        Some("purpose"),
    );
    assert_error(
        &bad(vec![("purpose", None, b"assistants")]).await,
        400,
        Some("missing_required_parameter"),
        Some("file"),
    );
    let (status, _, body) = api
        .raw(
            http::Method::POST,
            "/v1/files",
            Some("application/json"),
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_error(
        &(status, serde_json::from_slice(&body).unwrap()),
        400,
        None,
        None,
    );
    // Nothing half-stored remains from the refused uploads.
    let (_, all) = api.get("/v1/files").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
});

both_backends!(
    upstream_purposes_are_forwarded_byte_for_byte,
    |backend| async move {
        let (up, proxy, api) = setup(backend, "").await;
        let jsonl: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{{\"custom_id\":\"r{i}\",\"method\":\"POST\"}}\n").into_bytes())
            .collect();
        // Purpose first (Python), then file first (Node's `{file, purpose}`): the second makes the
        // proxy read the whole file before it can decide.
        let bodies = [
            multipart(&[
                ("purpose", None, b"batch"),
                ("file", Some("in.jsonl"), &jsonl),
            ]),
            multipart(&[
                ("file", Some("train.jsonl"), &jsonl),
                ("purpose", None, b"fine-tune"),
            ]),
            multipart(&[
                ("file", Some("e.jsonl"), b"{}\n"),
                ("purpose", None, b"evals"),
            ]),
        ];
        let mut forwarded = Vec::new();
        for (body, purpose) in bodies.into_iter().zip(["batch", "fine-tune", "evals"]) {
            up.clear_requests();
            let sent_sha = hex::encode(Sha256::digest(&body));
            let sent_len = body.len();
            let (status, v) = post_multipart(&api, body).await;
            // The upstream's own file object comes back.
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["purpose"], purpose);
            forwarded.push(v["id"].as_str().unwrap().to_owned());
            let reqs = up.requests();
            assert_eq!(reqs.len(), 1);
            assert_eq!(reqs[0].path, "/v1/files");
            assert_eq!(reqs[0].body_len as usize, sent_len);
            assert_eq!(reqs[0].body_sha256, sent_sha);
            assert_eq!(reqs[0].header("content-type").unwrap(), content_type());
            assert_eq!(
                reqs[0].header("authorization").unwrap(),
                format!("Bearer {}", api.key)
            );
        }
        // Nothing was stored here: the list shows the upstream's files (oldest first here).
        let (_, all) = api.get("/v1/files?order=asc").await;
        let listed: Vec<&str> = all["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, forwarded);
        let t = crate::fixtures::tenant_of(&api);
        let local = proxy
            .state
            .store
            .files
            .list_files(&t, None, &Default::default())
            .await
            .unwrap();
        assert!(local.items.is_empty());
    }
);

both_backends!(local_misses_are_forwarded, |backend| async move {
    let (up, _proxy, api) = setup(backend, "").await;
    let mine = upload(&api, "a.txt", "vision", b"abc").await;
    let mine = mine["id"].as_str().unwrap();
    for (method, path) in [
        (http::Method::GET, "/v1/files/file-upstream123".to_owned()),
        (
            http::Method::DELETE,
            "/v1/files/file-upstream123".to_owned(),
        ),
        (
            http::Method::GET,
            "/v1/files/file-upstream123/content".to_owned(),
        ),
        (http::Method::GET, "/v1/files/azure-style-id".to_owned()),
    ] {
        up.clear_requests();
        let (status, _, _) = api.raw(method.clone(), &path, None, Bytes::new()).await;
        assert_eq!(status, 404);
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "{method} {path}");
        assert_eq!(reqs[0].method, method.as_str());
        assert_eq!(reqs[0].path, path);
    }
    // Another tenant's file is a local miss too: it goes upstream, never to the owner's data.
    up.clear_requests();
    let other = api.other_tenant();
    let (status, v) = other.get(&format!("/v1/files/{mine}")).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(up.requests().len(), 1);
    let (status, _, body) = download(&other, mine).await;
    assert_eq!(status, 404);
    assert!(!body.starts_with(b"abc"));
    let (status, _) = other.delete(&format!("/v1/files/{mine}")).await;
    assert_eq!(status, 404);
    let (_, list) = other.get("/v1/files").await;
    assert!(list["data"].as_array().unwrap().is_empty());
    // Still there for its owner.
    let (status, _) = api.get(&format!("/v1/files/{mine}")).await;
    assert_eq!(status, 200);
});

both_backends!(uploads_over_the_limit_are_413, |backend| async move {
    let up = FakeUpstream::start().await;
    let proxy =
        TestProxy::start_backend_with(&up.url(), backend, "[limits]\nmax_upload_bytes = 4096\n")
            .await;
    let api = Api::new(&proxy);
    let ok = upload(&api, "small.txt", "assistants", &[b'a'; 4096]).await;
    assert_eq!(ok["bytes"], 4096);
    let body = multipart(&[
        ("purpose", None, b"assistants"),
        ("file", Some("big.txt"), &[b'a'; 4097]),
    ]);
    assert_error(&post_multipart(&api, body).await, 413, None, None);
    // Far over the limit: refused from Content-Length, before the body is read.
    let body = multipart(&[
        ("purpose", None, b"assistants"),
        ("file", Some("huge.txt"), &vec![b'a'; 3 * 1024 * 1024]),
    ]);
    assert_error(&post_multipart(&api, body).await, 413, None, None);
    // No Content-Length (chunked) and far over the limit: refused part-way through the
    // multipart parse. The client writes all 16 MiB before it reads, as most do; the proxy
    // drains the rest, so it reads the 413 rather than a reset.
    let (status, body) = chunked_upload(&proxy, &api.key, 16 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    let (_, all) = api.get("/v1/files").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
});

/// Sends a multipart upload of `bytes` file bytes with `Transfer-Encoding: chunked` over a
/// raw connection, writing it whole before reading; returns the status and the body.
async fn chunked_upload(proxy: &TestProxy, key: &str, bytes: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /v1/files HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: multipart/form-data; boundary=XyZ\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = |data: &[u8]| {
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    let preamble = "--XyZ\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n\
                    --XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n\
                    content-type: text/plain\r\n\r\n";
    s.write_all(&chunk(preamble.as_bytes())).await.unwrap();
    let piece = chunk(&[b'a'; 64 * 1024]);
    for _ in 0..bytes / (64 * 1024) {
        s.write_all(&piece).await.unwrap();
    }
    s.write_all(&chunk(b"\r\n--XyZ--\r\n")).await.unwrap();
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await.unwrap();
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok());
            if n == 0 || len.is_some_and(|len| body.len() >= len) {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, body.to_owned());
            }
        }
        assert!(n > 0, "connection closed before a response: {text}");
    }
}
