//! `ProxyRoute`: which requests go where, attached to ProxyGateways.
//!
//! ```yaml
//! apiVersion: novaedge.io/v1alpha1
//! kind: ProxyRoute
//! metadata: {name: shop, namespace: shop}
//! spec:
//!   parentRefs: [{name: edge, sectionName: https}]
//!   hostnames: [shop.example.com]
//!   rules:
//!     - matches: [{path: {type: PathPrefix, value: /api}, method: GET}]
//!       filters:
//!         - type: RequestHeaderModifier
//!           requestHeaderModifier: {set: [{name: x-route, value: shop}]}
//!       backendRefs:
//!         - {name: api, port: 8080, weight: 90}
//!         - {name: api-canary, kind: ProxyBackend, weight: 10}
//! ```
//!
//! The route is a Gateway API `HTTPRoute` whose parents are ProxyGateways and whose backends
//! may be ProxyBackends: [`to_http_route`] turns it into one with the same field paths, parent
//! references to the Gateways [`super::gateway::to_gateway`] makes, and backend references of group
//! `novaedge.io`, kind `ProxyBackend` for ProxyBackends. Matching, filters and weights then mean
//! what they mean in Gateway API, because the same translator serves them.

use gateway_api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs,
    HttpRouteRulesFilters, HttpRouteRulesFiltersRequestHeaderModifier,
    HttpRouteRulesFiltersRequestHeaderModifierAdd, HttpRouteRulesFiltersRequestHeaderModifierSet,
    HttpRouteRulesFiltersRequestMirror, HttpRouteRulesFiltersRequestMirrorBackendRef,
    HttpRouteRulesFiltersRequestMirrorFraction, HttpRouteRulesFiltersRequestRedirect,
    HttpRouteRulesFiltersRequestRedirectPath, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersResponseHeaderModifier,
    HttpRouteRulesFiltersResponseHeaderModifierAdd, HttpRouteRulesFiltersResponseHeaderModifierSet,
    HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewrite,
    HttpRouteRulesFiltersUrlRewritePath, HttpRouteRulesFiltersUrlRewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPath, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParams, HttpRouteRulesMatchesQueryParamsType, HttpRouteSpec,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ProxyRouteStatus;
use super::{
    DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, GROUP, HEADER_NAME_PATTERN, HOSTNAME_PATTERN,
    MAX_WEIGHT, Problems, is_dns_subdomain,
};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Which requests go where: hostnames, rules of matches, filters and weighted backends,
/// attached to ProxyGateways.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "novaedge.io",
    version = "v1alpha1",
    kind = "ProxyRoute",
    namespaced,
    status = "ProxyRouteStatus",
    derive = "PartialEq",
    shortname = "proute",
    category = "novaedge",
    doc = "Which requests go where: hostnames, rules of matches, filters and weighted backends, \
           attached to ProxyGateways.",
    printcolumn(name = "Hostnames", type_ = "string", json_path = ".spec.hostnames"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyRouteSpec {
    /// The ProxyGateways (or single listeners of them) the route attaches to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<ParentRef>,
    /// The hosts the route serves (`*.` for subdomains), intersected with each listener's
    /// hostname; default every host the listener accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 253), pattern(HOSTNAME_PATTERN))
    )]
    pub hostnames: Vec<String>,
    /// The rules; a request takes the most specific rule that matches it (Gateway API
    /// precedence).
    #[schemars(length(min = 1, max = 16))]
    pub rules: Vec<RouteRule>,
}

/// A ProxyGateway the route attaches to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentRef {
    /// The ProxyGateway's name.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Its namespace; default the route's. The listener must allow routes from the route's
    /// namespace (`allowedRoutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
    /// Only the listener of this name; default every listener that accepts the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub section_name: Option<String>,
    /// Only listeners on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
}

/// Requests that match, what is done to them, and where they go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    /// A request matching any of these takes the rule; default every request (path prefix
    /// `/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub matches: Vec<RouteMatch>,
    /// What is done to a request and its response. Each type appears at most once except
    /// `RequestMirror`, and `RequestRedirect` and `URLRewrite` exclude each other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-validations" = [
            {
                "rule": "!(self.exists(f, f.type == 'RequestRedirect') && \
                         self.exists(f, f.type == 'URLRewrite'))",
                "message": "RequestRedirect and URLRewrite cannot be used together",
            },
            {
                "rule": "self.filter(f, f.type == 'RequestHeaderModifier').size() <= 1",
                "message": "RequestHeaderModifier may appear at most once",
            },
            {
                "rule": "self.filter(f, f.type == 'ResponseHeaderModifier').size() <= 1",
                "message": "ResponseHeaderModifier may appear at most once",
            },
            {
                "rule": "self.filter(f, f.type == 'RequestRedirect').size() <= 1",
                "message": "RequestRedirect may appear at most once",
            },
            {
                "rule": "self.filter(f, f.type == 'URLRewrite').size() <= 1",
                "message": "URLRewrite may appear at most once",
            },
        ])
    )]
    pub filters: Vec<RouteFilter>,
    /// Where matching requests go, each with its share (`weight`). Without any, matching
    /// requests are answered 500, unless a `RequestRedirect` answers them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub backend_refs: Vec<RouteBackendRef>,
}

