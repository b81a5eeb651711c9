//! The Gateway API's matching rules for HTTPRoute and GRPCRoute, table by
//! table: the examples of the API reference (`HTTPRouteSpec.hostnames`,
//! `HTTPPathMatch`, `HTTPRouteRule.matches`, `GRPCRouteRule.matches`) and the
//! request/backend expectations of the conformance tests named in each test.
//!
//! Every table is checked against both the indexed `Router` and the linear
//! reference matcher.

use http::{HeaderName, Method, Request};
use novaedge_router::reference::LinearRouter;
use novaedge_router::{
    Dialect, EncodedSlashes, Field, GrpcMethodMatch, HeaderMatch, PathMatch, QueryParamMatch,
    REGEX_SIZE_LIMIT, RequestParts, Route, RouteMatch, Router, RouterError, intersect_hostnames,
    normalize_path,
};

type Target = &'static str;

fn route(hostnames: &[&str], route_match: RouteMatch, rank: u64, target: Target) -> Route<Target> {
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

fn regex(p: &str) -> RouteMatch {
    path(PathMatch::RegularExpression(p.to_owned()))
}

fn headers(mut m: RouteMatch, headers: &[(&'static str, &str)]) -> RouteMatch {
    m.headers = headers
        .iter()
        .map(|(name, value)| {
            HeaderMatch::exact(
                HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                *value,
            )
        })
        .collect();
    m
}

fn query(mut m: RouteMatch, params: &[(&str, &str)]) -> RouteMatch {
    m.query_params = params
        .iter()
        .map(|(name, value)| QueryParamMatch::exact(*name, *value))
        .collect();
    m
}

fn method(mut m: RouteMatch, method: Method) -> RouteMatch {
    m.method = Some(method);
    m
}

/// A request; `uri` is a path with an optional query.
fn req(method: Method, host: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("valid test request")
}

fn get(host: &str, uri: &str) -> Request<()> {
    req(Method::GET, host, uri, &[])
}

/// Builds the router and the reference from `routes` and checks each
/// request against the expected target (`None`: 404).
fn check(name: &str, routes: Vec<Route<Target>>, cases: &[(Request<()>, Option<Target>)]) {
    let router = Router::new(routes.clone()).expect("valid routes");
    let linear = LinearRouter::new(routes).expect("valid routes");
    for (request, want) in cases {
        let got = router.find_request(request).copied();
        assert_eq!(got, *want, "{name}: {request:?}");
        let Ok(path) = normalize_path(request.uri().path(), EncodedSlashes::Reject) else {
            assert_eq!(*want, None, "{name}: a rejected path matches nothing");
            continue;
        };
        let parts = RequestParts {
            host: request.headers()["host"].to_str().expect("ascii host"),
            path: &path,
            query: request.uri().query().unwrap_or(""),
            method: request.method(),
            headers: request.headers(),
        };
        assert_eq!(
            linear.find_parts(&parts).copied(),
            *want,
            "{name} (reference): {request:?}"
        );
    }
}

#[test]
fn conformance_httproute_matching_across_routes() {
    // Two HTTPRoutes on one listener: rules of all routes serving a host
    // compete on their matches, whatever their hostnames.
    check(
        "HTTPRouteMatchingAcrossRoutes",
        vec![
            route(&["example.com", "example.net"], prefix("/"), 0, "v1"),
            route(
                &["example.com", "example.net"],
                headers(prefix("/"), &[("version", "one")]),
                0,
                "v1",
            ),
            route(&["*.com"], prefix("/v2"), 1, "v2"),
            route(
                &["*.com"],
                headers(prefix("/"), &[("version", "two")]),
                1,
                "v2",
            ),
        ],
        &[
            (get("example.com", "/"), Some("v1")),
            (get("example.com", "/example"), Some("v1")),
            (get("example.net", "/example"), Some("v1")),
            (
                req(
                    Method::GET,
                    "example.com",
                    "/example",
                    &[("Version", "one")],
                ),
                Some("v1"),
            ),
            (get("example.com", "/v2"), Some("v2")),
            // v2 matches are limited to *.com.
            (get("example.net", "/v2"), Some("v1")),
            (get("example.com", "/v2/example"), Some("v2")),
            (
                req(Method::GET, "example.com", "/", &[("Version", "two")]),
                Some("v2"),
            ),
        ],
    );
}

#[test]
fn conformance_httproute_path_match_order() {
    check(
        "HTTPRoutePathMatchOrder",
        vec![
            route(&[], exact("/match"), 0, "v1"),
            route(&[], exact("/match/exact"), 1, "v2"),
            route(&[], exact("/match/exact/one"), 2, "v3"),
            route(&[], prefix("/match/"), 3, "v3"),
            route(&[], prefix("/match/prefix/"), 4, "v1"),
            route(&[], prefix("/match/prefix/one"), 5, "v2"),
        ],
        &[
            (get("gw", "/match/exact/one"), Some("v3")),
            (get("gw", "/match/exact"), Some("v2")),
            (get("gw", "/match"), Some("v1")),
            (get("gw", "/match/prefix/one/any"), Some("v2")),
            (get("gw", "/match/prefix/any"), Some("v1")),
            (get("gw", "/match/any"), Some("v3")),
        ],
    );
}

#[test]
fn conformance_httproute_hostname_intersection() {
    // Three listeners on one port; each route's hostnames are intersected
    // with the hostname of each listener, and the routes of all listeners
    // share the port's router.
    let listeners = ["very.specific.com", "*.wildcard.io", "*.anotherwildcard.io"];
    let routes: [(&[&str], &str, Target); 5] = [
        (
            &[
                "non.matching.com",
                "*.nonmatchingwildcard.io",
                "very.specific.com",
            ],
            "/s1",
            "v1",
        ),
        (
            &[
                "non.matching.com",
                "wildcard.io",
                "foo.wildcard.io",
                "bar.wildcard.io",
                "foo.bar.wildcard.io",
            ],
            "/s2",
            "v2",
        ),
        (&["non.matching.com", "*.specific.com"], "/s3", "v3"),
        (&["*.anotherwildcard.io"], "/s4", "v1"),
        (&["specific.but.wrong.com", "wildcard.io"], "/s5", "v2"),
    ];
    let mut attached = Vec::new();
    for (hostnames, p, target) in routes {
        let mut accepted = false;
        for listener in listeners {
            if let Some(effective) = intersect_hostnames(Some(listener), hostnames).expect("valid")
            {
                accepted = true;
                let mut r = route(&[], prefix(p), attached.len() as u64, target);
                r.hostnames = effective;
                attached.push(r);
            }
        }
        // "no-intersecting-hosts" is not accepted by any listener.
        assert_eq!(accepted, p != "/s5", "{p}");
    }
    check(
        "HTTPRouteHostnameIntersection",
        attached,
        &[
            (get("very.specific.com", "/s1"), Some("v1")),
            (get("very.specific.com:1234", "/s1"), Some("v1")),
            (get("non.matching.com", "/s1"), None),
            (get("foo.nonmatchingwildcard.io", "/s1"), None),
            (get("foo.wildcard.io", "/s1"), None),
            (get("very.specific.com", "/non-matching-prefix"), None),
            (get("foo.wildcard.io", "/s2"), Some("v2")),
            (get("bar.wildcard.io", "/s2"), Some("v2")),
            (get("foo.bar.wildcard.io", "/s2"), Some("v2")),
            (get("non.matching.com", "/s2"), None),
            (get("wildcard.io", "/s2"), None),
            (get("very.specific.com", "/s2"), None),
            (get("foo.wildcard.io", "/non-matching-prefix"), None),
            (get("very.specific.com", "/s3"), Some("v3")),
            (get("non.matching.com", "/s3"), None),
            (get("foo.specific.com", "/s3"), None),
            (get("foo.wildcard.io", "/s3"), None),
            (get("foo.anotherwildcard.io", "/s4"), Some("v1")),
            (get("bar.anotherwildcard.io", "/s4"), Some("v1")),
            (get("foo.bar.anotherwildcard.io", "/s4"), Some("v1")),
            (get("anotherwildcard.io", "/s4"), None),
            (get("foo.wildcard.io", "/s4"), None),
            (get("very.specific.com", "/s4"), None),
            (get("specific.but.wrong.com", "/s5"), None),
            (get("wildcard.io", "/s5"), None),
        ],
    );
}

#[test]
fn listener_and_route_hostname_intersection() {
    // The examples of HTTPRouteSpec.hostnames.
    type Case<'a> = (Option<&'a str>, &'a [&'a str], Option<&'a [&'a str]>);
    let cases: &[Case<'_>] = &[
        // "A Listener with test.example.com as the hostname matches HTTPRoutes
        // that have either not specified any hostnames, or have specified at
        // least one of test.example.com or *.example.com."
        (Some("test.example.com"), &[], Some(&["test.example.com"])),
        (
            Some("test.example.com"),
            &["test.example.com"],
            Some(&["test.example.com"]),
        ),
        (
            Some("test.example.com"),
            &["*.example.com"],
            Some(&["test.example.com"]),
        ),
        (
            Some("test.example.com"),
            &["example.com", "*.example.net"],
            None,
        ),
        // "A Listener with *.example.com as the hostname matches HTTPRoutes
        // that have either not specified any hostnames or have specified at
        // least one hostname that matches the Listener hostname. For example,
        // *.example.com, test.example.com, and foo.test.example.com would all
        // match. On the other hand, example.com and test.example.net would not
        // match."
        (Some("*.example.com"), &[], Some(&["*.example.com"])),
        (
            Some("*.example.com"),
            &["*.example.com"],
            Some(&["*.example.com"]),
        ),
        (
            Some("*.example.com"),
            &["test.example.com"],
            Some(&["test.example.com"]),
        ),
        (
            Some("*.example.com"),
            &["foo.test.example.com"],
            Some(&["foo.test.example.com"]),
        ),
        (Some("*.example.com"), &["example.com"], None),
        (Some("*.example.com"), &["test.example.net"], None),
        // "If a Listener specified *.example.com, and the HTTPRoute specified
        // test.example.com and test.example.net, test.example.net must not be
        // considered for a match."
        (
            Some("*.example.com"),
            &["test.example.com", "test.example.net"],
            Some(&["test.example.com"]),
        ),
        // Overlapping wildcards keep the more specific one.
        (Some("*.example.com"), &["*.com"], Some(&["*.example.com"])),
        (
            Some("*.example.com"),
            &["*.a.example.com"],
            Some(&["*.a.example.com"]),
        ),
        (Some("*.example.com"), &["*.example.net"], None),
        // No listener hostname: the route's, as they are.
        (None, &[], Some(&[])),
        (
            None,
            &["A.example.com", "a.example.com", "*.b.com"],
            Some(&["a.example.com", "*.b.com"]),
        ),
        // Case and duplicates.
        (
            Some("Test.Example.com"),
            &["TEST.example.com", "*.EXAMPLE.com"],
            Some(&["test.example.com"]),
        ),
    ];
    for (listener, route_hostnames, want) in cases {
        let got = intersect_hostnames(*listener, route_hostnames).expect("valid hostnames");
        let want = want.map(|w| w.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            got, want,
            "listener {listener:?}, route {route_hostnames:?}"
        );
    }
    let err = intersect_hostnames(Some("a.com"), &["ok.com", "bad_host"]).expect_err("invalid");
    assert_eq!(err.hostname, "bad_host");
    assert!(intersect_hostnames(Some("*"), &["a.com"]).is_err());
}

