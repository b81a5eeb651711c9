use std::time::Duration;

use http::{HeaderName, Method};
use serde_json::json;

use super::*;
use crate::filters::*;
use crate::health::*;
use crate::model::*;
use crate::tls::*;

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBcertificatebody\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHsecretkeymaterial\n-----END PRIVATE KEY-----\n";
const CLIENT_KEY: &str =
    "-----BEGIN EC PRIVATE KEY-----\nMHcclientsecretmaterial\n-----END EC PRIVATE KEY-----\n";
const HMAC_SECRET: &str = "c2VjcmV0LWhtYWMta2V5";
const RSA_PRIVATE_EXPONENT: &str = "private-exponent-d";
const JWKS: &str = r#"{"keys": [
    {"kty": "oct", "kid": "h1", "alg": "HS256", "k": "c2VjcmV0LWhtYWMta2V5"},
    {"kty": "RSA", "kid": "r1", "n": "public-modulus", "e": "AQAB", "d": "private-exponent-d"}
]}"#;

/// A valid snapshot that uses every type of the model, most fields with values other than
/// their defaults, and three secrets: a listener key, a client certificate key and a JWKS with
/// an HMAC key and an RSA private key.
fn representative() -> ConfigSnapshot {
    let certificate = |names: &[&str], key: &str| TlsCertificate {
        source: "Secret shop/web-tls".into(),
        server_names: names.iter().map(|n| n.to_string()).collect(),
        cert_chain_pem: CERT.into(),
        private_key_pem: key.into(),
    };
    let backend = |name: &str, load_balancing| Backend {
        name: name.into(),
        protocol: UpstreamProtocol::Http1,
        endpoints: vec![Endpoint {
            address: "10.0.0.1:8080".parse().unwrap(),
            ready: true,
            weight: 1,
        }],
        load_balancing,
        health: HealthPolicy::default(),
        tls: None,
    };
    ConfigSnapshot {
        version: 42,
        listeners: vec![
            Listener {
                name: "http-80".into(),
                bind: None,
                port: 80,
                protocol: ListenerProtocol::Http,
                tls: None,
                https_redirect_port: Some(443),
            },
            Listener {
                name: "https-443".into(),
                bind: Some("::1".parse().unwrap()),
                port: 443,
                protocol: ListenerProtocol::Https,
                tls: Some(ListenerTls {
                    certificates: vec![certificate(&["shop.example.com"], KEY)],
                    default_certificate: Some(0),
                    client_auth: Some(ClientAuth {
                        ca_pem: CERT.into(),
                        optional: true,
                    }),
                }),
                https_redirect_port: None,
            },
        ],
        routes: vec![
            Route {
                name: "shop/web".into(),
                listener: "https-443".into(),
                hostnames: vec!["shop.example.com".into()],
                creation_timestamp: 1_700_000_000,
                dialect: RouteDialect::GatewayApi,
                rules: vec![
                    RouteRule {
                        matches: vec![RouteMatch {
                            path: PathMatch::RegularExpression("/users/[0-9]+".into()),
                            method: Some(Method::POST),
                            headers: vec![HeaderMatch {
                                name: HeaderName::from_static("x-version"),
                                value: "v[23]".into(),
                                kind: MatchType::RegularExpression,
                            }],
                            query_params: vec![QueryParamMatch {
                                name: "env".into(),
                                value: "canary".into(),
                                kind: MatchType::Exact,
                            }],
                        }],
                        backends: vec![
                            BackendRef {
                                backend: "shop/api:80".into(),
                                weight: 90,
                            },
                            BackendRef {
                                backend: "shop/api-canary:80".into(),
                                weight: 10,
                            },
                        ],
                        invalid_backend_weight: 0,
                        filters: RouteFilters {
                            request_headers: Some(HeaderModifier {
                                set: vec![("x-from".into(), "novaedge".into())],
                                add: vec![("x-tag".into(), "a".into())],
                                remove: vec!["x-debug".into()],
                            }),
                            response_headers: Some(HeaderModifier {
                                remove: vec!["server".into()],
                                ..HeaderModifier::default()
                            }),
                            url_rewrite: Some(UrlRewrite {
                                hostname: Some("api.internal".into()),
                                path: Some(PathModifier::ReplaceFullPath("/v2/users".into())),
                            }),
                            redirect: None,
                            mirrors: vec![RequestMirror {
                                backend: "shop/api-canary:80".into(),
                                fraction_ppm: 250_000,
                            }],
                            cors: Some(Cors {
                                allow_origins: vec!["https://*.example.com".into()],
                                allow_methods: vec!["GET".into(), "POST".into()],
                                allow_headers: vec!["authorization".into()],
                                expose_headers: Vec::new(),
                                allow_credentials: true,
                                max_age: Duration::from_secs(600),
                            }),
                            ip_filter: Some(IpFilter {
                                allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
                                deny: Vec::new(),
                                xff_trusted_hops: 1,
                            }),
                            jwt: Some(JwtAuthentication {
                                keys: JwtKeys::Inline(JWKS.into()),
                                jwks_ca_pem: String::new(),
                                refresh: Duration::from_secs(600),
                                max_stale: Duration::from_secs(3600),
                                issuers: vec!["https://auth.example.com".into()],
                                audiences: Vec::new(),
                                algorithms: vec!["HS256".into(), "RS256".into()],
                                clock_skew: Duration::from_millis(1500),
                                required_claims: vec!["exp".into()],
                                locations: vec![
                                    TokenLocation::AuthorizationBearer,
                                    TokenLocation::Header {
                                        name: "x-token".into(),
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
                                backend_request: Some(Duration::from_millis(2500)),
                            },
                            retry: Some(RetryPolicy::new(3)),
                            max_request_body_bytes: Some(1 << 20),
                        }
                        .into(),
                    },
                    RouteRule {
                        matches: vec![RouteMatch {
                            path: PathMatch::Prefix("/old".into()),
                            ..RouteMatch::default()
                        }],
                        backends: Vec::new(),
                        invalid_backend_weight: 0,
                        filters: RouteFilters {
                            redirect: Some(RequestRedirect {
                                scheme: Some("https".into()),
                                port: Some(8443),
                                path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
                                status_code: 301,
                                ..RequestRedirect::default()
                            }),
                            ..RouteFilters::default()
                        }
                        .into(),
                    },
                ],
            },
            Route {
                name: "ingress:shop/web".into(),
                listener: "http-80".into(),
                hostnames: Vec::new(),
                creation_timestamp: 0,
                dialect: RouteDialect::Ingress,
                rules: vec![RouteRule {
                    matches: vec![RouteMatch {
                        path: PathMatch::Exact("/".into()),
                        ..RouteMatch::default()
                    }],
                    backends: vec![BackendRef {
                        backend: "shop/api:80".into(),
                        weight: 1,
                    }],
                    invalid_backend_weight: 0,
                    filters: RouteFilters::default().into(),
                }],
            },
        ],
        backends: vec![
            Backend {
                name: "shop/api:80".into(),
                protocol: UpstreamProtocol::H2c,
                endpoints: vec![
                    Endpoint {
                        address: "10.0.0.1:9000".parse().unwrap(),
                        ready: true,
                        weight: 1,
                    },
                    Endpoint {
                        address: "[fd00::2]:9000".parse().unwrap(),
                        ready: false,
                        weight: 3,
                    },
                ],
                load_balancing: LoadBalancing {
                    policy: LbPolicy::RingHash {
                        points_per_weight: 160,
                        max_ring_size: 1 << 20,
                    },
                    hash_on: Some(HashOn::Header(HeaderName::from_static("x-user"))),
                    panic_threshold_percent: 30,
                },
                health: HealthPolicy {
                    active: Some(ActiveHealthCheck {
                        port: Some(9100),
                        ..ActiveHealthCheck::new(HealthProbe::Http {
                            path: "/healthz".into(),
                            host: None,
                            expected_statuses: vec![200..=299, 302..=302],
                        })
                    }),
                    outlier_detection: OutlierDetection {
                        consecutive_5xx: Some(5),
                        failure_percentage: Some(FailurePercentageEjection::default()),
                        ..OutlierDetection::default()
                    },
                    circuit_breakers: CircuitBreakers {
                        max_requests: 200,
                        ..CircuitBreakers::default()
                    },
                },
                tls: Some(UpstreamTls {
                    server_name: "api.internal".into(),
                    ca_pem: CERT.into(),
                    client_certificate: Some(certificate(&[], CLIENT_KEY)),
                }),
            },
            backend(
                "shop/api-canary:80",
                LoadBalancing {
                    policy: LbPolicy::PeakEwma {
                        decay: Duration::from_secs(10),
                        default_rtt: Duration::from_millis(30),
                    },
                    ..LoadBalancing::default()
                },
            ),
        ],
        vips: Vec::new(),
    }
}

/// Compares line by line, so that a failure names the first line that differs.
fn assert_same_lines(actual: &str, expected: &str) {
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "line {} differs; whole output:\n{actual}", i + 1);
    }
    assert_eq!(
        actual.lines().count(),
        expected.lines().count(),
        "whole output:\n{actual}"
    );
    assert_eq!(actual, expected);
}

/// The whole view of `representative()`, reviewed by hand: it documents the format.
#[test]
fn the_view_of_a_representative_snapshot() {
    let snapshot = representative();
    snapshot.validate().expect("the sample is a valid snapshot");
    assert_same_lines(&to_yaml(&snapshot), include_str!("representative.yaml"));
}

#[test]
fn secrets_never_appear_in_either_view() {
    let snapshot = representative();
    for text in [to_yaml(&snapshot), to_json(&snapshot)] {
        for secret in [
            "secretkeymaterial",
            "clientsecretmaterial",
            "PRIVATE KEY",
            HMAC_SECRET,
            RSA_PRIVATE_EXPONENT,
        ] {
            assert!(!text.contains(secret), "{secret:?} shown in:\n{text}");
        }
        for len in [KEY.len(), CLIENT_KEY.len(), HMAC_SECRET.len()] {
            let redacted = format!("<redacted: {len} bytes>");
            assert!(text.contains(&redacted), "no {redacted:?} in:\n{text}");
        }
        // Public material is shown as it is.
        assert!(text.contains("MIIBcertificatebody"), "{text}");
        assert!(text.contains("public-modulus"), "{text}");
    }
}

#[test]
fn jwks_secrets_are_found_wherever_they_are() {
    let view = |keys: JwtKeys| serde_json::to_value(&keys).expect("serializable");
    // A single key rather than a set.
    assert_eq!(
        view(JwtKeys::Inline(r#"{"kty": "oct", "k": "abcd"}"#.into())),
        json!({"jwks_inline": {"kty": "oct", "k": "<redacted: 4 bytes>"}})
    );
    // Secret members that are not strings (`oth` is a list of objects).
    assert_eq!(
        view(JwtKeys::Inline(
            r#"{"keys": [{"kty": "RSA", "n": "m", "oth": [{"r": "x"}]}]}"#.into()
        )),
        json!({"jwks_inline": {"keys": [{"kty": "RSA", "n": "m", "oth": "<redacted: 11 bytes>"}]}})
    );
    // Text that is not a JSON object cannot be told apart: all of it is hidden.
    for text in ["not json: abcd", r#"[{"k": "abcd"}]"#] {
        assert_eq!(
            view(JwtKeys::Inline(text.into())),
            json!({"jwks_inline": format!("<redacted: {} bytes> (not a JSON object)", text.len())})
        );
    }
    assert_eq!(
        view(JwtKeys::Url(
            "https://user:pw@auth.example.com/jwks?at=@".into()
        )),
        json!({"jwks_url": "https://<redacted>@auth.example.com/jwks?at=@"})
    );
    assert_eq!(
        view(JwtKeys::Url("https://auth.example.com/a@b".into())),
        json!({"jwks_url": "https://auth.example.com/a@b"})
    );
    assert_eq!(
        view(JwtKeys::File("/etc/novaedge/jwks.json".into())),
        json!({"jwks_file": "/etc/novaedge/jwks.json"})
    );
}

#[test]
fn yaml_and_json_are_one_view() {
    let snapshot = representative();
    let from_yaml: Value = serde_norway::from_str(&to_yaml(&snapshot)).expect("YAML");
    let from_json: Value = serde_json::from_str(&to_json(&snapshot)).expect("JSON");
    assert_eq!(from_yaml, from_json);
}

#[test]
fn the_view_is_deterministic_in_snapshot_order_and_survives_the_wire() {
    let snapshot = representative();
    let yaml = to_yaml(&snapshot);
    assert_eq!(to_yaml(&snapshot.clone()), yaml);
    let decoded = ConfigSnapshot::decode(&snapshot.encode_to_vec()).expect("valid");
    assert_eq!(to_yaml(&decoded), yaml);
    assert_eq!(to_json(&decoded), to_json(&snapshot));

    // Lists keep the snapshot's order; nothing is sorted.
    let mut swapped = snapshot.clone();
    swapped.routes.reverse();
    swapped.backends.reverse();
    let names = |s: &ConfigSnapshot, list: &str| -> Vec<String> {
        let view = serde_json::to_value(s).expect("serializable");
        view[list]
            .as_array()
            .expect("a list")
            .iter()
            .map(|item| item["name"].as_str().expect("a name").to_owned())
            .collect()
    };
    assert_eq!(names(&snapshot, "routes"), ["shop/web", "ingress:shop/web"]);
    assert_eq!(names(&swapped, "routes"), ["ingress:shop/web", "shop/web"]);
    assert_eq!(
        names(&swapped, "backends"),
        ["shop/api-canary:80", "shop/api:80"]
    );
}

#[test]
fn durations_print_in_gateway_api_form() {
    for (duration, text) in [
        (Duration::ZERO, "0s"),
        (Duration::from_millis(90), "90ms"),
        (Duration::from_millis(1500), "1s500ms"),
        (Duration::from_secs(600), "10m"),
        (Duration::from_secs(5400), "1h30m"),
        (Duration::from_secs(86_400), "24h"),
        (Duration::from_millis(3_723_004), "1h2m3s4ms"),
        // Finer than Gateway API's grammar: shown rather than dropped.
        (Duration::new(1, 1_500), "1s1us500ns"),
    ] {
        assert_eq!(Dur(duration).to_string(), text, "{duration:?}");
    }
}

#[test]
fn every_variant_has_a_plain_form() {
    fn view<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).expect("serializable")
    }
    assert_eq!(view(&LbPolicy::RoundRobin), json!("round_robin"));
    assert_eq!(view(&LbPolicy::Random), json!("random"));
    assert_eq!(
        view(&LbPolicy::LeastRequest { choices: 2 }),
        json!({"least_request": {"choices": 2}})
    );
    assert_eq!(
        view(&LbPolicy::Maglev { table_size: 65_537 }),
        json!({"maglev": {"table_size": 65_537}})
    );
    assert_eq!(view(&HashOn::SourceIp), json!("source_ip"));
    assert_eq!(view(&HashOn::Cookie("s".into())), json!({"cookie": "s"}));
    assert_eq!(
        view(&HashOn::QueryParam("u".into())),
        json!({"query_param": "u"})
    );
    assert_eq!(view(&HealthProbe::Tcp), json!("tcp"));
    assert_eq!(
        view(&HealthProbe::Grpc {
            service: String::new(),
            authority: Some("api.internal".into())
        }),
        json!({"grpc": {"authority": "api.internal"}})
    );
    assert_eq!(view(&RateLimitKey::Global), json!("global"));
    assert_eq!(
        view(&RateLimitKey::ClientIp { ipv6_prefix: 64 }),
        json!({"client_ip": {"ipv6_prefix": 64}})
    );
    assert_eq!(
        view(&RateLimitKey::Header("x-api-key".into())),
        json!({"header": "x-api-key"})
    );
    assert_eq!(
        view(&TokenLocation::QueryParam("token".into())),
        json!({"query_param": "token"})
    );
    assert_eq!(view(&UpstreamProtocol::Http1), json!("http1"));
    assert_eq!(view(&RouteDialect::GatewayApi), json!("gateway_api"));
    assert_eq!(view(&MatchType::Exact), json!("exact"));
}

#[test]
fn vips_show_their_announcement_and_never_a_bgp_password() {
    use crate::{BgpAnnounce, BgpPeer, Vip, VipAnnounce};
    let snapshot = ConfigSnapshot {
        vips: vec![
            Vip {
                name: "infra/web".into(),
                addresses: vec!["192.0.2.10".parse().unwrap()],
                announce: VipAnnounce::L2 { interface: None },
            },
            Vip {
                name: "infra/api".into(),
                addresses: vec!["2001:db8::1".parse().unwrap()],
                announce: VipAnnounce::Bgp(BgpAnnounce {
                    local_asn: 65_001,
                    router_id: None,
                    peers: vec![BgpPeer {
                        address: "10.0.0.1".parse().unwrap(),
                        asn: 65_000,
                        port: 179,
                        hold_time: Duration::from_secs(90),
                        password: Some("md5-key-do-not-show".into()),
                    }],
                }),
            },
        ],
        ..ConfigSnapshot::default()
    };
    let yaml = crate::dump::to_yaml(&snapshot);
    assert!(!yaml.contains("md5-key-do-not-show"), "{yaml}");
    assert!(!format!("{snapshot:?}").contains("md5-key-do-not-show"));
    for expected in [
        "- name: infra/web",
        "  - 192.0.2.10",
        "  l2: {}",
        "  bgp:",
        "    local_asn: 65001",
        "    - address: 10.0.0.1",
        "      hold_time: 1m30s",
        "      password: '<redacted: 19 bytes>'",
    ] {
        assert!(
            yaml.lines().any(|l| l.ends_with(expected)),
            "{expected:?} in\n{yaml}"
        );
    }
}
