//! A backend's health policy: active checks, passive outlier detection and circuit breakers,
//! with their wire form and their validation. The engine turns these into `novaedge-health`
//! detectors; the defaults here are what a backend with no health configuration gets.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::FieldError;
use crate::proto;

/// Which endpoints of a backend deserve traffic, and how much a backend may be asked at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthPolicy {
    /// `None`: endpoints are judged by passive detection alone.
    pub active: Option<ActiveHealthCheck>,
    pub outlier_detection: OutlierDetection,
    pub circuit_breakers: CircuitBreakers,
}

/// Probes sent to every endpoint on an interval, on connections of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHealthCheck {
    pub interval: Duration,
    /// Up to this much is added at random to each interval.
    pub jitter: Duration,
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Probe this port instead of the endpoint's own. HTTP and gRPC probes of the endpoint's
    /// own port on a backend with `tls` speak TLS with the backend's settings; probes of this
    /// port are cleartext (a separate health port is usually plain).
    pub port: Option<u16>,
    pub probe: HealthProbe,
}

impl ActiveHealthCheck {
    /// The defaults (5 s interval, 1 s jitter, 1 s timeout, 2 to recover, 3 to fail) with `probe`.
    pub fn new(probe: HealthProbe) -> Self {
        Self {
            interval: Duration::from_secs(5),
            jitter: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            port: None,
            probe,
        }
    }
}

/// What an active check asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// A TCP connection is established.
    Tcp,
    /// `GET path` over HTTP/1.1 answered with a status in `expected_statuses`.
    Http {
        path: String,
        /// `None`: the endpoint's address.
        host: Option<String>,
        /// Inclusive ranges; never empty.
        expected_statuses: Vec<RangeInclusive<u16>>,
    },
    /// `grpc.health.v1.Health/Check` answered `SERVING`.
    Grpc {
        /// Empty: the whole server.
        service: String,
        /// `None`: the endpoint's address.
        authority: Option<String>,
    },
}

/// The statuses an HTTP probe accepts when none are configured: 2xx and 3xx.
pub const DEFAULT_EXPECTED_STATUSES: RangeInclusive<u16> = 200..=399;

/// Passive health: ejection of endpoints that fail real requests (Envoy's outlier detection).
///
/// The [`Default`] is what every backend gets without configuration: an endpoint that refuses
/// or drops three connections in a row is ejected, even in a small backend (one ejection is
/// always allowed), but never more than half of a backend at once; 5xx responses alone eject
/// nothing, because an application error is not a dead endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// 5xx responses in a row that eject; `None`: off.
    pub consecutive_5xx: Option<u32>,
    /// Gateway failures (connect failure, reset, 502-504) in a row that eject; `None`: off.
    pub consecutive_gateway_failure: Option<u32>,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u8,
    pub always_eject_one_host: bool,
    pub success_rate: Option<SuccessRateEjection>,
    pub failure_percentage: Option<FailurePercentageEjection>,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: None,
            consecutive_gateway_failure: Some(3),
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            always_eject_one_host: true,
            success_rate: None,
            failure_percentage: None,
        }
    }
}

impl OutlierDetection {
    /// Outlier detection that never ejects anything.
    pub fn disabled() -> Self {
        Self {
            consecutive_gateway_failure: None,
            ..Self::default()
        }
    }

    /// Whether any detector is on.
    pub fn is_enabled(&self) -> bool {
        self.consecutive_5xx.is_some()
            || self.consecutive_gateway_failure.is_some()
            || self.success_rate.is_some()
            || self.failure_percentage.is_some()
    }
}

/// Eject endpoints whose success rate is below `mean - stdev_factor / 1000 * stdev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessRateEjection {
    pub minimum_hosts: u32,
    pub request_volume: u64,
    pub stdev_factor: u32,
}

impl Default for SuccessRateEjection {
    fn default() -> Self {
        Self {
            minimum_hosts: 5,
            request_volume: 100,
            stdev_factor: 1900,
        }
    }
}

/// Eject endpoints that fail at least `threshold` percent of their requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePercentageEjection {
    pub minimum_hosts: u32,
    pub request_volume: u64,
    pub threshold: u8,
}

impl Default for FailurePercentageEjection {
    fn default() -> Self {
        Self {
            minimum_hosts: 5,
            request_volume: 50,
            threshold: 85,
        }
    }
}

