//! HTTPRoute rule filters and timeouts to the snapshot's [`RouteFilters`].
//!
//! Translated: `RequestHeaderModifier`, `ResponseHeaderModifier`, `URLRewrite`,
//! `RequestRedirect`, `RequestMirror` and the rule's `timeouts`. The data plane runs the filters
//! in the fixed order of `novaedge-filters`, whatever order the rule lists them in; that is safe
//! because Gateway API lets each of them but `RequestMirror` appear once per rule, forbids the
//! one combination whose order would matter (redirect with rewrite), and mirrors copy the request
//! as it is sent to the backend.
//!
//! A mirror's `backendRef` is returned unresolved ([`MirrorRef`]): the translator resolves it
//! with the same rules and the same backend registration as the rule's `backendRefs`.
//!
//! The Gateway API rules an API server enforces through the CRD's validations are checked here
//! too, because the file source (`novaedge run`) sees manifests no API server has checked: a
//! filter type given twice, redirect with rewrite, `ReplacePrefixMatch` outside `PathPrefix`
//! matches, header names and values, one action per header, status codes, ports, mirror
//! fractions, `backendRequest` not above `request`, and the `type` field agreeing with the one
//! sub-object it names. A scheme other than `http`/`https`, a filter without `type` and an
//! unknown `type` already fail when the object is parsed (see [`crate::objects`]), with the same
//! kind of field path.
//!
//! Not supported yet, and reported as errors rather than dropped (a dropped filter changes what a
//! route does): `CORS` (a `ProxyPolicy` can set CORS, see [`crate::policy`]), `ExtensionRef`, and
//! filters on `backendRefs`.
//!
//! One deliberate difference from the CRD: it rejects a `requestRedirect` in a rule that also has
//! `backendRefs`; here that is a warning, since the redirect answers every request first and the
//! backends are merely unused.

use std::collections::HashMap;
use std::path::PathBuf;

use gateway_api::httproutes::{
    HttpRouteRules, HttpRouteRulesFilters, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestMirrorBackendRef, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersType as Type, HttpRouteRulesFiltersUrlRewrite,
    HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatchesPathType, HttpRouteRulesTimeouts,
};
use http::{HeaderName, HeaderValue};
use novaedge_snapshot::{
    HeaderModifier, PathModifier, RequestRedirect, RouteFilters, Timeouts, UrlRewrite,
    check_hostname,
};

use crate::diagnostics::Diagnostic;
use crate::health::GatewayDuration;

/// The longest timeout the snapshot accepts.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A rule's filters as far as they translate without the Services: `filters.mirrors` is empty,
/// and `mirrors` holds the mirror filters for the caller to resolve.
#[derive(Debug)]
pub(crate) struct RuleFilters<'r> {
    pub(crate) filters: RouteFilters,
    pub(crate) mirrors: Vec<MirrorRef<'r>>,
    /// False when any problem is an error: the rule cannot be served as written.
    pub(crate) ok: bool,
}

/// A `RequestMirror` filter whose `backendRef` is still to be resolved.
#[derive(Debug)]
pub(crate) struct MirrorRef<'r> {
    /// The reference's field path (`spec.rules[0].filters[1].requestMirror.backendRef`).
    pub(crate) field: String,
    pub(crate) backend_ref: &'r HttpRouteRulesFiltersRequestMirrorBackendRef,
    /// Share of requests mirrored, in millionths; 0 when the filter mirrors nothing (already
    /// reported as a warning): the reference is still checked, but no mirror is added.
    pub(crate) fraction_ppm: u32,
}

