//! A backend's health policy as the user writes it: active checks, outlier detection and
//! circuit breakers, each a small YAML (or JSON) object.
//!
//! A `ProxyBackend` (see [`crate::crd`]) carries them as the fields `healthCheck`,
//! `outlierDetection` and `circuitBreaker`; a Service, in three annotations:
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     novaedge.io/health-check: |
//!       http: {path: /healthz, expectedStatuses: ["200-299", 302]}
//!       interval: 5s
//!     novaedge.io/outlier-detection: "{consecutive5xx: 5, maxEjectionPercent: 30}"
//!     novaedge.io/circuit-breaker: "{maxRequests: 200}"
//! ```
//!
//! The `*Spec` types here are the user-facing form: every field optional, camelCase, unknown
//! fields refused, durations in Gateway API syntax ([`GatewayDuration`]). They are also the
//! fields of the `ProxyBackend` CRD. Each converts into the snapshot type
//! ([`novaedge_snapshot::ActiveHealthCheck`], [`OutlierDetection`], [`CircuitBreakers`]),
//! filling what is missing with the snapshot defaults and checking every range the snapshot
//! validator checks, so that a mistake is reported against the field the user wrote (e.g.
//! `metadata.annotations[novaedge.io/health-check].interval`), never as a snapshot-level error.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use novaedge_snapshot::{
    ActiveHealthCheck, CircuitBreakers, DEFAULT_EXPECTED_STATUSES, FailurePercentageEjection,
    HealthPolicy, HealthProbe, OutlierDetection, SuccessRateEjection,
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Service annotation: active health checks, a [`HealthCheckSpec`] in YAML or JSON.
pub const HEALTH_CHECK_ANNOTATION: &str = "novaedge.io/health-check";
/// Service annotation: passive outlier detection, an [`OutlierDetectionSpec`] in YAML or JSON.
pub const OUTLIER_DETECTION_ANNOTATION: &str = "novaedge.io/outlier-detection";
/// Service annotation: circuit-breaker limits, a [`CircuitBreakerSpec`] in YAML or JSON.
pub const CIRCUIT_BREAKER_ANNOTATION: &str = "novaedge.io/circuit-breaker";

/// The longest interval, timeout or ejection time the snapshot accepts: one day.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

// === spec types ===

/// Active health checks: probes sent to every endpoint on an interval. Exactly one of `http`,
/// `tcp` and `grpc` says what to probe; every other field has a default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.http), has(self.tcp), has(self.grpc)].filter(x, x).size() == 1",
    "message": "set exactly one probe: http, tcp or grpc",
}]))]
pub struct HealthCheckSpec {
    /// `GET path` answered with an expected status.
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub http: Option<HttpProbeSpec>,
    /// A TCP connection is established (`tcp: {}`).
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp: Option<TcpProbeSpec>,
    /// `grpc.health.v1.Health/Check` answered `SERVING`.
    #[serde(
        default,
        deserialize_with = "null_is_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub grpc: Option<GrpcProbeSpec>,
    /// Time between probes; default 5s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GatewayDuration>,
    /// Up to this much is added at random to each interval; default 1s, may be 0s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<GatewayDuration>,
    /// How long a probe may take; default 1s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GatewayDuration>,
    /// Successes in a row that make an unhealthy endpoint healthy; default 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failures in a row that make a healthy endpoint unhealthy; default 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Probe this port instead of the endpoint's own. HTTP and gRPC probes of the endpoint's
    /// own port on a TLS backend speak TLS with the backend's settings; probes of this port are
    /// cleartext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An HTTP/1.1 probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbeSpec {
    /// The request path; default `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The `Host` header; default the endpoint's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Statuses that count as healthy, each `200`, `"200"` or `"200-299"`; default 200-399.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<Vec<StatusRange>>,
}

/// A TCP connect probe; it has no settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = crate::crd::open_empty_object)]
pub struct TcpProbeSpec {}

