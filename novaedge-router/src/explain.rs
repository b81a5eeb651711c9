//! Why a request matches the route it matches, and why every other route
//! does not: for tools (`novaedge explain`), never for serving.
//!
//! [`Router::explain`] reads every route of the router, tests each of its
//! conditions on its own with the functions the lookup uses, and compares
//! every route that matches with the selected one by the precedence key the
//! lookup uses. It allocates and reads the whole table, so it is for
//! answering a person's question; it adds nothing to
//! [`Router::find_parts`] or [`Router::resolve`], whose answer it reports.

use std::fmt;

use http::{HeaderName, Method, Request};

use crate::host::{Hostname, normalize_request_host};
use crate::matcher::{CompiledPath, Key, RequestParts, ValueMatcher};
use crate::path::{PathError, normalize_path};
use crate::reference::host_rank;
use crate::route::MatchType;
use crate::router::{Router, request_host};

/// The verdict on every route of a router for one request.
#[derive(Debug)]
pub struct Explanation<'r, T> {
    /// The host the routes were matched against: lowercase, without port
    /// or trailing dot. Empty when the request carries none.
    pub host: String,
    /// The path the routes were matched against (normalised).
    pub path: String,
    /// Every route, in the order they were given to [`Router::new`], so
    /// `routes[i].index == i`.
    pub routes: Vec<RouteExplanation<'r, T>>,
    /// The position in `routes` of the selected route; `None` is a 404.
    pub selected: Option<usize>,
}

impl<'r, T> Explanation<'r, T> {
    /// The selected route, if any.
    pub fn selected(&self) -> Option<&RouteExplanation<'r, T>> {
        self.selected.map(|i| &self.routes[i])
    }
}

/// One route's verdict.
#[derive(Debug)]
pub struct RouteExplanation<'r, T> {
    /// Its position in the input of [`Router::new`].
    pub index: usize,
    pub target: &'r T,
    pub hostname: HostnameVerdict,
    /// Every condition of the route, path first, then method, headers and
    /// query parameters, each with whether the request meets it. Repeated
    /// header or query parameter names are left out, as the router ignores
    /// them.
    pub conditions: Vec<ConditionVerdict>,
    pub outcome: Outcome,
}

impl<T> RouteExplanation<'_, T> {
    /// The conditions the request does not meet.
    pub fn failed(&self) -> impl Iterator<Item = &ConditionVerdict> {
        self.conditions.iter().filter(|c| !c.matched)
    }
}

/// How a route's hostnames relate to the request host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostnameVerdict {
    /// The route has no hostnames: it serves every host.
    Any,
    /// This hostname of the route (the most specific of those that match)
    /// matches the host.
    Matched(String),
    /// None of these hostnames matches the host.
    NotMatched(Vec<String>),
}

impl HostnameVerdict {
    pub fn matched(&self) -> bool {
        !matches!(self, Self::NotMatched(_))
    }
}

/// One condition of a route and whether the request meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionVerdict {
    pub condition: Condition,
    pub matched: bool,
}

/// A route condition other than its hostnames, as compiled: paths are
/// normalised, prefixes shown without their trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    PathExact(String),
    PathPrefix(String),
    PathRegularExpression(String),
    /// A gRPC method match; `None` is any service or method.
    Grpc {
        service: Option<ValueCondition>,
        method: Option<ValueCondition>,
    },
    Method(Method),
    Header {
        name: HeaderName,
        value: ValueCondition,
    },
    QueryParam {
        name: String,
        value: ValueCondition,
    },
}

/// A value a condition compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueCondition {
    pub kind: MatchType,
    /// The exact value (lossily decoded if not UTF-8), or the pattern.
    pub value: String,
}

/// Whether a route was selected, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The route the router picks.
    Selected,
    /// The route matches, but the selected one comes first; `by` is the
    /// first criterion that put it first.
    LowerPrecedence { by: PrecedenceStep },
    /// Its hostnames or a condition do not match.
    NotMatched,
}

