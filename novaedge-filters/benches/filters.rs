//! Per-request cost of a route's filters: a stack of JWT (HS256, inline JWKS), rate limit (keyed
//! by client IP, never reached) and a request header modifier, against the same inner service
//! with no filters, and each filter alone. The inner service answers at once, so what is
//! measured is the filters' own work plus a `block_on` that every variant pays alike; compare
//! the differences and ratios, not absolute numbers, on a shared machine.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use novaedge_filters::ClientAddr;
use novaedge_filters::headers::{HeaderModifier, RequestHeaderModifierLayer};
use novaedge_filters::jwt::{JwtConfig, JwtLayer, KeySource};
use novaedge_filters::ratelimit::{RateLimitConfig, RateLimitLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const SECRET: &[u8] = b"a bench secret of thirty-two bytes";

fn token() -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    let claims = serde_json::json!({"sub": "alice", "aud": "api", "exp": 4_102_444_800u64});
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn jwt() -> JwtLayer {
    let mut config = JwtConfig::new(KeySource::HmacSecret(SECRET.to_vec()));
    config.audiences = vec!["api".into()];
    config.forward_claims = vec![novaedge_filters::jwt::ClaimToHeader::new(
        "sub",
        http::HeaderName::from_static("x-user"),
    )];
    JwtLayer::new(config).unwrap()
}

fn rate_limit() -> RateLimitLayer {
    // Far above what the bench sends: every request is allowed and the limiter does its
    // whole check.
    RateLimitLayer::new(RateLimitConfig::new(1_000_000_000, Duration::from_secs(1))).unwrap()
}

fn headers() -> RequestHeaderModifierLayer {
    RequestHeaderModifierLayer::new(
        HeaderModifier::new([("x-env", "prod")], [("x-trace", "bench")], ["x-debug"]).unwrap(),
    )
}

fn request(token: &str) -> Request<()> {
    let mut req = Request::builder()
        .uri("/api/items?page=2")
        .header("host", "app.example")
        .header("authorization", format!("Bearer {token}"))
        .header("x-debug", "1")
        .body(())
        .unwrap();
    let peer: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    req.extensions_mut().insert(ClientAddr(peer));
    req
}

fn inner() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|req: Request<()>| async move {
        black_box(&req);
        Ok::<_, Infallible>(Response::new(()))
    })
}

fn run<S>(c: &mut Criterion, name: &str, service: S)
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = token();
    // Warm the key store and the limiter's bucket once.
    let warm = rt
        .block_on(service.clone().oneshot(request(&token)))
        .unwrap();
    assert_eq!(warm.status(), 200, "{name}: the bench request must pass");
    c.bench_function(name, |b| {
        b.iter(|| {
            let response = rt
                .block_on(service.clone().oneshot(request(&token)))
                .unwrap();
            black_box(response)
        })
    });
}

fn filters(c: &mut Criterion) {
    run(c, "none", inner());
    run(c, "headers", headers().layer(inner()));
    run(c, "rate_limit", rate_limit().layer(inner()));
    run(c, "jwt", jwt().layer(inner()));
    run(
        c,
        "jwt+rate_limit+headers",
        ServiceBuilder::new()
            .layer(jwt())
            .layer(rate_limit())
            .layer(headers())
            .service(inner()),
    );
}

criterion_group!(benches, filters);
criterion_main!(benches);
