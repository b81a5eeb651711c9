//! What a route rule does to requests and responses besides routing them: the Gateway API
//! core filters, with their wire form and validation. The data plane runs them in the fixed
//! order of `novaedge-filters`, whatever order the source object listed them in.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

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
    pub mirrors: Vec<RequestMirror>,
    pub cors: Option<Cors>,
    pub ip_filter: Option<IpFilter>,
    pub jwt: Option<JwtAuthentication>,
    pub rate_limit: Option<RateLimit>,
    pub timeouts: Timeouts,
    pub retry: Option<RetryPolicy>,
    /// Largest request body accepted, in bytes; a larger one is answered `413`. `None`: the
    /// data plane's own limit. Not a filter the request passes through: the proxy holds the
    /// body to it, before the filters run when the body's length is declared.
    pub max_request_body_bytes: Option<u64>,
}

/// Gateway API `HTTPRequestMirrorFilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMirror {
    /// A backend of the snapshot.
    pub backend: String,
    /// Share of requests mirrored, in millionths.
    pub fraction_ppm: u32,
}

/// Gateway API `HTTPCORSFilter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: Duration,
}

/// Allow and deny by CIDR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpFilter {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// 0: the connection's peer is the client.
    pub xff_trusted_hops: u32,
}

/// JWT authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthentication {
    pub keys: JwtKeys,
    /// For an `https://` URL: the CA certificates (PEM) that verify the server. Empty: the
    /// public web PKI roots.
    pub jwks_ca_pem: String,
    pub refresh: Duration,
    pub max_stale: Duration,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    /// Empty: every supported algorithm.
    pub algorithms: Vec<String>,
    pub clock_skew: Duration,
    pub required_claims: Vec<String>,
    /// Empty: `Authorization: Bearer`.
    pub locations: Vec<TokenLocation>,
    /// `(claim, header)`.
    pub forward_claims: Vec<(String, String)>,
    pub remove_token: bool,
    pub allow_missing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeys {
    Inline(String),
    File(String),
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    AuthorizationBearer,
    Header {
        name: String,
        prefix: Option<String>,
    },
    Cookie(String),
    QueryParam(String),
}

/// A per-key rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub period: Duration,
    pub burst: u32,
    pub key: RateLimitKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    /// IPv6 clients grouped by this prefix length.
    ClientIp {
        ipv6_prefix: u8,
    },
    Header(String),
    JwtClaim(String),
    Global,
}

/// Gateway API `HTTPRouteTimeouts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub request: Option<Duration>,
    pub backend_request: Option<Duration>,
}

/// Retries of requests that reached an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub statuses: Vec<u16>,
    pub on_5xx: bool,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub grpc_codes: Vec<u32>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget_percent: u32,
    pub budget_min_per_second: u32,
    pub extra_methods: Vec<String>,
    pub max_buffered_body_bytes: u64,
}

impl RetryPolicy {
    /// `attempts` tries on connect failures, resets and 503, with the defaults for the rest.
    pub fn new(attempts: u32) -> Self {
        Self {
            attempts,
            statuses: vec![503],
            on_5xx: false,
            on_connect_failure: true,
            on_reset: true,
            grpc_codes: Vec::new(),
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_percent: 20,
            budget_min_per_second: 3,
            extra_methods: Vec::new(),
            max_buffered_body_bytes: 64 * 1024,
        }
    }
}

impl RouteFilters {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether no filter runs: what is set, if anything, are limits the proxy applies itself
    /// (the request body limit), which need no filter stack.
    pub fn runs_nothing(&self) -> bool {
        let Self {
            request_headers,
            response_headers,
            url_rewrite,
            redirect,
            mirrors,
            cors,
            ip_filter,
            jwt,
            rate_limit,
            timeouts,
            retry,
            max_request_body_bytes: _,
        } = self;
        request_headers.is_none()
            && response_headers.is_none()
            && url_rewrite.is_none()
            && redirect.is_none()
            && mirrors.is_empty()
            && cors.is_none()
            && ip_filter.is_none()
            && jwt.is_none()
            && rate_limit.is_none()
            && *timeouts == Timeouts::default()
            && retry.is_none()
    }
}