/// The criteria of the precedence order (see the
/// [crate documentation](crate#precedence)), as the reason one matching
/// route comes before another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrecedenceStep {
    /// gRPC routes come before HTTPRoutes, which come before Ingress rules.
    Family,
    /// A more specific hostname: exact, then the longest wildcard, then none.
    Hostname,
    /// The kind of path match: exact, then regular expression, then prefix
    /// (gRPC: an exact service before a pattern).
    PathKind,
    /// A longer path (prefix without trailing slash, or pattern), or gRPC
    /// service.
    PathLength,
    /// gRPC: a longer method, or an exact method before a pattern.
    GrpcMethod,
    /// A method match before none.
    Method,
    /// More header matches.
    HeaderCount,
    /// More query parameter matches.
    QueryParamCount,
    /// The caller's rank: for Gateway API, the older route, then the first
    /// by namespace/name, then the first rule and match.
    Rank,
    /// The position in the router's input, between routes equal on all of
    /// the above.
    Order,
}

impl PrecedenceStep {
    /// A stable snake_case name, for machine-readable output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Family => "family",
            Self::Hostname => "hostname",
            Self::PathKind => "path_kind",
            Self::PathLength => "path_length",
            Self::GrpcMethod => "grpc_method",
            Self::Method => "method",
            Self::HeaderCount => "header_count",
            Self::QueryParamCount => "query_param_count",
            Self::Rank => "rank",
            Self::Order => "order",
        }
    }
}

impl fmt::Display for PrecedenceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Family => {
                "the selected route is of a family that comes first \
                 (gRPC, then HTTPRoute, then Ingress)"
            }
            Self::Hostname => "the selected route's hostname is more specific",
            Self::PathKind => {
                "the selected route's kind of path match comes first \
                 (exact, then regular expression, then prefix)"
            }
            Self::PathLength => "the selected route's path match is longer",
            Self::GrpcMethod => "the selected route's gRPC method match is more specific",
            Self::Method => "the selected route matches on the method",
            Self::HeaderCount => "the selected route has more header matches",
            Self::QueryParamCount => "the selected route has more query parameter matches",
            Self::Rank => {
                "the selected route ranks first (older, then by namespace/name, \
                 then by rule and match order)"
            }
            Self::Order => "the selected route comes first in the configuration",
        })
    }
}

impl fmt::Display for ValueCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            MatchType::Exact => write!(f, "= {:?}", self.value),
            MatchType::RegularExpression => write!(f, "~ /{}/", self.value),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PathExact(p) => write!(f, "path exact {p}"),
            // The root prefix is compiled to the empty string.
            Self::PathPrefix(p) if p.is_empty() => f.write_str("path prefix /"),
            Self::PathPrefix(p) => write!(f, "path prefix {p}"),
            Self::PathRegularExpression(p) => write!(f, "path regex /{p}/"),
            Self::Grpc { service, method } => {
                f.write_str("gRPC")?;
                match service {
                    Some(s) => write!(f, " service {s}")?,
                    None => f.write_str(" any service")?,
                }
                match method {
                    Some(m) => write!(f, " method {m}"),
                    None => f.write_str(" any method"),
                }
            }
            Self::Method(m) => write!(f, "method {m}"),
            Self::Header { name, value } => write!(f, "header {name} {value}"),
            Self::QueryParam { name, value } => write!(f, "query param {name} {value}"),
        }
    }
}

impl fmt::Display for HostnameVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any host (the route has no hostnames)"),
            Self::Matched(h) => write!(f, "hostname {h}"),
            Self::NotMatched(hs) => write!(f, "hostnames [{}]", hs.join(", ")),
        }
    }
}

// === impl Router ===

