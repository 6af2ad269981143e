//! The route table: (method, path pattern) → local endpoint. A path that is not in it is
//! forwarded to the upstream untouched.
//!
//! Every endpoint is declared once, in [`endpoints!`]: its variant, method, pattern, handler
//! and scope. The `Endpoint` enum and the matchit table here, and `api::dispatch`, are all
//! expanded from that one list, so adding an endpoint is one line plus its handler.
//!
//! Patterns use `matchit` syntax (`{param}`) and match the raw, still percent-encoded path.

use http::Method;

use crate::metrics::RouteClass;

/// The one list of endpoints the proxy answers itself, handed to the macro named `$then`
/// (this file's `route_enum`, `api`'s `dispatch_table`). Each line reads
/// `Variant: METHOD "pattern" => handler, Scope;` where the handler path is resolved in
/// `crate::api` (the list only names it, so this module does not depend on `api`).
macro_rules! endpoints {
    ($then:ident) => {
        $then! {
            // The proxy's own
            Healthz: GET "/healthz" => ops::healthz, Own;
            Readyz: GET "/readyz" => ops::readyz, Own;
            Metrics: GET "/metrics" => ops::metrics, Own;
            // Files: the upstream serves the same paths for its batch and fine-tuning jobs
            ListFiles: GET "/v1/files" => files::list, Shared;
            CreateFile: POST "/v1/files" => files::create, Shared;
            RetrieveFile: GET "/v1/files/{file_id}" => files::retrieve, Shared;
            DeleteFile: DELETE "/v1/files/{file_id}" => files::delete, Shared;
            FileContent: GET "/v1/files/{file_id}/content" => files::content, Shared;
            // Assistants (+ v1 assistant files)
            ListAssistants: GET "/v1/assistants" => assistants::list, Beta;
            CreateAssistant: POST "/v1/assistants" => assistants::create, Beta;
            RetrieveAssistant: GET "/v1/assistants/{assistant_id}" => assistants::retrieve, Beta;
            ModifyAssistant: POST "/v1/assistants/{assistant_id}" => assistants::modify, Beta;
            DeleteAssistant: DELETE "/v1/assistants/{assistant_id}" => assistants::delete, Beta;
            ListAssistantFiles: GET "/v1/assistants/{assistant_id}/files" => assistants::list_files, Beta;
            CreateAssistantFile: POST "/v1/assistants/{assistant_id}/files" => assistants::create_file, Beta;
            RetrieveAssistantFile: GET "/v1/assistants/{assistant_id}/files/{file_id}" => assistants::retrieve_file, Beta;
            DeleteAssistantFile: DELETE "/v1/assistants/{assistant_id}/files/{file_id}" => assistants::delete_file, Beta;
            // Threads (+ create-and-run)
            CreateThread: POST "/v1/threads" => threads::create, Beta;
            CreateThreadAndRun: POST "/v1/threads/runs" => runs::create_thread_and_run, Beta;
            RetrieveThread: GET "/v1/threads/{thread_id}" => threads::retrieve, Beta;
            ModifyThread: POST "/v1/threads/{thread_id}" => threads::modify, Beta;
            DeleteThread: DELETE "/v1/threads/{thread_id}" => threads::delete, Beta;
            // Messages (+ v1 message files)
            ListMessages: GET "/v1/threads/{thread_id}/messages" => messages::list, Beta;
            CreateMessage: POST "/v1/threads/{thread_id}/messages" => messages::create, Beta;
            RetrieveMessage: GET "/v1/threads/{thread_id}/messages/{message_id}" => messages::retrieve, Beta;
            ModifyMessage: POST "/v1/threads/{thread_id}/messages/{message_id}" => messages::modify, Beta;
            DeleteMessage: DELETE "/v1/threads/{thread_id}/messages/{message_id}" => messages::delete, Beta;
            ListMessageFiles: GET "/v1/threads/{thread_id}/messages/{message_id}/files" => messages::list_files, Beta;
            RetrieveMessageFile: GET "/v1/threads/{thread_id}/messages/{message_id}/files/{file_id}" => messages::retrieve_file, Beta;
            // Runs and steps
            ListRuns: GET "/v1/threads/{thread_id}/runs" => runs::list, Beta;
            CreateRun: POST "/v1/threads/{thread_id}/runs" => runs::create, Beta;
            RetrieveRun: GET "/v1/threads/{thread_id}/runs/{run_id}" => runs::retrieve, Beta;
            ModifyRun: POST "/v1/threads/{thread_id}/runs/{run_id}" => runs::modify, Beta;
            CancelRun: POST "/v1/threads/{thread_id}/runs/{run_id}/cancel" => runs::cancel, Beta;
            SubmitToolOutputs: POST "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs" => runs::submit_tool_outputs, Beta;
            ListRunSteps: GET "/v1/threads/{thread_id}/runs/{run_id}/steps" => runs::list_steps, Beta;
            RetrieveRunStep: GET "/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}" => runs::retrieve_step, Beta;
            // Vector stores, their files, batches, search
            ListVectorStores: GET "/v1/vector_stores" => vector_stores::list, Ga;
            CreateVectorStore: POST "/v1/vector_stores" => vector_stores::create, Ga;
            RetrieveVectorStore: GET "/v1/vector_stores/{vector_store_id}" => vector_stores::retrieve, Ga;
            ModifyVectorStore: POST "/v1/vector_stores/{vector_store_id}" => vector_stores::modify, Ga;
            DeleteVectorStore: DELETE "/v1/vector_stores/{vector_store_id}" => vector_stores::delete, Ga;
            SearchVectorStore: POST "/v1/vector_stores/{vector_store_id}/search" => vector_stores::search, Ga;
            ListVectorStoreFiles: GET "/v1/vector_stores/{vector_store_id}/files" => vector_stores::files::list, Ga;
            CreateVectorStoreFile: POST "/v1/vector_stores/{vector_store_id}/files" => vector_stores::files::create, Ga;
            RetrieveVectorStoreFile: GET "/v1/vector_stores/{vector_store_id}/files/{file_id}" => vector_stores::files::retrieve, Ga;
            UpdateVectorStoreFile: POST "/v1/vector_stores/{vector_store_id}/files/{file_id}" => vector_stores::files::update, Ga;
            DeleteVectorStoreFile: DELETE "/v1/vector_stores/{vector_store_id}/files/{file_id}" => vector_stores::files::delete, Ga;
            VectorStoreFileContent: GET "/v1/vector_stores/{vector_store_id}/files/{file_id}/content" => vector_stores::files::content, Ga;
            CreateFileBatch: POST "/v1/vector_stores/{vector_store_id}/file_batches" => vector_stores::batches::create, Ga;
            RetrieveFileBatch: GET "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}" => vector_stores::batches::retrieve, Ga;
            CancelFileBatch: POST "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel" => vector_stores::batches::cancel, Ga;
            ListFileBatchFiles: GET "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files" => vector_stores::batches::list_files, Ga;
        }
    };
}
pub(crate) use endpoints;