/// A gRPC health-checking-protocol probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcProbeSpec {
    /// The service name asked about; default empty, the whole server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The `:authority`; default the endpoint's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Passive outlier detection (Envoy's): ejection of endpoints that fail real requests. Missing
/// fields keep the default (3 gateway failures in a row eject, at most half of a backend, one
/// ejection always allowed); a count of 0 turns that detector off; `disabled: true` turns all
/// of it off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// 5xx responses in a row that eject; default off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Option<u32>,
    /// Gateway failures (connect failure, reset, 502-504) in a row that eject; default 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_failure: Option<u32>,
    /// How often the statistical detectors run and ejections expire; default 10s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<GatewayDuration>,
    /// The first ejection of an endpoint lasts this long, later ones longer; default 30s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<GatewayDuration>,
    /// The longest an ejection lasts; default 300s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<GatewayDuration>,
    /// At most this percentage of a backend is ejected at once; default 50.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Allow one ejection even when the percentage rounds down to none; default true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always_eject_one_host: Option<bool>,
    /// Eject endpoints whose success rate is far below the backend's mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRateSpec>,
    /// Eject endpoints that fail more than a percentage of their requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_percentage: Option<FailurePercentageSpec>,
    /// `true`: eject nothing. Cannot be combined with a detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// Success-rate ejection; missing fields take the defaults (5 hosts, 100 requests, 1900).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuccessRateSpec {
    /// Endpoints with enough requests needed before anything is judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    /// Requests an endpoint needs in an interval to be judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u64>,
    /// Eject below `mean - stdevFactor / 1000 * stdev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdev_factor: Option<u32>,
}

/// Failure-percentage ejection; missing fields take the defaults (5 hosts, 50 requests, 85%).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePercentageSpec {
    /// Endpoints with enough requests needed before anything is judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_hosts: Option<u32>,
    /// Requests an endpoint needs in an interval to be judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_volume: Option<u64>,
    /// Eject at or above this failure percentage (1-100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

/// Per-backend limits; a request over a limit is answered 503 at once. Missing fields take
/// Envoy's defaults (1024 connections, pending and active requests; 3 retries).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Upstream connections open; at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests waiting for a new connection; at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight; at least 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Retries in flight; 0 turns retries off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// `tcp:` with nothing after it is YAML null; read it as `tcp: {}`, which is what was meant.
fn null_is_empty<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(
        Option::<T>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

// === impl StatusRange ===

/// An inclusive range of HTTP statuses: written `200`, `"200"` or `"200-299"`. Whether the
/// statuses exist (100-599, start <= end) is checked on conversion, not when parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub start: u16,
    pub end: u16,
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let status = |part: &str| part.trim().parse::<u16>().ok();
        let range = match s.split_once('-') {
            None => status(s).map(|n| (n, n)),
            Some((start, end)) => status(start).zip(status(end)),
        };
        range
            .map(|(start, end)| Self { start, end })
            .ok_or_else(|| format!("{s:?} is not a status or range (use e.g. 200 or \"200-299\")"))
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for StatusRange {
    /// A single status as a number, a range as `"200-299"`: the forms users write.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.start == self.end {
            serializer.serialize_u16(self.start)
        } else {
            serializer.collect_str(self)
        }
    }
}

impl JsonSchema for StatusRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StatusRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // A number or a string: Kubernetes' int-or-string, the one structural schema for that.
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "An HTTP status (200) or an inclusive range (\"200-299\").",
        })
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StatusVisitor;

        impl Visitor<'_> for StatusVisitor {
            type Value = StatusRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an HTTP status or range, e.g. 200 or \"200-299\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
                let n = u16::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is not an HTTP status (100-599)")))?;
                Ok(StatusRange { start: n, end: n })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v} is not an HTTP status (100-599)"))),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(StatusVisitor)
    }
}

// === impl GatewayDuration ===