#[test]
fn hostnames() {
    check(
        "wildcards are suffix matches of one or more labels, never the apex",
        vec![
            route(&["*.example.com"], prefix("/"), 0, "wild"),
            route(&["*.a.example.com"], prefix("/"), 1, "wild-a"),
            route(&["b.a.example.com"], prefix("/"), 2, "exact"),
        ],
        &[
            (get("test.example.com", "/"), Some("wild")),
            (get("foo.test.example.com", "/"), Some("wild")),
            (get("example.com", "/"), None),
            (get(".example.com", "/"), None),
            (get("x.a.example.com", "/"), Some("wild-a")),
            (get("a.example.com", "/"), Some("wild")),
            (get("b.a.example.com", "/"), Some("exact")),
            (get("notexample.com", "/"), None),
        ],
    );
    check(
        "case-insensitive, port and trailing dot ignored",
        vec![
            route(&["API.Example.com"], prefix("/"), 0, "api"),
            route(&["*.Example.com"], prefix("/"), 0, "wild"),
            route(&[], prefix("/"), 0, "any"),
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
            (get("[2001:db8::1]:443", "/"), Some("any")),
            (get("127.0.0.1:8080", "/"), Some("any")),
        ],
    );
}

#[test]
fn path_matching() {
    check(
        "Exact",
        vec![route(&[], exact("/a"), 0, "a")],
        &[
            (get("h", "/a"), Some("a")),
            (get("h", "/a?x=1"), Some("a")),
            (get("h", "/a/"), None),
            (get("h", "/A"), None),
            (get("h", "/a/b"), None),
            (get("h", "/ab"), None),
            (get("h", "/"), None),
        ],
    );
    // HTTPPathMatch: "PathPrefix: ... the paths /abc, /abc/, and /abc/def
    // would all match the prefix /abc, but the path /abcd would not."
    for p in ["/abc", "/abc/"] {
        check(
            &format!("PathPrefix {p}"),
            vec![route(&[], prefix(p), 0, "abc")],
            &[
                (get("h", "/abc"), Some("abc")),
                (get("h", "/abc/"), Some("abc")),
                (get("h", "/abc/def"), Some("abc")),
                (get("h", "/abcd"), None),
                (get("h", "/ab"), None),
                (get("h", "/ABC"), None),
            ],
        );
    }
    check(
        "PathPrefix /",
        vec![route(&[], prefix("/"), 0, "root")],
        &[
            (get("h", "/"), Some("root")),
            (get("h", "/anything/at/all"), Some("root")),
        ],
    );
    check(
        "RegularExpression matches the whole path",
        vec![route(&[], regex(r"/api/v[0-9]+/users/[^/]+"), 0, "users")],
        &[
            (get("h", "/api/v2/users/42"), Some("users")),
            (get("h", "/api/v2/users/42/x"), None),
            (get("h", "/x/api/v2/users/42"), None),
            (get("h", "/api/vX/users/42"), None),
        ],
    );
    check(
        "matching happens on the normalised path",
        vec![
            route(&[], prefix("/public"), 0, "public"),
            route(&[], exact("/admin/~root"), 0, "admin"),
            // Route paths are normalised too.
            route(&[], exact("/docs/./a//b"), 0, "docs"),
        ],
        &[
            (get("h", "/public/../admin/%7eroot"), Some("admin")),
            (get("h", "/public/%2e%2e/admin/~root"), Some("admin")),
            (get("h", "//public//x"), Some("public")),
            (get("h", "/docs/a/b"), Some("docs")),
            // Rejected paths match nothing.
            (get("h", "/public/../../admin"), None),
            (get("h", "/public%2F..%2Fadmin"), None),
        ],
    );
}

