//! Gateway API `RequestHeaderModifier` and `ResponseHeaderModifier`
//! (<https://gateway-api.sigs.k8s.io/reference/spec/#httpheaderfilter>).
//!
//! A [`HeaderModifier`] has three lists, applied in this order:
//!
//! - `set`: the header gets exactly this value, replacing every value it had;
//! - `add`: the value is appended to what the header already has, joined with `,` into one
//!   field line (`my-header: foo` plus `add: bar,baz` gives `my-header: foo,bar,baz`, the
//!   spec's example), or the header is created;
//! - `remove`: every value of the header goes.
//!
//! Header names compare case-insensitively, as `http::HeaderName` does. A name may appear once
//! across `set` and `add`; [`HeaderModifier::new`] refuses duplicates, as the Gateway API
//! schema does.
//!
//! [`RequestHeaderModifierLayer`] rewrites requests before the inner service sees them;
//! [`ResponseHeaderModifierLayer`] rewrites the inner service's responses.
//!
//! ```
//! use http::{Request, Response};
//! use novaedge_filters::headers::{HeaderModifier, RequestHeaderModifierLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let modifier = HeaderModifier::new(
//!     [("x-env", "prod")],
//!     [("x-trace", "proxy")],
//!     ["x-debug"],
//! )
//! .unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(RequestHeaderModifierLayer::new(modifier))
//!     .service(service_fn(|req: Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(Response::new(req.headers().clone()))
//!     }));
//! let req = Request::builder()
//!     .header("x-env", "dev")
//!     .header("x-trace", "client")
//!     .header("x-debug", "1")
//!     .body(())
//!     .unwrap();
//! let seen = service.oneshot(req).await.unwrap().into_body();
//! assert_eq!(seen["x-env"], "prod");
//! assert_eq!(seen["x-trace"], "client,proxy");
//! assert!(seen.get("x-debug").is_none());
//! # }
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use tower::{Layer, Service};

