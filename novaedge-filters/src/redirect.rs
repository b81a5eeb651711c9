//! Gateway API `RequestRedirect`
//! (<https://gateway-api.sigs.k8s.io/reference/spec/#httprequestredirectfilter>): the filter
//! answers with a redirect and the inner service is never called.
//!
//! The `Location` is built from the request and the configuration:
//!
//! - scheme: the configured one, else the request's (an absolute URI's scheme, else the
//!   [`LocalListener`]'s, else `http`);
//! - hostname: the configured one, else the request's host without its port;
//! - port, following the spec's defaulting rules: the configured one; else, when the redirect
//!   sets a scheme, that scheme's well-known port (80 for http, 443 for https); else the port of
//!   the listener the request came in on ([`LocalListener`]), falling back to the port in the
//!   request's host and then to the scheme's port. The port is left out of the `Location` when
//!   it is the scheme's well-known one (http and 80, https and 443), as the spec says it should;
//! - path: the request's, or a [`PathModifier`] applied to it (a prefix replacement uses the
//!   route's [`MatchedPrefix`]); the query string is kept;
//! - status: 302 unless configured (301, 302, 303, 307 or 308).
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use novaedge_filters::redirect::{RedirectLayer, RequestRedirect};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let redirect = RequestRedirect::builder().scheme("https").status(301).build().unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(RedirectLayer::new(redirect))
//!     .service(service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(()))
//!     }));
//! let req = Request::builder()
//!     .uri("/login?next=/home")
//!     .header("host", "shop.example:8080")
//!     .body(())
//!     .unwrap();
//! let response = service.oneshot(req).await.unwrap();
//! assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
//! assert_eq!(response.headers()["location"], "https://shop.example/login?next=/home");
//! # }
//! ```

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::LocalListener;
use crate::rewrite::{MatchedPrefix, PathModifier, RewriteError, parse_hostname};

/// A redirect; see the module docs. Built with [`RequestRedirect::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRedirect {
    scheme: Option<Scheme>,
    hostname: Option<Authority>,
    port: Option<u16>,
    path: Option<PathModifier>,
    status: StatusCode,
}

/// Collects a redirect's settings; [`build`](Self::build) checks them.
#[derive(Clone, Debug, Default)]
pub struct RedirectBuilder {
    scheme: Option<String>,
    hostname: Option<String>,
    port: Option<u16>,
    path: Option<PathModifier>,
    status: Option<u16>,
}

impl RedirectBuilder {
    pub fn scheme(mut self, scheme: impl Into<String>) -> Self {
        self.scheme = Some(scheme.into());
        self
    }

    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    pub fn path(mut self, path: PathModifier) -> Self {
        self.path = Some(path);
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Checks every setting; errors name the Gateway API field.
    pub fn build(self) -> Result<RequestRedirect, RewriteError> {
        let scheme = match self.scheme.as_deref() {
            None => None,
            Some("http") => Some(Scheme::HTTP),
            Some("https") => Some(Scheme::HTTPS),
            Some(other) => return Err(RewriteError::InvalidScheme(other.to_owned())),
        };
        let hostname = self.hostname.as_deref().map(parse_hostname).transpose()?;
        if self.port == Some(0) {
            return Err(RewriteError::InvalidPort);
        }
        let status = match self.status.unwrap_or(302) {
            301 => StatusCode::MOVED_PERMANENTLY,
            302 => StatusCode::FOUND,
            303 => StatusCode::SEE_OTHER,
            307 => StatusCode::TEMPORARY_REDIRECT,
            308 => StatusCode::PERMANENT_REDIRECT,
            other => return Err(RewriteError::InvalidStatus(other)),
        };
        let path = match self.path {
            Some(PathModifier::ReplaceFullPath(p)) => {
                let p = PathModifier::ReplaceFullPath(p);
                check_path(&p)?;
                Some(p)
            }
            Some(PathModifier::ReplacePrefixMatch(p)) => {
                let p = PathModifier::ReplacePrefixMatch(p);
                check_path(&p)?;
                Some(p)
            }
            None => None,
        };
        Ok(RequestRedirect {
            scheme,
            hostname,
            port: self.port,
            path,
            status,
        })
    }
}

fn check_path(path: &PathModifier) -> Result<(), RewriteError> {
    // The same rules as a rewrite's path.
    crate::rewrite::UrlRewrite::new(None, Some(path.clone())).map(|_| ())
}

fn default_port(scheme: &Scheme) -> Option<u16> {
    if *scheme == Scheme::HTTP {
        Some(80)
    } else if *scheme == Scheme::HTTPS {
        Some(443)
    } else {
        None
    }
}

impl RequestRedirect {
    pub fn builder() -> RedirectBuilder {
        RedirectBuilder::default()
    }

