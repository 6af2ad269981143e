//! The route table: (method, path pattern) → local endpoint. This file holds only the mapping;
//! a path that is not in it is forwarded to the upstream untouched.
//!
//! Patterns use `matchit` syntax (`{param}`) and match the raw, still percent-encoded path.

use http::Method;

use crate::metrics::RouteClass;

/// Every endpoint the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    // Files
    ListFiles,
    CreateFile,
    RetrieveFile,
    DeleteFile,
    FileContent,
    // Assistants (+ v1 assistant files)
    ListAssistants,
    CreateAssistant,
    RetrieveAssistant,
    ModifyAssistant,
    DeleteAssistant,
    ListAssistantFiles,
    CreateAssistantFile,
    RetrieveAssistantFile,
    DeleteAssistantFile,
    // Threads
    CreateThread,
    CreateThreadAndRun,
    RetrieveThread,
    ModifyThread,
    DeleteThread,
    // Messages (+ v1 message files)
    ListMessages,
    CreateMessage,
    RetrieveMessage,
    ModifyMessage,
    DeleteMessage,
    ListMessageFiles,
    RetrieveMessageFile,
    // Runs and steps
    ListRuns,
    CreateRun,
    RetrieveRun,
    ModifyRun,
    CancelRun,
    SubmitToolOutputs,
    ListRunSteps,
    RetrieveRunStep,
    // Vector stores, their files, batches, search
    ListVectorStores,
    CreateVectorStore,
    RetrieveVectorStore,
    ModifyVectorStore,
    DeleteVectorStore,
    SearchVectorStore,
    ListVectorStoreFiles,
    CreateVectorStoreFile,
    RetrieveVectorStoreFile,
    UpdateVectorStoreFile,
    DeleteVectorStoreFile,
    VectorStoreFileContent,
    CreateFileBatch,
    RetrieveFileBatch,
    CancelFileBatch,
    ListFileBatchFiles,
}

impl Endpoint {
    pub fn class(self) -> RouteClass {
        match self {
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => RouteClass::Own,
            _ => RouteClass::Intercepted,
        }
    }

    /// Whether the endpoint belongs to the Assistants beta (assistants, threads and everything
    /// under them), whose `OpenAI-Beta` header is checked. Files and vector stores are GA.
    pub fn is_assistants_beta(self) -> bool {
        use Endpoint as E;
        match self {
            E::ListAssistants
            | E::CreateAssistant
            | E::RetrieveAssistant
            | E::ModifyAssistant
            | E::DeleteAssistant
            | E::ListAssistantFiles
            | E::CreateAssistantFile
            | E::RetrieveAssistantFile
            | E::DeleteAssistantFile
            | E::CreateThread
            | E::CreateThreadAndRun
            | E::RetrieveThread
            | E::ModifyThread
            | E::DeleteThread
            | E::ListMessages
            | E::CreateMessage
            | E::RetrieveMessage
            | E::ModifyMessage
            | E::DeleteMessage
            | E::ListMessageFiles
            | E::RetrieveMessageFile
            | E::ListRuns
            | E::CreateRun
            | E::RetrieveRun
            | E::ModifyRun
            | E::CancelRun
            | E::SubmitToolOutputs
            | E::ListRunSteps
            | E::RetrieveRunStep => true,
            E::Healthz
            | E::Readyz
            | E::Metrics
            | E::ListFiles
            | E::CreateFile
            | E::RetrieveFile
            | E::DeleteFile
            | E::FileContent
            | E::ListVectorStores
            | E::CreateVectorStore
            | E::RetrieveVectorStore
            | E::ModifyVectorStore
            | E::DeleteVectorStore
            | E::SearchVectorStore
            | E::ListVectorStoreFiles
            | E::CreateVectorStoreFile
            | E::RetrieveVectorStoreFile
            | E::UpdateVectorStoreFile
            | E::DeleteVectorStoreFile
            | E::VectorStoreFileContent
            | E::CreateFileBatch
            | E::RetrieveFileBatch
            | E::CancelFileBatch
            | E::ListFileBatchFiles => false,
        }
    }
}

/// What to do with a method the table does not list for a matched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OtherMethods {
    /// The upstream may know it (e.g. a files route this proxy only partly serves).
    Forward,
    /// The path belongs to the proxy alone: answer OpenAI's "Invalid URL" 404.
    Refuse,
}

