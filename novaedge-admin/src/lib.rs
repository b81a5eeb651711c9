//! The admin listener of every NovaEdge process (`novaedge run`, the agent, the controller): a
//! small HTTP/1.1 server, apart from the data plane, for probes, scraping and looking inside.
//!
//! | path | answer |
//! |---|---|
//! | `GET /live` | `200 live` while the process serves HTTP at all |
//! | `GET /ready` | `200 ready`, or `503` with the reason the process is not ready yet |
//! | `GET /metrics` | every metric of the [`Registry`]: OpenMetrics text when the client accepts it (Prometheus asks for it), the classic Prometheus text format (0.0.4) otherwise |
//! | `GET /<view>` | a JSON view added with [`AdminBuilder::view`] (`/config_dump`, `/vips`, ...) |
//!
//! Anything else is `404` (listing the paths) or `405` for a method other than `GET`/`HEAD`.
//! Views are computed per request; they never see a request body or query, so they cannot be
//! used to change anything.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use novaedge_admin::Admin;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9901").await?;
//! let admin = Admin::builder()
//!     .ready(|| Ok(()))
//!     .view("config_dump", || async { serde_json::json!({"listeners": []}) });
//! admin.serve(listener, std::future::pending()).await
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The content type of `/metrics` in OpenMetrics.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of `/metrics` in the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type View = Arc<dyn Fn() -> BoxFuture<serde_json::Value> + Send + Sync>;
type Ready = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Entry point: [`Admin::builder`].
#[derive(Debug)]
pub struct Admin;

impl Admin {
    /// An admin listener with an empty registry, always ready, and no views.
    pub fn builder() -> AdminBuilder {
        AdminBuilder {
            registry: Registry::default(),
            ready: Arc::new(|| Ok(())),
            views: BTreeMap::new(),
        }
    }
}

/// What the admin listener serves.
pub struct AdminBuilder {
    registry: Registry,
    ready: Ready,
    views: BTreeMap<String, View>,
}

impl std::fmt::Debug for AdminBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBuilder")
            .field("registry", &self.registry)
            .field("views", &self.views.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl AdminBuilder {
    /// The registry `/metrics` encodes, for the process's parts to register their metrics in.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// What `/ready` answers: `Err(reason)` gives `503 reason`.
    pub fn ready(mut self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.ready = Arc::new(check);
        self
    }

    /// Serves `GET /<name>` with the JSON `view` computes.
    pub fn view<F, Fut>(mut self, name: &str, view: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = serde_json::Value> + Send + 'static,
    {
        let view: View = Arc::new(move || Box::pin(view()));
        self.views
            .insert(format!("/{}", name.trim_start_matches('/')), view);
        self
    }

    /// Serves connections from `listener` until `shutdown` resolves; connections open then are
    /// dropped (the admin listener has no requests worth draining).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let state = Arc::new(self);
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of descriptors and the like: keep serving the connections we have.
                    Err(e) => {
                        tracing::warn!(error = %e, "admin listener: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let state = state.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.answer(&request).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "admin connection failed");
                }
            });
        }
        connections.shutdown().await;
        Ok(())
    }

    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        }
        let response = match request.uri().path() {
            "/live" => text(StatusCode::OK, "live\n".into()),
            "/ready" => match (self.ready)() {
                Ok(()) => text(StatusCode::OK, "ready\n".into()),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/metrics" => {
                let openmetrics = request
                    .headers()
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) if openmetrics => typed(StatusCode::OK, OPENMETRICS, body),
                    Ok(()) => typed(StatusCode::OK, PROMETHEUS_TEXT, classic_text(&body)),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot encode the metrics: {e}\n"),
                    ),
                }
            }
            path => match self.views.get(path) {
                Some(view) => {
                    let value = view().await;
                    let mut body = serde_json::to_string_pretty(&value).unwrap_or_default();
                    body.push('\n');
                    typed(StatusCode::OK, "application/json", body)
                }
                None => {
                    let mut paths = vec!["/live", "/ready", "/metrics"];
                    paths.extend(self.views.keys().map(String::as_str));
                    text(
                        StatusCode::NOT_FOUND,
                        format!("no such path; try {}\n", paths.join(" ")),
                    )
                }
            },
        };
        if request.method() == Method::HEAD {
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, Full::new(Bytes::new()));
        }
        response
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for clients that
/// do not ask for OpenMetrics (`curl`, `promtool check metrics`). The two differ, for what
/// prometheus-client writes, in counters, whose family is named without `_total` in OpenMetrics
/// but with it in the classic format, and in the `# EOF` and `# UNIT` lines.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    typed(status, "text/plain; charset=utf-8", body)
}

fn typed(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
