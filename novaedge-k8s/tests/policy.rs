//! `ProxyPolicy`, through the public path a user's manifests take: YAML text (or files) parsed
//! into objects, translated into a snapshot, and diagnostics as printed.

use std::time::Duration;

use novaedge_k8s::objects::{load_paths, parse_yaml};
use novaedge_k8s::{Diagnostic, TranslateOptions, Translation, translate};
use novaedge_snapshot::{
    Cors, IpFilter, JwtAuthentication, JwtKeys, RateLimit, RateLimitKey, RetryPolicy, RouteFilters,
    TokenLocation,
};

/// A Gateway, a Service, and two routes attached to the Gateway: `shop/shop` (two rules) and
/// `shop/other`.
const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 9001}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.example.com]
  rules:
    - matches: [{path: {value: /api}}]
      backendRefs: [{name: web, port: 80}]
    - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  hostnames: [other.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#;

/// A ProxyPolicy `shop/NAME` targeting `KIND/TARGET`; `body` is the rest of its spec, as YAML
/// lines (indented by the caller as under `spec:`, i.e. not at all).
fn policy(name: &str, kind: &str, target: &str, body: &str) -> String {
    policy_created(name, None, kind, target, body)
}

/// [`policy`] with a `creationTimestamp`.
fn policy_created(
    name: &str,
    created: Option<&str>,
    kind: &str,
    target: &str,
    body: &str,
) -> String {
    let mut text = format!(
        "---\napiVersion: novaedge.io/v1alpha1\nkind: ProxyPolicy\nmetadata:\n  name: {name}\n  \
         namespace: shop\n"
    );
    if let Some(created) = created {
        text.push_str(&format!("  creationTimestamp: \"{created}\"\n"));
    }
    text.push_str(&format!(
        "spec:\n  targetRef: {{group: gateway.networking.k8s.io, kind: {kind}, name: {target}}}\n"
    ));
    for line in body.trim_matches('\n').lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Translates the base objects with `extra` documents; everything must parse.
fn translate_with(extra: &[String]) -> Translation {
    let text = format!("{BASE}{}", extra.concat());
    let (objects, diagnostics) = parse_yaml(&text, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, &TranslateOptions::default())
}

/// The filters of every rule of route `name` (every snapshot route of that name).
fn rule_filters(t: &Translation, name: &str) -> Vec<RouteFilters> {
    let filters: Vec<RouteFilters> = t
        .snapshot
        .routes
        .iter()
        .filter(|r| r.name == name)
        .flat_map(|r| {
            r.rules
                .iter()
                .map(|rule| RouteFilters::clone(&rule.filters))
        })
        .collect();
    assert!(!filters.is_empty(), "no route {name}");
    filters
}

/// The one set of filters every rule of route `name` has (policies apply to every rule).
fn route_filters(t: &Translation, name: &str) -> RouteFilters {
    let all = rule_filters(t, name);
    assert!(all.iter().all(|f| *f == all[0]), "{all:#?}");
    all[0].clone()
}

/// Every diagnostic as `SEVERITY object | field: message`.
fn printed(t: &Translation) -> Vec<String> {
    t.diagnostics.iter().map(describe).collect()
}

fn describe(d: &Diagnostic) -> String {
    let severity = if d.is_error() { "error" } else { "warning" };
    format!("{severity} {} | {}: {}", d.object, d.field, d.message)
}

/// The errors of a policy `shop/p` on HTTPRoute `shop/shop` with spec `body`, as
/// `field: message`; the translation must report only errors of that policy, and apply
/// nothing of it.
fn policy_errors(body: &str) -> Vec<String> {
    let t = translate_with(&[policy("p", "HTTPRoute", "shop", body)]);
    assert!(t.has_errors(), "{:?}", t.diagnostics);
    assert!(
        t.diagnostics
            .iter()
            .all(|d| d.is_error() && d.object == "ProxyPolicy shop/p"),
        "{:#?}",
        t.diagnostics
    );
    // A policy with an error does not apply, not even its good sections.
    assert_eq!(route_filters(&t, "shop/shop"), RouteFilters::default());
    t.diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

/// The fields of [`policy_errors`].
fn error_fields(body: &str) -> Vec<String> {
    policy_errors(body)
        .into_iter()
        .map(|e| e.split_once(": ").unwrap().0.to_owned())
        .collect()
}

const FULL: &str = r#"
jwt:
  jwks: {inline: '{"keys": []}'}
  refresh: 5m
  maxStale: 2h
  issuers: ["https://auth.example.com"]
  audiences: [shop]
  algorithms: [RS256, ES256]
  clockSkew: 30s
  requiredClaims: [exp]
  tokenFrom: [{authorizationBearer: {}}, {header: {name: x-jwt, prefix: "Token "}}, {cookie: session}, {queryParam: token}]
  forwardClaims: [{claim: sub, header: x-user}]
  removeToken: true
  allowMissing: false
rateLimit: {requests: 100, period: 1s, burst: 20, key: {clientIp: {ipv6Prefix: 56}}}
cors:
  allowOrigins: ["https://shop.example.com", "https://*.example.org"]
  allowMethods: [GET, POST]
  allowHeaders: [x-token]
  exposeHeaders: [x-request-id]
  allowCredentials: true
  maxAge: 10m
ipFilter: {allow: [10.0.0.0/8, "2001:db8::/32"], deny: [10.1.2.3], xffTrustedHops: 1}
retry:
  attempts: 3
  statuses: [502, 503]
  on5xx: false
  onConnectFailure: true
  onReset: false
  grpcCodes: [14]
  backoff: {base: 50ms, max: 1s}
  budget: {percent: 30, minPerSecond: 5}
  extraMethods: [POST]
  maxBufferedBody: 1048576
requestBody: {maxBytes: 8388608}
"#;

fn full_filters() -> RouteFilters {
    let s = Duration::from_secs;
    RouteFilters {
        jwt: Some(JwtAuthentication {
            keys: JwtKeys::Inline(r#"{"keys": []}"#.into()),
            jwks_ca_pem: String::new(),
            refresh: s(300),
            max_stale: s(7200),
            issuers: vec!["https://auth.example.com".into()],
            audiences: vec!["shop".into()],
            algorithms: vec!["RS256".into(), "ES256".into()],
            clock_skew: s(30),
            required_claims: vec!["exp".into()],
            locations: vec![
                TokenLocation::AuthorizationBearer,
                TokenLocation::Header {
                    name: "x-jwt".into(),
                    prefix: Some("Token ".into()),
                },
                TokenLocation::Cookie("session".into()),
                TokenLocation::QueryParam("token".into()),
            ],
            forward_claims: vec![("sub".into(), "x-user".into())],
            remove_token: true,
            allow_missing: false,
        }),
        rate_limit: Some(RateLimit {
            requests: 100,
            period: s(1),
            burst: 20,
            key: RateLimitKey::ClientIp { ipv6_prefix: 56 },
        }),
        cors: Some(Cors {
            allow_origins: vec![
                "https://shop.example.com".into(),
                "https://*.example.org".into(),
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-token".into()],
            expose_headers: vec!["x-request-id".into()],
            allow_credentials: true,
            max_age: s(600),
        }),
        ip_filter: Some(IpFilter {
            allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
            deny: vec!["10.1.2.3".into()],
            xff_trusted_hops: 1,
        }),
        retry: Some(RetryPolicy {
            attempts: 3,
            statuses: vec![502, 503],
            on_5xx: false,
            on_connect_failure: true,
            on_reset: false,
            grpc_codes: vec![14],
            backoff_base: Duration::from_millis(50),
            backoff_max: s(1),
            budget_percent: 30,
            budget_min_per_second: 5,
            extra_methods: vec!["POST".into()],
            max_buffered_body_bytes: 1 << 20,
        }),
        max_request_body_bytes: Some(8 << 20),
        ..RouteFilters::default()
    }
}

// === translation ===

#[test]
fn every_section_of_a_route_policy_reaches_every_rule_of_the_route() {
    let t = translate_with(&[policy("shop-policy", "HTTPRoute", "shop", FULL)]);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let rules = rule_filters(&t, "shop/shop");
    assert_eq!(rules.len(), 2);
    for filters in rules {
        assert_eq!(filters, full_filters());
    }
    // Only the target: the other route on the same Gateway has none of it.
    assert!(route_filters(&t, "shop/other").is_empty());
    // And the snapshot is one the data plane accepts.
    assert!(t.snapshot.validate().is_ok());
}

#[test]
fn left_out_fields_take_the_snapshot_defaults() {
    let t = translate_with(&[policy(
        "p",
        "HTTPRoute",
        "shop",
        r#"
jwt: {jwks: {url: "http://auth.shop.svc:8080/jwks.json"}}
rateLimit: {requests: 10}
cors: {}
ipFilter: {deny: [192.0.2.0/24]}
retry: {attempts: 2}
"#,
    )]);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let f = route_filters(&t, "shop/shop");
    let s = Duration::from_secs;
    assert_eq!(
        f.jwt,
        Some(JwtAuthentication {
            keys: JwtKeys::Url("http://auth.shop.svc:8080/jwks.json".into()),
            jwks_ca_pem: String::new(),
            refresh: s(600),
            max_stale: s(3600),
            issuers: vec![],
            audiences: vec![],
            algorithms: vec![],
            clock_skew: s(60),
            required_claims: vec![],
            locations: vec![],
            forward_claims: vec![],
            remove_token: false,
            allow_missing: false,
        })
    );
    assert_eq!(
        f.rate_limit,
        Some(RateLimit {
            requests: 10,
            period: s(1),
            burst: 10,
            key: RateLimitKey::ClientIp { ipv6_prefix: 64 },
        })
    );
    assert_eq!(
        f.cors,
        Some(Cors {
            allow_origins: vec![],
            allow_methods: vec![],
            allow_headers: vec![],
            expose_headers: vec![],
            allow_credentials: false,
            max_age: s(5),
        })
    );
    assert_eq!(
        f.ip_filter,
        Some(IpFilter {
            allow: vec![],
            deny: vec!["192.0.2.0/24".into()],
            xff_trusted_hops: 0,
        })
    );
    assert_eq!(f.retry, Some(RetryPolicy::new(2)));
}

#[test]
fn key_sources_and_rate_limit_keys() {
    let t = translate_with(&[
        policy(
            "a",
            "HTTPRoute",
            "shop",
            "jwt: {jwks: {file: /etc/novaedge/jwks.json}}\nrateLimit: {requests: 1, key: {jwtClaim: sub}}\n",
        ),
        policy(
            "b",
            "HTTPRoute",
            "other",
            "rateLimit: {requests: 1, key: {header: x-api-key}}\n",
        ),
    ]);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let shop = route_filters(&t, "shop/shop");
    assert_eq!(
        shop.jwt.unwrap().keys,
        JwtKeys::File("/etc/novaedge/jwks.json".into())
    );
    assert_eq!(
        shop.rate_limit.unwrap().key,
        RateLimitKey::JwtClaim("sub".into())
    );
    assert_eq!(
        route_filters(&t, "shop/other").rate_limit.unwrap().key,
        RateLimitKey::Header("x-api-key".into())
    );
    // `global: {}` and `global:` (YAML null) mean the same.
    for key in ["{global: {}}", "{global: }"] {
        let t = translate_with(&[policy(
            "p",
            "HTTPRoute",
            "shop",
            &format!("rateLimit: {{requests: 1, key: {key}}}\n"),
        )]);
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_eq!(
            route_filters(&t, "shop/shop").rate_limit.unwrap().key,
            RateLimitKey::Global
        );
    }
}

// === precedence ===

#[test]
fn a_gateway_policy_applies_to_every_route_and_a_route_policy_overrides_it_per_section() {
    let t = translate_with(&[
        policy(
            "gateway-defaults",
            "Gateway",
            "gw",
            r#"
jwt: {jwks: {url: "http://auth/jwks"}, issuers: [gateway]}
cors: {allowOrigins: ["https://gateway.example"]}
retry: {attempts: 2}
requestBody: {maxBytes: 1000}
"#,
        ),
        policy(
            "shop-overrides",
            "HTTPRoute",
            "shop",
            r#"
cors: {allowOrigins: ["https://shop.example"]}
rateLimit: {requests: 5, key: {jwtClaim: sub}}
requestBody: {maxBytes: 0}
"#,
        ),
    ]);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let shop = route_filters(&t, "shop/shop");
    let other = route_filters(&t, "shop/other");
    // Sections the route policy does not set are inherited from the Gateway's...
    assert_eq!(shop.jwt.as_ref().unwrap().issuers, ["gateway"]);
    assert_eq!(shop.retry, Some(RetryPolicy::new(2)));
    // ...those it sets override it; a jwtClaim key may use the Gateway's JWT authentication.
    assert_eq!(shop.cors.unwrap().allow_origins, ["https://shop.example"]);
    assert_eq!(shop.max_request_body_bytes, Some(0));
    assert_eq!(
        shop.rate_limit.unwrap().key,
        RateLimitKey::JwtClaim("sub".into())
    );
    // Every other route of the Gateway gets the Gateway's sections only.
    assert_eq!(other.jwt, shop.jwt);
    assert_eq!(
        other.cors.unwrap().allow_origins,
        ["https://gateway.example"]
    );
    assert_eq!(other.retry, Some(RetryPolicy::new(2)));
    assert_eq!(other.max_request_body_bytes, Some(1000));
    assert_eq!(other.rate_limit, None);
}

#[test]
fn gateway_policies_follow_the_route_to_each_gateway_it_is_attached_through() {
    // The route is attached to two Gateways on different ports; each port's copy of the route
    // gets the policy of the Gateway it is attached through.
    let gateways = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: internal, namespace: shop}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 9090}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both, namespace: shop}
spec:
  parentRefs: [{name: gw}, {name: internal}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#;
    let t = translate_with(&[
        gateways.to_owned(),
        policy(
            "public",
            "Gateway",
            "gw",
            "ipFilter: {deny: [10.0.0.0/8]}\n",
        ),
        policy(
            "internal",
            "Gateway",
            "internal",
            "ipFilter: {allow: [10.0.0.0/8]}\n",
        ),
    ]);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let by_listener: Vec<(&str, &IpFilter)> = t
        .snapshot
        .routes
        .iter()
        .filter(|r| r.name == "shop/both")
        .map(|r| {
            (
                r.listener.as_str(),
                r.rules[0].filters.ip_filter.as_ref().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_listener.len(), 2);
    assert_eq!(by_listener[0].0, "http-8080");
    assert_eq!(by_listener[0].1.deny, ["10.0.0.0/8"]);
    assert_eq!(by_listener[1].0, "http-9090");
    assert_eq!(by_listener[1].1.allow, ["10.0.0.0/8"]);
}

#[test]
fn gateways_sharing_a_port_give_a_route_the_oldest_policy() {
    let shared = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: twin, namespace: shop}
spec:
  gatewayClassName: novaedge
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both, namespace: shop}
spec:
  parentRefs: [{name: gw}, {name: twin}]
  hostnames: [both.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#;
    let t = translate_with(&[
        shared.to_owned(),
        policy_created(
            "new",
            Some("2025-01-02T00:00:00Z"),
            "Gateway",
            "gw",
            "retry: {attempts: 5}\n",
        ),
        policy_created(
            "old",
            Some("2025-01-01T00:00:00Z"),
            "Gateway",
            "twin",
            "retry: {attempts: 4}\n",
        ),
    ]);
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    assert_eq!(route_filters(&t, "shop/both").retry.unwrap().attempts, 4);
    // Routes attached only to gw keep gw's policy.
    assert_eq!(route_filters(&t, "shop/shop").retry.unwrap().attempts, 5);
    assert_eq!(
        printed(&t),
        [
            "warning ProxyPolicy shop/new | spec.retry: not applied to HTTPRoute shop/both: the \
             route is attached to Gateways sharing a port, and ProxyPolicy shop/old (older) sets \
             retry for it"
        ]
    );
}

// === conflicts ===

#[test]
fn the_oldest_of_two_policies_on_one_target_wins_each_section_they_share() {
    // `b` is older than `a`, so it wins the section both set although `a` sorts first by name;
    // the sections only one of them sets apply from each.
    let t = translate_with(&[
        policy_created(
            "a",
            Some("2025-03-01T10:00:00Z"),
            "HTTPRoute",
            "shop",
            "cors: {allowOrigins: [\"https://a.example\"]}\nretry: {attempts: 3}\n",
        ),
        policy_created(
            "b",
            Some("2025-02-01T10:00:00Z"),
            "HTTPRoute",
            "shop",
            "cors: {allowOrigins: [\"https://b.example\"]}\nipFilter: {deny: [192.0.2.1]}\n",
        ),
    ]);
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    let f = route_filters(&t, "shop/shop");
    assert_eq!(f.cors.unwrap().allow_origins, ["https://b.example"]);
    assert_eq!(f.retry.unwrap().attempts, 3);
    assert_eq!(f.ip_filter.unwrap().deny, ["192.0.2.1"]);
    assert_eq!(
        printed(&t),
        [
            "warning ProxyPolicy shop/a | spec.cors: conflicts with ProxyPolicy shop/b, which \
             also sets cors for HTTPRoute shop/shop: the older policy (then the first by \
             namespace/name) wins, so this policy's cors is ignored"
        ]
    );
}

#[test]
fn without_timestamps_the_first_by_name_wins() {
    // Manifests in files have no creationTimestamp: the name decides.
    let t = translate_with(&[
        policy("zeta", "Gateway", "gw", "rateLimit: {requests: 2}\n"),
        policy("alpha", "Gateway", "gw", "rateLimit: {requests: 1}\n"),
    ]);
    assert_eq!(
        route_filters(&t, "shop/other").rate_limit.unwrap().requests,
        1
    );
    let warnings = printed(&t);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "warning ProxyPolicy shop/zeta | spec.rateLimit: conflicts with ProxyPolicy \
             shop/alpha, which also sets rateLimit for Gateway shop/gw"
        ),
        "{warnings:?}"
    );
}

#[test]
fn a_policy_for_a_missing_target_is_a_warning() {
    let t = translate_with(&[
        policy("lost", "HTTPRoute", "nope", "retry: {attempts: 2}\n"),
        policy("lost-gw", "Gateway", "nope", "retry: {attempts: 2}\n"),
    ]);
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    assert_eq!(
        printed(&t),
        [
            "warning ProxyPolicy shop/lost | spec.targetRef: HTTPRoute shop/nope does not exist; \
             the policy applies to nothing",
            "warning ProxyPolicy shop/lost-gw | spec.targetRef: Gateway shop/nope does not \
             exist; the policy applies to nothing",
        ]
    );
    assert!(route_filters(&t, "shop/shop").is_empty());
    // The target is looked up in the policy's own namespace.
    let elsewhere = policy("p", "HTTPRoute", "shop", "retry: {attempts: 2}\n")
        .replace("namespace: shop", "namespace: other");
    let t = translate_with(&[elsewhere]);
    assert_eq!(
        printed(&t),
        [
            "warning ProxyPolicy other/p | spec.targetRef: HTTPRoute other/shop does not exist; \
             the policy applies to nothing"
        ]
    );
}

#[test]
fn a_policy_that_sets_nothing_is_a_warning() {
    let t = translate_with(&[policy("empty", "HTTPRoute", "shop", "")]);
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    assert_eq!(
        printed(&t),
        [
            "warning ProxyPolicy shop/empty | spec: sets none of jwt, rateLimit, cors, ipFilter, \
             retry and requestBody; it does nothing"
        ]
    );
}

// === validation ===

#[test]
fn a_jwt_claim_key_needs_jwt_on_the_rule_after_merging() {
    // No policy of the route or its Gateway sets jwt: the policy with the key is in error and
    // applies nowhere (its cors neither); the Gateway's rate limit is used instead.
    let t = translate_with(&[
        policy(
            "gateway-limit",
            "Gateway",
            "gw",
            "rateLimit: {requests: 50}\n",
        ),
        policy(
            "by-user",
            "HTTPRoute",
            "shop",
            "rateLimit: {requests: 5, key: {jwtClaim: sub}}\ncors: {allowOrigins: [\"*\"]}\n",
        ),
    ]);
    assert_eq!(
        printed(&t),
        [
            "error ProxyPolicy shop/by-user | spec.rateLimit.key.jwtClaim: keys on a JWT claim, \
             but HTTPRoute shop/shop has no JWT authentication: no ProxyPolicy for the route or \
             its Gateway sets jwt; the policy is not applied"
        ]
    );
    let f = route_filters(&t, "shop/shop");
    assert_eq!(f.rate_limit.unwrap().requests, 50);
    assert_eq!(f.cors, None);
    // The snapshot stays consistent (no internal errors), though it is not to be served.
    assert!(t.snapshot.validate().is_ok());

    // On a Gateway, the key is checked for every route: one without JWT is enough.
    let t = translate_with(&[
        policy(
            "by-user",
            "Gateway",
            "gw",
            "rateLimit: {requests: 5, key: {jwtClaim: sub}}\n",
        ),
        policy(
            "shop-jwt",
            "HTTPRoute",
            "shop",
            "jwt: {jwks: {url: \"http://auth/jwks\"}}\n",
        ),
    ]);
    assert_eq!(
        printed(&t),
        [
            "error ProxyPolicy shop/by-user | spec.rateLimit.key.jwtClaim: keys on a JWT claim, \
             but HTTPRoute shop/other has no JWT authentication: no ProxyPolicy for the route or \
             its Gateway sets jwt; the policy is not applied"
        ]
    );
}

#[test]
fn errors_are_printed_with_file_policy_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    let text = format!(
        "{BASE}{}",
        policy(
            "p",
            "HTTPRoute",
            "shop",
            "rateLimit: {requests: 10, burst: 0}\n"
        )
    );
    std::fs::write(&path, text).unwrap();
    let (objects, diagnostics) = load_paths(std::slice::from_ref(&path));
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let t = translate(&objects, &TranslateOptions::default());
    let printed: Vec<String> = t.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        printed,
        [format!(
            "error: {}: ProxyPolicy shop/p: spec.rateLimit.burst: must be at least 1 (left out, \
             it is requests)",
            path.display()
        )]
    );
}

