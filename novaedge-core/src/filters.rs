//! A route rule's filters: the `novaedge-filters` layers its snapshot configuration asks for,
//! composed in the crate's documented order around the forwarding of one request.

use std::convert::Infallible;
use std::future::Future;

use http::{Request, Response};
use hyper::body::Incoming;
use novaedge_filters::headers::{
    HeaderModifier, RequestHeaderModifierLayer, ResponseHeaderModifierLayer,
};
use novaedge_filters::redirect::{RedirectLayer, RequestRedirect};
use novaedge_filters::rewrite::{PathModifier, UrlRewrite, UrlRewriteLayer};
use novaedge_snapshot as snapshot;
use tower::{ServiceBuilder, ServiceExt};

use crate::body::ProxyBody;

/// The compiled filters of one rule; built once per snapshot, shared by its requests.
#[derive(Debug, Clone)]
pub(crate) struct RuleFilters {
    redirect: Option<RedirectLayer>,
    request_headers: Option<RequestHeaderModifierLayer>,
    rewrite: Option<UrlRewriteLayer>,
    response_headers: Option<ResponseHeaderModifierLayer>,
}

/// A filter configuration the filters crate refused (validation lets few through).
#[derive(Debug, thiserror::Error)]
#[error("filters.{filter}: {message}")]
pub struct FilterError {
    filter: &'static str,
    message: String,
}

fn error(filter: &'static str) -> impl FnOnce(String) -> FilterError {
    move |message| FilterError { filter, message }
}

fn header_modifier(m: &snapshot::HeaderModifier) -> Result<HeaderModifier, String> {
    HeaderModifier::new(
        m.set.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        m.add.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        m.remove.iter(),
    )
    .map_err(|e| e.to_string())
}

fn path(p: &snapshot::PathModifier) -> PathModifier {
    match p {
        snapshot::PathModifier::ReplaceFullPath(p) => PathModifier::ReplaceFullPath(p.clone()),
        snapshot::PathModifier::ReplacePrefixMatch(p) => {
            PathModifier::ReplacePrefixMatch(p.clone())
        }
    }
}

impl RuleFilters {
    /// The layers `filters` asks for; `None` when it asks for none, so that a rule without
    /// filters costs nothing per request.
    pub(crate) fn compile(filters: &snapshot::RouteFilters) -> Result<Option<Self>, FilterError> {
        if filters.is_empty() {
            return Ok(None);
        }
        // Never ignore a policy silently: one this engine cannot enforce fails the snapshot.
        for (present, filter) in [
            (!filters.mirrors.is_empty(), "request_mirror"),
            (filters.cors.is_some(), "cors"),
            (filters.ip_filter.is_some(), "ip_filter"),
            (filters.jwt.is_some(), "jwt"),
            (filters.rate_limit.is_some(), "rate_limit"),
            (filters.timeouts != snapshot::Timeouts::default(), "timeouts"),
            (filters.retry.is_some(), "retry"),
        ] {
            if present {
                return Err(error(filter)("not supported by this data plane yet".into()));
            }
        }
        let request_headers = filters
            .request_headers
            .as_ref()
            .map(|m| header_modifier(m).map(RequestHeaderModifierLayer::new))
            .transpose()
            .map_err(error("request_header_modifier"))?;
        let response_headers = filters
            .response_headers
            .as_ref()
            .map(|m| header_modifier(m).map(ResponseHeaderModifierLayer::new))
            .transpose()
            .map_err(error("response_header_modifier"))?;
        let rewrite = filters
            .url_rewrite
            .as_ref()
            .map(|r| UrlRewrite::new(r.hostname.clone(), r.path.as_ref().map(path)))
            .transpose()
            .map_err(|e| error("url_rewrite")(e.to_string()))?
            .map(UrlRewriteLayer::new);
        let redirect = filters
            .redirect
            .as_ref()
            .map(|r| {
                let mut builder = RequestRedirect::builder().status(r.status_code);
                if let Some(s) = &r.scheme {
                    builder = builder.scheme(s.clone());
                }
                if let Some(h) = &r.hostname {
                    builder = builder.hostname(h.clone());
                }
                if let Some(p) = r.port {
                    builder = builder.port(p);
                }
                if let Some(p) = &r.path {
                    builder = builder.path(path(p));
                }
                builder.build()
            })
            .transpose()
            .map_err(|e| error("request_redirect")(e.to_string()))?
            .map(RedirectLayer::new);
        Ok(Some(Self {
            redirect,
            request_headers,
            rewrite,
            response_headers,
        }))
    }

    /// Runs `req` through the filters, with `forward` innermost.
    pub(crate) async fn serve<F, Fut>(
        &self,
        req: Request<Incoming>,
        forward: F,
    ) -> Response<ProxyBody>
    where
        F: FnOnce(Request<Incoming>) -> Fut,
        Fut: Future<Output = Response<ProxyBody>>,
    {
        let mut forward = Some(forward);
        let inner = tower::service_fn(move |req: Request<Incoming>| {
            // `oneshot` calls the innermost service at most once.
            let forward = forward.take().expect("called once");
            async move { Ok::<_, Infallible>(forward(req).await) }
        });
        // The order of novaedge-filters (see its crate docs), outermost first.
        let service = ServiceBuilder::new()
            .option_layer(self.redirect.clone())
            .option_layer(self.request_headers.clone())
            .option_layer(self.rewrite.clone())
            .option_layer(self.response_headers.clone())
            .service(inner);
        match service.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