/// Conditions a request must all meet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// The request path; default prefix `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Request headers, each of a different name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub headers: Vec<HeaderMatch>,
    /// Query parameters, each of a different name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub query_params: Vec<QueryParamMatch>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
}

/// How the path is compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type == 'RegularExpression' || self.value.startsWith('/')",
        "message": "an Exact or PathPrefix value must be an absolute path, starting with '/'",
    },
    {
        "rule": "self.type == 'RegularExpression' || \
                 !['//', '/./', '/../', '%2f', '%2F', '#'].exists(s, self.value.contains(s))",
        "message": "an Exact or PathPrefix value must not contain '//', '/./', '/../', '%2f', \
                    '%2F' or '#'",
    },
    {
        "rule": "self.type == 'RegularExpression' || \
                 !(self.value.endsWith('/..') || self.value.endsWith('/.'))",
        "message": "an Exact or PathPrefix value must not end with '/..' or '/.'",
    },
]))]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (whole segments: `/a` matches `/a/b`, not `/ab`) or
    /// `RegularExpression` (RE2 syntax, the whole path); default `PathPrefix`.
    #[serde(rename = "type", default)]
    pub type_: PathMatchType,
    /// The path, prefix or expression; default `/`.
    #[serde(default = "root")]
    #[schemars(length(max = 1024))]
    pub value: String,
}

fn root() -> String {
    "/".to_owned()
}

/// The path comparisons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

/// A request header's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// `Exact` (the default) or `RegularExpression` (RE2 syntax, the whole value).
    #[serde(rename = "type", default)]
    pub type_: HeaderMatchType,
    /// The header name, compared without regard to case.
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub name: String,
    /// The value or expression.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// A query parameter's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamMatch {
    /// `Exact` (the default) or `RegularExpression` (RE2 syntax, the whole value).
    #[serde(rename = "type", default)]
    pub type_: HeaderMatchType,
    /// The parameter name, compared exactly.
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub name: String,
    /// The value or expression.
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// How a header or query parameter value is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum HeaderMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// The request methods a rule can match (RFC 9110 and RFC 5789).
//
// Every enum that an optional field holds documents its variants: schemars then describes it
// with `oneOf`, which kube's `OptionalEnum` transform turns into a plain nullable enum. An enum
// without variant docs would get `null` added to its values instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schemars(transform = super::field_describes)]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `CONNECT`.
    Connect,
    /// `OPTIONS`.
    Options,
    /// `TRACE`.
    Trace,
    /// `PATCH`.
    Patch,
}

/// One filter: `type` names it, and the field of that name holds its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.requestHeaderModifier) == (self.type == 'RequestHeaderModifier')",
        "message": "requestHeaderModifier must be set for type RequestHeaderModifier and only \
                    for it",
    },
    {
        "rule": "has(self.responseHeaderModifier) == (self.type == 'ResponseHeaderModifier')",
        "message": "responseHeaderModifier must be set for type ResponseHeaderModifier and only \
                    for it",
    },
    {
        "rule": "has(self.requestRedirect) == (self.type == 'RequestRedirect')",
        "message": "requestRedirect must be set for type RequestRedirect and only for it",
    },
    {
        "rule": "has(self.urlRewrite) == (self.type == 'URLRewrite')",
        "message": "urlRewrite must be set for type URLRewrite and only for it",
    },
    {
        "rule": "has(self.requestMirror) == (self.type == 'RequestMirror')",
        "message": "requestMirror must be set for type RequestMirror and only for it",
    },
]))]
pub struct RouteFilter {
    /// Which filter.
    #[serde(rename = "type")]
    pub type_: RouteFilterType,
    /// Request headers set, added and removed before the request is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Response headers set, added and removed before the response is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// Rewrite the host or path before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// Send a copy of requests to another backend, ignoring its responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

/// The filters of a rule (Gateway API's `HTTPRouteFilter` core and extended set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum RouteFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
}

/// Headers set (replacing), added (appended) and removed, in that order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers set to a value, replacing any the message had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub set: Vec<HeaderValue>,
    /// Headers added after any the message has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub add: Vec<HeaderValue>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    /// The header name; each name once per list.
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub name: String,
    /// The header value.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// A redirect; what is not set keeps the request's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,
    /// The host to redirect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub hostname: Option<String>,
    /// The path to redirect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// The port to redirect to; default the scheme's well-known port when the scheme changes,
    /// else the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// 301, 302 (the default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [301, 302, 303, 307, 308]))]
    pub status_code: Option<u16>,
}

/// The redirect statuses.
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The schemes of a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = super::field_describes)]
pub enum RedirectScheme {
    /// `http`, default port 80.
    Http,
    /// `https`, default port 443.
    Https,
}

