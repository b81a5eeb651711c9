//! A route rule's filters: the `novaedge-filters` layers its snapshot configuration asks for,
//! composed in the crate's documented order around the forwarding of one request.

use http::{Request, Response};
use novaedge_filters::cors::{CorsConfig, CorsLayer};
use novaedge_filters::headers::{
    HeaderModifier, RequestHeaderModifierLayer, ResponseHeaderModifierLayer,
};
use novaedge_filters::ip::{ClientIpSource, IpFilterConfig, IpFilterLayer, parse_cidrs};
use novaedge_filters::jwt::{
    Algorithm, ClaimToHeader, JwtConfig, JwtLayer, KeySource, RefreshPolicy, TokenLocation,
};
use novaedge_filters::mirror::{MirrorBody, MirrorConfig, MirrorFraction, MirrorLayer};
use novaedge_filters::ratelimit::{
    KeySource as RateLimitKeySource, RateLimitConfig, RateLimitLayer,
};
use novaedge_filters::redirect::{RedirectLayer, RequestRedirect};
use novaedge_filters::retry::{ReplayBody, RetryBudgetConfig, RetryConfig, RetryLayer, RetryOn};
use novaedge_filters::rewrite::{PathModifier, UrlRewrite, UrlRewriteLayer};
use novaedge_filters::timeout::{TimeoutBody, TimeoutConfig, TimeoutLayer};
use novaedge_snapshot as snapshot;
use tower::layer::util::Stack;
use tower::util::MapResponseLayer;
use tower::util::{BoxCloneSyncService, MapRequest};
use tower::{Layer, Service, ServiceExt};

use std::sync::Arc;

use crate::body::ProxyBody;
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::proxy::{Forward, MirrorTarget};

/// A filter configuration the filters crate refused (validation lets few through).
#[derive(Debug, thiserror::Error)]
#[error("filters.{filter}: {message}")]
pub struct FilterError {
    filter: &'static str,
    message: String,
}

fn error(filter: &'static str) -> impl FnOnce(String) -> FilterError {
    move |message| FilterError { filter, message }
}

fn header_modifier(m: &snapshot::HeaderModifier) -> Result<HeaderModifier, String> {
    HeaderModifier::new(
        m.set.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        m.add.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        m.remove.iter(),
    )
    .map_err(|e| e.to_string())
}

fn path(p: &snapshot::PathModifier) -> PathModifier {
    match p {
        snapshot::PathModifier::ReplaceFullPath(p) => PathModifier::ReplaceFullPath(p.clone()),
        snapshot::PathModifier::ReplacePrefixMatch(p) => {
            PathModifier::ReplacePrefixMatch(p.clone())
        }
    }
}

fn ip_filter(f: &snapshot::IpFilter) -> Result<IpFilterLayer, String> {
    let client_ip = match f.xff_trusted_hops {
        0 => ClientIpSource::Peer,
        hops => ClientIpSource::XForwardedFor {
            trusted_hops: hops as usize,
        },
    };
    IpFilterLayer::new(IpFilterConfig {
        allow: parse_cidrs("allow", &f.allow).map_err(|e| e.to_string())?,
        deny: parse_cidrs("deny", &f.deny).map_err(|e| e.to_string())?,
        client_ip,
    })
    .map_err(|e| e.to_string())
}

