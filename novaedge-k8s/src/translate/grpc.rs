//! Gateway API `GRPCRoute` (`gateway.networking.k8s.io/v1`) as the HTTPRoute it is equivalent
//! to.
//!
//! A gRPC call is an HTTP/2 request for `/{service}/{method}`, so a GRPCRoute says nothing an
//! HTTPRoute cannot: [`to_http_route`] writes the HTTPRoute, and the translator runs it through
//! the HTTPRoute code (attachment, hostnames, filters, backends, policies) with the GRPCRoute's
//! own kind and name in every message. Rules, matches, headers, filters and `backendRefs` keep
//! their indices, so a field path such as `spec.rules[0].filters[1].type` names the field the
//! user wrote; what only a GRPCRoute has (`matches[].method`) is checked here.
//!
//! `matches[].method` (`type` defaults to `Exact`) becomes a path match:
//!
//! | GRPCRoute method match | HTTPRoute path match |
//! |---|---|
//! | service and method | `Exact` `/{service}/{method}` |
//! | service only | `PathPrefix` `/{service}/` |
//! | method only | `RegularExpression` `/[^/]+/{method}` |
//! | `RegularExpression` | `RegularExpression` `/(?:{service})/(?:{method})`, a part not given being `[^/]+` |
//! | no `method` | none: every request (so is a rule without matches) |
//!
//! An exact service must be a fully qualified gRPC service name and a method an identifier, as
//! the CRD's validation says (`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$` and
//! `^[A-Za-z_][A-Za-z_0-9]*$`, at most 1024 characters each), and at least one of the two must be
//! given. A regular expression matches the whole service or method, never beyond it: it is
//! parsed and rewritten so that it cannot match a `/` (`.` and classes lose `/`; a literal `/`
//! is an error), exactly as if service and method were matched one by one. Anchors (`^`, `$`,
//! `\A`, `\z`) are refused: the pattern always matches the whole name, and inside the path they
//! could never match.
//!
//! Header matches are HTTPRoute header matches. No HTTP method or content type is required:
//! a `GRPCRouteMatch` has no such condition, and Envoy Gateway adds none either; a request that
//! is not gRPC but asks for a gRPC path is forwarded to the gRPC backend, which refuses it.
//!
//! Filters: `RequestHeaderModifier`, `ResponseHeaderModifier` (core) and `RequestMirror`
//! (extended) become their HTTPRoute twins. `ExtensionRef` is carried over, and the HTTPRoute
//! code reports it as not supported. Filters on `backendRefs` are an error here, as they are on
//! HTTPRoutes: the snapshot has no per-backend filters, and dropping a filter would change what
//! the route does.
//!
//! Backends speak HTTP/2 (h2c, or `h2` by ALPN over TLS), since gRPC needs it, even when the
//! Service port has no `appProtocol`; a port that names another protocol gets a warning. Such a
//! port is a backend of its own for GRPCRoutes ([`H2C_BACKEND_SUFFIX`]), next to the HTTP/1.1
//! one HTTPRoutes to the same port use.
//!
//! Listeners: `allowedRoutes.kinds` admits each kind on its own ([`AllowedKinds`]); without
//! `kinds`, HTTP and HTTPS listeners take both.
//!
//! Where this differs from the GRPCRoute specification, because the HTTPRoute precedence
//! applies to the converted rules:
//!
//! - GRPCRoute ranks the hostname first, then the service, the method and the number of header
//!   matches; here, as for HTTPRoutes, the match (exact path, regular expression, longest
//!   prefix, headers) comes first and the hostname breaks ties. The two agree whenever the
//!   competing rules are of one route or share their hostnames, and for rules that match on
//!   the service and method together, the service alone, or nothing.
//! - A method-only match (a regular expression path) outranks a service-only match (a prefix),
//!   where GRPCRoute ranks the service first. Both are "implementation-specific" in the
//!   specification, as are regular expressions.
//! - A GRPCRoute and an HTTPRoute with intersecting hostnames on one listener are both served,
//!   their rules competing by precedence; the specification accepts only the older of them.

use std::collections::HashSet;
use std::path::PathBuf;

