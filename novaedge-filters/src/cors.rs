//! Cross-origin resource sharing: preflights are answered here, and the CORS response headers are
//! added to the answers of actual cross-origin requests.
//!
//! The model is the Gateway API `HTTPCORSFilter` (experimental channel, GEP-1767) on top of the
//! CORS protocol of the WHATWG Fetch standard (§3.2). A [`CorsConfig`] carries the filter's
//! fields (`allowOrigins`, `allowMethods`, `allowHeaders`, `exposeHeaders`, `allowCredentials`,
//! `maxAge`); [`CorsLayer::new`] checks them once and compiles them, and the [`Cors`] service
//! applies them to every request.
//!
//! # Preflight requests
//!
//! A request is a preflight when its method is `OPTIONS` and it carries both `Origin` and
//! `Access-Control-Request-Method`. The filter answers it itself, with an empty body, and never
//! calls the inner service:
//!
//! - **Allowed** (the origin matches and the requested method is allowed): `200 OK` with
//!   `Access-Control-Allow-Origin`, `Access-Control-Allow-Methods`, `Access-Control-Allow-Headers`,
//!   `Access-Control-Expose-Headers`, `Access-Control-Max-Age` (5 seconds unless configured, the
//!   Gateway API default) and, when `allowCredentials` is set, `Access-Control-Allow-Credentials:
//!   true`. The status is `200` rather than `204` because the Gateway API conformance suite
//!   expects exactly `200` for some of its preflight cases.
//! - **Refused** (the origin does not match, the requested method is not allowed, or the
//!   `Access-Control-Request-Method` value is not a method): `403 Forbidden` with no CORS header.
//!   The Gateway API allows either this or a `200`/`204` without CORS headers; the browser blocks
//!   the actual request either way, and a `403` says plainly, in the browser's network panel and
//!   in access logs, that the gateway refused the preflight.
//!
//! A method is allowed when `allowMethods` holds `*` or lists it (method names are case
//! sensitive), or when it is one of the CORS-safelisted methods `GET`, `HEAD` and `POST`, which
//! the Gateway API always allows. The requested headers (`Access-Control-Request-Headers`) are
//! not checked by the filter: it states which headers are allowed and the browser decides, as
//! Fetch and the Gateway API describe.
//!
//! # Actual requests
//!
//! A request with an `Origin` header that is not a preflight goes to the inner service. When its
//! origin is allowed, the response gets `Access-Control-Allow-Origin`,
//! `Access-Control-Allow-Credentials: true` (when enabled) and `Access-Control-Expose-Headers`
//! (when configured); these replace any the upstream sent, since the route's policy is the one in
//! force. When the origin is not allowed the response goes back without CORS headers (the upstream's
//! own, if any, are left alone) and the browser withholds it from the page. Requests without
//! `Origin` are passed on and their responses get no CORS header.
//!
//! Every response that passes through the filter, for a request with or without `Origin`, gets
//! `Vary: Origin`, and preflight answers also vary on `Access-Control-Request-Method` and
//! `Access-Control-Request-Headers`. Fetch (§3.2.5) asks for `Vary: Origin` on non-CORS
//! responses too whenever the answer depends on the origin: otherwise a shared cache could store
//! the answer to a request without `Origin` and hand it, without
//! `Access-Control-Allow-Origin`, to a cross-origin one. Names already in the response's `Vary`
//! list are not added twice, the existing list is kept, and `Vary: *` is left as it is.
//!
//! # Origins
//!
//! An `allowOrigins` entry is `*` (every origin), or `<scheme>://<host>[:<port>]`, where the host
//! may start with a `*.` label:
//!
//! - Matching is exact on scheme, host and port; scheme and host compare case-insensitively. A
//!   missing port stands for the scheme's default (`80` for `http`, `443` for `https`), so
//!   `https://example.com` and `https://example.com:443` are the same origin.
//! - `https://*.example.com` matches any host that ends in `.example.com` with one or more labels
//!   before it (`a.example.com`, `a.b.example.com`), but not `example.com` itself, and never an
//!   IP address. `https://*` matches every host on that scheme and port. A `*` anywhere else in
//!   an entry is a configuration error.
//! - Hosts are compared as sent: internationalised names must be written in their ASCII
//!   (punycode) form, as browsers send them.
//! - The opaque origin `null` (sandboxed frames, `data:` and `file:` documents, some redirects) is
//!   never matched by a host pattern. With `allowOrigins: ["*"]` and no credentials it is allowed
//!   (the answer is `*`, which a browser accepts from any origin anyway). With credentials, `*`
//!   does not match `null`: echoing `null` with `Access-Control-Allow-Credentials` would hand
//!   credentialed access to any sandboxed document. An explicit `"null"` entry allows it
//!   deliberately (an extension: the Gateway API has no way to say this).
//! - An `Origin` header that is not a well-formed origin matches nothing.
//!
//! `Access-Control-Allow-Origin` is `*` only when `allowOrigins` holds `*` and credentials are not
//! allowed; in every other case it is the request's `Origin` value, echoed byte for byte.
//!
//! # Wildcards and credentials
//!
//! Fetch forbids the `*` wildcard in `Access-Control-Allow-Origin` for credentialed requests, and
//! gives it no wildcard meaning in `Access-Control-Allow-Methods`, `Access-Control-Allow-Headers`
//! and `Access-Control-Expose-Headers` there. The Gateway API therefore allows `*` together with
//! `allowCredentials: true` (it is not a configuration error here), and says what to send instead:
//!
//! - `allowOrigins: ["*"]`: the request's origin is echoed.
//! - `allowMethods: ["*"]`: the requested method is echoed. The filter does this with or without
//!   credentials, which both specifications allow.
//! - `allowHeaders: ["*"]`: the requested headers are echoed, or the header is left out when the
//!   preflight asked for none. The filter echoes with or without credentials too: that also covers
//!   `Authorization`, which Fetch never lets a `*` cover.
//! - `exposeHeaders: ["*"]`: sent as `*` without credentials; with credentials the filter lists the
//!   names of the headers the response actually carries (plus the other configured names).
//!
//! # Configuration errors
//!
//! [`CorsLayer::new`] refuses malformed origins, methods and header names, and names the Gateway
//! API field and index in its [`CorsConfigError`] (for instance
//! `allowOrigins[1]: "https://a.*.com" is not a valid origin: ...`).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//!
//! use http::{Request, Response, StatusCode};
//! use novaedge_filters::cors::{CorsConfig, CorsLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let layer = CorsLayer::new(CorsConfig {
//!     allow_origins: vec!["https://*.example.com".into()],
//!     allow_methods: vec!["PUT".into()],
//!     allow_credentials: true,
//!     ..CorsConfig::default()
//! })?;
//! let svc = layer.layer(service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! }));
//!
//! // The preflight is answered by the filter.
//! let preflight = Request::builder()
//!     .method("OPTIONS")
//!     .uri("/api")
//!     .header("origin", "https://app.example.com")
//!     .header("access-control-request-method", "PUT")
//!     .body(String::new())?;
//! let res = svc.clone().oneshot(preflight).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");
//! assert_eq!(res.headers()["access-control-allow-methods"], "PUT");
//! assert_eq!(res.headers()["access-control-max-age"], "5");
//! assert!(res.into_body().is_empty());
//!
//! // The actual request reaches the upstream; its response gets the CORS headers.
//! let put = Request::builder()
//!     .method("PUT")
//!     .uri("/api")
//!     .header("origin", "https://app.example.com")
//!     .body(String::new())?;
//! let res = svc.oneshot(put).await?;
//! assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");
//! assert_eq!(res.headers()["access-control-allow-credentials"], "true");
//! assert_eq!(res.headers()["vary"], "Origin");
//! assert_eq!(res.into_body(), "hello");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// `Access-Control-Max-Age` sent when [`CorsConfig::max_age_secs`] is not set: 5 seconds, the
/// Gateway API default.
pub const DEFAULT_MAX_AGE_SECS: u32 = 5;