fn jwt(j: &snapshot::JwtAuthentication) -> Result<JwtLayer, String> {
    let refresh = RefreshPolicy {
        interval: j.refresh,
        max_stale: j.max_stale,
        ..RefreshPolicy::default()
    };
    let keys = match &j.keys {
        snapshot::JwtKeys::Inline(json) => KeySource::Jwks(json.clone()),
        snapshot::JwtKeys::File(path) => KeySource::File {
            path: path.into(),
            refresh,
        },
        snapshot::JwtKeys::Url(url) => KeySource::Url {
            url: url
                .parse()
                .map_err(|_| format!("jwks_url: {url:?} is not a URL"))?,
            refresh,
            tls: match j.jwks_ca_pem.as_str() {
                "" => None,
                pem => Some(
                    novaedge_filters::jwt::tls_client_config(pem.as_bytes())
                        .map_err(|e| format!("jwks_ca_pem: {e}"))?,
                ),
            },
        },
    };
    let mut config = JwtConfig::new(keys);
    config.issuers = j.issuers.clone();
    config.audiences = j.audiences.clone();
    if !j.algorithms.is_empty() {
        config.algorithms = j
            .algorithms
            .iter()
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| format!("algorithms: {a:?} is not an algorithm"))
            })
            .collect::<Result<_, _>>()?;
    }
    config.clock_skew = j.clock_skew;
    config.required_claims = j.required_claims.clone();
    if !j.locations.is_empty() {
        config.locations = j
            .locations
            .iter()
            .map(|l| {
                Ok(match l {
                    snapshot::TokenLocation::AuthorizationBearer => {
                        TokenLocation::AuthorizationBearer
                    }
                    snapshot::TokenLocation::Header { name, prefix } => TokenLocation::Header {
                        name: name
                            .parse()
                            .map_err(|_| format!("locations: {name:?} is not a header name"))?,
                        prefix: prefix.clone(),
                    },
                    snapshot::TokenLocation::Cookie(c) => TokenLocation::Cookie(c.clone()),
                    snapshot::TokenLocation::QueryParam(q) => TokenLocation::Query(q.clone()),
                })
            })
            .collect::<Result<_, String>>()?;
    }
    config.forward_claims = j
        .forward_claims
        .iter()
        .map(|(claim, header)| {
            Ok(ClaimToHeader::new(
                claim.clone(),
                header
                    .parse()
                    .map_err(|_| format!("forward_claims: {header:?} is not a header name"))?,
            ))
        })
        .collect::<Result<_, String>>()?;
    config.remove_token = j.remove_token;
    config.allow_missing = j.allow_missing;
    JwtLayer::new(config).map_err(|e| e.to_string())
}

fn rate_limit(r: &snapshot::RateLimit) -> Result<RateLimitLayer, String> {
    let key = match &r.key {
        snapshot::RateLimitKey::ClientIp { ipv6_prefix } => RateLimitKeySource::ClientIp {
            ipv4_prefix: 32,
            ipv6_prefix: *ipv6_prefix,
        },
        snapshot::RateLimitKey::Header(h) => RateLimitKeySource::Header(
            h.parse()
                .map_err(|_| format!("header: {h:?} is not a header name"))?,
        ),
        snapshot::RateLimitKey::JwtClaim(c) => RateLimitKeySource::JwtClaim(c.clone()),
        snapshot::RateLimitKey::Global => RateLimitKeySource::Global,
    };
    let config = RateLimitConfig::new(r.requests, r.period)
        .with_burst(r.burst)
        .with_key(key);
    RateLimitLayer::new(config).map_err(|e| e.to_string())
}

/// A timeout, and its response body made a [`ProxyBody`] again.
type Unify = fn(Response<TimeoutBody<ProxyBody>>) -> Response<ProxyBody>;

fn unify(response: Response<TimeoutBody<ProxyBody>>) -> Response<ProxyBody> {
    response.map(ProxyBody::boxed)
}

/// What a retry filter may retry: a connection that could not be made (after the endpoints the
/// forwarder already tried), or one that failed once the request was sent.
type Classify = fn(&ProxyError) -> Option<RetryOn>;

fn classify(error: &ProxyError) -> Option<RetryOn> {
    match error {
        ProxyError::Upstream { source, .. } if source.is_connect() => Some(RetryOn::ConnectFailure),
        ProxyError::Upstream { .. } => Some(RetryOn::Reset),
        _ => None,
    }
}

/// The retry filter for a retry policy and a per-try timeout; with a per-try timeout alone, a
/// filter that never retries but bounds the one try.
fn retry(
    policy: Option<&snapshot::RetryPolicy>,
    per_try: Option<std::time::Duration>,
) -> Result<Option<RetryLayer<Classify>>, String> {
    let config = match policy {
        None => match per_try {
            None => return Ok(None),
            Some(_) => RetryConfig {
                max_retries: 0,
                per_try_timeout: per_try,
                ..RetryConfig::default()
            },
        },
        Some(p) => {
            let mut retry_on = Vec::new();
            if p.on_connect_failure {
                retry_on.push(RetryOn::ConnectFailure);
            }
            if p.on_reset {
                retry_on.extend([RetryOn::Reset, RetryOn::RefusedStream]);
            }
            if p.on_5xx {
                retry_on.push(RetryOn::ServerError);
            }
            if per_try.is_some() {
                retry_on.push(RetryOn::PerTryTimeout);
            }
            let defaults = RetryConfig::default();
            let mut methods = defaults.methods.clone();
            for m in &p.extra_methods {
                methods.push(
                    m.parse()
                        .map_err(|_| format!("extra_methods: {m:?} is not a method"))?,
                );
            }
            RetryConfig {
                max_retries: p.attempts.saturating_sub(1),
                retry_on,
                retriable_status_codes: p
                    .statuses
                    .iter()
                    .map(|&s| http::StatusCode::from_u16(s).map_err(|_| format!("statuses: {s}")))
                    .collect::<Result<_, _>>()?,
                retriable_grpc_codes: p.grpc_codes.clone(),
                per_try_timeout: per_try,
                backoff_base: p.backoff_base,
                backoff_max: p.backoff_max,
                budget: Some(RetryBudgetConfig {
                    retry_ratio: f64::from(p.budget_percent) / 100.0,
                    min_retries_per_sec: p.budget_min_per_second,
                    ..RetryBudgetConfig::default()
                }),
                methods,
                max_buffered_body: usize::try_from(p.max_buffered_body_bytes).unwrap_or(usize::MAX),
                ..defaults
            }
        }
    };
    let layer = RetryLayer::new(config).map_err(|e| e.to_string())?;
    Ok(Some(layer.with_classifier(classify as Classify)))
}

