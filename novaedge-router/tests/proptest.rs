//! Property tests for route precedence.
//!
//! Routes and requests are drawn from small pools of hosts, paths and headers
//! that overlap on purpose (nested wildcards, prefixes that share characters
//! without sharing a segment, repeated header names), so that most generated
//! requests are matched by several routes and precedence actually decides.

use http::{HeaderMap, HeaderName, Method};
use novaedge_router::{HeaderMatch, PathMatch, Route, RouteMatch, Router};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

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
    "example.com",
    "other.org",
    "www.other.org",
    "unknown.net",
];
const ROUTE_PATHS: &[&str] = &["/", "/api", "/api/", "/api/v1", "/apiv1", "/static"];
const REQUEST_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/",
    "/api/v1",
    "/api/v1/x",
    "/apiv1",
    "/static/app.js",
    "/other",
];
const HEADERS: &[(&str, &str)] = &[("x-env", "canary"), ("x-env", "prod"), ("x-team", "a")];
/// Sent only by the requests of `more_specific_route_wins`, never required
/// by a generated route.
const UNIQUE_HEADER: (&str, &str) = ("x-unique", "1");

/// A generated route; `id` is its target, so results can be compared.
#[derive(Debug, Clone)]
struct RouteSpec {
    id: usize,
    hostnames: Vec<String>,
    exact: bool,
    path: &'static str,
    method: Option<Method>,
    headers: Vec<(&'static str, &'static str)>,
    rank: u64,
}

impl RouteSpec {
    fn to_route(&self) -> Route<usize> {
        Route {
            hostnames: self.hostnames.clone(),
            route_match: RouteMatch {
                path: if self.exact {
                    PathMatch::Exact(self.path.to_owned())
                } else {
                    PathMatch::Prefix(self.path.to_owned())
                },
                method: self.method.clone(),
                headers: self
                    .headers
                    .iter()
                    .map(|(name, value)| HeaderMatch {
                        name: HeaderName::from_static(name),
                        value: (*value).to_owned(),
                    })
                    .collect(),
            },
            rank: self.rank,
            target: self.id,
        }
    }
}

#[derive(Debug, Clone)]
struct RequestSpec {
    /// Lowercase, without port: what the router should reduce `host()` to.
    base_host: &'static str,
    uppercase: bool,
    port: Option<u16>,
    path: &'static str,
    method: Method,
    headers: Vec<(&'static str, &'static str)>,
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

    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            map.append(*name, value.parse().expect("static header value"));
        }
        map
    }
}

fn build(routes: &[RouteSpec]) -> Router<usize> {
    Router::new(routes.iter().map(RouteSpec::to_route)).expect("generated routes are valid")
}

fn find(router: &Router<usize>, req: &RequestSpec) -> Option<usize> {
    router
        .find(&req.host(), req.path, &req.method, &req.header_map())
        .copied()
}

fn method() -> impl Strategy<Value = Method> {
    select(vec![Method::GET, Method::POST, Method::PUT])
}

/// A route without id; `route_set` numbers them.
fn route_spec(hosts: &'static [&'static str], max_rank: u64) -> impl Strategy<Value = RouteSpec> {
    (
        subsequence(hosts, 0..=2),
        any::<bool>(),
        select(ROUTE_PATHS),
        prop::option::of(select(vec![Method::GET, Method::POST])),
        subsequence(HEADERS, 0..=2).prop_shuffle(),
        0..max_rank,
    )
        .prop_map(
            |(hostnames, exact, path, method, headers, rank)| RouteSpec {
                id: 0,
                hostnames: hostnames.into_iter().map(str::to_owned).collect(),
                exact,
                path,
                method,
                headers,
                rank,
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

fn request_spec(hosts: &'static [&'static str]) -> impl Strategy<Value = RequestSpec> {
    (
        select(hosts),
        any::<bool>(),
        prop::option::of(1u16..),
        select(REQUEST_PATHS),
        method(),
        subsequence(HEADERS, 0..=3),
    )
        .prop_map(
            |(base_host, uppercase, port, path, method, headers)| RequestSpec {
                base_host,
                uppercase,
                port,
                path,
                method,
                headers,
            },
        )
}

fn requests() -> impl Strategy<Value = Vec<RequestSpec>> {
    prop::collection::vec(request_spec(REQUEST_HOSTS), 1..16)
}

/// A straightforward reading of the Gateway API rules, written without the
/// router's buckets: among all routes that match, the one with the smallest
/// (host specificity, path kind, path length, method, header count, rank,
/// input position) wins.
fn reference(routes: &[RouteSpec], req: &RequestSpec) -> Option<usize> {
    let host = req.base_host;
    routes
        .iter()
        .enumerate()
        .filter_map(|(index, route)| {
            let host_key = host_specificity(&route.hostnames, host)?;
            if !reference_path_matches(route, req.path)
                || route.method.as_ref().is_some_and(|m| *m != req.method)
            {
                return None;
            }
            // Only the first condition per header name counts.
            let mut names: Vec<&str> = Vec::new();
            let mut conditions = Vec::new();
            for (name, value) in &route.headers {
                if !names.contains(name) {
                    names.push(name);
                    conditions.push((*name, *value));
                }
            }
            if !conditions.iter().all(|c| req.headers.contains(c)) {
                return None;
            }
            let path_len = route.path.trim_end_matches('/').len();
            let key = (
                host_key,
                !route.exact,
                std::cmp::Reverse(if route.exact {
                    route.path.len()
                } else {
                    path_len
                }),
                route.method.is_none(),
                std::cmp::Reverse(conditions.len()),
                route.rank,
                index,
            );
            Some((key, route.id))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, id)| id)
}

/// `None` when the route serves none of `host`; otherwise a key where
/// smaller is more specific.
fn host_specificity(hostnames: &[String], host: &str) -> Option<(u8, std::cmp::Reverse<usize>)> {
    if hostnames.is_empty() {
        return Some((2, std::cmp::Reverse(0)));
    }
    hostnames
        .iter()
        .filter_map(|name| {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) => {
                    let dotted = format!(".{suffix}");
                    (host.len() > dotted.len() && host.ends_with(&dotted))
                        .then_some((1, std::cmp::Reverse(suffix.len())))
                }
                None => (name == host).then_some((0, std::cmp::Reverse(0))),
            }
        })
        .min()
}