/// A duration in Gateway API syntax (GEP-2257): one to four parts, each 1-5 digits followed by
/// `h`, `m`, `s` or `ms`, added up; e.g. `1h`, `10s`, `500ms`, `1m30s`. The grammar is the
/// regular expression `^([0-9]{1,5}(h|m|s|ms)){1,4}$`: no sign, no fractions, no spaces, a unit
/// on every number (so `0` alone is not a duration, `0s` is). Units may repeat and come in any
/// order, as in Go's `time.ParseDuration`, which the GEP defers to for meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayDuration(pub Duration);

/// A string that is not a [`GatewayDuration`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration (use e.g. 5s, 500ms, 1m30s)")]
pub struct DurationError(pub String);

impl FromStr for GatewayDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, DurationError> {
        let error = || DurationError(s.to_owned());
        let mut rest = s.as_bytes();
        let mut total = Duration::ZERO;
        let mut parts = 0;
        while !rest.is_empty() {
            parts += 1;
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if parts > 4 || digits == 0 || digits > 5 {
                return Err(error());
            }
            // At most five ASCII digits: always a valid u64.
            let n: u64 = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or_else(error)?;
            rest = &rest[digits..];
            // `ms` before `m`: in "5ms" the `s` cannot start a new part, since a part starts
            // with a digit, so the longer unit is the only reading.
            let (unit, len) = match rest {
                [b'm', b's', ..] => (Duration::from_millis(1), 2),
                [b'h', ..] => (Duration::from_secs(3600), 1),
                [b'm', ..] => (Duration::from_secs(60), 1),
                [b's', ..] => (Duration::from_secs(1), 1),
                _ => return Err(error()),
            };
            rest = &rest[len..];
            // 4 * 99999h is far below Duration::MAX; checked anyway, it costs nothing.
            total = unit
                .checked_mul(u32::try_from(n).map_err(|_| error())?)
                .and_then(|d| total.checked_add(d))
                .ok_or_else(error)?;
        }
        if parts == 0 {
            return Err(error());
        }
        Ok(Self(total))
    }
}

impl fmt::Display for GatewayDuration {
    /// The canonical form (`1h30m`, `1m30s500ms`, `0s`). Sub-millisecond parts, which parsing
    /// never produces, are dropped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let parts = [
            (ms / 3_600_000, "h"),
            (ms / 60_000 % 60, "m"),
            (ms / 1000 % 60, "s"),
            (ms % 1000, "ms"),
        ];
        for (n, unit) in parts {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for GatewayDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The grammar of [`GatewayDuration`] as the schema states it (Gateway API's `Duration`).
pub(crate) const DURATION_PATTERN: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

impl JsonSchema for GatewayDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GatewayDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration such as 5s, 500ms or 1m30s (Gateway API syntax: one to \
                            four parts, each 1-5 digits and h, m, s or ms).",
        })
    }
}

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = GatewayDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 5s, 500ms or 1m30s")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<GatewayDuration, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}

// === conversion ===

