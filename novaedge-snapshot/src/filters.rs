//! What a route rule does to requests and responses besides routing them: the Gateway API
//! core filters, with their wire form and validation. The data plane runs them in the fixed
//! order of `novaedge-filters`, whatever order the source object listed them in.

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};

use crate::error::FieldError;
use crate::proto;

/// A rule's filters; each kind at most once (as Gateway API allows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilters {
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub url_rewrite: Option<UrlRewrite>,
    /// A rule with a redirect answers every request itself; it needs no backend.
    pub redirect: Option<RequestRedirect>,
}

impl RouteFilters {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Gateway API `HTTPHeaderFilter`: set, then add (appended with `,`), then remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// Gateway API `HTTPURLRewriteFilter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the prefix the rule's `PathPrefix` match matched.
    ReplacePrefixMatch(String),
}

/// Gateway API `HTTPRequestRedirectFilter`; `None` keeps the request's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRedirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathModifier>,
    /// 301, 302, 303, 307 or 308.
    pub status_code: u16,
}

impl Default for RequestRedirect {
    fn default() -> Self {
        Self {
            scheme: None,
            hostname: None,
            port: None,
            path: None,
            status_code: 302,
        }
    }
}

// === wire ===

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn path_from_wire(p: Option<proto::PathModifier>) -> Option<PathModifier> {
    use proto::path_modifier::Kind;
    match p?.kind? {
        Kind::ReplaceFullPath(p) => Some(PathModifier::ReplaceFullPath(p)),
        Kind::ReplacePrefixMatch(p) => Some(PathModifier::ReplacePrefixMatch(p)),
    }
}

fn path_to_wire(p: &PathModifier) -> proto::PathModifier {
    use proto::path_modifier::Kind;
    proto::PathModifier {
        kind: Some(match p {
            PathModifier::ReplaceFullPath(p) => Kind::ReplaceFullPath(p.clone()),
            PathModifier::ReplacePrefixMatch(p) => Kind::ReplacePrefixMatch(p.clone()),
        }),
    }
}

fn headers_from_wire(m: proto::HeaderModifier) -> HeaderModifier {
    let pairs =
        |list: Vec<proto::HeaderValue>| list.into_iter().map(|h| (h.name, h.value)).collect();
    HeaderModifier {
        set: pairs(m.set),
        add: pairs(m.add),
        remove: m.remove,
    }
}

