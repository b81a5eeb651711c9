//! Service health annotations, through the public path a user's manifests take: YAML text
//! (or files) parsed into objects, translated into a snapshot, and diagnostics as printed.

use std::time::Duration;

use novaedge_k8s::objects::{load_paths, parse_yaml};
use novaedge_k8s::{
    CIRCUIT_BREAKER_ANNOTATION, HEALTH_CHECK_ANNOTATION, OUTLIER_DETECTION_ANNOTATION,
    TranslateOptions, Translation, translate,
};
use novaedge_snapshot::{
    ActiveHealthCheck, CircuitBreakers, DEFAULT_EXPECTED_STATUSES, FailurePercentageEjection,
    HealthPolicy, HealthProbe, OutlierDetection, SuccessRateEjection,
};

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9001}]
endpoints: [{addresses: [10.0.0.1]}]
"#;

/// The manifests with Service `shop/web` carrying `annotations` (name, value).
fn manifests(annotations: &[(&str, &str)]) -> String {
    let mut service = String::from(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n",
    );
    if !annotations.is_empty() {
        service.push_str("  annotations:\n");
        for (name, value) in annotations {
            if value.contains('\n') {
                // A block scalar, as a user writes a multi-line annotation.
                service.push_str(&format!("    {name}: |\n"));
                for line in value.lines() {
                    service.push_str(&format!("      {line}\n"));
                }
            } else {
                // A single-quoted scalar: taken literally but for doubled quotes.
                service.push_str(&format!("    {name}: '{}'\n", value.replace('\'', "''")));
            }
        }
    }
    service.push_str("spec:\n  ports: [{name: http, port: 80}]\n");
    format!("{ROUTE}{service}")
}

fn translate_with(annotations: &[(&str, &str)]) -> Translation {
    let (objects, diagnostics) = parse_yaml(&manifests(annotations), None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, &TranslateOptions::default())
}

/// The health policy of the one backend; the translation must be clean.
fn health(annotations: &[(&str, &str)]) -> HealthPolicy {
    let t = translate_with(annotations);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(t.snapshot.backends.len(), 1);
    assert_eq!(t.snapshot.backends[0].name, "shop/web:80");
    t.snapshot.backends[0].health.clone()
}

