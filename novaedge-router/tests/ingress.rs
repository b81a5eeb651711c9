//! Ingress (`networking.k8s.io/v1`) matching: the examples tables of the
//! Kubernetes Ingress documentation ("Examples" under path types, and
//! "Hostname wildcards"), checked against the router and the reference.

use http::{HeaderMap, Method};
use novaedge_router::reference::LinearRouter;
use novaedge_router::{Dialect, IngressPathType, PathMatch, Route, RouteMatch, Router};

type Target = &'static str;

fn rule(
    host: Option<&str>,
    path_type: IngressPathType,
    path: &str,
    rank: u64,
    target: Target,
) -> Route<Target> {
    Route {
        hostnames: host.map(str::to_owned).into_iter().collect(),
        route_match: RouteMatch {
            path: PathMatch::ingress(path_type, path),
            ..RouteMatch::default()
        },
        rank,
        target,
        dialect: Dialect::Ingress,
    }
}

use IngressPathType::{Exact, ImplementationSpecific, Prefix};

fn check(name: &str, rules: Vec<Route<Target>>, cases: &[(&str, &str, Option<Target>)]) {
    let router = Router::new(rules.clone()).expect("valid rules");
    let linear = LinearRouter::new(rules).expect("valid rules");
    let headers = HeaderMap::new();
    for (host, path, want) in cases {
        assert_eq!(
            router.find(host, path, &Method::GET, &headers).copied(),
            *want,
            "{name}: {host}{path}"
        );
        assert_eq!(
            linear.find(host, path, &Method::GET, &headers).copied(),
            *want,
            "{name} (reference): {host}{path}"
        );
    }
}

#[test]
fn path_type_examples() {
    // (kind, rule paths, request path, matches)
    let table: &[(IngressPathType, &[&str], &str, bool)] = &[
        (Prefix, &["/"], "/", true),
        (Prefix, &["/"], "/any/path", true),
        (Exact, &["/foo"], "/foo", true),
        (Exact, &["/foo"], "/bar", false),
        (Exact, &["/foo"], "/foo/", false),
        (Exact, &["/foo/"], "/foo", false),
        (Prefix, &["/foo"], "/foo", true),
        (Prefix, &["/foo"], "/foo/", true),
        (Prefix, &["/foo/"], "/foo", true),
        (Prefix, &["/foo/"], "/foo/", true),
        (Prefix, &["/aaa/bb"], "/aaa/bbb", false),
        (Prefix, &["/aaa/bbb"], "/aaa/bbb", true),
        // Ignores the trailing slash.
        (Prefix, &["/aaa/bbb/"], "/aaa/bbb", true),
        // Matches the trailing slash.
        (Prefix, &["/aaa/bbb"], "/aaa/bbb/", true),
        // Matches a subpath.
        (Prefix, &["/aaa/bbb"], "/aaa/bbb/ccc", true),
        // Does not match a string prefix.
        (Prefix, &["/aaa/bbb"], "/aaa/bbbxyz", false),
        (Prefix, &["/", "/aaa"], "/aaa/ccc", true),
        (Prefix, &["/", "/aaa", "/aaa/bbb"], "/aaa/bbb", true),
        (Prefix, &["/", "/aaa", "/aaa/bbb"], "/ccc", true),
        // Uses the default backend.
        (Prefix, &["/aaa"], "/ccc", false),
        // ImplementationSpecific is Prefix here.
        (ImplementationSpecific, &["/aaa"], "/aaa/x", true),
        (ImplementationSpecific, &["/aaa"], "/aaax", false),
    ];
    for (kind, paths, request, matches) in table {
        let rules = paths
            .iter()
            .map(|p| rule(None, *kind, p, 0, p))
            .collect::<Vec<_>>();
        // Of several matching paths, the longest wins.
        let want = matches.then(|| {
            *paths
                .iter()
                .filter(|p| request.starts_with(p.trim_end_matches('/')))
                .max_by_key(|p| p.len())
                .expect("a matching path")
        });
        check(
            &format!("{kind:?} {paths:?}"),
            rules,
            &[("h", request, want)],
        );
    }
    check(
        "Mixed: /foo (Prefix), /foo (Exact) prefers Exact",
        vec![
            rule(None, Prefix, "/foo", 0, "prefix"),
            rule(None, Exact, "/foo", 1, "exact"),
        ],
        &[("h", "/foo", Some("exact")), ("h", "/foo/", Some("prefix"))],
    );
    check(
        "longest matching path first, then Exact over Prefix",
        vec![
            rule(None, Prefix, "/a/b/", 0, "prefix-ab"),
            rule(None, Exact, "/a/b", 1, "exact-ab"),
            rule(None, Exact, "/a", 2, "exact-a"),
            rule(None, Prefix, "/a", 3, "prefix-a"),
        ],
        &[
            ("h", "/a/b", Some("exact-ab")),
            ("h", "/a/b/c", Some("prefix-ab")),
            ("h", "/a", Some("exact-a")),
            ("h", "/a/c", Some("prefix-a")),
        ],
    );
}

#[test]
fn hostname_wildcards_cover_one_label() {
    check(
        "*.foo.com",
        vec![rule(Some("*.foo.com"), Prefix, "/", 0, "wild")],
        &[
            // Matches based on shared suffix.
            ("bar.foo.com", "/", Some("wild")),
            ("BAR.foo.com:8080", "/", Some("wild")),
            // No match, wildcard only covers a single DNS label.
            ("baz.bar.foo.com", "/", None),
            ("foo.com", "/", None),
            (".foo.com", "/", None),
        ],
    );
}

#[test]
fn the_most_specific_host_comes_first() {
    check(
        "host, then path; less specific hosts when nothing under the host matches",
        vec![
            rule(Some("foo.bar.com"), Prefix, "/", 0, "exact-root"),
            rule(Some("foo.bar.com"), Prefix, "/api", 1, "exact-api"),
            rule(Some("*.bar.com"), Prefix, "/v2", 2, "wild-v2"),
            rule(Some("*.bar.com"), Exact, "/only", 3, "wild-only"),
            rule(None, Prefix, "/v2/x", 4, "default-v2x"),
        ],
        &[
            ("foo.bar.com", "/v2/x", Some("exact-root")),
            ("foo.bar.com", "/api/1", Some("exact-api")),
            ("foo.bar.com", "/only", Some("exact-root")),
            ("baz.bar.com", "/v2/x", Some("wild-v2")),
            ("baz.bar.com", "/only", Some("wild-only")),
            ("baz.bar.com", "/", None),
            ("a.baz.bar.com", "/v2/x", Some("default-v2x")),
            ("other.com", "/v2/x", Some("default-v2x")),
        ],
    );
}
