//! Request-path observability: the correlation id, W3C trace context and spans, access logs
//! and request metrics.
//!
//! Everything is off by default except the request id, and what is off costs a branch per
//! request: nothing is allocated, timed or looked up for an observer that is not there.
//! [`ObserveConfig`] (in [`EngineConfig::observe`](crate::EngineConfig::observe)) turns on the
//! access log and tracing; [`Engine::register_metrics`](crate::Engine::register_metrics) turns on
//! metrics.
//!
//! One request is followed by one `Exchange`, made when it arrives: the connection's service
//! owns it (through an `Observed`) from the request's arrival until its response body ends
//! (it writes the access log line, counts the metrics and ends the request span then), and
//! forwarding shares it through the request's `ClientInfo` (handed to forwarding directly, or
//! as a request extension through a rule's filters) to write what only it knows (backend,
//! endpoint, upstream spans). Filters carry request extensions along (retries copy them); a
//! mirrored copy forwards without the exchange, so a mirror never speaks for the request.
//!
//! Cost when on, per observed request: one allocation (the `Arc<Exchange>`, which goes by
//! pointer into the response body), the headers read in one pass, plus, with an access log,
//! the line: formatted straight from the request when it arrives and finished, when its
//! response ends, straight into the writer's queue of the request's thread. Names from the
//! configuration come as lines write them, made once per runtime; the response holds the rule
//! the request matched, and forwarding records its backend by identity, so that no reference
//! count every request shares is touched for them. Metric handles are found by the addresses
//! of the route and backend names in a map read without a lock.
//! `bench/observe_instructions.sh`
//! counts what each costs in instructions per request, `bench/observe.sh` in throughput.
//!
//! Details: [`request_id`] for `x-request-id`, [`trace`] for trace context and spans,
//! [`access_log`] for formats and response flags, [`metrics`] for metric names and labels.

pub mod access_log;
pub mod metrics;
pub mod request_id;
pub mod trace;

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use novaedge_filters::ratelimit::RateLimited;
use novaedge_filters::retry::TryTimedOut;
use novaedge_filters::timeout::RequestTimedOut;
use novaedge_health::Limit;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) use access_log::ClientText;
use access_log::Names;
pub use access_log::{AccessLog, AccessLogFormat};
pub use request_id::REQUEST_ID_HEADER;
use request_id::RequestId;
pub use trace::{OtlpConfig, OtlpTracer, TraceError};

use crate::body::{BoxError, ProxyBody, RequestBody, UpstreamBodyIdle};
use crate::error::{ProxyError, Rejection};
use crate::runtime::{Cluster, ListenerRuntime, MatchTarget};
use crate::upstream::BodyFault;
pub(crate) use metrics::Latency;
use metrics::Metrics;
use trace::{TRACEPARENT, TRACESTATE, TraceParent};

/// What the engine observes besides metrics.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// Keep the client's `x-request-id` when it is sane, make one up otherwise; send it to the
    /// upstream and back to the client. On by default (as in Envoy).
    pub request_id: bool,
    /// Where access log lines go; `None` (the default): no access log.
    pub access_log: Option<AccessLog>,
    /// Where request spans go; `None` (the default): no spans, and `traceparent` passes
    /// through untouched.
    pub tracer: Option<OtlpTracer>,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        Self {
            request_id: true,
            access_log: None,
            tracer: None,
        }
    }
}

/// The engine's observers.
#[derive(Debug)]
pub(crate) struct Observe {
    config: ObserveConfig,
    metrics: OnceLock<Metrics>,
    /// The label of "no route" and "no backend".
    none: Arc<str>,
}

impl Observe {
    pub(crate) fn new(config: &ObserveConfig) -> Self {
        Self {
            config: config.clone(),
            metrics: OnceLock::new(),
            none: Arc::from(""),
        }
    }

    fn active(&self) -> bool {
        self.config.access_log.is_some()
            || self.config.tracer.is_some()
            || self.metrics.get().is_some()
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        let metrics = self.metrics.get_or_init(Metrics::new);
        let dropped = self
            .config
            .access_log
            .as_ref()
            .map(AccessLog::dropped_counter);
        metrics.register(registry, dropped);
    }