/// The Gateway API `HTTPCORSFilter` fields, as plain Rust values; checked and compiled by
/// [`CorsLayer::new`]. Empty lists allow nothing (no origin, only the safelisted methods, no
/// extra header).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsConfig {
    /// `allowOrigins`: `*`, or origins `<scheme>://<host>[:<port>]` whose host may start with a
    /// `*.` label, or `null` for the opaque origin (see the [module docs](self)).
    pub allow_origins: Vec<String>,
    /// `allowMethods`: method names (case sensitive) or `*`. `GET`, `HEAD` and `POST` are always
    /// allowed.
    pub allow_methods: Vec<String>,
    /// `allowHeaders`: request header names (case insensitive) or `*`.
    pub allow_headers: Vec<String>,
    /// `exposeHeaders`: response header names (case insensitive) or `*`.
    pub expose_headers: Vec<String>,
    /// `allowCredentials`: send `Access-Control-Allow-Credentials: true`, and never answer with a
    /// `*` wildcard.
    pub allow_credentials: bool,
    /// `maxAge` in seconds: how long a browser may cache a preflight answer;
    /// [`DEFAULT_MAX_AGE_SECS`] when `None`. `0` asks browsers not to cache it.
    pub max_age_secs: Option<u32>,
}

/// A [`CorsConfig`] field that [`CorsLayer::new`] refused; the message names the Gateway API field
/// and the index of the entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorsConfigError {
    /// An `allowOrigins` entry is not `*`, `null` or a valid origin pattern.
    #[error("allowOrigins[{index}]: {value:?} is not a valid origin: {reason}")]
    Origin {
        /// Position of the entry in the list.
        index: usize,
        /// The entry as configured.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `allowMethods` entry is not a method token or `*`.
    #[error("allowMethods[{index}]: {value:?} is not an HTTP method name or `*`")]
    Method {
        /// Position of the entry in the list.
        index: usize,
        /// The entry as configured.
        value: String,
    },
    /// An `allowHeaders` or `exposeHeaders` entry is not a header name or `*`.
    #[error("{field}[{index}]: {value:?} is not an HTTP header name or `*`")]
    Header {
        /// `allowHeaders` or `exposeHeaders`.
        field: &'static str,
        /// Position of the entry in the list.
        index: usize,
        /// The entry as configured.
        value: String,
    },
}

/// A [`Layer`] that wraps services in [`Cors`]. Cheap to clone: the compiled policy is shared.
#[derive(Clone, Debug)]
pub struct CorsLayer {
    policy: Arc<Policy>,
}

impl CorsLayer {
    /// Checks and compiles `config`.
    ///
    /// # Errors
    ///
    /// A [`CorsConfigError`] naming the first malformed entry of `allowOrigins`, `allowMethods`,
    /// `allowHeaders` or `exposeHeaders`.
    pub fn new(config: CorsConfig) -> Result<Self, CorsConfigError> {
        Ok(Self {
            policy: Arc::new(Policy::compile(config)?),
        })
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The CORS filter service built by [`CorsLayer`]: answers preflights, decorates the responses
/// of cross-origin requests, and passes everything else to `S`.
#[derive(Clone, Debug)]
pub struct Cors<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Cors<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if is_preflight(&req) {
            let response = self.policy.preflight(req.headers());
            return ResponseFuture {
                state: State::Answered {
                    response: Some(response),
                },
            };
        }
        let allow_origin = req
            .headers()
            .get(ORIGIN)
            .and_then(|origin| self.policy.allow_origin(origin));
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(req),
                allow_origin,
                policy: self.policy.clone(),
            },
        }
    }
}