/// A rule's filters around forwarding, built once per snapshot: each filter the rule asks for
/// wraps the ones inside it and is then boxed, so the stack's type stays one small type however
/// many filters there are, and a rule pays only for the filters it has.
pub(crate) type FilterStack =
    BoxCloneSyncService<Request<RequestBody>, Response<ProxyBody>, ProxyError>;

fn boxed<S>(service: S) -> FilterStack
where
    S: Service<Request<RequestBody>, Response = Response<ProxyBody>, Error = ProxyError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}

/// Filter state worth keeping across reloads: JWT layers (their key caches) and rate limiters
/// (their buckets), reused while their configuration stays the same, so that a reload neither
/// refetches every JWKS nor hands every client a fresh burst.
#[derive(Debug, Default)]
pub(crate) struct FilterState {
    jwt: Vec<(snapshot::JwtAuthentication, JwtLayer)>,
    /// Keyed by route and rule as well: two rules with equal limits have a limit each.
    rate_limits: Vec<(RuleKey, snapshot::RateLimit, RateLimitLayer)>,
}

/// A rule: its route's name and its index in the route.
pub(crate) type RuleKey = (Arc<str>, usize);

impl FilterState {
    fn jwt(
        &mut self,
        previous: &FilterState,
        config: &snapshot::JwtAuthentication,
    ) -> Result<JwtLayer, String> {
        let found = self
            .jwt
            .iter()
            .chain(&previous.jwt)
            .find(|(c, _)| c == config)
            .map(|(_, layer)| layer.clone());
        let layer = match found {
            Some(layer) => layer,
            None => jwt(config)?,
        };
        if !self.jwt.iter().any(|(c, _)| c == config) {
            self.jwt.push((config.clone(), layer.clone()));
        }
        Ok(layer)
    }

    fn rate_limit(
        &mut self,
        previous: &FilterState,
        rule: &RuleKey,
        config: &snapshot::RateLimit,
    ) -> Result<RateLimitLayer, String> {
        let found = previous
            .rate_limits
            .iter()
            .find(|(k, c, _)| k == rule && c == config)
            .map(|(_, _, layer)| layer.clone());
        let layer = match found {
            Some(layer) => layer,
            None => rate_limit(config)?,
        };
        self.rate_limits
            .push((rule.clone(), config.clone(), layer.clone()));
        Ok(layer)
    }
}

