//! `ProxyPolicy`: JWT authentication, rate limits, CORS, IP filters and retries for the rules of
//! an HTTPRoute or a GRPCRoute, or of every route attached to a Gateway (Gateway API policy
//! attachment, GEP-713, with a direct `targetRef`).
//!
//! ```yaml
//! apiVersion: novaedge.io/v1alpha1
//! kind: ProxyPolicy
//! metadata: {name: shop-auth, namespace: shop}
//! spec:
//!   targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop}
//!   jwt:
//!     jwks: {url: "http://auth.shop.svc/jwks.json"}
//!     issuers: ["https://auth.example.com"]
//!   rateLimit: {requests: 100, period: 1s, key: {jwtClaim: sub}}
//! ```
//!
//! How policies combine, for each rule of each route in the snapshot:
//!
//! - Each section (`jwt`, `rateLimit`, `cors`, `ipFilter`, `retry`, `requestBody`) is chosen on
//!   its own: a policy that targets the route beats one that targets a Gateway the route is
//!   attached through (the more specific attachment overrides the default it inherits).
//! - Two policies that target the same object and set the same section conflict. As Gateway API
//!   says, the oldest (`metadata.creationTimestamp`, then `namespace/name` in alphabetical order)
//!   wins; the other gets a warning that names both. Objects read from files usually have no
//!   timestamp, so there the name decides (a policy without one counts as older than any with
//!   one). A route attached through several Gateways that share a port gets, per section, the
//!   oldest of their policies, with a warning for the others.
//! - A policy with an error applies nowhere: the translation reports the error (which stops the
//!   snapshot from being served) and leaves the policy out, so that the other diagnostics are
//!   about what the user wrote rather than a consequence of the error.
//! - A policy whose target does not exist is a warning, not an error: the target may simply not
//!   have been created yet.
//!
//! The `*Spec` types are the user-facing form, in the style of [`crate::health`]: camelCase,
//! unknown fields refused, durations in Gateway API syntax ([`GatewayDuration`]), every optional
//! field documented with its default. "Exactly one of" choices are structs of optional fields
//! checked on conversion rather than Rust enums, so that the CRD's OpenAPI schema (generated from
//! these types, see [`crate::crd`]) stays a plain structural schema; the schema states those
//! choices as CEL rules. Each section converts into its snapshot
//! type, checking every rule the snapshot validator checks so that a mistake is reported against
//! the field the user wrote (`spec.rateLimit.burst`), never as an internal snapshot error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use kube::CustomResource;
use novaedge_snapshot::{
    Cors, IpFilter, JWT_ALGORITHMS, JwtAuthentication, JwtKeys, RateLimit, RateLimitKey,
    RetryPolicy, Route, RouteFilters, TokenLocation, check_cidr,
};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::diagnostics::Diagnostic;
use crate::health::{GatewayDuration, SpecError};
use crate::objects::namespace_of;

/// The API version `ProxyPolicy` objects are read with.
pub const PROXY_POLICY_API_VERSION: &str = "novaedge.io/v1alpha1";

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const DAY: Duration = Duration::from_secs(86_400);

// === spec types ===

/// What a policy attaches to, and the sections it sets. Every section is optional; a section
/// that is left out is inherited (from a Gateway's policy, for a route) or off.
//
// The derive makes the `novaedge.io/v1alpha1` `ProxyPolicy` object, with a `status`
// (`crate::crd::Status`). The envelope is read like any Kubernetes object: `apiVersion` and
// `kind` are checked by the loader and other top-level fields are ignored; the `spec` refuses
// unknown fields. Its schema states the "exactly one of" choices as CEL rules; ranges are
// checked by the conversion, which says what the range is. (A `//` comment: doc comments
// become the schema's descriptions.)
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "novaedge.io",
    version = "v1alpha1",
    kind = "ProxyPolicy",
    namespaced,
    status = "crate::crd::Status",
    derive = "PartialEq",
    shortname = "ppol",
    category = "novaedge",
    doc = "JWT authentication, rate limits, CORS, IP filters, retries and request body limits \
           for the rules of an HTTPRoute, or of every route attached to a Gateway.",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPolicySpec {
    /// The HTTPRoute, GRPCRoute or Gateway, in the policy's namespace.
    pub target_ref: PolicyTargetRef,
    /// Requests must carry a valid JSON Web Token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// A token bucket per client, header value, JWT claim, or one for everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Cross-origin resource sharing: preflights answered, response headers added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    /// Allow and deny by client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_filter: Option<IpFilterSpec>,
    /// Retries of requests that failed upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Limits on request bodies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<RequestBodySpec>,
}

/// Gateway API `LocalPolicyTargetReference`: an object in the policy's own namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetRef {
    /// `gateway.networking.k8s.io`.
    pub group: String,
    /// `HTTPRoute`, `GRPCRoute` or `Gateway`.
    pub kind: String,
    /// The object's name.
    pub name: String,
}

/// A settings object with no settings, written `{}` (or left empty: `global:`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = crate::crd::open_empty_object)]
pub struct Empty {}