pin_project! {
    /// The response future of [`Cors`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // A preflight answered by the filter.
        Answered { response: Option<Response<B>> },
        // The inner call; its response is decorated on the way out.
        Inner {
            #[pin]
            future: F,
            // The `Access-Control-Allow-Origin` value, when the request's origin is allowed.
            allow_origin: Option<HeaderValue>,
            policy: Arc<Policy>,
        },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    #[allow(
        clippy::expect_used,
        reason = "Future's contract: a future polled after it completed may panic"
    )]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("cors::ResponseFuture polled after completion"))),
            StateProj::Inner {
                future,
                allow_origin,
                policy,
            } => {
                let mut response = ready!(future.poll(cx))?;
                policy.decorate(response.headers_mut(), allow_origin.take());
                Poll::Ready(Ok(response))
            }
        }
    }
}

// === impl Policy ===

/// A compiled [`CorsConfig`].
#[derive(Debug)]
struct Policy {
    /// `allowOrigins` holds `*`.
    any_origin: bool,
    /// `allowOrigins` holds `null`.
    null_origin: bool,
    origins: Vec<OriginPattern>,
    /// `allowMethods` holds `*`.
    any_method: bool,
    methods: Vec<Method>,
    /// The listed methods, joined; `None` when there are none or when `*` is configured.
    methods_value: Option<HeaderValue>,
    /// `allowHeaders` holds `*`.
    any_header: bool,
    /// The listed request headers, joined; `None` when there are none or with `*`.
    headers_value: Option<HeaderValue>,
    /// `exposeHeaders` holds `*`.
    any_expose: bool,
    /// The listed response header names, without `*`.
    expose: Vec<HeaderName>,
    /// The `Access-Control-Expose-Headers` value when it does not depend on the response: the
    /// listed names, with `*` first when it is configured and credentials are not.
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

const VARY_ACTUAL: &[&str] = &["Origin"];
const VARY_PREFLIGHT: &[&str] = &[
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
];

impl Policy {
    fn compile(config: CorsConfig) -> Result<Self, CorsConfigError> {
        let mut any_origin = false;
        let mut null_origin = false;
        let mut origins = Vec::new();
        for (index, value) in config.allow_origins.iter().enumerate() {
            match value.as_str() {
                "*" => any_origin = true,
                "null" => null_origin = true,
                pattern => {
                    let parsed = OriginPattern::parse(pattern).map_err(|reason| {
                        CorsConfigError::Origin {
                            index,
                            value: value.clone(),
                            reason,
                        }
                    })?;
                    origins.push(parsed);
                }
            }
        }

        let mut any_method = false;
        let mut methods: Vec<Method> = Vec::new();
        for (index, value) in config.allow_methods.iter().enumerate() {
            if value == "*" {
                any_method = true;
                continue;
            }
            let method =
                Method::from_bytes(value.as_bytes()).map_err(|_| CorsConfigError::Method {
                    index,
                    value: value.clone(),
                })?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let methods_value = if any_method {
            None
        } else {
            join_value(methods.iter().map(Method::as_str))
        };

        let (any_header, allow_headers) = header_names("allowHeaders", &config.allow_headers)?;
        let headers_value = if any_header {
            None
        } else {
            join_value(allow_headers.iter().map(HeaderName::as_str))
        };

        let (any_expose, expose) = header_names("exposeHeaders", &config.expose_headers)?;
        let star = (any_expose && !config.allow_credentials).then_some("*");
        let expose_value = join_value(
            star.into_iter()
                .chain(expose.iter().map(HeaderName::as_str)),
        );

        Ok(Self {
            any_origin,
            null_origin,
            origins,
            any_method,
            methods,
            methods_value,
            any_header,
            headers_value,
            any_expose,
            expose,
            expose_value,
            credentials: config.allow_credentials,
            max_age: HeaderValue::from(config.max_age_secs.unwrap_or(DEFAULT_MAX_AGE_SECS)),
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, or `None` when the
    /// origin is not allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let echo_or_star = || {
            Some(if self.credentials {
                origin.clone()
            } else {
                HeaderValue::from_static("*")
            })
        };
        let raw = origin.to_str().ok()?;
        if raw == "null" {
            if self.null_origin {
                return Some(origin.clone());
            }
            // With credentials `*` would have to be echoed as `null`: see the module docs.
            if self.any_origin && !self.credentials {
                return echo_or_star();
            }
            return None;
        }
        let parsed = Origin::parse(raw, false).ok()?;
        if self.any_origin {
            return echo_or_star();
        }
        if self.origins.iter().any(|pattern| pattern.matches(&parsed)) {
            return Some(origin.clone());
        }
        None
    }

    fn method_allowed(&self, method: &Method) -> bool {
        self.any_method
            || *method == Method::GET
            || *method == Method::HEAD
            || *method == Method::POST
            || self.methods.contains(method)
    }

    fn preflight<B: Default>(&self, headers: &HeaderMap) -> Response<B> {
        let mut response = Response::new(B::default());
        add_vary(response.headers_mut(), VARY_PREFLIGHT);

        let allow_origin = headers.get(ORIGIN).and_then(|o| self.allow_origin(o));
        let Some(allow_origin) = allow_origin else {
            tracing::debug!(origin = ?headers.get(ORIGIN), "CORS preflight refused: origin not allowed");
            *response.status_mut() = StatusCode::FORBIDDEN;
            return response;
        };
        let requested = headers.get(ACCESS_CONTROL_REQUEST_METHOD);
        let method = requested.and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        let Some(method) = method.filter(|m| self.method_allowed(m)) else {
            tracing::debug!(method = ?requested, "CORS preflight refused: method not allowed");
            *response.status_mut() = StatusCode::FORBIDDEN;
            return response;
        };

        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let methods = if self.any_method {
            HeaderValue::from_str(method.as_str()).ok()
        } else {
            self.methods_value.clone()
        };
        if let Some(methods) = methods {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        let allow_headers = if self.any_header {
            headers
                .get(ACCESS_CONTROL_REQUEST_HEADERS)
                .and_then(requested_headers)
        } else {
            self.headers_value.clone()
        };
        if let Some(allow_headers) = allow_headers {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        }
        if let Some(expose) = &self.expose_value {
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        response
    }

    /// Adds the CORS headers for an actual request to the inner service's response headers.
    fn decorate(&self, headers: &mut HeaderMap, allow_origin: Option<HeaderValue>) {
        add_vary(headers, VARY_ACTUAL);
        let Some(allow_origin) = allow_origin else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let expose = if self.any_expose && self.credentials {
            // `*` means nothing to a credentialed request: name what this response carries.
            let mut names: Vec<&str> = Vec::new();
            for name in self.expose.iter().chain(headers.keys()) {
                let name = name.as_str();
                if !names.contains(&name) && !name.starts_with("access-control-") {
                    names.push(name);
                }
            }
            join_value(names.into_iter())
        } else {
            self.expose_value.clone()
        };
        if let Some(expose) = expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose);
        }
    }
}

fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(ORIGIN)
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Checks a list of header names, returning whether it holds `*` and the other names, deduplicated.
fn header_names(
    field: &'static str,
    values: &[String],
) -> Result<(bool, Vec<HeaderName>), CorsConfigError> {
    let mut any = false;
    let mut names: Vec<HeaderName> = Vec::new();
    for (index, value) in values.iter().enumerate() {
        if value == "*" {
            any = true;
            continue;
        }
        let name =
            HeaderName::from_bytes(value.as_bytes()).map_err(|_| CorsConfigError::Header {
                field,
                index,
                value: value.clone(),
            })?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok((any, names))
}

/// The `Access-Control-Request-Headers` names, checked and joined, to echo as
/// `Access-Control-Allow-Headers`; `None` when there are none or one is not a header name.
fn requested_headers(value: &HeaderValue) -> Option<HeaderValue> {
    let value = value.to_str().ok()?;
    let mut names = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
    }
    join_value(names.iter().map(HeaderName::as_str))
}

/// Joins tokens with `, `; `None` for no tokens.
fn join_value<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let joined = items.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        return None;
    }
    // Tokens (method and header names, `*`) are always valid header values.
    HeaderValue::from_str(&joined).ok()
}

/// Appends to the `Vary` list the names it lacks (compared case-insensitively), keeping what is
/// there; a `Vary: *` already says it all.
fn add_vary(headers: &mut HeaderMap, names: &[&str]) {
    let mut missing: Vec<&str> = names.to_vec();
    for value in headers.get_all(VARY) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for token in value.split(',').map(str::trim) {
            if token == "*" {
                return;
            }
            missing.retain(|name| !name.eq_ignore_ascii_case(token));
        }
    }
    if let Some(value) = join_value(missing.into_iter()) {
        headers.append(VARY, value);
    }
}

