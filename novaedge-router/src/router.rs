//! The compiled, immutable route table and its lookup.
//!
//! `Router::new` validates every route, sorts all of them once by their
//! precedence key and files route indices into host buckets in that order, so
//! each bucket is already in precedence order and `find` only walks it.

use std::cmp::Reverse;
use std::collections::HashMap;

use http::{HeaderMap, Method, Request};

use crate::error::RouterError;
use crate::host::{Hostname, normalize_request_host, parse_hostname};
use crate::route::{HeaderMatch, PathMatch, Route};

/// An immutable table of routes, compiled once, matched many times.
///
/// See the [crate documentation](crate) for the precedence rules.
#[derive(Debug, Clone)]
pub struct Router<T> {
    /// Every route, in precedence order; buckets hold indices into this.
    routes: Vec<CompiledRoute<T>>,
    /// Exact hostname -> routes declaring it.
    exact: HashMap<Box<str>, Box<[usize]>>,
    /// Wildcard suffix (`example.com` for `*.example.com`) -> routes
    /// declaring it. Keyed by suffix so that a request host is looked up once
    /// per dot, longest suffix first, rather than scanned against every
    /// wildcard.
    wildcard: HashMap<Box<str>, Box<[usize]>>,
    /// Routes with no hostnames.
    any: Box<[usize]>,
}

// === impl Router ===

impl<T> Router<T> {
    /// Validates and compiles `routes`.
    ///
    /// Fails on the first route with a hostname that is not a valid
    /// Gateway API hostname or a path that does not start with `/`; the error
    /// names the value and the route's position in `routes`.
    pub fn new(routes: impl IntoIterator<Item = Route<T>>) -> Result<Self, RouterError> {
        let mut compiled = Vec::new();
        for (index, route) in routes.into_iter().enumerate() {
            compiled.push(CompiledRoute::compile(index, route)?);
        }
        // The key ends in the input index, so it is a total order and the
        // result does not depend on how the sort treats equal elements.
        compiled.sort_unstable_by_key(|r| r.precedence);

        let mut exact: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut any = Vec::new();
        for (i, route) in compiled.iter().enumerate() {
            if route.hostnames.is_empty() {
                any.push(i);
            }
            for hostname in &route.hostnames {
                let (map, name) = match hostname {
                    Hostname::Exact(name) => (&mut exact, name),
                    Hostname::Wildcard(suffix) => (&mut wildcard, suffix),
                };
                map.entry(name.clone()).or_default().push(i);
            }
        }

        let freeze = |map: HashMap<Box<str>, Vec<usize>>| {
            map.into_iter()
                .map(|(name, bucket)| (name, bucket.into_boxed_slice()))
                .collect()
        };
        Ok(Self {
            routes: compiled,
            exact: freeze(exact),
            wildcard: freeze(wildcard),
            any: any.into_boxed_slice(),
        })
    }

    /// Finds the target of the most specific route matching a request.
    ///
    /// `host` may carry a port (`a.com:8080`, `[::1]:8080`), a trailing dot
    /// and any case. `path` is the request path without the query.
    /// Does not allocate unless `host` contains uppercase letters.
    pub fn find(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Option<&T> {
        let host = normalize_request_host(host);
        let host: &str = &host;
        let request = RequestParts {
            path,
            method,
            headers,
        };

        if !self.exact.is_empty()
            && let Some(bucket) = self.exact.get(host)
            && let Some(target) = self.first_match(bucket, &request)
        {
            return Some(target);
        }

        if !self.wildcard.is_empty() {
            // Each dot that has at least one character before it starts a
            // suffix a wildcard could stand for; scanning left to right
            // visits the longest, most specific suffix first. Requiring a
            // character before the dot keeps `*.example.com` from matching
            // `.example.com`, whose wildcard label would be empty.
            for (i, byte) in host.bytes().enumerate() {
                if byte != b'.' || i == 0 {
                    continue;
                }
                if let Some(bucket) = self.wildcard.get(&host[i + 1..])
                    && let Some(target) = self.first_match(bucket, &request)
                {
                    return Some(target);
                }
            }
        }

        self.first_match(&self.any, &request)
    }

    /// Like [`find`](Self::find), taking the host from the URI authority
    /// (absolute-form requests, HTTP/2 `:authority`) or else from the `Host`
    /// header, and the path from the URI.
    ///
    /// A request without a usable host (none, or a `Host` header that is not
    /// visible ASCII) can only match routes for any host.
    pub fn find_request<B>(&self, req: &Request<B>) -> Option<&T> {
        let host = match req.uri().authority() {
            Some(authority) => authority.host(),
            None => req
                .headers()
                .get(http::header::HOST)
                .and_then(|value| value.to_str().ok())
                .unwrap_or(""),
        };
        self.find(host, req.uri().path(), req.method(), req.headers())
    }

    /// The number of routes the router was built from.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    fn first_match(&self, bucket: &[usize], request: &RequestParts<'_>) -> Option<&T> {
        bucket
            .iter()
            .map(|&i| &self.routes[i])
            .find(|route| route.matches(request))
            .map(|route| &route.target)
    }
}