fn headers_to_wire(m: &HeaderModifier) -> proto::HeaderModifier {
    let pairs = |list: &[(String, String)]| {
        list.iter()
            .map(|(name, value)| proto::HeaderValue {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    proto::HeaderModifier {
        set: pairs(&m.set),
        add: pairs(&m.add),
        remove: m.remove.clone(),
    }
}

/// Reads a rule's wire filters; a kind given twice is reported against `field`.
pub(crate) fn from_wire(
    object: &str,
    field: &str,
    wire: Vec<proto::RouteFilter>,
    errors: &mut Vec<FieldError>,
) -> RouteFilters {
    use proto::route_filter::Filter;
    let mut filters = RouteFilters::default();
    for (i, f) in wire.into_iter().enumerate() {
        let twice = |errors: &mut Vec<FieldError>, kind: &str| {
            errors.push(FieldError::new(
                object,
                format!("{field}[{i}]"),
                format!("{kind} given more than once"),
            ))
        };
        match f.filter {
            None => errors.push(FieldError::new(
                object,
                format!("{field}[{i}]"),
                "empty filter",
            )),
            Some(Filter::RequestHeaderModifier(m)) => {
                if filters
                    .request_headers
                    .replace(headers_from_wire(m))
                    .is_some()
                {
                    twice(errors, "request_header_modifier");
                }
            }
            Some(Filter::ResponseHeaderModifier(m)) => {
                if filters
                    .response_headers
                    .replace(headers_from_wire(m))
                    .is_some()
                {
                    twice(errors, "response_header_modifier");
                }
            }
            Some(Filter::UrlRewrite(r)) => {
                let rewrite = UrlRewrite {
                    hostname: non_empty(r.hostname),
                    path: path_from_wire(r.path),
                };
                if filters.url_rewrite.replace(rewrite).is_some() {
                    twice(errors, "url_rewrite");
                }
            }
            Some(Filter::RequestRedirect(r)) => {
                let port = match r.port {
                    0 => None,
                    p => match u16::try_from(p) {
                        Ok(p) => Some(p),
                        Err(_) => {
                            errors.push(FieldError::new(
                                object,
                                format!("{field}[{i}].request_redirect.port"),
                                format!("{p} is not a TCP port"),
                            ));
                            None
                        }
                    },
                };
                let redirect = RequestRedirect {
                    scheme: non_empty(r.scheme),
                    hostname: non_empty(r.hostname),
                    port,
                    path: path_from_wire(r.path),
                    status_code: match r.status_code {
                        0 => 302,
                        s => u16::try_from(s).unwrap_or(u16::MAX),
                    },
                };
                if filters.redirect.replace(redirect).is_some() {
                    twice(errors, "request_redirect");
                }
            }
        }
    }
    filters
}

pub(crate) fn to_wire(filters: &RouteFilters) -> Vec<proto::RouteFilter> {
    use proto::route_filter::Filter;
    let mut wire = Vec::new();
    if let Some(m) = &filters.request_headers {
        wire.push(Filter::RequestHeaderModifier(headers_to_wire(m)));
    }
    if let Some(m) = &filters.response_headers {
        wire.push(Filter::ResponseHeaderModifier(headers_to_wire(m)));
    }
    if let Some(r) = &filters.url_rewrite {
        wire.push(Filter::UrlRewrite(proto::UrlRewrite {
            hostname: r.hostname.clone().unwrap_or_default(),
            path: r.path.as_ref().map(path_to_wire),
        }));
    }
    if let Some(r) = &filters.redirect {
        wire.push(Filter::RequestRedirect(proto::RequestRedirect {
            scheme: r.scheme.clone().unwrap_or_default(),
            hostname: r.hostname.clone().unwrap_or_default(),
            port: r.port.map_or(0, u32::from),
            path: r.path.as_ref().map(path_to_wire),
            status_code: r.status_code.into(),
        }));
    }
    wire.into_iter()
        .map(|f| proto::RouteFilter { filter: Some(f) })
        .collect()
}

// === validation ===

/// Checks a rule's filters; `field` is the rule's (`rules[2]`), `prefix_matches` whether every
/// match of the rule is a path prefix (needed by prefix replacements).
pub(crate) fn validate(
    filters: &RouteFilters,
    object: &str,
    field: &str,
    prefix_matches: bool,
    errors: &mut Vec<FieldError>,
) {
    let mut error = |f: String, message: String| {
        errors.push(FieldError::new(
            object,
            format!("{field}.filters.{f}"),
            message,
        ))
    };
    for (kind, m) in [
        ("request_header_modifier", &filters.request_headers),
        ("response_header_modifier", &filters.response_headers),
    ] {
        let Some(m) = m else { continue };
        let mut seen = HashSet::new();
        for (list, pairs) in [("set", &m.set), ("add", &m.add)] {
            for (i, (name, value)) in pairs.iter().enumerate() {
                match HeaderName::from_bytes(name.as_bytes()) {
                    Err(_) => error(
                        format!("{kind}.{list}[{i}].name"),
                        format!("{name:?} is not a valid header name"),
                    ),
                    Ok(parsed) => {
                        if !seen.insert(parsed) {
                            error(
                                format!("{kind}.{list}[{i}].name"),
                                format!("header {name:?} is listed more than once"),
                            );
                        }
                    }
                }
                if HeaderValue::from_str(value).is_err() {
                    error(
                        format!("{kind}.{list}[{i}].value"),
                        format!("{value:?} is not a valid header value"),
                    );
                }
            }
        }
        for (i, name) in m.remove.iter().enumerate() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                error(
                    format!("{kind}.remove[{i}]"),
                    format!("{name:?} is not a valid header name"),
                );
            }
        }
    }
    let mut check_path = |f: &str, p: &PathModifier| {
        let (PathModifier::ReplaceFullPath(path) | PathModifier::ReplacePrefixMatch(path)) = p;
        if !path.starts_with('/') || path.contains(['?', '#']) || path.chars().any(char::is_control)
        {
            error(
                format!("{f}.path"),
                format!("{path:?} is not an absolute path without query"),
            );
        }
        if matches!(p, PathModifier::ReplacePrefixMatch(_)) && !prefix_matches {
            error(
                format!("{f}.path"),
                "replace_prefix_match needs the rule to match by path prefix only".into(),
            );
        }
    };
    if let Some(r) = &filters.url_rewrite
        && let Some(p) = &r.path
    {
        check_path("url_rewrite", p);
    }
    if let Some(r) = &filters.redirect
        && let Some(p) = &r.path
    {
        check_path("request_redirect", p);
    }
    let mut hostname = |f: &str, h: &Option<String>| {
        if let Some(h) = h
            && crate::check_hostname(h).is_err()
        {
            error(
                format!("{f}.hostname"),
                format!("{h:?} is not a valid hostname"),
            );
        }
        // Wildcards make no sense as a destination.
        if let Some(h) = h
            && h.starts_with('*')
        {
            error(
                format!("{f}.hostname"),
                format!("{h:?}: a wildcard is not a host"),
            );
        }
    };
    if let Some(r) = &filters.url_rewrite {
        hostname("url_rewrite", &r.hostname);
    }
    if let Some(r) = &filters.redirect {
        hostname("request_redirect", &r.hostname);
    }
    if let Some(r) = &filters.redirect {
        if let Some(s) = &r.scheme
            && s != "http"
            && s != "https"
        {
            error(
                "request_redirect.scheme".into(),
                format!("{s:?}: use http or https"),
            );
        }
        if r.port == Some(0) {
            error("request_redirect.port".into(), "must not be 0".into());
        }
        if ![301, 302, 303, 307, 308].contains(&r.status_code) {
            error(
                "request_redirect.status_code".into(),
                format!("{} is not 301, 302, 303, 307 or 308", r.status_code),
            );
        }
        if filters.url_rewrite.is_some() {
            error(
                "request_redirect".into(),
                "a rule cannot both redirect and rewrite (Gateway API)".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filters: &RouteFilters, prefix_matches: bool) -> Vec<String> {
        let mut errors = Vec::new();
        validate(filters, "route", "rules[0]", prefix_matches, &mut errors);
        errors.into_iter().map(|e| e.field).collect()
    }

    fn sample() -> RouteFilters {
        RouteFilters {
            request_headers: Some(HeaderModifier {
                set: vec![("x-env".into(), "prod".into())],
                add: vec![("x-trace".into(), "1".into())],
                remove: vec!["x-debug".into()],
            }),
            response_headers: Some(HeaderModifier {
                remove: vec!["server".into()],
                ..HeaderModifier::default()
            }),
            url_rewrite: Some(UrlRewrite {
                hostname: Some("internal.example".into()),
                path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
            }),
            redirect: None,
        }
    }

    #[test]
    fn round_trips_and_a_good_set_passes() {
        let mut errors = Vec::new();
        let filters = sample();
        let back = from_wire("route", "rules[0].filters", to_wire(&filters), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(back, filters);
        assert!(check(&filters, true).is_empty());
        let redirect = RouteFilters {
            redirect: Some(RequestRedirect {
                scheme: Some("https".into()),
                port: Some(8443),
                status_code: 301,
                ..RequestRedirect::default()
            }),
            ..RouteFilters::default()
        };
        let back = from_wire("route", "f", to_wire(&redirect), &mut errors);
        assert_eq!(back, redirect);
        assert!(check(&redirect, false).is_empty());
    }

    #[test]
    fn a_kind_given_twice_on_the_wire_is_an_error() {
        let mut wire = to_wire(&sample());
        wire.push(wire[0].clone());
        let mut errors = Vec::new();
        from_wire("route", "rules[0].filters", wire, &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "rules[0].filters[3]");
    }

    #[test]
    fn every_problem_names_its_field() {
        let filters = RouteFilters {
            request_headers: Some(HeaderModifier {
                set: vec![("bad name".into(), "v".into()), ("X-A".into(), "1".into())],
                add: vec![("x-a".into(), "bad\nvalue".into())],
                remove: vec!["".into()],
            }),
            response_headers: None,
            url_rewrite: Some(UrlRewrite {
                hostname: Some("*.example.com".into()),
                path: Some(PathModifier::ReplacePrefixMatch("v2".into())),
            }),
            redirect: Some(RequestRedirect {
                scheme: Some("ftp".into()),
                port: Some(0),
                status_code: 200,
                ..RequestRedirect::default()
            }),
        };
        assert_eq!(
            check(&filters, false),
            [
                "rules[0].filters.request_header_modifier.set[0].name",
                "rules[0].filters.request_header_modifier.add[0].name",
                "rules[0].filters.request_header_modifier.add[0].value",
                "rules[0].filters.request_header_modifier.remove[0]",
                "rules[0].filters.url_rewrite.path",
                "rules[0].filters.url_rewrite.path",
                "rules[0].filters.url_rewrite.hostname",
                "rules[0].filters.request_redirect.scheme",
                "rules[0].filters.request_redirect.port",
                "rules[0].filters.request_redirect.status_code",
                "rules[0].filters.request_redirect",
            ]
        );
    }
}
