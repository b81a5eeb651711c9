//! The NovaEdge data plane.
//!
//! An [`Engine`] owns the listening sockets, the upstream connection pools and the current
//! runtime: routers, backends and balancers compiled from a
//! [`ConfigSnapshot`](novaedge_snapshot::ConfigSnapshot). [`Engine::apply`] compiles a new
//! runtime completely, binds any new sockets, and then swaps the runtime in with one atomic
//! pointer store:
//!
//! - a request that already picked its route finishes on the runtime it started on;
//! - sockets of listeners that stay are never closed, so reloads cut no client connection, and
//!   WebSockets keep going;
//! - upstream pools are shared by all runtimes, so connections to endpoints that stay are reused,
//!   and those to removed endpoints drain: in-flight requests finish, idle connections expire;
//! - a snapshot that fails validation or compilation, or whose sockets cannot be bound, changes
//!   nothing: the last good runtime keeps serving.
//!
//! Clients speak HTTP/1.1 or HTTP/2 with prior knowledge on the same port (told apart by the
//! connection preface). Upstreams speak HTTP/1.1 or h2c per backend; gRPC is HTTP/2 end to end
//! with trailers; HTTP/1.1 upgrades (WebSocket) are spliced byte for byte after the 101.
//!
//! Backends may be reached over TLS (and mTLS): the server is verified against the backend's CA
//! bundle or the web PKI roots, by SNI name or endpoint IP; HTTP/1.1 backends speak HTTP/2 when
//! the server picks `h2` by ALPN. A failed TLS handshake is a failed connect, answered `502`
//! with [`UPSTREAM_TLS_HEADER`] saying why; TLS material that cannot be used refuses the
//! snapshot ([`UpstreamTlsError`]).
//!
//! # Endpoint health
//!
//! Each backend's [`HealthPolicy`](novaedge_snapshot::HealthPolicy) becomes `novaedge-health`
//! detectors whose verdicts mark endpoints in the backend's balancer, which skips unhealthy ones
//! down to its panic threshold:
//!
//! - passive outlier detection on every request outcome, on by default: three connect failures
//!   or resets in a row eject an endpoint (never more than half of a backend);
//! - a request that could not connect was never sent and goes to another endpoint (up to three),
//!   so a dead endpoint costs a client nothing while a live one exists;
//! - optional active probes (TCP, HTTP, gRPC health) on connections of their own; with them, an
//!   endpoint gets traffic only once its first probe passes;
//! - circuit breakers: `max_requests` (held until the response body ends),
//!   `max_pending_requests` (while a new upstream connection is made) and `max_connections`
//!   (for each upstream connection's life). Overflow is answered at once with 503 and
//!   [`OVERLOADED_HEADER`] naming the limit. `max_retries` is carried for the retry policy;
//!   re-dispatching a request that never left is not a retry.
//!
//! Health state, load and breaker counts survive reloads; detectors are rebuilt only when
//! their own settings change.
//!
//! # Limits
//!
//! What one client, or one broken backend, can make the proxy do is bounded
//! ([`EngineConfig`] has the values and their defaults):
//!
//! - HTTP/1.1 requests that could be read two ways (request smuggling) are answered `400`
//!   and the connection is closed: hyper refuses most of them, the proxy's own framing checks
//!   (which follow the bytes hyper reads) the rest (both `Content-Length` and `Transfer-Encoding`, repeated
//!   `Content-Length`, a `Transfer-Encoding` other than one `chunked`, bare LF line ends). A
//!   chunked body that is malformed fails its request with `400` too.
//! - A request head over the size limit is answered `431` and the connection closed; more
//!   header fields than allowed, `431`; a body over the body limit, `413` (and, on HTTP/1.1,
//!   the connection closed, since the rest of the body is left unread).
//! - HTTP/1.1 heads must arrive within the header read timeout (the connection is closed
//!   without an answer); connections with nothing in flight close after the idle timeout
//!   (HTTP/2 with GOAWAY `NO_ERROR`); the last request a connection may carry closes it.
//!   Connections over a listener's limit are reset as soon as they are accepted.
//! - An HTTP/1.1 connection quiet for the park time (250 ms) is parked until its client sends
//!   again: hyper's buffers are dropped, and a cleartext connection leaves its task for a slot
//!   in its listener's parking lot, one epoll instance that waits for all of them. An idle
//!   connection holds about 400 bytes of memory (with jemalloc, as `novaedge` runs; glibc's
//!   allocator keeps more) instead of 20 KB. A new connection gets hyper's buffers with its
//!   first bytes.
//! - HTTP/2: concurrent streams (more are refused, `RST_STREAM REFUSED_STREAM`), header list
//!   size (`431`), flow-control windows, rapid reset and CONTINUATION floods (GOAWAY
//!   `ENHANCE_YOUR_CALM`); PING and SETTINGS floods are pushed back (the h2 crate reads no
//!   further until it has answered), protocol errors end the connection with GOAWAY.
//! - Upstreams: a response head over the limits, garbage, or a connection closed before the
//!   response is a `502`; no response head within the response timeout, a `504`; a response
//!   cut off midway is cut off for the client too (HTTP/1.1: the connection closes before the
//!   declared length or the last chunk; HTTP/2: `RST_STREAM INTERNAL_ERROR`). A request body
//!   the client breaks or that goes past the limit is not held against the endpoint's health.
//!
//! # Observability
//!
//! Every request gets an `x-request-id` (the client's if sane), sent upstream and returned.
//! Off by default and free when off: access logs (JSON or Apache combined, written by a task
//! of their own, dropped rather than waited for), request spans exported over OTLP/gRPC with
//! W3C `traceparent` propagation ([`ObserveConfig`]), and Prometheus request metrics
//! ([`Engine::register_metrics`]). See [`observe`].

// One exception, with its reasons: the parking lot's epoll descriptor given to tokio (`lot`).
#![deny(unsafe_code)]

mod ascii;
mod body;
mod config;
mod conn;
mod engine;
mod error;
mod filters;
mod framing;
mod headers;
mod health;
mod introspect;
mod listener;
mod lot;
pub mod observe;
mod proxy;
pub mod routing;
mod runtime;
mod sync;
mod tls;
mod upstream;
mod upstream_tls;

pub use config::EngineConfig;
pub use engine::{ApplyError, Engine, ShutdownReport};
pub use error::{OVERLOADED_HEADER, UPSTREAM_TLS_HEADER};
pub use filters::FilterError;
pub use introspect::{BackendView, EndpointView};
pub use observe::{AccessLog, AccessLogFormat, ObserveConfig, OtlpConfig, OtlpTracer, TraceError};
pub use runtime::CompileError;
pub use tls::TlsError;
pub use upstream_tls::{TlsProblem, UpstreamTlsError};