use gateway_api::gateways::GatewayListenersAllowedRoutesKinds;
use gateway_api::grpcroutes::{
    GrpcRoute, GrpcRouteParentRefs, GrpcRouteRules, GrpcRouteRulesBackendRefs,
    GrpcRouteRulesFilters, GrpcRouteRulesFiltersRequestHeaderModifier,
    GrpcRouteRulesFiltersRequestMirror, GrpcRouteRulesFiltersResponseHeaderModifier,
    GrpcRouteRulesFiltersType, GrpcRouteRulesMatches, GrpcRouteRulesMatchesHeaders,
    GrpcRouteRulesMatchesHeadersType, GrpcRouteRulesMatchesMethod, GrpcRouteRulesMatchesMethodType,
};
use gateway_api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs,
    HttpRouteRulesFilters, HttpRouteRulesFiltersExtensionRef,
    HttpRouteRulesFiltersRequestHeaderModifier, HttpRouteRulesFiltersRequestHeaderModifierAdd,
    HttpRouteRulesFiltersRequestHeaderModifierSet, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestMirrorBackendRef, HttpRouteRulesFiltersRequestMirrorFraction,
    HttpRouteRulesFiltersResponseHeaderModifier, HttpRouteRulesFiltersResponseHeaderModifierAdd,
    HttpRouteRulesFiltersResponseHeaderModifierSet, HttpRouteRulesFiltersType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType, HttpRouteSpec,
};
use novaedge_snapshot::{UpstreamProtocol, check_regex};
use regex_syntax::hir::{
    Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Literal,
    Look, Repetition,
};

use super::{GATEWAY_GROUP, Key, key_of};
use crate::diagnostics::Diagnostic;
use crate::objects::{Object, Sourced};
use crate::policy::Target;

/// The longest service or method the CRD accepts.
const MAX_NAME_LEN: usize = 1024;

/// What a part of the path not named by a regular expression match may be: one segment.
const ANY_PART: &str = "[^/]+";

/// Appended to a backend's name (`namespace/service:port`) when GRPCRoutes make it speak h2c
/// although its Service port does not say so.
pub(super) const H2C_BACKEND_SUFFIX: &str = "/h2c";

// === route kinds ===

/// The kind of route a rule comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RouteKind {
    /// An HTTPRoute (and, for backends, an Ingress).
    Http,
    Grpc,
    /// A NovaEdge ProxyRoute, translated as the HTTPRoute it converts to.
    Proxy,
}

impl RouteKind {
    /// The Kubernetes kind.
    pub(super) fn name(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Proxy => "ProxyRoute",
        }
    }

    /// The name of the snapshot route for route `namespace/name`: unique per listener, where a
    /// GRPCRoute and an HTTPRoute of the same name are two objects.
    pub(super) fn route_name(self, namespace: &str, name: &str) -> String {
        match self {
            RouteKind::Http => format!("{namespace}/{name}"),
            RouteKind::Grpc => format!("grpcroute:{namespace}/{name}"),
            RouteKind::Proxy => format!("proxyroute:{namespace}/{name}"),
        }
    }

    /// The route as a policy target.
    pub(super) fn target(self, key: Key) -> Target {
        match self {
            RouteKind::Http => Target::Route(key),
            RouteKind::Grpc => Target::GrpcRoute(key),
            RouteKind::Proxy => Target::ProxyRoute(key),
        }
    }
}

/// The route kinds a listener admits (`allowedRoutes.kinds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AllowedKinds {
    http: bool,
    grpc: bool,
}

impl AllowedKinds {
    /// The kinds listed (group `gateway.networking.k8s.io` or none); without a list, every kind
    /// the listener's protocol supports, which for HTTP and HTTPS is both.
    pub(super) fn of(kinds: Option<&[GatewayListenersAllowedRoutesKinds]>) -> Self {
        match kinds {
            Some(kinds) if !kinds.is_empty() => {
                let listed = |kind: RouteKind| {
                    kinds.iter().any(|k| {
                        k.kind == kind.name()
                            && k.group.as_deref().is_none_or(|g| g == GATEWAY_GROUP)
                    })
                };
                Self {
                    http: listed(RouteKind::Http),
                    grpc: listed(RouteKind::Grpc),
                }
            }
            _ => Self {
                http: true,
                grpc: true,
            },
        }
    }

    pub(super) fn allows(self, kind: RouteKind) -> bool {
        match kind {
            // A ProxyGateway's listeners admit ProxyRoutes (it lists no kinds).
            RouteKind::Http | RouteKind::Proxy => self.http,
            RouteKind::Grpc => self.grpc,
        }
    }
}

// === backends ===

/// Whether a Service port's `appProtocol` says HTTP/2 with prior knowledge.
pub(super) fn speaks_h2c(app_protocol: Option<&str>) -> bool {
    crate::endpoints::upstream_protocol(app_protocol) == Some(UpstreamProtocol::H2c)
}