/// A new path: all of it, or the part the rule's `PathPrefix` match matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.replaceFullPath) == (self.type == 'ReplaceFullPath') && \
             has(self.replacePrefixMatch) == (self.type == 'ReplacePrefixMatch')",
    "message": "set replaceFullPath for type ReplaceFullPath or replacePrefixMatch for type \
                ReplacePrefixMatch, and not the other",
}]))]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch` (only in a rule whose one match is a
    /// `PathPrefix`).
    #[serde(rename = "type")]
    pub type_: PathModifierType,
    /// The whole new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub replace_full_path: Option<String>,
    /// What replaces the matched prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub replace_prefix_match: Option<String>,
}

/// The kinds of [`PathModifier`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

/// A rewrite before the request is forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlRewrite {
    /// The new `Host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub hostname: Option<String>,
    /// The new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

/// Copies of requests sent to another backend. All requests by default; `percent` or
/// `fraction` (not both) sends fewer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.percent) && has(self.fraction))",
    "message": "set percent or fraction, not both",
}]))]
pub struct RequestMirror {
    /// Where the copies go.
    pub backend_ref: MirrorBackendRef,
    /// The percentage of requests copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub percent: Option<u32>,
    /// The fraction of requests copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<MirrorFraction>,
}

/// `numerator / denominator` of the requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.numerator <= (has(self.denominator) ? self.denominator : 100)",
    "message": "numerator must not be above denominator",
}]))]
pub struct MirrorFraction {
    /// Requests copied out of every `denominator`.
    pub numerator: u32,
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub denominator: Option<u32>,
}

/// Which backend a request goes to, and its share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.kind) && self.kind == 'ProxyBackend') ? !has(self.port) : has(self.port)",
    "message": "port is required for a Service, and not allowed for a ProxyBackend (which \
                names its own)",
}]))]
pub struct RouteBackendRef {
    /// The Service or ProxyBackend, in the route's namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// `Service` (the default) or `ProxyBackend`.
    #[serde(default)]
    pub kind: BackendKind,
    /// The Service port (its `port`, not the target port); required for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// The share of requests, relative to the rule's other backends; default 1. A backend of
    /// weight 0 gets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub weight: Option<u32>,
}

/// The backend a mirror filter copies requests to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.kind) && self.kind == 'ProxyBackend') ? !has(self.port) : has(self.port)",
    "message": "port is required for a Service, and not allowed for a ProxyBackend (which \
                names its own)",
}]))]
pub struct MirrorBackendRef {
    /// The Service or ProxyBackend, in the route's namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// `Service` (the default) or `ProxyBackend`.
    #[serde(default)]
    pub kind: BackendKind,
    /// The Service port; required for a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
}

/// What a backend reference names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum BackendKind {
    /// A core Service port; its endpoints come from its EndpointSlices.
    #[default]
    Service,
    /// A NovaEdge ProxyBackend.
    ProxyBackend,
}

// === admission ===

/// The schema's rules, for an object no API server has checked.
pub(super) fn admit(spec: &ProxyRouteSpec, p: &mut Problems) {
    p.min_items("spec.parentRefs", spec.parent_refs.len(), 1);
    p.max_items("spec.parentRefs", spec.parent_refs.len(), 32);
    for (i, r) in spec.parent_refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        p.name(&format!("{field}.name"), &r.name);
        if let Some(ns) = &r.namespace {
            p.label(&format!("{field}.namespace"), ns);
        }
        if let Some(section) = &r.section_name {
            p.label(&format!("{field}.sectionName"), section);
        }
        if let Some(port) = r.port {
            p.port(&format!("{field}.port"), port);
        }
    }
    p.max_items("spec.hostnames", spec.hostnames.len(), 16);
    for (i, h) in spec.hostnames.iter().enumerate() {
        p.hostname(&format!("spec.hostnames[{i}]"), h);
    }
    p.min_items("spec.rules", spec.rules.len(), 1);
    p.max_items("spec.rules", spec.rules.len(), 16);
    for (i, rule) in spec.rules.iter().enumerate() {
        admit_rule(rule, &format!("spec.rules[{i}]"), p);
    }
}

fn admit_rule(rule: &RouteRule, field: &str, p: &mut Problems) {
    p.max_items(&format!("{field}.matches"), rule.matches.len(), 64);
    for (i, m) in rule.matches.iter().enumerate() {
        let field = format!("{field}.matches[{i}]");
        if let Some(path) = &m.path {
            admit_path(path, &format!("{field}.path"), p);
        }
        for (list, max_value, entries) in [
            ("headers", 4096, header_entries(&m.headers)),
            ("queryParams", 1024, header_entries(&m.query_params)),
        ] {
            let field = format!("{field}.{list}");
            p.max_items(&field, entries.len(), 16);
            for (j, (key, value)) in entries.iter().enumerate() {
                p.header_name(&format!("{field}[{j}].name"), key);
                if entries[..j].iter().any(|(other, _)| other == key) {
                    p.error(
                        format!("{field}[{j}].name"),
                        format!("{key:?} appears more than once"),
                    );
                }
                p.max_len(&format!("{field}[{j}].value"), value, max_value);
            }
        }
    }
    let field_f = format!("{field}.filters");
    p.max_items(&field_f, rule.filters.len(), 16);
    for (type_, name) in [
        (
            RouteFilterType::RequestHeaderModifier,
            "RequestHeaderModifier",
        ),
        (
            RouteFilterType::ResponseHeaderModifier,
            "ResponseHeaderModifier",
        ),
        (RouteFilterType::RequestRedirect, "RequestRedirect"),
        (RouteFilterType::UrlRewrite, "URLRewrite"),
    ] {
        if rule.filters.iter().filter(|f| f.type_ == type_).count() > 1 {
            p.error(&field_f, format!("{name} may appear at most once"));
        }
    }
    let has = |t| rule.filters.iter().any(|f| f.type_ == t);
    if has(RouteFilterType::RequestRedirect) && has(RouteFilterType::UrlRewrite) {
        p.error(
            &field_f,
            "RequestRedirect and URLRewrite cannot be used together",
        );
    }
    for (i, f) in rule.filters.iter().enumerate() {
        admit_filter(f, &format!("{field_f}[{i}]"), p);
    }
    p.max_items(&format!("{field}.backendRefs"), rule.backend_refs.len(), 16);
    for (i, b) in rule.backend_refs.iter().enumerate() {
        let field = format!("{field}.backendRefs[{i}]");
        admit_backend_ref(&b.name, b.kind, b.port, &field, p);
        if let Some(w) = b.weight {
            p.range(&format!("{field}.weight"), w, 0, MAX_WEIGHT);
        }
    }
}

