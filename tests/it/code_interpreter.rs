//! code_interpreter through HTTP on both backends and with both executors: the real local
//! sandbox (bubblewrap + the Python environment of scripts/interpreter-env.sh) and a real
//! Jupyter Kernel Gateway (scripts/kernel-gateway.sh): logs, state kept across calls and
//! runs, files in and out, figures, `file_path` annotations, tracebacks, streamed input,
//! cancel, timeouts, tenant isolation, an executor that is off.
//!
//! The code uses paths relative to the data directory (both executors start there), and
//! expects `sandbox:` links under the directory the model is told.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::fixtures::upload;
use crate::runs::{sse_events, thread_with, wait_run};
use crate::support::fake_upstream::ScriptedReply;
use crate::support::{Api, Backend, FakeUpstream, assert_error, setup};

/// Settings for the tests that need no executor.
const CONFIG: &str = "[code_interpreter]\ntimeout_seconds = 20\n";

/// Which executor a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Exec {
    Local,
    Jupyter,
}

impl Exec {
    /// The `[code_interpreter]` settings for this executor, with `extra` lines; checks that
    /// what the executor needs is there (the tests fail, never skip, and say how to get it).
    fn config(self, extra: &str) -> String {
        match self {
            Exec::Local => {
                let python = std::env::var("ASSISTANTS_PROXY_PYTHON").unwrap_or_else(|_| {
                    assistants_proxy::config::DEFAULT_INTERPRETER_PYTHON.to_owned()
                });
                assert!(
                    std::path::Path::new(&python).exists(),
                    "code_interpreter tests need the sandbox's Python at {python}: run scripts/interpreter-env.sh (or set ASSISTANTS_PROXY_PYTHON)"
                );
                format!("[code_interpreter]\nmemory_mb = 1024\n{extra}\n")
            }
            Exec::Jupyter => {
                let url = std::env::var("ASSISTANTS_PROXY_TEST_JUPYTER").unwrap_or_else(|_| {
                    panic!("jupyter executor tests need a Kernel Gateway: scripts/kernel-gateway.sh start, then export ASSISTANTS_PROXY_TEST_JUPYTER and KG_TOKEN as it prints")
                });
                assert!(
                    std::env::var("KG_TOKEN").is_ok(),
                    "KG_TOKEN (the gateway's token) is not set: see scripts/kernel-gateway.sh"
                );
                format!(
                    "[code_interpreter]\nexecutor = \"jupyter\"\n{extra}\n[code_interpreter.jupyter]\nurl = \"{url}\"\ntoken_env = \"KG_TOKEN\"\ndata_root = \"/tmp/assistants-proxy-test-kernels\"\n"
                )
            }
        }
    }
}

