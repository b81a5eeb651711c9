//! Gateway API `URLRewrite` (<https://gateway-api.sigs.k8s.io/reference/spec/#httpurlrewritefilter>):
//! the hostname and the path the upstream sees.
//!
//! - `hostname` replaces the request's host: the `Host` header, and the authority of an
//!   absolute-form URI (HTTP/2's `:authority`), whichever the request carries.
//! - `path` is a [`PathModifier`]: `ReplaceFullPath`, or `ReplacePrefixMatch`, which replaces the
//!   part of the path the route's `PathPrefix` match matched. That prefix is per request (a rule
//!   may have several matches), so the router hands it over as the [`MatchedPrefix`] request
//!   extension; without it the path is left alone.
//!
//! The query string is kept in every case.
//!
//! Prefix replacement follows the spec's table: the matched prefix and the replacement are
//! compared without trailing slashes, and what followed the prefix is kept, so with prefix
//! `/foo`, `/foo/bar` becomes `/xyz/bar` for replacement `/xyz` or `/xyz/`, `/bar` for `/`, and
//! `/foo` becomes `/xyz` (or `/` for `/`).
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, Response};
//! use novaedge_filters::rewrite::{MatchedPrefix, PathModifier, UrlRewrite, UrlRewriteLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let rewrite = UrlRewrite::new(
//!     Some("internal.example".into()),
//!     Some(PathModifier::ReplacePrefixMatch("/v2".into())),
//! )
//! .unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(UrlRewriteLayer::new(rewrite))
//!     .service(service_fn(|req: Request<()>| async move {
//!         let host = req.headers()["host"].to_str().unwrap().to_owned();
//!         Ok::<_, std::convert::Infallible>(Response::new(format!("{host}{}", req.uri())))
//!     }));
//! let mut req = Request::builder()
//!     .uri("/api/users?page=2")
//!     .header("host", "www.example")
//!     .body(())
//!     .unwrap();
//! req.extensions_mut().insert(MatchedPrefix(Arc::from("/api")));
//! let seen = service.oneshot(req).await.unwrap().into_body();
//! assert_eq!(seen, "internal.example/v2/users?page=2");
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use tower::{Layer, Service};

/// The path prefix the route matched for this request, as a request extension. Set by the
/// router for rules matched by a `PathPrefix`; read by prefix rewrites and redirects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedPrefix(pub Arc<str>);

/// How a path is replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    /// The whole path becomes this.
    ReplaceFullPath(String),
    /// The matched prefix ([`MatchedPrefix`]) becomes this.
    ReplacePrefixMatch(String),
}

impl PathModifier {
    /// The new path for `path`, given the prefix the route matched (if any). `None` when nothing
    /// changes: a prefix replacement without a matched prefix, or with one that does not start
    /// the path.
    pub fn apply(&self, path: &str, matched: Option<&str>) -> Option<String> {
        match self {
            PathModifier::ReplaceFullPath(full) => Some(full.clone()),
            PathModifier::ReplacePrefixMatch(replacement) => {
                let prefix = matched?.trim_end_matches('/');
                let mut rest = path.strip_prefix(prefix)?;
                // Segment-wise: `/foo` does not prefix `/foobar`.
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                // The prefix `/` matched the path's leading slash, and nothing more: a bare `/`
                // path is wholly replaced.
                if prefix.is_empty() && rest == "/" {
                    rest = "";
                }
                let mut out = replacement.trim_end_matches('/').to_owned();
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                Some(out)
            }
        }
    }

    fn check(&self, field: &'static str) -> Result<(), RewriteError> {
        let (PathModifier::ReplaceFullPath(path) | PathModifier::ReplacePrefixMatch(path)) = self;
        if !path.starts_with('/')
            || PathAndQuery::try_from(path.as_str()).is_err()
            || path.contains('?')
        {
            return Err(RewriteError::InvalidPath {
                field,
                path: path.clone(),
            });
        }
        Ok(())
    }
}

/// Replaces the path of `uri`, keeping its query.
pub(crate) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

/// Why a rewrite or redirect configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("hostname: {0:?} is not a valid hostname")]
    InvalidHostname(String),
    #[error("{field}: {path:?} is not an absolute path (it must start with / and hold no query)")]
    InvalidPath { field: &'static str, path: String },
    #[error("statusCode: {0} is not a redirect status (301, 302, 303, 307 or 308)")]
    InvalidStatus(u16),
    #[error("scheme: {0:?} is not http or https")]
    InvalidScheme(String),
    #[error("port: must not be 0")]
    InvalidPort,
}

/// A checked hostname, usable as a `Host` value and a URI authority.
pub(crate) fn parse_hostname(hostname: &str) -> Result<Authority, RewriteError> {
    let invalid = || RewriteError::InvalidHostname(hostname.to_owned());
    if hostname.is_empty() || hostname.contains(['/', '@', '?', '#']) {
        return Err(invalid());
    }
    Authority::try_from(hostname).map_err(|_| invalid())
}

/// A URL rewrite; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlRewrite {
    hostname: Option<Authority>,
    path: Option<PathModifier>,
}

impl UrlRewrite {
    /// Checks the hostname and the path.
    pub fn new(hostname: Option<String>, path: Option<PathModifier>) -> Result<Self, RewriteError> {
        let hostname = hostname.as_deref().map(parse_hostname).transpose()?;
        if let Some(path) = &path {
            path.check("path")?;
        }
        Ok(Self { hostname, path })
    }