#[test]
fn header_matching() {
    check(
        "all headers must match; names case-insensitive, values exact",
        vec![route(
            &[],
            headers(prefix("/"), &[("x-env", "Canary"), ("x-team", "a")]),
            0,
            "both",
        )],
        &[
            (
                req(
                    Method::GET,
                    "h",
                    "/",
                    &[("X-Env", "Canary"), ("x-team", "a")],
                ),
                Some("both"),
            ),
            (req(Method::GET, "h", "/", &[("x-env", "Canary")]), None),
            (
                req(
                    Method::GET,
                    "h",
                    "/",
                    &[("x-env", "canary"), ("x-team", "a")],
                ),
                None,
            ),
            (
                req(
                    Method::GET,
                    "h",
                    "/",
                    &[("x-env", "Canary "), ("x-team", "a")],
                ),
                None,
            ),
            (get("h", "/"), None),
        ],
    );
    check(
        "any value of a repeated header may match",
        vec![route(&[], headers(prefix("/"), &[("x-tag", "b")]), 0, "b")],
        &[
            (
                req(Method::GET, "h", "/", &[("x-tag", "a"), ("x-tag", "b")]),
                Some("b"),
            ),
            (
                req(Method::GET, "h", "/", &[("x-tag", "a"), ("x-tag", "c")]),
                None,
            ),
            // One line with a list is one value.
            (req(Method::GET, "h", "/", &[("x-tag", "a, b")]), None),
        ],
    );
    check(
        "only the first condition on a header name counts",
        vec![route(
            &[],
            headers(prefix("/"), &[("x-tag", "a"), ("X-Tag", "b")]),
            0,
            "first",
        )],
        &[
            (req(Method::GET, "h", "/", &[("x-tag", "a")]), Some("first")),
            (req(Method::GET, "h", "/", &[("x-tag", "b")]), None),
        ],
    );
    let mut m = prefix("/");
    m.headers = vec![HeaderMatch::regex(
        HeaderName::from_static("user-agent"),
        "(?i).*mobile.*",
    )];
    check(
        "RegularExpression header values match the whole value",
        vec![
            route(&[], m, 0, "mobile"),
            route(&[], prefix("/"), 1, "desktop"),
        ],
        &[
            (
                req(
                    Method::GET,
                    "h",
                    "/",
                    &[("user-agent", "Foo Mobile Safari")],
                ),
                Some("mobile"),
            ),
            (
                req(Method::GET, "h", "/", &[("user-agent", "Foo Desktop")]),
                Some("desktop"),
            ),
            (get("h", "/"), Some("desktop")),
        ],
    );
}

