//! Route rule filters through the engine: the echo backend reports the request it got.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use novaedge_snapshot::{
    Cors, HeaderModifier, IpFilter, JwtAuthentication, JwtKeys, PathModifier, RateLimit,
    RateLimitKey, RequestMirror, RequestRedirect, RetryPolicy, RouteFilters, RouteRule, Timeouts,
    UpstreamProtocol, UrlRewrite,
};

fn with_filters(mut rule: RouteRule, filters: RouteFilters) -> RouteRule {
    rule.filters = filters.into();
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

const HMAC_SECRET: &[u8] = b"a test secret of thirty-two bytes!";

fn token(claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(HMAC_SECRET),
    )
    .unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// JWT, CORS and IP filters through the engine, with the order the filters crate documents:
/// IP first, then CORS (a preflight needs no token), then JWT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_policies_guard_their_routes() {
    let app = echo("app").await;
    let jwks = serde_json::json!({"keys": [{
        "kty": "oct", "kid": "k1", "alg": "HS256", "k": base64url(HMAC_SECRET),
    }]})
    .to_string();
    let engine = engine();
    let rules = vec![
        with_filters(
            rule(vec![prefix("/api")], &[("app", 1)]),
            RouteFilters {
                cors: Some(Cors {
                    allow_origins: vec!["https://*.example.com".into()],
                    allow_methods: vec!["PUT".into()],
                    allow_headers: vec!["authorization".into()],
                    expose_headers: vec![],
                    allow_credentials: true,
                    max_age: std::time::Duration::from_secs(60),
                }),
                jwt: Some(JwtAuthentication {
                    keys: JwtKeys::Inline(jwks),
                    jwks_ca_pem: String::new(),
                    refresh: std::time::Duration::from_secs(600),
                    max_stale: std::time::Duration::from_secs(3600),
                    issuers: vec!["https://issuer.test".into()],
                    audiences: vec!["api".into()],
                    algorithms: vec![],
                    clock_skew: std::time::Duration::from_secs(60),
                    required_claims: vec!["exp".into()],
                    locations: vec![],
                    forward_claims: vec![("sub".into(), "x-user".into())],
                    remove_token: true,
                    allow_missing: false,
                }),
                ..RouteFilters::default()
            },
        ),
        with_filters(
            rule(vec![prefix("/internal")], &[("app", 1)]),
            RouteFilters {
                ip_filter: Some(IpFilter {
                    deny: vec!["127.0.0.0/8".into()],
                    ..IpFilter::default()
                }),
                ..RouteFilters::default()
            },
        ),
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
    let good = token(serde_json::json!({
        "iss": "https://issuer.test", "aud": "api", "sub": "alice", "exp": 4_102_444_800u64,
    }));
    let expired = token(serde_json::json!({
        "iss": "https://issuer.test", "aud": "api", "sub": "alice", "exp": 1_000_000_000u64,
    }));

    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        // No token: 401 with a challenge, and the backend never sees it.
        let response = client.get("app.test", "/api/items").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{proto:?}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );

        let send = |token: &str, client: &Client| {
            client
                .request(Method::GET, "app.test", "/api/items")
                .header("authorization", format!("Bearer {token}"))
                .header("x-user", "mallory")
                .body(Full::default())
                .unwrap()
        };
        let response = client.send(send(&expired, &client)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{proto:?}");

        // A good token: the claim is forwarded (the client's spoofed copy replaced), the token
        // removed.
        let response = client.send(send(&good, &client)).await.unwrap();
        let seen = info(&response);
        assert_eq!(seen.header("x-user"), Some("alice"), "{proto:?}");
        assert_eq!(seen.header("authorization"), None, "{proto:?}");

        // A CORS preflight is answered before authentication.
        let preflight = client
            .request(Method::OPTIONS, "app.test", "/api/items")
            .header("origin", "https://shop.example.com")
            .header("access-control-request-method", "PUT")
            .body(Full::default())
            .unwrap();
        let response = client.send(preflight).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{proto:?}");
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://shop.example.com"
        );
        assert_eq!(
            response.headers()["access-control-allow-credentials"],
            "true"
        );

        // The IP filter refuses loopback clients on /internal.
        let response = client.get("app.test", "/internal/metrics").await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{proto:?}");
    }
    assert_eq!(
        app.requests(),
        2,
        "only the two authenticated requests got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_past_the_burst() {
    let app = echo("app").await;
    let limited = with_filters(
        rule(vec![prefix("/")], &[("app", 1)]),
        RouteFilters {
            rate_limit: Some(RateLimit {
                requests: 2,
                period: std::time::Duration::from_secs(60),
                burst: 2,
                key: RateLimitKey::ClientIp { ipv6_prefix: 64 },
            }),
            ..RouteFilters::default()
        },
    );
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/r", "web", &[], vec![limited.clone()])],
            vec![backend("app", UpstreamProtocol::Http1, &[&app])],
        ))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    let mut client = Client::connect(Proto::H2c, addr).await;
    for _ in 0..2 {
        let response = client.get("app.test", "/").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["ratelimit-limit"], "2");
    }
    let response = client.get("app.test", "/").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(app.requests(), 2);

    // A reload that keeps the limit keeps its buckets: no fresh burst.
    let mut rules = vec![
        limited.clone(),
        with_filters(
            rule(vec![prefix("/other")], &[("app", 1)]),
            RouteFilters::default(),
        ),
    ];
    let reload = |version, rules: Vec<RouteRule>| {
        snapshot(
            version,
            vec![listener("web")],
            vec![route("default/r", "web", &[], rules)],
            vec![backend("app", UpstreamProtocol::Http1, &[&app])],
        )
    };
    engine.apply(&reload(2, rules.clone())).unwrap();
    assert_eq!(
        client.get("app.test", "/").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A changed limit starts over.
    rules[0].filters.rate_limit.as_mut().unwrap().burst = 3;
    engine.apply(&reload(3, rules)).unwrap();
    assert_eq!(client.get("app.test", "/").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_answers_504_and_fast_requests_pass() {
    let app = echo("app").await;
    let timed = with_filters(
        to("app"),
        RouteFilters {
            timeouts: Timeouts {
                request: Some(std::time::Duration::from_millis(300)),
                backend_request: None,
            },
            ..RouteFilters::default()
        },
    );
    let (engine, addr) = serve_rules(&app, vec![timed]);
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        assert_eq!(
            client.get("app.test", "/?delay_ms=10").await.status(),
            StatusCode::OK
        );
        let started = std::time::Instant::now();
        let response = client.get("app.test", "/?delay_ms=5000").await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "{proto:?}");
        // Answered at the deadline, long before the backend would have.
        assert!(started.elapsed() < std::time::Duration::from_secs(4));
    }
    drop(engine);
}

