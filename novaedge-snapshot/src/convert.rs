//! Between the wire types and the domain types. Decoding is where untrusted input meets the
//! model, so every parse error names its object and field, and all of them are reported.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{HeaderName, Method};
use prost::Message;

use crate::error::{FieldError, ValidationErrors};
use crate::model::*;
use crate::proto;

impl ConfigSnapshot {
    /// Decodes and validates a protobuf-encoded snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Self, ValidationErrors> {
        let wire = proto::ConfigSnapshot::decode(bytes).map_err(|e| {
            ValidationErrors::one(FieldError::new("snapshot", "(encoding)", e.to_string()))
        })?;
        Self::try_from(wire)
    }

    /// Encodes the snapshot as protobuf.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        proto::ConfigSnapshot::from(self).encode_to_vec()
    }
}

impl TryFrom<proto::ConfigSnapshot> for ConfigSnapshot {
    type Error = ValidationErrors;

    /// Parses every field, then runs [`ConfigSnapshot::validate`].
    fn try_from(wire: proto::ConfigSnapshot) -> Result<Self, Self::Error> {
        let mut errors = Vec::new();
        let listeners = wire
            .listeners
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| listener(i, l, &mut errors))
            .collect();
        let routes = wire
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| route(i, r, &mut errors))
            .collect();
        let backends = wire
            .backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| backend(i, b, &mut errors))
            .collect();
        let vips = crate::vip::vips_from_wire(wire.vips, &mut errors);
        ValidationErrors::check(errors)?;
        let snapshot = ConfigSnapshot {
            version: wire.version,
            listeners,
            routes,
            backends,
            vips,
        };
        snapshot.validate()?;
        Ok(snapshot)
    }
}

pub(crate) fn object_name(kind: &str, index: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{kind}s[{index}]")
    } else {
        format!("{kind} {name:?}")
    }
}

fn listener(i: usize, l: proto::Listener, errors: &mut Vec<FieldError>) -> Option<Listener> {
    let object = object_name("listener", i, &l.name);
    let before = errors.len();
    let bind = if l.bind_address.is_empty() {
        None
    } else {
        match l.bind_address.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                errors.push(FieldError::new(
                    &object,
                    "bind_address",
                    format!("{:?} is not an IP address", l.bind_address),
                ));
                None
            }
        }
    };
    let port = u16::try_from(l.port).unwrap_or_else(|_| {
        errors.push(FieldError::new(
            &object,
            "port",
            format!("{} is not a TCP port", l.port),
        ));
        0
    });
    let protocol = match proto::ListenerProtocol::try_from(l.protocol) {
        Ok(proto::ListenerProtocol::Http) => ListenerProtocol::Http,
        Ok(proto::ListenerProtocol::Https) => ListenerProtocol::Https,
        _ => {
            errors.push(FieldError::new(
                &object,
                "protocol",
                format!("unsupported listener protocol {}", l.protocol),
            ));
            ListenerProtocol::Http
        }
    };
    let https_redirect_port = l.https_redirect_port.and_then(|p| {
        u16::try_from(p)
            .map_err(|_| {
                errors.push(FieldError::new(
                    &object,
                    "https_redirect_port",
                    format!("{p} is not a TCP port"),
                ))
            })
            .ok()
    });
    (errors.len() == before).then_some(Listener {
        name: l.name,
        bind,
        port,
        protocol,
        tls: l.tls.map(crate::tls::listener_tls_from_wire),
        https_redirect_port,
    })
}

