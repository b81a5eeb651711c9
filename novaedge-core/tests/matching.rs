//! Match types beyond host and prefix, end to end through the proxy: regular-expression paths,
//! header and query parameter matches, and request path normalisation (what is routed is what
//! is forwarded; a path that cannot be normalised safely is a 400).

mod common;

use common::*;
use http::{HeaderName, Method, StatusCode};
use http_body_util::Full;
use novaedge_snapshot::{
    HeaderMatch, MatchType, PathMatch, QueryParamMatch, RouteMatch, UpstreamProtocol::Http1,
};

fn regex_path(pattern: &str) -> RouteMatch {
    RouteMatch {
        path: PathMatch::RegularExpression(pattern.to_owned()),
        ..RouteMatch::default()
    }
}

fn header(m: RouteMatch, name: &'static str, value: &str, kind: MatchType) -> RouteMatch {
    let mut m = m;
    m.headers.push(HeaderMatch {
        name: HeaderName::from_static(name),
        value: value.to_owned(),
        kind,
    });
    m
}

fn query(m: RouteMatch, name: &str, value: &str, kind: MatchType) -> RouteMatch {
    let mut m = m;
    m.query_params.push(QueryParamMatch {
        name: name.to_owned(),
        value: value.to_owned(),
        kind,
    });
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_header_and_query_matches_and_path_normalisation() {
    let names = ["regex", "hdr", "qexact", "qregex", "api"];
    let mut servers = Vec::new();
    for name in names {
        servers.push(echo(name).await);
    }
    let backends = servers
        .iter()
        .map(|s| backend(s.name(), Http1, &[s]))
        .collect();
    use MatchType::{Exact, RegularExpression as Re};
    let routes = vec![route(
        "default/api",
        "web",
        &["api.example.com"],
        vec![
            rule(vec![regex_path("/users/[0-9]+")], &[("regex", 1)]),
            rule(
                vec![header(prefix("/h"), "x-version", "v[23]", Re)],
                &[("hdr", 1)],
            ),
            rule(
                vec![query(prefix("/q"), "env", "canary", Exact)],
                &[("qexact", 1)],
            ),
            rule(
                vec![query(prefix("/q"), "tier", "gold|platinum", Re)],
                &[("qregex", 1)],
            ),
            to("api"),
        ],
    )];
    let engine = engine();
    engine
        .apply(&snapshot(1, vec![listener("web")], routes, backends))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").unwrap();

    // (path, extra header, backend, path the backend sees)
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: &[Case<'_>] = &[
        ("/users/42", None, "regex", "/users/42"),
        ("/users/abc", None, "api", "/users/abc"),
        // A regular expression matches the whole path, not a part of it.
        ("/users/42/orders", None, "api", "/users/42/orders"),
        ("/h", Some(("x-version", "v2")), "hdr", "/h"),
        ("/h", Some(("x-version", "v4")), "api", "/h"),
        ("/h", Some(("x-version", "v22")), "api", "/h"),
        ("/q?env=canary", None, "qexact", "/q"),
        ("/q?env=prod", None, "api", "/q"),
        // Query values are compared percent-decoded.
        ("/q?env=%63anary", None, "qexact", "/q"),
        ("/q?tier=gold", None, "qregex", "/q"),
        ("/q?tier=golden", None, "api", "/q"),
        // Normalised before matching, and forwarded normalised.
        ("/users/7/../42", None, "regex", "/users/42"),
        ("/a/./b//c", None, "api", "/a/b/c"),
        ("/%75sers/9", None, "regex", "/users/9"),
    ];
    let rejected = [
        "/../etc/passwd",
        "/a/%2e%2e/%2e%2e/x",
        "/a%2Fb",
        "/a%00b",
        "/a%zz",
    ];

    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        for (path, extra, want, seen_path) in cases {
            let mut req = client.request(Method::GET, "api.example.com", path);
            if let Some((name, value)) = extra {
                req = req.header(*name, *value);
            }
            let response = client
                .send(req.body(Full::default()).unwrap())
                .await
                .unwrap();
            let info = info(&response);
            assert_eq!(info.name, *want, "{proto:?} {path} {extra:?}");
            assert_eq!(info.path, *seen_path, "{proto:?} {path}");
        }
        for path in rejected {
            let response = client.get("api.example.com", path).await;
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{proto:?} {path}"
            );
            assert_eq!(body_text(&response), "bad request path\n");
        }
        // A rejected path costs the client nothing more: the connection keeps serving.
        let response = client.get("api.example.com", "/users/1").await;
        assert_eq!(info(&response).name, "regex");
        assert!(client.is_open());
    }
    // Nothing rejected reached a backend: 14 cases + 1 check request per protocol.
    let served: u64 = servers.iter().map(|s| s.requests()).sum();
    assert_eq!(served, 2 * (cases.len() as u64 + 1));
}
