//! Why a request could not be proxied, and the one place that turns that into a response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::ProxyBody;

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
            ProxyError::Upstream { source, .. } if source.tls_reason().is_some() => {
                (StatusCode::BAD_GATEWAY, "upstream TLS error\n")
            }
            ProxyError::Upstream { source, .. } if source.is_connect() => {
                (StatusCode::BAD_GATEWAY, "upstream connect error\n")
            }
            ProxyError::Upstream { .. } => (StatusCode::BAD_GATEWAY, "upstream request failed\n"),
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