fn route(i: usize, r: proto::Route, errors: &mut Vec<FieldError>) -> Route {
    let object = object_name("route", i, &r.name);
    let rules = r
        .rules
        .into_iter()
        .enumerate()
        .map(|(k, rule)| RouteRule {
            matches: rule
                .matches
                .into_iter()
                .enumerate()
                .map(|(j, m)| route_match(&object, &format!("rules[{k}].matches[{j}]"), m, errors))
                .collect(),
            backends: rule
                .backends
                .into_iter()
                .map(|b| BackendRef {
                    backend: b.backend,
                    weight: b.weight,
                })
                .collect(),
            invalid_backend_weight: rule.invalid_backend_weight,
            filters: {
                let mut filters = crate::filters::from_wire(
                    &object,
                    &format!("rules[{k}].filters"),
                    rule.filters,
                    errors,
                );
                crate::filters::timeouts_and_retry_from_wire(
                    &mut filters,
                    rule.timeouts,
                    rule.retry,
                );
                filters.max_request_body_bytes = rule.max_request_body_bytes;
                filters.into()
            },
        })
        .collect();
    Route {
        name: r.name,
        listener: r.listener,
        hostnames: r.hostnames,
        rules,
        creation_timestamp: r.creation_timestamp,
        dialect: match proto::RouteDialect::try_from(r.dialect) {
            Ok(proto::RouteDialect::Ingress) => RouteDialect::Ingress,
            Ok(proto::RouteDialect::GatewayApi) => RouteDialect::GatewayApi,
            Err(_) => {
                errors.push(FieldError::new(
                    &object,
                    "dialect",
                    format!("unknown route dialect {}", r.dialect),
                ));
                RouteDialect::GatewayApi
            }
        },
    }
}

fn route_match(
    object: &str,
    field: &str,
    m: proto::RouteMatch,
    errors: &mut Vec<FieldError>,
) -> RouteMatch {
    let path = match m.path {
        None => PathMatch::Prefix("/".to_owned()),
        Some(p) => match proto::PathMatchType::try_from(p.r#type) {
            Ok(proto::PathMatchType::Exact) => PathMatch::Exact(p.value),
            Ok(proto::PathMatchType::Prefix) => PathMatch::Prefix(p.value),
            Ok(proto::PathMatchType::RegularExpression) => PathMatch::RegularExpression(p.value),
            _ => {
                errors.push(FieldError::new(
                    object,
                    format!("{field}.path.type"),
                    format!("unsupported path match type {}", p.r#type),
                ));
                PathMatch::Prefix(p.value)
            }
        },
    };
    let method = if m.method.is_empty() {
        None
    } else {
        match Method::from_bytes(m.method.as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => {
                errors.push(FieldError::new(
                    object,
                    format!("{field}.method"),
                    format!("{:?} is not an HTTP method", m.method),
                ));
                None
            }
        }
    };
    let headers = m
        .headers
        .into_iter()
        .enumerate()
        .filter_map(|(j, h)| match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(name) => Some(HeaderMatch {
                name,
                kind: match_type(
                    h.r#type,
                    object,
                    &format!("{field}.headers[{j}].type"),
                    errors,
                ),
                value: h.value,
            }),
            Err(_) => {
                errors.push(FieldError::new(
                    object,
                    format!("{field}.headers[{j}].name"),
                    format!("{:?} is not a valid header name", h.name),
                ));
                None
            }
        })
        .collect();
    let query_params = m
        .query_params
        .into_iter()
        .enumerate()
        .map(|(j, q)| QueryParamMatch {
            kind: match_type(
                q.r#type,
                object,
                &format!("{field}.query_params[{j}].type"),
                errors,
            ),
            name: q.name,
            value: q.value,
        })
        .collect();
    RouteMatch {
        path,
        method,
        headers,
        query_params,
    }
}

fn match_type(wire: i32, object: &str, field: &str, errors: &mut Vec<FieldError>) -> MatchType {
    match proto::StringMatchType::try_from(wire) {
        Ok(proto::StringMatchType::Exact) => MatchType::Exact,
        Ok(proto::StringMatchType::RegularExpression) => MatchType::RegularExpression,
        Err(_) => {
            errors.push(FieldError::new(
                object,
                field,
                format!("unsupported match type {wire}"),
            ));
            MatchType::Exact
        }
    }
}

fn match_type_to_wire(kind: MatchType) -> i32 {
    let wire = match kind {
        MatchType::Exact => proto::StringMatchType::Exact,
        MatchType::RegularExpression => proto::StringMatchType::RegularExpression,
    };
    wire as i32
}

