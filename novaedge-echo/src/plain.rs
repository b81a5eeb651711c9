//! The plain HTTP handler: describes the request back as JSON, or answers
//! with filler bytes for throughput tests.
//!
//! A request may ask for response headers with [`SET_HEADER`]
//! (`x-echo-set-header: Name-1:value-1,Name-2:value-2`), the convention of the
//! Gateway API conformance suite's echo backend, so tests can check what a
//! proxy does to the headers a backend sends.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};

use crate::server::{BoxError, ResponseBody};

/// Request header listing response headers to send back, as comma-separated
/// `name:value` pairs; a name that repeats is sent with each of its values.
pub const SET_HEADER: &str = "x-echo-set-header";

/// What the echo server received in a plain HTTP request: the JSON body of
/// its answer.
///
/// The type deserializes too, so tests can read answers back with
/// `serde_json::from_slice::<RequestInfo>(&body)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// Name of the echo server that answered.
    pub name: String,
    /// Request method, such as `GET`.
    pub method: String,
    /// Path of the request URI, without the query.
    pub path: String,
    /// Query of the request URI, without the `?`, if it had one.
    pub query: Option<String>,
    /// The `Host` header, or else the URI authority (HTTP/2 sends
    /// `:authority` instead of `Host`).
    pub host: Option<String>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every request header, by lowercase name, each with all its values in
    /// the order received. Values that are not UTF-8 are converted lossily.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Number of body bytes received.
    pub body_len: u64,
    /// Address of the peer of the connection (the proxy, behind a proxy).
    pub remote_addr: SocketAddr,
}

// === impl RequestInfo ===

impl RequestInfo {
    /// The first value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    }
}

/// Answers a plain HTTP request after reading all of its body.
pub(crate) async fn echo(
    request: Request<hyper::body::Incoming>,
    name: &str,
    remote_addr: SocketAddr,
) -> Result<Response<ResponseBody>, BoxError> {
    let (parts, mut body) = request.into_parts();

    let options = match Options::parse(parts.uri.query()) {
        Ok(options) => options,
        Err(error) => return Ok(text(StatusCode::BAD_REQUEST, format!("{error}\n"))),
    };
    let extra_headers = match requested_headers(&parts.headers) {
        Ok(headers) => headers,
        Err(error) => return Ok(text(StatusCode::BAD_REQUEST, format!("{error}\n"))),
    };

    // Count the body without keeping it, so large uploads cost no memory.
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            body_len += data.len() as u64;
        }
    }

    if let Some(delay) = options.delay {
        tokio::time::sleep(delay).await;
    }

    let builder = Response::builder().status(options.status);
    let mut response = if let Some(size) = options.size {
        builder
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Filler::new(size).boxed_unsync())?
    } else {
        let info = RequestInfo {
            name: name.to_owned(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            host: parts
                .headers
                .get(header::HOST)
                .map(lossy)
                .or_else(|| parts.uri.authority().map(ToString::to_string)),
            version: version_name(parts.version).to_owned(),
            headers: headers(&parts.headers),
            body_len,
            remote_addr,
        };
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(serde_json::to_vec(&info)?))?
    };
    for (name, value) in extra_headers {
        response.headers_mut().append(name, value);
    }
    Ok(response)
}

/// A [`SET_HEADER`] entry that is not a `name:value` pair of a valid header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("header `{SET_HEADER}`: {entry:?} is not `name:value` with a valid header name and value")]
struct SetHeaderError {
    entry: String,
}

/// The response headers the request asks for with [`SET_HEADER`], in order.
fn requested_headers(
    headers: &HeaderMap,
) -> Result<Vec<(HeaderName, HeaderValue)>, SetHeaderError> {
    let mut out = Vec::new();
    for value in headers.get_all(SET_HEADER) {
        let value = String::from_utf8_lossy(value.as_bytes());
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once(':').and_then(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                    HeaderValue::from_str(value.trim()).ok()?,
                ))
            });
            out.push(parsed.ok_or_else(|| SetHeaderError {
                entry: entry.to_owned(),
            })?);
        }
    }
    Ok(out)
}

fn headers(map: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut headers = BTreeMap::<String, Vec<String>>::new();
    for (name, value) in map {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(lossy(value));
    }
    headers
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// A response with a plain text body.
pub(crate) fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A body sent in one piece.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the query parameters ask of the answer.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    status: StatusCode,
    delay: Option<Duration>,
    size: Option<u64>,
}

/// A query parameter with a value the echo server cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("query parameter `{name}={value}`: {reason}")]
struct QueryError {
    name: &'static str,
    value: String,
    reason: &'static str,
}

// === impl Options ===

