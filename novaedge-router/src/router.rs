//! The compiled, immutable route table and its lookup.
//!
//! `Router::new` validates every route, sorts all of them once by their
//! precedence and files them into host buckets in that order. Inside a
//! bucket, routes are indexed by path, so a lookup touches only the routes
//! that could match:
//!
//! - exact paths in a hash map (one lookup with the whole path);
//! - prefixes in a trie of path segments, walked once along the request path
//!   and read deepest (longest prefix) first;
//! - regular expressions in a list, each skipped by a literal-prefix check
//!   before its regex runs;
//! - gRPC matches in hash maps by `/service/method`, by service and by method,
//!   and a list for patterns.
//!
//! Every one of these groups is sorted by precedence, and the lookup keeps
//! the best candidate found so far: a group is read only until its next
//! route could no longer beat that candidate. So the answer is the one a
//! linear scan of all routes in precedence order gives
//! ([`reference::LinearRouter`](crate::reference::LinearRouter), which the
//! property tests and the fuzz target compare against), without the scan.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;

use http::{HeaderMap, Method, Request};

use crate::error::RouterError;
use crate::host::{Hostname, normalize_request_host};
use crate::matcher::{
    CompiledPath, CompiledRoute, HostRank, HostnameCache, Key, RegexBuild, Regexes, RequestParts,
    ValueMatcher, grpc_parts,
};
use crate::path::{EncodedSlashes, PathError, normalize_path};
use crate::route::{Dialect, Route};

/// An immutable table of routes, compiled once, matched many times.
///
/// See the [crate documentation](crate) for the precedence rules.
#[derive(Debug, Clone)]
pub struct Router<T> {
    /// Every route, in precedence order; buckets hold indices into this.
    pub(crate) routes: Vec<CompiledRoute<T>>,
    /// Exact hostname -> routes declaring it.
    exact: HashMap<Box<str>, Bucket>,
    /// Gateway API wildcard suffix (`example.com` for `*.example.com`) ->
    /// routes declaring it. Keyed by suffix so that a request host is looked
    /// up once per dot rather than scanned against every wildcard.
    wildcard: HashMap<Box<str>, Bucket>,
    /// The same for Ingress wildcards, which stand for exactly one label and
    /// so are only looked up with the suffix after the host's first dot.
    wildcard_one_label: HashMap<Box<str>, Bucket>,
    /// The longest wildcard suffix, so that a long request host is not cut
    /// into suffixes that no route can declare.
    max_suffix_len: usize,
    /// Routes with no hostnames.
    any: Bucket,
    encoded_slashes: EncodedSlashes,
}

/// The outcome of [`Router::resolve`].
#[derive(Debug)]
pub struct Resolved<'r, 'q, T> {
    /// The target of the best matching route; `None` is a 404.
    pub target: Option<&'r T>,
    /// The normalised path the request was matched on. Forward this path
    /// upstream, not the original one, so the backend acts on the path that
    /// was routed.
    pub path: Cow<'q, str>,
}

// === impl Router ===

impl<T> Router<T> {
    /// Validates and compiles `routes`.
    ///
    /// Fails on the first invalid route; the error names the route's
    /// position in `routes`, the field and the value.
    pub fn new(routes: impl IntoIterator<Item = Route<T>>) -> Result<Self, RouterError> {
        Self::with_regexes(routes, &Regexes::default(), &mut Regexes::default())
    }