fn header_entries<T: NameValue>(list: &[T]) -> Vec<(&str, &str)> {
    list.iter().map(|e| (e.name(), e.value())).collect()
}

/// Header and query parameter matches alike.
trait NameValue {
    fn name(&self) -> &str;
    fn value(&self) -> &str;
}

impl NameValue for HeaderMatch {
    fn name(&self) -> &str {
        &self.name
    }
    fn value(&self) -> &str {
        &self.value
    }
}

impl NameValue for QueryParamMatch {
    fn name(&self) -> &str {
        &self.name
    }
    fn value(&self) -> &str {
        &self.value
    }
}

fn admit_path(path: &PathMatch, field: &str, p: &mut Problems) {
    let value_field = format!("{field}.value");
    p.max_len(&value_field, &path.value, 1024);
    if path.type_ == PathMatchType::RegularExpression {
        return;
    }
    let v = &path.value;
    if !v.starts_with('/') {
        p.error(
            &value_field,
            "an Exact or PathPrefix value must be an absolute path, starting with '/'",
        );
    }
    if ["//", "/./", "/../", "%2f", "%2F", "#"]
        .iter()
        .any(|s| v.contains(s))
    {
        p.error(
            &value_field,
            "an Exact or PathPrefix value must not contain '//', '/./', '/../', '%2f', '%2F' or \
             '#'",
        );
    }
    if v.ends_with("/..") || v.ends_with("/.") {
        p.error(
            &value_field,
            "an Exact or PathPrefix value must not end with '/..' or '/.'",
        );
    }
}

fn admit_filter(f: &RouteFilter, field: &str, p: &mut Problems) {
    let set = [
        (
            RouteFilterType::RequestHeaderModifier,
            "requestHeaderModifier",
            "RequestHeaderModifier",
            f.request_header_modifier.is_some(),
        ),
        (
            RouteFilterType::ResponseHeaderModifier,
            "responseHeaderModifier",
            "ResponseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        (
            RouteFilterType::RequestRedirect,
            "requestRedirect",
            "RequestRedirect",
            f.request_redirect.is_some(),
        ),
        (
            RouteFilterType::UrlRewrite,
            "urlRewrite",
            "URLRewrite",
            f.url_rewrite.is_some(),
        ),
        (
            RouteFilterType::RequestMirror,
            "requestMirror",
            "RequestMirror",
            f.request_mirror.is_some(),
        ),
    ];
    for (type_, key, name, is_set) in set {
        if is_set != (f.type_ == type_) {
            p.error(
                format!("{field}.{key}"),
                format!("{key} must be set for type {name} and only for it"),
            );
        }
    }
    for (key, m) in [
        ("requestHeaderModifier", &f.request_header_modifier),
        ("responseHeaderModifier", &f.response_header_modifier),
    ] {
        if let Some(m) = m {
            admit_header_modifier(m, &format!("{field}.{key}"), p);
        }
    }
    if let Some(r) = &f.request_redirect {
        let field = format!("{field}.requestRedirect");
        if let Some(h) = &r.hostname {
            precise_hostname(&format!("{field}.hostname"), h, p);
        }
        if let Some(path) = &r.path {
            admit_path_modifier(path, &format!("{field}.path"), p);
        }
        if let Some(port) = r.port {
            p.port(&format!("{field}.port"), port);
        }
        if let Some(code) = r.status_code
            && !REDIRECT_STATUSES.contains(&code)
        {
            p.error(
                format!("{field}.statusCode"),
                format!("{code} is not 301, 302, 303, 307 or 308"),
            );
        }
    }
    if let Some(r) = &f.url_rewrite {
        let field = format!("{field}.urlRewrite");
        if let Some(h) = &r.hostname {
            precise_hostname(&format!("{field}.hostname"), h, p);
        }
        if let Some(path) = &r.path {
            admit_path_modifier(path, &format!("{field}.path"), p);
        }
    }
    if let Some(m) = &f.request_mirror {
        let field = format!("{field}.requestMirror");
        let b = &m.backend_ref;
        admit_backend_ref(&b.name, b.kind, b.port, &format!("{field}.backendRef"), p);
        if let Some(percent) = m.percent {
            p.range(&format!("{field}.percent"), percent, 0, 100);
        }
        if m.percent.is_some() && m.fraction.is_some() {
            p.error(&field, "set percent or fraction, not both");
        }
        if let Some(fr) = &m.fraction {
            let denominator = fr.denominator.unwrap_or(100);
            if fr.denominator == Some(0) {
                p.error(
                    format!("{field}.fraction.denominator"),
                    "must be at least 1",
                );
            }
            if fr.numerator > denominator {
                p.error(
                    format!("{field}.fraction"),
                    "numerator must not be above denominator",
                );
            }
        }
    }
}