#[test]
fn query_param_matching() {
    // In the spirit of conformance HTTPRouteQueryParamMatching.
    let mut either = query(prefix("/"), &[("ANIMAL", "Whale")]);
    either
        .query_params
        .push(QueryParamMatch::regex("color", "bl(ue|ack)"));
    check(
        "query parameters",
        vec![
            route(&[], query(prefix("/"), &[("animal", "whale")]), 0, "v1"),
            route(&[], query(prefix("/"), &[("animal", "dolphin")]), 1, "v2"),
            route(
                &[],
                query(prefix("/"), &[("animal", "dolphin"), ("color", "blue")]),
                2,
                "v3",
            ),
            route(&[], either, 3, "v3"),
        ],
        &[
            (get("h", "/?animal=whale"), Some("v1")),
            (get("h", "/?animal=dolphin"), Some("v2")),
            (get("h", "/?animal=dolphin&color=blue"), Some("v3")),
            (get("h", "/?color=blue&animal=dolphin"), Some("v3")),
            (get("h", "/?ANIMAL=Whale&color=black"), Some("v3")),
            (get("h", "/?ANIMAL=Whale&color=blues"), None),
            (get("h", "/?animal=dolphin&color=yellow"), Some("v2")),
            (get("h", "/?color=blue"), None),
            (get("h", "/?animal=phant"), None),
            (get("h", "/?Animal=whale"), None),
            // Percent-decoded names and values.
            (get("h", "/?%61nimal=wh%61le"), Some("v1")),
            // The first occurrence counts.
            (get("h", "/?animal=whale&animal=dolphin"), Some("v1")),
            (get("h", "/?animal=orca&animal=whale"), None),
            (get("h", "/"), None),
        ],
    );
}