    /// As [`new`](Self::new), taking the compiled regular expressions of an
    /// earlier build from `previous` instead of compiling them again, and
    /// adding every one this router uses to `next`: keep `next` for the
    /// build after this one (see [`Regexes`]). Several routers built for one
    /// configuration can share both sets.
    pub fn with_regexes(
        routes: impl IntoIterator<Item = Route<T>>,
        previous: &Regexes,
        next: &mut Regexes,
    ) -> Result<Self, RouterError> {
        let routes = routes.into_iter();
        let mut compiled = Vec::with_capacity(routes.size_hint().0);
        let mut hostname_cache = HostnameCache::default();
        let mut regexes = RegexBuild::new(previous, next);
        for (index, route) in routes.enumerate() {
            compiled.push(CompiledRoute::compile(
                index,
                route,
                &mut hostname_cache,
                &mut regexes,
            )?);
        }
        // Held as long as the router: no room for more.
        compiled.shrink_to_fit();
        // The precedence ends in the input index, so it is a total order and
        // the result does not depend on how the sort treats equal elements.
        compiled.sort_unstable_by_key(|r| r.precedence);

        let mut exact: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut wildcard_one_label: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut any = Vec::new();
        let mut max_suffix_len = 0;
        for (i, route) in compiled.iter().enumerate() {
            if route.hostnames.is_empty() {
                any.push(i);
            }
            for hostname in route.hostnames.iter() {
                let (map, name) = match hostname {
                    Hostname::Exact(name) => (&mut exact, name),
                    Hostname::Wildcard(suffix) => {
                        max_suffix_len = max_suffix_len.max(suffix.len());
                        match route.dialect {
                            Dialect::GatewayApi => (&mut wildcard, suffix),
                            Dialect::Ingress => (&mut wildcard_one_label, suffix),
                        }
                    }
                };
                map.entry(name.clone()).or_default().push(i);
            }
        }

        let index = |map: HashMap<Box<str>, Vec<usize>>| {
            map.into_iter()
                .map(|(name, bucket)| (name, Bucket::build(&compiled, &bucket)))
                .collect()
        };
        let exact = index(exact);
        let wildcard = index(wildcard);
        let wildcard_one_label = index(wildcard_one_label);
        let any = Bucket::build(&compiled, &any);
        Ok(Self {
            routes: compiled,
            exact,
            wildcard,
            wildcard_one_label,
            max_suffix_len,
            any,
            encoded_slashes: EncodedSlashes::default(),
        })
    }

    /// Sets what [`resolve`](Self::resolve) and
    /// [`find_request`](Self::find_request) do with encoded slashes
    /// (default: [`EncodedSlashes::Reject`]).
    pub fn with_encoded_slashes(mut self, policy: EncodedSlashes) -> Self {
        self.encoded_slashes = policy;
        self
    }

    pub fn encoded_slashes(&self) -> EncodedSlashes {
        self.encoded_slashes
    }