/// The warning for a Service port whose `appProtocol` is not HTTP/2 but which a GRPCRoute uses.
pub(super) fn not_h2c_message(app_protocol: &str) -> String {
    format!(
        "{app_protocol:?} is not HTTP/2, but a GRPCRoute sends gRPC to this port: speaking h2c \
         to it (set appProtocol: kubernetes.io/h2c)"
    )
}

// === conversion ===

/// A GRPCRoute converted to an HTTPRoute, and where it came from.
pub(super) struct Converted<'o> {
    pub(super) key: Key,
    pub(super) route: HttpRoute,
    pub(super) file: Option<&'o PathBuf>,
}

/// Every GRPCRoute of `objects` that converts without errors; problems go to `diagnostics`.
/// Of two GRPCRoutes with the same namespace and name, the first counts (the translator's index
/// reports the second).
pub(super) fn convert_all<'o>(
    objects: &'o [Sourced],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Converted<'o>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for sourced in objects {
        let Object::GrpcRoute(route) = &sourced.object else {
            continue;
        };
        let key = key_of(&route.metadata);
        if !seen.insert(key.clone()) {
            continue;
        }
        let file = sourced.file.as_ref();
        let object = sourced.object.describe();
        if let Some(route) = to_http_route(route, &object, file, diagnostics) {
            out.push(Converted { key, route, file });
        }
    }
    out
}

/// The HTTPRoute equivalent to a GRPCRoute, or `None` after reporting (as `object`, in `file`)
/// why there is none. What both kinds share is checked later, by the HTTPRoute code.
pub(super) fn to_http_route(
    route: &GrpcRoute,
    object: &str,
    file: Option<&PathBuf>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<HttpRoute> {
    let mut r = Report {
        object,
        file,
        diagnostics,
        failed: false,
    };
    let spec = &route.spec;
    let rules = spec.rules.as_ref().map(|rules| {
        rules
            .iter()
            .enumerate()
            .map(|(k, rule)| http_rule(rule, &format!("spec.rules[{k}]"), &mut r))
            .collect()
    });
    let http = HttpRoute {
        metadata: route.metadata.clone(),
        spec: HttpRouteSpec {
            hostnames: spec.hostnames.clone(),
            parent_refs: spec
                .parent_refs
                .as_ref()
                .map(|refs| refs.iter().map(parent_ref).collect()),
            rules,
        },
        status: None,
    };
    (!r.failed).then_some(http)
}

/// Collects the problems of one route.
struct Report<'r> {
    object: &'r str,
    file: Option<&'r PathBuf>,
    diagnostics: &'r mut Vec<Diagnostic>,
    failed: bool,
}

impl Report<'_> {
    fn error(&mut self, field: String, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(self.object, field, message).in_file(self.file.cloned()));
        self.failed = true;
    }
}

fn parent_ref(p: &GrpcRouteParentRefs) -> HttpRouteParentRefs {
    HttpRouteParentRefs {
        group: p.group.clone(),
        kind: p.kind.clone(),
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        port: p.port,
        section_name: p.section_name.clone(),
    }
}

/// One rule; `field` is its path (`spec.rules[0]`).
fn http_rule(rule: &GrpcRouteRules, field: &str, r: &mut Report<'_>) -> HttpRouteRules {
    let matches = rule.matches.as_ref().map(|matches| {
        matches
            .iter()
            .enumerate()
            .map(|(j, m)| http_match(m, &format!("{field}.matches[{j}]"), r))
            .collect()
    });
    let backend_refs = rule.backend_refs.as_ref().map(|refs| {
        refs.iter()
            .enumerate()
            .map(|(j, b)| backend_ref(b, &format!("{field}.backendRefs[{j}]"), r))
            .collect()
    });
    HttpRouteRules {
        backend_refs,
        filters: rule
            .filters
            .as_ref()
            .map(|filters| filters.iter().map(http_filter).collect()),
        matches,
        name: rule.name.clone(),
        timeouts: None,
    }
}

fn http_match(m: &GrpcRouteRulesMatches, field: &str, r: &mut Report<'_>) -> HttpRouteRulesMatches {
    HttpRouteRulesMatches {
        headers: m
            .headers
            .as_ref()
            .map(|headers| headers.iter().map(header_match).collect()),
        method: None,
        path: m
            .method
            .as_ref()
            .and_then(|method| path_match(method, &format!("{field}.method"), r)),
        query_params: None,
    }
}