    /// After a reload: forget the metric series of what the snapshot no longer has.
    pub(crate) fn retain(&self, snapshot: &novaedge_snapshot::ConfigSnapshot) {
        if let Some(metrics) = self.metrics.get() {
            metrics.retain(snapshot);
        }
    }

    /// Counts a client connection accepted on `listener` until the guard is dropped.
    pub(crate) fn connection_opened(
        &self,
        listener: Option<&ListenerRuntime>,
    ) -> Option<ConnectionGuard> {
        let metrics = self.metrics.get()?;
        let (open, parked) = metrics.connection_opened(&listener?.name);
        Some(ConnectionGuard { open, parked })
    }
}

/// One open client connection on its listener's gauge.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    open: Gauge,
    parked: Gauge,
}

impl ConnectionGuard {
    /// Counts the connection as parked until the guard returned is dropped.
    pub(crate) fn parked(&self) -> ParkedGuard {
        self.parked.inc();
        ParkedGuard(self.parked.clone())
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A parked connection on its listener's gauge.
#[derive(Debug)]
pub(crate) struct ParkedGuard(Gauge);

impl Drop for ParkedGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// === response flags ===

/// Envoy-style response flags (see [`access_log`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags(u16);

impl Flags {
    pub(crate) const NR: u16 = 1 << 0;
    pub(crate) const NC: u16 = 1 << 1;
    pub(crate) const UH: u16 = 1 << 2;
    pub(crate) const UO: u16 = 1 << 3;
    pub(crate) const UF: u16 = 1 << 4;
    pub(crate) const UC: u16 = 1 << 5;
    pub(crate) const UT: u16 = 1 << 6;
    pub(crate) const RL: u16 = 1 << 7;
    pub(crate) const DC: u16 = 1 << 8;
    pub(crate) const DPE: u16 = 1 << 9;
    pub(crate) const UPE: u16 = 1 << 10;
    pub(crate) const SD: u16 = 1 << 11;
    pub(crate) const SI: u16 = 1 << 12;
    const NAMES: [&str; 13] = [
        "NR", "NC", "UH", "UO", "UF", "UC", "UT", "RL", "DC", "DPE", "UPE", "SD", "SI",
    ];

    pub(crate) fn set(&mut self, flag: u16) {
        self.0 |= flag;
    }

    pub(crate) fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("-");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Marks a response the proxy made itself from a [`ProxyError`]: why, for the access log and
/// the breaker overflow counter. Inserted by `ProxyError::into_response`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalReply {
    flags: Flags,
    limit: Option<Limit>,
}

impl LocalReply {
    pub(crate) fn of(error: &ProxyError) -> Self {
        let flag = match error {
            ProxyError::BadPath(_) | ProxyError::NoHost => Flags::DPE,
            ProxyError::NoRoute => Flags::NR,
            ProxyError::NoBackend => Flags::NC,
            ProxyError::ShuttingDown => Flags::SD,
            ProxyError::NoEndpoint { .. } => Flags::UH,
            ProxyError::UpgradeToH2 { .. } => Flags::UPE,
            ProxyError::Overloaded { .. } => Flags::UO,
            ProxyError::Upstream { source, .. } => match source.body_fault() {
                // The client's body broke the request: a downstream protocol error.
                Some(BodyFault::Client) => Flags::DPE,
                // Over the body limit: the client's request, not a failure; no flag.
                Some(BodyFault::TooLarge) => 0,
                None if source.is_connect() || source.tls_reason().is_some() => Flags::UF,
                None if source.is_timeout() => Flags::UT,
                None => Flags::UC,
            },
        };
        Self {
            flags: Flags(flag),
            limit: match error {
                ProxyError::Overloaded { overflow, .. } => Some(overflow.limit),
                _ => None,
            },
        }
    }
}

impl LocalReply {
    /// A request refused before routing for what the client sent: a framing or header
    /// problem is a downstream protocol error (`DPE`); a body over the limit gets no flag.
    pub(crate) fn of_rejection(rejection: &Rejection) -> Self {
        let flag = match rejection {
            Rejection::Framing(_) | Rejection::TooManyHeaders { .. } => Flags::DPE,
            Rejection::BodyTooLarge { .. } => 0,
        };
        Self {
            flags: Flags(flag),
            limit: None,
        }
    }
}

// === the shared part: what forwarding records ===

/// One observed request: what its owner (the connection's service, then the response body)
/// records from arrival to the end of the response, and what forwarding learns, which it
/// writes through the request's `ClientInfo` (passed to forwarding directly, or as a request
/// extension through filters). One allocation holds both.
#[derive(Debug)]
pub(crate) struct Exchange {
    tracer: Option<SdkTracer>,
    /// The request span's context, parent of the upstream and filter spans.
    span: Option<SpanContext>,
    start: Instant,
    bytes_in: AtomicU64,
    /// The [`Cluster::id`] of the backend forwarding chose (0: none yet). The request's owner
    /// finds the cluster again in the rule it holds, at the end: no reference is taken or
    /// given back per request, on a count that every request of the backend shares.
    backend: AtomicUsize,
    /// Locked briefly by each side in turn (each try, the response's head and its end; routing
    /// and forwarding only for a traced or unrouted request), never across an await:
    /// uncontended.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The endpoint of forwarding's last try.
    endpoint: Option<SocketAddr>,
    /// Boxed, as a span is large and rarely there.
    filters_span: Option<Box<Span>>,
    /// The access log line, its arrival fields written; `None` without an access log.
    line: Option<access_log::Line>,
    /// The listener of a request no route took, as logs write it. (A routed request's names
    /// come with its rule.)
    unrouted: Option<Arc<Names>>,
    status: u16,
    flags: Flags,
    limit: Option<Limit>,
    /// `None` without tracing.
    span: Option<Box<ServerSpan>>,
}

impl Exchange {
    fn child_context(&self) -> Option<(&SdkTracer, Context)> {
        Some((
            self.tracer.as_ref()?,
            Context::new().with_remote_span_context(self.span.clone()?),
        ))
    }

    /// Forwarding to `cluster` begins: the request filters are done.
    pub(crate) fn forwarding(&self, cluster: &Cluster) {
        self.backend.store(cluster.id(), Ordering::Relaxed);
        // Only a traced request has a filters span to end.
        if self.span.is_some()
            && let Some(mut span) = crate::sync::lock(&self.state).filters_span.take()
        {
            span.end();
        }
    }

    /// A try to `endpoint` begins: records it, starts its span and tells the upstream about it
    /// in `traceparent`.
    pub(crate) fn attempt(
        &self,
        req: &mut Request<RequestBody>,
        backend: &str,
        endpoint: SocketAddr,
    ) -> Attempt {
        crate::sync::lock(&self.state).endpoint = Some(endpoint);
        let span = self.child_context().map(|(tracer, parent)| {
            let span = tracer
                .span_builder(format!("upstream {backend}"))
                .with_kind(SpanKind::Client)
                .with_attributes([
                    KeyValue::new("novaedge.backend", backend.to_owned()),
                    KeyValue::new("server.address", endpoint.ip().to_string()),
                    KeyValue::new("server.port", i64::from(endpoint.port())),
                ])
                .start_with_context(tracer, &parent);
            let context = span.span_context();
            let traceparent = TraceParent {
                trace_id: u128::from_be_bytes(context.trace_id().to_bytes()),
                parent_id: u64::from_be_bytes(context.span_id().to_bytes()),
                flags: context.trace_flags().to_u8(),
            };
            req.headers_mut()
                .insert(TRACEPARENT, traceparent.to_header());
            Box::new(span)
        });
        Attempt { span }
    }
}

/// One try to an endpoint.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// Boxed: an `Attempt` is returned by value, and a span is large.
    span: Option<Box<Span>>,
}

impl Attempt {
    /// The endpoint answered with `response`'s head after `rtt`.
    pub(crate) fn answered<B>(
        self,
        observe: &Observe,
        cluster: &Cluster,
        response: &Response<B>,
        rtt: Duration,
    ) {
        if let Some(metrics) = observe.metrics.get() {
            cluster
                .rtt
                .get_or_init(|| metrics.upstream_rtt(&cluster.label))
                .observe(rtt);
        }
        if let Some(mut span) = self.span {
            let status = response.status().as_u16();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(""));
            }
            span.end();
        }
    }

    /// The try failed with `error`.
    pub(crate) fn failed(self, error: &dyn fmt::Display) {
        if let Some(mut span) = self.span {
            span.set_status(Status::error(error.to_string()));
            span.end();
        }
    }
}