/// One thing wrong in a spec: the field path inside it (e.g. `http.expectedStatuses[1]`; empty
/// for the spec as a whole) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Collects the errors of one conversion.
#[derive(Default)]
struct Errors(Vec<SpecError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError::new(field, message));
    }

    /// `value` or `default`, checked against the range the snapshot accepts.
    fn duration(
        &mut self,
        field: &str,
        value: Option<GatewayDuration>,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        let Some(GatewayDuration(d)) = value else {
            return default;
        };
        if (!zero_ok && d < Duration::from_millis(1)) || d > MAX_DURATION {
            let low = if zero_ok { "0s" } else { "1ms" };
            self.push(
                field,
                format!("must be between {low} and 24h, got {}", GatewayDuration(d)),
            );
        }
        d
    }

    /// `value` or `default`; 0 is refused.
    fn at_least_one<T: Copy + Default + PartialEq>(
        &mut self,
        field: &str,
        value: Option<T>,
        default: T,
    ) -> T {
        let value = value.unwrap_or(default);
        if value == T::default() {
            self.push(field, "must be at least 1");
        }
        value
    }

    /// `value` or `default`, as a percentage from `low` to 100.
    fn percent(&mut self, field: &str, value: Option<u32>, default: u8, low: u32) -> u8 {
        let Some(value) = value else {
            return default;
        };
        match u8::try_from(value) {
            Ok(p) if (low..=100).contains(&value) => p,
            _ => {
                self.push(
                    field,
                    format!("must be a percentage from {low} to 100, got {value}"),
                );
                default
            }
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

impl HealthCheckSpec {
    /// The active check this spec asks for, with the snapshot defaults
    /// ([`ActiveHealthCheck::new`]) for what it leaves out.
    pub fn to_active(&self) -> Result<ActiveHealthCheck, Vec<SpecError>> {
        let mut errors = Errors::default();
        let kinds: Vec<&str> = [
            ("http", self.http.is_some()),
            ("tcp", self.tcp.is_some()),
            ("grpc", self.grpc.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, set)| set.then_some(kind))
        .collect();
        if kinds.len() != 1 {
            let got = if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(" and ")
            };
            errors.push(
                "",
                format!(
                    "set exactly one probe: http: {{path: /healthz}}, tcp: {{}} or grpc: {{}} \
                     (got {got})"
                ),
            );
        }
        let probe = if let Some(http) = &self.http {
            http.to_probe(&mut errors)
        } else if let Some(grpc) = &self.grpc {
            grpc.to_probe(&mut errors)
        } else {
            HealthProbe::Tcp
        };
        let d = ActiveHealthCheck::new(HealthProbe::Tcp);
        let active = ActiveHealthCheck {
            interval: errors.duration("interval", self.interval, d.interval, false),
            jitter: errors.duration("jitter", self.jitter, d.jitter, true),
            timeout: errors.duration("timeout", self.timeout, d.timeout, false),
            healthy_threshold: errors.at_least_one(
                "healthyThreshold",
                self.healthy_threshold,
                d.healthy_threshold,
            ),
            unhealthy_threshold: errors.at_least_one(
                "unhealthyThreshold",
                self.unhealthy_threshold,
                d.unhealthy_threshold,
            ),
            port: self.port.map(|p| errors.at_least_one("port", Some(p), p)),
            probe,
        };
        errors.finish(active)
    }
}

impl HttpProbeSpec {
    fn to_probe(&self, errors: &mut Errors) -> HealthProbe {
        let path = self.path.clone().unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            errors.push(
                "http.path",
                format!("{path:?} is not an absolute request path (e.g. /healthz)"),
            );
        }
        if let Some(host) = &self.host
            && http::uri::Authority::try_from(host.as_str()).is_err()
        {
            errors.push("http.host", format!("{host:?} is not a valid host"));
        }
        let expected_statuses = match &self.expected_statuses {
            None => vec![DEFAULT_EXPECTED_STATUSES],
            Some(ranges) => {
                if ranges.is_empty() {
                    errors.push(
                        "http.expectedStatuses",
                        "must list at least one status (or be left out for 200-399)",
                    );
                }
                for (i, r) in ranges.iter().enumerate() {
                    if !(100..=599).contains(&r.start)
                        || !(100..=599).contains(&r.end)
                        || r.start > r.end
                    {
                        errors.push(
                            format!("http.expectedStatuses[{i}]"),
                            format!("{r} is not a range of HTTP statuses (100-599, start <= end)"),
                        );
                    }
                }
                ranges.iter().map(|r| r.start..=r.end).collect()
            }
        };
        HealthProbe::Http {
            path,
            host: self.host.clone(),
            expected_statuses,
        }
    }
}

impl GrpcProbeSpec {
    fn to_probe(&self, errors: &mut Errors) -> HealthProbe {
        if let Some(authority) = &self.authority
            && http::uri::Authority::try_from(authority.as_str()).is_err()
        {
            errors.push(
                "grpc.authority",
                format!("{authority:?} is not a valid authority"),
            );
        }
        HealthProbe::Grpc {
            service: self.service.clone().unwrap_or_default(),
            authority: self.authority.clone(),
        }
    }
}