#[test]
fn target_ref_errors() {
    let t = translate_with(&[policy("p", "Service", "web", "retry: {attempts: 2}\n")
        .replace("group: gateway.networking.k8s.io", "group: \"\"")]);
    assert_eq!(
        printed(&t),
        [
            r#"error ProxyPolicy shop/p | spec.targetRef.group: "": a ProxyPolicy targets gateway.networking.k8s.io objects"#,
            r#"error ProxyPolicy shop/p | spec.targetRef.kind: "Service": a ProxyPolicy targets an HTTPRoute, a GRPCRoute or a Gateway"#,
        ]
    );
}

#[test]
fn jwt_errors_name_their_field() {
    assert_eq!(
        policy_errors(
            r#"
jwt:
  jwks: {url: "ftp://auth.example/jwks", caBundle: "x"}
  refresh: 500ms
  maxStale: 200h
  clockSkew: 2h
  issuers: [""]
  audiences: [""]
  algorithms: [RS256, none]
  requiredClaims: [""]
  tokenFrom:
    - {cookie: a, queryParam: b}
    - {}
    - {header: {name: "bad header"}}
    - {cookie: ""}
    - {queryParam: ""}
  forwardClaims: [{claim: "", header: "x:y"}]
"#
        ),
        [
            r#"spec.jwt.jwks.url: "ftp://auth.example/jwks": not an http:// or https:// URL"#,
            "spec.jwt.jwks.caBundle: is only used with an https:// url",
            r#"spec.jwt.algorithms[1]: "none" is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512"#,
            "spec.jwt.issuers[0]: must not be empty",
            "spec.jwt.audiences[0]: must not be empty",
            "spec.jwt.requiredClaims[0]: must not be empty",
            "spec.jwt.tokenFrom[0]: set exactly one of authorizationBearer, header, cookie, \
             queryParam (e.g. cookie: session); got cookie and queryParam",
            "spec.jwt.tokenFrom[1]: set exactly one of authorizationBearer, header, cookie, \
             queryParam (e.g. cookie: session); got none",
            r#"spec.jwt.tokenFrom[2].header.name: "bad header" is not a valid header name"#,
            "spec.jwt.tokenFrom[3].cookie: must not be empty",
            "spec.jwt.tokenFrom[4].queryParam: must not be empty",
            "spec.jwt.forwardClaims[0].claim: must not be empty",
            r#"spec.jwt.forwardClaims[0].header: "x:y" is not a valid header name"#,
            "spec.jwt.refresh: must be between 1s and 24h, got 500ms",
            "spec.jwt.maxStale: must be between 1ms and 168h, got 200h",
            "spec.jwt.clockSkew: must be between 0s and 1h, got 2h",
        ]
    );
    assert_eq!(
        policy_errors("jwt: {jwks: {}}\n"),
        [
            "spec.jwt.jwks: set exactly one of inline, file, url (e.g. url: \
          http://auth.example/jwks.json); got none"
        ]
    );
    assert_eq!(
        error_fields("jwt: {jwks: {file: a, url: \"http://b\"}}\n"),
        ["spec.jwt.jwks"]
    );
    assert_eq!(
        policy_errors("jwt: {jwks: {inline: '{\"kty\": \"RSA\"}'}}\n"),
        [r#"spec.jwt.jwks.inline: is not a JWKS: expected a JSON object with a "keys" array"#]
    );
    assert_eq!(
        error_fields("jwt: {jwks: {file: \"\"}, maxStale: 0s}\n"),
        ["spec.jwt.jwks.file", "spec.jwt.maxStale"]
    );
}

#[test]
fn rate_limit_errors_name_their_field() {
    assert_eq!(
        policy_errors("rateLimit: {requests: 0, burst: 0, period: 25h, key: {header: \"a b\"}}\n"),
        [
            "spec.rateLimit.requests: must be at least 1",
            "spec.rateLimit.burst: must be at least 1 (left out, it is requests)",
            r#"spec.rateLimit.key.header: "a b" is not a valid header name"#,
            "spec.rateLimit.period: must be between 1ms and 24h, got 25h",
        ]
    );
    assert_eq!(
        policy_errors("rateLimit: {requests: 1, period: 0s, key: {clientIp: {ipv6Prefix: 0}}}\n"),
        [
            "spec.rateLimit.key.clientIp.ipv6Prefix: must be from 1 to 128, got 0 (for one \
             bucket for everyone, use global: {})",
            "spec.rateLimit.period: must be between 1ms and 24h, got 0s",
        ]
    );
    assert_eq!(
        error_fields("rateLimit: {requests: 1, key: {clientIp: {ipv6Prefix: 129}}}\n"),
        ["spec.rateLimit.key.clientIp.ipv6Prefix"]
    );
    assert_eq!(
        policy_errors("rateLimit: {requests: 1, key: {global: {}, header: x}}\n"),
        [
            "spec.rateLimit.key: set exactly one of clientIp, header, jwtClaim, global (e.g. \
          header: x-api-key); got header and global"
        ]
    );
    assert_eq!(
        error_fields(
            "jwt: {jwks: {url: \"http://a\"}}\nrateLimit: {requests: 1, key: {jwtClaim: \"\"}}\n"
        ),
        ["spec.rateLimit.key.jwtClaim"]
    );
}

#[test]
fn cors_errors_name_their_field() {
    assert_eq!(
        policy_errors(
            r#"
cors:
  allowOrigins: ["https://ok.example", example.com]
  allowMethods: [GET, "*", "BAD METHOD"]
  allowHeaders: ["*", "bad header"]
  exposeHeaders: ["x:y"]
  maxAge: 25h
"#
        ),
        [
            r#"spec.cors.allowOrigins[1]: "example.com" is not *, scheme://host[:port] or scheme://*.domain[:port]"#,
            r#"spec.cors.allowMethods[2]: "BAD METHOD" is not a method"#,
            r#"spec.cors.allowHeaders[1]: "bad header" is not a valid header name"#,
            r#"spec.cors.exposeHeaders[0]: "x:y" is not a valid header name"#,
            "spec.cors.maxAge: must be between 1s and 24h, got 25h",
        ]
    );
    assert_eq!(
        policy_errors("cors: {maxAge: 1500ms}\n"),
        ["spec.cors.maxAge: must be whole seconds (Access-Control-Max-Age), got 1s500ms"]
    );
    assert_eq!(
        policy_errors("cors: {maxAge: 0s}\n"),
        ["spec.cors.maxAge: must be between 1s and 24h, got 0s"]
    );
}

#[test]
fn ip_filter_errors_name_their_field() {
    assert_eq!(
        policy_errors("ipFilter: {allow: [10.0.0.0/33], deny: [not-an-ip]}\n"),
        [
            r#"spec.ipFilter.allow[0]: "10.0.0.0/33": the prefix length must be 0 to 32"#,
            r#"spec.ipFilter.deny[0]: "not-an-ip" is not an IP address or CIDR block"#,
        ]
    );
    assert_eq!(
        policy_errors("ipFilter: {xffTrustedHops: 2}\n"),
        ["spec.ipFilter: allows and denies nothing: give allow or deny"]
    );
}

#[test]
fn retry_errors_name_their_field() {
    assert_eq!(
        policy_errors(
            r#"
retry:
  attempts: 1
  statuses: [503, 99, 600]
  grpcCodes: [14, 17]
  extraMethods: ["BAD METHOD"]
  backoff: {base: 0s, max: 25h}
  budget: {percent: 0, minPerSecond: 0}
  maxBufferedBody: 0
"#
        ),
        [
            "spec.retry.attempts: must be between 2 and 10 (tries in all, the first included), \
             got 1",
            "spec.retry.statuses[1]: 99 is not an HTTP status (100-599)",
            "spec.retry.statuses[2]: 600 is not an HTTP status (100-599)",
            "spec.retry.grpcCodes[1]: 17 is not a gRPC status code (0-16)",
            r#"spec.retry.extraMethods[0]: "BAD METHOD" is not a method"#,
            "spec.retry.backoff.base: must be between 1ms and 24h, got 0s",
            "spec.retry.backoff.max: must be between 1ms and 24h, got 25h",
            "spec.retry.budget.percent: must be from 1 to 1000, got 0",
            "spec.retry.budget.minPerSecond: must be at least 1",
            "spec.retry.maxBufferedBody: must be from 1 to 67108864 bytes (64 MiB), got 0",
        ]
    );
    assert_eq!(
        policy_errors(
            "retry: {attempts: 11, backoff: {base: 1s, max: 500ms}, budget: {percent: 1001}, \
             maxBufferedBody: 67108865}\n"
        ),
        [
            "spec.retry.attempts: must be between 2 and 10 (tries in all, the first included), \
             got 11",
            "spec.retry.backoff.max: 500ms is below backoff.base (1s)",
            "spec.retry.budget.percent: must be from 1 to 1000, got 1001",
            "spec.retry.maxBufferedBody: must be from 1 to 67108864 bytes (64 MiB), got 67108865",
        ]
    );
    // A base above the default maximum (25ms) raises the maximum with it (10 times the base).
    let t = translate_with(&[policy(
        "p",
        "HTTPRoute",
        "shop",
        "retry: {attempts: 2, backoff: {base: 100ms}}\n",
    )]);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let retry = route_filters(&t, "shop/shop").retry.unwrap();
    assert_eq!(retry.backoff_max, Duration::from_secs(1));
}

#[test]
fn parse_errors_name_the_field_and_unknown_fields_are_refused() {
    for (body, field, says) in [
        (
            "rateLimit: {requests: 1, burts: 2}",
            "spec.rateLimit.burts",
            "unknown field `burts`",
        ),
        (
            "rateLimit: {requests: many}",
            "spec.rateLimit.requests",
            "invalid type",
        ),
        (
            "rateLimit: {period: 1s}",
            "spec.rateLimit",
            "missing field `requests`",
        ),
        (
            "retry: {statuses: [503]}",
            "spec.retry",
            "missing field `attempts`",
        ),
        (
            "jwt: {jwks: {url: \"http://a\"}, refresh: 10 minutes}",
            "spec.jwt.refresh",
            "is not a duration",
        ),
        ("jwt: {issuers: [a]}", "spec.jwt", "missing field `jwks`"),
        (
            "cors: {allowOrigin: [\"*\"]}",
            "spec.cors.allowOrigin",
            "unknown field `allowOrigin`",
        ),
        (
            "requestBody: {maxBytes: -1}",
            "spec.requestBody.maxBytes",
            "invalid value",
        ),
        (
            "requestBody: {}",
            "spec.requestBody",
            "missing field `maxBytes`",
        ),
        (
            "timeouts: {request: 1s}",
            "spec.timeouts",
            "unknown field `timeouts`",
        ),
    ] {
        let text = format!("{BASE}{}", policy("p", "HTTPRoute", "shop", body));
        let (objects, diagnostics) = parse_yaml(&text, None);
        assert_eq!(diagnostics.len(), 1, "{body}: {diagnostics:?}");
        let d = &diagnostics[0];
        assert!(d.is_error());
        assert_eq!(
            (d.object.as_str(), d.field.as_str()),
            ("ProxyPolicy shop/p", field),
            "{body}"
        );
        assert!(d.message.contains(says), "{body}: {}", d.message);
        // The policy is not read, so it applies nowhere.
        let t = translate(&objects, &TranslateOptions::default());
        assert!(route_filters(&t, "shop/shop").is_empty());
    }
    // A missing targetRef, and another version of the kind, which is not read.
    let text = format!(
        "{BASE}---\napiVersion: novaedge.io/v1alpha1\nkind: ProxyPolicy\nmetadata: {{name: p, \
         namespace: shop}}\nspec: {{retry: {{attempts: 2}}}}\n---\napiVersion: novaedge.io/v1\n\
         kind: ProxyPolicy\nmetadata: {{name: q, namespace: shop}}\nspec: {{}}\n"
    );
    let (_, diagnostics) = parse_yaml(&text, None);
    let printed: Vec<String> = diagnostics.iter().map(describe).collect();
    assert_eq!(
        printed,
        [
            "error ProxyPolicy shop/p | spec: missing field `targetRef`",
            "warning ProxyPolicy shop/q | : kind ProxyPolicy (novaedge.io/v1) is not read by \
             NovaEdge; ignored",
        ]
    );
}

#[test]
fn an_https_jwks_url_with_the_providers_ca() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let spec =
        format!("jwt:\n  jwks:\n    url: https://idp.auth.svc/keys\n    caBundle: {pem:?}\n");
    let t = translate_with(&[policy("p", "HTTPRoute", "shop", &spec)]);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let jwt = route_filters(&t, "shop/shop").jwt.unwrap();
    assert_eq!(jwt.keys, JwtKeys::Url("https://idp.auth.svc/keys".into()));
    assert_eq!(jwt.jwks_ca_pem, pem);

    // A bundle without a certificate is refused.
    assert_eq!(
        policy_errors("jwt: {jwks: {url: \"https://idp/keys\", caBundle: \"not pem\"}}\n"),
        ["spec.jwt.jwks.caBundle: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"]
    );
}
