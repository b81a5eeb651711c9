//! Property tests: the indexed router agrees with the linear reference, and
//! the precedence rules hold whatever the route set.
//!
//! Routes and requests are drawn from small pools of hosts, paths, headers
//! and query parameters that overlap on purpose (nested wildcards, prefixes
//! that share characters without sharing a segment, regexes that cover
//! prefixes, repeated header names, gRPC paths), so that most generated
//! requests are matched by several routes and precedence actually decides.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use novaedge_router::reference::LinearRouter;
use novaedge_router::{
    Dialect, EncodedSlashes, GrpcMethodMatch, HeaderMatch, MatchType, Outcome, PathMatch,
    QueryParamMatch, RequestParts, Route, RouteMatch, Router, normalize_path,
};
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};

const ROUTE_HOSTS: &[&str] = &[
    "a.example.com",
    "A.Example.com",
    "example.com",
    "*.example.com",
    "*.a.example.com",
    "other.org",
    "*.org",
];
const REQUEST_HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "x.a.example.com",
    "y.x.a.example.com",
    "example.com",
    "other.org",
    "www.other.org",
    "unknown.net",
];
const ROUTE_PATHS: &[&str] = &[
    "/", "/api", "/api/", "/api/v1", "/apiv1", "/static", "/pkg.Svc",
];
const ROUTE_REGEXES: &[&str] = &[
    "/api/.*",
    "/api/v[0-9]+",
    "/(api|static)/.*",
    ".*",
    "/apiv1",
    "/api/v1/?",
];
const GRPC_SERVICES: &[&str] = &["pkg.Svc", "pkg.Other"];
const GRPC_METHODS: &[&str] = &["Get", "Put"];
const REQUEST_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/x",
    "/api/v",
    "/apiv",
    "/apiv1",
    "/static/app.js",
    "/other",
    "/pkg.Svc/Get",
    "/pkg.Svc/Put",
    "/pkg.Other/Get",
    "/x.Y/Get",
];
const HEADERS: &[(&str, &str)] = &[("x-env", "canary"), ("x-env", "prod"), ("x-team", "a")];
const HEADER_REGEXES: &[(&str, &str)] = &[("x-env", "c.*"), ("x-team", "[ab]")];
const QUERY: &[(&str, &str)] = &[("q", "1"), ("q", "2"), ("r", "1")];
const QUERY_REGEXES: &[(&str, &str)] = &[("q", "[12]"), ("r", ".*")];
/// Sent only by the requests of `more_specific_route_wins`, never required
/// by a generated route.
const UNIQUE_HEADER: (&str, &str) = ("x-unique", "1");
const UNIQUE_QUERY: (&str, &str) = ("unique", "1");

/// A generated route; `id` is its target, so results can be compared.
#[derive(Debug, Clone)]
struct RouteSpec {
    id: usize,
    hostnames: Vec<String>,
    path: PathMatch,
    method: Option<Method>,
    headers: Vec<HeaderMatch>,
    query: Vec<QueryParamMatch>,
    rank: u64,
    dialect: Dialect,
}

impl RouteSpec {
    fn to_route(&self) -> Route<usize> {
        Route {
            hostnames: self.hostnames.clone(),
            route_match: RouteMatch {
                path: self.path.clone(),
                method: self.method.clone(),
                headers: self.headers.clone(),
                query_params: self.query.clone(),
            },
            rank: self.rank,
            target: self.id,
            dialect: self.dialect,
        }
    }
}

#[derive(Debug, Clone)]
struct RequestSpec {
    /// Lowercase, without port.
    base_host: &'static str,
    uppercase: bool,
    port: Option<u16>,
    path: String,
    method: Method,
    headers: Vec<(&'static str, &'static str)>,
    query: Vec<(&'static str, &'static str)>,
}

impl RequestSpec {
    fn host(&self) -> String {
        let mut host = if self.uppercase {
            self.base_host.to_ascii_uppercase()
        } else {
            self.base_host.to_owned()
        };
        if let Some(port) = self.port {
            host = format!("{host}:{port}");
        }
        host
    }

    fn query(&self) -> String {
        self.query
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            map.append(*name, value.parse().expect("static header value"));
        }
        map
    }
}

/// Both matchers for one route set.
struct Both {
    router: Router<usize>,
    linear: LinearRouter<usize>,
}

fn build(routes: &[RouteSpec]) -> Both {
    let routes: Vec<Route<usize>> = routes.iter().map(RouteSpec::to_route).collect();
    Both {
        router: Router::new(routes.clone()).expect("generated routes are valid"),
        linear: LinearRouter::new(routes).expect("generated routes are valid"),
    }
}