fn header_match(h: &GrpcRouteRulesMatchesHeaders) -> HttpRouteRulesMatchesHeaders {
    HttpRouteRulesMatchesHeaders {
        name: h.name.clone(),
        r#type: h.r#type.as_ref().map(|t| match t {
            GrpcRouteRulesMatchesHeadersType::Exact => HttpRouteRulesMatchesHeadersType::Exact,
            GrpcRouteRulesMatchesHeadersType::RegularExpression => {
                HttpRouteRulesMatchesHeadersType::RegularExpression
            }
        }),
        value: h.value.clone(),
    }
}

/// The path match for a `GRPCMethodMatch` at `field`; `None` after reporting.
fn path_match(
    m: &GrpcRouteRulesMatchesMethod,
    field: &str,
    r: &mut Report<'_>,
) -> Option<HttpRouteRulesMatchesPath> {
    // "If left empty or omitted, will match all services" (and methods).
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    if service.is_none() && method.is_none() {
        r.error(
            field.to_owned(),
            "at least one of service and method must be given",
        );
        return None;
    }
    let mut ok = true;
    for (part, value) in [("service", service), ("method", method)] {
        if let Some(v) = value
            && v.chars().count() > MAX_NAME_LEN
        {
            r.error(
                format!("{field}.{part}"),
                format!("longer than {MAX_NAME_LEN} characters"),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let regex = m.r#type == Some(GrpcRouteRulesMatchesMethodType::RegularExpression);
    let (r#type, value) = if regex {
        let service = regex_part(service, &format!("{field}.service"), r);
        let method = regex_part(method, &format!("{field}.method"), r);
        let (Some(service), Some(method)) = (service, method) else {
            return None;
        };
        let path = format!("/(?:{service})/(?:{method})");
        // Each part compiles, but together they may be too large.
        if let Err(why) = check_regex(&path) {
            r.error(field.to_owned(), why);
            return None;
        }
        (HttpRouteRulesMatchesPathType::RegularExpression, path)
    } else {
        if let Some(s) = service
            && !valid_service(s)
        {
            r.error(
                format!("{field}.service"),
                format!(
                    "{s:?} is not a fully qualified gRPC service name (such as \
                     \"helloworld.Greeter\": names of letters, digits and '_', not starting with \
                     a digit, joined by '.')"
                ),
            );
            ok = false;
        }
        if let Some(m) = method
            && !valid_method(m)
        {
            r.error(
                format!("{field}.method"),
                format!(
                    "{m:?} is not a gRPC method name (letters, digits and '_', not starting with \
                     a digit)"
                ),
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        match (service, method) {
            (Some(s), Some(m)) => (HttpRouteRulesMatchesPathType::Exact, format!("/{s}/{m}")),
            (Some(s), None) => (HttpRouteRulesMatchesPathType::PathPrefix, format!("/{s}/")),
            (None, Some(m)) => (
                HttpRouteRulesMatchesPathType::RegularExpression,
                format!("/{ANY_PART}/{}", regex_syntax::escape(m)),
            ),
            (None, None) => return None, // reported above
        }
    };
    Some(HttpRouteRulesMatchesPath {
        r#type: Some(r#type),
        value: Some(value),
    })
}

/// The CRD's `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`.
fn valid_service(service: &str) -> bool {
    let service = service.strip_prefix('.').unwrap_or(service);
    service.split('.').all(valid_method)
}

/// The CRD's `^[A-Za-z_][A-Za-z_0-9]*$`.
fn valid_method(method: &str) -> bool {
    let mut bytes = method.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A service or method pattern rewritten not to match `/`, or [`ANY_PART`] when not given;
/// `None` after reporting.
fn regex_part(pattern: Option<&str>, field: &str, r: &mut Report<'_>) -> Option<String> {
    let Some(pattern) = pattern else {
        return Some(ANY_PART.to_owned());
    };
    if let Err(why) = check_regex(pattern) {
        r.error(field.to_owned(), why);
        return None;
    }
    let rewritten = regex_syntax::parse(pattern)
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
        .and_then(|hir| without_slash(hir).map_err(|why| format!("{pattern:?}: {why}")));
    match rewritten {
        Ok(hir) => Some(hir.to_string()),
        Err(why) => {
            r.error(field.to_owned(), why);
            None
        }
    }
}

/// The expression with `/` taken out of every class, so that it matches exactly the strings
/// without `/` that it matched before; an error for what cannot be matched within one path
/// segment the same way as on its own.
fn without_slash(hir: Hir) -> Result<Hir, &'static str> {
    Ok(match hir.into_kind() {
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(Literal(bytes)) => {
            if bytes.contains(&b'/') {
                return Err("a gRPC service or method name never contains '/'");
            }
            Hir::literal(bytes)
        }
        HirKind::Class(Class::Unicode(mut class)) => {
            class.difference(&ClassUnicode::new([ClassUnicodeRange::new('/', '/')]));
            Hir::class(Class::Unicode(class))
        }
        HirKind::Class(Class::Bytes(mut class)) => {
            class.difference(&ClassBytes::new([ClassBytesRange::new(b'/', b'/')]));
            Hir::class(Class::Bytes(class))
        }
        HirKind::Look(
            Look::Start | Look::End | Look::StartLF | Look::EndLF | Look::StartCRLF | Look::EndCRLF,
        ) => {
            return Err(
                "anchors (^, $, \\A, \\z) are not allowed: the pattern always matches \
                        the whole name",
            );
        }
        // Word boundaries: next to the part is a '/' or the end of the path, neither a word
        // character, as the ends of the name are on their own.
        HirKind::Look(look) => Hir::look(look),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            sub: Box::new(without_slash(*rep.sub)?),
            ..rep
        }),
        // Groups only group here; their names could clash between service and method.
        HirKind::Capture(capture) => without_slash(*capture.sub)?,
        HirKind::Concat(subs) => Hir::concat(
            subs.into_iter()
                .map(without_slash)
                .collect::<Result<_, _>>()?,
        ),
        HirKind::Alternation(subs) => Hir::alternation(
            subs.into_iter()
                .map(without_slash)
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn backend_ref(
    b: &GrpcRouteRulesBackendRefs,
    field: &str,
    r: &mut Report<'_>,
) -> HttpRouteRulesBackendRefs {
    if b.filters.as_ref().is_some_and(|f| !f.is_empty()) {
        r.error(
            format!("{field}.filters"),
            "per-backend filters are not supported yet; put the filters on the rule",
        );
    }
    HttpRouteRulesBackendRefs {
        filters: None,
        group: b.group.clone(),
        kind: b.kind.clone(),
        name: b.name.clone(),
        namespace: b.namespace.clone(),
        port: b.port,
        weight: b.weight,
    }
}

fn http_filter(f: &GrpcRouteRulesFilters) -> HttpRouteRulesFilters {
    HttpRouteRulesFilters {
        r#type: match f.r#type {
            GrpcRouteRulesFiltersType::RequestHeaderModifier => {
                HttpRouteRulesFiltersType::RequestHeaderModifier
            }
            GrpcRouteRulesFiltersType::ResponseHeaderModifier => {
                HttpRouteRulesFiltersType::ResponseHeaderModifier
            }
            GrpcRouteRulesFiltersType::RequestMirror => HttpRouteRulesFiltersType::RequestMirror,
            GrpcRouteRulesFiltersType::ExtensionRef => HttpRouteRulesFiltersType::ExtensionRef,
        },
        request_header_modifier: f.request_header_modifier.as_ref().map(request_headers),
        response_header_modifier: f.response_header_modifier.as_ref().map(response_headers),
        request_mirror: f.request_mirror.as_ref().map(mirror),
        extension_ref: f
            .extension_ref
            .as_ref()
            .map(|e| HttpRouteRulesFiltersExtensionRef {
                group: e.group.clone(),
                kind: e.kind.clone(),
                name: e.name.clone(),
            }),
        cors: None,
        request_redirect: None,
        url_rewrite: None,
    }
}

fn request_headers(
    m: &GrpcRouteRulesFiltersRequestHeaderModifier,
) -> HttpRouteRulesFiltersRequestHeaderModifier {
    HttpRouteRulesFiltersRequestHeaderModifier {
        add: m.add.as_ref().map(|list| {
            list.iter()
                .map(|h| HttpRouteRulesFiltersRequestHeaderModifierAdd {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        }),
        remove: m.remove.clone(),
        set: m.set.as_ref().map(|list| {
            list.iter()
                .map(|h| HttpRouteRulesFiltersRequestHeaderModifierSet {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        }),
    }
}

fn response_headers(
    m: &GrpcRouteRulesFiltersResponseHeaderModifier,
) -> HttpRouteRulesFiltersResponseHeaderModifier {
    HttpRouteRulesFiltersResponseHeaderModifier {
        add: m.add.as_ref().map(|list| {
            list.iter()
                .map(|h| HttpRouteRulesFiltersResponseHeaderModifierAdd {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        }),
        remove: m.remove.clone(),
        set: m.set.as_ref().map(|list| {
            list.iter()
                .map(|h| HttpRouteRulesFiltersResponseHeaderModifierSet {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        }),
    }
}

fn mirror(m: &GrpcRouteRulesFiltersRequestMirror) -> HttpRouteRulesFiltersRequestMirror {
    let b = &m.backend_ref;
    HttpRouteRulesFiltersRequestMirror {
        backend_ref: HttpRouteRulesFiltersRequestMirrorBackendRef {
            group: b.group.clone(),
            kind: b.kind.clone(),
            name: b.name.clone(),
            namespace: b.namespace.clone(),
            port: b.port,
        },
        fraction: m
            .fraction
            .as_ref()
            .map(|f| HttpRouteRulesFiltersRequestMirrorFraction {
                denominator: f.denominator,
                numerator: f.numerator,
            }),
        percent: m.percent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_route(spec: &str) -> GrpcRoute {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
             metadata: {{name: r, namespace: t}}\nspec:\n{spec}"
        );
        serde_norway::from_str(&yaml).unwrap()
    }

    /// The conversion of `spec` and its diagnostics as `field: message`.
    fn convert(spec: &str) -> (Option<HttpRoute>, Vec<String>) {
        let mut diagnostics = Vec::new();
        let out = to_http_route(&grpc_route(spec), "GRPCRoute t/r", None, &mut diagnostics);
        for d in &diagnostics {
            assert_eq!(d.object, "GRPCRoute t/r");
            assert!(d.is_error());
        }
        let messages = diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect();
        (out, messages)
    }

    /// The path match of each match of the first rule, as `(type, value)`.
    fn paths(spec: &str) -> Vec<Option<(HttpRouteRulesMatchesPathType, String)>> {
        let (route, errors) = convert(spec);
        assert!(errors.is_empty(), "{errors:?}");
        let route = route.unwrap();
        let rules = route.spec.rules.unwrap();
        rules[0]
            .matches
            .iter()
            .flatten()
            .map(|m| {
                m.path
                    .as_ref()
                    .map(|p| (p.r#type.clone().unwrap(), p.value.clone().unwrap()))
            })
            .collect()
    }

    /// Whether the path regular expression of the only match matches `path` (whole).
    fn regex_matches(spec: &str, path: &str) -> bool {
        let [Some((HttpRouteRulesMatchesPathType::RegularExpression, pattern))] = &paths(spec)[..]
        else {
            panic!("not one regular expression: {:?}", paths(spec));
        };
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .unwrap()
            .is_match(path)
    }

    #[test]
    fn method_matches_become_path_matches() {
        use HttpRouteRulesMatchesPathType::*;
        // What the patterns are rewritten to: the same, without '/' in their classes.
        let service = regex_syntax::parse(r"helloworld\.[^\n/]*").unwrap();
        let say = regex_syntax::parse(r"Say[^\n/]*").unwrap();
        let got = paths(
            r#"
  rules:
    - matches:
        - method: {service: helloworld.Greeter, method: SayHello}
        - method: {type: Exact, service: helloworld.Greeter}
        - method: {method: SayHello}
        - method: {service: "", method: SayHello}
        - headers: [{name: x-v, value: "1"}]
        - method: {type: RegularExpression, service: 'helloworld\..*', method: 'Say.*'}
        - method: {type: RegularExpression, method: 'Say.*'}
"#,
        );
        assert_eq!(
            got,
            [
                Some((Exact, "/helloworld.Greeter/SayHello".to_owned())),
                Some((PathPrefix, "/helloworld.Greeter/".to_owned())),
                Some((RegularExpression, "/[^/]+/SayHello".to_owned())),
                Some((RegularExpression, "/[^/]+/SayHello".to_owned())),
                None,
                Some((RegularExpression, format!("/(?:{service})/(?:{say})"))),
                Some((RegularExpression, format!("/(?:[^/]+)/(?:{say})"))),
            ]
        );
    }

    #[test]
    fn regular_expressions_stay_within_their_segment() {
        let both = "  rules:\n    - matches:\n        - method: {type: RegularExpression, \
                    service: '.*', method: '.*'}\n";
        assert!(regex_matches(both, "/a.B/Call"));
        // A gRPC path has two segments; `.*` alone would take `a/b` as the service.
        assert!(!regex_matches(both, "/a/b/Call"));
        assert!(!regex_matches(both, "/a.B/Call/more"));

        let service = "  rules:\n    - matches:\n        - method: {type: RegularExpression, \
                       service: '(?i)(pkg\\.)?[a-z]+'}\n";
        assert!(regex_matches(service, "/pkg.Echo/Unary"));
        assert!(regex_matches(service, "/PKG.echo/Unary"));
        assert!(!regex_matches(service, "/other.pkg.Echo/Unary"));
        assert!(!regex_matches(service, "/pkg.Echo/"));

        // A class and `\W` lose the slash; word boundaries see the same neighbours.
        let classes = "  rules:\n    - matches:\n        - method: {type: RegularExpression, \
                       service: '[/a-z.]+', method: '\\bGet\\W?\\w*\\b'}\n";
        assert!(regex_matches(classes, "/a.b/GetX"));
        assert!(!regex_matches(classes, "/a/b/GetX"));
        assert!(!regex_matches(classes, "/a.b/Get/X"));

        // Named groups in both parts do not clash.
        let named = "  rules:\n    - matches:\n        - method: {type: RegularExpression, \
                     service: '(?P<x>a)', method: '(?P<x>b)'}\n";
        assert!(regex_matches(named, "/a/b"));
    }

    #[test]
    fn method_match_errors_name_the_field() {
        let (route, errors) = convert(
            r#"
  rules:
    - matches:
        - method: {service: helloworld.Greeter}
        - method: {type: Exact}
        - method: {service: "", method: ""}
    - matches:
        - method: {service: "hello/world", method: "Say.Hello"}
        - method: {service: "1pkg.S"}
        - method: {service: "pkg..S"}
        - method: {type: RegularExpression, service: "(unclosed"}
        - method: {type: RegularExpression, service: "^pkg\\.S$"}
        - method: {type: RegularExpression, method: "a/b"}
"#,
        );
        assert!(route.is_none());
        let fields: Vec<&str> = errors
            .iter()
            .map(|e| e.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].matches[1].method",
                "spec.rules[0].matches[2].method",
                "spec.rules[1].matches[0].method.service",
                "spec.rules[1].matches[0].method.method",
                "spec.rules[1].matches[1].method.service",
                "spec.rules[1].matches[2].method.service",
                "spec.rules[1].matches[3].method.service",
                "spec.rules[1].matches[4].method.service",
                "spec.rules[1].matches[5].method.method",
            ],
            "{errors:#?}"
        );
        assert!(errors[0].ends_with("at least one of service and method must be given"));
        assert!(errors[2].contains("not a fully qualified gRPC service name"));
        assert!(errors[3].contains("not a gRPC method name"));
        assert!(errors[6].contains("invalid regular expression"));
        assert!(errors[7].contains("anchors"));
        assert!(errors[8].contains("never contains '/'"));

        let long = "a".repeat(MAX_NAME_LEN + 1);
        let (route, errors) = convert(&format!(
            "  rules:\n    - matches:\n        - method: {{service: {long}}}\n"
        ));
        assert!(route.is_none());
        assert_eq!(
            errors,
            [format!(
                "spec.rules[0].matches[0].method.service: longer than {MAX_NAME_LEN} characters"
            )]
        );
    }

    #[test]
    fn the_rest_carries_over_field_by_field() {
        let (route, errors) = convert(
            r#"
  hostnames: [grpc.example.com]
  parentRefs: [{name: gw, namespace: infra, sectionName: h2, port: 8080}]
  rules:
    - name: canary
      matches:
        - headers:
            - {name: x-canary, value: "true"}
            - {name: x-user, type: RegularExpression, value: "u[0-9]+"}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-a, value: "1"}]
            add: [{name: x-b, value: "2"}]
            remove: [x-c]
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-d, value: "3"}]}
        - type: RequestMirror
          requestMirror:
            backendRef: {name: shadow, port: 9000}
            fraction: {numerator: 1, denominator: 4}
        - type: ExtensionRef
          extensionRef: {group: example.io, kind: Auth, name: a}
      backendRefs:
        - {name: stable, port: 9000, weight: 90}
        - {name: preview, namespace: other, port: 9000, weight: 10}
    - {}
"#,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let route = route.unwrap();
        assert_eq!(route.metadata.name.as_deref(), Some("r"));
        assert_eq!(route.metadata.namespace.as_deref(), Some("t"));
        assert_eq!(route.spec.hostnames, Some(vec!["grpc.example.com".into()]));
        assert_eq!(
            route.spec.parent_refs,
            Some(vec![HttpRouteParentRefs {
                name: "gw".into(),
                namespace: Some("infra".into()),
                section_name: Some("h2".into()),
                port: Some(8080),
                ..HttpRouteParentRefs::default()
            }])
        );
        let rules = route.spec.rules.unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1], HttpRouteRules::default());
        let rule = &rules[0];
        assert_eq!(rule.name.as_deref(), Some("canary"));
        let headers = rule.matches.as_ref().unwrap()[0].headers.as_ref().unwrap();
        assert_eq!(
            headers[1],
            HttpRouteRulesMatchesHeaders {
                name: "x-user".into(),
                r#type: Some(HttpRouteRulesMatchesHeadersType::RegularExpression),
                value: "u[0-9]+".into(),
            }
        );
        let filters = rule.filters.as_ref().unwrap();
        let types: Vec<_> = filters.iter().map(|f| f.r#type.clone()).collect();
        assert_eq!(
            types,
            [
                HttpRouteRulesFiltersType::RequestHeaderModifier,
                HttpRouteRulesFiltersType::ResponseHeaderModifier,
                HttpRouteRulesFiltersType::RequestMirror,
                HttpRouteRulesFiltersType::ExtensionRef,
            ]
        );
        let request = filters[0].request_header_modifier.as_ref().unwrap();
        assert_eq!(request.set.as_ref().unwrap()[0].name, "x-a");
        assert_eq!(request.add.as_ref().unwrap()[0].value, "2");
        assert_eq!(request.remove, Some(vec!["x-c".into()]));
        let response = filters[1].response_header_modifier.as_ref().unwrap();
        assert_eq!(response.add.as_ref().unwrap()[0].name, "x-d");
        let mirror = filters[2].request_mirror.as_ref().unwrap();
        assert_eq!(mirror.backend_ref.name, "shadow");
        assert_eq!(mirror.backend_ref.port, Some(9000));
        assert_eq!(
            mirror.fraction,
            Some(HttpRouteRulesFiltersRequestMirrorFraction {
                numerator: 1,
                denominator: Some(4),
            })
        );
        assert_eq!(filters[3].extension_ref.as_ref().unwrap().kind, "Auth");
        let backends = rule.backend_refs.as_ref().unwrap();
        assert_eq!(
            backends[1],
            HttpRouteRulesBackendRefs {
                name: "preview".into(),
                namespace: Some("other".into()),
                port: Some(9000),
                weight: Some(10),
                ..HttpRouteRulesBackendRefs::default()
            }
        );
    }

    #[test]
    fn backend_filters_are_errors() {
        let (route, errors) = convert(
            r#"
  rules:
    - backendRefs:
        - name: a
          port: 9000
          filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}]
"#,
        );
        assert!(route.is_none());
        assert_eq!(
            errors,
            [
                "spec.rules[0].backendRefs[0].filters: per-backend filters are not supported yet; \
              put the filters on the rule"
            ]
        );
    }

    #[test]
    fn listeners_admit_each_kind_on_its_own() {
        let kinds = |yaml: &str| {
            let kinds: Vec<GatewayListenersAllowedRoutesKinds> =
                serde_norway::from_str(yaml).unwrap();
            let allowed = AllowedKinds::of(Some(&kinds));
            (
                allowed.allows(RouteKind::Http),
                allowed.allows(RouteKind::Grpc),
            )
        };
        assert_eq!(kinds("[]"), (true, true));
        assert_eq!(kinds("[{kind: GRPCRoute}]"), (false, true));
        assert_eq!(
            kinds("[{kind: HTTPRoute, group: gateway.networking.k8s.io}]"),
            (true, false)
        );
        assert_eq!(
            kinds("[{kind: GRPCRoute, group: example.io}]"),
            (false, false)
        );
        assert_eq!(
            kinds("[{kind: GRPCRoute}, {kind: HTTPRoute}]"),
            (true, true)
        );
        assert_eq!(AllowedKinds::of(None), AllowedKinds::of(Some(&[])));
    }

    #[test]
    fn names_and_protocols() {
        assert!(valid_service("helloworld.Greeter"));
        assert!(valid_service(".grpc.health.v1.Health"));
        assert!(valid_service("_S"));
        assert!(!valid_service("a..b"));
        assert!(!valid_service("a.1b"));
        assert!(!valid_service("a-b"));
        assert!(!valid_service(""));
        assert!(valid_method("Say_Hello2"));
        assert!(!valid_method("2Say"));
        assert!(!valid_method("Say.Hello"));
        assert_eq!(
            RouteKind::Grpc.route_name("t", "r"),
            "grpcroute:t/r",
            "an HTTPRoute t/r may share the listener"
        );
        assert_eq!(RouteKind::Http.route_name("t", "r"), "t/r");
        assert!(speaks_h2c(Some("kubernetes.io/h2c")));
        assert!(speaks_h2c(Some("grpc")));
        assert!(!speaks_h2c(Some("http")));
        assert!(!speaks_h2c(None));
    }
}