/// The filters and timeouts of one rule. `field` is the rule's path (`spec.rules[2]`); problems
/// are added to `diagnostics`.
pub(crate) fn rule_filters<'r>(
    rule: &'r HttpRouteRules,
    field: &str,
    object: &str,
    file: Option<&PathBuf>,
    diagnostics: &mut Vec<Diagnostic>,
) -> RuleFilters<'r> {
    let mut r = Report {
        object,
        file,
        diagnostics,
        failed: false,
    };
    let mut out = RouteFilters::default();
    let mut mirrors = Vec::new();
    // The index of the first filter of each kind that may appear once.
    let mut first: HashMap<&'static str, usize> = HashMap::new();
    let mut redirect_at = None;
    let mut rewrite_at = None;
    for (i, f) in rule.filters.iter().flatten().enumerate() {
        let field = format!("{field}.filters[{i}]");
        let kind = type_name(&f.r#type);
        if !union_agrees(f, &field, &mut r) {
            continue;
        }
        let unsupported = match f.r#type {
            Type::Cors => Some(
                "CORS filters are not supported yet; a ProxyPolicy with a cors section can set \
                 CORS for the route",
            ),
            Type::ExtensionRef => Some("ExtensionRef filters are not supported yet"),
            _ => None,
        };
        if let Some(message) = unsupported {
            r.error(format!("{field}.type"), message);
            continue;
        }
        if f.r#type == Type::RequestMirror {
            // The one filter Gateway API lets a rule have several of.
            if let Some(m) = &f.request_mirror {
                let field = format!("{field}.requestMirror");
                if let Some(fraction_ppm) = mirror_fraction(m, &field, &mut r) {
                    mirrors.push(MirrorRef {
                        field: format!("{field}.backendRef"),
                        backend_ref: &m.backend_ref,
                        fraction_ppm,
                    });
                }
            }
            continue;
        }
        if let Some(j) = first.get(kind) {
            r.error(
                format!("{field}.type"),
                format!("{kind} is already given in filters[{j}]; a rule may have it only once"),
            );
            continue;
        }
        first.insert(kind, i);
        match f.r#type {
            Type::RequestHeaderModifier => {
                let m = f.request_header_modifier.as_ref();
                let lists = m.map(|m| Lists {
                    set: pairs(m.set.iter().flatten().map(|h| (&h.name, &h.value))),
                    add: pairs(m.add.iter().flatten().map(|h| (&h.name, &h.value))),
                    remove: m.remove.as_deref().unwrap_or_default(),
                });
                let field = format!("{field}.requestHeaderModifier");
                out.request_headers = lists.map(|l| header_modifier(l, &field, &mut r));
            }
            Type::ResponseHeaderModifier => {
                let m = f.response_header_modifier.as_ref();
                let lists = m.map(|m| Lists {
                    set: pairs(m.set.iter().flatten().map(|h| (&h.name, &h.value))),
                    add: pairs(m.add.iter().flatten().map(|h| (&h.name, &h.value))),
                    remove: m.remove.as_deref().unwrap_or_default(),
                });
                let field = format!("{field}.responseHeaderModifier");
                out.response_headers = lists.map(|l| header_modifier(l, &field, &mut r));
            }
            Type::UrlRewrite => {
                rewrite_at = Some(i);
                let field = format!("{field}.urlRewrite");
                out.url_rewrite = f
                    .url_rewrite
                    .as_ref()
                    .map(|u| url_rewrite(u, rule, &field, &mut r));
            }
            Type::RequestRedirect => {
                redirect_at = Some(i);
                let field = format!("{field}.requestRedirect");
                out.redirect = f
                    .request_redirect
                    .as_ref()
                    .map(|u| redirect(u, rule, &field, &mut r));
            }
            // Handled above.
            Type::RequestMirror | Type::Cors | Type::ExtensionRef => {}
        }
    }
    if let (Some(a), Some(b)) = (redirect_at, rewrite_at) {
        r.error(
            format!("{field}.filters[{}].type", a.max(b)),
            format!(
                "a rule cannot both redirect and rewrite (RequestRedirect in filters[{redirect}], \
                 URLRewrite in filters[{rewrite}])",
                redirect = a,
                rewrite = b
            ),
        );
    }
    if redirect_at.is_some() && rule.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
        r.warning(
            format!("{field}.backendRefs"),
            "never used: the RequestRedirect filter answers every request of this rule \
             (Gateway API's CRD rejects backendRefs beside a redirect)",
        );
    }
    for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
        if b.filters.as_ref().is_some_and(|f| !f.is_empty()) {
            r.error(
                format!("{field}.backendRefs[{j}].filters"),
                "per-backend filters are not supported yet; put the filters on the rule",
            );
        }
    }
    if let Some(t) = &rule.timeouts {
        out.timeouts = timeouts(t, &format!("{field}.timeouts"), &mut r);
    }
    RuleFilters {
        filters: out,
        mirrors,
        ok: !r.failed,
    }
}