fn reference_path_matches(route: &RouteSpec, path: &str) -> bool {
    if route.exact {
        return path == route.path;
    }
    let prefix = route.path.trim_end_matches('/');
    path == prefix || path.starts_with(&format!("{prefix}/"))
}

proptest! {
    /// The router agrees with the reference reading of the rules, including
    /// fall-through between host buckets and ties on rank.
    #[test]
    fn agrees_with_reference(routes in route_set(ROUTE_HOSTS, 4), requests in requests()) {
        let router = build(&routes);
        prop_assert_eq!(router.len(), routes.len());
        for req in &requests {
            prop_assert_eq!(find(&router, req), reference(&routes, req), "request {:?}", req);
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
        let router = build(&routes);
        let shuffled_router = build(&shuffled);
        for req in &requests {
            prop_assert_eq!(find(&router, req), find(&shuffled_router, req), "request {:?}", req);
        }
    }

    /// A route for hosts no request uses changes no answer, even with the
    /// best rank and the most specific match, wherever it is inserted.
    #[test]
    fn unrelated_host_changes_nothing(
        routes in route_set(ROUTE_HOSTS, 4),
        extra in route_spec(&["unrelated.net", "*.unrelated.net", "a.unrelated.net"], 4),
        position in any::<prop::sample::Index>(),
        requests in requests(),
    ) {
        let before = build(&routes);
        let mut with_extra = routes.clone();
        let mut extra = extra;
        extra.id = usize::MAX;
        extra.rank = 0;
        if extra.hostnames.is_empty() {
            extra.hostnames.push("unrelated.net".to_owned());
        }
        with_extra.insert(position.index(with_extra.len() + 1), extra);
        let after = build(&with_extra);
        for req in &requests {
            prop_assert_eq!(find(&before, req), find(&after, req), "request {:?}", req);
        }
    }

    /// A matching route that is strictly more specific than every other
    /// matching route wins, even with the worst rank and wherever it is
    /// inserted: exact host, exact path, method, and one more header
    /// condition than any generated route can match.
    #[test]
    fn more_specific_route_wins(
        routes in route_set(ROUTE_HOSTS, 4),
        req in request_spec(REQUEST_HOSTS),
        position in any::<prop::sample::Index>(),
    ) {
        let mut req = req;
        req.headers.push(UNIQUE_HEADER);
        let mut headers: Vec<(&'static str, &'static str)> = Vec::new();
        for (name, value) in &req.headers {
            if !headers.iter().any(|(n, _)| n == name) {
                headers.push((name, value));
            }
        }
        let winner = RouteSpec {
            id: usize::MAX,
            hostnames: vec![req.base_host.to_owned()],
            exact: true,
            path: req.path,
            method: Some(req.method.clone()),
            headers,
            rank: u64::MAX,
        };
        let mut all = routes;
        all.insert(position.index(all.len() + 1), winner);
        prop_assert_eq!(find(&build(&all), &req), Some(usize::MAX));
    }

    /// A route in a more specific host bucket wins over every route in less
    /// specific buckets, however much more specific their other conditions.
    #[test]
    fn exact_host_bucket_wins(
        routes in route_set(&["*.example.com", "*.a.example.com", "*.org"], 4),
        req in request_spec(&["a.example.com", "x.a.example.com", "www.other.org"]),
        position in any::<prop::sample::Index>(),
    ) {
        let catch_all = RouteSpec {
            id: usize::MAX,
            hostnames: vec![req.base_host.to_owned()],
            exact: false,
            path: "/",
            method: None,
            headers: Vec::new(),
            rank: u64::MAX,
        };
        let mut all = routes;
        all.insert(position.index(all.len() + 1), catch_all);
        prop_assert_eq!(find(&build(&all), &req), Some(usize::MAX));
    }
}