fn backend(i: usize, b: proto::Backend, errors: &mut Vec<FieldError>) -> Backend {
    let object = object_name("backend", i, &b.name);
    let protocol = match proto::UpstreamProtocol::try_from(b.protocol) {
        Ok(proto::UpstreamProtocol::Http1) => UpstreamProtocol::Http1,
        Ok(proto::UpstreamProtocol::H2c) => UpstreamProtocol::H2c,
        _ => {
            errors.push(FieldError::new(
                &object,
                "protocol",
                format!("unsupported upstream protocol {}", b.protocol),
            ));
            UpstreamProtocol::Http1
        }
    };
    let endpoints = b
        .endpoints
        .into_iter()
        .enumerate()
        .filter_map(|(j, e)| {
            let field = format!("endpoints[{j}]");
            let ip = e.address.parse::<IpAddr>().map_err(|_| {
                errors.push(FieldError::new(
                    &object,
                    format!("{field}.address"),
                    format!("{:?} is not an IP address", e.address),
                ))
            });
            let port = u16::try_from(e.port).map_err(|_| {
                errors.push(FieldError::new(
                    &object,
                    format!("{field}.port"),
                    format!("{} is not a TCP port", e.port),
                ))
            });
            Some(Endpoint {
                address: SocketAddr::new(ip.ok()?, port.ok()?),
                ready: e.ready,
                weight: e.weight.max(1),
            })
        })
        .collect();
    let load_balancing = match b.load_balancing {
        Some(lb) => load_balancing(&object, lb, errors),
        None => LoadBalancing::default(),
    };
    let health = crate::health::from_wire(&object, b.health, errors);
    Backend {
        name: b.name,
        protocol,
        endpoints,
        load_balancing,
        health,
        tls: b.tls.map(crate::tls::upstream_tls_from_wire),
    }
}

fn load_balancing(
    object: &str,
    lb: proto::LoadBalancing,
    errors: &mut Vec<FieldError>,
) -> LoadBalancing {
    use proto::load_balancing::Policy;
    fn or(value: u64, default: u64) -> u64 {
        if value == 0 { default } else { value }
    }
    let policy = match lb.policy {
        None | Some(Policy::RoundRobin(_)) => LbPolicy::RoundRobin,
        Some(Policy::Random(_)) => LbPolicy::Random,
        Some(Policy::LeastRequest(p)) => LbPolicy::LeastRequest {
            choices: if p.choices == 0 { 2 } else { p.choices },
        },
        Some(Policy::PeakEwma(p)) => LbPolicy::PeakEwma {
            decay: Duration::from_millis(or(p.decay_ms, 10_000)),
            default_rtt: Duration::from_millis(or(p.default_rtt_ms, 30)),
        },
        Some(Policy::RingHash(p)) => LbPolicy::RingHash {
            points_per_weight: if p.points_per_weight == 0 {
                160
            } else {
                p.points_per_weight
            },
            max_ring_size: if p.max_ring_size == 0 {
                1 << 20
            } else {
                p.max_ring_size
            },
        },
        Some(Policy::Maglev(p)) => LbPolicy::Maglev {
            table_size: if p.table_size == 0 {
                65_537
            } else {
                p.table_size
            },
        },
    };
    use proto::hash_on::Source;
    let hash_on = match lb.hash_on.and_then(|h| h.source) {
        None | Some(Source::SourceIp(false)) => None,
        Some(Source::SourceIp(true)) => Some(HashOn::SourceIp),
        Some(Source::Cookie(c)) => Some(HashOn::Cookie(c)),
        Some(Source::QueryParam(q)) => Some(HashOn::QueryParam(q)),
        Some(Source::Header(h)) => match HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(HashOn::Header(name)),
            Err(_) => {
                errors.push(FieldError::new(
                    object,
                    "load_balancing.hash_on.header",
                    format!("{h:?} is not a valid header name"),
                ));
                None
            }
        },
    };
    let panic_threshold_percent = match lb.panic_threshold_percent {
        None => DEFAULT_PANIC_THRESHOLD_PERCENT,
        Some(p) => u8::try_from(p).unwrap_or(u8::MAX),
    };
    LoadBalancing {
        policy,
        hash_on,
        panic_threshold_percent,
    }
}