// === the owned part: from arrival to the end of the response ===

/// A request being observed; see the module docs.
#[derive(Debug)]
pub(crate) struct Observed {
    request_id: Option<RequestId>,
    /// Made once, when the request arrives: from there it moves by pointer, into the response
    /// body in the end, and a request nobody observes carries only the pointer's room.
    exchange: Option<Arc<Exchange>>,
}

/// The request's own span, and its method, for the span's name once the request is routed.
#[derive(Debug)]
struct ServerSpan {
    span: Span,
    method: Method,
}

impl Observed {
    /// A request arrived from `client`: settles its id and trace context, and, if anything
    /// observes requests, starts following it. `client_text` is the connection's: its access
    /// log lines show the client's address formatted once.
    pub(crate) fn start(
        shared: &Arc<crate::engine::Shared>,
        req: &mut Request<Incoming>,
        client: SocketAddr,
        client_text: &OnceLock<ClientText>,
    ) -> Self {
        let observe = &shared.observe;
        let request_id = observe
            .config
            .request_id
            .then(|| request_id::ensure(req.headers_mut()));
        if !observe.active() {
            return Self {
                request_id,
                exchange: None,
            };
        }
        let start = Instant::now();
        let log = observe.config.access_log.as_ref();
        let tracer = observe.config.tracer.as_ref();
        // The wall clock only for what shows it: metrics alone need none.
        let time = match log.is_some() || tracer.is_some() {
            true => SystemTime::now(),
            false => SystemTime::UNIX_EPOCH,
        };
        let (span, seen) = match tracer {
            Some(tracer) => {
                let incoming = Seen::of(req.headers()).traceparent();
                let span = server_span(tracer, req, incoming, client, request_id.as_ref(), time);
                (Some(span), Seen::of(req.headers()))
            }
            None if log.is_some() => (None, Seen::of(req.headers())),
            // Metrics alone read no header.
            None => (None, Seen::default()),
        };
        let trace_id = match &span {
            Some(span) => Some(u128::from_be_bytes(
                span.span_context().trace_id().to_bytes(),
            )),
            None => seen.traceparent().map(|tp| tp.trace_id),
        };
        let line = log.map(|log| {
            log.begin(&access_log::Arrival {
                time,
                request_id: request_id.as_ref(),
                trace_id,
                client: client_text.get_or_init(|| ClientText::new(client)),
                method: req.method(),
                authority: authority(req.uri(), seen.host),
                path: req.uri().path().as_bytes(),
                version: req.version(),
                user_agent: seen.user_agent,
                referer: seen.referer,
            })
        });
        let exchange = Arc::new(Exchange {
            tracer: tracer.map(|t| t.tracer.clone()),
            span: span.as_ref().map(|s| s.span_context().clone()),
            start,
            bytes_in: AtomicU64::new(0),
            backend: AtomicUsize::new(0),
            state: Mutex::new(State {
                line,
                span: span.map(|span| {
                    Box::new(ServerSpan {
                        span,
                        method: req.method().clone(),
                    })
                }),
                ..State::default()
            }),
        });
        Self {
            request_id,
            exchange: Some(exchange),
        }
    }