/// (method, pattern, endpoint), grouped by pattern when the table is built.
const ROUTES: &[(Method, &str, Endpoint)] = &[
    (Method::GET, "/healthz", Endpoint::Healthz),
    (Method::GET, "/readyz", Endpoint::Readyz),
    (Method::GET, "/metrics", Endpoint::Metrics),
    (Method::GET, "/v1/files", Endpoint::ListFiles),
    (Method::POST, "/v1/files", Endpoint::CreateFile),
    (Method::GET, "/v1/files/{file_id}", Endpoint::RetrieveFile),
    (Method::DELETE, "/v1/files/{file_id}", Endpoint::DeleteFile),
    (
        Method::GET,
        "/v1/files/{file_id}/content",
        Endpoint::FileContent,
    ),
    (Method::GET, "/v1/assistants", Endpoint::ListAssistants),
    (Method::POST, "/v1/assistants", Endpoint::CreateAssistant),
    (
        Method::GET,
        "/v1/assistants/{assistant_id}",
        Endpoint::RetrieveAssistant,
    ),
    (
        Method::POST,
        "/v1/assistants/{assistant_id}",
        Endpoint::ModifyAssistant,
    ),
    (
        Method::DELETE,
        "/v1/assistants/{assistant_id}",
        Endpoint::DeleteAssistant,
    ),
    (
        Method::GET,
        "/v1/assistants/{assistant_id}/files",
        Endpoint::ListAssistantFiles,
    ),
    (
        Method::POST,
        "/v1/assistants/{assistant_id}/files",
        Endpoint::CreateAssistantFile,
    ),
    (
        Method::GET,
        "/v1/assistants/{assistant_id}/files/{file_id}",
        Endpoint::RetrieveAssistantFile,
    ),
    (
        Method::DELETE,
        "/v1/assistants/{assistant_id}/files/{file_id}",
        Endpoint::DeleteAssistantFile,
    ),
    (Method::POST, "/v1/threads", Endpoint::CreateThread),
    (
        Method::POST,
        "/v1/threads/runs",
        Endpoint::CreateThreadAndRun,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}",
        Endpoint::RetrieveThread,
    ),
    (
        Method::POST,
        "/v1/threads/{thread_id}",
        Endpoint::ModifyThread,
    ),
    (
        Method::DELETE,
        "/v1/threads/{thread_id}",
        Endpoint::DeleteThread,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/messages",
        Endpoint::ListMessages,
    ),
    (
        Method::POST,
        "/v1/threads/{thread_id}/messages",
        Endpoint::CreateMessage,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/messages/{message_id}",
        Endpoint::RetrieveMessage,
    ),
    (
        Method::POST,
        "/v1/threads/{thread_id}/messages/{message_id}",
        Endpoint::ModifyMessage,
    ),
    (
        Method::DELETE,
        "/v1/threads/{thread_id}/messages/{message_id}",
        Endpoint::DeleteMessage,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/messages/{message_id}/files",
        Endpoint::ListMessageFiles,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/messages/{message_id}/files/{file_id}",
        Endpoint::RetrieveMessageFile,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/runs",
        Endpoint::ListRuns,
    ),
    (
        Method::POST,
        "/v1/threads/{thread_id}/runs",
        Endpoint::CreateRun,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/runs/{run_id}",
        Endpoint::RetrieveRun,
    ),
    (
        Method::POST,
        "/v1/threads/{thread_id}/runs/{run_id}",
        Endpoint::ModifyRun,
    ),
    (
        Method::POST,
        "/v1/threads/{thread_id}/runs/{run_id}/cancel",
        Endpoint::CancelRun,
    ),
    (
        Method::POST,
        "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
        Endpoint::SubmitToolOutputs,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/runs/{run_id}/steps",
        Endpoint::ListRunSteps,
    ),
    (
        Method::GET,
        "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}",
        Endpoint::RetrieveRunStep,
    ),
    (Method::GET, "/v1/vector_stores", Endpoint::ListVectorStores),
    (
        Method::POST,
        "/v1/vector_stores",
        Endpoint::CreateVectorStore,
    ),
    (
        Method::GET,
        "/v1/vector_stores/{vector_store_id}",
        Endpoint::RetrieveVectorStore,
    ),
    (
        Method::POST,
        "/v1/vector_stores/{vector_store_id}",
        Endpoint::ModifyVectorStore,
    ),
    (
        Method::DELETE,
        "/v1/vector_stores/{vector_store_id}",
        Endpoint::DeleteVectorStore,
    ),
    (
        Method::POST,
        "/v1/vector_stores/{vector_store_id}/search",
        Endpoint::SearchVectorStore,
    ),
    (
        Method::GET,
        "/v1/vector_stores/{vector_store_id}/files",
        Endpoint::ListVectorStoreFiles,
    ),
    (
        Method::POST,
        "/v1/vector_stores/{vector_store_id}/files",
        Endpoint::CreateVectorStoreFile,
    ),
    (
        Method::GET,
        "/v1/vector_stores/{vector_store_id}/files/{file_id}",
        Endpoint::RetrieveVectorStoreFile,
    ),
    (
        Method::POST,
        "/v1/vector_stores/{vector_store_id}/files/{file_id}",
        Endpoint::UpdateVectorStoreFile,
    ),
    (
        Method::DELETE,
        "/v1/vector_stores/{vector_store_id}/files/{file_id}",
        Endpoint::DeleteVectorStoreFile,
    ),
    (
        Method::GET,
        "/v1/vector_stores/{vector_store_id}/files/{file_id}/content",
        Endpoint::VectorStoreFileContent,
    ),
    (
        Method::POST,
        "/v1/vector_stores/{vector_store_id}/file_batches",
        Endpoint::CreateFileBatch,
    ),
    (
        Method::GET,
        "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}",
        Endpoint::RetrieveFileBatch,
    ),
    (
        Method::POST,
        "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel",
        Endpoint::CancelFileBatch,
    ),
    (
        Method::GET,
        "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files",
        Endpoint::ListFileBatchFiles,
    ),
];

