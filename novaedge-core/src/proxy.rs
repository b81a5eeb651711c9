//! The per-request path: route, pick a backend and an endpoint, rewrite headers, forward, and
//! splice upgrades.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body::{Held, IdleBody, InFlightBody, LimitTrip, LimitedBody, ProxyBody, RequestBody};
use crate::config::EngineConfig;
use crate::conn::{ConnBody, ConnState};
use crate::engine::Shared;
use crate::error::{ProxyError, Rejection};
use crate::headers;
use crate::observe::{Exchange, Observed};
use crate::runtime::Cluster;
use crate::runtime::{BackendChoice, MatchTarget, RuleTarget, SocketKey};
use crate::tls::Session;
use crate::upstream::{SendError, UpstreamError, Wire};
use novaedge_filters::mirror::MirrorRequestBody;
use novaedge_filters::retry::ATTEMPT_HEADER;
use novaedge_filters::{ClientAddr, ClientCertificate, LocalListener};
use novaedge_health::Outcome;
use novaedge_lb::{EndpointState, InFlight};
use novaedge_lb::{PickContext, Selector};

/// The hyper service of one client connection.
#[derive(Debug, Clone)]
pub(crate) struct ProxyService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: Arc<SocketKey>,
    pub(crate) peer: SocketAddr,
    /// The listening socket's address.
    pub(crate) local: SocketAddr,
    /// The TLS session, on an HTTPS listener.
    pub(crate) session: Option<Arc<Session>>,
    /// The connection's request count and limits.
    pub(crate) conn: Arc<ConnState>,
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ConnBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let (number, guard) = self.conn.request_started();
        let mut observed =
            Observed::start(&self.shared, &mut req, self.peer, &self.conn.client_text);
        let http1 = req.version() < Version::HTTP_2;
        let config = &self.shared.config;
        // The connection's last request: HTTP/1.1 says so in the response, HTTP/2 with GOAWAY.
        let last = config
            .max_requests_per_connection
            .is_some_and(|max| number >= max);
        if last && !http1 {
            self.conn.drain();
        }
        let rejected = self.screen(&req, number);
        // Route while the current runtime is borrowed, and keep only the chosen target: the
        // request then finishes on what it started with, whatever reloads happen meanwhile.
        let routing = if let Some(rejection) = rejected {
            Routing::reply(rejection.into_response(http1))
        } else {
            let runtime = self.shared.runtime.load();
            match runtime.listener(&self.key) {
                None => Routing::reply(ProxyError::NoRoute.into_response()),
                Some(listener) => {
                    let routing = match listener.https_redirect_port {
                        Some(port) => Routing::reply(https_redirect(&req, port)),
                        None => match listener.router.resolve(&req) {
                            Err(e) => Routing::reply(ProxyError::BadPath(e).into_response()),
                            Ok(resolved) => {
                                // The upstream gets the path that was routed, not the raw one.
                                let normalized = (resolved.path != req.uri().path())
                                    .then(|| resolved.path.into_owned());
                                match resolved.target {
                                    Some(target) => {
                                        let limit = body_limit(&target.rule, config);
                                        match declared_too_large(&req, limit) {
                                            Some(rejected) => Routing::Reply {
                                                response: rejected.into_response(http1),
                                                matched: Some(target.clone()),
                                            },
                                            None => Routing::Serve {
                                                target: target.clone(),
                                                normalized,
                                            },
                                        }
                                    }
                                    None => Routing::reply(ProxyError::NoRoute.into_response()),
                                }
                            }
                        },
                    };
                    observed.routed(listener, routing.matched());
                    routing
                }
            }
        };
        let shared = self.shared.clone();
        let peer = self.peer;
        let forwarded_for = self
            .conn
            .forwarded_for
            .get_or_init(|| headers::forwarded_for(peer.ip()))
            .clone();
        let local = self.local;
        let client_cert = self.session.as_ref().and_then(|s| s.client.clone());
        let https = self.session.is_some();
        Box::pin(async move {
            let (response, matched) = match routing {
                Routing::Reply { response, matched } => (response, matched),
                Routing::Serve { target, normalized } => {
                    let client = ClientInfo {
                        peer,
                        forwarded_for,
                        host: request_host(&req),
                        https,
                        client_cert,
                        exchange: observed.exchange(),
                        body_limit: None,
                    };
                    let response = serve(
                        &shared,
                        &mut observed,
                        req,
                        &target,
                        normalized,
                        client,
                        local,
                    )
                    .await;
                    (response, Some(target))
                }
            };
            let mut response = observed.finish(response, shared, matched);
            // After a 413 (the proxy's, or the upstream's) the rest of the request body is left
            // unread: the connection cannot carry another request.
            let close = last || response.status() == StatusCode::PAYLOAD_TOO_LARGE;
            if close && http1 && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| ConnBody::new(body, Some(guard))))
        })
    }
}