fn admit_header_modifier(m: &HeaderModifier, field: &str, p: &mut Problems) {
    for (key, list) in [("set", &m.set), ("add", &m.add)] {
        let field = format!("{field}.{key}");
        p.max_items(&field, list.len(), 16);
        for (i, h) in list.iter().enumerate() {
            p.header_name(&format!("{field}[{i}].name"), &h.name);
            if list[..i].iter().any(|o| o.name == h.name) {
                p.error(
                    format!("{field}[{i}].name"),
                    format!("{:?} appears more than once", h.name),
                );
            }
            if h.value.is_empty() {
                p.error(format!("{field}[{i}].value"), "must not be empty");
            }
            p.max_len(&format!("{field}[{i}].value"), &h.value, 4096);
        }
    }
    let field = format!("{field}.remove");
    p.max_items(&field, m.remove.len(), 16);
    for (i, name) in m.remove.iter().enumerate() {
        p.header_name(&format!("{field}[{i}]"), name);
        if m.remove[..i].contains(name) {
            p.error(
                format!("{field}[{i}]"),
                format!("{name:?} appears more than once"),
            );
        }
    }
}

fn admit_path_modifier(m: &PathModifier, field: &str, p: &mut Problems) {
    let full = m.type_ == PathModifierType::ReplaceFullPath;
    if m.replace_full_path.is_some() != full || m.replace_prefix_match.is_some() == full {
        p.error(
            field,
            "set replaceFullPath for type ReplaceFullPath or replacePrefixMatch for type \
             ReplacePrefixMatch, and not the other",
        );
    }
    for (key, value) in [
        ("replaceFullPath", &m.replace_full_path),
        ("replacePrefixMatch", &m.replace_prefix_match),
    ] {
        if let Some(v) = value {
            p.max_len(&format!("{field}.{key}"), v, 1024);
        }
    }
}

fn admit_backend_ref(
    name: &str,
    kind: BackendKind,
    port: Option<u16>,
    field: &str,
    p: &mut Problems,
) {
    p.name(&format!("{field}.name"), name);
    match (kind, port) {
        (BackendKind::Service, None) => p.error(
            format!("{field}.port"),
            "port is required for a Service, and not allowed for a ProxyBackend (which names \
             its own)",
        ),
        (BackendKind::ProxyBackend, Some(_)) => p.error(
            format!("{field}.port"),
            "port is required for a Service, and not allowed for a ProxyBackend (which names \
             its own)",
        ),
        (_, Some(port)) => p.port(&format!("{field}.port"), port),
        (BackendKind::ProxyBackend, None) => {}
    }
}

/// A hostname without wildcard, as [`DNS_SUBDOMAIN_PATTERN`].
fn precise_hostname(field: &str, host: &str, p: &mut Problems) {
    if !is_dns_subdomain(host) {
        p.error(
            field,
            format!("{host:?} is not a hostname (lowercase letters, digits, '-' and '.')"),
        );
    }
}

// === conversion ===

/// The Gateway API `HTTPRoute` a ProxyRoute stands for: same metadata and field paths, parents
/// the Gateways [`super::gateway::to_gateway`] makes of the ProxyGateways, ProxyBackends as backend
/// references of group `novaedge.io`. Numbers the schema bounds (weights, percentages) are
/// carried as they are; ones beyond what Gateway API's types hold cannot pass admission.
pub(crate) fn to_http_route(route: &ProxyRoute) -> HttpRoute {
    let spec = &route.spec;
    HttpRoute {
        metadata: route.metadata.clone(),
        spec: HttpRouteSpec {
            parent_refs: Some(
                spec.parent_refs
                    .iter()
                    .map(|r| HttpRouteParentRefs {
                        group: Some(GATEWAY_GROUP.to_owned()),
                        kind: Some("Gateway".to_owned()),
                        name: r.name.clone(),
                        namespace: r.namespace.clone(),
                        section_name: r.section_name.clone(),
                        port: r.port.map(i32::from),
                    })
                    .collect(),
            ),
            hostnames: (!spec.hostnames.is_empty()).then(|| spec.hostnames.clone()),
            rules: Some(spec.rules.iter().map(rule).collect()),
        },
        status: None,
    }
}