// === impl SharedFilters ===

/// A rule's [`RouteFilters`], held once: a rule without filters holds none, and clones of a
/// rule share them.
///
/// `RouteFilters` keeps every filter kind inline (nearly a KiB), most rules have no filters, and
/// a table of ten thousand routes has tens of thousands of rules, each copied on its way from
/// translation to the data plane. Reads go through `Deref` (an empty rule reads as
/// `RouteFilters::default()`); writes through `DerefMut` copy the filters first if they are
/// shared. Equality, `Debug` and conversions are those of the `RouteFilters` inside.
#[derive(Clone, Default)]
pub struct SharedFilters(Option<Arc<RouteFilters>>);

/// What a rule without filters reads as.
static NO_FILTERS: LazyLock<RouteFilters> = LazyLock::new(RouteFilters::default);

impl SharedFilters {
    /// The filters, to be changed or kept (the shared copy is cloned if other rules hold it).
    pub fn into_inner(self) -> RouteFilters {
        self.0.map(Arc::unwrap_or_clone).unwrap_or_default()
    }
}

impl From<RouteFilters> for SharedFilters {
    fn from(filters: RouteFilters) -> Self {
        Self((!filters.is_empty()).then(|| Arc::new(filters)))
    }
}

impl std::ops::Deref for SharedFilters {
    type Target = RouteFilters;

    fn deref(&self) -> &RouteFilters {
        self.0.as_deref().unwrap_or(&NO_FILTERS)
    }
}

impl std::ops::DerefMut for SharedFilters {
    fn deref_mut(&mut self) -> &mut RouteFilters {
        Arc::make_mut(self.0.get_or_insert_with(Default::default))
    }
}

impl PartialEq for SharedFilters {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for SharedFilters {}

impl PartialEq<RouteFilters> for SharedFilters {
    fn eq(&self, other: &RouteFilters) -> bool {
        **self == *other
    }
}

impl std::fmt::Debug for SharedFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
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
            Some(Filter::RequestMirror(m)) => filters.mirrors.push(RequestMirror {
                backend: m.backend,
                fraction_ppm: if m.fraction_ppm == 0 {
                    1_000_000
                } else {
                    m.fraction_ppm
                },
            }),
            Some(Filter::Cors(c)) => {
                let cors = Cors {
                    allow_origins: c.allow_origins,
                    allow_methods: c.allow_methods,
                    allow_headers: c.allow_headers,
                    expose_headers: c.expose_headers,
                    allow_credentials: c.allow_credentials,
                    max_age: Duration::from_secs(if c.max_age_seconds == 0 {
                        5
                    } else {
                        c.max_age_seconds
                    }),
                };
                if filters.cors.replace(cors).is_some() {
                    twice(errors, "cors");
                }
            }
            Some(Filter::IpFilter(f)) => {
                let ip = IpFilter {
                    allow: f.allow,
                    deny: f.deny,
                    xff_trusted_hops: f.xff_trusted_hops,
                };
                if filters.ip_filter.replace(ip).is_some() {
                    twice(errors, "ip_filter");
                }
            }
            Some(Filter::Jwt(j)) => {
                let jwt = jwt_from_wire(j, &mut |f, m| {
                    errors.push(FieldError::new(object, format!("{field}[{i}].jwt.{f}"), m))
                });
                if filters.jwt.replace(jwt).is_some() {
                    twice(errors, "jwt");
                }
            }
            Some(Filter::RateLimit(r)) => {
                use proto::rate_limit::Key;
                let key = match r.key {
                    None => RateLimitKey::ClientIp { ipv6_prefix: 64 },
                    Some(Key::ClientIpV6Prefix(p)) => RateLimitKey::ClientIp {
                        ipv6_prefix: match p {
                            0 => 64,
                            p => u8::try_from(p).unwrap_or(u8::MAX),
                        },
                    },
                    Some(Key::Header(h)) => RateLimitKey::Header(h),
                    Some(Key::JwtClaim(c)) => RateLimitKey::JwtClaim(c),
                    Some(Key::Global(_)) => RateLimitKey::Global,
                };
                let limit = RateLimit {
                    requests: r.requests,
                    period: Duration::from_millis(r.period_ms),
                    burst: if r.burst == 0 { r.requests } else { r.burst },
                    key,
                };
                if filters.rate_limit.replace(limit).is_some() {
                    twice(errors, "rate_limit");
                }
            }
        }
    }
    filters
}

