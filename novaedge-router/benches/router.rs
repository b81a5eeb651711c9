//! Lookup time against tables of 10, 1,000 and 10,000 routes.
//!
//! The tables mix what a real cluster has: many exact hosts with ten routes
//! each (exact paths, prefixes, a few regular expressions; some requiring a
//! header, a query parameter or a method), a few wildcard hosts, and routes
//! for any host. Each request kind exercises a different path through
//! `Router::find`; `resolve` adds path normalisation and reading the
//! `http::Request`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, Method};
use novaedge_router::{
    Dialect, EncodedSlashes, HeaderMatch, PathMatch, QueryParamMatch, Route, RouteMatch, Router,
    normalize_path,
};

/// Routes per exact host; the rest of a table is spread over hosts.
const ROUTES_PER_HOST: usize = 10;

fn table(size: usize) -> Vec<Route<usize>> {
    let hosts = (size / ROUTES_PER_HOST).max(1);
    (0..size)
        .map(|i| {
            let host = i % hosts;
            let slot = i / hosts;
            let hostnames = match i % 50 {
                // 2% wildcards, 2% any host, the rest exact.
                0 => vec![format!("*.zone{}.example.com", host % 100)],
                1 => Vec::new(),
                _ => vec![format!("svc{host}.example.com")],
            };
            let path = if i % 100 == 7 {
                // 1% regular expressions.
                PathMatch::RegularExpression(format!("/api/v{slot}/items/[0-9]+"))
            } else if slot.is_multiple_of(3) {
                PathMatch::Exact(format!("/api/v{slot}/health"))
            } else {
                PathMatch::Prefix(format!("/api/v{slot}/"))
            };
            let headers = if slot % 4 == 1 {
                vec![HeaderMatch::exact(
                    HeaderName::from_static("x-canary"),
                    "true",
                )]
            } else {
                Vec::new()
            };
            let query_params = if slot % 7 == 3 {
                vec![QueryParamMatch::exact("debug", "1")]
            } else {
                Vec::new()
            };
            let method = (slot % 5 == 2).then_some(Method::POST);
            Route {
                hostnames,
                route_match: RouteMatch {
                    path,
                    method,
                    headers,
                    query_params,
                },
                rank: i as u64,
                target: i,
                dialect: Dialect::GatewayApi,
            }
        })
        .collect()
}

struct Request {
    name: &'static str,
    host: String,
    path: &'static str,
    method: Method,
    headers: HeaderMap,
    /// Checked once before timing, so each case measures the lookup it is
    /// named after.
    should_match: bool,
}

fn requests(size: usize) -> Vec<Request> {
    let hosts = (size / ROUTES_PER_HOST).max(1);
    let last = hosts - 1;
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", "true".parse().expect("static value"));
    canary.insert("user-agent", "bench/1.0".parse().expect("static value"));
    vec![
        Request {
            name: "exact_host",
            host: format!("svc{last}.example.com"),
            path: "/api/v4/users/42",
            method: Method::GET,
            headers: HeaderMap::new(),
            should_match: true,
        },
        Request {
            name: "exact_host_header_port",
            host: format!("svc{last}.example.com:8443"),
            path: "/api/v1/items",
            method: Method::GET,
            headers: canary,
            should_match: true,
        },
        Request {
            name: "uppercase_host",
            host: format!("SVC{last}.Example.com"),
            path: "/api/v4/users/42",
            method: Method::GET,
            headers: HeaderMap::new(),
            should_match: true,
        },
        Request {
            name: "wildcard",
            host: "deep.name.zone0.example.com".to_owned(),
            path: "/api/v0/health",
            method: Method::GET,
            headers: HeaderMap::new(),
            should_match: true,
        },
        // The worst case: the host's bucket and then every any-host route
        // are walked without a match.
        Request {
            name: "no_match",
            host: format!("svc{last}.example.com"),
            path: "/nothing/here",
            method: Method::GET,
            headers: HeaderMap::new(),
            should_match: false,
        },
    ]
}

fn find(c: &mut Criterion) {
    for size in [10, 1_000, 10_000] {
        let router = Router::new(table(size)).expect("bench routes are valid");
        let mut group = c.benchmark_group(format!("find/{size}_routes"));
        for req in requests(size) {
            let found = router.find(&req.host, req.path, &req.method, &req.headers);
            assert_eq!(
                found.is_some(),
                req.should_match,
                "{} with {size} routes",
                req.name
            );
            group.bench_with_input(BenchmarkId::from_parameter(req.name), &req, |b, req| {
                b.iter(|| {
                    router.find(
                        black_box(&req.host),
                        black_box(req.path),
                        black_box(&req.method),
                        black_box(&req.headers),
                    )
                })
            });
        }
        group.finish();
    }
}

fn resolve(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolve");
    for size in [10, 1_000, 10_000] {
        let router = Router::new(table(size)).expect("bench routes are valid");
        let host = format!("svc{}.example.com", (size / ROUTES_PER_HOST).max(1) - 1);
        let request = http::Request::get("/api/v4//users/./42?page=2")
            .header("host", host)
            .header("user-agent", "bench/1.0")
            .body(())
            .expect("valid request");
        assert!(
            router.find_request(&request).is_some(),
            "resolve with {size} routes"
        );
        group.bench_with_input(BenchmarkId::from_parameter(size), &request, |b, request| {
            b.iter(|| {
                router
                    .resolve(black_box(request))
                    .map(|r| r.target.is_some())
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("normalize_path");
    for (name, path) in [
        ("canonical", "/api/v4/users/42/profile"),
        ("dirty", "/api/v4//users/./x/../42/%7Eprofile"),
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(name), path, |b, path| {
            b.iter(|| normalize_path(black_box(path), EncodedSlashes::Reject).map(|p| p.len()))
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("new");
    for size in [10, 1_000, 10_000] {
        let routes = table(size);
        group.bench_with_input(BenchmarkId::from_parameter(size), &routes, |b, routes| {
            b.iter(|| Router::new(black_box(routes.clone())).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, find, resolve, build);
criterion_main!(benches);