fn load_balancing_to_wire(lb: &LoadBalancing) -> proto::LoadBalancing {
    use proto::hash_on::Source;
    use proto::load_balancing::Policy;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    proto::LoadBalancing {
        policy: Some(match lb.policy {
            LbPolicy::RoundRobin => Policy::RoundRobin(proto::RoundRobin {}),
            LbPolicy::Random => Policy::Random(proto::Random {}),
            LbPolicy::LeastRequest { choices } => {
                Policy::LeastRequest(proto::LeastRequest { choices })
            }
            LbPolicy::PeakEwma { decay, default_rtt } => Policy::PeakEwma(proto::PeakEwma {
                decay_ms: millis(decay),
                default_rtt_ms: millis(default_rtt),
            }),
            LbPolicy::RingHash {
                points_per_weight,
                max_ring_size,
            } => Policy::RingHash(proto::RingHash {
                points_per_weight,
                max_ring_size,
            }),
            LbPolicy::Maglev { table_size } => Policy::Maglev(proto::Maglev { table_size }),
        }),
        hash_on: lb.hash_on.as_ref().map(|h| proto::HashOn {
            source: Some(match h {
                HashOn::Header(name) => Source::Header(name.to_string()),
                HashOn::Cookie(c) => Source::Cookie(c.clone()),
                HashOn::SourceIp => Source::SourceIp(true),
                HashOn::QueryParam(q) => Source::QueryParam(q.clone()),
            }),
        }),
        panic_threshold_percent: Some(lb.panic_threshold_percent.into()),
    }
}

impl From<&ConfigSnapshot> for proto::ConfigSnapshot {
    fn from(s: &ConfigSnapshot) -> Self {
        proto::ConfigSnapshot {
            version: s.version,
            listeners: s
                .listeners
                .iter()
                .map(|l| proto::Listener {
                    name: l.name.clone(),
                    bind_address: l.bind.map(|ip| ip.to_string()).unwrap_or_default(),
                    port: l.port.into(),
                    protocol: match l.protocol {
                        ListenerProtocol::Http => proto::ListenerProtocol::Http,
                        ListenerProtocol::Https => proto::ListenerProtocol::Https,
                    } as i32,
                    tls: l.tls.as_ref().map(crate::tls::listener_tls_to_wire),
                    https_redirect_port: l.https_redirect_port.map(u32::from),
                })
                .collect(),
            routes: s.routes.iter().map(route_to_wire).collect(),
            backends: s
                .backends
                .iter()
                .map(|b| proto::Backend {
                    name: b.name.clone(),
                    protocol: match b.protocol {
                        UpstreamProtocol::Http1 => proto::UpstreamProtocol::Http1,
                        UpstreamProtocol::H2c => proto::UpstreamProtocol::H2c,
                    } as i32,
                    endpoints: b
                        .endpoints
                        .iter()
                        .map(|e| proto::Endpoint {
                            address: e.address.ip().to_string(),
                            port: e.address.port().into(),
                            ready: e.ready,
                            weight: e.weight,
                        })
                        .collect(),
                    load_balancing: Some(load_balancing_to_wire(&b.load_balancing)),
                    health: Some(crate::health::to_wire(&b.health)),
                    tls: b.tls.as_ref().map(crate::tls::upstream_tls_to_wire),
                })
                .collect(),
            vips: s.vips.iter().map(crate::vip::vip_to_wire).collect(),
        }
    }
}