    /// Finds the target of the best route matching a request.
    ///
    /// The path is matched as given: pass the output of
    /// [`normalize_path`]. Routes with query parameter conditions do not
    /// match (there is no query); use [`find_parts`](Self::find_parts) for
    /// those.
    pub fn find(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Option<&T> {
        self.find_parts(&RequestParts {
            host,
            path,
            query: "",
            method,
            headers,
        })
    }

    /// Finds the target of the best route matching a request.
    ///
    /// `request.host` may carry a port (`a.com:8080`, `[::1]:8080`), a
    /// trailing dot and any case; the path is matched as given. Does not
    /// allocate unless the host contains uppercase letters or a query
    /// parameter condition meets a percent-encoded value.
    pub fn find_parts<'r>(&'r self, request: &RequestParts<'_>) -> Option<&'r T> {
        let host = normalize_request_host(request.host);
        let host: &str = &host;
        let mut best = None;

        if !self.exact.is_empty()
            && let Some(bucket) = self.exact.get(host)
        {
            self.search(bucket, HostRank::Exact, request, &mut best);
        }

        if !self.wildcard.is_empty() || !self.wildcard_one_label.is_empty() {
            // Each dot with at least one character before it starts a suffix
            // a wildcard could stand for; left to right visits the longest,
            // most specific suffix first. Requiring a character before the
            // dot keeps `*.example.com` from matching `.example.com`, whose
            // wildcard label would be empty.
            let first_useful = host.len().saturating_sub(self.max_suffix_len + 1);
            let mut first_dot = true;
            for (i, byte) in host.bytes().enumerate() {
                if byte != b'.' {
                    continue;
                }
                let one_label = std::mem::replace(&mut first_dot, false);
                if i == 0 || i < first_useful {
                    continue;
                }
                let suffix = &host[i + 1..];
                let rank = HostRank::Wildcard(Reverse(suffix.len()));
                if one_label && let Some(bucket) = self.wildcard_one_label.get(suffix) {
                    self.search(bucket, rank, request, &mut best);
                }
                if let Some(bucket) = self.wildcard.get(suffix) {
                    self.search(bucket, rank, request, &mut best);
                }
            }
        }

        self.search(&self.any, HostRank::Any, request, &mut best);
        best.map(|(_, i)| &self.routes[i].target)
    }

    /// Like [`resolve`](Self::resolve), but `None` both when no route
    /// matches and when the path is rejected.
    pub fn find_request<B>(&self, req: &Request<B>) -> Option<&T> {
        self.resolve(req).ok()?.target
    }

    /// Normalises the request path (see [`normalize_path`]) and finds the
    /// best route for the request.
    ///
    /// The host comes from the URI authority (absolute-form requests,
    /// HTTP/2 `:authority`) or else from the `Host` header; a request
    /// without a usable host can only match routes for any host. An `Err`
    /// is a path to reject with 400 Bad Request.
    pub fn resolve<'r, 'q, B>(
        &'r self,
        req: &'q Request<B>,
    ) -> Result<Resolved<'r, 'q, T>, PathError> {
        let path = normalize_path(req.uri().path(), self.encoded_slashes)?;
        let target = self.find_parts(&RequestParts {
            host: request_host(req),
            path: &path,
            query: req.uri().query().unwrap_or(""),
            method: req.method(),
            headers: req.headers(),
        });
        Ok(Resolved { target, path })
    }

    /// The number of routes the router was built from.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Improves `best` with the routes of one host bucket.
    fn search(&self, bucket: &Bucket, host: HostRank, request: &RequestParts<'_>, best: &mut Best) {
        if let Some(grpc) = &bucket.grpc {
            if !grpc.by_path.is_empty()
                && let Some(group) = grpc.by_path.get(request.path)
            {
                self.scan(group, host, request, best);
            }
            if let Some((service, method)) = grpc_parts(request.path) {
                if let Some(group) = grpc.by_service.get(service.as_bytes()) {
                    self.scan(group, host, request, best);
                }
                if let Some(group) = grpc.by_method.get(method.as_bytes()) {
                    self.scan(group, host, request, best);
                }
            }
            self.scan(&grpc.other, host, request, best);
        }
        if !bucket.exact.is_empty()
            && let Some(group) = bucket.exact.get(request.path)
        {
            self.scan(group, host, request, best);
        }
        for &i in &bucket.regex {
            let route = &self.routes[i];
            let key = Key::new(&route.precedence, host);
            if best.as_ref().is_some_and(|(b, _)| key >= *b) {
                break;
            }
            if let CompiledPath::Regex { literal_prefix, .. } = &route.path
                && !request.path.starts_with(&**literal_prefix)
            {
                continue;
            }
            if route.matches(request) {
                *best = Some((key, i));
                break;
            }
        }
        bucket.prefixes.walk(0, request.path, &mut |group| {
            self.scan(group, host, request, best)
        });
    }

    /// Reads `group`, sorted by precedence, up to its first matching route
    /// or the first route that cannot beat `best`.
    fn scan(&self, group: &[usize], host: HostRank, request: &RequestParts<'_>, best: &mut Best) {
        for &i in group {
            let route = &self.routes[i];
            let key = Key::new(&route.precedence, host);
            if best.as_ref().is_some_and(|(b, _)| key >= *b) {
                return;
            }
            if route.matches(request) {
                *best = Some((key, i));
                return;
            }
        }
    }
}

/// The host a request is routed by: the URI authority (absolute-form
/// requests, HTTP/2 `:authority`), else the `Host` header, else none.
pub(crate) fn request_host<B>(req: &Request<B>) -> &str {
    match req.uri().authority() {
        Some(authority) => authority.host(),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or(""),
    }
}

/// The best candidate so far: its key and its position in `Router::routes`.
type Best = Option<(Key, usize)>;

// === impl Bucket ===

/// The routes of one host, indexed by path. Every group is a list of
/// positions in `Router::routes`, ascending, so in precedence order.
#[derive(Debug, Clone, Default)]
struct Bucket {
    exact: HashMap<Box<str>, Box<[usize]>>,
    regex: Box<[usize]>,
    prefixes: Trie,
    grpc: Option<Box<GrpcIndex>>,
}

#[derive(Debug, Clone, Default)]
struct GrpcIndex {
    /// Exact service and method, by `/service/method`.
    by_path: HashMap<Box<str>, Box<[usize]>>,
    /// Exact service, any method.
    by_service: HashMap<Box<[u8]>, Box<[usize]>>,
    /// Exact method, any service.
    by_method: HashMap<Box<[u8]>, Box<[usize]>>,
    /// Patterns, and matches of any gRPC method.
    other: Box<[usize]>,
}

impl Bucket {
    fn build<T>(routes: &[CompiledRoute<T>], members: &[usize]) -> Self {
        let mut exact: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut regex = Vec::new();
        let mut prefixes = TrieBuilder::default();
        let mut grpc: Option<GrpcBuilder> = None;
        for &i in members {
            match &routes[i].path {
                CompiledPath::Exact(path) => exact.entry(path.clone()).or_default().push(i),
                CompiledPath::Prefix(prefix) => prefixes.insert(prefix, i),
                CompiledPath::Regex { .. } => regex.push(i),
                CompiledPath::Grpc(matcher) => {
                    let grpc = grpc.get_or_insert_with(GrpcBuilder::default);
                    match (&matcher.service, &matcher.method) {
                        (Some(ValueMatcher::Exact(service)), Some(ValueMatcher::Exact(method))) => {
                            // Both are validated ASCII names.
                            let path = format!(
                                "/{}/{}",
                                String::from_utf8_lossy(service),
                                String::from_utf8_lossy(method)
                            );
                            grpc.by_path.entry(path.into()).or_default().push(i);
                        }
                        (Some(ValueMatcher::Exact(service)), None) => {
                            grpc.by_service.entry(service.clone()).or_default().push(i);
                        }
                        (None, Some(ValueMatcher::Exact(method))) => {
                            grpc.by_method.entry(method.clone()).or_default().push(i);
                        }
                        _ => grpc.other.push(i),
                    }
                }
            }
        }
        Self {
            exact: freeze(exact),
            regex: regex.into_boxed_slice(),
            prefixes: prefixes.build(),
            grpc: grpc.map(|g| {
                Box::new(GrpcIndex {
                    by_path: freeze(g.by_path),
                    by_service: freeze(g.by_service),
                    by_method: freeze(g.by_method),
                    other: g.other.into_boxed_slice(),
                })
            }),
        }
    }
}

#[derive(Default)]
struct GrpcBuilder {
    by_path: HashMap<Box<str>, Vec<usize>>,
    by_service: HashMap<Box<[u8]>, Vec<usize>>,
    by_method: HashMap<Box<[u8]>, Vec<usize>>,
    other: Vec<usize>,
}

fn freeze<K: std::hash::Hash + Eq>(map: HashMap<K, Vec<usize>>) -> HashMap<K, Box<[usize]>> {
    map.into_iter()
        .map(|(key, group)| (key, group.into_boxed_slice()))
        .collect()
}

// === impl Trie ===

/// Prefix routes by path segment. Node 0 is the root, the prefix `/` (stored
/// as the empty string); the node reached by segments `a`, `b` holds the
/// routes for prefix `/a/b`.
#[derive(Debug, Clone)]
struct Trie {
    nodes: Box<[TrieNode]>,
}

#[derive(Debug, Clone, Default)]
struct TrieNode {
    children: HashMap<Box<str>, usize>,
    routes: Box<[usize]>,
}

impl Default for Trie {
    fn default() -> Self {
        Self {
            nodes: vec![TrieNode::default()].into_boxed_slice(),
        }
    }
}

impl Trie {
    /// Calls `visit` with the routes of every node whose prefix matches
    /// `rest` (the path, from the node's prefix on), deepest node first.
    /// Recurses only as deep as the trie, whatever the path.
    fn walk(&self, node: usize, rest: &str, visit: &mut impl FnMut(&[usize])) {
        let here = &self.nodes[node];
        if !here.children.is_empty()
            && let Some(after_slash) = rest.strip_prefix('/')
        {
            let (segment, tail) = match after_slash.find('/') {
                Some(end) => after_slash.split_at(end),
                None => (after_slash, ""),
            };
            if let Some(&child) = here.children.get(segment) {
                self.walk(child, tail, visit);
            }
        }
        if !here.routes.is_empty() {
            visit(&here.routes);
        }
    }
}

struct TrieBuilder {
    /// Children and routes of each node.
    nodes: Vec<BuilderNode>,
}

type BuilderNode = (HashMap<Box<str>, usize>, Vec<usize>);

impl Default for TrieBuilder {
    fn default() -> Self {
        Self {
            nodes: vec![BuilderNode::default()],
        }
    }
}

impl TrieBuilder {
    /// `prefix` is a compiled prefix: empty, or `/` and segments without a
    /// trailing slash.
    fn insert(&mut self, prefix: &str, route: usize) {
        let mut node = 0;
        if let Some(segments) = prefix.strip_prefix('/') {
            for segment in segments.split('/') {
                node = match self.nodes[node].0.get(segment) {
                    Some(&child) => child,
                    None => {
                        let child = self.nodes.len();
                        self.nodes.push(BuilderNode::default());
                        self.nodes[node].0.insert(segment.into(), child);
                        child
                    }
                };
            }
        }
        self.nodes[node].1.push(route);
    }

