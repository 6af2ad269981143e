//! Local handlers, one module per resource; `dispatch` maps a resolved endpoint to its
//! handler. Handlers are thin: decode, call the service, encode.

pub mod assistants;
pub mod common;
pub mod files;
pub mod messages;
pub mod ops;
pub mod runs;
pub mod threads;
pub mod validate;
pub mod vector_stores;

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::body::ProxyBody;
use crate::error::Error;
use crate::routes::{Endpoint, PathParams};

pub async fn dispatch(
    endpoint: Endpoint,
    state: &Arc<AppState>,
    req: Request<Incoming>,
    params: PathParams,
) -> Result<Response<ProxyBody>, Error> {
    use Endpoint as E;
    // Before anything else, as OpenAI does: a request in the wrong shape is not looked at.
    if endpoint.is_assistants_beta() {
        validate::ApiVersion::required(req.headers())?;
    }
    match endpoint {
        E::Healthz => Ok(ops::healthz()),
        E::Readyz => Ok(ops::readyz(state).await),
        E::Metrics => Ok(ops::metrics(state)),

        E::ListAssistants => assistants::list(state, req).await,
        E::CreateAssistant => assistants::create(state, req).await,
        E::RetrieveAssistant => assistants::retrieve(state, req, params).await,
        E::ModifyAssistant => assistants::modify(state, req, params).await,
        E::DeleteAssistant => assistants::delete(state, req, params).await,
        E::ListAssistantFiles => assistants::list_files(state, req, params).await,
        E::CreateAssistantFile => assistants::create_file(state, req, params).await,
        E::RetrieveAssistantFile => assistants::retrieve_file(state, req, params).await,
        E::DeleteAssistantFile => assistants::delete_file(state, req, params).await,

        E::CreateThread => threads::create(state, req).await,
        E::RetrieveThread => threads::retrieve(state, req, params).await,
        E::ModifyThread => threads::modify(state, req, params).await,
        E::DeleteThread => threads::delete(state, req, params).await,

        E::ListMessages => messages::list(state, req, params).await,
        E::CreateMessage => messages::create(state, req, params).await,
        E::RetrieveMessage => messages::retrieve(state, req, params).await,
        E::ModifyMessage => messages::modify(state, req, params).await,
        E::DeleteMessage => messages::delete(state, req, params).await,
        E::ListMessageFiles => messages::list_files(state, req, params).await,
        E::RetrieveMessageFile => messages::retrieve_file(state, req, params).await,

        E::CreateThreadAndRun => runs::create_thread_and_run(state, req).await,
        E::ListRuns => runs::list(state, req, params).await,
        E::CreateRun => runs::create(state, req, params).await,
        E::RetrieveRun => runs::retrieve(state, req, params).await,
        E::ModifyRun => runs::modify(state, req, params).await,
        E::CancelRun => runs::cancel(state, req, params).await,
        E::SubmitToolOutputs => runs::submit_tool_outputs(state, req, params).await,
        E::ListRunSteps => runs::list_steps(state, req, params).await,
        E::RetrieveRunStep => runs::retrieve_step(state, req, params).await,

        E::ListFiles => files::list(state, req).await,
        E::CreateFile => files::create(state, req).await,
        E::RetrieveFile => files::retrieve(state, req, params).await,
        E::DeleteFile => files::delete(state, req, params).await,
        E::FileContent => files::content(state, req, params).await,

        E::ListVectorStores => vector_stores::list(state, req).await,
        E::CreateVectorStore => vector_stores::create(state, req).await,
        E::RetrieveVectorStore => vector_stores::retrieve(state, req, params).await,
        E::ModifyVectorStore => vector_stores::modify(state, req, params).await,
        E::DeleteVectorStore => vector_stores::delete(state, req, params).await,
        E::SearchVectorStore => vector_stores::search(state, req, params).await,
        E::ListVectorStoreFiles => vector_stores::files::list(state, req, params).await,
        E::CreateVectorStoreFile => vector_stores::files::create(state, req, params).await,
        E::RetrieveVectorStoreFile => vector_stores::files::retrieve(state, req, params).await,
        E::UpdateVectorStoreFile => vector_stores::files::update(state, req, params).await,
        E::DeleteVectorStoreFile => vector_stores::files::delete(state, req, params).await,
        E::VectorStoreFileContent => vector_stores::files::content(state, req, params).await,
        E::CreateFileBatch => vector_stores::batches::create(state, req, params).await,
        E::RetrieveFileBatch => vector_stores::batches::retrieve(state, req, params).await,
        E::CancelFileBatch => vector_stores::batches::cancel(state, req, params).await,
        E::ListFileBatchFiles => vector_stores::batches::list_files(state, req, params).await,
    }
}