/// What routing made of a request.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and moved into its future, where either variant takes \
              its room; boxing the reply would allocate for every local answer"
)]
enum Routing {
    /// Serve it with the rule of `target`, on `normalized` as its path if that is set.
    Serve {
        target: Arc<MatchTarget>,
        normalized: Option<String>,
    },
    /// Answer it with `response` at once; `matched` is the rule it matched, if any (a body
    /// declared too large for the rule), for its access log line and metrics.
    Reply {
        response: Response<ProxyBody>,
        matched: Option<Arc<MatchTarget>>,
    },
}

impl Routing {
    fn reply(response: Response<ProxyBody>) -> Self {
        Self::Reply {
            response,
            matched: None,
        }
    }

    fn matched(&self) -> Option<&MatchTarget> {
        match self {
            Routing::Serve { target, .. } => Some(target),
            Routing::Reply { matched, .. } => matched.as_deref(),
        }
    }
}

impl ProxyService {
    /// Refuses request `number` of the connection before routing for what the client sent:
    /// a head the framing checks refused, or more header fields than allowed (hyper counts
    /// them on HTTP/1.1, nothing does on HTTP/2). A body declared larger than allowed is
    /// refused once routed, since the limit may be the route's.
    fn screen<B>(&self, req: &Request<B>, number: u64) -> Option<Rejection> {
        if let Some(refusal) = self.conn.refusal(number) {
            return Some(Rejection::Framing(refusal));
        }
        let config = &self.shared.config;
        let count = req.headers().len();
        if count > config.max_request_headers {
            return Some(Rejection::TooManyHeaders {
                count,
                limit: config.max_request_headers,
            });
        }
        None
    }
}

/// The request body limit of a rule's requests: the rule's own, else the engine's.
fn body_limit(rule: &RuleTarget, config: &EngineConfig) -> Option<u64> {
    rule.max_request_body_bytes
        .or(config.max_request_body_bytes)
}

/// A request whose `Content-Length` goes past `limit`. (hyper, or the h2 crate, has already
/// refused a malformed one, and holds the body to the length declared.)
fn declared_too_large<B>(req: &Request<B>, limit: Option<u64>) -> Option<Rejection> {
    let limit = limit?;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())?;
    (length > limit).then_some(Rejection::BodyTooLarge { length, limit })
}

/// The client's request body on its way to forwarding: observed, and held to the body limit
/// unless its length is declared (a declared length was checked before routing, and hyper, or
/// the h2 crate, holds the body to it). With a limit, also what tells forwarding that the body
/// went past it.
fn client_body(
    observed: &Observed,
    body: Incoming,
    limit: Option<u64>,
) -> (RequestBody, Option<Arc<LimitTrip>>) {
    let body = observed.request_body(body);
    match limit {
        Some(limit) if !body.is_end_stream() && body.size_hint().exact().is_none() => {
            let trip = LimitTrip::new(limit);
            let body = RequestBody::filtered(LimitedBody::new(body, trip.clone()));
            (body, Some(trip))
        }
        _ => (body, None),
    }
}

/// Serves a routed request: through the rule's filters, if it has any, to its backend.
async fn serve(
    shared: &Arc<Shared>,
    observed: &mut Observed,
    mut req: Request<Incoming>,
    target: &MatchTarget,
    normalized: Option<String>,
    mut client: ClientInfo,
    local: SocketAddr,
) -> Response<ProxyBody> {
    if let Some(path) = normalized {
        set_path(&mut req, &path);
    }
    let rule = &target.rule;
    let (parts, body) = req.into_parts();
    let (body, limit) = client_body(observed, body, body_limit(rule, &shared.config));
    client.body_limit = limit;
    let mut req = Request::from_parts(parts, body);
    let Some(filters) = &rule.filters else {
        let forwarded = match rule.backends.pick() {
            Some(cluster) => {
                // A rule without filters has no timeouts of its own.
                let timeout = shared.config.upstream_response_timeout;
                forward(shared, &rule.route, cluster, &client, req, timeout).await
            }
            None => Err(ProxyError::NoBackend),
        };
        return forwarded.unwrap_or_else(ProxyError::into_response);
    };
    // What filters may need to know about the request besides the request itself.
    let extensions = req.extensions_mut();
    extensions.insert(ClientAddr(client.peer));
    extensions.insert(LocalListener {
        port: local.port(),
        scheme: if client.https {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        },
    });
    if let Some(cert) = client.client_cert.clone() {
        extensions.insert(cert);
    }
    if let Some(prefix) = &target.prefix {
        extensions.insert(prefix.clone());
    }
    extensions.insert(client);
    observed.filters_start();
    crate::filters::serve(filters, req).await
}