#[test]
fn method_matching() {
    // In the spirit of conformance HTTPRouteMethodMatching.
    check(
        "methods",
        vec![
            route(&[], method(prefix("/"), Method::POST), 0, "v1"),
            route(&[], method(prefix("/"), Method::GET), 1, "v2"),
        ],
        &[
            (req(Method::POST, "h", "/", &[]), Some("v1")),
            (req(Method::GET, "h", "/", &[]), Some("v2")),
            (req(Method::HEAD, "h", "/", &[]), None),
        ],
    );
}

#[test]
fn precedence_criteria_in_order() {
    // HTTPRouteRule.matches: exact path > longest prefix > method > most
    // header matches > most query param matches; then hostname; then the
    // oldest route, then namespace/name (both in rank).
    let routes = vec![
        route(
            &["h.com"],
            query(prefix("/a"), &[("q", "1"), ("r", "1")]),
            0,
            "prefix-a+2-query",
        ),
        route(
            &[],
            headers(prefix("/a"), &[("x", "1"), ("y", "1")]),
            10,
            "prefix-a+2-headers",
        ),
        route(
            &[],
            headers(prefix("/a"), &[("x", "1")]),
            11,
            "prefix-a+header",
        ),
        route(
            &[],
            query(headers(prefix("/a"), &[("x", "1")]), &[("q", "1")]),
            12,
            "prefix-a+header+query",
        ),
        route(&[], method(prefix("/a"), Method::POST), 13, "prefix-a+post"),
        route(&[], prefix("/a/b"), 20, "prefix-a-b"),
        route(&[], regex("/a/b/.+"), 30, "regex"),
        route(&[], exact("/a/b/c"), 40, "exact"),
    ];
    let xy = [("x", "1"), ("y", "1")];
    check(
        "one criterion at a time",
        routes,
        &[
            // An exact path beats everything.
            (
                req(Method::POST, "h.com", "/a/b/c?q=1&r=1", &xy),
                Some("exact"),
            ),
            // Then a regular expression.
            (
                req(Method::POST, "h.com", "/a/b/d?q=1&r=1", &xy),
                Some("regex"),
            ),
            // Then the longest prefix.
            (
                req(Method::POST, "h.com", "/a/b?q=1&r=1", &xy),
                Some("prefix-a-b"),
            ),
            // Then a method.
            (
                req(Method::POST, "h.com", "/a?q=1&r=1", &xy),
                Some("prefix-a+post"),
            ),
            // Then more headers.
            (
                req(Method::GET, "h.com", "/a?q=1&r=1", &xy),
                Some("prefix-a+2-headers"),
            ),
            // Then more query parameters.
            (
                req(Method::GET, "h.com", "/a?q=1&r=1", &[("x", "1")]),
                Some("prefix-a+header+query"),
            ),
            (
                req(Method::GET, "h.com", "/a?r=1", &[("x", "1")]),
                Some("prefix-a+header"),
            ),
            (
                req(Method::GET, "h.com", "/a?q=1&r=1", &[]),
                Some("prefix-a+2-query"),
            ),
            (req(Method::GET, "h.com", "/a", &[]), None),
        ],
    );
    check(
        "hostname breaks ties between equal matches, before rank",
        vec![
            route(&[], prefix("/"), 0, "any"),
            route(&["*.com"], prefix("/"), 1, "wild-short"),
            route(&["*.example.com"], prefix("/"), 2, "wild-long"),
            route(&["www.example.com"], prefix("/"), 3, "exact"),
        ],
        &[
            (get("www.example.com", "/"), Some("exact")),
            (get("api.example.com", "/"), Some("wild-long")),
            (get("example.com", "/"), Some("wild-short")),
            (get("example.org", "/"), Some("any")),
        ],
    );
    let ranked = || {
        vec![
            route(&[], prefix("/x"), 5, "five"),
            route(&[], prefix("/x"), 2, "two"),
            route(&[], prefix("/x"), 7, "seven"),
        ]
    };
    check("rank", ranked(), &[(get("h", "/x"), Some("two"))]);
    let mut reversed = ranked();
    reversed.reverse();
    check("rank, reversed", reversed, &[(get("h", "/x"), Some("two"))]);
    check(
        "equal rank falls back to input order",
        vec![
            route(&[], prefix("/x"), 1, "first"),
            route(&[], prefix("/x"), 1, "second"),
        ],
        &[(get("h", "/x"), Some("first"))],
    );
    check(
        "a duplicated header name does not count twice",
        vec![
            route(
                &[],
                headers(prefix("/"), &[("x-a", "1"), ("x-a", "1")]),
                1,
                "dup",
            ),
            route(&[], headers(prefix("/"), &[("x-a", "1")]), 0, "single"),
        ],
        &[(req(Method::GET, "h", "/", &[("x-a", "1")]), Some("single"))],
    );
}