/// A number the schema bounds far below `i32::MAX`.
fn small(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `group` and `kind` of a backend reference as Gateway API writes them.
fn group_kind(kind: BackendKind) -> (String, String) {
    match kind {
        BackendKind::Service => (String::new(), "Service".to_owned()),
        BackendKind::ProxyBackend => (GROUP.to_owned(), "ProxyBackend".to_owned()),
    }
}

fn rule(r: &RouteRule) -> HttpRouteRules {
    HttpRouteRules {
        matches: (!r.matches.is_empty()).then(|| r.matches.iter().map(route_match).collect()),
        filters: (!r.filters.is_empty()).then(|| r.filters.iter().map(filter).collect()),
        backend_refs: (!r.backend_refs.is_empty()).then(|| {
            r.backend_refs
                .iter()
                .map(|b| {
                    let (group, kind) = group_kind(b.kind);
                    HttpRouteRulesBackendRefs {
                        group: Some(group),
                        kind: Some(kind),
                        name: b.name.clone(),
                        port: b.port.map(i32::from),
                        weight: b.weight.map(small),
                        ..HttpRouteRulesBackendRefs::default()
                    }
                })
                .collect()
        }),
        ..HttpRouteRules::default()
    }
}

fn route_match(m: &RouteMatch) -> HttpRouteRulesMatches {
    let header_type = |t| match t {
        HeaderMatchType::Exact => HttpRouteRulesMatchesHeadersType::Exact,
        HeaderMatchType::RegularExpression => HttpRouteRulesMatchesHeadersType::RegularExpression,
    };
    let query_type = |t| match t {
        HeaderMatchType::Exact => HttpRouteRulesMatchesQueryParamsType::Exact,
        HeaderMatchType::RegularExpression => {
            HttpRouteRulesMatchesQueryParamsType::RegularExpression
        }
    };
    HttpRouteRulesMatches {
        path: m.path.as_ref().map(|p| HttpRouteRulesMatchesPath {
            r#type: Some(match p.type_ {
                PathMatchType::Exact => HttpRouteRulesMatchesPathType::Exact,
                PathMatchType::PathPrefix => HttpRouteRulesMatchesPathType::PathPrefix,
                PathMatchType::RegularExpression => {
                    HttpRouteRulesMatchesPathType::RegularExpression
                }
            }),
            value: Some(p.value.clone()),
        }),
        headers: (!m.headers.is_empty()).then(|| {
            m.headers
                .iter()
                .map(|h| HttpRouteRulesMatchesHeaders {
                    name: h.name.clone(),
                    r#type: Some(header_type(h.type_)),
                    value: h.value.clone(),
                })
                .collect()
        }),
        query_params: (!m.query_params.is_empty()).then(|| {
            m.query_params
                .iter()
                .map(|q| HttpRouteRulesMatchesQueryParams {
                    name: q.name.clone(),
                    r#type: Some(query_type(q.type_)),
                    value: q.value.clone(),
                })
                .collect()
        }),
        method: m.method.map(|method| match method {
            HttpMethod::Get => HttpRouteRulesMatchesMethod::Get,
            HttpMethod::Head => HttpRouteRulesMatchesMethod::Head,
            HttpMethod::Post => HttpRouteRulesMatchesMethod::Post,
            HttpMethod::Put => HttpRouteRulesMatchesMethod::Put,
            HttpMethod::Delete => HttpRouteRulesMatchesMethod::Delete,
            HttpMethod::Connect => HttpRouteRulesMatchesMethod::Connect,
            HttpMethod::Options => HttpRouteRulesMatchesMethod::Options,
            HttpMethod::Trace => HttpRouteRulesMatchesMethod::Trace,
            HttpMethod::Patch => HttpRouteRulesMatchesMethod::Patch,
        }),
    }
}

