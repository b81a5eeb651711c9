//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 section 7.6.1) and
//! the `X-Forwarded-*` family.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP_COUNT: usize = 7;

/// Headers that describe one connection, never the message; always removed when forwarding.
/// `TE` is handled apart: `TE: trailers` is what gRPC needs end to end. `Connection` comes
/// first ([`CONNECTION_INDEX`]), and [`hop_by_hop_index`] follows this order.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
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
    // Which of them the message has: one pass over its names (compared, not hashed), so that
    // only those present are removed. Most requests have none; most responses only
    // `Connection: keep-alive`, which costs one removal.
    let present = headers
        .keys()
        .filter_map(hop_by_hop_index)
        .fold(0u16, |present, i| present | 1 << i);
    if !upgrade && present == 0 {
        return;
    }
    if present & 1 << CONNECTION_INDEX != 0 {
        // Names listed in Connection are hop-by-hop too (RFC 9110 section 7.6.1). Those the
        // message has, and that are not removed below anyway, are collected first, as they are
        // removed from the same map; the usual `keep-alive`, `close` and `upgrade` cost no
        // allocation.
        let mut named = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            if !is_hop_by_hop_token(token)
                && headers.contains_key(token)
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                named.push(name);
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & 1 << i != 0 {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & 1 << UPGRADE_INDEX != 0 {
        headers.remove(header::UPGRADE);
    }
    if present & 1 << TE_INDEX != 0 {
        // Keep `TE: trailers` (gRPC relies on it); any other TE value is about this hop only.
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// [`remove_hop_by_hop`]'s bit for `Upgrade`, after those of [`HOP_BY_HOP`]: removed unless
/// the message is an upgrade.
const UPGRADE_INDEX: usize = HOP_BY_HOP_COUNT;
/// The bit for `TE`: rewritten to `trailers` or removed.
const TE_INDEX: usize = HOP_BY_HOP_COUNT + 1;
/// The bit for `Connection`, whose value names more.
const CONNECTION_INDEX: usize = 0;
// The bits fit remove_hop_by_hop's u16.
const _: () = assert!(TE_INDEX < 16);

/// Where `name` is among the headers [`remove_hop_by_hop`] removes or rewrites whatever the
/// message says (a header named in `Connection` is not, unless it is one of these). One match
/// on the text: every field of every forwarded message goes through here.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    hop_by_hop_slot(name.as_str())
}

/// [`hop_by_hop_index`] of a name in lower case.
fn hop_by_hop_slot(name: &str) -> Option<usize> {
    match name {
        "connection" => Some(CONNECTION_INDEX),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "trailer" => Some(5),
        "transfer-encoding" => Some(6),
        "upgrade" => Some(UPGRADE_INDEX),
        "te" => Some(TE_INDEX),
        _ => None,
    }
}

/// Whether a `Connection` token (any case) is one of the names [`remove_hop_by_hop`] handles
/// anyway: `keep-alive` and `upgrade`, usually. Told without hashing or making a name.
fn is_hop_by_hop_token(token: &str) -> bool {
    let mut lower = [0u8; 20];
    let Some(lower) = lower.get_mut(..token.len()) else {
        return false;
    };
    lower.copy_from_slice(token.as_bytes());
    lower.make_ascii_lowercase();
    std::str::from_utf8(lower)
        .ok()
        .and_then(hop_by_hop_slot)
        .is_some()
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

    /// The map's field names, in order.
    fn names(h: &HeaderMap) -> Vec<&str> {
        h.keys().map(HeaderName::as_str).collect()
    }

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
        assert_eq!(names(&h), ["x-kept"]);
    }

    #[test]
    fn hop_by_hop_indexes_follow_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::UPGRADE), Some(UPGRADE_INDEX));
        assert_eq!(hop_by_hop_index(&header::TE), Some(TE_INDEX));
        assert_eq!(hop_by_hop_index(&header::HOST), None);
        for token in ["Keep-Alive", "UPGRADE", "te", "Proxy-Authorization"] {
            assert!(is_hop_by_hop_token(token), "{token}");
        }
        for token in [
            "close",
            "",
            "x-keep-alive",
            "keep-alive-and-some-more-text",
            "tE ",
        ] {
            assert!(!is_hop_by_hop_token(token), "{token}");
        }
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_on_its_own() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "te",
        ] {
            let mut h = map(&[("x-kept", "yes"), (name, "x"), ("x-kept-too", "yes")]);
            remove_hop_by_hop(&mut h, false);
            assert_eq!(names(&h), ["x-kept", "x-kept-too"], "{name}");
        }
        // Named by Connection, in any case and spacing, over several values.
        let mut h = map(&[
            ("x-a", "1"),
            ("connection", "close"),
            ("connection", " X-A ,x-b"),
            ("x-b", "2"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["x-kept"]);
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