impl<T> Router<T> {
    /// Explains [`find_parts`](Self::find_parts) for `request`: the verdict
    /// on every route's hostnames and conditions, the selected route, and
    /// for every other route that matches, why the selected one comes
    /// first. Reads every route; for tools, not for serving.
    pub fn explain(&self, request: &RequestParts<'_>) -> Explanation<'_, T> {
        let host = normalize_request_host(request.host);
        let mut routes: Vec<(RouteExplanation<'_, T>, Option<Key>)> = self
            .routes
            .iter()
            .map(|route| {
                let rank = host_rank(route, &host);
                let hostname = match (rank, route.hostnames.is_empty()) {
                    (_, true) => HostnameVerdict::Any,
                    (Some(_), false) => HostnameVerdict::Matched(
                        best_hostname(&route.hostnames, &host, route.dialect)
                            .map_or_else(String::new, |h| h.to_string()),
                    ),
                    (None, false) => HostnameVerdict::NotMatched(
                        route.hostnames.iter().map(Hostname::to_string).collect(),
                    ),
                };
                let mut conditions = vec![ConditionVerdict {
                    condition: path_condition(&route.path),
                    matched: route.path.matches(request.path),
                }];
                if let Some(method) = route.method() {
                    conditions.push(ConditionVerdict {
                        condition: Condition::Method(method.clone()),
                        matched: route.method_matches(request.method),
                    });
                }
                conditions.extend(route.headers().iter().map(|h| ConditionVerdict {
                    condition: Condition::Header {
                        name: h.name.clone(),
                        value: value_condition(&h.value),
                    },
                    matched: h.matches(request.headers),
                }));
                conditions.extend(route.query().iter().map(|q| ConditionVerdict {
                    condition: Condition::QueryParam {
                        name: q.name.to_string(),
                        value: value_condition(&q.value),
                    },
                    matched: q.matches(request.query),
                }));
                // The whole test, as the lookup runs it; the verdicts above
                // only say which part failed.
                let key = rank
                    .filter(|_| route.matches(request))
                    .map(|rank| Key::new(&route.precedence, rank));
                let explanation = RouteExplanation {
                    index: route.precedence.index,
                    target: &route.target,
                    hostname,
                    conditions,
                    outcome: Outcome::NotMatched,
                };
                (explanation, key)
            })
            .collect();
        routes.sort_by_key(|(r, _)| r.index);

        // The selected route is the one with the smallest key among those
        // that match: what the indexed lookup finds (the property tests
        // hold it to `reference::LinearRouter`, which computes it this way).
        let selected = routes
            .iter()
            .enumerate()
            .filter_map(|(i, (_, key))| Some((i, (*key)?)))
            .min_by_key(|(_, key)| *key);
        if let Some((winner, winner_key)) = selected {
            for (i, (route, key)) in routes.iter_mut().enumerate() {
                route.outcome = if i == winner {
                    Outcome::Selected
                } else {
                    match key.as_ref().and_then(|key| winner_key.decided_by(key)) {
                        Some(by) => Outcome::LowerPrecedence { by },
                        None => Outcome::NotMatched,
                    }
                };
            }
        }
        Explanation {
            host: host.into_owned(),
            path: request.path.to_owned(),
            routes: routes.into_iter().map(|(r, _)| r).collect(),
            selected: selected.map(|(i, _)| i),
        }
    }

    /// Explains [`resolve`](Self::resolve): the path normalised (an `Err`
    /// is a 400) and the host taken from the request the same way.
    pub fn explain_request<B>(&self, req: &Request<B>) -> Result<Explanation<'_, T>, PathError> {
        let path = normalize_path(req.uri().path(), self.encoded_slashes())?;
        Ok(self.explain(&RequestParts {
            host: request_host(req),
            path: &path,
            query: req.uri().query().unwrap_or(""),
            method: req.method(),
            headers: req.headers(),
        }))
    }
}

/// The most specific of a route's hostnames that matches `host`.
fn best_hostname<'h>(
    hostnames: &'h [Hostname],
    host: &str,
    dialect: crate::route::Dialect,
) -> Option<&'h Hostname> {
    hostnames
        .iter()
        .filter_map(|h| Some((crate::reference::hostname_rank(h, host, dialect)?, h)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, h)| h)
}

fn path_condition(path: &CompiledPath) -> Condition {
    match path {
        CompiledPath::Exact(p) => Condition::PathExact(p.to_string()),
        CompiledPath::Prefix(p) => Condition::PathPrefix(p.to_string()),
        CompiledPath::Regex { regex, .. } => {
            Condition::PathRegularExpression(regex.pattern().to_owned())
        }
        CompiledPath::Grpc(grpc) => Condition::Grpc {
            service: grpc.service.as_ref().map(value_condition),
            method: grpc.method.as_ref().map(value_condition),
        },
    }
}

