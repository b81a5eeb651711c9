//! Route rule filters through the engine: the echo backend reports the request it got.

mod common;

use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use novaedge_snapshot::{
    HeaderModifier, PathModifier, RequestRedirect, RouteFilters, RouteRule, UpstreamProtocol,
    UrlRewrite,
};

fn with_filters(mut rule: RouteRule, filters: RouteFilters) -> RouteRule {
    rule.filters = filters;
    rule
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_modifiers_and_rewrites_reach_the_backend_on_both_protocols() {
    let app = echo("app").await;
    let engine = engine();
    let rules = vec![
        with_filters(
            rule(vec![prefix("/api/v1")], &[("app", 1)]),
            RouteFilters {
                request_headers: Some(HeaderModifier {
                    set: pairs(&[("x-env", "prod")]),
                    add: pairs(&[("x-trace", "proxy")]),
                    remove: vec!["x-debug".into()],
                }),
                response_headers: Some(HeaderModifier {
                    set: pairs(&[("x-served-by", "novaedge")]),
                    remove: vec!["x-echo-name".into()],
                    ..HeaderModifier::default()
                }),
                url_rewrite: Some(UrlRewrite {
                    hostname: Some("internal.example".into()),
                    path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
                }),
                redirect: None,
                ..RouteFilters::default()
            },
        ),
        with_filters(
            rule(vec![exact("/old")], &[("app", 1)]),
            RouteFilters {
                url_rewrite: Some(UrlRewrite {
                    hostname: None,
                    path: Some(PathModifier::ReplaceFullPath("/new/place".into())),
                }),
                ..RouteFilters::default()
            },
        ),
        // No filters: the request goes as it is.
        to("app"),
    ];
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/r", "web", &[], rules)],
            vec![backend("app", UpstreamProtocol::Http1, &[&app])],
        ))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();

    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        let req = client
            .request(Method::GET, "www.example", "/api/v1/users?page=2")
            .header("x-env", "dev")
            .header("x-trace", "client")
            .header("x-debug", "1")
            .body(Full::default())
            .unwrap();
        let response = client.send(req).await.unwrap();
        assert_eq!(response.headers()["x-served-by"], "novaedge", "{proto:?}");
        assert!(response.headers().get("x-echo-name").is_none(), "{proto:?}");
        let seen = info(&response);
        assert_eq!(seen.path, "/v2/users", "{proto:?}");
        assert_eq!(seen.query.as_deref(), Some("page=2"), "{proto:?}");
        assert_eq!(seen.host.as_deref(), Some("internal.example"), "{proto:?}");
        assert_eq!(seen.header("x-env"), Some("prod"), "{proto:?}");
        assert_eq!(seen.header("x-trace"), Some("client,proxy"), "{proto:?}");
        assert_eq!(seen.header("x-debug"), None, "{proto:?}");
        // X-Forwarded-Host is the host the client asked for, not the rewritten one.
        assert_eq!(
            seen.header("x-forwarded-host"),
            Some("www.example"),
            "{proto:?}"
        );

        let seen = info(&client.get("www.example", "/old?x=1").await);
        assert_eq!(
            (seen.path.as_str(), seen.query.as_deref()),
            ("/new/place", Some("x=1"))
        );

        let plain = client.get("www.example", "/other").await;
        assert_eq!(echo_name(&plain), "app");
        let seen = info(&plain);
        assert_eq!(seen.path, "/other");
        assert_eq!(seen.host.as_deref(), Some("www.example"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_answer_without_a_backend_and_follow_the_port_rules() {
    let app = echo("app").await;
    let engine = engine();
    let port = free_port();
    let rules = vec![
        // Scheme change: the scheme's own port, left out of the Location.
        with_filters(
            RouteRule {
                backends: Vec::new(),
                ..rule(vec![prefix("/secure")], &[])
            },
            RouteFilters {
                redirect: Some(RequestRedirect {
                    scheme: Some("https".into()),
                    status_code: 301,
                    ..RequestRedirect::default()
                }),
                ..RouteFilters::default()
            },
        ),
        // No scheme, new host: the listener's port is kept.
        with_filters(
            rule(vec![prefix("/moved")], &[("app", 1)]),
            RouteFilters {
                redirect: Some(RequestRedirect {
                    hostname: Some("new.example".into()),
                    path: Some(PathModifier::ReplacePrefixMatch("/here".into())),
                    ..RequestRedirect::default()
                }),
                ..RouteFilters::default()
            },
        ),
    ];
    engine
        .apply(&snapshot(
            1,
            vec![listener_on("web", port)],
            vec![route("default/r", "web", &[], rules)],
            vec![backend("app", UpstreamProtocol::Http1, &[&app])],
        ))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        let response = client.get("shop.example", "/secure/login?next=1").await;
        assert_eq!(
            response.status(),
            StatusCode::MOVED_PERMANENTLY,
            "{proto:?}"
        );
        assert_eq!(
            response.headers()["location"],
            "https://shop.example/secure/login?next=1",
            "{proto:?}"
        );
        let response = client.get("shop.example", "/moved/page").await;
        assert_eq!(response.status(), StatusCode::FOUND, "{proto:?}");
        assert_eq!(
            response.headers()["location"],
            format!("http://new.example:{port}/here/page"),
            "{proto:?}"
        );
    }
    assert_eq!(app.requests(), 0, "a redirect reached the backend");
}