/// Per-backend limits; a request over a limit is answered 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    /// Upstream connections open.
    pub max_connections: u32,
    /// Requests waiting for a new connection.
    pub max_pending_requests: u32,
    /// Requests in flight.
    pub max_requests: u32,
    /// Retries in flight.
    pub max_retries: u32,
}

impl Default for CircuitBreakers {
    /// Envoy's defaults.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

// === wire ===

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_or(value: u64, default: Duration) -> Duration {
    if value == 0 {
        default
    } else {
        Duration::from_millis(value)
    }
}

fn or<T: Default + PartialEq>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

/// Reads a wire health policy; out-of-range numbers are reported against `object`.
pub(crate) fn from_wire(
    object: &str,
    wire: Option<proto::HealthPolicy>,
    errors: &mut Vec<FieldError>,
) -> HealthPolicy {
    let Some(wire) = wire else {
        return HealthPolicy::default();
    };
    let mut percent = |field: &str, value: u32| {
        u8::try_from(value).unwrap_or_else(|_| {
            errors.push(FieldError::new(
                object,
                format!("health.{field}"),
                format!("must be at most 100, got {value}"),
            ));
            100
        })
    };
    let outlier_detection = match wire.outlier_detection {
        None => OutlierDetection::default(),
        Some(o) => {
            let defaults = OutlierDetection::default();
            OutlierDetection {
                consecutive_5xx: o.consecutive_5xx.filter(|&n| n > 0),
                consecutive_gateway_failure: match o.consecutive_gateway_failure {
                    None => defaults.consecutive_gateway_failure,
                    Some(0) => None,
                    Some(n) => Some(n),
                },
                interval: ms_or(o.interval_ms, defaults.interval),
                base_ejection_time: ms_or(o.base_ejection_time_ms, defaults.base_ejection_time),
                max_ejection_time: ms_or(o.max_ejection_time_ms, defaults.max_ejection_time),
                max_ejection_percent: match o.max_ejection_percent {
                    None => defaults.max_ejection_percent,
                    Some(p) => percent("outlier_detection.max_ejection_percent", p),
                },
                always_eject_one_host: o
                    .always_eject_one_host
                    .unwrap_or(defaults.always_eject_one_host),
                success_rate: o.success_rate.map(|s| {
                    let d = SuccessRateEjection::default();
                    SuccessRateEjection {
                        minimum_hosts: or(s.minimum_hosts, d.minimum_hosts),
                        request_volume: or(s.request_volume, d.request_volume),
                        stdev_factor: or(s.stdev_factor, d.stdev_factor),
                    }
                }),
                failure_percentage: o.failure_percentage.map(|f| {
                    let d = FailurePercentageEjection::default();
                    FailurePercentageEjection {
                        minimum_hosts: or(f.minimum_hosts, d.minimum_hosts),
                        request_volume: or(f.request_volume, d.request_volume),
                        threshold: match f.threshold {
                            0 => d.threshold,
                            t => percent("outlier_detection.failure_percentage.threshold", t),
                        },
                    }
                }),
            }
        }
    };
    let circuit_breakers = match wire.circuit_breakers {
        None => CircuitBreakers::default(),
        Some(c) => {
            let d = CircuitBreakers::default();
            CircuitBreakers {
                max_connections: c.max_connections.unwrap_or(d.max_connections),
                max_pending_requests: c.max_pending_requests.unwrap_or(d.max_pending_requests),
                max_requests: c.max_requests.unwrap_or(d.max_requests),
                max_retries: c.max_retries.unwrap_or(d.max_retries),
            }
        }
    };
    let active = wire.active.map(|a| active_from_wire(object, a, errors));
    HealthPolicy {
        active,
        outlier_detection,
        circuit_breakers,
    }
}

fn active_from_wire(
    object: &str,
    a: proto::ActiveHealthCheck,
    errors: &mut Vec<FieldError>,
) -> ActiveHealthCheck {
    use proto::active_health_check::Probe;
    let mut error = |field: &str, message: String| {
        errors.push(FieldError::new(
            object,
            format!("health.active.{field}"),
            message,
        ))
    };
    let probe = match a.probe {
        None => {
            error("probe", "say what to probe: tcp, http or grpc".into());
            HealthProbe::Tcp
        }
        Some(Probe::Tcp(_)) => HealthProbe::Tcp,
        Some(Probe::Http(h)) => HealthProbe::Http {
            path: or(h.path, "/".to_owned()),
            host: Some(h.host).filter(|h| !h.is_empty()),
            expected_statuses: if h.expected_statuses.is_empty() {
                vec![DEFAULT_EXPECTED_STATUSES]
            } else {
                h.expected_statuses
                    .iter()
                    .enumerate()
                    .map(
                        |(i, r)| match (u16::try_from(r.start), u16::try_from(r.end)) {
                            (Ok(start), Ok(end)) => start..=end,
                            _ => {
                                error(
                                    &format!("http.expected_statuses[{i}]"),
                                    format!(
                                        "{}-{} is not a range of HTTP statuses",
                                        r.start, r.end
                                    ),
                                );
                                DEFAULT_EXPECTED_STATUSES
                            }
                        },
                    )
                    .collect()
            },
        },
        Some(Probe::Grpc(g)) => HealthProbe::Grpc {
            service: g.service,
            authority: Some(g.authority).filter(|a| !a.is_empty()),
        },
    };
    let defaults = ActiveHealthCheck::new(HealthProbe::Tcp);
    let port = match a.port {
        0 => None,
        p => match u16::try_from(p) {
            Ok(p) => Some(p),
            Err(_) => {
                error("port", format!("{p} is not a TCP port"));
                None
            }
        },
    };
    ActiveHealthCheck {
        interval: ms_or(a.interval_ms, defaults.interval),
        jitter: a.jitter_ms.map_or(defaults.jitter, Duration::from_millis),
        timeout: ms_or(a.timeout_ms, defaults.timeout),
        healthy_threshold: or(a.healthy_threshold, defaults.healthy_threshold),
        unhealthy_threshold: or(a.unhealthy_threshold, defaults.unhealthy_threshold),
        port,
        probe,
    }
}

/// The wire form; every field explicit, so that decoding gives back the same policy.
pub(crate) fn to_wire(policy: &HealthPolicy) -> proto::HealthPolicy {
    use proto::active_health_check::Probe;
    let o = &policy.outlier_detection;
    let c = &policy.circuit_breakers;
    proto::HealthPolicy {
        active: policy.active.as_ref().map(|a| proto::ActiveHealthCheck {
            interval_ms: millis(a.interval),
            jitter_ms: Some(millis(a.jitter)),
            timeout_ms: millis(a.timeout),
            healthy_threshold: a.healthy_threshold,
            unhealthy_threshold: a.unhealthy_threshold,
            port: a.port.map_or(0, u32::from),
            probe: Some(match &a.probe {
                HealthProbe::Tcp => Probe::Tcp(proto::TcpProbe {}),
                HealthProbe::Http {
                    path,
                    host,
                    expected_statuses,
                } => Probe::Http(proto::HttpProbe {
                    path: path.clone(),
                    host: host.clone().unwrap_or_default(),
                    expected_statuses: expected_statuses
                        .iter()
                        .map(|r| proto::StatusRange {
                            start: (*r.start()).into(),
                            end: (*r.end()).into(),
                        })
                        .collect(),
                }),
                HealthProbe::Grpc { service, authority } => Probe::Grpc(proto::GrpcProbe {
                    service: service.clone(),
                    authority: authority.clone().unwrap_or_default(),
                }),
            }),
        }),
        outlier_detection: Some(proto::OutlierDetection {
            consecutive_5xx: Some(o.consecutive_5xx.unwrap_or(0)),
            consecutive_gateway_failure: Some(o.consecutive_gateway_failure.unwrap_or(0)),
            interval_ms: millis(o.interval),
            base_ejection_time_ms: millis(o.base_ejection_time),
            max_ejection_time_ms: millis(o.max_ejection_time),
            max_ejection_percent: Some(o.max_ejection_percent.into()),
            always_eject_one_host: Some(o.always_eject_one_host),
            success_rate: o.success_rate.as_ref().map(|s| proto::SuccessRateEjection {
                minimum_hosts: s.minimum_hosts,
                request_volume: s.request_volume,
                stdev_factor: s.stdev_factor,
            }),
            failure_percentage: o.failure_percentage.as_ref().map(|f| {
                proto::FailurePercentageEjection {
                    minimum_hosts: f.minimum_hosts,
                    request_volume: f.request_volume,
                    threshold: f.threshold.into(),
                }
            }),
        }),
        circuit_breakers: Some(proto::CircuitBreakers {
            max_connections: Some(c.max_connections),
            max_pending_requests: Some(c.max_pending_requests),
            max_requests: Some(c.max_requests),
            max_retries: Some(c.max_retries),
        }),
    }
}

// === validation ===

/// The longest interval, timeout or ejection time accepted: one day.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Checks the ranges the types cannot express; errors name `health.<field>` of `object`.
pub(crate) fn validate(policy: &HealthPolicy, object: &str, errors: &mut Vec<FieldError>) {
    let mut error = |field: &str, message: String| {
        errors.push(FieldError::new(object, format!("health.{field}"), message))
    };
    let mut duration = |field: &str, d: Duration, zero_ok: bool| {
        if (!zero_ok && d < Duration::from_millis(1)) || d > MAX_DURATION {
            let low = if zero_ok { "0" } else { "1ms" };
            error(field, format!("must be between {low} and 24h, got {d:?}"));
        }
    };
    if let Some(a) = &policy.active {
        duration("active.interval", a.interval, false);
        duration("active.jitter", a.jitter, true);
        duration("active.timeout", a.timeout, false);
    }
    let o = &policy.outlier_detection;
    duration("outlier_detection.interval", o.interval, false);
    duration(
        "outlier_detection.base_ejection_time",
        o.base_ejection_time,
        false,
    );
    duration(
        "outlier_detection.max_ejection_time",
        o.max_ejection_time,
        false,
    );

    if let Some(a) = &policy.active {
        if a.healthy_threshold == 0 {
            error("active.healthy_threshold", "must be at least 1".into());
        }
        if a.unhealthy_threshold == 0 {
            error("active.unhealthy_threshold", "must be at least 1".into());
        }
        if a.port == Some(0) {
            error("active.port", "must not be 0".into());
        }
        match &a.probe {
            HealthProbe::Tcp => {}
            HealthProbe::Http {
                path,
                host,
                expected_statuses,
            } => {
                if !path.starts_with('/')
                    || http::uri::PathAndQuery::try_from(path.as_str()).is_err()
                {
                    error(
                        "active.http.path",
                        format!("{path:?} is not an absolute request path"),
                    );
                }
                if let Some(host) = host
                    && http::uri::Authority::try_from(host.as_str()).is_err()
                {
                    error("active.http.host", format!("{host:?} is not a valid host"));
                }
                if expected_statuses.is_empty() {
                    error(
                        "active.http.expected_statuses",
                        "must list at least one range".into(),
                    );
                }
                for (i, r) in expected_statuses.iter().enumerate() {
                    if !(100..=599).contains(r.start())
                        || !(100..=599).contains(r.end())
                        || r.start() > r.end()
                    {
                        error(
                            &format!("active.http.expected_statuses[{i}]"),
                            format!(
                                "{}-{} is not a range of HTTP statuses (100-599, start <= end)",
                                r.start(),
                                r.end()
                            ),
                        );
                    }
                }
            }
            HealthProbe::Grpc { authority, .. } => {
                if let Some(authority) = authority
                    && http::uri::Authority::try_from(authority.as_str()).is_err()
                {
                    error(
                        "active.grpc.authority",
                        format!("{authority:?} is not a valid authority"),
                    );
                }
            }
        }
    }

    if o.consecutive_5xx == Some(0) {
        error(
            "outlier_detection.consecutive_5xx",
            "must be at least 1 (or unset)".into(),
        );
    }
    if o.consecutive_gateway_failure == Some(0) {
        error(
            "outlier_detection.consecutive_gateway_failure",
            "must be at least 1 (or unset)".into(),
        );
    }
    if o.max_ejection_percent > 100 {
        error(
            "outlier_detection.max_ejection_percent",
            format!("must be at most 100, got {}", o.max_ejection_percent),
        );
    }
    if o.max_ejection_time < o.base_ejection_time {
        error(
            "outlier_detection.max_ejection_time",
            format!(
                "must not be below base_ejection_time ({:?} < {:?})",
                o.max_ejection_time, o.base_ejection_time
            ),
        );
    }
    let c = &policy.circuit_breakers;
    for (field, value) in [
        ("max_connections", c.max_connections),
        ("max_pending_requests", c.max_pending_requests),
        ("max_requests", c.max_requests),
    ] {
        if value == 0 {
            error(
                &format!("circuit_breakers.{field}"),
                "must be at least 1: a limit of 0 would refuse every request".into(),
            );
        }
    }
    if let Some(f) = &o.failure_percentage
        && f.threshold > 100
    {
        error(
            "outlier_detection.failure_percentage.threshold",
            format!("must be at most 100, got {}", f.threshold),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(wire: proto::HealthPolicy) -> (HealthPolicy, Vec<String>) {
        let mut errors = Vec::new();
        let policy = from_wire("backend \"b\"", Some(wire), &mut errors);
        let fields = errors.into_iter().map(|e| e.field).collect();
        (policy, fields)
    }

    #[test]
    fn absent_parts_and_zero_fields_take_the_defaults() {
        let mut errors = Vec::new();
        assert_eq!(from_wire("b", None, &mut errors), HealthPolicy::default());
        let (policy, errors) = decode(proto::HealthPolicy {
            active: Some(proto::ActiveHealthCheck {
                probe: Some(proto::active_health_check::Probe::Http(
                    proto::HttpProbe::default(),
                )),
                ..Default::default()
            }),
            outlier_detection: Some(proto::OutlierDetection::default()),
            circuit_breakers: Some(proto::CircuitBreakers::default()),
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            policy,
            HealthPolicy {
                active: Some(ActiveHealthCheck::new(HealthProbe::Http {
                    path: "/".into(),
                    host: None,
                    expected_statuses: vec![DEFAULT_EXPECTED_STATUSES],
                })),
                outlier_detection: OutlierDetection::default(),
                circuit_breakers: CircuitBreakers::default(),
            }
        );
    }

    #[test]
    fn zero_turns_a_detector_off() {
        let (policy, _) = decode(proto::HealthPolicy {
            outlier_detection: Some(proto::OutlierDetection {
                consecutive_gateway_failure: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(policy.outlier_detection, OutlierDetection::disabled());
        assert!(!policy.outlier_detection.is_enabled());
        assert!(OutlierDetection::default().is_enabled());
    }

    #[test]
    fn out_of_range_wire_values_name_their_field() {
        let (_, errors) = decode(proto::HealthPolicy {
            active: Some(proto::ActiveHealthCheck {
                port: 70_000,
                probe: Some(proto::active_health_check::Probe::Http(proto::HttpProbe {
                    expected_statuses: vec![proto::StatusRange {
                        start: 200,
                        end: 100_000,
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            }),
            outlier_detection: Some(proto::OutlierDetection {
                max_ejection_percent: Some(300),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            errors,
            [
                "health.outlier_detection.max_ejection_percent",
                "health.active.http.expected_statuses[0]",
                "health.active.port",
            ]
        );
        let (_, errors) = decode(proto::HealthPolicy {
            active: Some(proto::ActiveHealthCheck::default()),
            ..Default::default()
        });
        assert_eq!(errors, ["health.active.probe"]);
    }

    #[test]
    fn validation_checks_ranges_and_limits() {
        let policy = HealthPolicy {
            active: Some(ActiveHealthCheck {
                interval: Duration::ZERO,
                timeout: Duration::from_secs(100_000),
                ..ActiveHealthCheck::new(HealthProbe::Grpc {
                    service: String::new(),
                    authority: Some("bad authority".into()),
                })
            }),
            outlier_detection: OutlierDetection {
                consecutive_5xx: Some(0),
                base_ejection_time: Duration::from_secs(60),
                max_ejection_time: Duration::from_secs(30),
                ..OutlierDetection::default()
            },
            circuit_breakers: CircuitBreakers {
                max_requests: 0,
                ..CircuitBreakers::default()
            },
        };
        let mut errors = Vec::new();
        validate(&policy, "b", &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "health.active.interval",
                "health.active.timeout",
                "health.active.grpc.authority",
                "health.outlier_detection.consecutive_5xx",
                "health.outlier_detection.max_ejection_time",
                "health.circuit_breakers.max_requests",
            ]
        );
        let mut errors = Vec::new();
        validate(&HealthPolicy::default(), "b", &mut errors);
        assert!(errors.is_empty());
    }
}