/// What kind of endpoint a route is: its metrics class, whether the Assistants beta header is
/// checked, and what happens to a method the table does not list for its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The proxy's own operational endpoints (`/healthz`, `/readyz`, `/metrics`).
    Own,
    /// The Assistants beta (assistants, threads and everything under them), whose
    /// `OpenAI-Beta` header is checked.
    Beta,
    /// GA endpoints the proxy alone serves (vector stores).
    Ga,
    /// GA paths the upstream serves too (files, for its batch and fine-tuning jobs): a method
    /// the table does not list is forwarded rather than refused.
    Shared,
}

macro_rules! route_enum {
    ($($name:ident: $method:ident $pattern:literal => $handler:path, $scope:ident;)*) => {
        /// Every endpoint the proxy answers itself.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Endpoint {
            $($name,)*
        }

        impl Endpoint {
            /// All endpoints, in declaration order.
            pub const ALL: &[Endpoint] = &[$(Endpoint::$name,)*];

            pub fn method(self) -> Method {
                match self {
                    $(Endpoint::$name => Method::$method,)*
                }
            }

            pub fn pattern(self) -> &'static str {
                match self {
                    $(Endpoint::$name => $pattern,)*
                }
            }

            pub fn scope(self) -> Scope {
                match self {
                    $(Endpoint::$name => Scope::$scope,)*
                }
            }

            /// The handler's path in `crate::api`, as written in the list (for tests and logs).
            pub fn handler(self) -> &'static str {
                match self {
                    $(Endpoint::$name => stringify!($handler),)*
                }
            }
        }
    };
}
endpoints!(route_enum);

impl Endpoint {
    pub fn class(self) -> RouteClass {
        match self.scope() {
            Scope::Own => RouteClass::Own,
            Scope::Beta | Scope::Ga | Scope::Shared => RouteClass::Intercepted,
        }
    }