/// JWT authentication. Without a token (and without `allowMissing`) a request is answered 401;
/// with an invalid one, 401 too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSpec {
    /// Where the verification keys are.
    pub jwks: JwksSpec,
    /// How often keys from `file` or `url` are read again; default 10m, 1s to 24h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<GatewayDuration>,
    /// How long keys are still used when reading them again fails; default 1h, up to 168h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_stale: Option<GatewayDuration>,
    /// Accepted `iss` values; default any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuers: Option<Vec<String>>,
    /// Accepted `aud` values (one must match); default any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// Accepted `alg` values; default every supported one: RS256, RS384, RS512, PS256, PS384,
    /// PS512, ES256, ES384, EdDSA, HS256, HS384 and HS512.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Leeway for `exp` and `nbf`; default 60s, up to 1h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<GatewayDuration>,
    /// Claims a token must carry, e.g. `[exp]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_claims: Option<Vec<String>>,
    /// Where the token is looked for, in order; default `Authorization: Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_from: Option<Vec<TokenSourceSpec>>,
    /// Claims copied into request headers for the backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_claims: Option<Vec<ForwardClaimSpec>>,
    /// Remove the token from the request before forwarding it; default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_token: Option<bool>,
    /// Let requests without a token through (a token that is present must still be valid);
    /// default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_missing: Option<bool>,
}

/// Where a JWKS (RFC 7517) comes from: exactly one of the three.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.inline), has(self.file), has(self.url)].filter(x, x).size() == 1",
    "message": "set exactly one of inline, file and url",
}]))]
pub struct JwksSpec {
    /// The JWKS document itself, as JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A file holding the JWKS, read again every `refresh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An `http://` or `https://` URL serving the JWKS, fetched again every `refresh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For an `https://` url: the CA certificates (PEM) that verify the server, e.g. a
    /// cluster's own identity provider. Without it, the public web PKI roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}

/// One place a token may be: exactly one of the four.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.authorizationBearer), has(self.header), has(self.cookie), \
             has(self.queryParam)].filter(x, x).size() == 1",
    "message": "set exactly one of authorizationBearer, header, cookie and queryParam",
}]))]
pub struct TokenSourceSpec {
    /// `Authorization: Bearer TOKEN` (`authorizationBearer: {}`).
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub authorization_bearer: Option<Empty>,
    /// A request header, optionally after a prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTokenSpec>,
    /// A cookie of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// A query parameter of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_param: Option<String>,
}

/// A token in a request header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTokenSpec {
    /// The header name.
    pub name: String,
    /// Text before the token, e.g. `"Token "`; default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A claim of a verified token sent to the backend as a request header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardClaimSpec {
    /// The claim's name, e.g. `sub`.
    pub claim: String,
    /// The request header it is sent in, replacing any the client sent.
    pub header: String,
}

/// A token bucket: `requests` per `period`, up to `burst` at once. A request over the limit is
/// answered 429 with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests per period; at least 1.
    pub requests: u32,
    /// Default 1s; 1ms to 24h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<GatewayDuration>,
    /// Requests allowed at once; default `requests`, at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// What the buckets are kept per; default `clientIp: {}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKeySpec>,
}

/// What a rate limit counts per: exactly one of the four.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.clientIp), has(self.header), has(self.jwtClaim), has(self.global)]\
             .filter(x, x).size() == 1",
    "message": "set exactly one of clientIp, header, jwtClaim and global",
}]))]
pub struct RateLimitKeySpec {
    /// The client address (after `ipFilter.xffTrustedHops`, when that section is set).
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ip: Option<ClientIpKeySpec>,
    /// The value of this request header (requests without it share one bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// This claim of the verified JWT; the rule needs a `jwt` section (from this policy or
    /// another one that applies to the same rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_claim: Option<String>,
    /// One bucket for every request (`global: {}`).
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub global: Option<Empty>,
}

/// Per client address.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientIpKeySpec {
    /// IPv6 clients share a bucket per prefix of this length; default 64, 1 to 128.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<u32>,
}

/// CORS (as Gateway API's `HTTPCORSFilter`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsSpec {
    /// `*`, `scheme://host[:port]` or `scheme://*.domain[:port]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_origins: Option<Vec<String>>,
    /// Methods, or `*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Vec<String>>,
    /// Request header names, or `*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Vec<String>>,
    /// Response header names the browser may read, or `*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Vec<String>>,
    /// Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight answer; default 5s, whole seconds from 1s to
    /// 24h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<GatewayDuration>,
}

/// Allow and deny by client address. A denied address is refused even when an allow entry
/// covers it; with an allow list, addresses outside it are refused. Refused requests get 403.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpFilterSpec {
    /// Addresses or CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Addresses or CIDR blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
    /// Proxies in front of NovaEdge whose `X-Forwarded-For` entries are trusted; default 0 (the
    /// connection's peer is the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xff_trusted_hops: Option<u32>,
}

/// Retries of requests that failed upstream, with jittered back-off and a retry budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Tries in all, the first included (so `3` is up to two retries): 2 to 10. Note that
    /// Gateway API's `HTTPRouteRetry.attempts` counts retries only.
    pub attempts: u32,
    /// Response statuses that are retried; default `[503]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<u32>>,
    /// Retry every 5xx; default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_5xx: Option<bool>,
    /// Retry when no connection could be made; default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_connect_failure: Option<bool>,
    /// Retry when the upstream reset the connection or stream; default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_reset: Option<bool>,
    /// gRPC status codes that are retried (0-16), e.g. 14 (UNAVAILABLE); default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_codes: Option<Vec<u32>>,
    /// Time between tries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// Retries allowed on top of the requests in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudgetSpec>,
    /// Methods retried besides the idempotent ones (GET, HEAD, OPTIONS, TRACE, PUT, DELETE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_methods: Option<Vec<String>>,
    /// Request bodies up to this many bytes are kept to be sent again; default 65536, at most
    /// 64 MiB. A request with a larger body is not retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_buffered_body: Option<u64>,
}