/// The filters `filters` asks for around `forward`; `None` when it asks for none, so that a
/// rule without filters costs nothing per request. `mirror_target` finds a mirror's backend;
/// stateful filters are taken from `previous` when unchanged, and recorded in `next`.
pub(crate) fn compile(
    filters: &snapshot::RouteFilters,
    forward: Forward,
    mirror_target: impl Fn(&str) -> Option<MirrorTarget>,
    rule: &RuleKey,
    previous: &FilterState,
    next: &mut FilterState,
) -> Result<Option<FilterStack>, FilterError> {
    if filters.runs_nothing() {
        return Ok(None);
    }
    // Gateway API allows several mirrors per rule; each samples on its own.
    let mirrors = filters
        .mirrors
        .iter()
        .map(|m| {
            let target = mirror_target(&m.backend)
                .ok_or_else(|| format!("no backend named {:?}", m.backend))?;
            let config = MirrorConfig {
                fraction: MirrorFraction {
                    numerator: m.fraction_ppm,
                    denominator: 1_000_000,
                },
                ..MirrorConfig::default()
            };
            MirrorLayer::new(config, target).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(error("request_mirror"))?;
    let request_headers = filters
        .request_headers
        .as_ref()
        .map(|m| header_modifier(m).map(RequestHeaderModifierLayer::new))
        .transpose()
        .map_err(error("request_header_modifier"))?;
    let response_headers = filters
        .response_headers
        .as_ref()
        .map(|m| header_modifier(m).map(ResponseHeaderModifierLayer::new))
        .transpose()
        .map_err(error("response_header_modifier"))?;
    let rewrite = filters
        .url_rewrite
        .as_ref()
        .map(|r| UrlRewrite::new(r.hostname.clone(), r.path.as_ref().map(path)))
        .transpose()
        .map_err(|e| error("url_rewrite")(e.to_string()))?
        .map(UrlRewriteLayer::new);
    let redirect = filters
        .redirect
        .as_ref()
        .map(|r| {
            let mut builder = RequestRedirect::builder().status(r.status_code);
            if let Some(s) = &r.scheme {
                builder = builder.scheme(s.clone());
            }
            if let Some(h) = &r.hostname {
                builder = builder.hostname(h.clone());
            }
            if let Some(p) = r.port {
                builder = builder.port(p);
            }
            if let Some(p) = &r.path {
                builder = builder.path(path(p));
            }
            builder.build()
        })
        .transpose()
        .map_err(|e| error("request_redirect")(e.to_string()))?
        .map(RedirectLayer::new);
    let ip_filter = filters
        .ip_filter
        .as_ref()
        .map(ip_filter)
        .transpose()
        .map_err(error("ip_filter"))?;
    let cors = filters
        .cors
        .as_ref()
        .map(|c| {
            CorsLayer::new(CorsConfig {
                allow_origins: c.allow_origins.clone(),
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                allow_credentials: c.allow_credentials,
                max_age_secs: Some(u32::try_from(c.max_age.as_secs()).unwrap_or(u32::MAX)),
            })
            .map_err(|e| e.to_string())
        })
        .transpose()
        .map_err(error("cors"))?;
    let jwt = filters
        .jwt
        .as_ref()
        .map(|j| next.jwt(previous, j))
        .transpose()
        .map_err(error("jwt"))?;
    let rate_limit = filters
        .rate_limit
        .as_ref()
        .map(|r| next.rate_limit(previous, rule, r))
        .transpose()
        .map_err(error("rate_limit"))?;
    let timeout = filters
        .timeouts
        .request
        .map(|d| {
            TimeoutLayer::new(TimeoutConfig::new(d))
                .map(|t| Stack::new(t, MapResponseLayer::new(unify as Unify)))
                .map_err(|e| e.to_string())
        })
        .transpose()
        .map_err(error("timeouts"))?;
    let retry =
        retry(filters.retry.as_ref(), filters.timeouts.backend_request).map_err(error("retry"))?;

    // Innermost first: the reverse of the order in novaedge-filters' crate docs.
    let mut stack: FilterStack = boxed(forward);
    if let Some(retry) = retry {
        let inner = MapRequest::new(stack, |req: Request<ReplayBody<RequestBody>>| {
            req.map(RequestBody::filtered)
        });
        stack = boxed(retry.layer(inner));
    }
    if let Some(timeout) = timeout {
        stack = boxed(timeout.layer(stack));
    }
    if let Some(layer) = response_headers {
        stack = boxed(layer.layer(stack));
    }
    for mirror in mirrors {
        let inner = MapRequest::new(stack, |req: Request<MirrorBody<RequestBody>>| {
            req.map(RequestBody::filtered)
        });
        stack = boxed(mirror.layer(inner));
    }
    if let Some(layer) = rewrite {
        stack = boxed(layer.layer(stack));
    }
    if let Some(layer) = request_headers {
        stack = boxed(layer.layer(stack));
    }
    if let Some(layer) = redirect {
        stack = boxed(layer.layer(stack));
    }
    if let Some(layer) = rate_limit {
        stack = boxed(layer.layer(stack));
    }
    if let Some(layer) = jwt {
        stack = boxed(layer.layer(stack));
    }
    if let Some(layer) = cors {
        stack = boxed(layer.layer(stack));
    }
    if let Some(layer) = ip_filter {
        stack = boxed(layer.layer(stack));
    }
    Ok(Some(stack))
}

/// Runs `req` through a rule's filters.
pub(crate) async fn serve(stack: &FilterStack, req: Request<RequestBody>) -> Response<ProxyBody> {
    stack
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(ProxyError::into_response)
}
