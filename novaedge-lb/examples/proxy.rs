//! A small HTTP reverse proxy that embeds `novaedge-router` and `novaedge-lb`, as another Rust
//! proxy would.
//!
//! ```text
//! cargo run -p novaedge-lb --example proxy
//! ```
//!
//! The demo is self-contained: it starts five tiny backends on 127.0.0.1 (ephemeral ports), a
//! proxy in front of them, and sends requests through it:
//!
//! - `/api/...` routes to the `api` backend, balanced by Maglev on the `x-user` header, so a user
//!   sticks to one endpoint;
//! - everything else routes to the `web` backend, balanced by peak EWMA;
//! - marking the endpoint that serves a user unhealthy moves that user to another endpoint on the
//!   next request, without rebuilding anything; marking it healthy again moves the user back.
//!
//! What the proxy does per request is all in [`Proxy::handle`]: route, hash, pick, count the
//! request in flight, forward, record the latency.
// A demo binary: it reports what it saw on stdout.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use novaedge_lb::{EndpointSet, HashPolicy, LbPolicy, PickContext, Selector};
use novaedge_router::{PathMatch, Route, RouteMatch, Router};
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, hyper::Error>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One backend: its endpoints behind a balancer, and how requests are hashed for it.
#[derive(Debug)]
struct Backend {
    name: &'static str,
    /// Kept across configuration reloads, so that load and health survive them.
    endpoints: EndpointSet<SocketAddr>,
    /// Only for hashing policies.
    hash: Option<HashPolicy>,
}

#[derive(Debug)]
struct Proxy {
    router: Router<Arc<Backend>>,
}

impl Proxy {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, Infallible> {
        let Some(backend) = self.router.find_request(&req) else {
            return Ok(status(StatusCode::NOT_FOUND));
        };
        let hash = backend
            .hash
            .as_ref()
            .and_then(|policy| policy.hash(&req, peer.ip()));
        // The table guard is for the pick only; what outlives it is the address and the
        // in-flight guard, which owns an `Arc` of the endpoint's state.
        let (addr, in_flight) = {
            let table = backend.endpoints.load();
            match table.pick_with(&PickContext::new().with_hash(hash)) {
                Some(picked) => (*picked.endpoint(), picked.start()),
                None => return Ok(status(StatusCode::SERVICE_UNAVAILABLE)),
            }
        };
        match forward(addr, req).await {
            Ok(response) => {
                in_flight.finish();
                Ok(response.map(|body| body.boxed()))
            }
            // Dropping `in_flight` releases the count without a latency sample.
            Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
        }
    }
}

async fn forward(addr: SocketAddr, req: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(req).await?)
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}

/// Serves `handle` on `listener` until the task is dropped.
async fn serve<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    while let Ok((stream, peer)) = listener.accept().await {
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, peer));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A backend endpoint that answers with its name.
async fn start_endpoint(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, move |_req, _peer| async move {
        let body = Full::new(Bytes::from(name)).map_err(|never| match never {});
        Ok(Response::new(body.boxed()))
    }));
    Ok(addr)
}

/// What the demo saw: the endpoint that answered each labelled request.
#[derive(Debug, Default)]
struct Seen {
    answers: HashMap<String, Vec<String>>,
}

async fn get(proxy: SocketAddr, path: &str, user: &str) -> Result<String, BoxError> {
    let stream = TcpStream::connect(proxy).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let req = Request::get(path)
        .header("host", "shop.example")
        .header("x-user", user)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(req).await?;
    if !response.status().is_success() {
        return Err(format!("{path}: {}", response.status()).into());
    }
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

async fn run_demo() -> Result<Seen, BoxError> {
    // Backends and their endpoints.
    let mut api_endpoints = Vec::new();
    for name in ["api-1", "api-2", "api-3"] {
        api_endpoints.push((start_endpoint(name).await?, name));
    }
    let mut web_endpoints = Vec::new();
    for name in ["web-1", "web-2"] {
        web_endpoints.push(start_endpoint(name).await?);
    }
    let api = Arc::new(Backend {
        name: "api",
        endpoints: EndpointSet::new(LbPolicy::maglev()),
        hash: Some(HashPolicy::Header(http::HeaderName::from_static("x-user"))),
    });
    api.endpoints
        .update(api_endpoints.iter().map(|&(addr, _)| (addr, 1)));
    let web = Arc::new(Backend {
        name: "web",
        endpoints: EndpointSet::new(LbPolicy::peak_ewma()),
        hash: None,
    });
    web.endpoints
        .update(web_endpoints.iter().map(|&addr| (addr, 1)));

    // Routes: /api to the api backend, the rest to web.
    let route = |path: &str, backend: &Arc<Backend>| Route {
        hostnames: vec!["shop.example".to_owned()],
        route_match: RouteMatch {
            path: PathMatch::Prefix(path.to_owned()),
            ..RouteMatch::default()
        },
        rank: 0,
        target: backend.clone(),
        dialect: Default::default(),
    };
    let proxy = Arc::new(Proxy {
        router: Router::new([route("/api", &api), route("/", &web)])?,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = listener.local_addr()?;
    let server = tokio::spawn(serve(listener, move |req, peer| {
        let proxy = proxy.clone();
        async move { proxy.handle(req, peer).await }
    }));

    let mut seen = Seen::default();
    let mut ask = async |label: &str, path: &str, user: &str| -> Result<String, BoxError> {
        let answer = get(proxy_addr, path, user).await?;
        seen.answers
            .entry(label.to_owned())
            .or_default()
            .push(answer.clone());
        Ok(answer)
    };
    for user in ["alice", "bob", "carol", "dave"] {
        for _ in 0..3 {
            ask(user, "/api/cart", user).await?;
        }
    }
    for _ in 0..6 {
        ask("web", "/", "anyone").await?;
    }
    // alice's endpoint goes down: no rebuild, her next request falls back to another one.
    let alice_endpoint = get(proxy_addr, "/api/cart", "alice").await?;
    let alice_addr = api_endpoints
        .iter()
        .find(|&&(_, name)| name == alice_endpoint)
        .map(|&(addr, _)| addr)
        .ok_or("alice's endpoint")?;
    api.endpoints.set_healthy(&alice_addr, false);
    ask("alice while down", "/api/cart", "alice").await?;
    api.endpoints.set_healthy(&alice_addr, true);
    ask("alice after recovery", "/api/cart", "alice").await?;

    server.abort();
    println!("backends: {} and {}", api.name, web.name);
    let mut labels: Vec<_> = seen.answers.keys().cloned().collect();
    labels.sort();
    for label in labels {
        println!("{label:>22}: {}", seen.answers[&label].join(", "));
    }
    Ok(seen)
}

#[cfg_attr(test, allow(dead_code))]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    run_demo().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_proxy_routes_balances_and_falls_back() {
        let seen = run_demo().await.expect("demo ran");
        let answers = |label: &str| seen.answers[label].clone();
        for user in ["alice", "bob", "carol", "dave"] {
            let got = answers(user);
            assert!(got.iter().all(|a| a == &got[0]), "{user} moved: {got:?}");
            assert!(got[0].starts_with("api-"), "{got:?}");
        }
        assert!(answers("web").iter().all(|a| a.starts_with("web-")));
        let alice = answers("alice")[0].clone();
        assert_ne!(answers("alice while down")[0], alice);
        assert_eq!(answers("alice after recovery")[0], alice);
    }
}
