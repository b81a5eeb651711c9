//! Hostnames: validating the ones routes declare, normalising the ones
//! requests carry, and intersecting listener and route hostnames.
//!
//! Route hostnames follow the Gateway API `Hostname` type: RFC 1123 labels,
//! optionally preceded by a single `*.` wildcard label. They are lowercased
//! here, once, so that lookups can compare bytes.

use std::borrow::Cow;
use std::fmt;

/// A hostname that is not a valid Gateway API or Ingress hostname.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hostname {hostname:?}: {reason}")]
pub struct HostnameError {
    /// The hostname exactly as given.
    pub hostname: String,
    pub reason: &'static str,
}

/// The hostnames a Gateway API route serves on one listener: the
/// intersection of the listener's hostname and the route's hostnames, as
/// HTTPRoute `spec.hostnames` (and GRPCRoute's) define it.
///
/// - `Some(vec![])`: neither names a host; the route serves any host.
/// - `Some(hostnames)`: pass these as [`Route::hostnames`](crate::Route).
///   A route without hostnames inherits the listener's; where a listener
///   wildcard and a route hostname overlap, the more specific of the two is
///   kept (listener `*.example.com`, route `*.com`: `*.example.com`;
///   listener `test.example.com`, route `*.example.com`: `test.example.com`);
///   route hostnames outside the listener's are dropped.
/// - `None`: no hostname intersects; the route does not attach to this
///   listener (status `Accepted=False`, reason `NoMatchingListenerHostname`).
///
/// The result is lowercase and free of duplicates, in the route's order.
///
/// ```
/// use novaedge_router::intersect_hostnames;
///
/// let route = ["test.example.com", "test.example.net", "*.com"];
/// assert_eq!(
///     intersect_hostnames(Some("*.example.com"), &route).unwrap(),
///     Some(vec!["test.example.com".to_owned(), "*.example.com".to_owned()])
/// );
/// assert_eq!(intersect_hostnames(Some("example.com"), &["*.example.com"]).unwrap(), None);
/// assert_eq!(intersect_hostnames(None, &[] as &[&str]).unwrap(), Some(vec![]));
/// ```
pub fn intersect_hostnames(
    listener: Option<&str>,
    route: &[impl AsRef<str>],
) -> Result<Option<Vec<String>>, HostnameError> {
    let parse = |raw: &str| {
        parse_hostname(raw).map_err(|reason| HostnameError {
            hostname: raw.to_owned(),
            reason,
        })
    };
    let route: Vec<Hostname> = route
        .iter()
        .map(|h| parse(h.as_ref()))
        .collect::<Result<_, _>>()?;
    let Some(listener) = listener else {
        return Ok(Some(dedup(route.iter()).collect()));
    };
    let listener = parse(listener)?;
    if route.is_empty() {
        return Ok(Some(vec![listener.to_string()]));
    }
    let kept: Vec<String> = dedup(route.iter().filter_map(|r| listener.intersect(r))).collect();
    Ok((!kept.is_empty()).then_some(kept))
}

fn dedup<'a>(hostnames: impl Iterator<Item = &'a Hostname>) -> impl Iterator<Item = String> {
    let mut seen: Vec<&Hostname> = Vec::new();
    hostnames.filter_map(move |h| {
        if seen.contains(&h) {
            None
        } else {
            seen.push(h);
            Some(h.to_string())
        }
    })
}

/// A validated, lowercased route hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hostname {
    /// `api.example.com`
    Exact(Box<str>),
    /// `*.example.com`, stored as the suffix after `*.`: `example.com`.
    Wildcard(Box<str>),
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl Hostname {
    /// The more specific of `self` and `other` where one covers the other,
    /// with Gateway API wildcards (one or more labels).
    fn intersect<'a>(&'a self, other: &'a Self) -> Option<&'a Self> {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) => (a == b).then_some(self),
            (Self::Exact(name), Self::Wildcard(suffix)) => {
                wildcard_matches(suffix, name, false).then_some(self)
            }
            (Self::Wildcard(suffix), Self::Exact(name)) => {
                wildcard_matches(suffix, name, false).then_some(other)
            }
            (Self::Wildcard(a), Self::Wildcard(b)) => {
                if a == b || wildcard_matches(a, b, false) {
                    Some(other)
                } else if wildcard_matches(b, a, false) {
                    Some(self)
                } else {
                    None
                }
            }
        }
    }
}

/// Whether `*.{suffix}` matches `host`: `host` is one or more labels (with
/// `single_label`, exactly one), a dot, then `suffix`. An empty label before
/// the dot does not count.
pub(crate) fn wildcard_matches(suffix: &str, host: &str, single_label: bool) -> bool {
    host.strip_suffix(suffix)
        .and_then(|rest| rest.strip_suffix('.'))
        .is_some_and(|labels| !(labels.is_empty() || single_label && labels.contains('.')))
}