/// Limits on the bodies of requests. The proxy streams bodies through without buffering them;
/// a request whose `Content-Length` goes past the limit is answered 413 before anything is
/// forwarded, and a body without a declared length that goes past it is cut off and answered
/// 413 (or, if the response has begun, the exchange is reset). Over HTTP/1.1 the connection is
/// then closed, since the rest of the body was left unread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestBodySpec {
    /// Largest body accepted, in bytes (as nginx's `client_max_body_size`, but exact); `0`
    /// allows no body at all.
    pub max_bytes: u64,
}

/// Jittered exponential back-off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackoffSpec {
    /// Default 25ms; above 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<GatewayDuration>,
    /// Default 10 times `base`; from `base` to 24h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<GatewayDuration>,
}

/// Retries may add this percentage to the requests in flight, and at least `minPerSecond`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudgetSpec {
    /// Default 20; 1 to 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// Default 3; at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
}

/// `global:` with nothing after it is YAML null; read it as `global: {}`, which is what was meant.
pub(crate) fn null_is_empty<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

// === conversion ===

/// The value of one section's conversion; its errors are added to `errors` under `name`.
fn section<T>(
    errors: &mut Vec<SpecError>,
    name: &str,
    result: Result<T, Vec<SpecError>>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            errors.extend(e.into_iter().map(|e| SpecError {
                field: if e.field.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}.{}", e.field)
                },
                message: e.message,
            }));
            None
        }
    }
}