/// Gateway API `HTTPRouteTimeouts`: `0s` turns a timeout off; `backendRequest` (each try) may
/// not be longer than `request` (the whole request, retries included).
fn timeouts(t: &HttpRouteRulesTimeouts, field: &str, r: &mut Report<'_>) -> Timeouts {
    let mut parse = |name: &str, value: Option<&String>| {
        let value = value?;
        let at = format!("{field}.{name}");
        match value.parse::<GatewayDuration>() {
            Err(e) => {
                r.error(at, e.to_string());
                None
            }
            Ok(GatewayDuration(d)) if d > MAX_TIMEOUT => {
                r.error(
                    at,
                    format!(
                        "must be at most 24h (or 0s for no timeout), got {}",
                        GatewayDuration(d)
                    ),
                );
                None
            }
            Ok(GatewayDuration(d)) => (!d.is_zero()).then_some(d),
        }
    };
    let request = parse("request", t.request.as_ref());
    let backend_request = parse("backendRequest", t.backend_request.as_ref());
    if let (Some(request), Some(backend)) = (request, backend_request)
        && backend > request
    {
        r.error(
            format!("{field}.backendRequest"),
            format!(
                "{} is longer than request ({}): one try cannot outlast the whole request",
                GatewayDuration(backend),
                GatewayDuration(request)
            ),
        );
    }
    Timeouts {
        request,
        backend_request,
    }
}

/// The share of requests a mirror filter copies, in millionths: `percent` or `fraction`, all of
/// them when neither is given. `None` on an error.
fn mirror_fraction(
    m: &HttpRouteRulesFiltersRequestMirror,
    field: &str,
    r: &mut Report<'_>,
) -> Option<u32> {
    let ppm = match (m.percent, &m.fraction) {
        (None, None) => 1_000_000,
        (Some(_), Some(_)) => {
            r.error(
                format!("{field}.fraction"),
                "give percent or fraction, not both",
            );
            return None;
        }
        (Some(p), None) => match u32::try_from(p) {
            Ok(p @ 0..=100) => p * 10_000,
            _ => {
                r.error(
                    format!("{field}.percent"),
                    format!("must be from 0 to 100, got {p}"),
                );
                return None;
            }
        },
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            let mut ok = true;
            if denominator <= 0 {
                r.error(
                    format!("{field}.fraction.denominator"),
                    format!("must be at least 1, got {denominator}"),
                );
                ok = false;
            }
            if f.numerator < 0 || (denominator > 0 && f.numerator > denominator) {
                r.error(
                    format!("{field}.fraction.numerator"),
                    format!(
                        "must be from 0 to the denominator ({denominator}), got {}",
                        f.numerator
                    ),
                );
                ok = false;
            }
            if !ok {
                return None;
            }
            let (n, d) = (
                u64::try_from(f.numerator).ok()?,
                u64::try_from(denominator).ok()?,
            );
            // Rounded to the nearest millionth; a fraction too small for that still mirrors
            // something, since the user asked for some.
            let ppm = (n * 1_000_000 + d / 2) / d;
            u32::try_from(ppm).ok()?.max(u32::from(n > 0))
        }
    };
    if ppm == 0 {
        r.warning(
            field.to_owned(),
            "mirrors no request (a share of 0); the filter does nothing",
        );
    }
    Some(ppm)
}

/// Where problems go: diagnostics about one object in one file.
struct Report<'a> {
    object: &'a str,
    file: Option<&'a PathBuf>,
    diagnostics: &'a mut Vec<Diagnostic>,
    failed: bool,
}

impl Report<'_> {
    fn error(&mut self, field: String, message: impl Into<String>) {
        self.failed = true;
        self.diagnostics
            .push(Diagnostic::error(self.object, field, message).in_file(self.file.cloned()));
    }

    fn warning(&mut self, field: String, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::warning(self.object, field, message).in_file(self.file.cloned()));
    }
}

/// The name of a filter type as manifests spell it.
fn type_name(t: &Type) -> &'static str {
    match t {
        Type::RequestHeaderModifier => "RequestHeaderModifier",
        Type::ResponseHeaderModifier => "ResponseHeaderModifier",
        Type::RequestMirror => "RequestMirror",
        Type::RequestRedirect => "RequestRedirect",
        Type::UrlRewrite => "URLRewrite",
        Type::ExtensionRef => "ExtensionRef",
        Type::Cors => "CORS",
    }
}