/// The parts of a request that routes match on, bundled so they travel
/// through the bucket walk together.
struct RequestParts<'a> {
    path: &'a str,
    method: &'a Method,
    headers: &'a HeaderMap,
}

// === impl CompiledRoute ===

#[derive(Debug, Clone)]
struct CompiledRoute<T> {
    /// Deduplicated; empty means any host.
    hostnames: Vec<Hostname>,
    path: CompiledPath,
    method: Option<Method>,
    /// Deduplicated by name, first entry wins.
    headers: Box<[HeaderMatch]>,
    precedence: Precedence,
    target: T,
}

#[derive(Debug, Clone)]
enum CompiledPath {
    Exact(Box<str>),
    /// Without trailing slashes, so `Prefix("/")` is stored as the empty
    /// string and matches everything.
    Prefix(Box<str>),
}

/// Precedence within one host bucket; smaller sorts first and wins. The
/// derived `Ord` compares fields top to bottom, which is the Gateway API
/// order followed by the caller's rank and, last, the input position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    /// `false` (exact) before `true` (prefix).
    is_prefix: bool,
    /// Longer paths first, counted in characters after trailing-slash
    /// normalisation.
    path_len: Reverse<usize>,
    /// `false` (has a method) before `true`.
    any_method: bool,
    /// More header conditions first.
    header_count: Reverse<usize>,
    rank: u64,
    /// Only decides between routes that agree on everything else, rank
    /// included, so it is the one place where input order shows through.
    index: usize,
}

impl<T> CompiledRoute<T> {
    fn compile(index: usize, route: Route<T>) -> Result<Self, RouterError> {
        let Route {
            hostnames: raw_hostnames,
            route_match,
            rank,
            target,
        } = route;

        let mut hostnames = Vec::with_capacity(raw_hostnames.len());
        for raw in raw_hostnames {
            let hostname = parse_hostname(&raw).map_err(|reason| RouterError::InvalidHostname {
                route: index,
                hostname: raw.clone(),
                reason,
            })?;
            // Listing a host twice (perhaps in different case) must not put
            // the route into a bucket twice.
            if !hostnames.contains(&hostname) {
                hostnames.push(hostname);
            }
        }

        let (path, path_len) = match route_match.path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) if !p.starts_with('/') => {
                return Err(RouterError::InvalidPath {
                    route: index,
                    path: p,
                });
            }
            PathMatch::Exact(p) => {
                let len = p.chars().count();
                (CompiledPath::Exact(p.into()), len)
            }
            PathMatch::Prefix(p) => {
                let trimmed = p.trim_end_matches('/');
                (
                    CompiledPath::Prefix(trimmed.into()),
                    trimmed.chars().count(),
                )
            }
        };

        // Gateway API: "If multiple entries specify equivalent header names,
        // only the first entry with an equivalent name MUST be considered".
        // Deduplicating here also keeps the header count used for
        // precedence honest.
        let mut headers: Vec<HeaderMatch> = Vec::with_capacity(route_match.headers.len());
        for header in route_match.headers {
            if !headers.iter().any(|h| h.name == header.name) {
                headers.push(header);
            }
        }

        let precedence = Precedence {
            is_prefix: matches!(path, CompiledPath::Prefix(_)),
            path_len: Reverse(path_len),
            any_method: route_match.method.is_none(),
            header_count: Reverse(headers.len()),
            rank,
            index,
        };
        Ok(Self {
            hostnames,
            path,
            method: route_match.method,
            headers: headers.into_boxed_slice(),
            precedence,
            target,
        })
    }

    fn matches(&self, request: &RequestParts<'_>) -> bool {
        self.path.matches(request.path)
            && self.method.as_ref().is_none_or(|m| m == request.method)
            && self.headers.iter().all(|h| {
                request
                    .headers
                    .get_all(&h.name)
                    .iter()
                    .any(|v| v.as_bytes() == h.value.as_bytes())
            })
    }
}