impl OutlierDetectionSpec {
    /// The outlier detection this spec asks for: [`OutlierDetection::default`] changed by the
    /// fields that are set, or [`OutlierDetection::disabled`] for `disabled: true`.
    pub fn to_outlier_detection(&self) -> Result<OutlierDetection, Vec<SpecError>> {
        let mut errors = Errors::default();
        let disabled = self.disabled == Some(true);
        let d = if disabled {
            OutlierDetection::disabled()
        } else {
            OutlierDetection::default()
        };
        if disabled {
            for (field, set) in [
                ("consecutive5xx", self.consecutive_5xx.is_some()),
                (
                    "consecutiveGatewayFailure",
                    self.consecutive_gateway_failure.is_some(),
                ),
                ("successRate", self.success_rate.is_some()),
                ("failurePercentage", self.failure_percentage.is_some()),
            ] {
                if set {
                    errors.push(
                        field,
                        "cannot be set together with disabled: true; remove one of them",
                    );
                }
            }
        }
        let base_ejection_time = errors.duration(
            "baseEjectionTime",
            self.base_ejection_time,
            d.base_ejection_time,
            false,
        );
        let max_ejection_time = errors.duration(
            "maxEjectionTime",
            self.max_ejection_time,
            d.max_ejection_time,
            false,
        );
        if max_ejection_time < base_ejection_time {
            let (max, base) = (
                GatewayDuration(max_ejection_time),
                GatewayDuration(base_ejection_time),
            );
            // Blame the field the user wrote: a base above the default maximum needs the
            // maximum raised too.
            if self.max_ejection_time.is_some() {
                errors.push(
                    "maxEjectionTime",
                    format!("{max} is below baseEjectionTime ({base})"),
                );
            } else {
                errors.push(
                    "baseEjectionTime",
                    format!("{base} is above maxEjectionTime ({max}, the default); raise that too"),
                );
            }
        }
        let outlier = OutlierDetection {
            // 0 turns a detector off; unset keeps the default.
            consecutive_5xx: self
                .consecutive_5xx
                .map_or(d.consecutive_5xx, Some)
                .filter(|&n| n > 0),
            consecutive_gateway_failure: self
                .consecutive_gateway_failure
                .map_or(d.consecutive_gateway_failure, Some)
                .filter(|&n| n > 0),
            interval: errors.duration("interval", self.interval, d.interval, false),
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent: errors.percent(
                "maxEjectionPercent",
                self.max_ejection_percent,
                d.max_ejection_percent,
                0,
            ),
            always_eject_one_host: self
                .always_eject_one_host
                .unwrap_or(d.always_eject_one_host),
            success_rate: self
                .success_rate
                .as_ref()
                .map(|s| s.to_ejection(&mut errors)),
            failure_percentage: self
                .failure_percentage
                .as_ref()
                .map(|f| f.to_ejection(&mut errors)),
        };
        errors.finish(outlier)
    }
}

// A 0 in the statistical detectors would be read back from the wire as "use the default", so
// it is refused here rather than silently changed.

impl SuccessRateSpec {
    fn to_ejection(&self, errors: &mut Errors) -> SuccessRateEjection {
        let d = SuccessRateEjection::default();
        SuccessRateEjection {
            minimum_hosts: errors.at_least_one(
                "successRate.minimumHosts",
                self.minimum_hosts,
                d.minimum_hosts,
            ),
            request_volume: errors.at_least_one(
                "successRate.requestVolume",
                self.request_volume,
                d.request_volume,
            ),
            stdev_factor: errors.at_least_one(
                "successRate.stdevFactor",
                self.stdev_factor,
                d.stdev_factor,
            ),
        }
    }
}

impl FailurePercentageSpec {
    fn to_ejection(&self, errors: &mut Errors) -> FailurePercentageEjection {
        let d = FailurePercentageEjection::default();
        FailurePercentageEjection {
            minimum_hosts: errors.at_least_one(
                "failurePercentage.minimumHosts",
                self.minimum_hosts,
                d.minimum_hosts,
            ),
            request_volume: errors.at_least_one(
                "failurePercentage.requestVolume",
                self.request_volume,
                d.request_volume,
            ),
            threshold: errors.percent(
                "failurePercentage.threshold",
                self.threshold,
                d.threshold,
                1,
            ),
        }
    }
}