/// Whether the filter holds exactly the sub-object its `type` names (Gateway API: the others
/// must be absent). A filter that disagrees is reported and not translated: which of the two the
/// user meant is a guess.
fn union_agrees(f: &HttpRouteRulesFilters, field: &str, r: &mut Report<'_>) -> bool {
    let given = [
        (
            Type::RequestHeaderModifier,
            "requestHeaderModifier",
            f.request_header_modifier.is_some(),
        ),
        (
            Type::ResponseHeaderModifier,
            "responseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        (
            Type::RequestMirror,
            "requestMirror",
            f.request_mirror.is_some(),
        ),
        (
            Type::RequestRedirect,
            "requestRedirect",
            f.request_redirect.is_some(),
        ),
        (Type::UrlRewrite, "urlRewrite", f.url_rewrite.is_some()),
        (
            Type::ExtensionRef,
            "extensionRef",
            f.extension_ref.is_some(),
        ),
        (Type::Cors, "cors", f.cors.is_some()),
    ];
    let kind = type_name(&f.r#type);
    let mut agrees = true;
    for (owner, name, present) in given {
        if owner == f.r#type && !present {
            r.error(
                format!("{field}.{name}"),
                format!("required when type is {kind}"),
            );
            agrees = false;
        } else if owner != f.r#type && present {
            r.error(
                format!("{field}.{name}"),
                format!(
                    "given, but type is {kind}: a filter holds only the object its type names \
                     (type {} for this one)",
                    type_name(&owner)
                ),
            );
            agrees = false;
        }
    }
    agrees
}

/// A header modifier's lists, the same for requests and responses (which Gateway API gives as
/// two identical generated types).
struct Lists<'h> {
    set: Vec<(&'h str, &'h str)>,
    add: Vec<(&'h str, &'h str)>,
    remove: &'h [String],
}

fn pairs<'h>(list: impl Iterator<Item = (&'h String, &'h String)>) -> Vec<(&'h str, &'h str)> {
    list.map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

fn header_modifier(lists: Lists<'_>, field: &str, r: &mut Report<'_>) -> HeaderModifier {
    // Gateway API: one action per header name (case-insensitive), across set, add and remove.
    let mut seen: HashMap<HeaderName, String> = HashMap::new();
    // `at` is the field to report, `label` how another entry refers to this one (`set[0]`).
    let mut name_ok = |r: &mut Report<'_>, at: String, label: String, name: &str| {
        let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
            r.error(at, format!("{name:?} is not a valid header name"));
            return;
        };
        match seen.get(&parsed) {
            Some(before) => r.error(
                at,
                format!(
                    "header {name:?} is already in {before}; a header may have only one action"
                ),
            ),
            None => {
                seen.insert(parsed, label);
            }
        }
    };
    let mut out = HeaderModifier::default();
    for (list, pairs, into) in [
        ("set", &lists.set, &mut out.set),
        ("add", &lists.add, &mut out.add),
    ] {
        for (j, (name, value)) in pairs.iter().enumerate() {
            let at = format!("{field}.{list}[{j}].name");
            name_ok(r, at, format!("{list}[{j}]"), name);
            if value.is_empty() {
                r.error(format!("{field}.{list}[{j}].value"), "must not be empty");
            } else if HeaderValue::from_str(value).is_err() {
                r.error(
                    format!("{field}.{list}[{j}].value"),
                    format!(
                        "{value:?} is not a valid header value (printable ASCII, spaces and tabs)"
                    ),
                );
            }
            into.push(((*name).to_owned(), (*value).to_owned()));
        }
    }
    for (j, name) in lists.remove.iter().enumerate() {
        name_ok(
            r,
            format!("{field}.remove[{j}]"),
            format!("remove[{j}]"),
            name,
        );
        out.remove.push(name.clone());
    }
    out
}

fn url_rewrite(
    u: &HttpRouteRulesFiltersUrlRewrite,
    rule: &HttpRouteRules,
    field: &str,
    r: &mut Report<'_>,
) -> UrlRewrite {
    UrlRewrite {
        hostname: u
            .hostname
            .as_ref()
            .map(|h| hostname(h, &format!("{field}.hostname"), r)),
        path: u.path.as_ref().and_then(|p| {
            let kind = match p.r#type {
                HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath => PathKind::Full,
                HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch => PathKind::Prefix,
            };
            let values = (
                p.replace_full_path.as_ref(),
                p.replace_prefix_match.as_ref(),
            );
            path_modifier(kind, values, rule, &format!("{field}.path"), r)
        }),
    }
}

