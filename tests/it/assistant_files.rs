//! The v1 assistant-files routes on both backends: attach (idempotent, at most 20 files),
//! list, retrieve and detach, with OpenAI's errors for a missing file and a full assistant.

use serde_json::json;

use crate::both_backends;
use crate::fixtures::upload;
use crate::support::{assert_error, id, setup};

both_backends!(v1_assistant_files_cap_and_lifecycle, |backend| async move {
    let (_up, proxy, api) = setup(backend, "").await;
    let v1 = api.clone().with_header("openai-beta", "assistants=v1");
    let a = v1.ok("/v1/assistants", json!({"model": "gpt-4"})).await;
    let aid = id(&a);
    let files_path = format!("/v1/assistants/{aid}/files");
    let mut file_ids = Vec::new();
    for i in 0..21 {
        let f = upload(&api, &format!("f{i}.txt"), "assistants", b"hello").await;
        file_ids.push(id(&f));
    }
    for fid in &file_ids[..20] {
        let af = v1.ok(&files_path, json!({"file_id": fid})).await;
        assert_eq!(af["object"], "assistant.file");
        assert_eq!(af["id"], fid.as_str());
        assert_eq!(af["assistant_id"], aid.as_str());
    }
    // Attaching a file the assistant already carries changes nothing, even when full.
    v1.ok(&files_path, json!({"file_id": file_ids[0]})).await;
    let full = v1.post(&files_path, json!({"file_id": file_ids[20]})).await;
    assert_error(&full, 400, Some("array_above_max_length"), Some("file_ids"));
    assert_eq!(
        full.1["error"]["message"],
        "Invalid 'file_ids': array too long. Expected an array with maximum length 20, but got an array with length 21 instead."
    );
    let (_, list) = v1.get(&format!("{files_path}?limit=100")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 20, "{list}");
    let (_, stored) = v1.get(&format!("/v1/assistants/{aid}")).await;
    assert_eq!(stored["file_ids"].as_array().unwrap().len(), 20);

    let missing = v1.post(&files_path, json!({"file_id": "file-nope"})).await;
    assert_error(&missing, 404, None, Some("file_id"));
    assert_eq!(
        missing.1["error"]["message"],
        "No such File object: file-nope"
    );

    let first = &file_ids[0];
    let (s, got) = v1.get(&format!("{files_path}/{first}")).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["id"], first.as_str());
    let (s, deleted) = v1.delete(&format!("{files_path}/{first}")).await;
    assert_eq!(s, 200, "{deleted}");
    assert_eq!(
        deleted,
        json!({"id": first, "object": "assistant.file.deleted", "deleted": true})
    );
    let gone = v1.get(&format!("{files_path}/{first}")).await;
    assert_error(&gone, 404, None, None);
    assert_eq!(
        gone.1["error"]["message"],
        format!("No file found with id '{first}' on assistant '{aid}'.")
    );
    assert_error(
        &v1.delete(&format!("{files_path}/{first}")).await,
        404,
        None,
        None,
    );
    // With room again, the 21st file fits.
    v1.ok(&files_path, json!({"file_id": file_ids[20]})).await;
    let (_, stored) = v1.get(&format!("/v1/assistants/{aid}")).await;
    let stored_ids = stored["file_ids"].as_array().unwrap();
    assert_eq!(stored_ids.len(), 20);
    assert!(!stored_ids.contains(&json!(first)));
    proxy.shutdown().await;
});