/// Every error as `object | field | message`.
fn errors(annotations: &[(&str, &str)]) -> Vec<String> {
    let t = translate_with(annotations);
    assert!(t.has_errors(), "no error for {annotations:?}");
    t.diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{} | {} | {}", d.object, d.field, d.message))
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn no_annotations_give_the_default_policy() {
    let policy = health(&[]);
    assert_eq!(policy, HealthPolicy::default());
    assert_eq!(policy.active, None);
    assert!(policy.outlier_detection.is_enabled());
    assert_eq!(
        policy.outlier_detection.consecutive_gateway_failure,
        Some(3)
    );
    assert_eq!(policy.circuit_breakers.max_requests, 1024);
}

#[test]
fn health_check_annotation_gives_an_active_http_check() {
    let policy = health(&[(
        HEALTH_CHECK_ANNOTATION,
        "http: {path: /healthz, host: web.internal, expectedStatuses: [\"200-299\", \"302\", 418]}\n\
         interval: 1m30s\njitter: 0s\ntimeout: 500ms\nhealthyThreshold: 1\nunhealthyThreshold: 5\n\
         port: 8081\n",
    )]);
    assert_eq!(
        policy.active,
        Some(ActiveHealthCheck {
            interval: secs(90),
            jitter: Duration::ZERO,
            timeout: Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 5,
            port: Some(8081),
            probe: HealthProbe::Http {
                path: "/healthz".into(),
                host: Some("web.internal".into()),
                expected_statuses: vec![200..=299, 302..=302, 418..=418],
            },
        })
    );
    // The other parts are untouched.
    assert_eq!(policy.outlier_detection, OutlierDetection::default());
    assert_eq!(policy.circuit_breakers, CircuitBreakers::default());
}

#[test]
fn health_check_fields_left_out_take_the_snapshot_defaults() {
    let http = |path: &str| HealthProbe::Http {
        path: path.into(),
        host: None,
        expected_statuses: vec![DEFAULT_EXPECTED_STATUSES],
    };
    for (value, probe) in [
        ("http: {path: /healthz}", http("/healthz")),
        // JSON is YAML too.
        (r#"{"http": {"path": "/ready"}}"#, http("/ready")),
        ("http: {}", http("/")),
        ("tcp: {}", HealthProbe::Tcp),
        // `tcp:` alone is YAML null: read as `tcp: {}`.
        ("tcp:", HealthProbe::Tcp),
        (
            "grpc: {service: my.Service, authority: x}",
            HealthProbe::Grpc {
                service: "my.Service".into(),
                authority: Some("x".into()),
            },
        ),
        (
            "grpc: {}",
            HealthProbe::Grpc {
                service: String::new(),
                authority: None,
            },
        ),
    ] {
        assert_eq!(
            health(&[(HEALTH_CHECK_ANNOTATION, value)]).active,
            Some(ActiveHealthCheck::new(probe)),
            "{value}"
        );
    }
}

#[test]
fn outlier_detection_annotation_changes_only_what_it_sets() {
    let policy = health(&[(
        OUTLIER_DETECTION_ANNOTATION,
        "{consecutive5xx: 5, consecutiveGatewayFailure: 0, interval: 2s, baseEjectionTime: 1m, \
         maxEjectionTime: 1h, maxEjectionPercent: 100, alwaysEjectOneHost: false, \
         successRate: {}, failurePercentage: {threshold: 90, requestVolume: 10}}",
    )]);
    assert_eq!(
        policy.outlier_detection,
        OutlierDetection {
            consecutive_5xx: Some(5),
            consecutive_gateway_failure: None,
            interval: secs(2),
            base_ejection_time: secs(60),
            max_ejection_time: secs(3600),
            max_ejection_percent: 100,
            always_eject_one_host: false,
            success_rate: Some(SuccessRateEjection::default()),
            failure_percentage: Some(FailurePercentageEjection {
                threshold: 90,
                request_volume: 10,
                ..FailurePercentageEjection::default()
            }),
        }
    );
    assert_eq!(policy.active, None);

    let policy = health(&[(OUTLIER_DETECTION_ANNOTATION, "maxEjectionPercent: 10")]);
    assert_eq!(
        policy.outlier_detection,
        OutlierDetection {
            max_ejection_percent: 10,
            ..OutlierDetection::default()
        }
    );
    // An empty object is the default, not "off".
    let policy = health(&[(OUTLIER_DETECTION_ANNOTATION, "{}")]);
    assert_eq!(policy.outlier_detection, OutlierDetection::default());
}

#[test]
fn outlier_detection_can_be_disabled() {
    let policy = health(&[(OUTLIER_DETECTION_ANNOTATION, "disabled: true")]);
    assert_eq!(policy.outlier_detection, OutlierDetection::disabled());
    assert!(!policy.outlier_detection.is_enabled());
    // Turning off the only default detector has the same effect.
    let policy = health(&[(OUTLIER_DETECTION_ANNOTATION, "consecutiveGatewayFailure: 0")]);
    assert_eq!(policy.outlier_detection, OutlierDetection::disabled());
    let policy = health(&[(OUTLIER_DETECTION_ANNOTATION, "disabled: false")]);
    assert_eq!(policy.outlier_detection, OutlierDetection::default());
}

#[test]
fn circuit_breaker_annotation_sets_limits() {
    let policy = health(&[(
        CIRCUIT_BREAKER_ANNOTATION,
        "{maxConnections: 10, maxRequests: 200, maxRetries: 0}",
    )]);
    assert_eq!(
        policy.circuit_breakers,
        CircuitBreakers {
            max_connections: 10,
            max_pending_requests: 1024,
            max_requests: 200,
            max_retries: 0,
        }
    );
}

#[test]
fn all_three_annotations_together() {
    let policy = health(&[
        (HEALTH_CHECK_ANNOTATION, "{tcp: {}, interval: 2s}"),
        (OUTLIER_DETECTION_ANNOTATION, "{consecutive5xx: 7}"),
        (CIRCUIT_BREAKER_ANNOTATION, "{maxPendingRequests: 5}"),
    ]);
    assert_eq!(
        policy,
        HealthPolicy {
            active: Some(ActiveHealthCheck {
                interval: secs(2),
                ..ActiveHealthCheck::new(HealthProbe::Tcp)
            }),
            outlier_detection: OutlierDetection {
                consecutive_5xx: Some(7),
                ..OutlierDetection::default()
            },
            circuit_breakers: CircuitBreakers {
                max_pending_requests: 5,
                ..CircuitBreakers::default()
            },
        }
    );
}

#[test]
fn bad_values_name_the_service_and_the_annotation_field() {
    const HC: &str = "metadata.annotations[novaedge.io/health-check]";
    const OD: &str = "metadata.annotations[novaedge.io/outlier-detection]";
    const CB: &str = "metadata.annotations[novaedge.io/circuit-breaker]";
    // (annotation, value, field, a part of the message)
    let cases: &[(&str, &str, String, &str)] = &[
        // Parsing: syntax, types, unknown fields.
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}",
            HC.into(),
            "not a YAML or JSON object",
        ),
        (HEALTH_CHECK_ANNOTATION, "", HC.into(), "got nothing"),
        (
            HEALTH_CHECK_ANNOTATION,
            "tcp",
            HC.into(),
            "expected a YAML or JSON object such as {tcp: {}}, got a string",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, interval: 5 seconds}",
            format!("{HC}.interval"),
            r#""5 seconds" is not a duration (use e.g. 5s, 500ms, 1m30s)"#,
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, timeout: 5}",
            format!("{HC}.timeout"),
            "expected a duration such as 5s, 500ms or 1m30s",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, intervall: 5s}",
            format!("{HC}.intervall"),
            "unknown field `intervall`",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {port: 80}}",
            format!("{HC}.tcp.port"),
            "unknown field `port`",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, port: 70000}",
            format!("{HC}.port"),
            "70000",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{http: {expectedStatuses: [200, 2xx]}}",
            format!("{HC}.http.expectedStatuses[1]"),
            r#""2xx" is not a status or range"#,
        ),
        // Conversion: what the snapshot validator would refuse.
        (
            HEALTH_CHECK_ANNOTATION,
            "{interval: 2s}",
            HC.into(),
            "got none",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, grpc: {}}",
            HC.into(),
            "got tcp and grpc",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, interval: 0s}",
            format!("{HC}.interval"),
            "must be between 1ms and 24h, got 0s",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, timeout: 25h}",
            format!("{HC}.timeout"),
            "got 25h",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, jitter: 48h}",
            format!("{HC}.jitter"),
            "must be between 0s and 24h",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, healthyThreshold: 0}",
            format!("{HC}.healthyThreshold"),
            "at least 1",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, unhealthyThreshold: 0}",
            format!("{HC}.unhealthyThreshold"),
            "at least 1",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{tcp: {}, port: 0}",
            format!("{HC}.port"),
            "at least 1",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{http: {path: healthz}}",
            format!("{HC}.http.path"),
            "\"healthz\" is not an absolute request path",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{http: {host: \"bad host\"}}",
            format!("{HC}.http.host"),
            "is not a valid host",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{http: {expectedStatuses: []}}",
            format!("{HC}.http.expectedStatuses"),
            "at least one status",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{http: {expectedStatuses: [200, 99]}}",
            format!("{HC}.http.expectedStatuses[1]"),
            "99 is not a range of HTTP statuses (100-599, start <= end)",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{http: {expectedStatuses: [\"299-200\"]}}",
            format!("{HC}.http.expectedStatuses[0]"),
            "299-200 is not a range",
        ),
        (
            HEALTH_CHECK_ANNOTATION,
            "{grpc: {authority: \"a b\"}}",
            format!("{HC}.grpc.authority"),
            "not a valid authority",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{disabled: true, consecutive5xx: 5}",
            format!("{OD}.consecutive5xx"),
            "disabled: true",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{disabled: true, successRate: {}}",
            format!("{OD}.successRate"),
            "disabled: true",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{consecutive5xx: -1}",
            format!("{OD}.consecutive5xx"),
            "-1",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{maxEjectionPercent: 101}",
            format!("{OD}.maxEjectionPercent"),
            "from 0 to 100, got 101",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{failurePercentage: {threshold: 0}}",
            format!("{OD}.failurePercentage.threshold"),
            "from 1 to 100, got 0",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{successRate: {stdevFactor: 0}}",
            format!("{OD}.successRate.stdevFactor"),
            "at least 1",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{successRate: {minimumHost: 3}}",
            format!("{OD}.successRate.minimumHost"),
            "unknown field `minimumHost`",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{interval: 0ms}",
            format!("{OD}.interval"),
            "between 1ms and 24h",
        ),
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{baseEjectionTime: 1m, maxEjectionTime: 30s}",
            format!("{OD}.maxEjectionTime"),
            "30s is below baseEjectionTime (1m)",
        ),
        // Above the default maximum: the field the user wrote is the one blamed.
        (
            OUTLIER_DETECTION_ANNOTATION,
            "{baseEjectionTime: 10m}",
            format!("{OD}.baseEjectionTime"),
            "10m is above maxEjectionTime (5m, the default)",
        ),
        (
            CIRCUIT_BREAKER_ANNOTATION,
            "{maxConnections: 0}",
            format!("{CB}.maxConnections"),
            "at least 1",
        ),
        (
            CIRCUIT_BREAKER_ANNOTATION,
            "{maxPendingRequests: 0}",
            format!("{CB}.maxPendingRequests"),
            "at least 1",
        ),
        (
            CIRCUIT_BREAKER_ANNOTATION,
            "{maxRequests: 0}",
            format!("{CB}.maxRequests"),
            "at least 1",
        ),
        (
            CIRCUIT_BREAKER_ANNOTATION,
            "{maxRetries: many}",
            format!("{CB}.maxRetries"),
            "invalid type: string \"many\"",
        ),
        (
            CIRCUIT_BREAKER_ANNOTATION,
            "[1, 2]",
            CB.into(),
            "got a list",
        ),
    ];
    for (annotation, value, field, message) in cases {
        let errors = errors(&[(annotation, value)]);
        assert_eq!(errors.len(), 1, "{annotation}: {value:?}: {errors:#?}");
        let prefix = format!("Service shop/web | {field} | ");
        let Some(got) = errors[0].strip_prefix(&prefix) else {
            panic!("{annotation}: {value:?}: expected {prefix:?}..., got {errors:#?}");
        };
        assert!(
            got.contains(message),
            "{annotation}: {value:?}: expected {message:?} in {got:?}"
        );
        // Never a snapshot-level ("internal translation") error for an annotation.
        assert!(!got.contains("internal"), "{got}");
    }
}

#[test]
fn every_mistake_in_an_annotation_is_reported() {
    let errors = errors(&[
        (
            HEALTH_CHECK_ANNOTATION,
            "{http: {path: x}, interval: 0s, healthyThreshold: 0}",
        ),
        (
            CIRCUIT_BREAKER_ANNOTATION,
            "{maxConnections: 0, maxRequests: 0}",
        ),
    ]);
    let fields: Vec<&str> = errors
        .iter()
        .map(|e| e.split(" | ").nth(1).unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "metadata.annotations[novaedge.io/health-check].http.path",
            "metadata.annotations[novaedge.io/health-check].interval",
            "metadata.annotations[novaedge.io/health-check].healthyThreshold",
            "metadata.annotations[novaedge.io/circuit-breaker].maxConnections",
            "metadata.annotations[novaedge.io/circuit-breaker].maxRequests",
        ]
    );
}

/// The whole line a user sees for a file, as `novaedge check` prints it.
#[test]
fn errors_print_the_file_the_service_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(
        &file,
        manifests(&[(HEALTH_CHECK_ANNOTATION, "{tcp: {}, interval: 5 seconds}")]),
    )
    .unwrap();
    let (objects, diagnostics) = load_paths(std::slice::from_ref(&file));
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let t = translate(&objects, &TranslateOptions::default());
    let lines: Vec<String> = t.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [format!(
            "error: {}: Service shop/web: metadata.annotations[novaedge.io/health-check].interval: \
             \"5 seconds\" is not a duration (use e.g. 5s, 500ms, 1m30s)",
            file.display()
        )]
    );
}