/// Forwarding as a tower service: the innermost service of a rule's filters, built once per
/// snapshot. Per-request facts come with the request ([`ClientInfo`] extension); the engine is
/// held weakly, since the engine holds the runtime that holds this.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    shared: Weak<Shared>,
    route: Arc<str>,
    backends: Arc<BackendChoice>,
    /// The rule has timeouts of its own; the engine's response timeout does not apply.
    timed: bool,
}

impl Forward {
    pub(crate) fn new(
        shared: Weak<Shared>,
        route: Arc<str>,
        backends: Arc<BackendChoice>,
        timed: bool,
    ) -> Self {
        Self {
            shared,
            route,
            backends,
            timed,
        }
    }
}

/// Errors stay errors here, so that a retry filter can tell a failed connection or a reset
/// from a response; whatever is left of them becomes a response outside the filters.
impl tower::Service<Request<RequestBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProxyError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let shared = this.shared.upgrade().ok_or(ProxyError::ShuttingDown)?;
            let cluster = this.backends.pick().ok_or(ProxyError::NoBackend)?;
            let client = ClientInfo::of(&req);
            let timeout = match this.timed {
                true => None,
                false => shared.config.upstream_response_timeout,
            };
            forward(&shared, &this.route, cluster, &client, req, timeout).await
        })
    }
}

/// Where a rule's mirror filter sends its copies: one backend, forwarded like any request, the
/// answer dropped by the filter.
#[derive(Debug, Clone)]
pub(crate) struct MirrorTarget {
    shared: Weak<Shared>,
    route: Arc<str>,
    cluster: Arc<Cluster>,
}

impl MirrorTarget {
    pub(crate) fn new(shared: Weak<Shared>, route: Arc<str>, cluster: Arc<Cluster>) -> Self {
        Self {
            shared,
            route,
            cluster,
        }
    }
}

impl tower::Service<Request<MirrorRequestBody>> for MirrorTarget {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ProxyError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), ProxyError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<MirrorRequestBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let shared = this.shared.upgrade().ok_or(ProxyError::ShuttingDown)?;
            let mut client = ClientInfo::of(&req);
            // A mirrored copy must not speak for the request.
            client.exchange = None;
            let req = req.map(RequestBody::filtered);
            let timeout = shared.config.upstream_response_timeout;
            forward(&shared, &this.route, &this.cluster, &client, req, timeout).await
        })
    }
}

/// How many endpoints a request that cannot connect is offered to.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// How many times a hashing balancer is asked for an endpoint not tried yet. Each rehashed
/// draw lands on a tried endpoint with the odds of the tried ones' share of the table: one dead
/// endpoint in three failed 1 request in 2,187 that hashed to it with 8 draws; with 32, 1 in
/// 6 * 10^14 (two tried of three: 1 in 290,000).
const HASH_DRAWS: u64 = 32;