/// Collects the errors of one conversion, with field paths relative to the spec.
#[derive(Default)]
struct Errors(Vec<SpecError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// `value` or `default`, checked to be within `min..=max`.
    fn duration(
        &mut self,
        field: &str,
        value: Option<GatewayDuration>,
        default: Duration,
        (min, max): (Duration, Duration),
    ) -> Duration {
        let Some(GatewayDuration(d)) = value else {
            return default;
        };
        if d < min || d > max {
            self.push(
                field,
                format!(
                    "must be between {} and {}, got {}",
                    GatewayDuration(min),
                    GatewayDuration(max),
                    GatewayDuration(d)
                ),
            );
        }
        d
    }

    /// Which of the named options is set; an error unless exactly one is.
    fn exactly_one(&mut self, field: &str, options: &[(&str, bool)], example: &str) {
        let set: Vec<&str> = options
            .iter()
            .filter_map(|&(name, set)| set.then_some(name))
            .collect();
        if set.len() != 1 {
            let names: Vec<&str> = options.iter().map(|&(name, _)| name).collect();
            let got = if set.is_empty() {
                "none".to_owned()
            } else {
                set.join(" and ")
            };
            self.push(
                field,
                format!(
                    "set exactly one of {} (e.g. {example}); got {got}",
                    names.join(", ")
                ),
            );
        }
    }

    /// Every entry of a list is a non-empty string.
    fn non_empty(&mut self, field: &str, list: &[String]) {
        for (i, s) in list.iter().enumerate() {
            if s.is_empty() {
                self.push(format!("{field}[{i}]"), "must not be empty");
            }
        }
    }

    fn header_name(&mut self, field: String, name: &str) {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.push(field, format!("{name:?} is not a valid header name"));
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<SpecError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

impl ProxyPolicySpec {
    /// The sections this policy sets, as snapshot filters (`jwt`, `rate_limit`, `cors`,
    /// `ip_filter`, `retry` and `max_request_body_bytes`; the rest stay empty), with field paths relative to the spec
    /// (`rateLimit.burst`). The target is not looked at: see `PolicyTargetRef::target`.
    ///
    /// A `jwtClaim` rate-limit key is not checked against a `jwt` section here, since the JWT
    /// authentication may come from another policy that applies to the same rules.
    pub fn to_filters(&self) -> Result<RouteFilters, Vec<SpecError>> {
        let mut errors = Vec::new();
        let e = &mut errors;
        let filters = RouteFilters {
            jwt: self
                .jwt
                .as_ref()
                .and_then(|s| section(e, "jwt", s.to_jwt())),
            rate_limit: self
                .rate_limit
                .as_ref()
                .and_then(|s| section(e, "rateLimit", s.to_rate_limit())),
            cors: self
                .cors
                .as_ref()
                .and_then(|s| section(e, "cors", s.to_cors())),
            ip_filter: self
                .ip_filter
                .as_ref()
                .and_then(|s| section(e, "ipFilter", s.to_ip_filter())),
            retry: self
                .retry
                .as_ref()
                .and_then(|s| section(e, "retry", s.to_retry())),
            max_request_body_bytes: self.request_body.as_ref().map(|b| b.max_bytes),
            ..RouteFilters::default()
        };
        if errors.is_empty() {
            Ok(filters)
        } else {
            Err(errors)
        }
    }
}

impl JwtSpec {
    pub fn to_jwt(&self) -> Result<JwtAuthentication, Vec<SpecError>> {
        let mut errors = Errors::default();
        let keys = self.jwks.to_keys(&mut errors);
        let jwks_ca_pem = self.jwks.ca_bundle(&mut errors);
        let algorithms = self.algorithms.clone().unwrap_or_default();
        for (i, a) in algorithms.iter().enumerate() {
            if !JWT_ALGORITHMS.contains(&a.as_str()) {
                errors.push(
                    format!("algorithms[{i}]"),
                    format!("{a:?} is not one of {}", JWT_ALGORITHMS.join(", ")),
                );
            }
        }
        let issuers = self.issuers.clone().unwrap_or_default();
        let audiences = self.audiences.clone().unwrap_or_default();
        let required_claims = self.required_claims.clone().unwrap_or_default();
        errors.non_empty("issuers", &issuers);
        errors.non_empty("audiences", &audiences);
        errors.non_empty("requiredClaims", &required_claims);
        let mut locations = Vec::new();
        for (i, t) in self.token_from.iter().flatten().enumerate() {
            if let Some(location) = t.to_location(&format!("tokenFrom[{i}]"), &mut errors) {
                locations.push(location);
            }
        }
        let mut forward_claims = Vec::new();
        for (i, c) in self.forward_claims.iter().flatten().enumerate() {
            if c.claim.is_empty() {
                errors.push(format!("forwardClaims[{i}].claim"), "must not be empty");
            }
            errors.header_name(format!("forwardClaims[{i}].header"), &c.header);
            forward_claims.push((c.claim.clone(), c.header.clone()));
        }
        let jwt = JwtAuthentication {
            keys,
            jwks_ca_pem,
            refresh: errors.duration(
                "refresh",
                self.refresh,
                Duration::from_secs(600),
                (Duration::from_secs(1), DAY),
            ),
            // 0 would be read back from the wire as the default, so it is refused.
            max_stale: errors.duration(
                "maxStale",
                self.max_stale,
                Duration::from_secs(3600),
                (Duration::from_millis(1), 7 * DAY),
            ),
            issuers,
            audiences,
            algorithms,
            clock_skew: errors.duration(
                "clockSkew",
                self.clock_skew,
                Duration::from_secs(60),
                (Duration::ZERO, Duration::from_secs(3600)),
            ),
            required_claims,
            locations,
            forward_claims,
            remove_token: self.remove_token.unwrap_or(false),
            allow_missing: self.allow_missing.unwrap_or(false),
        };
        errors.finish(jwt)
    }
}

impl JwksSpec {
    /// The CA bundle, checked: only for an `https://` url, and holding a certificate.
    fn ca_bundle(&self, errors: &mut Errors) -> String {
        let Some(pem) = &self.ca_bundle else {
            return String::new();
        };
        if !self.url.as_ref().is_some_and(|u| u.starts_with("https://")) {
            errors.push("jwks.caBundle", "is only used with an https:// url");
        } else if !pem.contains("-----BEGIN CERTIFICATE-----") {
            errors.push(
                "jwks.caBundle",
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            );
        }
        pem.clone()
    }

    fn to_keys(&self, errors: &mut Errors) -> JwtKeys {
        errors.exactly_one(
            "jwks",
            &[
                ("inline", self.inline.is_some()),
                ("file", self.file.is_some()),
                ("url", self.url.is_some()),
            ],
            "url: http://auth.example/jwks.json",
        );
        if let Some(json) = &self.inline {
            // The data plane needs a JSON object with a `keys` array; say so here rather than
            // when the first request comes.
            let is_jwks = serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .is_some_and(|v| v.get("keys").is_some_and(serde_json::Value::is_array));
            if !is_jwks {
                errors.push(
                    "jwks.inline",
                    "is not a JWKS: expected a JSON object with a \"keys\" array",
                );
            }
            JwtKeys::Inline(json.clone())
        } else if let Some(path) = &self.file {
            if path.is_empty() {
                errors.push("jwks.file", "must not be empty");
            }
            JwtKeys::File(path.clone())
        } else if let Some(url) = &self.url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.parse::<http::Uri>().is_err() {
                errors.push(
                    "jwks.url",
                    format!("{url:?}: not an http:// or https:// URL"),
                );
            }
            JwtKeys::Url(url.clone())
        } else {
            JwtKeys::Inline(String::new())
        }
    }
}

impl TokenSourceSpec {
    fn to_location(&self, field: &str, errors: &mut Errors) -> Option<TokenLocation> {
        let before = errors.0.len();
        errors.exactly_one(
            field,
            &[
                ("authorizationBearer", self.authorization_bearer.is_some()),
                ("header", self.header.is_some()),
                ("cookie", self.cookie.is_some()),
                ("queryParam", self.query_param.is_some()),
            ],
            "cookie: session",
        );
        if errors.0.len() > before {
            return None;
        }
        let named = |errors: &mut Errors, kind: &str, name: &str| {
            if name.is_empty() {
                errors.push(format!("{field}.{kind}"), "must not be empty");
            }
            name.to_owned()
        };
        Some(if let Some(h) = &self.header {
            errors.header_name(format!("{field}.header.name"), &h.name);
            TokenLocation::Header {
                name: h.name.clone(),
                prefix: h.prefix.clone().filter(|p| !p.is_empty()),
            }
        } else if let Some(c) = &self.cookie {
            TokenLocation::Cookie(named(errors, "cookie", c))
        } else if let Some(q) = &self.query_param {
            TokenLocation::QueryParam(named(errors, "queryParam", q))
        } else {
            TokenLocation::AuthorizationBearer
        })
    }
}

impl RateLimitSpec {
    pub fn to_rate_limit(&self) -> Result<RateLimit, Vec<SpecError>> {
        let mut errors = Errors::default();
        if self.requests == 0 {
            errors.push("requests", "must be at least 1");
        }
        if self.burst == Some(0) {
            errors.push("burst", "must be at least 1 (left out, it is requests)");
        }
        let key = match &self.key {
            None => RateLimitKey::ClientIp { ipv6_prefix: 64 },
            Some(k) => k.to_key(&mut errors),
        };
        let limit = RateLimit {
            requests: self.requests,
            period: errors.duration(
                "period",
                self.period,
                Duration::from_secs(1),
                (Duration::from_millis(1), DAY),
            ),
            burst: self.burst.unwrap_or(self.requests),
            key,
        };
        errors.finish(limit)
    }
}

impl RateLimitKeySpec {
    fn to_key(&self, errors: &mut Errors) -> RateLimitKey {
        errors.exactly_one(
            "key",
            &[
                ("clientIp", self.client_ip.is_some()),
                ("header", self.header.is_some()),
                ("jwtClaim", self.jwt_claim.is_some()),
                ("global", self.global.is_some()),
            ],
            "header: x-api-key",
        );
        if let Some(h) = &self.header {
            errors.header_name("key.header".into(), h);
            RateLimitKey::Header(h.clone())
        } else if let Some(c) = &self.jwt_claim {
            if c.is_empty() {
                errors.push("key.jwtClaim", "must not be empty");
            }
            RateLimitKey::JwtClaim(c.clone())
        } else if self.global.is_some() {
            RateLimitKey::Global
        } else {
            let prefix = self
                .client_ip
                .as_ref()
                .and_then(|c| c.ipv6_prefix)
                .unwrap_or(64);
            // 0 would be read back from the wire as 64; one bucket for all is `global`.
            let ipv6_prefix = match u8::try_from(prefix) {
                Ok(p @ 1..=128) => p,
                _ => {
                    errors.push(
                        "key.clientIp.ipv6Prefix",
                        format!(
                            "must be from 1 to 128, got {prefix} (for one bucket for everyone, \
                             use global: {{}})"
                        ),
                    );
                    64
                }
            };
            RateLimitKey::ClientIp { ipv6_prefix }
        }
    }
}

impl CorsSpec {
    pub fn to_cors(&self) -> Result<Cors, Vec<SpecError>> {
        let mut errors = Errors::default();
        let allow_origins = self.allow_origins.clone().unwrap_or_default();
        for (i, o) in allow_origins.iter().enumerate() {
            if let Err(why) = check_origin(o) {
                errors.push(format!("allowOrigins[{i}]"), why);
            }
        }
        let allow_methods = self.allow_methods.clone().unwrap_or_default();
        for (i, m) in allow_methods.iter().enumerate() {
            if m != "*" && http::Method::from_bytes(m.as_bytes()).is_err() {
                errors.push(
                    format!("allowMethods[{i}]"),
                    format!("{m:?} is not a method"),
                );
            }
        }
        let allow_headers = self.allow_headers.clone().unwrap_or_default();
        let expose_headers = self.expose_headers.clone().unwrap_or_default();
        for (list, names) in [
            ("allowHeaders", &allow_headers),
            ("exposeHeaders", &expose_headers),
        ] {
            for (i, h) in names.iter().enumerate() {
                if h != "*" {
                    errors.header_name(format!("{list}[{i}]"), h);
                }
            }
        }
        let max_age = errors.duration(
            "maxAge",
            self.max_age,
            Duration::from_secs(5),
            (Duration::from_secs(1), DAY),
        );
        // Access-Control-Max-Age (and the wire) count whole seconds.
        if max_age.subsec_nanos() != 0 {
            errors.push(
                "maxAge",
                format!(
                    "must be whole seconds (Access-Control-Max-Age), got {}",
                    GatewayDuration(max_age)
                ),
            );
        }
        let cors = Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials: self.allow_credentials.unwrap_or(false),
            max_age,
        };
        errors.finish(cors)
    }
}