impl CircuitBreakerSpec {
    /// The limits this spec asks for, with Envoy's defaults for what it leaves out.
    pub fn to_circuit_breakers(&self) -> Result<CircuitBreakers, Vec<SpecError>> {
        let mut errors = Errors::default();
        let d = CircuitBreakers::default();
        let limits = CircuitBreakers {
            max_connections: errors.at_least_one(
                "maxConnections",
                self.max_connections,
                d.max_connections,
            ),
            max_pending_requests: errors.at_least_one(
                "maxPendingRequests",
                self.max_pending_requests,
                d.max_pending_requests,
            ),
            max_requests: errors.at_least_one("maxRequests", self.max_requests, d.max_requests),
            max_retries: self.max_retries.unwrap_or(d.max_retries),
        };
        errors.finish(limits)
    }
}

// === annotations ===

/// Parses a spec written as YAML or JSON. The error names the field that does not fit.
pub fn parse_spec<T: DeserializeOwned>(text: &str) -> Result<T, SpecError> {
    // Through a JSON value, as objects.rs does: the messages then carry no YAML positions,
    // which would be positions inside the annotation, not in the file.
    let value: serde_json::Value = serde_norway::from_str(text)
        .map_err(|e| SpecError::new("", format!("not a YAML or JSON object: {e}")))?;
    let kind = match &value {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Null => Some("nothing"),
        serde_json::Value::Bool(_) => Some("a boolean"),
        serde_json::Value::Number(_) => Some("a number"),
        serde_json::Value::String(_) => Some("a string"),
        serde_json::Value::Array(_) => Some("a list"),
    };
    if let Some(kind) = kind {
        return Err(SpecError::new(
            "",
            format!("expected a YAML or JSON object such as {{tcp: {{}}}}, got {kind}"),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        SpecError::new(field, e.into_inner().to_string())
    })
}

/// Parses annotation `name` of `annotations` (if present) and converts it; errors get the field
/// path `metadata.annotations[name].field`.
fn annotation<S: DeserializeOwned, T>(
    annotations: &BTreeMap<String, String>,
    name: &str,
    convert: impl FnOnce(&S) -> Result<T, Vec<SpecError>>,
    errors: &mut Vec<SpecError>,
) -> Option<T> {
    let text = annotations.get(name)?;
    let result = parse_spec(text)
        .map_err(|e| vec![e])
        .and_then(|spec| convert(&spec));
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let prefix = format!("metadata.annotations[{name}]");
            errors.extend(e.into_iter().map(|e| SpecError {
                field: if e.field.is_empty() {
                    prefix.clone()
                } else {
                    format!("{prefix}.{}", e.field)
                },
                message: e.message,
            }));
            None
        }
    }
}