    /// The request was routed on `listener` to `matched` (`None`: no route). A routed
    /// request's names come with its rule when the response ends ([`Observed::finish`]): here,
    /// only an unrouted or traced one needs anything.
    pub(crate) fn routed(&mut self, listener: &ListenerRuntime, matched: Option<&MatchTarget>) {
        let Some(exchange) = &self.exchange else {
            return;
        };
        if matched.is_some() && exchange.span.is_none() {
            return;
        }
        let mut state = crate::sync::lock(&exchange.state);
        let state = &mut *state;
        if matched.is_none() {
            state.unrouted = Some(listener.log.clone());
        }
        if let Some(server) = &mut state.span {
            let ServerSpan { span, method } = &mut **server;
            span.set_attribute(KeyValue::new(
                "novaedge.listener",
                listener.name.to_string(),
            ));
            if let Some(matched) = matched {
                let route = &matched.rule.route;
                span.update_name(format!("{method} {route}"));
                span.add_event(
                    "route matched",
                    vec![KeyValue::new("novaedge.route", route.to_string())],
                );
                span.set_attribute(KeyValue::new("novaedge.route", route.to_string()));
            }
        }
    }

    /// What forwarding shares with this request's observation, if it is observed: it goes to
    /// forwarding in the request's `ClientInfo`, not in an extension of its own, so that a
    /// request without filters (whose extensions are otherwise empty) allocates no extension
    /// map for it.
    pub(crate) fn exchange(&self) -> Option<Arc<Exchange>> {
        self.exchange.clone()
    }

