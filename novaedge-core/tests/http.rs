//! Routing of plain HTTP through the engine: HTTP/1.1 and h2c clients on the same port reach the
//! backend that the Gateway API rules pick (host, path, method and header matches), and a
//! request nothing matches gets a 404.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use novaedge_echo::EchoServer;
use novaedge_snapshot::UpstreamProtocol::Http1;

/// One request and where it must end up.
struct Case {
    method: Method,
    host: &'static str,
    path: &'static str,
    header: Option<(&'static str, &'static str)>,
    /// The echo backend that must answer, or `None` for the proxy's 404.
    expect: Option<&'static str>,
}

const fn get(host: &'static str, path: &'static str, expect: Option<&'static str>) -> Case {
    Case {
        method: Method::GET,
        host,
        path,
        header: None,
        expect,
    }
}

const fn with(mut case: Case, name: &'static str, value: &'static str) -> Case {
    case.header = Some((name, value));
    case
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_method_and_header_over_http1_and_h2c() {
    let names = [
        "exact", "v2", "post", "canary", "api", "wild", "deep", "any",
    ];
    let mut servers: Vec<EchoServer> = Vec::new();
    for name in names {
        servers.push(echo(name).await);
    }
    let backends = servers
        .iter()
        .map(|s| backend(s.name(), Http1, &[s]))
        .collect();
    let post = novaedge_snapshot::RouteMatch {
        method: Some(Method::POST),
        ..exact("/submit")
    };
    let routes = vec![
        route(
            "default/api",
            "web",
            &["api.example.com"],
            vec![
                rule(vec![exact("/exact")], &[("exact", 1)]),
                rule(vec![prefix("/v2")], &[("v2", 1)]),
                rule(vec![post], &[("post", 1)]),
                rule(
                    vec![with_header(prefix("/"), "x-canary", "yes")],
                    &[("canary", 1)],
                ),
                to("api"),
            ],
        ),
        route("default/wild", "web", &["*.example.com"], vec![to("wild")]),
        route(
            "default/deep",
            "web",
            &["*.deep.example.com"],
            vec![to("deep")],
        ),
        // No hostnames: serves every host, but only under /public.
        route(
            "default/any",
            "web",
            &[],
            vec![rule(vec![prefix("/public")], &[("any", 1)])],
        ),
    ];
    let engine = engine();
    engine
        .apply(&snapshot(1, vec![listener("web")], routes, backends))
        .expect("snapshot applies");
    let addr = engine.local_addr("web").expect("listener is bound");

    let cases = [
        // Exact path, and the port of the Host does not matter.
        get("api.example.com", "/exact", Some("exact")),
        get("api.example.com:8080", "/exact", Some("exact")),
        get("api.example.com", "/exact/", Some("api")),
        get("api.example.com", "/exactly", Some("api")),
        // Segment-wise prefix.
        get("api.example.com", "/v2", Some("v2")),
        get("api.example.com", "/v2/", Some("v2")),
        get("api.example.com", "/v2/users?page=2", Some("v2")),
        get("api.example.com", "/v2x", Some("api")),
        get("api.example.com", "/v1/v2", Some("api")),
        // Method.
        Case {
            method: Method::POST,
            ..get("api.example.com", "/submit", Some("post"))
        },
        get("api.example.com", "/submit", Some("api")),
        // Header match; a longer prefix still wins over a header condition.
        with(
            get("api.example.com", "/v1", Some("canary")),
            "x-canary",
            "yes",
        ),
        with(get("api.example.com", "/v1", Some("api")), "x-canary", "no"),
        with(
            get("api.example.com", "/v2/x", Some("v2")),
            "x-canary",
            "yes",
        ),
        // Host names are case-insensitive.
        get("API.Example.COM", "/v2", Some("v2")),
        // Wildcards: one or more labels, the longest suffix first, never the bare suffix.
        get("shop.example.com", "/", Some("wild")),
        get("a.b.example.com", "/anything", Some("wild")),
        get("x.deep.example.com", "/", Some("deep")),
        get("deep.example.com", "/", Some("wild")),
        get("example.com", "/public/index.html", Some("any")),
        get("example.com", "/", None),
        // The route without hostnames catches other hosts...
        get("other.test", "/public", Some("any")),
        get("127.0.0.1", "/public/x", Some("any")),
        // ...but only on its own paths.
        get("other.test", "/publicity", None),
        get("other.test", "/private", None),
        // Rules of every route serving a host compete on their matches (Gateway API conformance
        // HTTPRouteMatchingAcrossRoutes): the any-host route's longer prefix beats api's "/".
        get("api.example.com", "/public", Some("any")),
    ];

    for proto in BOTH {
        // Every case on one connection: HTTP/1.1 keep-alive or one HTTP/2 connection.
        let mut client = Client::connect(proto, addr).await;
        for case in &cases {
            let mut req = client.request(case.method.clone(), case.host, case.path);
            if let Some((name, value)) = case.header {
                req = req.header(name, value);
            }
            let response = client
                .send(req.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap_or_else(|e| panic!("{proto:?} {} {}: {e}", case.host, case.path));
            let what = format!("{proto:?} {} {}{}", case.method, case.host, case.path);
            match case.expect {
                Some(name) => {
                    let info = info(&response);
                    assert_eq!(info.name, name, "{what}");
                    assert_eq!(echo_name(&response), name, "{what}");
                    assert_eq!(info.method, case.method.as_str(), "{what}");
                    let (path, query) = match case.path.split_once('?') {
                        Some((path, query)) => (path, Some(query)),
                        None => (case.path, None),
                    };
                    assert_eq!(info.path, path, "{what}");
                    assert_eq!(info.query.as_deref(), query, "{what}");
                    assert_eq!(info.host.as_deref(), Some(case.host), "{what}");
                    // The backends speak HTTP/1.1, whatever the client spoke.
                    assert_eq!(info.version, "HTTP/1.1", "{what}");
                }
                None => {
                    assert_eq!(response.status(), StatusCode::NOT_FOUND, "{what}");
                    assert_eq!(body_text(&response), "no route\n", "{what}");
                    assert_eq!(
                        response.headers()[header::CONTENT_TYPE],
                        "text/plain; charset=utf-8",
                        "{what}"
                    );
                    assert!(
                        response.headers().get(novaedge_echo::NAME_HEADER).is_none(),
                        "{what}: a 404 of the proxy must not come from a backend"
                    );
                }
            }
        }
        assert!(client.is_open(), "{proto:?}: connection was closed");
    }

    // Unmatched requests never reached a backend; every matched one reached exactly one.
    let routed = cases.iter().filter(|c| c.expect.is_some()).count() as u64;
    let served: u64 = servers.iter().map(EchoServer::requests).sum();
    assert_eq!(served, 2 * routed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_have_their_own_routes() {
    let a = echo("a").await;
    let b = echo("b").await;
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("one"), listener("two")],
            vec![
                route("default/one", "one", &[], vec![to("a")]),
                route("default/two", "two", &["only.test"], vec![to("b")]),
            ],
            vec![backend("a", Http1, &[&a]), backend("b", Http1, &[&b])],
        ))
        .expect("snapshot applies");
    let one = engine.local_addr("one").expect("listener one");
    let two = engine.local_addr("two").expect("listener two");
    assert_ne!(one, two);

    for proto in BOTH {
        let mut client = Client::connect(proto, one).await;
        assert_eq!(info(&client.get("only.test", "/").await).name, "a");
        let mut client = Client::connect(proto, two).await;
        assert_eq!(info(&client.get("only.test", "/").await).name, "b");
        let response = client.get("else.test", "/").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