/// A CORS origin: `*`, `scheme://host[:port]`, or `scheme://*.domain[:port]` (the rule the
/// snapshot validator applies).
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

impl IpFilterSpec {
    pub fn to_ip_filter(&self) -> Result<IpFilter, Vec<SpecError>> {
        let mut errors = Errors::default();
        let allow = self.allow.clone().unwrap_or_default();
        let deny = self.deny.clone().unwrap_or_default();
        for (list, cidrs) in [("allow", &allow), ("deny", &deny)] {
            for (i, c) in cidrs.iter().enumerate() {
                if let Err(why) = check_cidr(c) {
                    errors.push(format!("{list}[{i}]"), why);
                }
            }
        }
        if allow.is_empty() && deny.is_empty() {
            errors.push("", "allows and denies nothing: give allow or deny");
        }
        let filter = IpFilter {
            allow,
            deny,
            xff_trusted_hops: self.xff_trusted_hops.unwrap_or(0),
        };
        errors.finish(filter)
    }
}

impl RetrySpec {
    /// The retry policy, with [`RetryPolicy::new`]'s defaults for what is left out.
    pub fn to_retry(&self) -> Result<RetryPolicy, Vec<SpecError>> {
        let mut errors = Errors::default();
        let d = RetryPolicy::new(self.attempts);
        if !(2..=10).contains(&self.attempts) {
            errors.push(
                "attempts",
                format!(
                    "must be between 2 and 10 (tries in all, the first included), got {}",
                    self.attempts
                ),
            );
        }
        let mut statuses = Vec::new();
        for (i, &s) in self.statuses.iter().flatten().enumerate() {
            match u16::try_from(s) {
                Ok(s @ 100..=599) => statuses.push(s),
                _ => errors.push(
                    format!("statuses[{i}]"),
                    format!("{s} is not an HTTP status (100-599)"),
                ),
            }
        }
        let grpc_codes = self.grpc_codes.clone().unwrap_or_default();
        for (i, &c) in grpc_codes.iter().enumerate() {
            if c > 16 {
                errors.push(
                    format!("grpcCodes[{i}]"),
                    format!("{c} is not a gRPC status code (0-16)"),
                );
            }
        }
        let extra_methods = self.extra_methods.clone().unwrap_or_default();
        for (i, m) in extra_methods.iter().enumerate() {
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                errors.push(
                    format!("extraMethods[{i}]"),
                    format!("{m:?} is not a method"),
                );
            }
        }
        let backoff = self.backoff.clone().unwrap_or_default();
        let backoff_base = errors.duration(
            "backoff.base",
            backoff.base,
            d.backoff_base,
            (Duration::from_millis(1), DAY),
        );
        let backoff_max = errors.duration(
            "backoff.max",
            backoff.max,
            backoff_base * 10,
            (Duration::from_millis(1), DAY),
        );
        if backoff_max < backoff_base {
            errors.push(
                "backoff.max",
                format!(
                    "{} is below backoff.base ({})",
                    GatewayDuration(backoff_max),
                    GatewayDuration(backoff_base)
                ),
            );
        }
        let budget = self.budget.clone().unwrap_or_default();
        // 0 would be read back from the wire as the default; refused rather than changed.
        let budget_percent = budget.percent.unwrap_or(d.budget_percent);
        if !(1..=1000).contains(&budget_percent) {
            errors.push(
                "budget.percent",
                format!("must be from 1 to 1000, got {budget_percent}"),
            );
        }
        let budget_min_per_second = budget.min_per_second.unwrap_or(d.budget_min_per_second);
        if budget_min_per_second == 0 {
            errors.push("budget.minPerSecond", "must be at least 1");
        }
        let max_buffered_body_bytes = self.max_buffered_body.unwrap_or(d.max_buffered_body_bytes);
        if !(1..=64 * 1024 * 1024).contains(&max_buffered_body_bytes) {
            errors.push(
                "maxBufferedBody",
                format!("must be from 1 to 67108864 bytes (64 MiB), got {max_buffered_body_bytes}"),
            );
        }
        let retry = RetryPolicy {
            attempts: self.attempts,
            statuses: if self.statuses.is_some() {
                statuses
            } else {
                d.statuses
            },
            on_5xx: self.on_5xx.unwrap_or(d.on_5xx),
            on_connect_failure: self.on_connect_failure.unwrap_or(d.on_connect_failure),
            on_reset: self.on_reset.unwrap_or(d.on_reset),
            grpc_codes,
            backoff_base,
            backoff_max,
            budget_percent,
            budget_min_per_second,
            extra_methods,
            max_buffered_body_bytes,
        };
        errors.finish(retry)
    }
}