    /// The route's filters start working on the request.
    pub(crate) fn filters_start(&mut self) {
        let Some(exchange) = &self.exchange else {
            return;
        };
        if let Some((tracer, parent)) = exchange.child_context() {
            let span = tracer
                .span_builder("filters")
                .with_kind(SpanKind::Internal)
                .start_with_context(tracer, &parent);
            crate::sync::lock(&exchange.state).filters_span = Some(Box::new(span));
        }
    }

    /// The client's request body, counted when observed.
    pub(crate) fn request_body(&self, body: Incoming) -> RequestBody {
        match &self.exchange {
            // Nothing to count (a GET, say): no need to wrap.
            Some(_) if body.is_end_stream() => RequestBody::from(body),
            None => RequestBody::from(body),
            Some(exchange) => RequestBody::filtered(CountingBody {
                inner: body,
                exchange: exchange.clone(),
            }),
        }
    }

    /// The response head is ready: adds the request id, and follows the body to its end if
    /// the request is observed, with the engine's `shared` state to report to then and the
    /// rule the request `matched` (the request's own references, handed over rather than
    /// cloned again).
    pub(crate) fn finish(
        self,
        mut response: Response<ProxyBody>,
        shared: Arc<crate::engine::Shared>,
        matched: Option<Arc<MatchTarget>>,
    ) -> Response<ObservedBody> {
        if let Some(id) = self.request_id {
            response
                .headers_mut()
                .insert(REQUEST_ID_HEADER, id.into_header());
        }
        let observed = self.exchange.map(|exchange| {
            let mut state = crate::sync::lock(&exchange.state);
            state.status = response.status().as_u16();
            let extensions = response.extensions();
            if let Some(reply) = extensions.get::<LocalReply>() {
                state.flags = reply.flags;
                state.limit = reply.limit;
            } else if extensions.get::<RateLimited>().is_some() {
                state.flags.set(Flags::RL);
            } else if extensions.get::<RequestTimedOut>().is_some()
                || extensions.get::<TryTimedOut>().is_some()
            {
                state.flags.set(Flags::UT);
            }
            drop(state);
            Ending {
                exchange,
                shared,
                matched,
            }
        });
        response.map(|inner| ObservedBody {
            inner,
            bytes: 0,
            observed,
        })
    }
}

impl Exchange {
    /// The response to a request that `matched` a rule (or none) ended after `bytes_out` body
    /// bytes; `flags` says how if not cleanly.
    fn complete(
        &self,
        observe: &Observe,
        matched: Option<&MatchTarget>,
        bytes_out: u64,
        flags: Flags,
    ) {
        let duration = self.start.elapsed();
        let rule = matched.map(|m| &*m.rule);
        let cluster = rule.and_then(|r| r.backends.find(self.backend.load(Ordering::Relaxed)));
        let mut state = crate::sync::lock(&self.state);
        let state = &mut *state;
        state.flags.set(flags.0);
        if let Some(metrics) = observe.metrics.get() {
            let route = rule.map_or(&observe.none, |r| &r.route);
            let backend = cluster.map_or(&observe.none, |c| &c.label);
            metrics.request(route, backend, state.status, duration);
            if let (true, Some(limit)) = (state.flags.has(Flags::UO), state.limit) {
                metrics.overflow(backend, limit);
            }
            if state.flags.has(Flags::RL) {
                metrics.rate_limited(route);
            }
        }
        if let Some(server) = state.span.take() {
            let mut span = server.span;
            if let Some(mut filters) = state.filters_span.take() {
                filters.end();
            }
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(state.status),
            ));
            if let Some(cluster) = cluster {
                span.set_attribute(KeyValue::new("novaedge.backend", cluster.name.clone()));
            }
            span.set_attribute(KeyValue::new(
                "novaedge.response_flags",
                state.flags.to_string(),
            ));
            if state.status >= 500 {
                span.set_status(Status::error(""));
            }
            span.end();
        }
        if let (Some(log), Some(line)) = (&observe.config.access_log, state.line.take()) {
            log.log(
                line,
                &access_log::Outcome {
                    status: state.status,
                    bytes_in: self.bytes_in.load(Ordering::Relaxed),
                    bytes_out,
                    duration,
                    upstream: state.endpoint,
                    route: rule
                        .map(|r| &*r.log)
                        .or(state.unrouted.as_deref())
                        .unwrap_or(Names::no_route()),
                    backend: cluster.map_or(Names::no_backend(), |c| &c.log),
                    flags: state.flags,
                },
            );
        }
    }
}