/// Why a header modifier configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderModifierError {
    /// Not a valid header name.
    #[error("{field}: {name:?} is not a valid header name")]
    InvalidName { field: &'static str, name: String },
    /// Not a valid header value.
    #[error("{field}: the value of {name:?} is not a valid header value")]
    InvalidValue { field: &'static str, name: String },
    /// A name listed twice in `set` and `add`.
    #[error("{field}: header {name:?} is listed more than once")]
    Duplicate { field: &'static str, name: String },
}

/// What to set, add and remove; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderModifier {
    /// Parses and checks the three lists.
    pub fn new<S, A, R>(
        set: impl IntoIterator<Item = (S, A)>,
        add: impl IntoIterator<Item = (S, A)>,
        remove: impl IntoIterator<Item = R>,
    ) -> Result<Self, HeaderModifierError>
    where
        S: AsRef<str>,
        A: AsRef<str>,
        R: AsRef<str>,
    {
        let mut seen = HashSet::new();
        let mut pairs = |field: &'static str, list: Vec<(S, A)>| {
            list.into_iter()
                .map(|(name, value)| {
                    let name = name.as_ref();
                    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        HeaderModifierError::InvalidName {
                            field,
                            name: name.to_owned(),
                        }
                    })?;
                    let value = HeaderValue::from_str(value.as_ref()).map_err(|_| {
                        HeaderModifierError::InvalidValue {
                            field,
                            name: name.to_owned(),
                        }
                    })?;
                    if !seen.insert(parsed.clone()) {
                        return Err(HeaderModifierError::Duplicate {
                            field,
                            name: name.to_owned(),
                        });
                    }
                    Ok((parsed, value))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let set = pairs("set", set.into_iter().collect())?;
        let add = pairs("add", add.into_iter().collect())?;
        let remove = remove
            .into_iter()
            .map(|name| {
                let name = name.as_ref();
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    HeaderModifierError::InvalidName {
                        field: "remove",
                        name: name.to_owned(),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { set, add, remove })
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies set, add and remove to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            let joined = {
                let mut existing = headers.get_all(name).iter().peekable();
                if existing.peek().is_none() {
                    None
                } else {
                    let mut joined: Vec<u8> = Vec::new();
                    for v in existing {
                        joined.extend_from_slice(v.as_bytes());
                        joined.push(b',');
                    }
                    joined.extend_from_slice(value.as_bytes());
                    // Valid values joined by a comma are a valid value.
                    HeaderValue::from_bytes(&joined).ok()
                }
            };
            headers.insert(name.clone(), joined.unwrap_or_else(|| value.clone()));
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// Applies a [`HeaderModifier`] to requests.
#[derive(Clone, Debug)]
pub struct RequestHeaderModifierLayer {
    modifier: Arc<HeaderModifier>,
}

impl RequestHeaderModifierLayer {
    pub fn new(modifier: HeaderModifier) -> Self {
        Self {
            modifier: Arc::new(modifier),
        }
    }
}

impl<S> Layer<S> for RequestHeaderModifierLayer {
    type Service = RequestHeaderModifier<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestHeaderModifier {
            inner,
            modifier: self.modifier.clone(),
        }
    }
}

/// The service of [`RequestHeaderModifierLayer`].
#[derive(Clone, Debug)]
pub struct RequestHeaderModifier<S> {
    inner: S,
    modifier: Arc<HeaderModifier>,
}

impl<S, B> Service<Request<B>> for RequestHeaderModifier<S>
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
        self.modifier.apply(req.headers_mut());
        self.inner.call(req)
    }
}

/// Applies a [`HeaderModifier`] to responses.
#[derive(Clone, Debug)]
pub struct ResponseHeaderModifierLayer {
    modifier: Arc<HeaderModifier>,
}

impl ResponseHeaderModifierLayer {
    pub fn new(modifier: HeaderModifier) -> Self {
        Self {
            modifier: Arc::new(modifier),
        }
    }
}

impl<S> Layer<S> for ResponseHeaderModifierLayer {
    type Service = ResponseHeaderModifier<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseHeaderModifier {
            inner,
            modifier: self.modifier.clone(),
        }
    }
}

/// The service of [`ResponseHeaderModifierLayer`].
#[derive(Clone, Debug)]
pub struct ResponseHeaderModifier<S> {
    inner: S,
    modifier: Arc<HeaderModifier>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ResponseHeaderModifier<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ModifyResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        ModifyResponse {
            inner: self.inner.call(req),
            modifier: self.modifier.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ResponseHeaderModifier`].
    #[derive(Debug)]
    pub struct ModifyResponse<F> {
        #[pin]
        inner: F,
        modifier: Arc<HeaderModifier>,
    }
}

impl<F, ResB, E> Future for ModifyResponse<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        this.modifier.apply(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    fn none() -> [(&'static str, &'static str); 0] {
        []
    }

    fn no_names() -> [&'static str; 0] {
        []
    }

    async fn through_request(modifier: HeaderModifier, headers: &[(&str, &str)]) -> HeaderMap {
        let service =
            RequestHeaderModifierLayer::new(modifier).layer(service_fn(
                |req: Request<()>| async move {
                    Ok::<_, Infallible>(Response::new(req.headers().clone()))
                },
            ));
        let mut req = Request::new(());
        for (name, value) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        service.oneshot(req).await.unwrap().into_body()
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn set_replaces_every_value_and_creates_missing_headers() {
        let modifier = HeaderModifier::new([("My-Header", "bar")], none(), no_names()).unwrap();
        let seen = through_request(
            modifier.clone(),
            &[("my-header", "foo"), ("my-header", "baz")],
        )
        .await;
        assert_eq!(values(&seen, "my-header"), ["bar"]);
        let seen = through_request(modifier, &[]).await;
        assert_eq!(values(&seen, "my-header"), ["bar"]);
    }

    #[tokio::test]
    async fn add_appends_to_existing_values_as_the_spec_example_says() {
        let modifier = HeaderModifier::new(none(), [("my-header", "bar,baz")], no_names()).unwrap();
        let seen = through_request(modifier.clone(), &[("my-header", "foo")]).await;
        assert_eq!(values(&seen, "my-header"), ["foo,bar,baz"]);
        // Several existing lines fold into one.
        let seen =
            through_request(modifier.clone(), &[("my-header", "a"), ("my-header", "b")]).await;
        assert_eq!(values(&seen, "my-header"), ["a,b,bar,baz"]);
        let seen = through_request(modifier, &[]).await;
        assert_eq!(values(&seen, "my-header"), ["bar,baz"]);
    }

    #[tokio::test]
    async fn remove_drops_every_value_case_insensitively() {
        let modifier = HeaderModifier::new(none(), none(), ["X-Remove"]).unwrap();
        let seen = through_request(
            modifier,
            &[("x-remove", "1"), ("x-remove", "2"), ("x-keep", "3")],
        )
        .await;
        assert!(seen.get("x-remove").is_none());
        assert_eq!(values(&seen, "x-keep"), ["3"]);
    }

    #[tokio::test]
    async fn response_modifier_changes_the_inner_response() {
        let modifier = HeaderModifier::new([("x-set", "1")], [("x-add", "2")], ["server"]).unwrap();
        let service = ResponseHeaderModifierLayer::new(modifier).layer(service_fn(
            |_req: Request<()>| async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("server", "backend")
                        .header("x-add", "1")
                        .header("x-set", "0")
                        .body(())
                        .unwrap(),
                )
            },
        ));
        let response = service.oneshot(Request::new(())).await.unwrap();
        let headers = response.headers();
        assert_eq!(values(headers, "x-set"), ["1"]);
        assert_eq!(values(headers, "x-add"), ["1,2"]);
        assert!(headers.get("server").is_none());
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let err = HeaderModifier::new([("bad name", "v")], none(), no_names()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "set: \"bad name\" is not a valid header name"
        );
        let err = HeaderModifier::new(none(), [("x", "bad\nvalue")], no_names()).unwrap_err();
        assert!(matches!(
            err,
            HeaderModifierError::InvalidValue { field: "add", .. }
        ));
        let err = HeaderModifier::new([("X-A", "1")], [("x-a", "2")], no_names()).unwrap_err();
        assert!(matches!(
            err,
            HeaderModifierError::Duplicate { field: "add", .. }
        ));
        let err = HeaderModifier::new(none(), none(), ["ok", "not ok"]).unwrap_err();
        assert!(matches!(
            err,
            HeaderModifierError::InvalidName {
                field: "remove",
                ..
            }
        ));
        assert!(HeaderModifier::default().is_empty());
    }
}