fn route_to_wire(r: &Route) -> proto::Route {
    proto::Route {
        name: r.name.clone(),
        listener: r.listener.clone(),
        hostnames: r.hostnames.clone(),
        creation_timestamp: r.creation_timestamp,
        dialect: match r.dialect {
            RouteDialect::GatewayApi => proto::RouteDialect::GatewayApi,
            RouteDialect::Ingress => proto::RouteDialect::Ingress,
        } as i32,
        rules: r
            .rules
            .iter()
            .map(|rule| proto::RouteRule {
                matches: rule
                    .matches
                    .iter()
                    .map(|m| proto::RouteMatch {
                        path: Some(match &m.path {
                            PathMatch::Exact(v) => proto::PathMatch {
                                r#type: proto::PathMatchType::Exact as i32,
                                value: v.clone(),
                            },
                            PathMatch::Prefix(v) => proto::PathMatch {
                                r#type: proto::PathMatchType::Prefix as i32,
                                value: v.clone(),
                            },
                            PathMatch::RegularExpression(v) => proto::PathMatch {
                                r#type: proto::PathMatchType::RegularExpression as i32,
                                value: v.clone(),
                            },
                        }),
                        method: m.method.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                        headers: m
                            .headers
                            .iter()
                            .map(|h| proto::HeaderMatch {
                                name: h.name.to_string(),
                                value: h.value.clone(),
                                r#type: match_type_to_wire(h.kind),
                            })
                            .collect(),
                        query_params: m
                            .query_params
                            .iter()
                            .map(|q| proto::QueryParamMatch {
                                name: q.name.clone(),
                                value: q.value.clone(),
                                r#type: match_type_to_wire(q.kind),
                            })
                            .collect(),
                    })
                    .collect(),
                backends: rule
                    .backends
                    .iter()
                    .map(|b| proto::BackendRef {
                        backend: b.backend.clone(),
                        weight: b.weight,
                    })
                    .collect(),
                filters: crate::filters::to_wire(&rule.filters),
                timeouts: crate::filters::timeouts_to_wire(&rule.filters),
                retry: crate::filters::retry_to_wire(&rule.filters),
                invalid_backend_weight: rule.invalid_backend_weight,
                max_request_body_bytes: rule.filters.max_request_body_bytes,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::*;

    fn sample() -> ConfigSnapshot {
        ConfigSnapshot {
            version: 7,
            listeners: vec![Listener {
                name: "http".into(),
                bind: Some("127.0.0.1".parse().unwrap()),
                port: 8080,
                protocol: ListenerProtocol::Http,
                tls: None,
                https_redirect_port: None,
            }],
            routes: vec![Route {
                name: "default/web".into(),
                listener: "http".into(),
                hostnames: vec!["example.com".into(), "*.example.org".into()],
                creation_timestamp: 1_700_000_000,
                dialect: RouteDialect::Ingress,
                rules: vec![RouteRule {
                    matches: vec![RouteMatch {
                        path: PathMatch::Exact("/a".into()),
                        method: Some(Method::POST),
                        headers: vec![HeaderMatch {
                            name: HeaderName::from_static("x-env"),
                            value: "canary|beta".into(),
                            kind: MatchType::RegularExpression,
                        }],
                        query_params: vec![QueryParamMatch {
                            name: "v".into(),
                            value: "2".into(),
                            kind: MatchType::Exact,
                        }],
                    }],
                    backends: vec![BackendRef {
                        backend: "default/web:80".into(),
                        weight: 3,
                    }],
                    invalid_backend_weight: 2,
                    filters: crate::RouteFilters {
                        request_headers: Some(crate::HeaderModifier {
                            set: vec![("x-a".into(), "1".into())],
                            ..Default::default()
                        }),
                        max_request_body_bytes: Some(0),
                        ..Default::default()
                    }
                    .into(),
                }],
            }],
            backends: vec![Backend {
                tls: None,
                name: "default/web:80".into(),
                protocol: UpstreamProtocol::H2c,
                endpoints: vec![
                    Endpoint {
                        address: "10.0.0.1:8080".parse().unwrap(),
                        ready: true,
                        weight: 1,
                    },
                    Endpoint {
                        address: "[fd00::1]:8080".parse().unwrap(),
                        ready: false,
                        weight: 2,
                    },
                ],
                load_balancing: LoadBalancing {
                    policy: LbPolicy::Maglev { table_size: 65_537 },
                    hash_on: Some(HashOn::Header(HeaderName::from_static("x-user"))),
                    panic_threshold_percent: 30,
                },
                health: HealthPolicy {
                    active: Some(ActiveHealthCheck {
                        port: Some(9000),
                        jitter: Duration::ZERO,
                        ..ActiveHealthCheck::new(HealthProbe::Http {
                            path: "/healthz".into(),
                            host: Some("web.internal".into()),
                            expected_statuses: vec![200..=204, 302..=302],
                        })
                    }),
                    outlier_detection: OutlierDetection {
                        consecutive_5xx: Some(7),
                        always_eject_one_host: false,
                        success_rate: Some(SuccessRateEjection::default()),
                        ..OutlierDetection::default()
                    },
                    circuit_breakers: CircuitBreakers {
                        max_requests: 10,
                        max_retries: 0,
                        ..CircuitBreakers::default()
                    },
                },
            }],
            vips: vec![
                crate::Vip {
                    name: "infra/l2".into(),
                    addresses: vec![
                        "192.0.2.10".parse().unwrap(),
                        "2001:db8::10".parse().unwrap(),
                    ],
                    announce: crate::VipAnnounce::L2 {
                        interface: Some("eth0".into()),
                    },
                },
                crate::Vip {
                    name: "infra/bgp".into(),
                    addresses: vec!["192.0.2.20".parse().unwrap()],
                    announce: crate::VipAnnounce::Bgp(crate::BgpAnnounce {
                        local_asn: 4_200_000_001,
                        router_id: Some("10.0.0.1".parse().unwrap()),
                        peers: vec![crate::BgpPeer {
                            address: "10.0.0.254".parse().unwrap(),
                            asn: 65_000,
                            port: 179,
                            hold_time: Duration::from_secs(9),
                            password: Some("s3cret".into()),
                        }],
                    }),
                },
                crate::Vip {
                    name: "infra/ospf".into(),
                    addresses: vec!["192.0.2.30".parse().unwrap()],
                    announce: crate::VipAnnounce::Ospf(crate::OspfAnnounce {
                        area: "0.0.0.0".parse().unwrap(),
                        interfaces: vec![crate::OspfInterface {
                            name: "eth1".into(),
                            hello_interval: Duration::from_secs(1),
                            dead_interval: Duration::from_secs(4),
                            priority: 0,
                            network: crate::OspfNetwork::PointToPoint,
                            cost: 10,
                        }],
                    }),
                },
            ],
        }
    }

    #[test]
    fn round_trips_through_protobuf() {
        let s = sample();
        let decoded = ConfigSnapshot::decode(&s.encode_to_vec()).expect("valid");
        assert_eq!(decoded, s);
    }

    #[test]
    fn decode_names_object_and_field_of_every_error() {
        let mut wire = proto::ConfigSnapshot::from(&sample());
        wire.backends[0].endpoints[0].address = "not-an-ip".into();
        wire.routes[0].rules[0].matches[0].method = "BAD METHOD".into();
        wire.routes[0].rules[0].backends[0].backend = "default/missing:80".into();
        let err = ConfigSnapshot::try_from(wire.clone()).unwrap_err();
        let fields: Vec<_> = err
            .errors()
            .iter()
            .map(|e| (e.object.as_str(), e.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("route \"default/web\"", "rules[0].matches[0].method"),
                ("backend \"default/web:80\"", "endpoints[0].address"),
            ]
        );
        // Parse errors stop before cross-reference checks; fix them and the dangling ref shows.
        wire.backends[0].endpoints[0].address = "10.0.0.1".into();
        wire.routes[0].rules[0].matches[0].method = "GET".into();
        let err = ConfigSnapshot::try_from(wire).unwrap_err();
        assert_eq!(err.errors().len(), 1);
        assert_eq!(err.errors()[0].field, "rules[0].backends[0].backend");
        assert!(err.to_string().contains("default/missing:80"), "{err}");
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        let err = ConfigSnapshot::decode(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.errors()[0].field, "(encoding)");
    }
}