// === attachment ===

type Key = (String, String); // (namespace, name)

/// The object a policy attaches to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Gateway(Key),
    /// An HTTPRoute.
    Route(Key),
    GrpcRoute(Key),
    /// A ProxyRoute; no policy targets one yet, but its rules must not take the policies of an
    /// HTTPRoute of the same name.
    ProxyRoute(Key),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Gateway((ns, name)) => format!("Gateway {ns}/{name}"),
            Target::Route((ns, name)) => format!("HTTPRoute {ns}/{name}"),
            Target::GrpcRoute((ns, name)) => format!("GRPCRoute {ns}/{name}"),
            Target::ProxyRoute((ns, name)) => format!("ProxyRoute {ns}/{name}"),
        }
    }
}

impl PolicyTargetRef {
    /// The object this reference names in `namespace`, or errors (fields relative to the spec).
    fn target(&self, namespace: &str) -> Result<Target, Vec<SpecError>> {
        let mut errors = Errors::default();
        if self.group != GATEWAY_GROUP {
            errors.push(
                "targetRef.group",
                format!(
                    "{:?}: a ProxyPolicy targets {GATEWAY_GROUP} objects",
                    self.group
                ),
            );
        }
        let key = (namespace.to_owned(), self.name.clone());
        let target = match self.kind.as_str() {
            "HTTPRoute" => Target::Route(key),
            "GRPCRoute" => Target::GrpcRoute(key),
            "Gateway" => Target::Gateway(key),
            other => {
                errors.push(
                    "targetRef.kind",
                    format!(
                        "{other:?}: a ProxyPolicy targets an HTTPRoute, a GRPCRoute or a Gateway"
                    ),
                );
                Target::Route(key)
            }
        };
        if self.name.is_empty() {
            errors.push("targetRef.name", "must not be empty");
        }
        errors.finish(target)
    }
}

/// The sections a policy can set, each chosen on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Section {
    Jwt,
    RateLimit,
    Cors,
    IpFilter,
    Retry,
    RequestBody,
}

const SECTIONS: [Section; 6] = [
    Section::Jwt,
    Section::RateLimit,
    Section::Cors,
    Section::IpFilter,
    Section::Retry,
    Section::RequestBody,
];