/// The request headers the observers read.
#[derive(Debug, Default)]
struct Seen<'a> {
    host: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    referer: Option<&'a HeaderValue>,
    /// The only `traceparent`; `None` when there are none or several.
    traceparent: Option<&'a HeaderValue>,
}

/// Requests with up to this many header lines are read in one pass over them; larger ones by
/// looking each header up. A lookup hashes the name and probes the map, where a pass compares
/// a few bytes per line: for the handful of headers most requests carry, one pass costs less
/// than the four lookups.
const SCAN_LINES: usize = 16;

impl<'a> Seen<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        if headers.len() > SCAN_LINES {
            let mut traceparents = headers.get_all(&TRACEPARENT).iter();
            return Self {
                host: headers.get(header::HOST),
                user_agent: headers.get(header::USER_AGENT),
                referer: headers.get(header::REFERER),
                traceparent: match (traceparents.next(), traceparents.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                },
            };
        }
        let mut seen = Self::default();
        let mut traceparents = 0;
        // A name's first line is the one `HeaderMap::get` finds.
        for (name, value) in headers {
            let slot = if name == header::HOST {
                &mut seen.host
            } else if name == header::USER_AGENT {
                &mut seen.user_agent
            } else if name == header::REFERER {
                &mut seen.referer
            } else if name == TRACEPARENT {
                traceparents += 1;
                &mut seen.traceparent
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        if traceparents > 1 {
            seen.traceparent = None;
        }
        seen
    }

    /// The request's `traceparent`, if it has exactly one and it is valid.
    fn traceparent(&self) -> Option<TraceParent> {
        TraceParent::parse(self.traceparent?.as_bytes())
    }
}

/// The request's server span, child of the client's `traceparent` if it sent one.
fn server_span(
    tracer: &OtlpTracer,
    req: &mut Request<Incoming>,
    incoming: Option<TraceParent>,
    client: SocketAddr,
    request_id: Option<&RequestId>,
    time: SystemTime,
) -> Span {
    let parent = match incoming {
        Some(tp) => Context::new().with_remote_span_context(tp.span_context(req.headers())),
        None => {
            // A new trace: a `tracestate` without its `traceparent` means nothing.
            req.headers_mut().remove(TRACESTATE);
            Context::new()
        }
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", req.method().as_str().to_owned()),
        KeyValue::new(
            "url.path",
            capped(req.uri().path(), access_log::MAX_PATH).to_owned(),
        ),
        KeyValue::new("network.protocol.version", protocol_version(req.version())),
        KeyValue::new("client.address", client.ip().to_string()),
    ];
    let host = req.headers().get(header::HOST);
    if let Some(authority) = authority(req.uri(), host).and_then(|a| std::str::from_utf8(a).ok()) {
        attributes.push(KeyValue::new(
            "server.address",
            capped(authority, access_log::MAX_HEADER).to_owned(),
        ));
    }
    if let Some(id) = request_id.and_then(|id| id.header().to_str().ok()) {
        attributes.push(KeyValue::new("novaedge.request_id", id.to_owned()));
    }
    tracer
        .tracer
        .span_builder(req.method().as_str().to_owned())
        .with_kind(SpanKind::Server)
        .with_start_time(time)
        .with_attributes(attributes)
        .start_with_context(&tracer.tracer, &parent)
}

