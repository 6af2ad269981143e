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
}

impl Endpoint {
    pub fn class(self) -> RouteClass {
        match self {
            Endpoint::Healthz | Endpoint::Readyz | Endpoint::Metrics => RouteClass::Own,
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
];

/// Patterns whose unlisted methods are forwarded rather than refused.
const FORWARD_OTHER_METHODS: &[&str] = &[];

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
    fn every_route_is_reachable() {
        let table = RouteTable::new();
        for (method, pattern, endpoint) in ROUTES {
            let path = pattern.replace('{', "").replace('}', "");
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
    }
}