fn redirect(
    u: &HttpRouteRulesFiltersRequestRedirect,
    rule: &HttpRouteRules,
    field: &str,
    r: &mut Report<'_>,
) -> RequestRedirect {
    let port = u.port.and_then(|p| match u16::try_from(p) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            r.error(
                format!("{field}.port"),
                format!("{p} is not a TCP port (1-65535)"),
            );
            None
        }
    });
    let status_code = match u.status_code.map(u16::try_from) {
        // The Gateway API default.
        None => 302,
        Some(Ok(code @ (301 | 302 | 303 | 307 | 308))) => code,
        Some(_) => {
            let code = u.status_code.unwrap_or_default();
            r.error(
                format!("{field}.statusCode"),
                format!("{code} is not 301, 302, 303, 307 or 308"),
            );
            302
        }
    };
    RequestRedirect {
        scheme: u.scheme.as_ref().map(|s| {
            match s {
                HttpRouteRulesFiltersRequestRedirectScheme::Http => "http",
                HttpRouteRulesFiltersRequestRedirectScheme::Https => "https",
            }
            .to_owned()
        }),
        hostname: u
            .hostname
            .as_ref()
            .map(|h| hostname(h, &format!("{field}.hostname"), r)),
        port,
        path: u.path.as_ref().and_then(|p| {
            let kind = match p.r#type {
                HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath => PathKind::Full,
                HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch => {
                    PathKind::Prefix
                }
            };
            let values = (
                p.replace_full_path.as_ref(),
                p.replace_prefix_match.as_ref(),
            );
            path_modifier(kind, values, rule, &format!("{field}.path"), r)
        }),
        status_code,
    }
}

/// Gateway API `PreciseHostname`: a hostname without wildcard, since it names a destination.
fn hostname(h: &str, field: &str, r: &mut Report<'_>) -> String {
    if let Err(why) = check_hostname(h) {
        r.error(field.to_owned(), format!("{h:?}: {why}"));
    } else if h.starts_with('*') {
        r.error(
            field.to_owned(),
            format!("{h:?}: a wildcard is not a host to send requests to"),
        );
    }
    h.to_owned()
}

enum PathKind {
    Full,
    Prefix,
}

/// A path modifier from its `type` and its two value fields (`replaceFullPath`,
/// `replacePrefixMatch`), of which exactly the one `type` names must be set.
fn path_modifier(
    kind: PathKind,
    (full, prefix): (Option<&String>, Option<&String>),
    rule: &HttpRouteRules,
    field: &str,
    r: &mut Report<'_>,
) -> Option<PathModifier> {
    let (value, name, other, other_name, type_name) = match kind {
        PathKind::Full => (
            full,
            "replaceFullPath",
            prefix,
            "replacePrefixMatch",
            "ReplaceFullPath",
        ),
        PathKind::Prefix => (
            prefix,
            "replacePrefixMatch",
            full,
            "replaceFullPath",
            "ReplacePrefixMatch",
        ),
    };
    if other.is_some() {
        r.error(
            format!("{field}.{other_name}"),
            format!("must not be set when type is {type_name}"),
        );
    }
    let Some(value) = value else {
        r.error(
            format!("{field}.{name}"),
            format!("required when type is {type_name}"),
        );
        return None;
    };
    let at = format!("{field}.{name}");
    match kind {
        PathKind::Full => {
            check_path(value, &at, r);
            Some(PathModifier::ReplaceFullPath(value.clone()))
        }
        PathKind::Prefix => {
            // The spec's table gives the empty replacement the same results as `/`; the
            // snapshot (and the data plane) take only absolute paths.
            let value = if value.is_empty() { "/" } else { value };
            check_path(value, &at, r);
            if let Some((j, kind)) = non_prefix_match(rule) {
                r.error(
                    at,
                    format!(
                        "needs every match of the rule to be a PathPrefix match, but matches[{j}] \
                         is {kind}"
                    ),
                );
            }
            Some(PathModifier::ReplacePrefixMatch(value.to_owned()))
        }
    }
}

/// A replacement path is absolute, without query or fragment, and a valid URI path.
fn check_path(path: &str, field: &str, r: &mut Report<'_>) {
    if !path.starts_with('/')
        || path.contains(['?', '#'])
        || http::uri::PathAndQuery::try_from(path).is_err()
    {
        r.error(
            field.to_owned(),
            format!("{path:?} is not an absolute path (it must start with / and hold no query)"),
        );
    }
}

/// The first match of a rule that is not a path prefix, with its type. A match without a path,
/// a path without a type, and a rule without matches all mean the prefix `/`.
fn non_prefix_match(rule: &HttpRouteRules) -> Option<(usize, &'static str)> {
    rule.matches
        .iter()
        .flatten()
        .enumerate()
        .find_map(
            |(j, m)| match m.path.as_ref().and_then(|p| p.r#type.as_ref()) {
                None | Some(HttpRouteRulesMatchesPathType::PathPrefix) => None,
                Some(HttpRouteRulesMatchesPathType::Exact) => Some((j, "Exact")),
                Some(HttpRouteRulesMatchesPathType::RegularExpression) => {
                    Some((j, "RegularExpression"))
                }
            },
        )
}
