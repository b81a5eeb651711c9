//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 section 7.6.1) and
//! the `X-Forwarded-*` family.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message; always removed when forwarding.
/// `TE` is handled apart: `TE: trailers` is what gRPC needs end to end.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// True for an HTTP/1.1 request asking to switch to WebSocket (`Connection: upgrade` +
/// `Upgrade: websocket`), the one upgrade the proxy splices. Other upgrades are treated as
/// hop-by-hop headers and the request goes on as a plain one: `h2c` in particular describes the
/// client's own connection (its `HTTP2-Settings` are connection-specific, RFC 7540 section 3.2),
/// and a backend accepting it would get a raw HTTP/2 tunnel that bypasses routing.
pub(crate) fn is_upgrade_request(headers: &HeaderMap) -> bool {
    has_token(headers, &header::UPGRADE, "websocket")
        && has_token(headers, &header::CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including any the `Connection` header names. With `upgrade`, the
/// `Upgrade` header survives and `Connection: upgrade` is written back, as a protocol switch
/// needs both on the next hop.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of these headers. One pass over the names (compared, not
    // hashed) tells, where a `remove` per name would hash every one of them, present or not.
    if !upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names listed in Connection are hop-by-hop too (RFC 9110 section 7.6.1). Collected first
    // because they are removed from the same map; rare enough that the allocation is fine.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if name != header::TE && !(upgrade && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(header::UPGRADE);
    } else {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // Keep `TE: trailers` (gRPC relies on it); any other TE value is about this hop only.
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    if headers.remove(header::TE).is_some() && trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether `name` is one [`remove_hop_by_hop`] removes or rewrites whatever the message says
/// (headers named in `Connection` come with a `Connection` header).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::UPGRADE || *name == header::TE || HOP_BY_HOP.contains(name)
}

/// The client's address as `X-Forwarded-For` gives it (an IPv4-mapped IPv6 address as IPv4).
/// Made once per connection: its requests share the value.
pub(crate) fn forwarded_for(client: IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(45);
    crate::ascii::ip(client.to_canonical(), &mut text);
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Adds the client's address (`client`, made by [`forwarded_for`]) to `X-Forwarded-For` and
/// sets `X-Forwarded-Proto` and `X-Forwarded-Host` for the upstream. The client's own
/// `X-Forwarded-Proto`/`-Host` values are replaced: they are facts about this hop, which only
/// the proxy knows.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    // Room for the three at once: the map grows once at most.
    headers.reserve(3);
    match headers.entry(X_FORWARDED_FOR) {
        // The usual case: the client's address alone, shared with the connection's other
        // requests.
        Entry::Vacant(entry) => {
            entry.insert(client.clone());
        }
        // Several X-Forwarded-For lines are one list (RFC 9110 section 5.3): fold them into one
        // line and append this client.
        Entry::Occupied(mut entry) => {
            let mut xff = Vec::with_capacity(128);
            for prior in entry.iter() {
                if !prior.is_empty() {
                    xff.extend_from_slice(prior.as_bytes());
                    xff.extend_from_slice(b", ");
                }
            }
            xff.extend_from_slice(client.as_bytes());
            if let Ok(xff) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
                entry.insert(xff);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// Envoy's `x-forwarded-client-cert`: what the listener verified about the client's
/// certificate. Whatever a client sent under that name is removed first, so an upstream can
/// trust the header (Envoy's `SANITIZE_SET`).
pub(crate) const X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");

/// Replaces `x-forwarded-client-cert` with the verified certificate's hash, subject and names
/// (`Hash=ab12..;Subject="CN=a";URI=spiffe://x/y;DNS=a.example`, Envoy's order), or removes it
/// without one.
pub(crate) fn set_client_cert(
    headers: &mut HeaderMap,
    cert: Option<&novaedge_filters::ClientCertificate>,
) {
    headers.remove(X_FORWARDED_CLIENT_CERT);
    let Some(cert) = cert else {
        return;
    };
    let id = &cert.0;
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let plain_or_quoted = |v: &str| {
        if v.contains([',', ';', '=', '"']) {
            quoted(v)
        } else {
            v.to_owned()
        }
    };
    let mut parts = Vec::new();
    if !id.sha256.is_empty() {
        parts.push(format!("Hash={}", id.sha256));
    }
    parts.push(format!("Subject={}", quoted(&id.subject)));
    parts.extend(
        id.uris
            .iter()
            .map(|u| format!("URI={}", plain_or_quoted(u))),
    );
    parts.extend(
        id.dns_names
            .iter()
            .map(|d| format!("DNS={}", plain_or_quoted(d))),
    );
    match HeaderValue::from_str(&parts.join(";")) {
        Ok(value) => {
            headers.insert(X_FORWARDED_CLIENT_CERT, value);
        }
        Err(_) => tracing::debug!("client certificate names are not a valid header value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn end_to_end_headers_are_left_as_they_are() {
        let pairs = [
            ("host", "a.example"),
            ("accept", "*/*"),
            ("x-multi", "1"),
            ("x-multi", "2"),
        ];
        let mut h = map(&pairs);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h, map(&pairs));
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = map(&[("te", "trailers"), ("connection", "te")]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "gzip, trailers;q=1")]);
        remove_hop_by_hop(&mut h, false);
        assert!(
            h.get("te").is_none(),
            "parameterised trailers is not the plain token"
        );
    }

    #[test]
    fn upgrade_keeps_upgrade_and_connection() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
        assert!(!is_upgrade_request(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn only_websocket_is_an_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ]);
        assert!(!is_upgrade_request(&h));
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        let h = map(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(is_upgrade_request(&h));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed"),
        ]);
        let host = HeaderValue::from_static("example.com:8080");
        let client = forwarded_for("127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, &client, "http", Some(&host));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.51.100.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:8080");

        let mut h = HeaderMap::new();
        let client = forwarded_for("::ffff:10.1.2.3".parse().unwrap());
        add_forwarded(&mut h, &client, "http", None);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(forwarded_for("2001:db8::1".parse().unwrap()), "2001:db8::1");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn client_cert_header_is_replaced_and_quoted() {
        use novaedge_filters::{CertificateIdentity, ClientCertificate};
        let mut h = map(&[("x-forwarded-client-cert", "Subject=\"CN=forged\"")]);
        set_client_cert(&mut h, None);
        assert!(h.get("x-forwarded-client-cert").is_none());
        let cert = ClientCertificate(std::sync::Arc::new(CertificateIdentity {
            subject: "CN=alice \"a\",O=Example".into(),
            dns_names: vec!["alice.test".into()],
            uris: vec!["spiffe://example.test/ns/shop/sa/web".into()],
            sha256: "ab12".into(),
            ..CertificateIdentity::default()
        }));
        let mut h = map(&[("x-forwarded-client-cert", "forged")]);
        set_client_cert(&mut h, Some(&cert));
        assert_eq!(
            h.get_all("x-forwarded-client-cert")
                .iter()
                .collect::<Vec<_>>(),
            [
                r#"Hash=ab12;Subject="CN=alice \"a\",O=Example";URI=spiffe://example.test/ns/shop/sa/web;DNS=alice.test"#
            ]
        );
    }
}