/// Patterns whose unlisted methods are forwarded rather than refused: the upstream still
/// serves files (for its batch and fine-tuning jobs), so the proxy only owns part of them.
const FORWARD_OTHER_METHODS: &[&str] = &[
    "/v1/files",
    "/v1/files/{file_id}",
    "/v1/files/{file_id}/content",
];

struct PathRoutes {
    methods: Vec<(Method, Endpoint)>,
    other: OtherMethods,
}

/// Path parameters of a matched route, by name.
#[derive(Debug, Default, Clone)]
pub struct PathParams(Vec<(String, String)>);

impl PathParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub enum Resolution {
    Local {
        endpoint: Endpoint,
        params: PathParams,
    },
    /// A proxy-owned path with a method it does not serve.
    InvalidUrl,
    Forward,
}

pub struct RouteTable {
    router: matchit::Router<PathRoutes>,
}

impl RouteTable {
    pub fn new() -> RouteTable {
        let mut grouped: Vec<(&str, PathRoutes)> = Vec::new();
        for (method, pattern, endpoint) in ROUTES {
            let other = if FORWARD_OTHER_METHODS.contains(pattern) {
                OtherMethods::Forward
            } else {
                OtherMethods::Refuse
            };
            match grouped.iter_mut().find(|(p, _)| p == pattern) {
                Some((_, routes)) => routes.methods.push((method.clone(), *endpoint)),
                None => grouped.push((
                    pattern,
                    PathRoutes {
                        methods: vec![(method.clone(), *endpoint)],
                        other,
                    },
                )),
            }
        }
        let mut router = matchit::Router::new();
        for (pattern, routes) in grouped {
            // The table is a compile-time constant; a conflict is a programming error that the
            // unit test below catches, so it is skipped with a log rather than a panic.
            if let Err(e) = router.insert(pattern, routes) {
                tracing::error!(pattern, error = %e, "route table conflict");
            }
        }
        RouteTable { router }
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Resolution {
        let Ok(matched) = self.router.at(path) else {
            return Resolution::Forward;
        };
        let routes = matched.value;
        let endpoint = routes
            .methods
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, e)| *e)
            // HEAD is GET without a body; hyper drops the body for us.
            .or_else(|| {
                (method == Method::HEAD)
                    .then(|| routes.methods.iter().find(|(m, _)| m == Method::GET))
                    .flatten()
                    .map(|(_, e)| *e)
            });
        match (endpoint, routes.other) {
            (Some(endpoint), _) => Resolution::Local {
                endpoint,
                params: PathParams(
                    matched
                        .params
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ),
            },
            (None, OtherMethods::Forward) => Resolution::Forward,
            (None, OtherMethods::Refuse) => Resolution::InvalidUrl,
        }
    }
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_segments_win_over_parameters() {
        let table = RouteTable::new();
        match table.resolve(&Method::POST, "/v1/threads/runs") {
            Resolution::Local { endpoint, .. } => {
                assert_eq!(endpoint, Endpoint::CreateThreadAndRun)
            }
            _ => panic!(),
        }
        match table.resolve(&Method::POST, "/v1/threads/thread_1/runs/run_2/cancel") {
            Resolution::Local { endpoint, params } => {
                assert_eq!(endpoint, Endpoint::CancelRun);
                assert_eq!(params.get("thread_id"), Some("thread_1"));
                assert_eq!(params.get("run_id"), Some("run_2"));
            }
            _ => panic!(),
        }
    }

    #[test]
    fn every_route_is_reachable() {
        let table = RouteTable::new();
        for (method, pattern, endpoint) in ROUTES {
            let path = pattern.replace(['{', '}'], "");
            match table.resolve(method, &path) {
                Resolution::Local { endpoint: e, .. } => assert_eq!(e, *endpoint, "{pattern}"),
                _ => panic!("{method} {pattern} does not resolve"),
            }
        }
    }

    #[test]
    fn unknown_paths_are_forwarded() {
        let table = RouteTable::new();
        assert!(matches!(
            table.resolve(&Method::POST, "/v1/chat/completions"),
            Resolution::Forward
        ));
        assert!(matches!(
            table.resolve(&Method::POST, "/healthz"),
            Resolution::InvalidUrl
        ));
        assert!(matches!(
            table.resolve(&Method::HEAD, "/healthz"),
            Resolution::Local { .. }
        ));
        assert!(matches!(
            table.resolve(&Method::PATCH, "/v1/files/file-1"),
            Resolution::Forward
        ));
        assert!(matches!(
            table.resolve(&Method::PUT, "/v1/assistants/asst_1"),
            Resolution::InvalidUrl
        ));
        assert!(matches!(
            table.resolve(&Method::GET, "/v1/threads/runs"),
            Resolution::InvalidUrl
        ));
    }
}