fn filter(f: &RouteFilter) -> HttpRouteRulesFilters {
    HttpRouteRulesFilters {
        r#type: match f.type_ {
            RouteFilterType::RequestHeaderModifier => {
                HttpRouteRulesFiltersType::RequestHeaderModifier
            }
            RouteFilterType::ResponseHeaderModifier => {
                HttpRouteRulesFiltersType::ResponseHeaderModifier
            }
            RouteFilterType::RequestRedirect => HttpRouteRulesFiltersType::RequestRedirect,
            RouteFilterType::UrlRewrite => HttpRouteRulesFiltersType::UrlRewrite,
            RouteFilterType::RequestMirror => HttpRouteRulesFiltersType::RequestMirror,
        },
        request_header_modifier: f.request_header_modifier.as_ref().map(|m| {
            HttpRouteRulesFiltersRequestHeaderModifier {
                set: non_empty(&m.set, |h| HttpRouteRulesFiltersRequestHeaderModifierSet {
                    name: h.name.clone(),
                    value: h.value.clone(),
                }),
                add: non_empty(&m.add, |h| HttpRouteRulesFiltersRequestHeaderModifierAdd {
                    name: h.name.clone(),
                    value: h.value.clone(),
                }),
                remove: (!m.remove.is_empty()).then(|| m.remove.clone()),
            }
        }),
        response_header_modifier: f.response_header_modifier.as_ref().map(|m| {
            HttpRouteRulesFiltersResponseHeaderModifier {
                set: non_empty(&m.set, |h| HttpRouteRulesFiltersResponseHeaderModifierSet {
                    name: h.name.clone(),
                    value: h.value.clone(),
                }),
                add: non_empty(&m.add, |h| HttpRouteRulesFiltersResponseHeaderModifierAdd {
                    name: h.name.clone(),
                    value: h.value.clone(),
                }),
                remove: (!m.remove.is_empty()).then(|| m.remove.clone()),
            }
        }),
        request_redirect: f.request_redirect.as_ref().map(|r| {
            HttpRouteRulesFiltersRequestRedirect {
                scheme: r.scheme.map(|s| match s {
                    RedirectScheme::Http => HttpRouteRulesFiltersRequestRedirectScheme::Http,
                    RedirectScheme::Https => HttpRouteRulesFiltersRequestRedirectScheme::Https,
                }),
                hostname: r.hostname.clone(),
                path: r
                    .path
                    .as_ref()
                    .map(|p| HttpRouteRulesFiltersRequestRedirectPath {
                        r#type: match p.type_ {
                            PathModifierType::ReplaceFullPath => {
                                HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath
                            }
                            PathModifierType::ReplacePrefixMatch => {
                                HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch
                            }
                        },
                        replace_full_path: p.replace_full_path.clone(),
                        replace_prefix_match: p.replace_prefix_match.clone(),
                    }),
                port: r.port.map(i32::from),
                status_code: r.status_code.map(i64::from),
            }
        }),
        url_rewrite: f
            .url_rewrite
            .as_ref()
            .map(|u| HttpRouteRulesFiltersUrlRewrite {
                hostname: u.hostname.clone(),
                path: u
                    .path
                    .as_ref()
                    .map(|p| HttpRouteRulesFiltersUrlRewritePath {
                        r#type: match p.type_ {
                            PathModifierType::ReplaceFullPath => {
                                HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath
                            }
                            PathModifierType::ReplacePrefixMatch => {
                                HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch
                            }
                        },
                        replace_full_path: p.replace_full_path.clone(),
                        replace_prefix_match: p.replace_prefix_match.clone(),
                    }),
            }),
        request_mirror: f.request_mirror.as_ref().map(|m| {
            let (group, kind) = group_kind(m.backend_ref.kind);
            HttpRouteRulesFiltersRequestMirror {
                backend_ref: HttpRouteRulesFiltersRequestMirrorBackendRef {
                    group: Some(group),
                    kind: Some(kind),
                    name: m.backend_ref.name.clone(),
                    namespace: None,
                    port: m.backend_ref.port.map(i32::from),
                },
                percent: m.percent.map(small),
                fraction: m
                    .fraction
                    .as_ref()
                    .map(|f| HttpRouteRulesFiltersRequestMirrorFraction {
                        numerator: small(f.numerator),
                        denominator: f.denominator.map(small),
                    }),
            }
        }),
        ..HttpRouteRulesFilters::default()
    }
}