fn ms(value: u64) -> Option<Duration> {
    (value != 0).then(|| Duration::from_millis(value))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads a rule's timeouts and retry policy (Route rule fields of their own on the wire).
pub(crate) fn timeouts_and_retry_from_wire(
    filters: &mut RouteFilters,
    timeouts: Option<proto::Timeouts>,
    retry: Option<proto::RetryPolicy>,
) {
    if let Some(t) = timeouts {
        filters.timeouts = Timeouts {
            request: ms(t.request_ms),
            backend_request: ms(t.backend_request_ms),
        };
    }
    filters.retry = retry.map(|r| {
        let defaults = RetryPolicy::new(r.attempts);
        let base = ms(r.backoff_base_ms).unwrap_or(defaults.backoff_base);
        RetryPolicy {
            attempts: r.attempts,
            statuses: r
                .statuses
                .into_iter()
                .map(|s| u16::try_from(s).unwrap_or(u16::MAX))
                .collect(),
            on_5xx: r.on_5xx,
            on_connect_failure: r.on_connect_failure,
            on_reset: r.on_reset,
            grpc_codes: r.grpc_codes,
            backoff_base: base,
            backoff_max: ms(r.backoff_max_ms).unwrap_or(base * 10),
            budget_percent: if r.budget_percent == 0 {
                defaults.budget_percent
            } else {
                r.budget_percent
            },
            budget_min_per_second: if r.budget_min_per_second == 0 {
                defaults.budget_min_per_second
            } else {
                r.budget_min_per_second
            },
            extra_methods: r.extra_methods,
            max_buffered_body_bytes: if r.max_buffered_body_bytes == 0 {
                defaults.max_buffered_body_bytes
            } else {
                r.max_buffered_body_bytes
            },
        }
    });
}

pub(crate) fn timeouts_to_wire(filters: &RouteFilters) -> Option<proto::Timeouts> {
    let t = filters.timeouts;
    (t != Timeouts::default()).then(|| proto::Timeouts {
        request_ms: t.request.map_or(0, millis),
        backend_request_ms: t.backend_request.map_or(0, millis),
    })
}

pub(crate) fn retry_to_wire(filters: &RouteFilters) -> Option<proto::RetryPolicy> {
    filters.retry.as_ref().map(|r| proto::RetryPolicy {
        attempts: r.attempts,
        statuses: r.statuses.iter().map(|&s| s.into()).collect(),
        on_5xx: r.on_5xx,
        on_connect_failure: r.on_connect_failure,
        on_reset: r.on_reset,
        grpc_codes: r.grpc_codes.clone(),
        backoff_base_ms: millis(r.backoff_base),
        backoff_max_ms: millis(r.backoff_max),
        budget_percent: r.budget_percent,
        budget_min_per_second: r.budget_min_per_second,
        extra_methods: r.extra_methods.clone(),
        max_buffered_body_bytes: r.max_buffered_body_bytes,
    })
}

fn jwt_from_wire(
    j: proto::JwtAuthentication,
    error: &mut dyn FnMut(&str, String),
) -> JwtAuthentication {
    use proto::jwt_authentication::Keys;
    use proto::token_location::Location;
    let keys = match j.keys {
        Some(Keys::JwksInline(s)) => JwtKeys::Inline(s),
        Some(Keys::JwksFile(s)) => JwtKeys::File(s),
        Some(Keys::JwksUrl(s)) => JwtKeys::Url(s),
        None => {
            error(
                "keys",
                "say where the keys are: jwks_inline, jwks_file or jwks_url".into(),
            );
            JwtKeys::Inline(String::new())
        }
    };
    JwtAuthentication {
        keys,
        jwks_ca_pem: j.jwks_ca_pem,
        refresh: ms(j.jwks_refresh_ms).unwrap_or(Duration::from_secs(600)),
        max_stale: ms(j.jwks_max_stale_ms).unwrap_or(Duration::from_secs(3600)),
        issuers: j.issuers,
        audiences: j.audiences,
        algorithms: j.algorithms,
        clock_skew: j
            .clock_skew_ms
            .map_or(Duration::from_secs(60), Duration::from_millis),
        required_claims: j.required_claims,
        locations: j
            .locations
            .into_iter()
            .filter_map(|l| match l.location? {
                Location::AuthorizationBearer(_) => Some(TokenLocation::AuthorizationBearer),
                Location::Header(h) => Some(TokenLocation::Header {
                    name: h.name,
                    prefix: non_empty(h.prefix),
                }),
                Location::Cookie(c) => Some(TokenLocation::Cookie(c)),
                Location::QueryParam(q) => Some(TokenLocation::QueryParam(q)),
            })
            .collect(),
        forward_claims: j
            .forward_claims
            .into_iter()
            .map(|c| (c.claim, c.header))
            .collect(),
        remove_token: j.remove_token,
        allow_missing: j.allow_missing,
    }
}

fn jwt_to_wire(j: &JwtAuthentication) -> proto::JwtAuthentication {
    use proto::jwt_authentication::Keys;
    use proto::token_location::Location;
    proto::JwtAuthentication {
        keys: Some(match &j.keys {
            JwtKeys::Inline(s) => Keys::JwksInline(s.clone()),
            JwtKeys::File(s) => Keys::JwksFile(s.clone()),
            JwtKeys::Url(s) => Keys::JwksUrl(s.clone()),
        }),
        jwks_refresh_ms: millis(j.refresh),
        jwks_max_stale_ms: millis(j.max_stale),
        jwks_ca_pem: j.jwks_ca_pem.clone(),
        issuers: j.issuers.clone(),
        audiences: j.audiences.clone(),
        algorithms: j.algorithms.clone(),
        clock_skew_ms: Some(millis(j.clock_skew)),
        required_claims: j.required_claims.clone(),
        locations: j
            .locations
            .iter()
            .map(|l| proto::TokenLocation {
                location: Some(match l {
                    TokenLocation::AuthorizationBearer => Location::AuthorizationBearer(true),
                    TokenLocation::Header { name, prefix } => {
                        Location::Header(proto::HeaderToken {
                            name: name.clone(),
                            prefix: prefix.clone().unwrap_or_default(),
                        })
                    }
                    TokenLocation::Cookie(c) => Location::Cookie(c.clone()),
                    TokenLocation::QueryParam(q) => Location::QueryParam(q.clone()),
                }),
            })
            .collect(),
        forward_claims: j
            .forward_claims
            .iter()
            .map(|(claim, header)| proto::ClaimToHeader {
                claim: claim.clone(),
                header: header.clone(),
            })
            .collect(),
        remove_token: j.remove_token,
        allow_missing: j.allow_missing,
    }
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
    for m in &filters.mirrors {
        wire.push(Filter::RequestMirror(proto::RequestMirror {
            backend: m.backend.clone(),
            fraction_ppm: m.fraction_ppm,
        }));
    }
    if let Some(c) = &filters.cors {
        wire.push(Filter::Cors(proto::Cors {
            allow_origins: c.allow_origins.clone(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            allow_credentials: c.allow_credentials,
            max_age_seconds: c.max_age.as_secs(),
        }));
    }
    if let Some(f) = &filters.ip_filter {
        wire.push(Filter::IpFilter(proto::IpFilter {
            allow: f.allow.clone(),
            deny: f.deny.clone(),
            xff_trusted_hops: f.xff_trusted_hops,
        }));
    }
    if let Some(j) = &filters.jwt {
        wire.push(Filter::Jwt(jwt_to_wire(j)));
    }
    if let Some(r) = &filters.rate_limit {
        use proto::rate_limit::Key;
        wire.push(Filter::RateLimit(proto::RateLimit {
            requests: r.requests,
            period_ms: millis(r.period),
            burst: r.burst,
            key: Some(match &r.key {
                RateLimitKey::ClientIp { ipv6_prefix } => {
                    Key::ClientIpV6Prefix((*ipv6_prefix).into())
                }
                RateLimitKey::Header(h) => Key::Header(h.clone()),
                RateLimitKey::JwtClaim(c) => Key::JwtClaim(c.clone()),
                RateLimitKey::Global => Key::Global(true),
            }),
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
    backends: &HashSet<&str>,
    errors: &mut Vec<FieldError>,
) {
    validate_policies(filters, object, field, backends, errors);
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

/// An address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.1`).
pub fn check_cidr(value: &str) -> Result<(), String> {
    let (addr, len) = match value.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (value, None),
    };
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{value:?} is not an IP address or CIDR block"))?;
    if let Some(len) = len {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(len) if len <= max => {}
            _ => return Err(format!("{value:?}: the prefix length must be 0 to {max}")),
        }
    }
    Ok(())
}

/// A CORS origin: `*`, `scheme://host[:port]`, or `scheme://*.domain[:port]`.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let bad = || format!("{origin:?} is not *, scheme://host[:port] or scheme://*.domain[:port]");
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(bad());
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', '*', '@']) {
        return Err(bad());
    }
    http::uri::Authority::try_from(host).map_err(|_| bad())?;
    Ok(())
}

/// The JWT algorithms the data plane verifies.
pub const JWT_ALGORITHMS: [&str; 12] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512",
];

fn header_name(value: &str) -> bool {
    HeaderName::from_bytes(value.as_bytes()).is_ok()
}

fn validate_policies(
    filters: &RouteFilters,
    object: &str,
    field: &str,
    backends: &HashSet<&str>,
    errors: &mut Vec<FieldError>,
) {
    let mut error = |f: String, message: String| {
        errors.push(FieldError::new(object, format!("{field}.{f}"), message))
    };
    const DAY: Duration = Duration::from_secs(86_400);
    for (i, m) in filters.mirrors.iter().enumerate() {
        if !backends.contains(m.backend.as_str()) {
            error(
                format!("filters.request_mirror[{i}].backend"),
                format!("no backend named {:?}", m.backend),
            );
        }
        if m.fraction_ppm == 0 || m.fraction_ppm > 1_000_000 {
            error(
                format!("filters.request_mirror[{i}].fraction_ppm"),
                format!("must be between 1 and 1000000, got {}", m.fraction_ppm),
            );
        }
    }
    if let Some(c) = &filters.cors {
        for (i, o) in c.allow_origins.iter().enumerate() {
            if let Err(why) = check_origin(o) {
                error(format!("filters.cors.allow_origins[{i}]"), why);
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if m != "*" && http::Method::from_bytes(m.as_bytes()).is_err() {
                error(
                    format!("filters.cors.allow_methods[{i}]"),
                    format!("{m:?} is not a method"),
                );
            }
        }
        for (list, names) in [
            ("allow_headers", &c.allow_headers),
            ("expose_headers", &c.expose_headers),
        ] {
            for (i, h) in names.iter().enumerate() {
                if h != "*" && !header_name(h) {
                    error(
                        format!("filters.cors.{list}[{i}]"),
                        format!("{h:?} is not a header name"),
                    );
                }
            }
        }
        if c.max_age > DAY {
            error(
                "filters.cors.max_age".into(),
                "must be at most a day".into(),
            );
        }
    }
    if let Some(f) = &filters.ip_filter {
        for (list, cidrs) in [("allow", &f.allow), ("deny", &f.deny)] {
            for (i, c) in cidrs.iter().enumerate() {
                if let Err(why) = check_cidr(c) {
                    error(format!("filters.ip_filter.{list}[{i}]"), why);
                }
            }
        }
        if f.allow.is_empty() && f.deny.is_empty() {
            error(
                "filters.ip_filter".into(),
                "allows and denies nothing: give allow or deny".into(),
            );
        }
    }
    if let Some(j) = &filters.jwt {
        match &j.keys {
            JwtKeys::Inline(s) | JwtKeys::File(s) if s.is_empty() => {
                error("filters.jwt.keys".into(), "must not be empty".into())
            }
            JwtKeys::Url(u)
                if !(u.starts_with("http://") || u.starts_with("https://"))
                    || u.parse::<http::Uri>().is_err() =>
            {
                error(
                    "filters.jwt.keys.jwks_url".into(),
                    format!("{u:?}: not an http:// or https:// URL"),
                )
            }
            _ => {}
        }
        if !j.jwks_ca_pem.is_empty() {
            let https = matches!(&j.keys, JwtKeys::Url(u) if u.starts_with("https://"));
            if !https {
                error(
                    "filters.jwt.jwks_ca_pem".into(),
                    "is only used with an https:// jwks_url".into(),
                );
            } else if !j.jwks_ca_pem.contains("-----BEGIN CERTIFICATE-----") {
                error(
                    "filters.jwt.jwks_ca_pem".into(),
                    "holds no PEM CERTIFICATE block".into(),
                );
            }
        }
        for (i, a) in j.algorithms.iter().enumerate() {
            if !JWT_ALGORITHMS.contains(&a.as_str()) {
                error(
                    format!("filters.jwt.algorithms[{i}]"),
                    format!("{a:?} is not one of {}", JWT_ALGORITHMS.join(", ")),
                );
            }
        }
        if j.refresh < Duration::from_secs(1) || j.refresh > DAY {
            error(
                "filters.jwt.jwks_refresh".into(),
                "must be between 1s and 24h".into(),
            );
        }
        if j.max_stale > 7 * DAY {
            error(
                "filters.jwt.jwks_max_stale".into(),
                "must be at most 7 days".into(),
            );
        }
        if j.clock_skew > Duration::from_secs(3600) {
            error("filters.jwt.clock_skew".into(), "must be at most 1h".into());
        }
        for (i, l) in j.locations.iter().enumerate() {
            let ok = match l {
                TokenLocation::AuthorizationBearer => true,
                TokenLocation::Header { name, .. } => header_name(name),
                TokenLocation::Cookie(n) | TokenLocation::QueryParam(n) => !n.is_empty(),
            };
            if !ok {
                error(
                    format!("filters.jwt.locations[{i}]"),
                    "a header needs a valid name, a cookie or query parameter a non-empty one"
                        .into(),
                );
            }
        }
        for (i, (claim, header)) in j.forward_claims.iter().enumerate() {
            if claim.is_empty() {
                error(
                    format!("filters.jwt.forward_claims[{i}].claim"),
                    "must not be empty".into(),
                );
            }
            if !header_name(header) {
                error(
                    format!("filters.jwt.forward_claims[{i}].header"),
                    format!("{header:?} is not a header name"),
                );
            }
        }
    }
    if let Some(r) = &filters.rate_limit {
        if r.requests == 0 {
            error(
                "filters.rate_limit.requests".into(),
                "must be at least 1".into(),
            );
        }
        if r.burst == 0 {
            error(
                "filters.rate_limit.burst".into(),
                "must be at least 1".into(),
            );
        }
        if r.period < Duration::from_millis(1) || r.period > DAY {
            error(
                "filters.rate_limit.period".into(),
                "must be between 1ms and 24h".into(),
            );
        }
        match &r.key {
            RateLimitKey::ClientIp { ipv6_prefix } if *ipv6_prefix > 128 => error(
                "filters.rate_limit.client_ip_v6_prefix".into(),
                format!("must be at most 128, got {ipv6_prefix}"),
            ),
            RateLimitKey::Header(h) if !header_name(h) => error(
                "filters.rate_limit.header".into(),
                format!("{h:?} is not a header name"),
            ),
            RateLimitKey::JwtClaim(c) if c.is_empty() => error(
                "filters.rate_limit.jwt_claim".into(),
                "must not be empty".into(),
            ),
            RateLimitKey::JwtClaim(_) if filters.jwt.is_none() => error(
                "filters.rate_limit.jwt_claim".into(),
                "keys on a JWT claim, but the rule has no JWT authentication".into(),
            ),
            _ => {}
        }
    }
    let t = filters.timeouts;
    for (name, d) in [
        ("request", t.request),
        ("backend_request", t.backend_request),
    ] {
        if let Some(d) = d
            && (d < Duration::from_millis(1) || d > DAY)
        {
            error(
                format!("timeouts.{name}"),
                "must be between 1ms and 24h".into(),
            );
        }
    }
    if let (Some(request), Some(backend)) = (t.request, t.backend_request)
        && backend > request
    {
        error(
            "timeouts.backend_request".into(),
            format!("must not exceed timeouts.request ({backend:?} > {request:?})"),
        );
    }
    if let Some(r) = &filters.retry {
        if !(2..=10).contains(&r.attempts) {
            error(
                "retry.attempts".into(),
                format!(
                    "must be between 2 and 10 (tries in all), got {}",
                    r.attempts
                ),
            );
        }
        for (i, s) in r.statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                error(
                    format!("retry.statuses[{i}]"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
        for (i, c) in r.grpc_codes.iter().enumerate() {
            if *c > 16 {
                error(
                    format!("retry.grpc_codes[{i}]"),
                    format!("{c} is not a gRPC status code"),
                );
            }
        }
        for (i, m) in r.extra_methods.iter().enumerate() {
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                error(
                    format!("retry.extra_methods[{i}]"),
                    format!("{m:?} is not a method"),
                );
            }
        }
        if r.backoff_base.is_zero() || r.backoff_max < r.backoff_base || r.backoff_max > DAY {
            error(
                "retry.backoff".into(),
                "base must be above 0 and max between base and 24h".into(),
            );
        }
        if r.budget_percent > 1000 {
            error("retry.budget_percent".into(), "must be at most 1000".into());
        }
        if r.max_buffered_body_bytes > 64 * 1024 * 1024 {
            error(
                "retry.max_buffered_body_bytes".into(),
                "must be at most 64 MiB".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_filters_hold_nothing_when_empty_and_copy_on_write() {
        let none = SharedFilters::default();
        assert!(none.0.is_none());
        assert_eq!(*none, RouteFilters::default());
        assert!(SharedFilters::from(RouteFilters::default()).0.is_none());

        let some = SharedFilters::from(sample());
        let mut copy = some.clone();
        assert!(Arc::ptr_eq(
            some.0.as_ref().expect("filters"),
            copy.0.as_ref().expect("filters")
        ));
        copy.timeouts.request = Some(Duration::from_secs(1));
        assert_eq!(*some, sample(), "the original is not changed");
        assert_ne!(some, copy);
        assert_eq!(
            copy.clone().into_inner().timeouts.request,
            Some(Duration::from_secs(1))
        );

        // Equality is the filters', whether or not they are held.
        let mut emptied = SharedFilters::from(sample());
        *emptied = RouteFilters::default();
        assert!(emptied.0.is_some());
        assert_eq!(emptied, none);
        assert_eq!(
            format!("{emptied:?}"),
            format!("{:?}", RouteFilters::default())
        );
    }

    fn check(filters: &RouteFilters, prefix_matches: bool) -> Vec<String> {
        let mut errors = Vec::new();
        validate(
            filters,
            "route",
            "rules[0]",
            prefix_matches,
            &HashSet::from(["app"]),
            &mut errors,
        );
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
            ..RouteFilters::default()
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
            ..RouteFilters::default()
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

    fn policies() -> RouteFilters {
        RouteFilters {
            mirrors: vec![RequestMirror {
                backend: "app".into(),
                fraction_ppm: 250_000,
            }],
            cors: Some(Cors {
                allow_origins: vec![
                    "https://*.example.com".into(),
                    "http://localhost:3000".into(),
                ],
                allow_methods: vec!["GET".into(), "POST".into()],
                allow_headers: vec!["x-token".into()],
                expose_headers: vec![],
                allow_credentials: true,
                max_age: Duration::from_secs(600),
            }),
            ip_filter: Some(IpFilter {
                allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
                deny: vec!["10.1.2.3".into()],
                xff_trusted_hops: 1,
            }),
            jwt: Some(JwtAuthentication {
                keys: JwtKeys::Url("https://127.0.0.1:9000/jwks.json".into()),
                jwks_ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                    .into(),
                refresh: Duration::from_secs(300),
                max_stale: Duration::from_secs(3600),
                issuers: vec!["https://issuer.example".into()],
                audiences: vec!["api".into()],
                algorithms: vec!["RS256".into(), "ES256".into()],
                clock_skew: Duration::from_secs(30),
                required_claims: vec!["exp".into()],
                locations: vec![
                    TokenLocation::AuthorizationBearer,
                    TokenLocation::Header {
                        name: "x-jwt".into(),
                        prefix: Some("Token ".into()),
                    },
                    TokenLocation::Cookie("session".into()),
                ],
                forward_claims: vec![("sub".into(), "x-user".into())],
                remove_token: true,
                allow_missing: false,
            }),
            rate_limit: Some(RateLimit {
                requests: 100,
                period: Duration::from_secs(1),
                burst: 20,
                key: RateLimitKey::JwtClaim("sub".into()),
            }),
            timeouts: Timeouts {
                request: Some(Duration::from_secs(10)),
                backend_request: Some(Duration::from_secs(2)),
            },
            retry: Some(RetryPolicy {
                grpc_codes: vec![14],
                ..RetryPolicy::new(3)
            }),
            ..RouteFilters::default()
        }
    }

    #[test]
    fn policies_round_trip_and_pass() {
        let filters = policies();
        let mut errors = Vec::new();
        let mut back = from_wire("route", "f", to_wire(&filters), &mut errors);
        timeouts_and_retry_from_wire(
            &mut back,
            timeouts_to_wire(&filters),
            retry_to_wire(&filters),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(back, filters);
        assert!(
            check(&filters, true).is_empty(),
            "{:?}",
            check(&filters, true)
        );
    }

    #[test]
    fn policy_problems_name_their_field() {
        let mut filters = policies();
        filters.mirrors[0].backend = "nope".into();
        filters
            .cors
            .as_mut()
            .unwrap()
            .allow_origins
            .push("example.com".into());
        filters
            .ip_filter
            .as_mut()
            .unwrap()
            .deny
            .push("10.0.0.0/33".into());
        let jwt = filters.jwt.as_mut().unwrap();
        jwt.keys = JwtKeys::Url("ftp://issuer.example/jwks".into());
        jwt.algorithms.push("none".into());
        filters.rate_limit.as_mut().unwrap().requests = 0;
        filters.timeouts.backend_request = Some(Duration::from_secs(20));
        filters.retry.as_mut().unwrap().attempts = 1;
        assert_eq!(
            check(&filters, true),
            [
                "rules[0].filters.request_mirror[0].backend",
                "rules[0].filters.cors.allow_origins[2]",
                "rules[0].filters.ip_filter.deny[1]",
                "rules[0].filters.jwt.keys.jwks_url",
                "rules[0].filters.jwt.jwks_ca_pem",
                "rules[0].filters.jwt.algorithms[2]",
                "rules[0].filters.rate_limit.requests",
                "rules[0].timeouts.backend_request",
                "rules[0].retry.attempts",
            ]
        );
        assert!(check_cidr("192.0.2.1").is_ok());
        assert!(check_cidr("::1/128").is_ok());
        assert!(check_cidr("::1/129").is_err());
        assert!(check_cidr("not-an-ip").is_err());
    }
}