impl Section {
    /// The field name in the spec.
    fn name(self) -> &'static str {
        match self {
            Section::Jwt => "jwt",
            Section::RateLimit => "rateLimit",
            Section::Cors => "cors",
            Section::IpFilter => "ipFilter",
            Section::Retry => "retry",
            Section::RequestBody => "requestBody",
        }
    }

    fn is_set(self, f: &RouteFilters) -> bool {
        match self {
            Section::Jwt => f.jwt.is_some(),
            Section::RateLimit => f.rate_limit.is_some(),
            Section::Cors => f.cors.is_some(),
            Section::IpFilter => f.ip_filter.is_some(),
            Section::Retry => f.retry.is_some(),
            Section::RequestBody => f.max_request_body_bytes.is_some(),
        }
    }

    fn copy(self, from: &RouteFilters, to: &mut RouteFilters) {
        match self {
            Section::Jwt => to.jwt.clone_from(&from.jwt),
            Section::RateLimit => to.rate_limit.clone_from(&from.rate_limit),
            Section::Cors => to.cors.clone_from(&from.cors),
            Section::IpFilter => to.ip_filter.clone_from(&from.ip_filter),
            Section::Retry => to.retry.clone_from(&from.retry),
            Section::RequestBody => to.max_request_body_bytes = from.max_request_body_bytes,
        }
    }
}

/// Where a route of the snapshot came from: its HTTPRoute or GRPCRoute and the Gateways it is
/// attached through on the route's listener (more than one when Gateways share a port).
#[derive(Debug)]
pub(crate) struct Placement {
    /// A [`Target::Route`] or [`Target::GrpcRoute`].
    pub(crate) route: Target,
    pub(crate) gateways: Vec<Key>,
}

/// A policy without errors whose target exists.
struct Valid<'a> {
    object: String,
    file: Option<&'a PathBuf>,
    target: Target,
    filters: RouteFilters,
}

/// For each section, the index of the policy that supplies it.
type Chosen = HashMap<Section, usize>;

/// Applies `policies` to the rules of `routes` (`placements[i]` says where `routes[i]` came
/// from). `exists` says whether a target object exists. Problems go to `diagnostics`.
pub(crate) fn apply(
    policies: &[(&ProxyPolicy, Option<&PathBuf>)],
    exists: impl Fn(&Target) -> bool,
    routes: &mut [Route],
    placements: &[Placement],
    diagnostics: &mut Vec<Diagnostic>,
) {
    let valid = check(policies, exists, diagnostics);
    // A policy found wrong only when combined (a jwtClaim key on a rule without JWT) is taken
    // out, and the choice made again without it: another policy may then supply the section,
    // and that one is checked in turn. Each round takes out one more policy, so this ends.
    let mut failed = vec![false; valid.len()];
    let (winners, chosen) = loop {
        let winners = winners(&valid, &failed);
        let chosen: Vec<Chosen> = placements.iter().map(|p| choose(p, &winners)).collect();
        let mut again = false;
        for (placement, chosen) in placements.iter().zip(&chosen) {
            let Some(&i) = chosen.get(&Section::RateLimit) else {
                continue;
            };
            let keyed_on_claim = valid[i]
                .filters
                .rate_limit
                .as_ref()
                .is_some_and(|r| matches!(r.key, RateLimitKey::JwtClaim(_)));
            if keyed_on_claim && !chosen.contains_key(&Section::Jwt) {
                let route = placement.route.describe();
                diagnostics.push(
                    Diagnostic::error(
                        &valid[i].object,
                        "spec.rateLimit.key.jwtClaim",
                        format!(
                            "keys on a JWT claim, but {route} has no JWT \
                             authentication: no ProxyPolicy for the route or its Gateway sets \
                             jwt; the policy is not applied"
                        ),
                    )
                    .in_file(valid[i].file.cloned()),
                );
                failed[i] = true;
                again = true;
                break;
            }
        }
        if !again {
            break (winners, chosen);
        }
    };
    conflicts(&valid, &failed, &winners, diagnostics);
    for (placement, chosen) in placements.iter().zip(&chosen) {
        shared_port_conflicts(placement, chosen, &winners, &valid, diagnostics);
    }
    for (route, chosen) in routes.iter_mut().zip(&chosen) {
        for rule in &mut route.rules {
            for (&section, &i) in chosen {
                section.copy(&valid[i].filters, &mut rule.filters);
            }
        }
    }
}

/// Converts every policy, reporting errors and missing targets; the survivors, oldest first.
fn check<'a>(
    policies: &[(&ProxyPolicy, Option<&'a PathBuf>)],
    exists: impl Fn(&Target) -> bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Valid<'a>> {
    let mut sorted: Vec<_> = policies.to_vec();
    // Gateway API conflict resolution: the oldest wins, then the first by namespace/name.
    sorted.sort_by_key(|(p, _)| {
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            created.map_or(0, |t| t.as_second()),
            namespace_of(&p.metadata).to_owned(),
            p.metadata.name.clone().unwrap_or_default(),
        )
    });
    let mut valid = Vec::new();
    for (policy, file) in sorted {
        let namespace = namespace_of(&policy.metadata);
        let object = format!(
            "ProxyPolicy {namespace}/{}",
            policy.metadata.name.as_deref().unwrap_or_default()
        );
        let target = policy.spec.target_ref.target(namespace);
        let filters = policy.spec.to_filters();
        let (target, filters) = match (target, filters) {
            (Ok(t), Ok(f)) => (t, f),
            (t, f) => {
                let errors = t.err().into_iter().chain(f.err()).flatten();
                for e in errors {
                    let field = if e.field.is_empty() {
                        "spec".to_owned()
                    } else {
                        format!("spec.{}", e.field)
                    };
                    diagnostics
                        .push(Diagnostic::error(&object, field, e.message).in_file(file.cloned()));
                }
                continue;
            }
        };
        if !exists(&target) {
            diagnostics.push(
                Diagnostic::warning(
                    &object,
                    "spec.targetRef",
                    format!(
                        "{} does not exist; the policy applies to nothing",
                        target.describe()
                    ),
                )
                .in_file(file.cloned()),
            );
            continue;
        }
        if SECTIONS.iter().all(|s| !s.is_set(&filters)) {
            diagnostics.push(
                Diagnostic::warning(
                    &object,
                    "spec",
                    "sets none of jwt, rateLimit, cors, ipFilter, retry and requestBody; it does \
                     nothing",
                )
                .in_file(file.cloned()),
            );
        }
        valid.push(Valid {
            object,
            file,
            target,
            filters,
        });
    }
    valid
}