    /// Whether the endpoint belongs to the Assistants beta, whose `OpenAI-Beta` header is
    /// checked. Files and vector stores are GA.
    pub fn is_assistants_beta(self) -> bool {
        self.scope() == Scope::Beta
    }

    fn other_methods(self) -> OtherMethods {
        match self.scope() {
            Scope::Shared => OtherMethods::Forward,
            Scope::Own | Scope::Beta | Scope::Ga => OtherMethods::Refuse,
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
        for &endpoint in Endpoint::ALL {
            let pattern = endpoint.pattern();
            match grouped.iter_mut().find(|(p, _)| *p == pattern) {
                Some((_, routes)) => routes.methods.push((endpoint.method(), endpoint)),
                None => grouped.push((
                    pattern,
                    PathRoutes {
                        methods: vec![(endpoint.method(), endpoint)],
                        // All endpoints of one path share a scope (a unit test checks it).
                        other: endpoint.other_methods(),
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

    /// A concrete path for a pattern: each `{name}` becomes `v_name`.
    fn sample_path(pattern: &str) -> (String, Vec<&str>) {
        let mut path = String::new();
        let mut names = Vec::new();
        for seg in pattern.split('/').skip(1) {
            path.push('/');
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    path.push_str(&format!("v_{name}"));
                    names.push(name);
                }
                None => path.push_str(seg),
            }
        }
        (path, names)
    }

    #[test]
    fn every_endpoint_resolves_to_itself_with_its_params() {
        let table = RouteTable::new();
        assert_eq!(Endpoint::ALL.len(), 53);
        for &endpoint in Endpoint::ALL {
            let (path, names) = sample_path(endpoint.pattern());
            let mut methods = vec![endpoint.method()];
            if endpoint.method() == Method::GET {
                methods.push(Method::HEAD);
            }
            for method in methods {
                match table.resolve(&method, &path) {
                    Resolution::Local {
                        endpoint: e,
                        params,
                    } => {
                        assert_eq!(e, endpoint, "{method} {path}");
                        for name in &names {
                            assert_eq!(params.get(name), Some(format!("v_{name}").as_str()));
                        }
                        assert_eq!(params.0.len(), names.len(), "{path}");
                    }
                    _ => panic!("{method} {path} does not resolve"),
                }
            }
        }
    }

    #[test]
    fn no_two_endpoints_share_a_method_and_path_or_a_handler() {
        for (i, a) in Endpoint::ALL.iter().enumerate() {
            for b in &Endpoint::ALL[i + 1..] {
                assert!(
                    (a.method(), a.pattern()) != (b.method(), b.pattern()),
                    "{a:?} and {b:?}"
                );
                assert_ne!(a.handler(), b.handler(), "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn scopes_follow_the_path() {
        for &e in Endpoint::ALL {
            let p = e.pattern();
            let expected = if !p.starts_with("/v1/") {
                Scope::Own
            } else if p.starts_with("/v1/assistants") || p.starts_with("/v1/threads") {
                Scope::Beta
            } else if p.starts_with("/v1/files") {
                Scope::Shared
            } else {
                Scope::Ga
            };
            assert_eq!(e.scope(), expected, "{e:?}");
            assert_eq!(e.is_assistants_beta(), expected == Scope::Beta);
            assert_eq!(e.class() == RouteClass::Own, expected == Scope::Own);
        }
    }

    #[test]
    fn each_path_answers_exactly_its_listed_methods() {
        let table = RouteTable::new();
        let all = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ];
        for &first in Endpoint::ALL {
            let (path, _) = sample_path(first.pattern());
            let same_path: Vec<Endpoint> = Endpoint::ALL
                .iter()
                .copied()
                .filter(|e| e.pattern() == first.pattern())
                .collect();
            let scopes: Vec<Scope> = same_path.iter().map(|e| e.scope()).collect();
            assert!(scopes.iter().all(|s| *s == scopes[0]), "{path}: {scopes:?}");
            for method in &all {
                let listed = same_path.iter().find(|e| e.method() == method).or_else(|| {
                    let get = same_path.iter().find(|e| e.method() == Method::GET);
                    (method == Method::HEAD).then_some(get).flatten()
                });
                match (table.resolve(method, &path), listed) {
                    (Resolution::Local { endpoint, .. }, Some(l)) => assert_eq!(endpoint, *l),
                    (Resolution::Forward, None) => assert_eq!(first.scope(), Scope::Shared),
                    (Resolution::InvalidUrl, None) => assert_ne!(first.scope(), Scope::Shared),
                    _ => panic!("{method} {path}: expected {listed:?}"),
                }
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