// === impl Origin ===

/// A tuple origin as sent in an `Origin` header, or an `allowOrigins` entry: scheme and host
/// lowercased, port resolved to the scheme's default when absent (and known).
#[derive(Debug, PartialEq, Eq)]
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

impl<'a> Origin<'a> {
    /// Parses `<scheme>://<host>[:<port>]`. Scheme and host are checked but not lowercased here:
    /// comparisons are case-insensitive. `allow_star` admits `*` characters in the host, for
    /// patterns.
    fn parse(s: &'a str, allow_star: bool) -> Result<Self, &'static str> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("expected `<scheme>://<host>[:<port>]`")?;
        let mut bytes = scheme.bytes();
        let valid_scheme = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !valid_scheme {
            return Err("the scheme is not valid");
        }
        if rest.contains(['/', '?', '#']) {
            return Err("an origin has no path, query or fragment (no trailing `/` either)");
        }
        if rest.contains('@') {
            return Err("an origin has no user information");
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
            addr.parse::<Ipv6Addr>()
                .map_err(|_| "the bracketed host is not an IPv6 address")?;
            let host = &rest[..addr.len() + 2];
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or("unexpected text after `]`")?),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err("the host is empty");
        }
        if !host.starts_with('[') {
            let valid_host = host.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%')
                    || (allow_star && b == b'*')
            });
            if !valid_host {
                return Err("the host has characters a host name cannot have");
            }
        }
        let port = match port {
            None => default_port(scheme),
            Some(port) => {
                if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("the port is not a number from 1 to 65535");
                }
                match port.parse::<u16>() {
                    Ok(0) | Err(_) => return Err("the port is not a number from 1 to 65535"),
                    Ok(port) => Some(port),
                }
            }
        };
        Ok(Self { scheme, host, port })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

/// A compiled `allowOrigins` entry other than `*` and `null`.
#[derive(Debug)]
struct OriginPattern {
    /// Lowercase.
    scheme: String,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug)]
enum HostPattern {
    /// Lowercase host.
    Exact(String),
    /// `*.example.com`, kept as the lowercase suffix `.example.com`.
    Subdomains(String),
    /// `*`: any host.
    Any,
}