impl CompiledPath {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => path == &**exact,
            // The prefix must end on a segment boundary: at the end of the
            // path or right before a `/`. An empty prefix (from "/") has
            // nothing to check.
            Self::Prefix(prefix) => {
                prefix.is_empty()
                    || path
                        .strip_prefix(&**prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteMatch;
    use http::HeaderName;

    type Target = &'static str;

    /// A route for the tables below; `headers` are `(name, value)` pairs.
    fn route(
        hostnames: &[&str],
        path: PathMatch,
        method: Option<Method>,
        headers: &[(&'static str, &str)],
        rank: u64,
        target: Target,
    ) -> Route<Target> {
        Route {
            hostnames: hostnames.iter().map(|h| (*h).to_owned()).collect(),
            route_match: RouteMatch {
                path,
                method,
                headers: headers
                    .iter()
                    .map(|(name, value)| HeaderMatch {
                        name: HeaderName::from_static(name),
                        value: (*value).to_owned(),
                    })
                    .collect(),
            },
            rank,
            target,
        }
    }

    fn exact(p: &str) -> PathMatch {
        PathMatch::Exact(p.to_owned())
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.to_owned())
    }

    /// A request for the tables below.
    struct Req {
        host: &'static str,
        path: &'static str,
        method: Method,
        headers: &'static [(&'static str, &'static str)],
    }

    fn get(host: &'static str, path: &'static str) -> Req {
        Req {
            host,
            path,
            method: Method::GET,
            headers: &[],
        }
    }

    fn with_headers(mut req: Req, headers: &'static [(&'static str, &'static str)]) -> Req {
        req.headers = headers;
        req
    }

    fn with_method(mut req: Req, method: Method) -> Req {
        req.method = method;
        req
    }

    fn find(router: &Router<Target>, req: &Req) -> Option<Target> {
        let mut headers = HeaderMap::new();
        for (name, value) in req.headers {
            headers.append(*name, value.parse().expect("test header value"));
        }
        router
            .find(req.host, req.path, &req.method, &headers)
            .copied()
    }

    /// Builds a router from `routes` and checks each request against the
    /// expected target.
    fn check(name: &str, routes: Vec<Route<Target>>, cases: &[(Req, Option<Target>)]) {
        let router = Router::new(routes).expect("valid routes");
        for (req, want) in cases {
            assert_eq!(
                find(&router, req),
                *want,
                "{name}: {} {} {} {:?}",
                req.method,
                req.host,
                req.path,
                req.headers
            );
        }
    }

    #[test]
    fn path_matching() {
        check(
            "exact path",
            vec![route(&[], exact("/a"), None, &[], 0, "a")],
            &[
                (get("h", "/a"), Some("a")),
                (get("h", "/a/"), None),
                (get("h", "/a/b"), None),
                (get("h", "/ab"), None),
                (get("h", "/"), None),
            ],
        );
        check(
            "segment-wise prefix",
            vec![route(&[], prefix("/v2"), None, &[], 0, "v2")],
            &[
                (get("h", "/v2"), Some("v2")),
                (get("h", "/v2/"), Some("v2")),
                (get("h", "/v2/x"), Some("v2")),
                (get("h", "/v2/x/y"), Some("v2")),
                (get("h", "/v2example"), None),
                (get("h", "/v"), None),
                (get("h", "/"), None),
                (get("h", "/V2"), None),
            ],
        );
        check(
            "trailing slash in the prefix is ignored",
            vec![route(&[], prefix("/v2/"), None, &[], 0, "v2")],
            &[
                (get("h", "/v2"), Some("v2")),
                (get("h", "/v2/"), Some("v2")),
                (get("h", "/v2/x"), Some("v2")),
                (get("h", "/v2example"), None),
            ],
        );
        check(
            "root prefix matches everything",
            vec![route(&[], prefix("/"), None, &[], 0, "root")],
            &[
                (get("h", "/"), Some("root")),
                (get("h", "/anything/at/all"), Some("root")),
                (get("h", ""), Some("root")),
            ],
        );
        check(
            "exact beats a prefix covering the same path",
            vec![
                route(&[], prefix("/a"), None, &[], 0, "prefix"),
                route(&[], exact("/a"), None, &[], 1, "exact"),
            ],
            &[
                (get("h", "/a"), Some("exact")),
                (get("h", "/a/b"), Some("prefix")),
            ],
        );
        check(
            "exact beats a longer prefix",
            vec![
                route(&[], prefix("/api/users"), None, &[], 0, "prefix"),
                route(&[], exact("/api/users"), None, &[], 1, "exact"),
            ],
            &[(get("h", "/api/users"), Some("exact"))],
        );
        check(
            "longer prefix beats shorter, whatever the order and rank",
            vec![
                route(&[], prefix("/"), None, &[], 0, "root"),
                route(&[], prefix("/api"), None, &[], 1, "api"),
                route(&[], prefix("/api/v1/"), None, &[], 2, "v1"),
            ],
            &[
                (get("h", "/api/v1/users"), Some("v1")),
                (get("h", "/api/v1"), Some("v1")),
                (get("h", "/api/v2"), Some("api")),
                (get("h", "/apix"), Some("root")),
            ],
        );
    }

    #[test]
    fn header_matching() {
        check(
            "all headers must match",
            vec![route(
                &[],
                prefix("/"),
                None,
                &[("x-env", "canary"), ("x-team", "a")],
                0,
                "both",
            )],
            &[
                (
                    with_headers(get("h", "/"), &[("x-env", "canary"), ("x-team", "a")]),
                    Some("both"),
                ),
                (with_headers(get("h", "/"), &[("x-env", "canary")]), None),
                (with_headers(get("h", "/"), &[("x-team", "a")]), None),
                (
                    with_headers(get("h", "/"), &[("x-env", "canary"), ("x-team", "b")]),
                    None,
                ),
                (get("h", "/"), None),
            ],
        );
        check(
            "names are case-insensitive, values exact",
            vec![route(
                &[],
                prefix("/"),
                None,
                &[("x-env", "Canary")],
                0,
                "c",
            )],
            &[
                (
                    with_headers(get("h", "/"), &[("X-Env", "Canary")]),
                    Some("c"),
                ),
                (with_headers(get("h", "/"), &[("x-env", "canary")]), None),
                (with_headers(get("h", "/"), &[("x-env", "Canary ")]), None),
                (with_headers(get("h", "/"), &[("x-env", "Canary2")]), None),
            ],
        );
        check(
            "any value of a repeated header may match",
            vec![route(&[], prefix("/"), None, &[("x-tag", "b")], 0, "b")],
            &[
                (
                    with_headers(get("h", "/"), &[("x-tag", "a"), ("x-tag", "b")]),
                    Some("b"),
                ),
                (
                    with_headers(get("h", "/"), &[("x-tag", "b"), ("x-tag", "c")]),
                    Some("b"),
                ),
                (
                    with_headers(get("h", "/"), &[("x-tag", "a"), ("x-tag", "c")]),
                    None,
                ),
            ],
        );
        check(
            "only the first condition on a header name counts",
            vec![route(
                &[],
                prefix("/"),
                None,
                &[("x-tag", "a"), ("x-tag", "b")],
                0,
                "first",
            )],
            &[
                (
                    with_headers(get("h", "/"), &[("x-tag", "a")]),
                    Some("first"),
                ),
                (with_headers(get("h", "/"), &[("x-tag", "b")]), None),
            ],
        );
        check(
            "more header matches beat fewer",
            vec![
                route(&[], prefix("/"), None, &[], 0, "none"),
                route(&[], prefix("/"), None, &[("x-a", "1")], 1, "one"),
                route(
                    &[],
                    prefix("/"),
                    None,
                    &[("x-a", "1"), ("x-b", "2")],
                    2,
                    "two",
                ),
            ],
            &[
                (
                    with_headers(get("h", "/"), &[("x-a", "1"), ("x-b", "2")]),
                    Some("two"),
                ),
                (with_headers(get("h", "/"), &[("x-a", "1")]), Some("one")),
                (with_headers(get("h", "/"), &[("x-b", "2")]), Some("none")),
            ],
        );
        check(
            "a duplicated header name does not count twice",
            vec![
                route(
                    &[],
                    prefix("/"),
                    None,
                    &[("x-a", "1"), ("x-a", "1")],
                    0,
                    "dup",
                ),
                route(&[], prefix("/"), None, &[("x-a", "1")], 1, "single"),
            ],
            // Equal after deduplication, so rank decides.
            &[(with_headers(get("h", "/"), &[("x-a", "1")]), Some("dup"))],
        );
    }

    #[test]
    fn method_matching() {
        check(
            "method",
            vec![
                route(&[], prefix("/"), None, &[], 0, "any"),
                route(&[], prefix("/"), Some(Method::POST), &[], 1, "post"),
            ],
            &[
                (with_method(get("h", "/"), Method::POST), Some("post")),
                (get("h", "/"), Some("any")),
                (with_method(get("h", "/"), Method::PUT), Some("any")),
            ],
        );
        check(
            "method only",
            vec![route(&[], prefix("/"), Some(Method::DELETE), &[], 0, "del")],
            &[
                (with_method(get("h", "/"), Method::DELETE), Some("del")),
                (get("h", "/"), None),
            ],
        );
    }

    #[test]
    fn precedence_order_of_criteria() {
        check(
            "path beats method beats headers beats rank",
            vec![
                route(
                    &[],
                    prefix("/a"),
                    None,
                    &[("x-a", "1"), ("x-b", "1")],
                    0,
                    "short+headers",
                ),
                route(&[], prefix("/a/b"), None, &[], 9, "long"),
                route(&[], prefix("/a/b"), None, &[("x-a", "1")], 8, "long+header"),
                route(
                    &[],
                    prefix("/a/b"),
                    Some(Method::GET),
                    &[],
                    7,
                    "long+method",
                ),
            ],
            &[
                // The method outranks a header condition.
                (
                    with_headers(get("h", "/a/b"), &[("x-a", "1"), ("x-b", "1")]),
                    Some("long+method"),
                ),
                (
                    with_headers(
                        with_method(get("h", "/a/b"), Method::POST),
                        &[("x-a", "1"), ("x-b", "1")],
                    ),
                    Some("long+header"),
                ),
                (with_method(get("h", "/a/b"), Method::POST), Some("long")),
                // A longer path outranks more headers.
                (
                    with_headers(get("h", "/a/c"), &[("x-a", "1"), ("x-b", "1")]),
                    Some("short+headers"),
                ),
            ],
        );
    }

    #[test]
    fn rank_breaks_ties() {
        let routes = || {
            vec![
                route(&[], prefix("/x"), None, &[], 5, "five"),
                route(&[], prefix("/x"), None, &[], 2, "two"),
                route(&[], prefix("/x"), None, &[], 7, "seven"),
            ]
        };
        check("rank", routes(), &[(get("h", "/x"), Some("two"))]);
        let mut reversed = routes();
        reversed.reverse();
        check("rank, reversed", reversed, &[(get("h", "/x"), Some("two"))]);
        check(
            "equal rank falls back to input order",
            vec![
                route(&[], prefix("/x"), None, &[], 1, "first"),
                route(&[], prefix("/x"), None, &[], 1, "second"),
            ],
            &[(get("h", "/x"), Some("first"))],
        );
    }

    #[test]
    fn host_precedence_and_fall_through() {
        let routes = vec![
            route(&[], prefix("/"), None, &[], 0, "any"),
            route(&["*.example.com"], prefix("/"), None, &[], 0, "wild"),
            route(&["*.b.example.com"], prefix("/w"), None, &[], 0, "wild-b"),
            route(&["a.b.example.com"], prefix("/e"), None, &[], 0, "exact"),
            route(&["other.org"], exact("/only"), None, &[], 0, "other"),
        ];
        check(
            "host buckets",
            routes,
            &[
                (get("a.b.example.com", "/e"), Some("exact")),
                // Nothing in the exact bucket matches: fall through to the
                // longest wildcard, then the shorter one.
                (get("a.b.example.com", "/w"), Some("wild-b")),
                (get("a.b.example.com", "/z"), Some("wild")),
                (get("x.b.example.com", "/e"), Some("wild")),
                (get("x.y.b.example.com", "/w"), Some("wild-b")),
                (get("foo.example.com", "/w"), Some("wild")),
                (get("deep.er.foo.example.com", "/"), Some("wild")),
                // A wildcard never matches its bare suffix.
                (get("example.com", "/"), Some("any")),
                (get("b.example.com", "/w"), Some("wild")),
                (get(".example.com", "/"), Some("any")),
                (get("other.org", "/only"), Some("other")),
                (get("other.org", "/else"), Some("any")),
                (get("sub.other.org", "/only"), Some("any")),
                (get("unknown.net", "/"), Some("any")),
                (get("", "/"), Some("any")),
            ],
        );
        check(
            "exact host beats wildcard, which beats any, whatever the path",
            vec![
                route(
                    &[],
                    exact("/p"),
                    Some(Method::GET),
                    &[("x-a", "1")],
                    0,
                    "any",
                ),
                route(&["*.example.com"], exact("/p"), None, &[], 0, "wild"),
                route(&["www.example.com"], prefix("/"), None, &[], 9, "exact"),
            ],
            &[
                (
                    with_headers(get("www.example.com", "/p"), &[("x-a", "1")]),
                    Some("exact"),
                ),
                (
                    with_headers(get("api.example.com", "/p"), &[("x-a", "1")]),
                    Some("wild"),
                ),
                (
                    with_headers(get("example.org", "/p"), &[("x-a", "1")]),
                    Some("any"),
                ),
            ],
        );
        check(
            "no match anywhere",
            vec![route(&["a.com"], prefix("/"), None, &[], 0, "a")],
            &[(get("b.com", "/"), None)],
        );
        check(
            "a route with several hostnames serves each",
            vec![
                route(
                    &["a.com", "*.b.com", "A.com"],
                    prefix("/"),
                    None,
                    &[],
                    0,
                    "multi",
                ),
                route(&[], prefix("/"), None, &[], 1, "any"),
            ],
            &[
                (get("a.com", "/"), Some("multi")),
                (get("x.b.com", "/"), Some("multi")),
                (get("b.com", "/"), Some("any")),
            ],
        );
    }

    #[test]
    fn host_normalization() {
        check(
            "ports, case, trailing dot, IPv6",
            vec![
                route(&["API.Example.com"], prefix("/"), None, &[], 0, "api"),
                route(&["*.Example.com"], prefix("/"), None, &[], 0, "wild"),
                route(&[], prefix("/"), None, &[], 0, "any"),
            ],
            &[
                (get("api.example.com", "/"), Some("api")),
                (get("API.EXAMPLE.COM", "/"), Some("api")),
                (get("api.example.com:8080", "/"), Some("api")),
                (get("Api.Example.Com:443", "/"), Some("api")),
                (get("api.example.com.", "/"), Some("api")),
                (get("api.example.com.:80", "/"), Some("api")),
                (get("WWW.example.com:80", "/"), Some("wild")),
                (get("[::1]:8080", "/"), Some("any")),
                (get("[::1]", "/"), Some("any")),
                (get("[2001:db8::1]:443", "/"), Some("any")),
                (get("127.0.0.1:8080", "/"), Some("any")),
            ],
        );
    }

    #[test]
    fn find_request_takes_host_from_authority_then_header() {
        let router = Router::new([
            route(&["a.com"], prefix("/"), None, &[], 0, "a"),
            route(
                &["b.com"],
                prefix("/"),
                Some(Method::POST),
                &[("x-k", "v")],
                0,
                "b",
            ),
            route(&[], prefix("/"), None, &[], 0, "any"),
        ])
        .expect("valid routes");
        let cases: [(Request<()>, Option<Target>); 5] = [
            (
                Request::get("http://A.com:8080/x?q=1").body(()).unwrap(),
                Some("a"),
            ),
            (
                // The authority wins over a Host header that disagrees.
                Request::get("http://a.com/x")
                    .header("host", "b.com")
                    .body(())
                    .unwrap(),
                Some("a"),
            ),
            (
                Request::post("/x")
                    .header("host", "b.com:80")
                    .header("x-k", "v")
                    .body(())
                    .unwrap(),
                Some("b"),
            ),
            (Request::get("/x").body(()).unwrap(), Some("any")),
            (
                Request::get("http://[::1]:8080/").body(()).unwrap(),
                Some("any"),
            ),
        ];
        for (req, want) in cases {
            assert_eq!(router.find_request(&req).copied(), want, "{req:?}");
        }
    }

    #[test]
    fn invalid_routes_are_rejected_naming_the_value() {
        let cases = [
            (route(&["*"], prefix("/"), None, &[], 0, "t"), "\"*\""),
            (
                route(&["a.*.com"], prefix("/"), None, &[], 0, "t"),
                "\"a.*.com\"",
            ),
            (
                route(&["a..com"], prefix("/"), None, &[], 0, "t"),
                "\"a..com\"",
            ),
            (route(&[""], prefix("/"), None, &[], 0, "t"), "\"\""),
            (
                route(&["ok.com", "bad_host"], prefix("/"), None, &[], 0, "t"),
                "\"bad_host\"",
            ),
            (route(&[], prefix("v2"), None, &[], 0, "t"), "\"v2\""),
            (route(&[], exact(""), None, &[], 0, "t"), "\"\""),
            (route(&[], exact("a/b"), None, &[], 0, "t"), "\"a/b\""),
        ];
        for (bad, value) in cases {
            let good = route(&["fine.com"], prefix("/"), None, &[], 0, "ok");
            let err = Router::new([good, bad.clone()]).expect_err(value);
            let message = err.to_string();
            assert!(
                message.starts_with("route #1: ") && message.contains(value),
                "{bad:?}: {message:?} should name route #1 and {value}"
            );
        }
        let err = Router::new([route(&["A.*.COM"], prefix("/"), None, &[], 0, "t")])
            .expect_err("wildcard inside");
        assert!(
            matches!(&err, RouterError::InvalidHostname { route: 0, hostname, .. } if hostname == "A.*.COM"),
            "{err:?} should keep the hostname as given"
        );
        assert!(matches!(
            Router::new([route(&[], prefix("x"), None, &[], 0, "t")]),
            Err(RouterError::InvalidPath { route: 0, .. })
        ));
    }

    #[test]
    fn uppercase_hostnames_are_accepted() {
        let router = Router::new([route(
            &["WWW.EXAMPLE.COM", "*.EXAMPLE.ORG"],
            prefix("/"),
            None,
            &[],
            0,
            "t",
        )])
        .expect("uppercase is fine");
        let headers = HeaderMap::new();
        assert_eq!(
            router.find("www.example.com", "/", &Method::GET, &headers),
            Some(&"t")
        );
        assert_eq!(
            router.find("a.example.org", "/", &Method::GET, &headers),
            Some(&"t")
        );
    }

    #[test]
    fn len_counts_input_routes() {
        let empty = Router::<Target>::new([]).expect("empty is valid");
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(
            empty.find("a.com", "/", &Method::GET, &HeaderMap::new()),
            None
        );
        let router = Router::new([
            route(&["a.com", "b.com"], prefix("/"), None, &[], 0, "ab"),
            route(&[], prefix("/"), None, &[], 0, "any"),
        ])
        .expect("valid routes");
        assert!(!router.is_empty());
        assert_eq!(router.len(), 2);
    }
}