fn non_empty<T, U>(list: &[T], f: impl FnMut(&T) -> U) -> Option<Vec<U>> {
    (!list.is_empty()).then(|| list.iter().map(f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Object, parse_yaml};

    fn parse(spec: &str) -> (Option<ProxyRoute>, Vec<crate::Diagnostic>) {
        let text = format!(
            "apiVersion: novaedge.io/v1alpha1\nkind: ProxyRoute\n\
             metadata: {{name: shop, namespace: shop}}\nspec:\n{spec}"
        );
        let (objects, diags) = parse_yaml(&text, None);
        let route = objects.into_iter().next().map(|o| match o.object {
            Object::ProxyRoute(r) => *r,
            other => panic!("{other:?}"),
        });
        (route, diags)
    }

    fn route(spec: &str) -> ProxyRoute {
        let (route, diags) = parse(spec);
        assert!(diags.is_empty(), "{diags:#?}");
        route.unwrap()
    }

    #[test]
    fn converts_to_an_http_route_with_gateway_parents() {
        let r = route(
            "  parentRefs: [{name: edge, sectionName: https}, {name: other, namespace: infra, port: 8080}]
  hostnames: [shop.example.com, '*.shop.example']
  rules:
    - matches:
        - path: {type: Exact, value: /login}
          headers: [{name: x-env, value: canary}, {type: RegularExpression, name: x-id, value: '[0-9]+'}]
          queryParams: [{name: debug, value: '1'}]
          method: POST
        - {}
      backendRefs: [{name: web, port: 80, weight: 3}, {name: api, kind: ProxyBackend}]
    - {}
",
        );
        let out = to_http_route(&r);
        assert_eq!(out.metadata, r.metadata);
        let want = serde_json::json!({
            "parentRefs": [
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
                 "sectionName": "https"},
                {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "other",
                 "namespace": "infra", "port": 8080},
            ],
            "hostnames": ["shop.example.com", "*.shop.example"],
            "rules": [
                {
                    "matches": [
                        {
                            "path": {"type": "Exact", "value": "/login"},
                            "headers": [
                                {"name": "x-env", "type": "Exact", "value": "canary"},
                                {"name": "x-id", "type": "RegularExpression", "value": "[0-9]+"},
                            ],
                            "queryParams": [{"name": "debug", "type": "Exact", "value": "1"}],
                            "method": "POST",
                        },
                        {},
                    ],
                    "backendRefs": [
                        {"group": "", "kind": "Service", "name": "web", "port": 80, "weight": 3},
                        {"group": "novaedge.io", "kind": "ProxyBackend", "name": "api"},
                    ],
                },
                {},
            ],
        });
        assert_eq!(serde_json::to_value(&out.spec).unwrap(), want);
    }

    #[test]
    fn converts_every_filter() {
        let r = route(
            "  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {value: /old}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: a, value: '1'}], add: [{name: b, value: '2'}], remove: [c]}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {remove: [server]}
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: new.example, port: 8443, statusCode: 301,
                            path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
    - filters:
        - type: URLRewrite
          urlRewrite: {hostname: internal, path: {type: ReplaceFullPath, replaceFullPath: /x}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: shadow, port: 9000}, percent: 10}
        - type: RequestMirror
          requestMirror: {backendRef: {name: audit, kind: ProxyBackend}, fraction: {numerator: 1}}
      backendRefs: [{name: web, port: 80}]
",
        );
        let rules = to_http_route(&r).spec.rules.unwrap();
        let first = serde_json::to_value(&rules[0]).unwrap();
        assert_eq!(
            first,
            serde_json::json!({
                "matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
                "filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                        "set": [{"name": "a", "value": "1"}],
                        "add": [{"name": "b", "value": "2"}],
                        "remove": ["c"]}},
                    {"type": "ResponseHeaderModifier",
                     "responseHeaderModifier": {"remove": ["server"]}},
                    {"type": "RequestRedirect", "requestRedirect": {
                        "scheme": "https", "hostname": "new.example", "port": 8443,
                        "statusCode": 301,
                        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}},
                ],
            })
        );
        let second = serde_json::to_value(&rules[1]).unwrap();
        assert_eq!(
            second,
            serde_json::json!({
                "filters": [
                    {"type": "URLRewrite", "urlRewrite": {
                        "hostname": "internal",
                        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/x"}}},
                    {"type": "RequestMirror", "requestMirror": {
                        "backendRef": {"group": "", "kind": "Service", "name": "shadow",
                                       "port": 9000},
                        "percent": 10}},
                    {"type": "RequestMirror", "requestMirror": {
                        "backendRef": {"group": "novaedge.io", "kind": "ProxyBackend",
                                       "name": "audit"},
                        "fraction": {"numerator": 1}}},
                ],
                "backendRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
            })
        );
    }

    #[test]
    fn admission_refuses_what_the_schema_refuses() {
        let (route, diags) = parse(
            "  parentRefs: [{name: edge, sectionName: Bad}]
  rules:
    - matches:
        - path: {type: Exact, value: 'a//b'}
          headers: [{name: x, value: a}, {name: x, value: b}]
      filters:
        - {type: RequestRedirect, urlRewrite: {hostname: h}}
        - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replacePrefixMatch: /p}}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: m, kind: ProxyBackend, port: 80}, percent: 101}
      backendRefs: [{name: web}, {name: api, port: 80, weight: 1000001}]
",
        );
        assert!(route.is_none());
        let got: Vec<String> = diags
            .iter()
            .map(|d| format!("{} | {}", d.field, d.message))
            .collect();
        let r = "spec.rules[0]";
        assert_eq!(
            got,
            [
                "spec.parentRefs[0].sectionName | \"Bad\" is not a valid name (lowercase \
                 letters, digits and '-', starting and ending with a letter or digit, at most \
                 63 characters)"
                    .to_owned(),
                format!(
                    "{r}.matches[0].path.value | an Exact or PathPrefix value must be an \
                     absolute path, starting with '/'"
                ),
                format!(
                    "{r}.matches[0].path.value | an Exact or PathPrefix value must not contain \
                     '//', '/./', '/../', '%2f', '%2F' or '#'"
                ),
                format!("{r}.matches[0].headers[1].name | \"x\" appears more than once"),
                format!("{r}.filters | RequestRedirect and URLRewrite cannot be used together"),
                format!(
                    "{r}.filters[0].requestRedirect | requestRedirect must be set for type \
                     RequestRedirect and only for it"
                ),
                format!(
                    "{r}.filters[0].urlRewrite | urlRewrite must be set for type URLRewrite \
                     and only for it"
                ),
                format!(
                    "{r}.filters[1].urlRewrite.path | set replaceFullPath for type \
                     ReplaceFullPath or replacePrefixMatch for type ReplacePrefixMatch, and not \
                     the other"
                ),
                format!(
                    "{r}.filters[2].requestMirror.backendRef.port | port is required for a \
                     Service, and not allowed for a ProxyBackend (which names its own)"
                ),
                format!("{r}.filters[2].requestMirror.percent | must be from 0 to 100, got 101"),
                format!(
                    "{r}.backendRefs[0].port | port is required for a Service, and not allowed \
                     for a ProxyBackend (which names its own)"
                ),
                format!("{r}.backendRefs[1].weight | must be from 0 to 1000000, got 1000001"),
            ]
        );
    }
}