    /// The status the redirect answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Location` for `req`.
    pub fn location<B>(&self, req: &Request<B>) -> String {
        let listener = req.extensions().get::<LocalListener>();
        let request_scheme = req
            .uri()
            .scheme()
            .cloned()
            .or_else(|| listener.map(|l| l.scheme.clone()))
            .unwrap_or(Scheme::HTTP);
        let scheme = self.scheme.clone().unwrap_or(request_scheme.clone());

        // The request's host: an absolute URI's authority wins over the Host header.
        let request_host: Option<Authority> = req.uri().authority().cloned().or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        });
        let host = match (&self.hostname, &request_host) {
            (Some(configured), _) => configured.host().to_owned(),
            (None, Some(request)) => request.host().to_owned(),
            (None, None) => String::new(),
        };

        let port = self
            .port
            .or_else(|| self.scheme.as_ref().and_then(default_port))
            .or_else(|| listener.map(|l| l.port))
            .or_else(|| request_host.as_ref().and_then(Authority::port_u16))
            .or_else(|| default_port(&scheme));

        let path = match &self.path {
            Some(modifier) => {
                let matched = req.extensions().get::<MatchedPrefix>().map(|m| &*m.0);
                modifier
                    .apply(req.uri().path(), matched)
                    .unwrap_or_else(|| req.uri().path().to_owned())
            }
            None => req.uri().path().to_owned(),
        };

        let mut location = format!("{scheme}://{host}");
        if let Some(port) = port
            && default_port(&scheme) != Some(port)
        {
            location.push(':');
            location.push_str(&port.to_string());
        }
        location.push_str(&path);
        if let Some(query) = req.uri().query() {
            location.push('?');
            location.push_str(query);
        }
        location
    }

    /// The redirect response for `req`, with an empty body.
    pub fn respond<B, ResB: Default>(&self, req: &Request<B>) -> Response<ResB> {
        let mut response = Response::new(ResB::default());
        *response.status_mut() = self.status;
        match HeaderValue::try_from(self.location(req)) {
            Ok(location) => {
                response.headers_mut().insert(header::LOCATION, location);
            }
            // Only a request host that is not a valid header value can get here.
            Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
        }
        response
    }
}

/// Answers every request with a [`RequestRedirect`]; the inner service is never called (it is
/// kept so that the layer fits any stack).
#[derive(Clone, Debug)]
pub struct RedirectLayer {
    redirect: Arc<RequestRedirect>,
}

impl RedirectLayer {
    pub fn new(redirect: RequestRedirect) -> Self {
        Self {
            redirect: Arc::new(redirect),
        }
    }
}

impl<S> Layer<S> for RedirectLayer {
    type Service = Redirect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Redirect {
            redirect: self.redirect.clone(),
            _inner: inner,
        }
    }
}