fn grpc(service: Option<&str>, method: Option<&str>) -> RouteMatch {
    RouteMatch::grpc(GrpcMethodMatch::exact(service, method), Vec::new())
}

fn grpc_regex(service: Option<&str>, method: Option<&str>) -> RouteMatch {
    RouteMatch::grpc(GrpcMethodMatch::regex(service, method), Vec::new())
}

fn grpc_call(host: &str, path: &str) -> Request<()> {
    req(
        Method::POST,
        host,
        path,
        &[("content-type", "application/grpc")],
    )
}

#[test]
fn conformance_grpcroute_exact_method_matching() {
    let service = "gateway_api_conformance.grpc_echo.grpcecho.GrpcEcho";
    check(
        "GRPCRouteExactMethodMatching",
        vec![
            route(&[], grpc(Some(service), Some("Echo")), 0, "v1"),
            route(&[], grpc(Some(service), Some("EchoTwo")), 1, "v2"),
        ],
        &[
            (grpc_call("h", &format!("/{service}/Echo")), Some("v1")),
            (grpc_call("h", &format!("/{service}/EchoTwo")), Some("v2")),
            (grpc_call("h", &format!("/{service}/EchoThree")), None),
        ],
    );
}

#[test]
fn grpc_matching_and_precedence() {
    check(
        "service, then method characters; exact before pattern; hostname first",
        vec![
            route(&[], grpc(None, None), 0, "any"),
            route(&[], grpc(None, Some("Get")), 1, "method"),
            route(&[], grpc(Some("pkg.Svc"), None), 2, "service"),
            route(&[], grpc(Some("pkg.Svc"), Some("Get")), 3, "both"),
            route(&[], grpc_regex(Some("pkg\\..*"), None), 4, "service-re"),
            route(
                &[],
                grpc_regex(Some("pkg[.]SvX"), None),
                5,
                "service-re-long",
            ),
            route(&[], grpc_regex(None, Some("(?i)list.*")), 6, "method-re"),
            route(
                &["grpc.example.com"],
                grpc(None, Some("Put")),
                7,
                "host-put",
            ),
        ],
        &[
            (grpc_call("h", "/pkg.Svc/Get"), Some("both")),
            (grpc_call("h", "/pkg.Svc/Put"), Some("service")),
            (grpc_call("h", "/pkg.Other/Get"), Some("service-re")),
            (grpc_call("h", "/pkg.SvX/Get"), Some("service-re-long")),
            (grpc_call("h", "/other.Svc/Get"), Some("method")),
            (grpc_call("h", "/other.Svc/ListAll"), Some("method-re")),
            (grpc_call("h", "/other.Svc/Put"), Some("any")),
            // GRPCRoute: the hostname comes first.
            (
                grpc_call("grpc.example.com", "/pkg.Svc/Put"),
                Some("host-put"),
            ),
            (grpc_call("grpc.example.com", "/pkg.Svc/Get"), Some("both")),
            // Not a gRPC path: only the match of any method applies.
            (grpc_call("h", "/pkg.Svc/Get/x"), Some("any")),
            (grpc_call("h", "/pkg.Svc"), Some("any")),
        ],
    );
    let mut with_header = grpc(Some("pkg.Svc"), None);
    with_header.headers = vec![HeaderMatch::exact(
        HeaderName::from_static("x-version"),
        "2",
    )];
    check(
        "headers count after service and method",
        vec![
            route(&[], grpc(Some("pkg.Svc"), Some("Get")), 0, "both"),
            route(&[], with_header, 1, "service+header"),
            route(&[], grpc(Some("pkg.Svc"), None), 2, "service"),
        ],
        &[
            (
                req(Method::POST, "h", "/pkg.Svc/Get", &[("x-version", "2")]),
                Some("both"),
            ),
            (
                req(Method::POST, "h", "/pkg.Svc/Put", &[("x-version", "2")]),
                Some("service+header"),
            ),
            (grpc_call("h", "/pkg.Svc/Put"), Some("service")),
        ],
    );
}