/// Picks an endpoint of `cluster` not in `tried`, counting the request as in flight on it. A
/// hashing balancer is asked again with a rehashed key, as Envoy does on retries; `None` when
/// no untried endpoint turns up.
fn pick(
    cluster: &Cluster,
    hash: Option<u64>,
    tried: &[SocketAddr],
) -> Option<(SocketAddr, Arc<EndpointState>, InFlight)> {
    let balancer = cluster.endpoints.load();
    for draw in 0..HASH_DRAWS {
        let key = hash.map(|h| h.wrapping_add(draw.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let picked = balancer.pick_with(&PickContext::new().with_hash(key))?;
        if !tried.contains(picked.endpoint()) {
            return Some((*picked.endpoint(), picked.state().clone(), picked.start()));
        }
        if hash.is_none() && draw as usize > tried.len() + 1 {
            break;
        }
    }
    None
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

/// Who sent a request and which host they asked for, as it was before any filter ran: what the
/// `X-Forwarded-*` headers tell the upstream.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    peer: SocketAddr,
    /// The peer's address as `X-Forwarded-For` gives it (the connection's, shared).
    forwarded_for: HeaderValue,
    host: Option<HeaderValue>,
    /// Whether the client connection is TLS.
    https: bool,
    /// The client's verified certificate.
    client_cert: Option<ClientCertificate>,
    /// The request's observation, if it is observed (retries share it; mirrors drop it).
    exchange: Option<Arc<Exchange>>,
    /// Set when the request body is held to the body limit: whether it went past it.
    body_limit: Option<Arc<LimitTrip>>,
}

impl ClientInfo {
    /// The request's [`ClientInfo`] extension (filters carry it along, mirrors copy it).
    fn of<B>(req: &Request<B>) -> Self {
        req.extensions()
            .get::<ClientInfo>()
            .cloned()
            .unwrap_or_else(|| ClientInfo {
                peer: SocketAddr::from(([0, 0, 0, 0], 0)),
                forwarded_for: HeaderValue::from_static("0.0.0.0"),
                host: request_host(req),
                https: false,
                client_cert: None,
                exchange: None,
                body_limit: None,
            })
    }
}

/// The answer of a listener that redirects to HTTPS: `301` to the same host (its port
/// replaced), path and query. A request without a usable host gets `400`.
fn https_redirect<B>(req: &Request<B>, port: u16) -> Response<ProxyBody> {
    let host = request_host(req)
        .and_then(|h| h.to_str().ok().and_then(|h| h.parse::<Authority>().ok()))
        .map(|a| a.host().to_owned());
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return ProxyError::NoHost.into_response();
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut response = Response::new(ProxyBody::default());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => ProxyError::NoHost.into_response(),
    }
}

/// The authority a request asks for: HTTP/2's :authority or an absolute-form URI win over the
/// Host header (RFC 9112 section 3.2.2).
fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// Sends `req` to an endpoint of `cluster`. `timeout` bounds the wait for each endpoint's
/// response head (connecting included): a late one is a `504`.
async fn forward(
    shared: &Arc<Shared>,
    route: &str,
    cluster: &Cluster,
    client: &ClientInfo,
    mut req: Request<RequestBody>,
    timeout: Option<Duration>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let peer = client.peer;
    let exchange = client.exchange.as_deref();
    if let Some(exchange) = exchange {
        exchange.forwarding(cluster);
    }
    let overloaded = |overflow| ProxyError::Overloaded {
        backend: cluster.name.clone(),
        overflow,
    };
    // A retry filter's retry counts against the backend's `max_retries` until its answer comes.
    let _retry_permit = match req.headers().contains_key(ATTEMPT_HEADER) {
        true => Some(cluster.breaker.try_acquire_retry().map_err(overloaded)?),
        false => None,
    };
    // Held until the response body ends (or the upgraded tunnel closes).
    let request_permit =
        cluster
            .breaker
            .try_acquire_request()
            .map_err(|overflow| ProxyError::Overloaded {
                backend: cluster.name.clone(),
                overflow,
            })?;
    let upgrade = req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    if upgrade && cluster.wire == Wire::H2c {
        return Err(ProxyError::UpgradeToH2 {
            backend: cluster.name.clone(),
        });
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let hash = cluster.hash.as_ref().and_then(|h| h.hash(&req, peer.ip()));

    // A request that could not be handed to an endpoint (no connection could be made) has not
    // been sent: it goes to another endpoint, whatever its method, and the failure counts
    // against the endpoint's passive health.
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = None;
    let mut prepared = false;
    let (mut response, in_flight, endpoint) = loop {
        let Some((endpoint, state, in_flight)) = pick(cluster, hash, &tried) else {
            return Err(match last_error {
                // Nowhere else to go: the client learns why the last endpoint failed.
                Some((endpoint, source)) => ProxyError::Upstream {
                    backend: cluster.name.clone(),
                    endpoint,
                    source,
                },
                None => ProxyError::NoEndpoint {
                    backend: cluster.name.clone(),
                },
            });
        };
        if !prepared {
            prepare_upstream_request(&mut req, cluster.wire, endpoint, client, upgrade);
            prepared = true;
        }
        tracing::trace!(route = %route, backend = %cluster.name, %endpoint, "forwarding");
        let attempt = exchange.map(|x| x.attempt(&mut req, &cluster.name, endpoint));
        let started = Instant::now();
        let send = shared.upstreams.send(
            endpoint,
            cluster.wire,
            cluster.tls.as_ref().map(|tls| tls.dial(upgrade)),
            req,
            &cluster.breaker,
        );
        let sent = match timeout {
            None => send.await,
            Some(timeout) => match tokio::time::timeout(timeout, send).await {
                Ok(sent) => sent,
                Err(_) => Err(UpstreamError::ResponseTimeout(timeout).into()),
            },
        };
        match sent {
            Ok(response) => {
                // Latency to the response head feeds the latency-aware balancers; the request
                // stays in flight until its body ends.
                let now = Instant::now();
                state.observe_rtt(now - started, now);
                if let Some(attempt) = attempt {
                    attempt.answered(&shared.observe, cluster, &response, now - started);
                }
                cluster
                    .health
                    .outlier
                    .record(&endpoint, Outcome::from_status(response.status().as_u16()));
                break (response, in_flight, endpoint);
            }
            Err(SendError {
                error: UpstreamError::Overloaded(overflow),
                ..
            }) => {
                if let Some(attempt) = attempt {
                    attempt.failed(&overflow);
                }
                // The breaker said no before anything was tried: not the endpoint's fault.
                return Err(ProxyError::Overloaded {
                    backend: cluster.name.clone(),
                    overflow,
                });
            }
            Err(SendError { error, unsent }) => {
                // HTTP/2 loses why the body failed: the limit says if it was its doing.
                let error = match client.body_limit.as_deref() {
                    Some(trip) if trip.tripped() && unsent.is_none() => {
                        UpstreamError::BodyTooLarge(trip.limit)
                    }
                    _ => error,
                };
                if let Some(attempt) = attempt {
                    attempt.failed(&error);
                }
                // A request body that failed (the client's, or over the limit) is no fault of
                // the endpoint's.
                if error.body_fault().is_none() {
                    cluster
                        .health
                        .outlier
                        .record(&endpoint, Outcome::GatewayError);
                }
                tried.push(endpoint);
                match unsent {
                    Some(unsent) if tried.len() < MAX_CONNECT_ATTEMPTS => {
                        tracing::debug!(backend = %cluster.name, %endpoint, %error, "connect failed; trying another endpoint");
                        req = unsent;
                        last_error = Some((endpoint, error));
                    }
                    _ => {
                        return Err(ProxyError::Upstream {
                            backend: cluster.name.clone(),
                            endpoint,
                            source: error,
                        });
                    }
                }
            }
        }
    };

    let mut held = Some(Held {
        in_flight,
        request: request_permit,
    });
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let cut = shared.cut.clone();
        // An upgraded connection is a request in flight until it closes.
        let held = held.take();
        shared
            .tasks
            .spawn(cut.run_until_cancelled_owned(async move {
                let _held = held;
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
    let idle = shared.config.upstream_body_idle_timeout;
    Ok(
        response
            .map(|body| ProxyBody::upstream(InFlightBody::new(IdleBody::new(body, idle), held))),
    )
}

/// Rewrites a client request into the request the upstream gets: the target URI in the form the
/// upstream protocol wants, the original host kept, hop-by-hop headers removed, forwarding
/// headers added.
fn prepare_upstream_request(
    req: &mut Request<RequestBody>,
    wire: Wire,
    endpoint: SocketAddr,
    client: &ClientInfo,
    upgrade: bool,
) {
    // The host the upstream gets: the request's, after any rewrite.
    let host = request_host(req);
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));

    let headers = req.headers_mut();
    headers::remove_hop_by_hop(headers, upgrade);
    let proto = if client.https { "https" } else { "http" };
    headers::add_forwarded(headers, &client.forwarded_for, proto, client.host.as_ref());
    headers::set_client_cert(headers, client.client_cert.as_ref());

    match wire {
        Wire::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = Uri::from(path);
            // A socket address is always a valid Host value.
            let host = host.or_else(|| HeaderValue::try_from(endpoint.to_string()).ok());
            if let Some(host) = host {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        Wire::H2c => {
            *req.version_mut() = Version::HTTP_2;
            // HTTP/2 carries the host as :authority, and a Host header that differs from it is
            // forbidden (RFC 9113 section 8.3.1).
            req.headers_mut().remove(header::HOST);
            // A socket address is always a valid authority, so the URI always has all three.
            let authority = host
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .or_else(|| Authority::try_from(endpoint.to_string()).ok());
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = authority;
            parts.path_and_query = Some(path);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
}