impl OriginPattern {
    fn parse(s: &str) -> Result<Self, &'static str> {
        let origin = Origin::parse(s, true)?;
        let host = if origin.host == "*" {
            HostPattern::Any
        } else if let Some(suffix) = origin.host.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(
                    "`*` may only stand as the whole leftmost label, as in `*.example.com`",
                );
            }
            if suffix.is_empty() || suffix.starts_with('.') {
                return Err("nothing follows `*.`");
            }
            HostPattern::Subdomains(format!(".{}", suffix.to_ascii_lowercase()))
        } else if origin.host.contains('*') {
            return Err("`*` may only stand as the whole leftmost label, as in `*.example.com`");
        } else {
            HostPattern::Exact(origin.host.to_ascii_lowercase())
        };
        Ok(Self {
            scheme: origin.scheme.to_ascii_lowercase(),
            host,
            port: origin.port,
        })
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        if !self.scheme.eq_ignore_ascii_case(origin.scheme) || self.port != origin.port {
            return false;
        }
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(host) => host.eq_ignore_ascii_case(origin.host),
            HostPattern::Subdomains(suffix) => {
                let host = origin.host;
                // Hosts are ASCII (checked by `Origin::parse`), so byte offsets are char
                // boundaries. IP literals have no subdomains.
                host.len() > suffix.len()
                    && host.as_bytes()[..host.len() - suffix.len()]
                        .last()
                        .is_some_and(|&b| b != b'.')
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && !host.starts_with('[')
                    && host.parse::<Ipv4Addr>().is_err()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::{ServiceExt, service_fn};

    use super::*;

    fn config(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..CorsConfig::default()
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// A service whose answers carry `upstream: yes` and, when given, extra headers; it counts
    /// its calls.
    fn upstream(
        calls: Arc<AtomicUsize>,
        extra: &'static [(&'static str, &'static str)],
    ) -> impl Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
    > + Clone {
        service_fn(move |_req: Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut res = Response::new(String::from("upstream body"));
                res.headers_mut()
                    .insert("upstream", HeaderValue::from_static("yes"));
                for (name, value) in extra {
                    res.headers_mut()
                        .append(*name, HeaderValue::from_static(value));
                }
                Ok(res)
            }
        })
    }

    async fn send(config: CorsConfig, req: Request<String>) -> (Response<String>, usize) {
        send_with(config, req, &[]).await
    }

    async fn send_with(
        config: CorsConfig,
        req: Request<String>,
        extra: &'static [(&'static str, &'static str)],
    ) -> (Response<String>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = CorsLayer::new(config)
            .expect("valid config")
            .layer(upstream(calls.clone(), extra));
        let res = svc.oneshot(req).await.expect("infallible");
        (res, calls.load(Ordering::SeqCst))
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request<String> {
        let mut b = Request::builder()
            .method(Method::OPTIONS)
            .uri("/api")
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, method);
        if let Some(h) = headers {
            b = b.header(ACCESS_CONTROL_REQUEST_HEADERS, h);
        }
        b.body(String::new()).unwrap()
    }

    fn get(origin: Option<&str>) -> Request<String> {
        let mut b = Request::builder().uri("/api");
        if let Some(o) = origin {
            b = b.header(ORIGIN, o);
        }
        b.body(String::new()).unwrap()
    }

    fn header<'a>(res: &'a Response<String>, name: &str) -> Option<&'a str> {
        res.headers().get(name).map(|v| v.to_str().unwrap())
    }

    fn vary(res: &Response<String>) -> Vec<String> {
        res.headers()
            .get_all(VARY)
            .iter()
            .flat_map(|v| v.to_str().unwrap().split(','))
            .map(|s| s.trim().to_string())
            .collect()
    }

    fn assert_no_cors(res: &Response<String>) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            assert!(!res.headers().contains_key(&name), "unexpected {name}");
        }
    }

    /// The Gateway API conformance route `cors-multiple-origins-methods-headers`.
    fn conformance_config() -> CorsConfig {
        CorsConfig {
            allow_origins: strings(&["https://www.foo.com", "https://*.bar.com"]),
            allow_methods: strings(&["GET", "OPTIONS"]),
            allow_headers: strings(&["x-header-1", "x-header-2"]),
            expose_headers: strings(&["x-header-3", "x-header-4"]),
            allow_credentials: true,
            max_age_secs: Some(3600),
        }
    }

    // --- preflight ---

    #[tokio::test]
    async fn preflight_allowed_is_answered_without_upstream() {
        let req = preflight("https://www.foo.com", "GET", Some("x-header-1, x-header-2"));
        let (res, calls) = send(conformance_config(), req).await;
        assert_eq!(calls, 0);
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.body().is_empty());
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://www.foo.com")
        );
        assert_eq!(
            header(&res, "access-control-allow-methods"),
            Some("GET, OPTIONS")
        );
        assert_eq!(
            header(&res, "access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            header(&res, "access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        assert_eq!(header(&res, "access-control-max-age"), Some("3600"));
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            vary(&res),
            [
                "Origin",
                "Access-Control-Request-Method",
                "Access-Control-Request-Headers"
            ]
        );
        assert!(!res.headers().contains_key("upstream"));
    }

    #[tokio::test]
    async fn preflight_default_max_age_is_five_seconds() {
        let req = preflight("https://a.example", "GET", None);
        let (res, _) = send(config(&["https://a.example"]), req).await;
        assert_eq!(header(&res, "access-control-max-age"), Some("5"));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_METHODS));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_HEADERS));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_EXPOSE_HEADERS));
    }

    #[tokio::test]
    async fn preflight_disallowed_origin_is_403_without_cors_headers() {
        let req = preflight("https://foobar.com", "GET", None);
        let (res, calls) = send(conformance_config(), req).await;
        assert_eq!(calls, 0);
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(res.body().is_empty());
        assert_no_cors(&res);
        assert_eq!(vary(&res).len(), 3);
    }

    #[tokio::test]
    async fn preflight_disallowed_method_is_403() {
        let req = preflight("https://www.foo.com", "DELETE", None);
        let (res, calls) = send(conformance_config(), req).await;
        assert_eq!(calls, 0);
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_no_cors(&res);
    }

    #[tokio::test]
    async fn preflight_method_names_are_case_sensitive() {
        let mut cfg = config(&["https://a.example"]);
        cfg.allow_methods = strings(&["PUT"]);
        let (res, _) = send(cfg.clone(), preflight("https://a.example", "put", None)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let (res, _) = send(cfg, preflight("https://a.example", "PUT", None)).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn preflight_malformed_request_method_is_403() {
        let mut cfg = config(&["https://a.example"]);
        cfg.allow_methods = strings(&["*"]);
        let (res, _) = send(cfg, preflight("https://a.example", "BAD METHOD", None)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_no_cors(&res);
    }

    #[tokio::test]
    async fn preflight_safelisted_methods_always_allowed() {
        // No allowMethods at all: GET, HEAD and POST still pass, PUT does not.
        for method in ["GET", "HEAD", "POST"] {
            let (res, _) = send(
                config(&["https://a.example"]),
                preflight("https://a.example", method, None),
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK, "{method}");
        }
        let (res, _) = send(
            config(&["https://a.example"]),
            preflight("https://a.example", "PUT", None),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn preflight_wildcard_methods_echo_requested_method() {
        let mut cfg = config(&["https://www.foo.com"]);
        cfg.allow_methods = strings(&["*"]);
        let (res, _) = send(cfg, preflight("https://www.foo.com", "POST", None)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "access-control-allow-methods"), Some("POST"));
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://www.foo.com")
        );
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[tokio::test]
    async fn preflight_wildcard_headers_echo_requested_headers_with_credentials() {
        let cfg = CorsConfig {
            allow_origins: strings(&["https://*.foo.com"]),
            allow_methods: strings(&["*"]),
            allow_headers: strings(&["*"]),
            allow_credentials: true,
            ..CorsConfig::default()
        };
        let req = preflight(
            "https://other.foo.com",
            "PUT",
            Some("X-Header-1,x-header-2"),
        );
        let (res, _) = send(cfg.clone(), req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://other.foo.com")
        );
        assert_eq!(header(&res, "access-control-allow-methods"), Some("PUT"));
        assert_eq!(
            header(&res, "access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            Some("true")
        );

        // No requested headers: the header is left out rather than sent as `*`.
        let (res, _) = send(cfg, preflight("https://other.foo.com", "PUT", None)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_HEADERS));
    }

    #[tokio::test]
    async fn preflight_wildcard_headers_without_credentials_echo_too() {
        let cfg = CorsConfig {
            allow_origins: strings(&["*"]),
            allow_headers: strings(&["*"]),
            ..CorsConfig::default()
        };
        let req = preflight("https://x.test", "GET", Some("authorization"));
        let (res, _) = send(cfg, req).await;
        assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
        // Echoed: `*` would not cover `Authorization` under Fetch.
        assert_eq!(
            header(&res, "access-control-allow-headers"),
            Some("authorization")
        );
    }

    #[tokio::test]
    async fn preflight_expose_star_not_sent_with_credentials() {
        let mut cfg = config(&["https://a.example"]);
        cfg.expose_headers = strings(&["*", "x-total"]);
        let (res, _) = send(cfg.clone(), preflight("https://a.example", "GET", None)).await;
        assert_eq!(
            header(&res, "access-control-expose-headers"),
            Some("*, x-total")
        );
        cfg.allow_credentials = true;
        let (res, _) = send(cfg, preflight("https://a.example", "GET", None)).await;
        assert_eq!(
            header(&res, "access-control-expose-headers"),
            Some("x-total")
        );
    }

    #[tokio::test]
    async fn options_without_request_method_is_an_actual_request() {
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri("/api")
            .header(ORIGIN, "https://www.foo.com")
            .body(String::new())
            .unwrap();
        let (res, calls) = send(conformance_config(), req).await;
        assert_eq!(calls, 1);
        assert_eq!(res.headers()["upstream"], "yes");
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://www.foo.com")
        );
        assert!(!res.headers().contains_key(ACCESS_CONTROL_MAX_AGE));
    }

    // --- origins ---

    #[tokio::test]
    async fn wildcard_subdomains_match_one_or_more_labels_only() {
        let cfg = conformance_config();
        for origin in [
            "https://www.bar.com",
            "https://xpto.www.bar.com",
            "HTTPS://WWW.BAR.COM",
        ] {
            let (res, _) = send(cfg.clone(), preflight(origin, "GET", None)).await;
            assert_eq!(res.status(), StatusCode::OK, "{origin}");
            assert_eq!(header(&res, "access-control-allow-origin"), Some(origin));
        }
        for origin in [
            "https://bar.com",
            "https://.bar.com",
            "https://evilbar.com",
            "http://www.bar.com",
            "https://www.bar.com:8443",
            "https://www.bar.com.evil.com",
        ] {
            let (res, _) = send(cfg.clone(), preflight(origin, "GET", None)).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin}");
        }
    }

    #[tokio::test]
    async fn wildcard_subdomains_do_not_match_ip_literals() {
        let cfg = config(&["http://*.0.0.1"]);
        let (res, _) = send(cfg, preflight("http://127.0.0.1", "GET", None)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn default_ports_are_normalised_and_ports_must_match() {
        let cfg = config(&[
            "https://a.example",
            "http://b.example:80",
            "http://c.example:8080",
        ]);
        let allowed = [
            "https://a.example:443",
            "https://a.example",
            "http://b.example",
            "http://c.example:8080",
        ];
        for origin in allowed {
            let (res, _) = send(cfg.clone(), get(Some(origin))).await;
            assert_eq!(
                header(&res, "access-control-allow-origin"),
                Some(origin),
                "{origin}"
            );
        }
        for origin in [
            "https://a.example:8443",
            "http://a.example",
            "http://c.example",
        ] {
            let (res, _) = send(cfg.clone(), get(Some(origin))).await;
            assert!(
                !res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
                "{origin}"
            );
        }
    }

    #[tokio::test]
    async fn host_comparison_is_case_insensitive_and_origin_is_echoed_as_sent() {
        let cfg = config(&["https://App.Example.com"]);
        let (res, _) = send(cfg, get(Some("https://app.EXAMPLE.com"))).await;
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://app.EXAMPLE.com")
        );
    }

    #[tokio::test]
    async fn ipv6_origins_match() {
        let cfg = config(&["http://[::1]:3000"]);
        let (res, _) = send(cfg.clone(), get(Some("http://[::1]:3000"))).await;
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("http://[::1]:3000")
        );
        let (res, _) = send(cfg, get(Some("http://[::1]"))).await;
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[tokio::test]
    async fn malformed_origin_header_matches_nothing() {
        for cfg in [config(&["*"]), config(&["https://a.example"])] {
            for origin in [
                "https://a.example/",
                "a.example",
                "https://a.example:0",
                "https://",
            ] {
                let (res, calls) = send(cfg.clone(), get(Some(origin))).await;
                assert_eq!(calls, 1);
                assert!(
                    !res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
                    "{origin}"
                );
            }
        }
    }

    #[tokio::test]
    async fn star_origin_without_credentials_answers_star() {
        let (res, _) = send(
            config(&["*"]),
            preflight("https://foobar.com:12345", "GET", None),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let (res, _) = send(config(&["*"]), get(Some("https://foobar.com"))).await;
        assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
        assert_eq!(vary(&res), ["Origin"]);
    }

    #[tokio::test]
    async fn star_origin_with_credentials_echoes_the_origin() {
        let mut cfg = config(&["*"]);
        cfg.allow_credentials = true;
        let (res, _) = send(cfg.clone(), preflight("https://foobar.com", "GET", None)).await;
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://foobar.com")
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            Some("true")
        );
        let (res, _) = send(cfg, get(Some("https://foobar.com"))).await;
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://foobar.com")
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            Some("true")
        );
    }

    #[tokio::test]
    async fn null_origin_handling() {
        // Never matched by a host pattern.
        let (res, _) = send(config(&["https://*"]), get(Some("null"))).await;
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let (res, _) = send(config(&["https://*.example.com"]), get(Some("null"))).await;
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        // `*` without credentials: answered with `*`.
        let (res, _) = send(config(&["*"]), get(Some("null"))).await;
        assert_eq!(header(&res, "access-control-allow-origin"), Some("*"));
        // `*` with credentials: not echoed.
        let mut cfg = config(&["*"]);
        cfg.allow_credentials = true;
        let (res, _) = send(cfg.clone(), preflight("null", "GET", None)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        // An explicit `null` entry allows it, credentials or not.
        cfg.allow_origins = strings(&["null"]);
        let (res, _) = send(cfg, get(Some("null"))).await;
        assert_eq!(header(&res, "access-control-allow-origin"), Some("null"));
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            Some("true")
        );
    }

    #[tokio::test]
    async fn scheme_wildcard_host_matches_any_host_on_that_scheme_and_port() {
        let cfg = config(&["https://*"]);
        let (res, _) = send(cfg.clone(), get(Some("https://anything.test"))).await;
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://anything.test")
        );
        let (res, _) = send(cfg, get(Some("http://anything.test"))).await;
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    // --- actual requests ---

    #[tokio::test]
    async fn actual_request_allowed_gets_cors_headers() {
        let (res, calls) = send(conformance_config(), get(Some("https://www.foo.com"))).await;
        assert_eq!(calls, 1);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.body(), "upstream body");
        assert_eq!(res.headers()["upstream"], "yes");
        assert_eq!(
            header(&res, "access-control-allow-origin"),
            Some("https://www.foo.com")
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            header(&res, "access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        assert_eq!(vary(&res), ["Origin"]);
        // Preflight-only headers stay on preflights.
        assert!(!res.headers().contains_key(ACCESS_CONTROL_MAX_AGE));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_METHODS));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_HEADERS));
    }

    #[tokio::test]
    async fn actual_request_disallowed_origin_passes_without_cors_headers() {
        let (res, calls) = send(conformance_config(), get(Some("https://foobar.com"))).await;
        assert_eq!(calls, 1);
        assert_eq!(res.body(), "upstream body");
        assert_no_cors(&res);
        assert_eq!(vary(&res), ["Origin"]);
    }

    #[tokio::test]
    async fn no_origin_passes_through_without_cors_headers() {
        let (res, calls) = send(conformance_config(), get(None)).await;
        assert_eq!(calls, 1);
        assert_eq!(res.body(), "upstream body");
        assert_eq!(res.headers()["upstream"], "yes");
        assert_no_cors(&res);
        // Only `Vary: Origin`, so that caches keep CORS and non-CORS answers apart.
        assert_eq!(vary(&res), ["Origin"]);
    }

    #[tokio::test]
    async fn options_without_origin_is_passed_on() {
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri("/api")
            .header(ACCESS_CONTROL_REQUEST_METHOD, "PUT")
            .body(String::new())
            .unwrap();
        let (res, calls) = send(conformance_config(), req).await;
        assert_eq!(calls, 1);
        assert_no_cors(&res);
    }

    #[tokio::test]
    async fn vary_is_appended_not_duplicated_not_clobbered() {
        // An existing list is kept and `Origin` added once.
        let (res, _) = send_with(
            conformance_config(),
            get(Some("https://www.foo.com")),
            &[("vary", "Accept-Encoding")],
        )
        .await;
        assert_eq!(vary(&res), ["Accept-Encoding", "Origin"]);

        // Already there (any case, any position): nothing added.
        let (res, _) = send_with(
            conformance_config(),
            get(Some("https://www.foo.com")),
            &[("vary", "accept-encoding, origin")],
        )
        .await;
        assert_eq!(vary(&res), ["accept-encoding", "origin"]);

        // `Vary: *` is left alone.
        let (res, _) = send_with(conformance_config(), get(None), &[("vary", "*")]).await;
        assert_eq!(vary(&res), ["*"]);
    }

    #[test]
    fn add_vary_adds_only_missing_preflight_names() {
        let mut headers = HeaderMap::new();
        headers.append(VARY, HeaderValue::from_static("origin"));
        headers.append(
            VARY,
            HeaderValue::from_static("Access-Control-Request-Headers"),
        );
        add_vary(&mut headers, VARY_PREFLIGHT);
        let all: Vec<_> = headers.get_all(VARY).iter().collect();
        assert_eq!(
            all,
            [
                "origin",
                "Access-Control-Request-Headers",
                "Access-Control-Request-Method"
            ]
        );
    }

    #[tokio::test]
    async fn actual_request_overrides_upstream_cors_headers_when_allowed() {
        let (res, _) = send_with(
            conformance_config(),
            get(Some("https://www.foo.com")),
            &[("access-control-allow-origin", "*")],
        )
        .await;
        let values: Vec<_> = res
            .headers()
            .get_all(ACCESS_CONTROL_ALLOW_ORIGIN)
            .iter()
            .collect();
        assert_eq!(values, ["https://www.foo.com"]);
    }

    #[tokio::test]
    async fn expose_star_with_credentials_lists_the_response_headers() {
        let cfg = CorsConfig {
            allow_origins: strings(&["https://a.example"]),
            expose_headers: strings(&["*", "x-listed"]),
            allow_credentials: true,
            ..CorsConfig::default()
        };
        let (res, _) = send_with(cfg, get(Some("https://a.example")), &[("x-total", "3")]).await;
        let value = header(&res, "access-control-expose-headers").unwrap();
        let mut names: Vec<&str> = value.split(", ").collect();
        assert_eq!(names[0], "x-listed", "configured names come first");
        names.sort_unstable();
        assert_eq!(names, ["upstream", "vary", "x-listed", "x-total"]);
    }

    #[tokio::test]
    async fn expose_star_without_credentials_is_star() {
        let cfg = CorsConfig {
            allow_origins: strings(&["https://a.example"]),
            expose_headers: strings(&["*"]),
            ..CorsConfig::default()
        };
        let (res, _) = send(cfg, get(Some("https://a.example"))).await;
        assert_eq!(header(&res, "access-control-expose-headers"), Some("*"));
        assert!(!res.headers().contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[tokio::test]
    async fn inner_errors_pass_through() {
        let svc = CorsLayer::new(config(&["*"])).unwrap().layer(service_fn(
            |_req: Request<String>| async { Err::<Response<String>, _>("upstream failed") },
        ));
        let err = svc
            .oneshot(get(Some("https://a.example")))
            .await
            .unwrap_err();
        assert_eq!(err, "upstream failed");
    }

    // --- configuration ---

    #[test]
    fn config_errors_name_the_field() {
        let cases: &[(CorsConfig, &str)] = &[
            (config(&["https://a.*.com"]), "allowOrigins[0]"),
            (
                config(&["https://ok.com", "https://*example.com"]),
                "allowOrigins[1]",
            ),
            (config(&["https://a.com/"]), "allowOrigins[0]"),
            (config(&["a.com"]), "allowOrigins[0]"),
            (config(&["https://a.com:70000"]), "allowOrigins[0]"),
            (config(&["https://a.com:0"]), "allowOrigins[0]"),
            (config(&["https://*."]), "allowOrigins[0]"),
            (config(&[""]), "allowOrigins[0]"),
            (config(&["https://user@a.com"]), "allowOrigins[0]"),
            (config(&["https://[::1"]), "allowOrigins[0]"),
            (
                CorsConfig {
                    allow_methods: strings(&["GET", "BAD METHOD"]),
                    ..CorsConfig::default()
                },
                "allowMethods[1]",
            ),
            (
                CorsConfig {
                    allow_headers: strings(&["x ok"]),
                    ..CorsConfig::default()
                },
                "allowHeaders[0]",
            ),
            (
                CorsConfig {
                    expose_headers: strings(&["x-a", "x:b"]),
                    ..CorsConfig::default()
                },
                "exposeHeaders[1]",
            ),
        ];
        for (cfg, field) in cases {
            let err = CorsLayer::new(cfg.clone()).unwrap_err().to_string();
            assert!(err.starts_with(field), "{err:?} should start with {field}");
        }
    }

    #[test]
    fn star_with_credentials_is_a_valid_config() {
        let cfg = CorsConfig {
            allow_origins: strings(&["*"]),
            allow_methods: strings(&["*"]),
            allow_headers: strings(&["*"]),
            expose_headers: strings(&["*"]),
            allow_credentials: true,
            max_age_secs: None,
        };
        assert!(CorsLayer::new(cfg).is_ok());
    }

    #[test]
    fn services_are_cheap_clones_and_send() {
        fn assert_send_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
        let svc = CorsLayer::new(config(&["*"]))
            .unwrap()
            .layer(upstream(Arc::default(), &[]));
        assert_send_clone(&svc);
        let fut = svc.clone().oneshot(get(None));
        fn assert_send<T: Send>(_: &T) {}
        assert_send(&fut);
    }
}