#[test]
fn invalid_routes_are_rejected_naming_route_field_and_value() {
    let ok = || route(&["fine.com"], prefix("/"), 0, "ok");
    let long_regex = format!("(a{{{0}}}){{{0}}}", 200);
    let cases: Vec<(Route<Target>, Field, &str)> = vec![
        (
            route(&["*"], prefix("/"), 0, "t"),
            Field::Hostname(0),
            "\"*\"",
        ),
        (
            route(&["ok.com", "a.*.com"], prefix("/"), 0, "t"),
            Field::Hostname(1),
            "\"a.*.com\"",
        ),
        (
            route(&[""], prefix("/"), 0, "t"),
            Field::Hostname(0),
            "hostnames[0]",
        ),
        (route(&[], prefix("v2"), 0, "t"), Field::Path, "\"v2\""),
        (
            route(&[], exact(""), 0, "t"),
            Field::Path,
            "must start with",
        ),
        (
            route(&[], exact("/../a"), 0, "t"),
            Field::Path,
            "leave the root",
        ),
        (
            route(&[], exact("/a%zz"), 0, "t"),
            Field::Path,
            "hexadecimal",
        ),
        (route(&[], regex("/a("), 0, "t"), Field::Path, "\"/a(\""),
        (
            route(&[], regex(&long_regex), 0, "t"),
            Field::Path,
            "size limit",
        ),
        (
            route(&[], headers(prefix("/"), &[("x-a", "1")]), 0, "t").with_header_regex("x-b", "["),
            Field::Header(1),
            "route_match.headers[1]",
        ),
        (
            route(&[], query(prefix("/"), &[("", "1")]), 0, "t"),
            Field::QueryParam(0),
            "must not be empty",
        ),
        (
            route(&[], grpc(Some("not a service"), None), 0, "t"),
            Field::GrpcService,
            "\"not a service\"",
        ),
        (
            route(&[], grpc(Some("a.B"), Some("Get.x")), 0, "t"),
            Field::GrpcMethod,
            "\"Get.x\"",
        ),
        (
            route(&[], grpc_regex(None, Some("(")), 0, "t"),
            Field::GrpcMethod,
            "regular expression",
        ),
    ];
    for (bad, field, needle) in cases {
        let err = Router::new([ok(), bad.clone()]).expect_err(needle);
        let message = err.to_string();
        assert_eq!((err.route(), err.field()), (1, field), "{message}");
        assert!(
            message.starts_with(&format!("route #1: {field}: ")) && message.contains(needle),
            "{bad:?}: {message:?} should name route #1, {field} and {needle}"
        );
        // The reference refuses the same routes.
        assert!(LinearRouter::new([ok(), bad]).is_err());
    }
    assert!(matches!(
        Router::new([route(&[], regex(&long_regex), 0, "t")]),
        Err(RouterError::InvalidRegex { .. })
    ));
    // Typical patterns, Unicode classes included, fit the limit.
    let typical = route(&[], regex(r"(?i)/[\w-]+/[0-9a-f]{32}/\w+(/.*)?"), 0, "t");
    Router::new([typical]).unwrap_or_else(|e| panic!("within {REGEX_SIZE_LIMIT} bytes: {e}"));
}

trait WithHeaderRegex {
    fn with_header_regex(self, name: &'static str, pattern: &str) -> Self;
}

impl WithHeaderRegex for Route<Target> {
    fn with_header_regex(mut self, name: &'static str, pattern: &str) -> Self {
        self.route_match
            .headers
            .push(HeaderMatch::regex(HeaderName::from_static(name), pattern));
        self
    }
}