/// The service of [`RedirectLayer`].
#[derive(Clone, Debug)]
pub struct Redirect<S> {
    redirect: Arc<RequestRedirect>,
    /// Never called: a redirect answers by itself.
    _inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Redirect<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = Ready<Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        ready(Ok(self.redirect.respond(&req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn request(uri: &str, host: Option<&str>, listener: Option<(u16, Scheme)>) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        let mut req = builder.body(()).unwrap();
        if let Some((port, scheme)) = listener {
            req.extensions_mut().insert(LocalListener { port, scheme });
        }
        req
    }

    #[test]
    fn port_defaulting_follows_the_gateway_api_rules() {
        let https = RequestRedirect::builder().scheme("https").build().unwrap();
        let plain = RequestRedirect::builder()
            .hostname("other.example")
            .build()
            .unwrap();
        let port = RequestRedirect::builder().port(8443).build().unwrap();
        let listener_8080 = Some((8080, Scheme::HTTP));
        let listener_80 = Some((80, Scheme::HTTP));
        let cases = [
            // A scheme set: its well-known port, left out.
            (
                &https,
                request("/p", Some("a.example:8080"), listener_8080.clone()),
                "https://a.example/p",
            ),
            // No scheme: the listener's port, shown unless it is the scheme's own.
            (
                &plain,
                request("/p", Some("a.example:8080"), listener_8080.clone()),
                "http://other.example:8080/p",
            ),
            (
                &plain,
                request("/p", Some("a.example"), listener_80),
                "http://other.example/p",
            ),
            // No listener information: the port in the Host header, then the scheme's.
            (
                &plain,
                request("/p", Some("a.example:9000"), None),
                "http://other.example:9000/p",
            ),
            (
                &plain,
                request("/p", Some("a.example"), None),
                "http://other.example/p",
            ),
            // An explicit port.
            (
                &port,
                request("/p?q=1", Some("a.example"), listener_8080),
                "http://a.example:8443/p?q=1",
            ),
        ];
        for (redirect, req, expected) in cases {
            assert_eq!(redirect.location(&req), expected);
        }
    }

    #[test]
    fn an_explicit_well_known_port_is_left_out_and_others_are_kept() {
        let to_443 = RequestRedirect::builder()
            .scheme("https")
            .port(443)
            .build()
            .unwrap();
        let to_80_https = RequestRedirect::builder()
            .scheme("https")
            .port(80)
            .build()
            .unwrap();
        let req = request("/", Some("a.example"), None);
        assert_eq!(to_443.location(&req), "https://a.example/");
        assert_eq!(to_80_https.location(&req), "https://a.example:80/");
    }

    #[test]
    fn scheme_comes_from_the_request_when_not_configured() {
        let redirect = RequestRedirect::builder()
            .hostname("b.example")
            .build()
            .unwrap();
        let h2 = request("https://a.example/x", None, None);
        assert_eq!(redirect.location(&h2), "https://b.example/x");
        let behind_tls = request("/x", Some("a.example"), Some((443, Scheme::HTTPS)));
        assert_eq!(redirect.location(&behind_tls), "https://b.example/x");
    }

    #[test]
    fn paths_are_replaced_and_queries_kept() {
        let full = RequestRedirect::builder()
            .path(PathModifier::ReplaceFullPath("/new".into()))
            .build()
            .unwrap();
        let prefix = RequestRedirect::builder()
            .path(PathModifier::ReplacePrefixMatch("/v2".into()))
            .build()
            .unwrap();
        let req = request("/v1/items?id=7", Some("a.example"), None);
        assert_eq!(full.location(&req), "http://a.example/new?id=7");
        let mut req = request("/v1/items?id=7", Some("a.example"), None);
        req.extensions_mut().insert(MatchedPrefix(Arc::from("/v1")));
        assert_eq!(prefix.location(&req), "http://a.example/v2/items?id=7");
    }

    #[tokio::test]
    async fn the_layer_answers_without_calling_the_inner_service() {
        let redirect = RequestRedirect::builder()
            .status(308)
            .scheme("https")
            .build()
            .unwrap();
        let service = RedirectLayer::new(redirect).layer(service_fn(|_req: Request<()>| async {
            panic!("the inner service must not be called");
            #[allow(unreachable_code)]
            Ok::<Response<String>, Infallible>(Response::new(String::new()))
        }));
        let response = service
            .oneshot(request("/a", Some("a.example"), None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(response.headers()["location"], "https://a.example/a");
        assert_eq!(response.body(), "");
    }

    #[test]
    fn bad_configuration_names_the_field() {
        assert_eq!(
            RequestRedirect::builder()
                .status(200)
                .build()
                .unwrap_err()
                .to_string(),
            "statusCode: 200 is not a redirect status (301, 302, 303, 307 or 308)"
        );
        assert_eq!(
            RequestRedirect::builder()
                .scheme("ftp")
                .build()
                .unwrap_err(),
            RewriteError::InvalidScheme("ftp".into())
        );
        assert_eq!(
            RequestRedirect::builder().port(0).build().unwrap_err(),
            RewriteError::InvalidPort
        );
        assert!(matches!(
            RequestRedirect::builder()
                .path(PathModifier::ReplaceFullPath("x".into()))
                .build(),
            Err(RewriteError::InvalidPath { .. })
        ));
        assert_eq!(
            RequestRedirect::builder().build().unwrap().status(),
            StatusCode::FOUND
        );
    }
}
