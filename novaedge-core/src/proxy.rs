//! The per-request path: route, pick a backend and an endpoint, rewrite headers, forward, and
//! splice upgrades.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::InFlightBody;
use crate::engine::Shared;
use crate::error::ProxyError;
use crate::headers;
use crate::runtime::{RuleTarget, SocketKey};
use crate::upstream::Wire;
use novaedge_lb::{PickContext, Selector};

/// Response bodies: the upstream's, streamed, or a short one the proxy wrote itself.
pub(crate) type ProxyBody = Either<InFlightBody, Full<Bytes>>;

/// The hyper service of one client connection.
#[derive(Debug, Clone)]
pub(crate) struct ProxyService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: Arc<SocketKey>,
    pub(crate) peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // Route while the current runtime is borrowed, and keep only the chosen target: the
        // request then finishes on what it started with, whatever reloads happen meanwhile.
        let routed = {
            let runtime = self.shared.runtime.load();
            match runtime.router(&self.key) {
                None => Err(ProxyError::NoRoute),
                Some(router) => match router.resolve(&req) {
                    Err(e) => Err(ProxyError::BadPath(e)),
                    Ok(resolved) => {
                        // The upstream gets the path that was routed, not the raw one.
                        let normalized =
                            (resolved.path != req.uri().path()).then(|| resolved.path.into_owned());
                        match resolved.target {
                            Some(target) => Ok((target.clone(), normalized)),
                            None => Err(ProxyError::NoRoute),
                        }
                    }
                },
            }
        };
        let shared = self.shared.clone();
        let peer = self.peer;
        Box::pin(async move {
            let result = match routed {
                Ok((target, normalized)) => {
                    if let Some(path) = normalized {
                        set_path(&mut req, &path);
                    }
                    forward(&shared, &target, peer, req).await
                }
                Err(e) => Err(e),
            };
            Ok(result.unwrap_or_else(ProxyError::into_response))
        })
    }
}

/// Replaces the request's path, keeping its query.
fn set_path<B>(req: &mut Request<B>, path: &str) {
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    // A normalised path is valid URI path syntax (invalid characters are percent-encoded).
    if let Ok(pq) = PathAndQuery::try_from(path_and_query) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

async fn forward(
    shared: &Arc<Shared>,
    target: &RuleTarget,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let cluster = target.pick_backend().ok_or(ProxyError::NoBackend)?;
    let hash = cluster.hash.as_ref().and_then(|h| h.hash(&req, peer.ip()));
    let (endpoint, state, in_flight) = {
        let balancer = cluster.endpoints.load();
        let picked = balancer
            .pick_with(&PickContext::new().with_hash(hash))
            .ok_or_else(|| ProxyError::NoEndpoint {
                backend: cluster.name.clone(),
            })?;
        (*picked.endpoint(), picked.state().clone(), picked.start())
    };
    let started = Instant::now();

    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    if upgrade && cluster.wire == Wire::H2c {
        return Err(ProxyError::UpgradeToH2 {
            backend: cluster.name.clone(),
        });
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    prepare_upstream_request(&mut req, cluster.wire, endpoint, peer, upgrade);
    tracing::trace!(route = %target.route, backend = %cluster.name, %endpoint, "forwarding");

    let mut response = shared
        .upstreams
        .send(endpoint, cluster.wire, req)
        .await
        .map_err(|source| ProxyError::Upstream {
            backend: cluster.name.clone(),
            endpoint,
            source,
        })?;
    // Latency to the response head feeds the latency-aware balancers; the request stays in
    // flight until its body ends. A failed request only releases its pending count.
    let now = Instant::now();
    state.observe_rtt(now - started, now);

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let cut = shared.cut.clone();
        shared
            .tasks
            .spawn(cut.run_until_cancelled_owned(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        if let Err(e) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(%endpoint, error = %e, "upgraded connection ended");
                        }
                    }
                    Err(e) => tracing::debug!(%endpoint, error = %e, "upgrade failed"),
                }
            }));
    }
    headers::remove_hop_by_hop(response.headers_mut(), switching);
    Ok(response.map(|body| Either::Left(InFlightBody::new(body, in_flight))))
}

/// Rewrites a client request into the request the upstream gets: the target URI in the form the
/// upstream protocol wants, the original host kept, hop-by-hop headers removed, forwarding
/// headers added.
fn prepare_upstream_request(
    req: &mut Request<Incoming>,
    wire: Wire,
    endpoint: SocketAddr,
    peer: SocketAddr,
    upgrade: bool,
) {
    // The authority the client asked for: HTTP/2's :authority or an absolute-form URI win over
    // the Host header (RFC 9112 section 3.2.2).
    let host: Option<HeaderValue> = match req.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));

    let headers = req.headers_mut();
    headers::remove_hop_by_hop(headers, upgrade);
    headers::add_forwarded(headers, peer.ip(), "http", host.as_ref());

    match wire {
        Wire::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = Uri::from(path);
            match host {
                Some(host) => req.headers_mut().insert(header::HOST, host),
                None => req.headers_mut().insert(
                    header::HOST,
                    HeaderValue::from_str(&endpoint.to_string()).expect("socket address"),
                ),
            };
        }
        Wire::H2c => {
            *req.version_mut() = Version::HTTP_2;
            // HTTP/2 carries the host as :authority, and a Host header that differs from it is
            // forbidden (RFC 9113 section 8.3.1).
            req.headers_mut().remove(header::HOST);
            let authority = host
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| {
                    Authority::try_from(endpoint.to_string().as_str()).expect("socket address")
                });
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority);
            parts.path_and_query = Some(path);
            *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are set");
        }
    }
}