/// The request's authority: the URI's (HTTP/2, absolute-form), else its `host` header.
fn authority<'a>(uri: &'a http::Uri, host: Option<&'a HeaderValue>) -> Option<&'a [u8]> {
    match uri.authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => host.map(HeaderValue::as_bytes),
    }
}

fn capped(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "0.9",
    }
}

// === bodies ===

pin_project_lite::pin_project! {
    /// The client's request body, its bytes counted for the access log.
    #[derive(Debug)]
    struct CountingBody {
        #[pin]
        inner: Incoming,
        exchange: Arc<Exchange>,
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.exchange
                .bytes_in
                .fetch_add(data.remaining() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// Every response body on its way to the client; when the request is observed, followed
    /// to its end, and then the request is complete. The body is not boxed for it: a response
    /// nobody observes pays two pointers' room and a branch per frame.
    #[derive(Debug)]
    pub(crate) struct ObservedBody {
        #[pin]
        inner: ProxyBody,
        bytes: u64,
        observed: Option<Ending>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(ending) = this.observed.take() {
                // Dropped unread: fine if there was nothing left to send (HEAD, 204, 304),
                // otherwise the client went away first.
                let flags = match this.inner.is_end_stream() {
                    true => Flags::default(),
                    false => Flags(Flags::DC),
                };
                ending.complete(*this.bytes, flags);
            }
        }
    }
}

/// What an observed response's body reports to when it ends.
#[derive(Debug)]
struct Ending {
    exchange: Arc<Exchange>,
    shared: Arc<crate::engine::Shared>,
    /// The rule the request matched: its names, and the backends forwarding chose from.
    matched: Option<Arc<MatchTarget>>,
}

impl Ending {
    fn complete(self, bytes_out: u64, flags: Flags) {
        self.exchange.complete(
            &self.shared.observe,
            self.matched.as_deref(),
            bytes_out,
            flags,
        );
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if this.observed.is_none() {
            return polled;
        }
        let flags = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.remaining() as u64;
                }
                return polled;
            }
            Poll::Pending => return polled,
            Poll::Ready(None) => Flags::default(),
            Poll::Ready(Some(Err(e))) => {
                if e.is::<novaedge_filters::timeout::ResponseBodyTimeout>() {
                    Flags(Flags::UT)
                } else if e.is::<UpstreamBodyIdle>() {
                    Flags(Flags::SI)
                } else {
                    Flags(Flags::UC)
                }
            }
        };
        if let Some(ending) = this.observed.take() {
            ending.complete(*this.bytes, flags);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_display_like_envoy() {
        let mut flags = Flags::default();
        assert_eq!(flags.to_string(), "-");
        flags.set(Flags::UO);
        assert_eq!(flags.to_string(), "UO");
        flags.set(Flags::NR);
        flags.set(Flags::SD);
        assert_eq!(flags.to_string(), "NR,UO,SD");
    }

    #[test]
    fn one_pass_and_lookups_read_the_same_headers() {
        const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        // A small map is read in one pass, a large one by lookups.
        for filler in [0, SCAN_LINES + 1] {
            let mut headers = http::HeaderMap::new();
            for i in 0..filler {
                let name = http::HeaderName::from_bytes(format!("x-filler-{i}").as_bytes());
                headers.insert(name.unwrap(), HeaderValue::from_static("f"));
            }
            headers.append(header::USER_AGENT, HeaderValue::from_static("ua-1"));
            headers.append(header::USER_AGENT, HeaderValue::from_static("ua-2"));
            headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
            headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
            let seen = Seen::of(&headers);
            assert_eq!(seen.user_agent.unwrap(), "ua-1", "{filler} fillers");
            assert_eq!(seen.host.unwrap(), "shop.example");
            assert!(seen.referer.is_none());
            assert_eq!(seen.traceparent().unwrap().parent_id, 0x00f0_67aa_0ba9_02b7);
            // Two `traceparent` lines: neither counts.
            headers.append(TRACEPARENT, HeaderValue::from_static(VALID));
            assert!(
                Seen::of(&headers).traceparent().is_none(),
                "{filler} fillers"
            );
        }
    }

    #[test]
    fn capped_cuts_on_char_boundaries() {
        assert_eq!(capped("abcdef", 3), "abc");
        assert_eq!(capped("aé", 2), "a");
        assert_eq!(capped("ab", 10), "ab");
    }
}