/// The health policy a Service's annotations ask for. A part with an error keeps its default,
/// so that the snapshot stays valid; the errors (with full field paths) stop it from being
/// served.
pub(crate) fn from_annotations(
    annotations: Option<&BTreeMap<String, String>>,
) -> (HealthPolicy, Vec<SpecError>) {
    let mut errors = Vec::new();
    let Some(annotations) = annotations else {
        return (HealthPolicy::default(), errors);
    };
    let policy = HealthPolicy {
        active: annotation(
            annotations,
            HEALTH_CHECK_ANNOTATION,
            HealthCheckSpec::to_active,
            &mut errors,
        ),
        outlier_detection: annotation(
            annotations,
            OUTLIER_DETECTION_ANNOTATION,
            OutlierDetectionSpec::to_outlier_detection,
            &mut errors,
        )
        .unwrap_or_default(),
        circuit_breakers: annotation(
            annotations,
            CIRCUIT_BREAKER_ANNOTATION,
            CircuitBreakerSpec::to_circuit_breakers,
            &mut errors,
        )
        .unwrap_or_default(),
    };
    (policy, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> Result<u128, DurationError> {
        text.parse::<GatewayDuration>().map(|d| d.0.as_millis())
    }

    #[test]
    fn durations_follow_the_gateway_api_grammar() {
        for (text, millis) in [
            ("0s", 0),
            ("0h", 0),
            ("1ms", 1),
            ("500ms", 500),
            ("10s", 10_000),
            ("1m", 60_000),
            ("1h", 3_600_000),
            ("1m30s", 90_000),
            ("1h2m3s4ms", 3_723_004),
            ("99999h", 99_999 * 3_600_000),
            ("00005s", 5000),
            // Repeated and unordered units add up, as in Go's time.ParseDuration.
            ("1s1s", 2000),
            ("1ms1h", 3_600_001),
            ("5m5ms", 300_005),
        ] {
            assert_eq!(ms(text), Ok(millis), "{text}");
        }
    }

    #[test]
    fn durations_outside_the_grammar_are_refused() {
        for text in [
            "",
            "0",
            "5",
            "s",
            "ms",
            "5 s",
            " 5s",
            "5s ",
            "5seconds",
            "5 seconds",
            "1.5s",
            "-1s",
            "+1s",
            "1d",
            "1us",
            "1ns",
            "1S",
            "1H",
            "100000s",
            "1h1m1s1ms1h",
            "1m30",
            "5sms",
            "1msm",
            "１s",
        ] {
            assert_eq!(
                text.parse::<GatewayDuration>(),
                Err(DurationError(text.to_owned())),
                "{text:?} should not parse"
            );
        }
        assert_eq!(
            DurationError("5 seconds".into()).to_string(),
            r#""5 seconds" is not a duration (use e.g. 5s, 500ms, 1m30s)"#
        );
    }

    #[test]
    fn durations_display_in_canonical_form_and_parse_back() {
        for (millis, text) in [
            (0, "0s"),
            (1, "1ms"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (86_400_000, "24h"),
            (3_723_004, "1h2m3s4ms"),
        ] {
            let d = GatewayDuration(Duration::from_millis(millis));
            assert_eq!(d.to_string(), text);
            assert_eq!(text.parse::<GatewayDuration>(), Ok(d));
        }
    }

    #[test]
    fn status_ranges_parse_from_strings_and_integers() {
        let parse = |v: serde_json::Value| serde_json::from_value::<StatusRange>(v);
        assert_eq!(
            parse(serde_json::json!(204)).unwrap(),
            StatusRange {
                start: 204,
                end: 204
            }
        );
        assert_eq!(
            parse(serde_json::json!("200-299")).unwrap(),
            StatusRange {
                start: 200,
                end: 299
            }
        );
        assert_eq!(
            parse(serde_json::json!("302")).unwrap(),
            StatusRange {
                start: 302,
                end: 302
            }
        );
        for bad in [
            serde_json::json!("2xx"),
            serde_json::json!("200-"),
            serde_json::json!("-1"),
            serde_json::json!(-1),
            serde_json::json!(70_000),
            serde_json::json!(2.5),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        // Parsed, but not statuses: the conversion refuses these, naming the entry.
        let spec: HealthCheckSpec =
            parse_spec(r#"{http: {expectedStatuses: [200, "299-200", 700]}}"#).unwrap();
        let fields: Vec<String> = spec
            .to_active()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["http.expectedStatuses[1]", "http.expectedStatuses[2]"]
        );
    }

    #[test]
    fn camel_case_names_match_the_documented_syntax() {
        let spec: OutlierDetectionSpec = parse_spec(
            "{consecutive5xx: 1, consecutiveGatewayFailure: 2, baseEjectionTime: 1s, \
             maxEjectionTime: 2s, maxEjectionPercent: 3, alwaysEjectOneHost: false}",
        )
        .unwrap();
        assert_eq!(spec.consecutive_5xx, Some(1));
        assert_eq!(spec.consecutive_gateway_failure, Some(2));
        assert_eq!(spec.max_ejection_percent, Some(3));
    }
}
