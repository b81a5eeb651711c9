//! Differential fuzzing of the router: random route sets and requests, the
//! indexed `Router` against the linear `reference::LinearRouter`. They must
//! accept and refuse the same route sets and pick the same route for every
//! request.
//!
//! Hosts, path segments, headers and query parameters come from small pools
//! that overlap (so that many routes compete for a request), mixed with raw
//! bytes (so that odd inputs are covered too). Regular expressions are
//! assembled from atoms, many of them invalid, which also exercises the
//! literal-prefix shortcut the index takes before running a regex.

#![no_main]

use http::{HeaderMap, HeaderName, Method};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use novaedge_router::reference::LinearRouter;
use novaedge_router::{
    Dialect, EncodedSlashes, GrpcMethodMatch, HeaderMatch, MatchType, PathMatch, QueryParamMatch,
    RequestParts, Route, RouteMatch, Router, normalize_path,
};

const HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "x.a.example.com",
    "example.com",
    "*.example.com",
    "*.a.example.com",
    "*.com",
    "other.org",
];
const SEGMENTS: &[&str] = &[
    "", "a", "b", "api", "v1", ".", "..", "%2e", "%2F", "pkg.Svc", "Get", "a;x",
];
const REGEX_ATOMS: &[&str] = &[
    "/", "a", "b", "api", ".", "*", "?", "+", "|", "(", ")", "[0-9]", "^", "$", "\\.", "{2}",
    "{0,1}", "(?i)", "é",
];
const SERVICES: &[&str] = &["pkg.Svc", "a", "pkg.Other", "pkg\\..*", ".*"];
const METHODS_GRPC: &[&str] = &["Get", "Put", "G.*"];
const HEADER_NAMES: &[&str] = &["x-a", "x-b"];
const VALUES: &[&str] = &["1", "2", "1|2", "%31", ".*", "", "a b"];
const QUERY_NAMES: &[&str] = &["q", "r", "%71"];
const HTTP_METHODS: &[Method] = &[Method::GET, Method::POST, Method::PUT];

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<RouteIn>,
    requests: Vec<RequestIn>,
}