/// Asks the router and the reference; they must agree.
fn find(both: &Both, req: &RequestSpec) -> Result<Option<usize>, TestCaseError> {
    let host = req.host();
    let query = req.query();
    let headers = req.header_map();
    let parts = RequestParts {
        host: &host,
        path: &req.path,
        query: &query,
        method: &req.method,
        headers: &headers,
    };
    let got = both.router.find_parts(&parts).copied();
    prop_assert_eq!(
        got,
        both.linear.find_parts(&parts).copied(),
        "router and reference disagree on {:?}",
        req
    );
    // The explanation selects the same route, and its per-condition
    // verdicts agree with the whole test: a route matches exactly when its
    // hostname and every condition do.
    let explanation = both.router.explain(&parts);
    prop_assert_eq!(
        explanation.selected().map(|r| *r.target),
        got,
        "explain disagrees on {:?}",
        req
    );
    for route in &explanation.routes {
        let all = route.hostname.matched() && route.failed().next().is_none();
        prop_assert_eq!(
            all,
            route.outcome != Outcome::NotMatched,
            "route #{} on {:?}: {:?}",
            route.index,
            req,
            route
        );
    }
    Ok(got)
}

fn path_match() -> impl Strategy<Value = PathMatch> {
    let grpc_part = |pool: &'static [&'static str], regex: &'static str| {
        prop::option::of(prop_oneof![3 => select(pool), 1 => Just(regex)])
    };
    prop_oneof![
        3 => select(ROUTE_PATHS).prop_map(|p| PathMatch::Exact(p.to_owned())),
        4 => select(ROUTE_PATHS).prop_map(|p| PathMatch::Prefix(p.to_owned())),
        2 => select(ROUTE_REGEXES).prop_map(|p| PathMatch::RegularExpression(p.to_owned())),
        2 => (any::<bool>(), grpc_part(GRPC_SERVICES, "pkg\\..*"), grpc_part(GRPC_METHODS, "G.*")).prop_map(
            |(regex, service, method)| {
                // An exact match with a pattern in it would be invalid.
                let regex = regex || service == Some("pkg\\..*") || method == Some("G.*");
                PathMatch::Grpc(GrpcMethodMatch {
                    kind: if regex { MatchType::RegularExpression } else { MatchType::Exact },
                    service: service.map(str::to_owned),
                    method: method.map(str::to_owned),
                })
            }
        ),
    ]
}

fn header_matches() -> impl Strategy<Value = Vec<HeaderMatch>> {
    let one = prop_oneof![
        3 => select(HEADERS).prop_map(|(n, v)| HeaderMatch::exact(HeaderName::from_static(n), v)),
        1 => select(HEADER_REGEXES).prop_map(|(n, v)| HeaderMatch::regex(HeaderName::from_static(n), v)),
    ];
    prop::collection::vec(one, 0..=2)
}

fn query_matches() -> impl Strategy<Value = Vec<QueryParamMatch>> {
    let one = prop_oneof![
        3 => select(QUERY).prop_map(|(n, v)| QueryParamMatch::exact(n, v)),
        1 => select(QUERY_REGEXES).prop_map(|(n, v)| QueryParamMatch::regex(n, v)),
    ];
    prop::collection::vec(one, 0..=2)
}

/// A route without id; `route_set` numbers them.
fn route_spec(hosts: &'static [&'static str], max_rank: u64) -> impl Strategy<Value = RouteSpec> {
    (
        subsequence(hosts, 0..=2),
        path_match(),
        prop::option::of(select(vec![Method::GET, Method::POST])),
        header_matches(),
        query_matches(),
        0..max_rank,
        prop_oneof![4 => Just(Dialect::GatewayApi), 1 => Just(Dialect::Ingress)],
    )
        .prop_map(
            |(hostnames, path, method, headers, query, rank, dialect)| RouteSpec {
                id: 0,
                hostnames: hostnames.into_iter().map(str::to_owned).collect(),
                path,
                method,
                headers,
                query,
                rank,
                dialect,
            },
        )
}

/// Routes numbered by position, so each target is its input index.
fn route_set(
    hosts: &'static [&'static str],
    max_rank: u64,
) -> impl Strategy<Value = Vec<RouteSpec>> {
    prop::collection::vec(route_spec(hosts, max_rank), 1..24).prop_map(|mut routes| {
        for (id, route) in routes.iter_mut().enumerate() {
            route.id = id;
        }
        routes
    })
}

/// Request paths: mostly from the pool, some raw strings that were never
/// normalised (the router must agree with the reference on any input).
fn request_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(REQUEST_PATHS).prop_map(str::to_owned),
        1 => "(/|//|a|pi|api|v1|\\.|pkg\\.Svc|Get|%2F)*",
    ]
}