    fn build(self) -> Trie {
        Trie {
            nodes: self
                .nodes
                .into_iter()
                .map(|(children, routes)| TrieNode {
                    children,
                    routes: routes.into_boxed_slice(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{
        GrpcMethodMatch, HeaderMatch, MatchType, PathMatch, QueryParamMatch, RouteMatch,
    };
    use http::HeaderName;
    use std::sync::Arc;

    type Target = &'static str;

    fn route(
        hostnames: &[&str],
        route_match: RouteMatch,
        rank: u64,
        target: Target,
    ) -> Route<Target> {
        Route {
            hostnames: hostnames.iter().map(|h| (*h).to_owned()).collect(),
            route_match,
            rank,
            target,
            dialect: Dialect::GatewayApi,
        }
    }

    fn path(path: PathMatch) -> RouteMatch {
        RouteMatch {
            path,
            ..RouteMatch::default()
        }
    }

    fn prefix(p: &str) -> RouteMatch {
        path(PathMatch::Prefix(p.to_owned()))
    }

    fn exact(p: &str) -> RouteMatch {
        path(PathMatch::Exact(p.to_owned()))
    }

    fn find(router: &Router<Target>, host: &str, path: &str) -> Option<Target> {
        router
            .find(host, path, &Method::GET, &HeaderMap::new())
            .copied()
    }

    #[test]
    fn trie_walk_visits_matching_prefixes_deepest_first() {
        let mut builder = TrieBuilder::default();
        for (i, prefix) in ["", "/a", "/a/b", "/a/bc", "/x/y"].into_iter().enumerate() {
            builder.insert(prefix, i);
        }
        let trie = builder.build();
        let visited = |path: &str| {
            let mut seen = Vec::new();
            trie.walk(0, path, &mut |group| seen.extend_from_slice(group));
            seen
        };
        assert_eq!(visited("/a/b/c"), [2, 1, 0]);
        assert_eq!(visited("/a/b"), [2, 1, 0]);
        assert_eq!(visited("/a/bc"), [3, 1, 0]);
        assert_eq!(visited("/a/bcd"), [1, 0]);
        assert_eq!(visited("/a//b"), [1, 0]);
        assert_eq!(visited("/x"), [0]);
        assert_eq!(visited("/x/y/z"), [4, 0]);
        assert_eq!(visited("no-slash"), [0]);
    }

    #[test]
    fn long_hosts_are_not_cut_into_useless_suffixes() {
        let router =
            Router::new([route(&["*.example.com"], prefix("/"), 0, "wild")]).expect("valid");
        assert_eq!(router.max_suffix_len, "example.com".len());
        let deep = format!("{}example.com", "a.".repeat(2_000));
        assert_eq!(find(&router, &deep, "/"), Some("wild"));
        assert_eq!(find(&router, "a.example.org", "/"), None);
    }

    #[test]
    fn every_kind_of_group_is_searched() {
        let router = Router::new([
            route(&["h.com"], exact("/e"), 0, "exact"),
            route(&["h.com"], prefix("/p/q"), 0, "prefix"),
            route(
                &["h.com"],
                path(PathMatch::RegularExpression("/r[0-9]+".into())),
                0,
                "regex",
            ),
            route(
                &["h.com"],
                RouteMatch::grpc(GrpcMethodMatch::exact(Some("a.S"), Some("M")), vec![]),
                0,
                "grpc-both",
            ),
            route(
                &["h.com"],
                RouteMatch::grpc(GrpcMethodMatch::exact(Some("a.S"), None), vec![]),
                0,
                "grpc-service",
            ),
            route(
                &["h.com"],
                RouteMatch::grpc(GrpcMethodMatch::exact(None, Some("N")), vec![]),
                0,
                "grpc-method",
            ),
            route(
                &["h.com"],
                RouteMatch::grpc(GrpcMethodMatch::regex(Some("b\\..*"), None), vec![]),
                0,
                "grpc-regex",
            ),
        ])
        .expect("valid");
        let cases = [
            ("/e", Some("exact")),
            ("/p/q/r", Some("prefix")),
            ("/r12", Some("regex")),
            ("/r12/x", None),
            ("/a.S/M", Some("grpc-both")),
            ("/a.S/X", Some("grpc-service")),
            ("/z.S/N", Some("grpc-method")),
            ("/b.S/X", Some("grpc-regex")),
            ("/c.S/X", None),
        ];
        for (p, want) in cases {
            assert_eq!(find(&router, "h.com", p), want, "{p}");
        }
    }

    #[test]
    fn headers_and_query_parameters_are_checked_after_the_index() {
        let router = Router::new([
            route(
                &[],
                RouteMatch {
                    headers: vec![HeaderMatch::exact(HeaderName::from_static("x-a"), "1")],
                    query_params: vec![QueryParamMatch::exact("q", "1")],
                    ..prefix("/")
                },
                0,
                "both",
            ),
            route(&[], prefix("/"), 1, "none"),
        ])
        .expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert("x-a", "1".parse().expect("static"));
        let parts = |query| RequestParts {
            host: "h",
            path: "/",
            query,
            method: &Method::GET,
            headers: &headers,
        };
        assert_eq!(router.find_parts(&parts("q=1")), Some(&"both"));
        assert_eq!(router.find_parts(&parts("q=2")), Some(&"none"));
        // `find` has no query.
        assert_eq!(router.find("h", "/", &Method::GET, &headers), Some(&"none"));
    }

    #[test]
    fn resolve_normalises_and_reports_rejected_paths() {
        let router = Router::new([
            route(&[], prefix("/admin"), 0, "admin"),
            route(&[], prefix("/public"), 0, "public"),
        ])
        .expect("valid");
        let get = |uri: &str| Request::get(uri).body(()).expect("valid request");

        let req = get("/public/../admin/x");
        let resolved = router.resolve(&req).expect("valid path");
        assert_eq!(resolved.target, Some(&"admin"));
        assert_eq!(resolved.path, "/admin/x");

        let req = get("/public/%2e%2e/%2e%2e/etc");
        assert_eq!(router.resolve(&req).err(), Some(PathError::EscapesRoot));
        assert_eq!(router.find_request(&req), None);

        let req = get("/public%2F..%2Fadmin");
        assert_eq!(router.resolve(&req).err(), Some(PathError::EncodedSlash));
        let keep = router.clone().with_encoded_slashes(EncodedSlashes::Keep);
        assert_eq!(keep.encoded_slashes(), EncodedSlashes::Keep);
        // Kept as data: one segment, which no route's prefix covers.
        assert_eq!(keep.find_request(&req), None);
        let decode = router.with_encoded_slashes(EncodedSlashes::Decode);
        assert_eq!(decode.find_request(&req), Some(&"admin"));
    }

    #[test]
    fn find_request_takes_host_from_authority_then_header() {
        let router = Router::new([
            route(&["a.com"], prefix("/"), 0, "a"),
            route(
                &["b.com"],
                RouteMatch {
                    method: Some(Method::POST),
                    headers: vec![HeaderMatch::exact(HeaderName::from_static("x-k"), "v")],
                    ..prefix("/")
                },
                0,
                "b",
            ),
            route(
                &["c.com"],
                RouteMatch {
                    query_params: vec![QueryParamMatch::exact("k", "v w")],
                    ..prefix("/")
                },
                0,
                "c",
            ),
            route(&[], prefix("/"), 0, "any"),
        ])
        .expect("valid routes");
        let cases: [(Request<()>, Option<Target>); 7] = [
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
            (
                Request::get("/x?k=v%20w")
                    .header("host", "c.com")
                    .body(())
                    .unwrap(),
                Some("c"),
            ),
            (
                Request::get("/x?k=v+w")
                    .header("host", "c.com")
                    .body(())
                    .unwrap(),
                Some("any"),
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
    fn len_counts_input_routes() {
        let empty = Router::<Target>::new([]).expect("empty is valid");
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(find(&empty, "a.com", "/"), None);
        let router = Router::new([
            route(&["a.com", "b.com"], prefix("/"), 0, "ab"),
            route(&[], prefix("/"), 0, "any"),
        ])
        .expect("valid routes");
        assert!(!router.is_empty());
        assert_eq!(router.len(), 2);
    }

    #[test]
    fn builds_share_regexes_and_hand_them_on() {
        let regex = |p: &str| path(PathMatch::RegularExpression(p.to_owned()));
        let header = |name: &str, pattern: &str| RouteMatch {
            headers: vec![HeaderMatch {
                name: HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value: pattern.to_owned(),
                kind: MatchType::RegularExpression,
            }],
            ..prefix("/h")
        };
        let mut first = Regexes::default();
        let router = Router::with_regexes(
            [
                route(&["a.com"], regex("/a[0-9]+"), 0, "a"),
                route(&["b.com"], regex("/a[0-9]+"), 0, "b"),
                route(&["a.com"], header("x-v", "v[0-9]"), 0, "h"),
            ],
            &Regexes::default(),
            &mut first,
        )
        .expect("valid routes");
        assert_eq!(find(&router, "b.com", "/a12"), Some("b"));
        assert_eq!(find(&router, "b.com", "/a12x"), None);
        // One compiled expression per pattern, whoever uses it.
        assert_eq!(first.len(), 2);
        let shared = |router: &Router<Target>, i: usize| match &router.routes[i].path {
            CompiledPath::Regex { regex, .. } => regex.clone(),
            other => panic!("not a regex: {other:?}"),
        };
        assert!(Arc::ptr_eq(&shared(&router, 0), &shared(&router, 1)));

        // The next build takes what it still uses and leaves the rest.
        let mut second = Regexes::default();
        let next = Router::with_regexes(
            [
                route(&["a.com"], regex("/a[0-9]+"), 0, "a"),
                route(&["a.com"], regex("/b+"), 0, "b"),
            ],
            &first,
            &mut second,
        )
        .expect("valid routes");
        assert_eq!(second.len(), 2);
        assert!(Arc::ptr_eq(
            &second.by_pattern["/a[0-9]+"],
            &first.by_pattern["/a[0-9]+"]
        ));
        assert!(!second.by_pattern.contains_key("v[0-9]"));
        assert_eq!(find(&next, "a.com", "/bbb"), Some("b"));
        assert_eq!(find(&next, "a.com", "/a1"), Some("a"));

        // A bad pattern is refused even when the earlier build had none like it.
        let err = Router::with_regexes([route(&[], regex("a)|(b"), 0, "x")], &second, &mut first)
            .expect_err("invalid alone");
        assert!(
            matches!(err, RouterError::InvalidRegex { route: 0, .. }),
            "{err:?}"
        );
    }
}