/// Runs a test body for each executor on each backend: `name::local_sqlite`, … Ignored in a
/// plain `cargo test` (they need the sandbox's Python, a gateway, a Cassandra node);
/// scripts/test.sh provides all three and runs them with `--include-ignored`.
macro_rules! each_executor {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs the sandbox's Python (scripts/interpreter-env.sh): cargo test -- --include-ignored"]
            async fn local_sqlite() {
                ($body)(Backend::Sqlite, Exec::Local).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs the sandbox's Python and Cassandra: scripts/test.sh runs it"]
            async fn local_cassandra() {
                ($body)(Backend::Cassandra, Exec::Local).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a Kernel Gateway (scripts/kernel-gateway.sh): scripts/test.sh runs it"]
            async fn jupyter_sqlite() {
                ($body)(Backend::Sqlite, Exec::Jupyter).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a Kernel Gateway and Cassandra: scripts/test.sh runs it"]
            async fn jupyter_cassandra() {
                ($body)(Backend::Cassandra, Exec::Jupyter).await;
            }
        }
    };
}

/// The `sandbox:` path of a file the model was told about in `told` (a tool message).
fn sandbox_link(told: &str, name: &str) -> String {
    told.split_whitespace()
        .find(|w| w.starts_with("sandbox:") && w.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no sandbox link to {name} in {told:?}"))
        .to_owned()
}

fn code(src: &str) -> ScriptedReply {
    ScriptedReply::tool_call("code_interpreter", json!({ "code": src }).to_string())
}

async fn assistant(api: &Api, extra: Value) -> String {
    let mut body = json!({"model": "gpt-4o", "tools": [{"type": "code_interpreter"}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    api.ok("/v1/assistants", body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn run_on(api: &Api, thread: &str, aid: &str) -> Value {
    let run = api
        .ok(
            &format!("/v1/threads/{thread}/runs"),
            json!({"assistant_id": aid}),
        )
        .await;
    wait_run(api, thread, run["id"].as_str().unwrap()).await
}

/// A new user message on the thread, then a run whose model calls `src` once and answers
/// `reply`; the run when it has ended.
async fn follow_up(
    api: &Api,
    up: &FakeUpstream,
    thread: &str,
    aid: &str,
    text: &str,
    src: &str,
    reply: &str,
) -> Value {
    api.ok(
        &format!("/v1/threads/{thread}/messages"),
        json!({"role": "user", "content": text}),
    )
    .await;
    up.push_chat_script(code(src));
    up.push_chat_script(ScriptedReply::text(reply));
    run_on(api, thread, aid).await
}

/// The code_interpreter calls of a run's steps, in order.
async fn code_calls(api: &Api, thread: &str, run: &str) -> Vec<Value> {
    let (s, steps) = api
        .get(&format!("/v1/threads/{thread}/runs/{run}/steps?order=asc"))
        .await;
    assert_eq!(s, 200, "{steps}");
    steps["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["step_details"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["type"] == "code_interpreter")
        .collect()
}

fn logs_of(call: &Value) -> String {
    call["code_interpreter"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["logs"].as_str())
        .collect()
}

/// What the model was told by the tool messages of its last request.
fn tool_messages(up: &FakeUpstream) -> Vec<String> {
    let req = up.chat_requests().pop().unwrap();
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn last_message(api: &Api, thread: &str) -> Value {
    let (_, list) = api
        .get(&format!("/v1/threads/{thread}/messages?limit=1"))
        .await;
    list["data"][0].clone()
}

each_executor!(
    computes_and_keeps_state_across_calls_and_runs,
    |backend, exec: Exec| async move {
        let (up, proxy, api) = setup(backend, &exec.config("")).await;
        let aid = assistant(&api, json!({})).await;
        let tid = thread_with(&api, "compute").await;
        up.push_chat_script(code("x = 6 * 7\nprint('x is', x)"));
        up.push_chat_script(code("x + 1"));
        up.push_chat_script(ScriptedReply::text("Done."));
        let run = run_on(&api, &tid, &aid).await;
        assert_eq!(run["status"], "completed", "{run}");
        let calls = code_calls(&api, &tid, run["id"].as_str().unwrap()).await;
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(
            calls[0]["code_interpreter"]["input"],
            "x = 6 * 7\nprint('x is', x)"
        );
        assert_eq!(logs_of(&calls[0]).trim(), "x is 42");
        // The last expression's value is shown, notebook-style, and x survived the first call.
        assert_eq!(logs_of(&calls[1]).trim(), "43");
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call"));
        // The model saw the result as the tool message.
        assert_eq!(tool_messages(&up).last().unwrap().trim(), "43");
        let offered = &up.chat_requests()[0]["tools"][0]["function"];
        assert_eq!(offered["name"], "code_interpreter");
        assert_eq!(offered["parameters"]["required"], json!(["code"]));

        // A second run on the same thread: the same session, x is still there.
        let run2 = follow_up(
            &api,
            &up,
            &tid,
            &aid,
            "again",
            "print(x * 2)",
            "Again done.",
        )
        .await;
        assert_eq!(run2["status"], "completed", "{run2}");
        let calls = code_calls(&api, &tid, run2["id"].as_str().unwrap()).await;
        assert_eq!(logs_of(&calls[0]).trim(), "84");

        // An exception is output, not a failure: the traceback is in the logs and the run goes on.
        let run3 = follow_up(
            &api,
            &up,
            &tid,
            &aid,
            "fail",
            "def f():\n    return 1 / 0\nf()",
            "It failed.",
        )
        .await;
        assert_eq!(run3["status"], "completed", "{run3}");
        let logs = logs_of(&code_calls(&api, &tid, run3["id"].as_str().unwrap()).await[0]);
        assert!(logs.contains("Traceback"), "{logs}");
        assert!(logs.contains("ZeroDivisionError"), "{logs}");
        assert!(!logs.contains('\u{1b}'), "no ANSI colour codes: {logs:?}");
        proxy.shutdown().await;
    }
);

each_executor!(
    files_in_and_out_with_annotations_and_isolation,
    |backend, exec: Exec| async move {
        let (up, proxy, api) = setup(backend, &exec.config("")).await;
        let csv = b"city,sales\nOslo,3\nLima,4\n";
        let file = upload(&api, "sales.csv", "assistants", csv).await;
        let fid = file["id"].as_str().unwrap();
        let aid = assistant(
            &api,
            json!({"tool_resources": {"code_interpreter": {"file_ids": [fid]}}}),
        )
        .await;
        let tid = thread_with(&api, "total sales").await;
        let written: String = (0..50).map(|i| format!("{i},{}\n", i * i)).collect();
        up.push_chat_script(code(&format!(
        "import pandas as pd\ndf = pd.read_csv('sales.csv')\nprint(df['sales'].sum())\nopen('squares.csv', 'w').write({written:?})"
    )));
        up.push_chat_script(ScriptedReply::Custom(std::sync::Arc::new(|req: &Value| {
            // The model links the file it was told about.
            let told = req["messages"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .find(|m| m["role"] == "tool")
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned();
            let link = told
                .split_whitespace()
                .find(|w| w.starts_with("sandbox:"))
                .unwrap_or("sandbox:missing")
                .to_owned();
            ScriptedReply::text(format!("Total is 7. Download: [squares]({link})."))
        })));
        let run = run_on(&api, &tid, &aid).await;
        assert_eq!(run["status"], "completed", "{run}");
        let calls = code_calls(&api, &tid, run["id"].as_str().unwrap()).await;
        assert!(
            logs_of(&calls[0]).starts_with('7'),
            "{}",
            logs_of(&calls[0])
        );
        // The model was told the file's path and id.
        let desc = up.chat_requests()[0]["tools"][0]["function"]["description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(desc.contains(&format!("/sales.csv ({fid})")), "{desc}");
        let link = sandbox_link(&tool_messages(&up)[0], "squares.csv");
        if matches!(exec, Exec::Local) {
            assert_eq!(link, "sandbox:/mnt/data/squares.csv");
            assert!(
                desc.contains(&format!("/mnt/data/sales.csv ({fid})")),
                "{desc}"
            );
        }

        // The written file is a File of purpose assistants_output, byte for byte.
        let msg = last_message(&api, &tid).await;
        let text = &msg["content"][0]["text"];
        let value = text["value"].as_str().unwrap();
        let ann = &text["annotations"][0];
        assert_eq!(ann["type"], "file_path", "{msg}");
        assert_eq!(ann["text"], link.as_str());
        let (s, e) = (
            ann["start_index"].as_u64().unwrap() as usize,
            ann["end_index"].as_u64().unwrap() as usize,
        );
        let chars: Vec<char> = value.chars().collect();
        assert_eq!(chars[s..e].iter().collect::<String>(), link);
        let out_id = ann["file_path"]["file_id"].as_str().unwrap().to_owned();
        let (status, meta) = api.get(&format!("/v1/files/{out_id}")).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["purpose"], "assistants_output");
        assert_eq!(meta["filename"], "squares.csv");
        assert_eq!(meta["bytes"], written.len());
        let (status, _, body) = api
            .raw(
                Method::GET,
                &format!("/v1/files/{out_id}/content"),
                None,
                Default::default(),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(&body[..], written.as_bytes());
        let (_, listed) = api.get("/v1/files?purpose=assistants_output").await;
        assert!(
            listed["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["id"] == out_id.as_str())
        );
        // Another tenant sees none of it.
        let other = api.other_tenant();
        let got = other.get(&format!("/v1/files/{out_id}")).await;
        assert_error(&got, 404, None, None);
        let (s, _, _) = other
            .raw(
                Method::GET,
                &format!("/v1/files/{out_id}/content"),
                None,
                Default::default(),
            )
            .await;
        assert_eq!(s, 404);
        proxy.shutdown().await;
    }
);

each_executor!(
    figures_become_image_outputs_and_message_parts,
    |backend, exec: Exec| async move {
        let (up, proxy, api) = setup(backend, &exec.config("")).await;
        let aid = assistant(&api, json!({})).await;
        let tid = thread_with(&api, "plot").await;
        up.push_chat_script(code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()",
    ));
        up.push_chat_script(ScriptedReply::text("Here is the plot."));
        let run = run_on(&api, &tid, &aid).await;
        assert_eq!(run["status"], "completed", "{run}");
        let calls = code_calls(&api, &tid, run["id"].as_str().unwrap()).await;
        let outputs = calls[0]["code_interpreter"]["outputs"].as_array().unwrap();
        let image = outputs
            .iter()
            .find(|o| o["type"] == "image")
            .unwrap_or_else(|| panic!("no image output: {outputs:?}"));
        let img_id = image["image"]["file_id"].as_str().unwrap();
        let (_, _, png) = api
            .raw(
                Method::GET,
                &format!("/v1/files/{img_id}/content"),
                None,
                Default::default(),
            )
            .await;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // The answer shows the figure first, then its text.
        let msg = last_message(&api, &tid).await;
        assert_eq!(msg["content"][0]["type"], "image_file", "{msg}");
        assert_eq!(msg["content"][0]["image_file"]["file_id"], img_id);
        assert_eq!(msg["content"][1]["text"]["value"], "Here is the plot.");
        proxy.shutdown().await;
    }
);

each_executor!(
    streams_input_deltas_then_outputs,
    |backend, exec: Exec| async move {
        let (up, proxy, api) = setup(backend, &exec.config("")).await;
        let aid = assistant(&api, json!({})).await;
        let tid = thread_with(&api, "stream").await;
        let src = "total = 0\nfor i in range(10):\n    total += i\nprint(\"total:\", total)";
        up.push_chat_script(code(src));
        up.push_chat_script(ScriptedReply::text("The total is 45."));
        let (s, _, body) = api
            .raw(
                Method::POST,
                &format!("/v1/threads/{tid}/runs"),
                Some("application/json"),
                json!({"assistant_id": aid, "stream": true})
                    .to_string()
                    .into(),
            )
            .await;
        assert_eq!(s, 200);
        let events = sse_events(&body);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        let pos = |name: &str| names.iter().position(|n| *n == name).unwrap();
        let deltas: Vec<&Value> = events
            .iter()
            .filter(|(n, _)| n == "thread.run.step.delta")
            .map(|(_, d)| &d["delta"]["step_details"]["tool_calls"][0])
            .collect();
        let input: String = deltas
            .iter()
            .filter_map(|d| d["code_interpreter"]["input"].as_str())
            .collect();
        assert_eq!(input, src);
        let input_deltas = deltas
            .iter()
            .filter(|d| {
                d["code_interpreter"]["input"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
            .count();
        assert!(
            input_deltas >= 2,
            "input arrives in several deltas: {deltas:?}"
        );
        let logs: String = deltas
            .iter()
            .flat_map(|d| {
                d["code_interpreter"]["outputs"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|o| o["logs"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(logs.trim(), "total: 45");
        // Output deltas come after every input delta, then the step completes.
        let last_input = events
            .iter()
            .rposition(|(n, d)| {
                n == "thread.run.step.delta"
                    && d["delta"]["step_details"]["tool_calls"][0]["code_interpreter"]["input"]
                        .is_string()
            })
            .unwrap();
        let first_output = events
            .iter()
            .position(|(n, d)| {
                n == "thread.run.step.delta"
                    && d["delta"]["step_details"]["tool_calls"][0]["code_interpreter"]["outputs"][0]
                        .is_object()
            })
            .unwrap();
        assert!(last_input < first_output);
        let tool_done = events
            .iter()
            .position(|(n, d)| n == "thread.run.step.completed" && d["type"] == "tool_calls")
            .unwrap();
        assert!(first_output < tool_done);
        assert!(tool_done < pos("thread.message.created"));
        assert!(pos("thread.message.completed") < pos("thread.run.completed"));
        proxy.shutdown().await;
    }
);

each_executor!(
    cancel_stops_the_execution_and_timeouts_are_reported,
    |backend, exec: Exec| async move {
        let (up, proxy, api) = setup(backend, &exec.config("timeout_seconds = 3")).await;
        let aid = assistant(&api, json!({})).await;
        let tid = thread_with(&api, "slow").await;
        // Past the per-execution timeout: the cell is interrupted, the run goes on.
        up.push_chat_script(code("import time\ntime.sleep(30)"));
        up.push_chat_script(ScriptedReply::text("Too slow."));
        let started = Instant::now();
        let run = run_on(&api, &tid, &aid).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert!(started.elapsed() < Duration::from_secs(25));
        let logs = logs_of(&code_calls(&api, &tid, run["id"].as_str().unwrap()).await[0]);
        assert!(
            logs.to_lowercase().contains("timeout") || logs.to_lowercase().contains("timed out"),
            "{logs}"
        );

        // A cancel during an execution stops it: the run ends cancelled well before the code would.
        let tid = thread_with(&api, "cancel me").await;
        up.push_chat_script(code(
            "import time\nopen('started', 'w').write('1')\ntime.sleep(2.5)",
        ));
        let run = api
            .ok(
                &format!("/v1/threads/{tid}/runs"),
                json!({"assistant_id": aid}),
            )
            .await;
        let rid = run["id"].as_str().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (s, c) = api
            .post(&format!("/v1/threads/{tid}/runs/{rid}/cancel"), json!({}))
            .await;
        assert_eq!(s, 200, "{c}");
        let done = wait_run(&api, &tid, rid).await;
        assert_eq!(done["status"], "cancelled", "{done}");
        // The cancelled step still shows the call that was running.
        let calls = code_calls(&api, &tid, rid).await;
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(
            calls[0]["code_interpreter"]["input"]
                .as_str()
                .unwrap()
                .contains("time.sleep(2.5)")
        );
        // The thread is usable again at once; its interrupted session was replaced.
        let run = follow_up(&api, &up, &tid, &aid, "again", "print('fresh')", "ok").await;
        assert_eq!(run["status"], "completed", "{run}");
        let logs = logs_of(&code_calls(&api, &tid, run["id"].as_str().unwrap()).await[0]);
        assert!(logs.contains("fresh"), "{logs}");
        proxy.shutdown().await;
    }
);

both_backends!(
    a_function_named_like_the_tool_is_refused,
    |backend| async move {
        let (_up, proxy, api) = setup(backend, CONFIG).await;
        let got = api
            .post(
                "/v1/assistants",
                json!({"model": "gpt-4o", "tools": [
                    {"type": "code_interpreter"},
                    {"type": "function", "function": {"name": "code_interpreter"}},
                ]}),
            )
            .await;
        assert_error(&got, 400, None, Some("tools[1].function.name"));
        // Without the tool the name is the client's own business.
        let (s, _) = api
            .post(
                "/v1/assistants",
                json!({"model": "gpt-4o", "tools": [
                    {"type": "function", "function": {"name": "code_interpreter"}},
                ]}),
            )
            .await;
        assert_eq!(s, 200);
        proxy.shutdown().await;
    }
);

both_backends!(
    an_executor_that_is_off_answers_an_error_output,
    |backend| async move {
        let (up, proxy, api) = setup(backend, "[code_interpreter]\nexecutor = \"off\"\n").await;
        let aid = assistant(&api, json!({})).await;
        let tid = thread_with(&api, "x").await;
        up.push_chat_script(code("print(1)"));
        up.push_chat_script(ScriptedReply::text("No sandbox."));
        let run = run_on(&api, &tid, &aid).await;
        assert_eq!(run["status"], "completed", "{run}");
        let logs = logs_of(&code_calls(&api, &tid, run["id"].as_str().unwrap()).await[0]);
        assert!(logs.contains("code interpreter unavailable"), "{logs}");
        assert!(tool_messages(&up)[0].contains("unavailable"));
        proxy.shutdown().await;
    }
);