fn request_spec(hosts: &'static [&'static str]) -> impl Strategy<Value = RequestSpec> {
    (
        select(hosts),
        any::<bool>(),
        prop::option::of(1u16..),
        request_path(),
        select(vec![Method::GET, Method::POST, Method::PUT]),
        subsequence(HEADERS, 0..=3).prop_shuffle(),
        subsequence(QUERY, 0..=3).prop_shuffle(),
    )
        .prop_map(
            |(base_host, uppercase, port, path, method, headers, query)| RequestSpec {
                base_host,
                uppercase,
                port,
                path,
                method,
                headers,
                query,
            },
        )
}

fn requests() -> impl Strategy<Value = Vec<RequestSpec>> {
    prop::collection::vec(request_spec(REQUEST_HOSTS), 1..16)
}

proptest! {
    /// The indexed router agrees with the linear reference.
    #[test]
    fn agrees_with_reference(routes in route_set(ROUTE_HOSTS, 4), requests in requests()) {
        let both = build(&routes);
        prop_assert_eq!(both.router.len(), routes.len());
        for req in &requests {
            find(&both, req)?;
        }
    }

    /// With distinct ranks, the order routes are given in does not matter.
    #[test]
    fn independent_of_route_order(
        (routes, shuffled) in route_set(ROUTE_HOSTS, 8).prop_flat_map(|mut routes| {
            // Distinct ranks, still unrelated to specificity.
            for route in &mut routes {
                route.rank = route.rank * 1_000 + route.id as u64;
            }
            (Just(routes.clone()), Just(routes).prop_shuffle())
        }),
        requests in requests(),
    ) {
        let both = build(&routes);
        let shuffled = build(&shuffled);
        for req in &requests {
            prop_assert_eq!(find(&both, req)?, find(&shuffled, req)?, "request {:?}", req);
        }
    }

    /// A route that no request can match (its hosts, or its path, are used by
    /// no request) changes no answer, even with the best rank and the most
    /// specific conditions, wherever it is inserted.
    #[test]
    fn unrelated_route_changes_nothing(
        routes in route_set(ROUTE_HOSTS, 4),
        extra in route_spec(&["unrelated.net", "*.unrelated.net", "a.unrelated.net"], 4),
        unrelated_path in any::<bool>(),
        position in any::<Index>(),
        requests in requests(),
    ) {
        let before = build(&routes);
        let mut extra = extra;
        extra.id = usize::MAX;
        extra.rank = 0;
        if unrelated_path {
            extra.hostnames.clear();
            extra.path = PathMatch::Exact("/unrelated".to_owned());
        } else if extra.hostnames.is_empty() {
            extra.hostnames.push("unrelated.net".to_owned());
        }
        let mut with_extra = routes;
        with_extra.insert(position.index(with_extra.len() + 1), extra);
        let after = build(&with_extra);
        for req in &requests {
            prop_assert_eq!(find(&before, req)?, find(&after, req)?, "request {:?}", req);
        }
    }

    /// A matching HTTPRoute that is strictly more specific than every other
    /// matching route wins, even with the worst rank and wherever it is
    /// inserted: exact host, exact path, method, and one more header and
    /// query condition than any generated route can match.
    #[test]
    fn more_specific_route_wins(
        routes in route_set(ROUTE_HOSTS, 4),
        req in request_spec(REQUEST_HOSTS),
        position in any::<Index>(),
    ) {
        // gRPC routes come before HTTPRoutes whatever their specificity.
        let mut routes = routes;
        routes.retain(|r| !matches!(r.path, PathMatch::Grpc(_)));
        let mut req = req;
        req.path = normalize_path(&req.path, EncodedSlashes::Keep)
            .map(Cow::into_owned)
            .unwrap_or_else(|_| "/".to_owned());
        req.headers.push(UNIQUE_HEADER);
        req.query.push(UNIQUE_QUERY);
        let mut headers: Vec<HeaderMatch> = Vec::new();
        for (name, value) in &req.headers {
            if !headers.iter().any(|h| h.name == *name) {
                headers.push(HeaderMatch::exact(HeaderName::from_static(name), *value));
            }
        }
        let mut query: Vec<QueryParamMatch> = Vec::new();
        for (name, value) in &req.query {
            if !query.iter().any(|q| q.name == *name) {
                query.push(QueryParamMatch::exact(*name, *value));
            }
        }
        let winner = RouteSpec {
            id: usize::MAX,
            hostnames: vec![req.base_host.to_owned()],
            path: PathMatch::Exact(req.path.clone()),
            method: Some(req.method.clone()),
            headers,
            query,
            rank: u64::MAX,
            dialect: Dialect::GatewayApi,
        };
        routes.insert(position.index(routes.len() + 1), winner);
        prop_assert_eq!(find(&build(&routes), &req)?, Some(usize::MAX));
    }

    /// For Ingress rules (and gRPC routes), the host comes first: a catch-all
    /// rule for the exact host beats every rule for a wildcard or any host,
    /// however specific its path.
    #[test]
    fn ingress_exact_host_wins(
        routes in route_set(&["*.example.com", "*.a.example.com", "*.org"], 4),
        req in request_spec(&["a.example.com", "x.a.example.com", "www.other.org"]),
        position in any::<Index>(),
    ) {
        let mut routes = routes;
        for route in &mut routes {
            route.dialect = Dialect::Ingress;
        }
        let catch_all = RouteSpec {
            id: usize::MAX,
            hostnames: vec![req.base_host.to_owned()],
            path: PathMatch::Prefix("/".to_owned()),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
            rank: u64::MAX,
            dialect: Dialect::Ingress,
        };
        routes.insert(position.index(routes.len() + 1), catch_all);
        prop_assert_eq!(find(&build(&routes), &req)?, Some(usize::MAX));
    }

    /// Regular expressions assembled from atoms (many invalid, which both
    /// refuse) against paths from the same alphabet: the index's cheap
    /// literal-prefix test before each regex never hides a match.
    #[test]
    fn regex_routes_agree_with_reference(
        patterns in prop::collection::vec(
            prop::collection::vec(
                select(&["/", "a", "b", "1", ".", "*", "?", "+", "|", "(", ")", "[0-9]", "^", "$", "\\.", "{2}", "{0,1}", "(?i)"][..]),
                0..8,
            ),
            1..4,
        ),
        paths in prop::collection::vec("(/|a|b|1|A|\\.)*", 1..16),
    ) {
        let routes: Vec<RouteSpec> = patterns
            .iter()
            .enumerate()
            .map(|(id, atoms)| RouteSpec {
                id,
                hostnames: Vec::new(),
                path: PathMatch::RegularExpression(atoms.concat()),
                method: None,
                headers: Vec::new(),
                query: Vec::new(),
                rank: 0,
                dialect: Dialect::GatewayApi,
            })
            .filter(|r| LinearRouter::new([r.to_route()]).is_ok())
            .collect();
        let both = build(&routes);
        for path in paths {
            let req = RequestSpec {
                base_host: "h",
                uppercase: false,
                port: None,
                path,
                method: Method::GET,
                headers: Vec::new(),
                query: Vec::new(),
            };
            find(&both, &req)?;
        }
    }

    /// Normalisation yields a canonical path: a fixed point, without empty or
    /// dot segments, ASCII only, and under `Reject` without encoded slashes.
    #[test]
    fn normalised_paths_are_canonical(
        path in "(/|//|\\x00|\\.|\\.\\.|%2[eEfF]|%5[cC]|%7[eE]|%41|%00|%|%zz|\\\\|;|a|b|~| |é|\\?)*",
        policy in prop_oneof![Just(EncodedSlashes::Reject), Just(EncodedSlashes::Keep), Just(EncodedSlashes::Decode)],
    ) {
        let path = format!("/{path}");
        if let Ok(normalised) = normalize_path(&path, policy) {
            let again = normalize_path(&normalised, policy);
            prop_assert!(matches!(again, Ok(Cow::Borrowed(p)) if p == normalised), "{:?} -> {:?} -> {:?}", path, normalised, again);
            prop_assert!(normalised.starts_with('/') && normalised.is_ascii());
            prop_assert!(!normalised.contains("//"), "{:?}", normalised);
            for segment in normalised.split('/') {
                let name = segment.split(';').next().unwrap_or_default();
                prop_assert!(name != "." && name != "..", "{:?}", normalised);
            }
            for byte in normalised.bytes() {
                prop_assert!(!b" \\\"?#".contains(&byte), "{:?}", normalised);
            }
            prop_assert!(!normalised.contains("%00"));
            if policy != EncodedSlashes::Keep {
                prop_assert!(!normalised.contains("%2F") && !normalised.contains("%5C"), "{:?}", normalised);
            }
            // Nothing left that decodes to an unreserved character.
            for escape in normalised.split('%').skip(1) {
                let value = u8::from_str_radix(&escape[..2], 16).expect("valid escape");
                prop_assert!(!(value.is_ascii_alphanumeric() || b"-._~".contains(&value)), "{:?}", normalised);
            }
        }
    }
}
