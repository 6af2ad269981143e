//! A turn's code_interpreter calls: each runs in the thread's interpreter session (through
//! `crate::interpreter`), its figures and files become `assistants_output` Files, and its
//! outputs go to clients as step deltas once the execution ends.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde_json::{Value, json};

use super::turn::Env;
use super::{TurnEnd, emit};
use crate::error::Error;
use crate::ids::new_id;
use crate::interpreter::{ExecError, Output};
use crate::model::FileObject;
use crate::runs::Stop;
use crate::runs::code_args::CodeArgs;
use crate::runs::code_interpreter::{CodeOffer, model_text};
use crate::runs::events::Event;
use crate::runs::translate::ToolCall;
use crate::store::content::{PART_SIZE, read_all};

/// What one code_interpreter call came to.
pub(super) struct CodeDone {
    /// The call's body in the step: `{"input", "outputs"}`.
    pub(super) details: Value,
    /// What the model is told (logs, figures, file links).
    pub(super) told: String,
    /// Files the code wrote: sandbox path → file id.
    pub(super) files: Vec<(String, String)>,
    /// Bytes of those files.
    pub(super) bytes: u64,
}

/// Runs one call. `had_state`: this run used the interpreter before (a fresh session is
/// then a reset the model must hear of); `budget`: bytes of files the run may still keep.
/// `Err(end)` when the run was stopped meanwhile (the execution is abandoned: its session
/// is closed, which stops the code).
pub(super) async fn run_code(
    env: &Env<'_>,
    step_id: &str,
    offer: &CodeOffer,
    call: &ToolCall,
    had_state: bool,
    budget: u64,
) -> Result<Result<CodeDone, TurnEnd>, Error> {
    let code = CodeArgs::finish(&call.arguments);
    let r = env.r;
    let key = (r.tenant.as_str().to_owned(), r.thread_id.clone());
    let max_in = env.state.interpreter.config().limits.disk_bytes;
    let (store, tenant) = (r.store.clone(), r.tenant.clone());
    let load = move |id: String| -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>> {
        let (store, tenant) = (store.clone(), tenant.clone());
        Box::pin(async move {
            let f = store
                .files
                .get_file(&tenant, &id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("file {id} no longer exists"))?;
            if f.bytes > max_in {
                return Err(format!(
                    "file {id} is larger than the sandbox's disk ({max_in} bytes)"
                ));
            }
            read_all(&store, &tenant, &f)
                .await
                .map(Bytes::from)
                .map_err(|e| e.to_string())
        })
    };
    let cell = tokio::select! {
        c = env.state.interpreter.execute(&key, &offer.files, &load, &code, had_state) => c,
        () = env.signal.stopped() => {
            return Ok(Err(TurnEnd::Stopped(env.signal.reason().unwrap_or(Stop::Cancel))));
        }
    };
    let mut logs = String::new();
    if cell.reset {
        logs.push_str(
            "[The interpreter session was reset: variables, imports and files from earlier calls are gone; attached files were placed again.]\n",
        );
    }
    let mut outputs: Vec<Value> = Vec::new();
    let mut images = Vec::new();
    let mut files = Vec::new();
    let mut bytes_kept = 0u64;
    match cell.result {
        Ok(exec) => {
            for out in exec.outputs {
                match out {
                    Output::Logs(text) => logs.push_str(&text),
                    Output::Image(png) => {
                        let name = format!("{}-{}.png", call.id, images.len() + 1);
                        let id = keep_file(env, &name, png).await?;
                        outputs.push(json!({"type": "image", "image": {"file_id": id}}));
                        images.push(id);
                    }
                }
            }
            for f in exec.files {
                let path = format!("{}/{}", cell.data_dir.trim_end_matches('/'), f.name);
                match f.bytes {
                    Some(b) if bytes_kept + b.len() as u64 <= budget => {
                        bytes_kept += b.len() as u64;
                        let id = keep_file(env, &f.name, b).await?;
                        files.push((path, id));
                    }
                    _ => push_note(
                        &mut logs,
                        &format!(
                            "[{path} ({} bytes) was not kept: over the size limit for files given back]",
                            f.size
                        ),
                    ),
                }
            }
        }
        Err(ExecError::Unavailable(why)) => {
            push_note(
                &mut logs,
                &format!("Error: code interpreter unavailable: {why}"),
            );
        }
        Err(ExecError::Lost(why)) => push_note(
            &mut logs,
            &format!(
                "Error: the interpreter session ended ({why}). Its variables and files are gone; the next call starts a fresh session."
            ),
        ),
    }
    if !logs.is_empty() {
        outputs.insert(0, json!({"type": "logs", "logs": logs}));
    }
    // The outputs reach clients as deltas (the SDKs merge them into the call by index).
    if !outputs.is_empty() {
        let indexed: Vec<Value> = outputs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut o = o.clone();
                o["index"] = json!(i);
                o
            })
            .collect();
        emit(
            env.sink,
            Event::StepDelta(json!({
                "id": step_id,
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [{
                    "index": call.index, "type": "code_interpreter",
                    "code_interpreter": {"outputs": indexed},
                }]}},
            })),
        );
    }
    Ok(Ok(CodeDone {
        told: model_text(&logs, &images, &files),
        details: json!({"input": code, "outputs": outputs}),
        files,
        bytes: bytes_kept,
    }))
}

fn push_note(logs: &mut String, note: &str) {
    if !logs.is_empty() && !logs.ends_with('\n') {
        logs.push('\n');
    }
    logs.push_str(note);
}

/// Stores bytes the code produced as a File of the run's tenant (`assistants_output`).
async fn keep_file(env: &Env<'_>, name: &str, bytes: Bytes) -> Result<String, Error> {
    let r = env.r;
    let id = new_id("file-");
    let total = bytes.len() as u64;
    let mut index = 0u32;
    let mut rest = bytes;
    while !rest.is_empty() {
        let piece = rest.split_to(rest.len().min(PART_SIZE));
        r.store
            .files
            .put_file_part(&r.tenant, &id, index, piece)
            .await?;
        index += 1;
    }
    let f = FileObject {
        id: id.clone(),
        object: "file".into(),
        bytes: total,
        created_at: env.state.clock.now(),
        expires_at: None,
        filename: name.to_owned(),
        purpose: "assistants_output".into(),
        status: "processed".into(),
        status_details: None,
    };
    // The metadata goes last: a listed file is whole.
    r.store.files.put_file(&r.tenant, &f).await?;
    Ok(id)
}
