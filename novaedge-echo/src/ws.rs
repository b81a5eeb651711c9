//! WebSocket echo: the HTTP/1.1 upgrade handshake (RFC 6455 §4.2) and a loop
//! that sends every data message back unchanged.

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};
use tracing::debug;

use crate::{
    plain::{full, text},
    server::ResponseBody,
};

/// The only WebSocket protocol version (RFC 6455 §4.1).
const WEBSOCKET_VERSION: &str = "13";

/// Whether `request` asks to be upgraded to a WebSocket.
///
/// Only HTTP/1.1 upgrades are recognised; HTTP/2 WebSockets (RFC 8441,
/// extended CONNECT) are treated as plain requests.
pub(crate) fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && has_token(request, header::UPGRADE, "websocket")
        && has_token(request, header::CONNECTION, "upgrade")
}

fn has_token<B>(request: &Request<B>, name: header::HeaderName, token: &str) -> bool {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Answers an upgrade request: `101 Switching Protocols` when the handshake
/// is valid, leaving the pending upgrade in `upgrades` for the connection
/// task, or a `4xx` saying what was wrong.
pub(crate) fn accept<B>(
    mut request: Request<B>,
    upgrades: &mpsc::UnboundedSender<OnUpgrade>,
) -> Response<ResponseBody> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("WebSocket upgrade needs GET, not {}\n", request.method()),
        );
    }
    let version = request.headers().get(header::SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|version| version != WEBSOCKET_VERSION) {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            format!("WebSocket upgrade needs Sec-WebSocket-Version: {WEBSOCKET_VERSION}\n"),
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static(WEBSOCKET_VERSION),
        );
        return response;
    }
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(
            StatusCode::BAD_REQUEST,
            "WebSocket upgrade needs a Sec-WebSocket-Key header\n".to_owned(),
        );
    };
    let accept_key = derive_accept_key(key.as_bytes());

    // The connection task awaits the upgrade once hyper has written the 101;
    // it has gone only if the connection is already closing.
    if upgrades.send(hyper::upgrade::on(&mut request)).is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "connection is closing\n".to_owned(),
        );
    }

    let mut response = Response::new(full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    // Base64 is always a valid header value.
    if let Ok(accept) = HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Echoes text and binary messages until the peer closes the WebSocket or
/// the server shuts down, which closes it with `1001 Going Away`.
///
/// tungstenite queues the answers to pings and closes itself; flushing sends
/// them.
pub(crate) async fn echo(upgraded: Upgraded, mut closing: watch::Receiver<()>) {
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    loop {
        let result = tokio::select! {
            message = socket.next() => match message {
                None => return,
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    socket.send(message).await
                }
                Some(Ok(Message::Ping(_) | Message::Close(_))) => socket.flush().await,
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => Ok(()),
                Some(Err(error)) => Err(error),
            },
            _ = closing.changed() => {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                };
                if let Err(error) = socket.close(Some(frame)).await {
                    debug!(%error, "WebSocket close failed");
                }
                return;
            }
        };
        match result {
            Ok(()) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return;
            }
            Err(error) => {
                debug!(%error, "WebSocket ended with an error");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request() -> http::request::Builder {
        upgrade_request_version("13")
    }

    fn upgrade_request_version(version: &str) -> http::request::Builder {
        Request::builder()
            .uri("/ws")
            .header(header::HOST, "echo")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "WebSocket")
            .header(header::SEC_WEBSOCKET_VERSION, version)
    }

    #[test]
    fn upgrades_are_recognised_by_their_tokens() {
        assert!(is_upgrade(&upgrade_request().body(()).unwrap()));
        let no_connection = Request::builder()
            .header(header::UPGRADE, "websocket")
            .body(())
            .unwrap();
        assert!(!is_upgrade(&no_connection));
        let h2 = upgrade_request().version(Version::HTTP_2).body(()).unwrap();
        assert!(!is_upgrade(&h2));
    }

    #[test]
    fn accept_key_follows_rfc_6455() {
        // The example of RFC 6455 §1.3.
        let request = upgrade_request()
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let (upgrades, mut pending) = mpsc::unbounded_channel();
        let response = accept(request, &upgrades);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(pending.try_recv().is_ok());
    }

    #[test]
    fn bad_handshakes_are_refused() {
        let (upgrades, mut pending) = mpsc::unbounded_channel();
        let no_key = upgrade_request().body(()).unwrap();
        assert_eq!(accept(no_key, &upgrades).status(), StatusCode::BAD_REQUEST);
        let old = upgrade_request_version("8")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let response = accept(old, &upgrades);
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        assert!(pending.try_recv().is_err());
    }
}
