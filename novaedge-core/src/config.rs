//! Engine settings that come from the process, not from the snapshot.
//!
//! The client and upstream limits default to what Envoy does at the edge (Envoy's
//! `max_request_headers_kb` is 60 and its `max_headers_count` 100, for instance) unless noted;
//! each field says where its default comes from. What a client sees when it crosses one is in
//! the crate docs ([`crate`], "Limits").

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::observe::ObserveConfig;

/// Process-level settings for an [`Engine`](crate::Engine).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Address that listeners without their own bind address use.
    pub default_bind: IpAddr,
    /// How long to wait for a TCP connection (and TLS handshake) to an upstream endpoint.
    pub connect_timeout: Duration,
    /// Idle upstream connections older than this are closed.
    pub upstream_idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per upstream endpoint; more are closed.
    pub max_idle_per_endpoint: usize,
    /// How long a client has to send a complete HTTP/1.1 request head: the first one from the
    /// moment its connection is accepted (or its TLS handshake done), later ones from their
    /// first byte. The time a keep-alive connection waits for that first byte is
    /// [`idle_timeout`](Self::idle_timeout)'s. Slow clients (slowloris) are cut off with the
    /// connection. 10 s: a real client sends a head in one or two packets.
    pub header_read_timeout: Duration,
    /// A client connection with no request in flight for this long is closed: HTTP/1.1 between
    /// requests, HTTP/2 with no open stream (after a GOAWAY). 60 s, nginx's keep-alive
    /// timeout is 75 s; Envoy's idle timeout of an hour is meant for trusted clients.
    pub idle_timeout: Duration,
    /// An HTTP/1.1 client connection with no request in flight for this long is parked: hyper's
    /// state and buffers (about 17 KB) are dropped until the client sends again. A cleartext
    /// connection quiet for [`lot_after`](Self::lot_after) more then leaves its task too, and
    /// waits as a slot of about 90 bytes in its listener's parking lot (an epoll instance of
    /// its own): about 250-400 bytes of RSS per idle connection in all under `novaedge`'s
    /// allocator (jemalloc; glibc's keeps more of the freed buffers' holes), `bench/compare.sh`
    /// measures it. A TLS one keeps its task (about 2 KB) beside rustls' session. Resuming
    /// costs about what a new connection's HTTP state and task do, and a few system calls;
    /// 250 ms keeps that to at most four times a second on a connection, and off connections
    /// busy with requests. Not above [`idle_timeout`](Self::idle_timeout).
    pub park_after: Duration,
    /// A parked cleartext HTTP/1.1 connection waits this much longer in its task before it
    /// moves to the parking lot. Waking from the lot costs about 20 us of CPU more than
    /// waking in the task (system calls to move the socket between epoll instances, a task
    /// spawned); 1 s keeps that off clients that pause briefly between requests, at about
    /// 2 KB more for each connection in its first second of quiet. `0`: at once.
    pub lot_after: Duration,
    /// Bytes of an HTTP/1.1 request line and header section, and of an HTTP/2 header list (as
    /// HTTP/2 counts it: names, values and 32 per field). Larger heads are answered `431`.
    /// 60 KiB as Envoy.
    pub max_request_headers_bytes: usize,
    /// Header fields of a request; more are answered `431`. 100 as Envoy.
    pub max_request_headers: usize,
    /// Bytes of a request body; a larger one is answered `413` (at once when its
    /// `Content-Length` says so, else when the limit is crossed). `None`: no limit, as Envoy
    /// for proxied streams (bodies stream through, they are never buffered whole).
    pub max_request_body_bytes: Option<u64>,
    /// Requests one client connection may carry; the response to the last closes it
    /// (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY once its open streams are done). `None`:
    /// no limit, as Envoy.
    pub max_requests_per_connection: Option<u64>,
    /// Open client connections per listener; a connection over the limit is closed as soon
    /// as it is accepted, so clients learn at once instead of waiting in the accept queue.
    /// `None`: no limit. 100 000: far above what one proxy serves, low enough that a flood
    /// runs into it before it runs the process out of file descriptors and memory.
    pub max_connections_per_listener: Option<usize>,
    /// Streams a client may have open on one HTTP/2 connection; more are refused
    /// (`RST_STREAM REFUSED_STREAM`). 100, the smallest value RFC 9113 section 6.5.2
    /// recommends: it bounds what one connection can make the proxy hold (each stream may
    /// buffer a stream window of request body), and clients that want more open more
    /// connections. Envoy allows 2^31-1; nginx 128.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each client stream: how much request body a client may
    /// send ahead of the upstream reading it. 1 MiB keeps a 100 ms path at ~10 MB/s per
    /// stream (the protocol's default of 64 KiB allows ~650 KB/s).
    pub h2_stream_window: u32,
    /// HTTP/2 flow-control window of a whole client connection, shared by its streams; with
    /// [`h2_stream_window`](Self::h2_stream_window) it bounds what one connection buffers.
    /// 2 MiB.
    pub h2_connection_window: u32,
    /// Listening sockets' queue of connections not yet accepted.
    pub listen_backlog: i32,
    /// How long a client has to complete a TLS handshake on an HTTPS listener.
    pub tls_handshake_timeout: Duration,
    /// How long an upstream has to send the response head once the request is sent, for rules
    /// without timeouts of their own (`timeouts.request` or `timeouts.backend_request`, which
    /// take over when set). A late answer is a `504`. `None`: wait as long as the client
    /// does. 60 s, as nginx's `proxy_read_timeout`; a response that has begun streams for as
    /// long as it takes.
    pub upstream_response_timeout: Option<Duration>,
    /// How long an upstream response body may go without sending anything before the proxy
    /// gives up on it: the client's response is cut off (HTTP/2 stream reset, HTTP/1.1
    /// connection closed, never a clean end), and so is the upstream exchange. Rule timeouts
    /// do not change it. `None`: wait for ever. 5 minutes, as Envoy's stream idle timeout:
    /// long enough for server-sent events and gRPC streams with keep-alives, short enough that
    /// a stalled backend does not hold connections for good.
    pub upstream_body_idle_timeout: Option<Duration>,
    /// Bytes of an upstream's response head (status line and headers; for HTTP/2 the header
    /// list). A larger one fails the request with `502`. At least 8 KiB for HTTP/1.1. 60 KiB
    /// as Envoy's `max_response_headers_kb`.
    pub max_response_headers_bytes: usize,
    /// Header fields of an upstream HTTP/1.1 response; more fail the request with `502`. 100 as
    /// Envoy.
    pub max_response_headers: usize,
    /// Request ids, access logs and request spans ([`ObserveConfig`]); metrics are turned on
    /// by [`Engine::register_metrics`](crate::Engine::register_metrics).
    pub observe: ObserveConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connect_timeout: Duration::from_secs(5),
            upstream_idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            park_after: Duration::from_millis(250),
            lot_after: Duration::from_secs(1),
            max_request_headers_bytes: 60 * 1024,
            max_request_headers: 100,
            max_request_body_bytes: None,
            max_requests_per_connection: None,
            max_connections_per_listener: Some(100_000),
            h2_max_concurrent_streams: 100,
            h2_stream_window: 1024 * 1024,
            h2_connection_window: 2 * 1024 * 1024,
            listen_backlog: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            upstream_response_timeout: Some(Duration::from_secs(60)),
            upstream_body_idle_timeout: Some(Duration::from_secs(300)),
            max_response_headers_bytes: 60 * 1024,
            max_response_headers: 100,
            observe: ObserveConfig::default(),
        }
    }
}