/// An upstream that answers 503 to every other request, and 200 with the attempt header it saw
/// otherwise.
async fn flaky_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let attempt = req
                        .headers()
                        .get("x-novaedge-retry-attempt")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    async move {
                        let status = if n.is_multiple_of(2) { 503 } else { 200 };
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .status(status)
                                .header("x-attempt", attempt)
                                .body(Full::new(Bytes::from_static(b"x")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_turn_a_503_into_the_next_try_s_answer() {
    let (upstream, seen) = flaky_backend().await;
    let retried = with_filters(
        to("app"),
        RouteFilters {
            retry: Some(RetryPolicy::new(3)),
            ..RouteFilters::default()
        },
    );
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/r", "web", &[], vec![retried])],
            vec![backend_at(
                "app",
                UpstreamProtocol::Http1,
                vec![endpoint(upstream)],
            )],
        ))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    for proto in BOTH {
        let mut client = Client::connect(proto, addr).await;
        let before = seen.load(Ordering::SeqCst);
        let response = client.get("app.test", "/").await;
        assert_eq!(response.status(), StatusCode::OK, "{proto:?}");
        assert_eq!(response.headers()["x-attempt"], "1", "{proto:?}");
        assert_eq!(seen.load(Ordering::SeqCst) - before, 2);
        // A POST is not idempotent: its 503 comes back as it is.
        let post = client
            .request(Method::POST, "app.test", "/")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let response = client.send(post).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{proto:?}"
        );
        // Realign the flaky backend (a 200 turn) for the next protocol.
        assert_eq!(client.get("app.test", "/").await.status(), StatusCode::OK);
    }
}

fn serve_rules(
    app: &novaedge_echo::EchoServer,
    rules: Vec<RouteRule>,
) -> (novaedge_core::Engine, SocketAddr) {
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/r", "web", &[], rules)],
            vec![backend("app", UpstreamProtocol::Http1, &[app])],
        ))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    (engine, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_reach_the_shadow_backend_and_never_the_client() {
    let (app, shadow, half) = (echo("app").await, echo("shadow").await, echo("half").await);
    let mirrored = with_filters(
        to("app"),
        RouteFilters {
            request_headers: Some(HeaderModifier {
                set: pairs(&[("x-env", "prod")]),
                ..HeaderModifier::default()
            }),
            mirrors: vec![
                RequestMirror {
                    backend: "shadow".into(),
                    fraction_ppm: 1_000_000,
                },
                // A second mirror gets its own copies.
                RequestMirror {
                    backend: "half".into(),
                    fraction_ppm: 1_000_000,
                },
            ],
            ..RouteFilters::default()
        },
    );
    let engine = engine();
    engine
        .apply(&snapshot(
            1,
            vec![listener("web")],
            vec![route("default/r", "web", &[], vec![mirrored])],
            vec![
                backend("app", UpstreamProtocol::Http1, &[&app]),
                backend("shadow", UpstreamProtocol::Http1, &[&shadow]),
                backend("half", UpstreamProtocol::Http1, &[&half]),
            ],
        ))
        .unwrap();
    let addr = engine.local_addr("web").unwrap();
    let mut client = Client::connect(Proto::Http1, addr).await;
    for i in 0..5 {
        let post = client
            .request(Method::POST, "app.test", &format!("/items/{i}"))
            .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
            .unwrap();
        let response = client.send(post).await.unwrap();
        assert_eq!(echo_name(&response), "app");
        assert_eq!(info(&response).body_len, 7);
    }
    // Copies are sent after the primary, fire and forget: wait for them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while shadow.requests() < 5 || half.requests() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "mirrors never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!((app.requests(), shadow.requests()), (5, 5));
    assert_eq!(half.requests(), 5);
}
