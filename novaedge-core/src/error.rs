//! Why a request could not be proxied, and the one place that turns that into a response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;
use crate::framing::Refusal;
use crate::upstream::BodyFault;

/// Set on a response the proxy failed because a circuit breaker limit was reached; the value
/// names the limit (`max_requests`, `max_pending_requests`, `max_connections`).
pub const OVERLOADED_HEADER: &str = "x-novaedge-overloaded";

/// Set on a `502` whose upstream failed at the TLS layer; the value says why, as rustls puts it:
/// `invalid peer certificate: UnknownIssuer` (the server's certificate did not verify),
/// `received fatal alert: CertificateRequired` (the server wanted a client certificate),
/// `no ALPN h2` (a gRPC backend's server would not speak HTTP/2), ...
pub const UPSTREAM_TLS_HEADER: &str = "x-novaedge-upstream-tls";

/// Every way the proxy itself (not the upstream) can fail a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("request path rejected: {0}")]
    BadPath(#[source] novaedge_router::PathError),
    #[error("no route matches the request")]
    NoRoute,
    #[error("the request names no host to redirect to")]
    NoHost,
    #[error("the route has no backend to send to")]
    NoBackend,
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("backend {backend} has no ready endpoint")]
    NoEndpoint { backend: String },
    #[error("upgrade requested to HTTP/2 backend {backend}")]
    UpgradeToH2 { backend: String },
    #[error("backend {backend}: {overflow}")]
    Overloaded {
        backend: String,
        overflow: novaedge_health::Overflow,
    },
    #[error("upstream {endpoint} of backend {backend}: {source}")]
    Upstream {
        backend: String,
        endpoint: std::net::SocketAddr,
        #[source]
        source: crate::upstream::UpstreamError,
    },
}

impl ProxyError {
    /// The status a client sees and a short body saying why, without internal details.
    fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad request path\n"),
            ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no route\n"),
            ProxyError::NoHost => (StatusCode::BAD_REQUEST, "no host\n"),
            // Gateway API: a rule whose backends are all invalid or weighted 0 answers 500.
            ProxyError::NoBackend => (StatusCode::INTERNAL_SERVER_ERROR, "no backend\n"),
            ProxyError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            ProxyError::NoEndpoint { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n")
            }
            ProxyError::Overloaded { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream overloaded\n")
            }
            ProxyError::UpgradeToH2 { .. } => (
                StatusCode::BAD_GATEWAY,
                "upgrade not supported by upstream\n",
            ),
            ProxyError::Upstream { source, .. } if source.is_timeout() => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream response timeout\n")
            }
            ProxyError::Upstream { source, .. } => match source.body_fault() {
                Some(BodyFault::TooLarge) => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
                }
                Some(BodyFault::Client) => (StatusCode::BAD_REQUEST, "bad request body\n"),
                None => Self::upstream_failure(source),
            },
        }
    }

    /// The answer to an upstream that failed the request.
    fn upstream_failure(source: &crate::upstream::UpstreamError) -> (StatusCode, &'static str) {
        match source {
            source if source.tls_reason().is_some() => {
                (StatusCode::BAD_GATEWAY, "upstream TLS error\n")
            }
            source if source.is_connect() => (StatusCode::BAD_GATEWAY, "upstream connect error\n"),
            _ => (StatusCode::BAD_GATEWAY, "upstream request failed\n"),
        }
    }

    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let (status, reason) = self.status_and_reason();
        let overloaded = match &self {
            ProxyError::Overloaded { overflow, .. } => Some(overflow.limit),
            _ => None,
        };
        let tls_reason = match &self {
            ProxyError::Upstream { source, .. } => source.tls_reason(),
            _ => None,
        };
        if let Some(tls) = &tls_reason {
            tracing::warn!(%status, error = %self, %tls, "request failed");
        } else if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request not routed");
        }
        let mut response = Response::new(ProxyBody::local(Bytes::from_static(reason.as_bytes())));
        *response.status_mut() = status;
        response
            .extensions_mut()
            .insert(crate::observe::LocalReply::of(&self));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(limit) = overloaded {
            // Which limit refused the request, as Envoy's `x-envoy-overloaded`, but naming it.
            if let Ok(value) = HeaderValue::try_from(limit.to_string()) {
                response.headers_mut().insert(OVERLOADED_HEADER, value);
            }
        }
        if let Some(value) = tls_reason.and_then(|r| HeaderValue::try_from(r).ok()) {
            response.headers_mut().insert(UPSTREAM_TLS_HEADER, value);
        }
        response
    }
}

/// A request refused before routing for what the client sent. (Not a [`ProxyError`] variant:
/// those are the failures of proxying, each with its access log flag.)
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("request framing refused: {0}")]
    Framing(Refusal),
    #[error("{count} request header fields, more than {limit}")]
    TooManyHeaders { count: usize, limit: usize },
    #[error("request body of {length} bytes, more than {limit}")]
    BodyTooLarge { length: u64, limit: u64 },
}

impl Rejection {
    /// The response; on HTTP/1.1 it closes the connection when the request's body is left
    /// unread or its framing was refused (what follows it cannot be trusted).
    pub(crate) fn into_response(self, http1: bool) -> Response<ProxyBody> {
        let (status, reason, close) = match &self {
            Rejection::Framing(Refusal::HeadTooLarge) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large\n",
                true,
            ),
            Rejection::Framing(_) => (StatusCode::BAD_REQUEST, "bad request framing\n", true),
            Rejection::TooManyHeaders { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request header fields\n",
                false,
            ),
            Rejection::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large\n",
                true,
            ),
        };
        tracing::debug!(%status, error = %self, "request rejected");
        let mut response = Response::new(ProxyBody::local(Bytes::from_static(reason.as_bytes())));
        *response.status_mut() = status;
        response
            .extensions_mut()
            .insert(crate::observe::LocalReply::of_rejection(&self));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if close && http1 {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