#[derive(Arbitrary, Debug)]
enum Text {
    Pool(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct RouteIn {
    hostnames: Vec<Text>,
    path: PathIn,
    method: Option<u8>,
    headers: Vec<(u8, u8, bool)>,
    query: Vec<(u8, u8, bool)>,
    rank: u8,
    ingress: bool,
}

#[derive(Arbitrary, Debug)]
enum PathIn {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Regex(Vec<u8>),
    Raw(String),
    Grpc {
        service: Option<u8>,
        method: Option<u8>,
        regex: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct RequestIn {
    host: Text,
    uppercase: bool,
    port: Option<u16>,
    path: PathText,
    method: u8,
    headers: Vec<(u8, u8)>,
    query: Vec<(u8, u8)>,
}

#[derive(Arbitrary, Debug)]
enum PathText {
    Segments(Vec<u8>),
    /// Characters the regex atoms use, with no segment structure.
    Chars(Vec<u8>),
    Raw(String),
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[usize::from(i) % pool.len()]
}

fn text(t: &Text, pool: &[&str]) -> String {
    match t {
        Text::Pool(i) => pick(pool, *i).to_owned(),
        Text::Raw(s) => s.clone(),
    }
}

fn segments(picks: &[u8]) -> String {
    let mut path = String::new();
    for &i in picks.iter().take(12) {
        path.push('/');
        path.push_str(pick(SEGMENTS, i));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

fn route(index: usize, r: &RouteIn) -> Route<usize> {
    let path = match &r.path {
        PathIn::Exact(p) => PathMatch::Exact(segments(p)),
        PathIn::Prefix(p) => PathMatch::Prefix(segments(p)),
        PathIn::Regex(atoms) => PathMatch::RegularExpression(
            atoms
                .iter()
                .take(12)
                .map(|&i| pick(REGEX_ATOMS, i))
                .collect(),
        ),
        PathIn::Raw(p) => PathMatch::Prefix(p.clone()),
        PathIn::Grpc {
            service,
            method,
            regex,
        } => PathMatch::Grpc(GrpcMethodMatch {
            kind: if *regex {
                MatchType::RegularExpression
            } else {
                MatchType::Exact
            },
            service: service.map(|i| pick(SERVICES, i).to_owned()),
            method: method.map(|i| pick(METHODS_GRPC, i).to_owned()),
        }),
    };
    let kind = |regex: bool| {
        if regex {
            MatchType::RegularExpression
        } else {
            MatchType::Exact
        }
    };
    Route {
        hostnames: r.hostnames.iter().take(3).map(|h| text(h, HOSTS)).collect(),
        route_match: RouteMatch {
            path,
            method: r
                .method
                .map(|i| HTTP_METHODS[usize::from(i) % HTTP_METHODS.len()].clone()),
            headers: r
                .headers
                .iter()
                .take(3)
                .map(|&(n, v, regex)| HeaderMatch {
                    name: HeaderName::from_static(pick(HEADER_NAMES, n)),
                    value: pick(VALUES, v).to_owned(),
                    kind: kind(regex),
                })
                .collect(),
            query_params: r
                .query
                .iter()
                .take(3)
                .map(|&(n, v, regex)| QueryParamMatch {
                    name: pick(QUERY_NAMES, n).to_owned(),
                    value: pick(VALUES, v).to_owned(),
                    kind: kind(regex),
                })
                .collect(),
        },
        // Few ranks, so that ties reach the input position.
        rank: u64::from(r.rank % 4),
        target: index,
        dialect: if r.ingress {
            Dialect::Ingress
        } else {
            Dialect::GatewayApi
        },
    }
}

fuzz_target!(|input: Input| {
    let routes: Vec<Route<usize>> = input
        .routes
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, r)| route(i, r))
        .collect();
    let router = Router::new(routes.clone());
    let linear = LinearRouter::new(routes);
    let (router, linear) = match (router, linear) {
        (Ok(router), Ok(linear)) => (router, linear),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            return;
        }
        (a, b) => panic!(
            "router {:?} and reference {:?} disagree on validity",
            a.err(),
            b.err()
        ),
    };
    for req in input.requests.iter().take(16) {
        let mut host = text(&req.host, HOSTS);
        if req.uppercase {
            host = host.to_ascii_uppercase();
        }
        if let Some(port) = req.port {
            host = format!("{host}:{port}");
        }
        let raw_path = match &req.path {
            PathText::Segments(p) => segments(p),
            PathText::Chars(p) => p
                .iter()
                .take(16)
                .map(|&i| pick(&["/", "a", "b", "api", ".", "1", "A"], i))
                .collect(),
            PathText::Raw(p) => p.clone(),
        };
        let mut headers = HeaderMap::new();
        for &(n, v) in req.headers.iter().take(4) {
            if let Ok(value) = pick(VALUES, v).parse() {
                headers.append(HeaderName::from_static(pick(HEADER_NAMES, n)), value);
            }
        }
        let query = req
            .query
            .iter()
            .take(4)
            .map(|&(n, v)| format!("{}={}", pick(QUERY_NAMES, n), pick(VALUES, v)))
            .collect::<Vec<_>>()
            .join("&");
        let method = &HTTP_METHODS[usize::from(req.method) % HTTP_METHODS.len()];
        // The raw path, and the normalised one a proxy would pass.
        let normalised = normalize_path(&raw_path, EncodedSlashes::Keep).ok();
        for path in std::iter::once(raw_path.as_str()).chain(normalised.as_deref()) {
            let parts = RequestParts {
                host: &host,
                path,
                query: &query,
                method,
                headers: &headers,
            };
            assert_eq!(
                router.find_parts(&parts),
                linear.find_parts(&parts),
                "router and reference disagree on {parts:?}"
            );
        }
    }
});