/// For each target and section, the oldest policy that sets it (policies are sorted oldest
/// first), leaving out the failed ones.
fn winners(valid: &[Valid<'_>], failed: &[bool]) -> HashMap<(Target, Section), usize> {
    let mut winners = HashMap::new();
    for (i, v) in valid.iter().enumerate().filter(|&(i, _)| !failed[i]) {
        for s in SECTIONS.into_iter().filter(|s| s.is_set(&v.filters)) {
            winners.entry((v.target.clone(), s)).or_insert(i);
        }
    }
    winners
}

/// The policy supplying each section of a route's rules: the route's own, else one of its
/// Gateways' (the oldest, when Gateways sharing the port have different ones).
fn choose(placement: &Placement, winners: &HashMap<(Target, Section), usize>) -> Chosen {
    let route = &placement.route;
    let mut chosen = Chosen::new();
    for s in SECTIONS {
        let from_route = winners.get(&(route.clone(), s)).copied();
        let from_gateway = placement
            .gateways
            .iter()
            .filter_map(|g| winners.get(&(Target::Gateway(g.clone()), s)).copied())
            .min();
        if let Some(i) = from_route.or(from_gateway) {
            chosen.insert(s, i);
        }
    }
    chosen
}

/// Warns every policy that lost a section to an older one targeting the same object.
fn conflicts(
    valid: &[Valid<'_>],
    failed: &[bool],
    winners: &HashMap<(Target, Section), usize>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for (i, v) in valid.iter().enumerate().filter(|&(i, _)| !failed[i]) {
        for s in SECTIONS.into_iter().filter(|s| s.is_set(&v.filters)) {
            let w = winners[&(v.target.clone(), s)];
            if w != i {
                diagnostics.push(
                    Diagnostic::warning(
                        &v.object,
                        format!("spec.{}", s.name()),
                        format!(
                            "conflicts with {}, which also sets {section} for {}: the older \
                             policy (then the first by namespace/name) wins, so this policy's \
                             {section} is ignored",
                            valid[w].object,
                            v.target.describe(),
                            section = s.name(),
                        ),
                    )
                    .in_file(v.file.cloned()),
                );
            }
        }
    }
}

/// Warns when Gateways that share a route's port each supply a section through their own
/// policies: the route can have only one, the oldest policy's.
fn shared_port_conflicts(
    placement: &Placement,
    chosen: &Chosen,
    winners: &HashMap<(Target, Section), usize>,
    valid: &[Valid<'_>],
    diagnostics: &mut Vec<Diagnostic>,
) {
    if placement.gateways.len() < 2 {
        return;
    }
    let route = placement.route.describe();
    for s in SECTIONS {
        if winners.contains_key(&(placement.route.clone(), s)) {
            continue;
        }
        let Some(&w) = chosen.get(&s) else { continue };
        for g in &placement.gateways {
            if let Some(&i) = winners.get(&(Target::Gateway(g.clone()), s))
                && i != w
            {
                diagnostics.push(
                    Diagnostic::warning(
                        &valid[i].object,
                        format!("spec.{}", s.name()),
                        format!(
                            "not applied to {route}: the route is attached to \
                             Gateways sharing a port, and {} (older) sets {} for it",
                            valid[w].object,
                            s.name(),
                        ),
                    )
                    .in_file(valid[i].file.cloned()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::parse_spec;

    #[test]
    fn camel_case_names_match_the_documented_syntax() {
        let spec: ProxyPolicySpec = parse_spec(
            r#"
targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop}
jwt:
  jwks: {url: "http://127.0.0.1/jwks.json"}
  maxStale: 2h
  clockSkew: 0s
  tokenFrom: [{authorizationBearer: {}}, {authorizationBearer: }, {queryParam: t}]
  forwardClaims: [{claim: sub, header: x-user}]
rateLimit: {requests: 5, key: {global: }}
retry: {attempts: 3, on5xx: true, onConnectFailure: false, budget: {minPerSecond: 7}}
"#,
        )
        .unwrap();
        let f = spec.to_filters().unwrap();
        let jwt = f.jwt.unwrap();
        assert_eq!(jwt.max_stale, Duration::from_secs(7200));
        assert_eq!(jwt.clock_skew, Duration::ZERO);
        assert_eq!(
            jwt.locations,
            [
                TokenLocation::AuthorizationBearer,
                TokenLocation::AuthorizationBearer,
                TokenLocation::QueryParam("t".into())
            ]
        );
        let limit = f.rate_limit.unwrap();
        assert_eq!((limit.key, limit.burst), (RateLimitKey::Global, 5));
        let retry = f.retry.unwrap();
        assert!(retry.on_5xx && !retry.on_connect_failure);
        assert_eq!(retry.budget_min_per_second, 7);
        assert_eq!(retry.backoff_max, Duration::from_millis(250));
    }

    #[test]
    fn origins_follow_the_snapshot_rule() {
        for ok in ["*", "https://a.example", "http://*.example.com:8080"] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "example.com",
            "https://",
            "https://a/b",
            "://a",
            "https://*",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