impl Options {
    /// Reads `status`, `delay_ms` and `size`; other parameters are ignored.
    /// When a parameter repeats, the last one wins.
    fn parse(query: Option<&str>) -> Result<Self, QueryError> {
        let mut options = Options {
            status: StatusCode::OK,
            delay: None,
            size: None,
        };
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='));
        for (name, value) in pairs {
            let error = |name, reason| QueryError {
                name,
                value: value.to_owned(),
                reason,
            };
            match name {
                "status" => {
                    options.status = value
                        .parse::<u16>()
                        .ok()
                        .and_then(|code| StatusCode::from_u16(code).ok())
                        .ok_or_else(|| error("status", "expected an HTTP status code (100-999)"))?;
                }
                "delay_ms" => {
                    let millis = value
                        .parse()
                        .map_err(|_| error("delay_ms", "expected a number of milliseconds"))?;
                    options.delay = Some(Duration::from_millis(millis));
                }
                "size" => {
                    let size = value
                        .parse()
                        .map_err(|_| error("size", "expected a number of bytes"))?;
                    options.size = Some(size);
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

/// A body of exactly `remaining` filler bytes, sent in chunks from one static
/// buffer so that large answers allocate nothing.
#[derive(Debug)]
struct Filler {
    remaining: u64,
}

const FILLER_CHUNK: &[u8] = &[b'x'; 16 * 1024];

// === impl Filler ===

impl Filler {
    fn new(size: u64) -> Self {
        Self { remaining: size }
    }
}

impl Body for Filler {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = usize::try_from(self.remaining).map_or(FILLER_CHUNK.len(), |remaining| {
            remaining.min(FILLER_CHUNK.len())
        });
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &FILLER_CHUNK[..len],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_a_plain_ok() {
        let options = Options::parse(None).unwrap();
        assert_eq!(
            options,
            Options {
                status: StatusCode::OK,
                delay: None,
                size: None
            }
        );
        assert_eq!(Options::parse(Some("a=1&flag&b=")).unwrap(), options);
    }

    #[test]
    fn options_are_read_from_the_query() {
        let options = Options::parse(Some("status=503&delay_ms=200&size=1000&x=y")).unwrap();
        assert_eq!(
            options,
            Options {
                status: StatusCode::SERVICE_UNAVAILABLE,
                delay: Some(Duration::from_millis(200)),
                size: Some(1000),
            }
        );
    }

    #[test]
    fn bad_options_say_what_was_wrong() {
        let error = Options::parse(Some("status=42")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "query parameter `status=42`: expected an HTTP status code (100-999)"
        );
        let error = Options::parse(Some("delay_ms=soon")).unwrap_err();
        assert_eq!(error.name, "delay_ms");
        let error = Options::parse(Some("size=-1")).unwrap_err();
        assert_eq!(error.name, "size");
    }

    #[tokio::test]
    async fn filler_has_exactly_the_requested_size() {
        for size in [0, 1, 16 * 1024, 40_000] {
            let body = Filler::new(size);
            assert_eq!(body.size_hint().exact(), Some(size));
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(bytes.len() as u64, size);
            assert!(bytes.iter().all(|&byte| byte == b'x'));
        }
    }

    #[test]
    fn requested_response_headers_are_parsed_in_order() {
        let mut map = HeaderMap::new();
        map.append(
            SET_HEADER,
            HeaderValue::from_static("X-Header-Set: one, x-multi:a,X-Multi:b"),
        );
        map.append(SET_HEADER, HeaderValue::from_static("Another-Header:val"));
        let headers = requested_headers(&map).unwrap();
        let pairs: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("x-header-set", "one"),
                ("x-multi", "a"),
                ("x-multi", "b"),
                ("another-header", "val")
            ]
        );
        assert!(requested_headers(&HeaderMap::new()).unwrap().is_empty());
    }

    #[test]
    fn malformed_requested_headers_are_named() {
        let mut map = HeaderMap::new();
        map.insert(SET_HEADER, HeaderValue::from_static("ok:1,no-colon"));
        let error = requested_headers(&map).unwrap_err();
        assert_eq!(error.entry, "no-colon");
        map.insert(SET_HEADER, HeaderValue::from_static("bad name:1"));
        assert_eq!(requested_headers(&map).unwrap_err().entry, "bad name:1");
    }

    #[test]
    fn headers_keep_every_value_in_order() {
        let mut map = http::HeaderMap::new();
        map.append("x-multi", HeaderValue::from_static("one"));
        map.append("x-multi", HeaderValue::from_static("two"));
        map.insert("accept", HeaderValue::from_static("*/*"));
        let headers = headers(&map);
        assert_eq!(headers["x-multi"], ["one", "two"]);
        assert_eq!(headers["accept"], ["*/*"]);
    }
}