fn value_condition(value: &ValueMatcher) -> ValueCondition {
    match value {
        ValueMatcher::Exact(bytes) => ValueCondition {
            kind: MatchType::Exact,
            value: String::from_utf8_lossy(bytes).into_owned(),
        },
        ValueMatcher::Regex(regex) => ValueCondition {
            kind: MatchType::RegularExpression,
            value: regex.pattern().to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{
        Dialect, GrpcMethodMatch, HeaderMatch, PathMatch, QueryParamMatch, Route, RouteMatch,
    };
    use http::HeaderMap;

    fn route(hostnames: &[&str], route_match: RouteMatch, rank: u64) -> Route<&'static str> {
        Route {
            hostnames: hostnames.iter().map(|h| (*h).to_owned()).collect(),
            route_match,
            rank,
            target: "",
            dialect: Dialect::GatewayApi,
        }
    }

    fn prefix(p: &str) -> RouteMatch {
        RouteMatch {
            path: PathMatch::Prefix(p.to_owned()),
            ..RouteMatch::default()
        }
    }

    fn router() -> Router<&'static str> {
        let named = |mut r: Route<&'static str>, name| {
            r.target = name;
            r
        };
        Router::new([
            named(route(&["shop.test"], prefix("/api"), 0), "api"),
            named(
                route(
                    &["*.test"],
                    RouteMatch {
                        headers: vec![HeaderMatch::exact(HeaderName::from_static("x-canary"), "1")],
                        query_params: vec![QueryParamMatch::regex("v", "[0-9]+")],
                        ..prefix("/api/")
                    },
                    1,
                ),
                "canary",
            ),
            named(
                route(
                    &["shop.test"],
                    RouteMatch {
                        method: Some(Method::POST),
                        ..RouteMatch::default()
                    },
                    2,
                ),
                "post",
            ),
            named(route(&["other.test"], prefix("/"), 3), "other"),
            named(
                route(
                    &[],
                    RouteMatch {
                        path: PathMatch::RegularExpression("/api/v[0-9]+".to_owned()),
                        ..RouteMatch::default()
                    },
                    4,
                ),
                "regex",
            ),
            named(route(&["shop.test"], prefix("/"), 5), "root"),
        ])
        .expect("valid routes")
    }

    fn explain<'r>(
        router: &'r Router<&'static str>,
        req: &Request<()>,
    ) -> Explanation<'r, &'static str> {
        let explanation = router.explain_request(req).expect("valid path");
        // The explanation selects what the lookup finds.
        assert_eq!(
            explanation.selected().map(|r| *r.target),
            router.find_request(req).copied(),
            "{req:?}"
        );
        explanation
    }

    fn outcome(e: &Explanation<'_, &'static str>, target: &str) -> Outcome {
        e.routes
            .iter()
            .find(|r| *r.target == target)
            .expect("a route")
            .outcome
    }

    #[test]
    fn explains_the_selected_route_and_every_other() {
        let router = router();
        let req = Request::get("/api/users?v=2")
            .header("host", "Shop.Test:8080")
            .header("x-canary", "1")
            .body(())
            .expect("request");
        let e = explain(&router, &req);
        assert_eq!(e.host, "shop.test");
        assert_eq!(e.path, "/api/users");
        let canary = e.selected().expect("a match");
        assert_eq!(*canary.target, "canary");
        assert_eq!(canary.index, 1);
        assert_eq!(canary.hostname, HostnameVerdict::Matched("*.test".into()));
        assert_eq!(
            canary
                .conditions
                .iter()
                .map(|c| (c.condition.to_string(), c.matched))
                .collect::<Vec<_>>(),
            [
                ("path prefix /api".to_owned(), true),
                ("header x-canary = \"1\"".to_owned(), true),
                ("query param v ~ /[0-9]+/".to_owned(), true),
            ]
        );
        // Same prefix length: the header count decides, before the hostname.
        assert_eq!(
            outcome(&e, "api"),
            Outcome::LowerPrecedence {
                by: PrecedenceStep::HeaderCount
            }
        );
        assert_eq!(
            outcome(&e, "root"),
            Outcome::LowerPrecedence {
                by: PrecedenceStep::PathLength
            }
        );
        assert_eq!(
            outcome(&e, "regex"),
            Outcome::NotMatched,
            "the regex matches whole paths only"
        );
        let post = &e.routes[2];
        assert_eq!(post.outcome, Outcome::NotMatched);
        assert_eq!(
            post.failed()
                .map(|c| c.condition.to_string())
                .collect::<Vec<_>>(),
            ["method POST"]
        );
        let other = &e.routes[3];
        assert_eq!(
            other.hostname,
            HostnameVerdict::NotMatched(vec!["other.test".into()])
        );
        assert!(other.failed().next().is_none(), "only the host fails");
    }

    #[test]
    fn explains_a_miss_and_the_precedence_of_path_kinds() {
        let router = router();
        let req = Request::get("http://nowhere.example/api/v2")
            .body(())
            .expect("request");
        let e = explain(&router, &req);
        // Only the route for any host is left.
        assert_eq!(e.selected().map(|r| *r.target), Some("regex"));

        let req = Request::get("/api/v2")
            .header("host", "shop.test")
            .body(())
            .expect("request");
        let e = explain(&router, &req);
        assert_eq!(e.selected().map(|r| *r.target), Some("regex"));
        assert_eq!(
            outcome(&e, "api"),
            Outcome::LowerPrecedence {
                by: PrecedenceStep::PathKind
            }
        );
        // The canary lacks its header and query parameter.
        let canary = &e.routes[1];
        assert_eq!(
            canary
                .failed()
                .map(|c| c.condition.to_string())
                .collect::<Vec<_>>(),
            ["header x-canary = \"1\"", "query param v ~ /[0-9]+/"]
        );

        let empty = Router::new([route(&["a.test"], prefix("/x"), 0)]).expect("valid");
        let req = Request::get("/y")
            .header("host", "b.test")
            .body(())
            .expect("request");
        let e = explain(&empty, &req);
        assert_eq!(e.selected, None);
        assert_eq!(e.routes[0].outcome, Outcome::NotMatched);
        assert!(!e.routes[0].hostname.matched());
        assert_eq!(e.routes[0].failed().count(), 1);
    }

    #[test]
    fn rank_order_family_and_grpc() {
        let router = Router::new([
            route(&[], prefix("/"), 7),
            route(&[], prefix("/"), 3),
            route(&[], prefix("/"), 3),
            Route {
                dialect: Dialect::Ingress,
                ..route(&[], prefix("/a"), 0)
            },
            route(
                &[],
                RouteMatch::grpc(GrpcMethodMatch::exact(Some("pkg.S"), None), vec![]),
                9,
            ),
        ])
        .expect("valid");
        let headers = HeaderMap::new();
        let parts = |path| RequestParts {
            host: "h",
            path,
            query: "",
            method: &Method::GET,
            headers: &headers,
        };
        let e = router.explain(&parts("/a"));
        assert_eq!(e.selected, Some(1));
        assert_eq!(
            e.routes[0].outcome,
            Outcome::LowerPrecedence {
                by: PrecedenceStep::Rank
            }
        );
        assert_eq!(
            e.routes[2].outcome,
            Outcome::LowerPrecedence {
                by: PrecedenceStep::Order
            }
        );
        assert_eq!(
            e.routes[3].outcome,
            Outcome::LowerPrecedence {
                by: PrecedenceStep::Family
            }
        );
        assert_eq!(e.routes[4].outcome, Outcome::NotMatched);
        assert_eq!(
            e.routes[4].conditions[0].condition.to_string(),
            "gRPC service = \"pkg.S\" any method"
        );

        let e = router.explain(&parts("/pkg.S/Get"));
        assert_eq!(e.selected, Some(4));
        assert_eq!(e.routes[4].outcome, Outcome::Selected);
    }

    #[test]
    fn explain_request_rejects_what_resolve_rejects() {
        let router = router();
        let req = Request::get("/a/../../etc").body(()).expect("request");
        assert_eq!(
            router.explain_request(&req).err(),
            Some(PathError::EscapesRoot)
        );
    }
}