/// The longest hostname DNS can carry (RFC 1035 section 2.3.4, without the
/// trailing dot).
const MAX_HOSTNAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Validates and lowercases a route hostname. The error is a reason meant to
/// follow the offending value in a message.
pub(crate) fn parse_hostname(raw: &str) -> Result<Hostname, &'static str> {
    let lower = raw.to_ascii_lowercase();
    if lower.is_empty() {
        return Err("a hostname must not be empty");
    }
    if lower == "*" {
        return Err("a bare \"*\" is not a hostname; leave hostnames empty to match any host");
    }
    if lower.len() > MAX_HOSTNAME_LEN {
        return Err("a hostname must be at most 253 characters long");
    }
    let (wildcard, rest) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if rest.contains('*') {
        return Err("\"*\" is only allowed as the whole leftmost label (\"*.example.com\")");
    }
    for label in rest.split('.') {
        validate_label(label)?;
    }
    Ok(if wildcard {
        Hostname::Wildcard(rest.into())
    } else {
        Hostname::Exact(rest.into())
    })
}

fn validate_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("a hostname must not contain an empty label");
    }
    if label.len() > MAX_LABEL_LEN {
        return Err("a hostname label must be at most 63 characters long");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("a hostname may contain only letters, digits, \"-\" and \".\"");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a hostname label must not start or end with \"-\"");
    }
    Ok(())
}

/// Reduces a request's host (from the URI authority or the `Host` header) to
/// the form route hostnames are stored in: no port, no trailing dot,
/// lowercase. Borrows when the host is already lowercase, which is the
/// common case, so the lookup path does not allocate.
///
/// Malformed input is not rejected: it simply will not equal any validated
/// route hostname, so such a request can only reach routes for any host.
pub(crate) fn normalize_request_host(raw: &str) -> Cow<'_, str> {
    let host = strip_port(raw);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn strip_port(host: &str) -> &str {
    // An IPv6 literal keeps its brackets, as `http::uri::Authority::host`
    // does; whatever follows the closing bracket is the port.
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        // Exactly one colon: `name:port`. More than one means a bare IPv6
        // address (not valid in a Host header, but cutting it at its last
        // colon would only produce something stranger).
        Some(colon) if !host[..colon].contains(':') => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hostnames_are_lowercased() {
        let cases = [
            ("example.com", Hostname::Exact("example.com".into())),
            ("API.Example.COM", Hostname::Exact("api.example.com".into())),
            ("a-1.b2", Hostname::Exact("a-1.b2".into())),
            ("localhost", Hostname::Exact("localhost".into())),
            ("*.example.com", Hostname::Wildcard("example.com".into())),
            (
                "*.B.Example.com",
                Hostname::Wildcard("b.example.com".into()),
            ),
            ("*.com", Hostname::Wildcard("com".into())),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_hostname(raw), Ok(want), "{raw}");
        }
    }

    #[test]
    fn invalid_hostnames_are_rejected() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        let cases = [
            ("", "empty"),
            ("*", "bare \"*\""),
            ("*.", "empty label"),
            ("a.*.com", "leftmost label"),
            ("*a.com", "leftmost label"),
            ("a*.com", "leftmost label"),
            ("**.com", "leftmost label"),
            ("*.*.com", "leftmost label"),
            ("a..com", "empty label"),
            (".a.com", "empty label"),
            ("a.com.", "empty label"),
            ("-a.com", "start or end"),
            ("a-.com", "start or end"),
            ("a_b.com", "only letters"),
            ("a.com:80", "only letters"),
            ("[::1]", "only letters"),
            ("bücher.de", "only letters"),
            (long_label.as_str(), "63"),
            (long_name.as_str(), "253"),
        ];
        for (raw, reason_part) in cases {
            let reason = parse_hostname(raw).expect_err(raw);
            assert!(
                reason.contains(reason_part),
                "{raw:?}: reason {reason:?} should mention {reason_part:?}"
            );
        }
    }

    #[test]
    fn request_hosts_are_normalized() {
        let cases = [
            ("example.com", "example.com"),
            ("Example.COM", "example.com"),
            ("example.com:8080", "example.com"),
            ("EXAMPLE.com:443", "example.com"),
            ("example.com.", "example.com"),
            ("example.com.:80", "example.com"),
            ("example.com:", "example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("[FE80::1]:80", "[fe80::1]"),
            ("::1", "::1"),
            ("[::1", "[::1"),
            ("", ""),
            ("127.0.0.1:80", "127.0.0.1"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_request_host(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn lowercase_hosts_are_borrowed() {
        for raw in [
            "example.com",
            "example.com:8080",
            "example.com.",
            "[::1]:80",
        ] {
            assert!(
                matches!(normalize_request_host(raw), Cow::Borrowed(_)),
                "{raw:?} should not allocate"
            );
        }
        assert!(matches!(
            normalize_request_host("Example.com"),
            Cow::Owned(_)
        ));
    }
}