    /// Rewrites `req` in place.
    pub fn apply<B>(&self, req: &mut Request<B>) {
        if let Some(modifier) = &self.path {
            let matched = req.extensions().get::<MatchedPrefix>().map(|m| &*m.0);
            if let Some(path) = modifier.apply(req.uri().path(), matched)
                && let Some(uri) = with_path(req.uri(), &path)
            {
                *req.uri_mut() = uri;
            }
        }
        if let Some(hostname) = &self.hostname {
            if req.uri().authority().is_some() {
                let mut parts = req.uri().clone().into_parts();
                parts.authority = Some(hostname.clone());
                if let Ok(uri) = Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
            if req.uri().authority().is_none() || req.headers().contains_key(header::HOST) {
                // Always a valid value: the hostname was checked when the rewrite was built.
                if let Ok(value) = HeaderValue::from_str(hostname.as_str()) {
                    req.headers_mut().insert(header::HOST, value);
                }
            }
        }
    }
}

/// Applies a [`UrlRewrite`] to requests.
#[derive(Clone, Debug)]
pub struct UrlRewriteLayer {
    rewrite: Arc<UrlRewrite>,
}

impl UrlRewriteLayer {
    pub fn new(rewrite: UrlRewrite) -> Self {
        Self {
            rewrite: Arc::new(rewrite),
        }
    }
}

impl<S> Layer<S> for UrlRewriteLayer {
    type Service = UrlRewriteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UrlRewriteService {
            inner,
            rewrite: self.rewrite.clone(),
        }
    }
}

/// The service of [`UrlRewriteLayer`].
#[derive(Clone, Debug)]
pub struct UrlRewriteService<S> {
    inner: S,
    rewrite: Arc<UrlRewrite>,
}

impl<S, B> Service<Request<B>> for UrlRewriteService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        self.rewrite.apply(&mut req);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    #[test]
    fn prefix_replacement_follows_the_spec_table() {
        let cases = [
            // (matched prefix, request path, replacement, expected)
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo", "/foo/", "/xyz/", "/xyz/"),
            ("/foo/", "/foo/", "/xyz", "/xyz/"),
            ("/foo/", "/foo/", "/xyz/", "/xyz/"),
            ("/foo", "/foo/bar", "/", "/bar"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/", "/", "/"),
            ("/", "/foo/bar", "/xyz", "/xyz/foo/bar"),
            ("/", "/", "/xyz", "/xyz"),
        ];
        for (prefix, path, replacement, expected) in cases {
            let modifier = PathModifier::ReplacePrefixMatch(replacement.into());
            assert_eq!(
                modifier.apply(path, Some(prefix)).as_deref(),
                Some(expected),
                "prefix {prefix} path {path} replacement {replacement}"
            );
        }
        let modifier = PathModifier::ReplacePrefixMatch("/xyz".into());
        assert_eq!(modifier.apply("/foobar", Some("/foo")), None);
        assert_eq!(modifier.apply("/foo", None), None);
        assert_eq!(
            PathModifier::ReplaceFullPath("/all".into())
                .apply("/foo/bar", None)
                .as_deref(),
            Some("/all")
        );
    }

    async fn rewritten(rewrite: UrlRewrite, req: Request<()>) -> Request<()> {
        let service =
            UrlRewriteLayer::new(rewrite).layer(service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(Response::new(req))
            }));
        service.oneshot(req).await.unwrap().into_body()
    }

    #[tokio::test]
    async fn full_path_keeps_the_query_and_rewrites_the_host_header() {
        let rewrite = UrlRewrite::new(
            Some("backend.internal".into()),
            Some(PathModifier::ReplaceFullPath("/new".into())),
        )
        .unwrap();
        let req = Request::builder()
            .uri("/old/path?a=1&b=2")
            .header("host", "www.example.com:8080")
            .body(())
            .unwrap();
        let seen = rewritten(rewrite, req).await;
        assert_eq!(seen.uri(), "/new?a=1&b=2");
        assert_eq!(seen.headers()["host"], "backend.internal");
    }

    #[tokio::test]
    async fn hostname_rewrites_the_authority_of_an_absolute_uri() {
        let rewrite = UrlRewrite::new(Some("backend.internal".into()), None).unwrap();
        let req = Request::builder()
            .uri("http://www.example.com/x?q")
            .body(())
            .unwrap();
        let seen = rewritten(rewrite, req).await;
        assert_eq!(seen.uri(), "http://backend.internal/x?q");
        assert!(seen.headers().get("host").is_none());
    }

    #[tokio::test]
    async fn prefix_rewrite_uses_the_matched_prefix_extension() {
        let rewrite =
            UrlRewrite::new(None, Some(PathModifier::ReplacePrefixMatch("/".into()))).unwrap();
        let mut req = Request::builder().uri("/api/v1/users").body(()).unwrap();
        req.extensions_mut()
            .insert(MatchedPrefix(Arc::from("/api/v1")));
        assert_eq!(rewritten(rewrite.clone(), req).await.uri(), "/users");
        // No matched prefix (not a prefix match): the path stays.
        let req = Request::builder().uri("/api/v1/users").body(()).unwrap();
        assert_eq!(rewritten(rewrite, req).await.uri(), "/api/v1/users");
    }

    #[test]
    fn bad_configuration_names_the_field() {
        assert_eq!(
            UrlRewrite::new(Some("bad host/".into()), None).unwrap_err(),
            RewriteError::InvalidHostname("bad host/".into())
        );
        assert!(matches!(
            UrlRewrite::new(None, Some(PathModifier::ReplaceFullPath("relative".into()))),
            Err(RewriteError::InvalidPath { field: "path", .. })
        ));
        assert!(matches!(
            UrlRewrite::new(None, Some(PathModifier::ReplacePrefixMatch("/a?b".into()))),
            Err(RewriteError::InvalidPath { .. })
        ));
    }
}
