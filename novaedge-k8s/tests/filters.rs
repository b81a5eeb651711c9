//! HTTPRoute rule filters, through the public path a user's manifests take: YAML text parsed into
//! objects, translated into a snapshot, and diagnostics as printed.

use std::time::Duration;

use novaedge_k8s::objects::parse_yaml;
use novaedge_k8s::{Diagnostic, TranslateOptions, Translation, translate};
use novaedge_snapshot::{
    HeaderModifier, PathModifier, RequestRedirect, RouteFilters, RouteRule, Timeouts, UrlRewrite,
};

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
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules:
"#;

/// The manifests with `rules` (YAML list items, indented by four spaces) as the route's rules.
fn manifests(rules: &str) -> String {
    let mut text = BASE.to_owned();
    for line in rules.trim_matches('\n').lines() {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Translates the route with `rules`; the manifests must parse.
fn translate_rules(rules: &str) -> Translation {
    let (objects, diagnostics) = parse_yaml(&manifests(rules), None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, &TranslateOptions::default())
}

/// The route's rules; the translation must be clean.
fn rules(rules: &str) -> Vec<RouteRule> {
    let t = translate_rules(rules);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(t.snapshot.routes.len(), 1);
    t.snapshot.routes[0].rules.clone()
}

/// The filters of the route's only rule; the translation must be clean.
fn filters(rule: &str) -> RouteFilters {
    let rules = rules(rule);
    assert_eq!(rules.len(), 1);
    RouteFilters::clone(&rules[0].filters)
}

/// Every error as `field: message`; the route must not be served.
fn errors(rules: &str) -> Vec<String> {
    let t = translate_rules(rules);
    assert!(t.has_errors(), "{:?}", t.diagnostics);
    assert!(t.snapshot.routes.is_empty(), "{:?}", t.snapshot.routes);
    field_messages(t.diagnostics.iter().filter(|d| d.is_error()))
}

fn field_messages<'a>(diagnostics: impl Iterator<Item = &'a Diagnostic>) -> Vec<String> {
    diagnostics
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

/// The error fields alone.
fn error_fields(rules: &str) -> Vec<String> {
    errors(rules)
        .into_iter()
        .map(|e| e.split_once(": ").unwrap().0.to_owned())
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn header_modifiers_for_requests_and_responses() {
    // As in the Gateway API guide to HTTP header modifiers, both directions in one rule.
    let f = filters(
        r#"
- filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Env, value: prod}]
        add: [{name: my-header, value: "bar,baz"}]
        remove: [x-debug]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: X-Header-Add-1, value: header-add-1}]
        remove: [server]
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert_eq!(
        f,
        RouteFilters {
            request_headers: Some(HeaderModifier {
                set: pairs(&[("X-Env", "prod")]),
                add: pairs(&[("my-header", "bar,baz")]),
                remove: vec!["x-debug".into()],
            }),
            response_headers: Some(HeaderModifier {
                set: vec![],
                add: pairs(&[("X-Header-Add-1", "header-add-1")]),
                remove: vec!["server".into()],
            }),
            url_rewrite: None,
            redirect: None,
            ..RouteFilters::default()
        }
    );
}

#[test]
fn url_rewrite_of_hostname_and_full_path() {
    let f = filters(
        r#"
- matches: [{path: {type: Exact, value: /old}}]
  filters:
    - type: URLRewrite
      urlRewrite:
        hostname: elsewhere.example.org
        path: {type: ReplaceFullPath, replaceFullPath: /new}
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert_eq!(
        f.url_rewrite,
        Some(UrlRewrite {
            hostname: Some("elsewhere.example.org".into()),
            path: Some(PathModifier::ReplaceFullPath("/new".into())),
        })
    );
    assert_eq!(f.redirect, None);
}

#[test]
fn prefix_rewrite_from_the_gateway_api_example() {
    // Gateway API's path rewrite example: `/prefix/one/three` reaches the backend as `/one/three`.
    let f = filters(
        r#"
- matches: [{path: {type: PathPrefix, value: /prefix/one}}]
  filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert_eq!(
        f.url_rewrite,
        Some(UrlRewrite {
            hostname: None,
            path: Some(PathModifier::ReplacePrefixMatch("/one".into())),
        })
    );
}

#[test]
fn prefix_replacement_needs_only_prefix_matches() {
    // No matches means the prefix `/`; a match without a path, or a path without a type, too.
    for matches in [
        "",
        "  matches: [{headers: [{name: x-v, value: '2'}]}]\n",
        "  matches: [{path: {value: /a}}, {path: {type: PathPrefix, value: /b}}]\n",
    ] {
        let rule = format!(
            "- filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, \
             replacePrefixMatch: /v2}}}}}}]\n{matches}  backendRefs: [{{name: web, port: 80}}]\n"
        );
        assert_eq!(
            filters(&rule).url_rewrite.unwrap().path,
            Some(PathModifier::ReplacePrefixMatch("/v2".into())),
            "{matches}"
        );
    }
    // The spec's table gives an empty replacement the results of `/`.
    let f = filters(
        r#"
- matches: [{path: {type: PathPrefix, value: /strip}}]
  filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: ""}}}]
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert_eq!(
        f.url_rewrite.unwrap().path,
        Some(PathModifier::ReplacePrefixMatch("/".into()))
    );

    assert_eq!(
        errors(
            r#"
- matches: [{path: {type: PathPrefix, value: /a}}, {path: {type: Exact, value: /b}}]
  filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /c}}}]
  backendRefs: [{name: web, port: 80}]
- matches: [{path: {type: RegularExpression, value: "/d/.*"}}]
  filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /e}}}]
"#
        ),
        [
            "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: needs every match of the \
             rule to be a PathPrefix match, but matches[1] is Exact",
            "spec.rules[1].filters[0].requestRedirect.path.replacePrefixMatch: needs every match \
             of the rule to be a PathPrefix match, but matches[0] is RegularExpression",
        ]
    );
}

#[test]
fn http_to_https_redirect_from_the_gateway_api_example_needs_no_backend() {
    // Gateway API's HTTP-to-HTTPS redirect: a rule with the filter and no backendRefs.
    let rules = rules(
        r#"
- filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        statusCode: 301
"#,
    );
    assert_eq!(rules.len(), 1);
    assert!(rules[0].backends.is_empty());
    assert_eq!(
        rules[0].filters,
        RouteFilters {
            redirect: Some(RequestRedirect {
                scheme: Some("https".into()),
                hostname: None,
                port: None,
                path: None,
                status_code: 301,
            }),
            ..RouteFilters::default()
        }
    );
}

#[test]
fn redirect_fields_and_the_default_status_code() {
    let f = filters(
        r#"
- matches: [{path: {type: PathPrefix, value: /old}}]
  filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: http
        hostname: www.example.com
        port: 8443
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
"#,
    );
    assert_eq!(
        f.redirect,
        Some(RequestRedirect {
            scheme: Some("http".into()),
            hostname: Some("www.example.com".into()),
            port: Some(8443),
            path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
            // Gateway API's default.
            status_code: 302,
        })
    );
    let f = filters(
        "- filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, \
         replaceFullPath: /moved}, statusCode: 308}}]\n",
    );
    let redirect = f.redirect.unwrap();
    assert_eq!(
        redirect.path,
        Some(PathModifier::ReplaceFullPath("/moved".into()))
    );
    assert_eq!(redirect.status_code, 308);
}

#[test]
fn a_redirect_rule_with_backends_is_served_with_a_warning() {
    // The redirect answers first, so the backends are never used; Gateway API's CRD refuses the
    // combination, NovaEdge serves it and says so.
    let t = translate_rules(
        r#"
- filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example.com}}]
  backendRefs: [{name: web, port: 80}]
- matches: [{path: {value: /api}}]
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    assert_eq!(
        field_messages(t.diagnostics.iter()),
        [
            "spec.rules[0].backendRefs: never used: the RequestRedirect filter answers every \
             request of this rule (Gateway API's CRD rejects backendRefs beside a redirect)"
        ]
    );
    let rules = &t.snapshot.routes[0].rules;
    assert_eq!(rules[0].backends[0].backend, "shop/web:80");
    assert_eq!(
        rules[0]
            .filters
            .redirect
            .as_ref()
            .unwrap()
            .hostname
            .as_deref(),
        Some("new.example.com")
    );
    assert!(rules[1].filters.is_empty());
}

#[test]
fn each_filter_type_once_per_rule_and_never_redirect_with_rewrite() {
    assert_eq!(
        errors(
            r#"
- filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: "1"}]}}
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: b, value: "2"}]}}
  backendRefs: [{name: web, port: 80}]
- filters:
    - {type: RequestRedirect, requestRedirect: {scheme: https}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}
    - {type: URLRewrite, urlRewrite: {hostname: internal.example}}
"#
        ),
        [
            "spec.rules[0].filters[1].type: RequestHeaderModifier is already given in filters[0]; \
             a rule may have it only once",
            "spec.rules[1].filters[2].type: a rule cannot both redirect and rewrite \
             (RequestRedirect in filters[0], URLRewrite in filters[2])",
        ]
    );
}

#[test]
fn header_names_values_and_one_action_per_header() {
    assert_eq!(
        errors(
            r#"
- filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: "bad name", value: v}, {name: X-A, value: "1"}, {name: x-b, value: ""}]
        add: [{name: x-a, value: "bad\nvalue"}]
        remove: ["", X-B]
  backendRefs: [{name: web, port: 80}]
"#
        ),
        [
            r#"spec.rules[0].filters[0].requestHeaderModifier.set[0].name: "bad name" is not a valid header name"#,
            "spec.rules[0].filters[0].requestHeaderModifier.set[2].value: must not be empty",
            r#"spec.rules[0].filters[0].requestHeaderModifier.add[0].name: header "x-a" is already in set[1]; a header may have only one action"#,
            r#"spec.rules[0].filters[0].requestHeaderModifier.add[0].value: "bad\nvalue" is not a valid header value (printable ASCII, spaces and tabs)"#,
            r#"spec.rules[0].filters[0].requestHeaderModifier.remove[0]: "" is not a valid header name"#,
            r#"spec.rules[0].filters[0].requestHeaderModifier.remove[1]: header "X-B" is already in set[2]; a header may have only one action"#,
        ]
    );
    // The same checks for responses, with the response field names.
    assert_eq!(
        error_fields(
            r#"
- filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: "x:y", value: v}], remove: [a, A]}
  backendRefs: [{name: web, port: 80}]
"#
        ),
        [
            "spec.rules[0].filters[0].responseHeaderModifier.add[0].name",
            "spec.rules[0].filters[0].responseHeaderModifier.remove[1]",
        ]
    );
}

#[test]
fn redirect_status_code_port_and_paths() {
    let t = translate_rules(
        r#"
- matches: [{path: {type: Exact, value: /x}}]
  filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {remove: [server]}
    - type: RequestRedirect
      requestRedirect:
        hostname: "*.example.com"
        port: 70000
        path: {type: ReplaceFullPath, replaceFullPath: "no-slash?q=1"}
        statusCode: 200
"#,
    );
    let printed: Vec<String> = t.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        printed,
        [
            "error: HTTPRoute shop/web: spec.rules[0].filters[1].requestRedirect.port: 70000 is \
             not a TCP port (1-65535)",
            "error: HTTPRoute shop/web: spec.rules[0].filters[1].requestRedirect.statusCode: 200 \
             is not 301, 302, 303, 307 or 308",
            "error: HTTPRoute shop/web: spec.rules[0].filters[1].requestRedirect.hostname: \
             \"*.example.com\": a wildcard is not a host to send requests to",
            "error: HTTPRoute shop/web: spec.rules[0].filters[1].requestRedirect.path.\
             replaceFullPath: \"no-slash?q=1\" is not an absolute path (it must start with / and \
             hold no query)",
        ]
    );
    assert!(t.snapshot.routes.is_empty());
    assert_eq!(
        error_fields(
            r#"
- filters: [{type: RequestRedirect, requestRedirect: {port: 0}}]
- filters: [{type: URLRewrite, urlRewrite: {hostname: "Not_A_Host", path: {type: ReplaceFullPath, replaceFullPath: "/a b"}}}]
  backendRefs: [{name: web, port: 80}]
"#
        ),
        [
            "spec.rules[0].filters[0].requestRedirect.port",
            "spec.rules[1].filters[0].urlRewrite.hostname",
            "spec.rules[1].filters[0].urlRewrite.path.replaceFullPath",
        ]
    );
}

#[test]
fn the_type_must_name_the_object_given() {
    assert_eq!(
        errors(
            r#"
- filters:
    - type: RequestRedirect
      urlRewrite: {hostname: a.example}
    - type: RequestHeaderModifier
      requestHeaderModifier: {remove: [a]}
      responseHeaderModifier: {remove: [b]}
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplaceFullPath, replacePrefixMatch: /p}
  backendRefs: [{name: web, port: 80}]
"#
        ),
        [
            "spec.rules[0].filters[0].requestRedirect: required when type is RequestRedirect",
            "spec.rules[0].filters[0].urlRewrite: given, but type is RequestRedirect: a filter \
             holds only the object its type names (type URLRewrite for this one)",
            "spec.rules[0].filters[1].responseHeaderModifier: given, but type is \
             RequestHeaderModifier: a filter holds only the object its type names (type \
             ResponseHeaderModifier for this one)",
            "spec.rules[0].filters[2].urlRewrite.path.replacePrefixMatch: must not be set when \
             type is ReplaceFullPath",
            "spec.rules[0].filters[2].urlRewrite.path.replaceFullPath: required when type is \
             ReplaceFullPath",
        ]
    );
}

#[test]
fn unknown_values_and_a_missing_type_fail_when_parsing() {
    // The Gateway API types refuse these; the parse diagnostic names the field all the same.
    for (rule, field, says) in [
        (
            "- filters: [{type: RequestRedirect, requestRedirect: {scheme: ftp}}]",
            "spec.rules[0].filters[0].requestRedirect.scheme",
            "ftp",
        ),
        (
            "- filters: [{requestRedirect: {scheme: https}}]",
            "spec.rules[0].filters[0]",
            "type",
        ),
        (
            "- filters: [{type: Rewrite}]",
            "spec.rules[0].filters[0].type",
            "Rewrite",
        ),
    ] {
        let (objects, diagnostics) = parse_yaml(&manifests(rule), None);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        let d = &diagnostics[0];
        assert!(d.is_error());
        assert_eq!(
            (d.object.as_str(), d.field.as_str()),
            ("HTTPRoute shop/web", field)
        );
        assert!(d.message.contains(says), "{}", d.message);
        // Without the route, nothing is served for it.
        let t = translate(&objects, &TranslateOptions::default());
        assert!(t.snapshot.routes.is_empty());
    }
}

#[test]
fn cors_extension_and_backend_filters_are_not_supported_yet() {
    assert_eq!(
        errors(
            r#"
- filters:
    - type: CORS
      cors: {allowOrigins: ["https://example.com"]}
    - type: ExtensionRef
      extensionRef: {group: example.net, kind: Filter, name: f}
  backendRefs: [{name: web, port: 80}]
- backendRefs:
    - name: web
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}]
"#
        ),
        [
            "spec.rules[0].filters[0].type: CORS filters are not supported yet; a ProxyPolicy \
             with a cors section can set CORS for the route",
            "spec.rules[0].filters[1].type: ExtensionRef filters are not supported yet",
            "spec.rules[1].backendRefs[0].filters: per-backend filters are not supported yet; put \
             the filters on the rule",
        ]
    );
}

#[test]
fn one_bad_rule_keeps_the_whole_route_out_and_good_routes_in() {
    // A route with a bad filter is not served at all (serving its other rules would route their
    // requests differently than the user wrote); other routes are unaffected.
    let text = manifests(
        r#"
- matches: [{path: {value: /ok}}]
  backendRefs: [{name: web, port: 80}]
- filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]
"#,
    ) + r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules:
    - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-from, value: other}]}}]
      backendRefs: [{name: web, port: 80}]
"#;
    let (objects, diagnostics) = parse_yaml(&text, None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let t = translate(&objects, &TranslateOptions::default());
    assert_eq!(
        field_messages(t.diagnostics.iter()),
        [
            "spec.rules[1].filters[0].requestRedirect.statusCode: 304 is not 301, 302, 303, 307 or 308"
        ]
    );
    let names: Vec<&str> = t.snapshot.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shop/other"]);
    assert_eq!(
        t.snapshot.routes[0].rules[0].filters.request_headers,
        Some(HeaderModifier {
            set: pairs(&[("x-from", "other")]),
            ..HeaderModifier::default()
        })
    );
}

/// A second Service (`shop/shadow`, port 80 with one endpoint) to mirror to.
const SHADOW: &str = r#"---
apiVersion: v1
kind: Service
metadata: {name: shadow, namespace: shop}
spec:
  ports: [{name: http, port: 80}, {name: admin, port: 9000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: shadow-1, namespace: shop, labels: {kubernetes.io/service-name: shadow}}
addressType: IPv4
ports: [{name: http, port: 9101}]
endpoints: [{addresses: [10.0.1.1]}]
"#;

/// Translates the route with `rules`, with the shadow Service present.
fn translate_with_shadow(rules: &str) -> Translation {
    let (objects, diagnostics) = parse_yaml(&(manifests(rules) + SHADOW), None);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    translate(&objects, &TranslateOptions::default())
}

#[test]
fn request_mirrors_become_snapshot_backends_with_their_fraction() {
    // Gateway API's mirroring example, with a percentage, a fraction and one of each kind of
    // default; several mirror filters in one rule are allowed.
    let t = translate_with_shadow(
        r#"
- filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}, percent: 25}
    - type: RequestMirror
      requestMirror: {backendRef: {kind: Service, name: shadow, port: 9000}, fraction: {numerator: 1, denominator: 3}}
    - type: RequestMirror
      requestMirror: {backendRef: {group: "", name: web, namespace: shop, port: 80}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 5}}
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let mirrors: Vec<(&str, u32)> = t.snapshot.routes[0].rules[0]
        .filters
        .mirrors
        .iter()
        .map(|m| (m.backend.as_str(), m.fraction_ppm))
        .collect();
    assert_eq!(
        mirrors,
        [
            ("shop/shadow:80", 250_000),
            ("shop/shadow:9000", 333_333),
            ("shop/web:80", 1_000_000),
            // The denominator defaults to 100.
            ("shop/shadow:80", 50_000),
        ]
    );
    // The mirrored Service ports are backends like any other, with their endpoints.
    let backends: Vec<&str> = t
        .snapshot
        .backends
        .iter()
        .map(|b| b.name.as_str())
        .collect();
    assert_eq!(
        backends,
        ["shop/shadow:80", "shop/shadow:9000", "shop/web:80"]
    );
    let shadow = &t.snapshot.backends[0];
    assert_eq!(shadow.endpoints[0].address.to_string(), "10.0.1.1:9101");
    assert!(t.snapshot.validate().is_ok());
}

#[test]
fn a_mirror_of_nothing_is_a_warning_and_adds_no_backend() {
    let t = translate_with_shadow(
        r#"
- filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}, percent: 0}
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert!(!t.has_errors(), "{:?}", t.diagnostics);
    assert_eq!(
        field_messages(t.diagnostics.iter()),
        [
            "spec.rules[0].filters[0].requestMirror: mirrors no request (a share of 0); the filter \
             does nothing"
        ]
    );
    assert!(t.snapshot.routes[0].rules[0].filters.mirrors.is_empty());
    assert_eq!(t.snapshot.backends.len(), 1);
    // A tiny share is still a share: rounded up to one in a million, not to nothing.
    let t = translate_with_shadow(
        r#"
- filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 100000000}}
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(
        t.snapshot.routes[0].rules[0].filters.mirrors[0].fraction_ppm,
        1
    );
}

#[test]
fn bad_mirror_references_and_fractions_name_their_field() {
    let t = translate_with_shadow(
        r#"
- filters:
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, percent: 101}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, percent: 5, fraction: {numerator: 1}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 0}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 3, denominator: 2}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: -1}}}
  backendRefs: [{name: web, port: 80}]
- filters:
    - {type: RequestMirror, requestMirror: {backendRef: {group: example.com, kind: Bucket, name: b}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, namespace: other, port: 80}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: nope, port: 80}}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 81}}}
  backendRefs: [{name: web, port: 80}]
"#,
    );
    assert!(t.snapshot.routes.is_empty());
    let f = |i: usize| format!("spec.rules[0].filters[{i}].requestMirror");
    let g = |i: usize| format!("spec.rules[1].filters[{i}].requestMirror.backendRef");
    assert_eq!(
        field_messages(t.diagnostics.iter()),
        [
            format!("{}.percent: must be from 0 to 100, got 101", f(0)),
            format!("{}.fraction: give percent or fraction, not both", f(1)),
            format!("{}.fraction.denominator: must be at least 1, got 0", f(2)),
            format!(
                "{}.fraction.numerator: must be from 0 to the denominator (2), got 3",
                f(3)
            ),
            format!(
                "{}.fraction.numerator: must be from 0 to the denominator (100), got -1",
                f(4)
            ),
            format!(
                "{}.kind: Bucket (example.com) is not a supported backend kind; use a core \
                 Service; requests are not mirrored",
                g(0)
            ),
            format!(
                "{}.namespace: Service other/shadow is in another namespace and no \
                 ReferenceGrant there allows HTTPRoutes of namespace shop to refer to it; \
                 requests are not mirrored",
                g(1)
            ),
            format!("{}.port: required when referring to a Service", g(2)),
            format!(
                "{}.name: Service shop/nope not found; requests are not mirrored",
                g(3)
            ),
            format!(
                "{}.port: Service shop/shadow has no port 81; requests are not mirrored",
                g(4)
            ),
        ]
    );
    // A reference that does not resolve leaves the mirror out; one that is malformed is an
    // error.
    let errors: Vec<bool> = t.diagnostics.iter().map(Diagnostic::is_error).collect();
    assert_eq!(errors[..5], [true; 5]);
    assert_eq!(errors[5..], [false, false, true, false, false]);
}

#[test]
fn rule_timeouts_with_zero_meaning_none() {
    // Gateway API's timeouts example: the whole request and each try to the backend.
    let rules = rules(
        r#"
- matches: [{path: {value: /a}}]
  timeouts: {request: 10s, backendRequest: 2s}
  backendRefs: [{name: web, port: 80}]
- matches: [{path: {value: /b}}]
  timeouts: {request: 0s, backendRequest: 1m30s}
  backendRefs: [{name: web, port: 80}]
- matches: [{path: {value: /c}}]
  timeouts: {request: 500ms}
  backendRefs: [{name: web, port: 80}]
- backendRefs: [{name: web, port: 80}]
"#,
    );
    let timeouts: Vec<Timeouts> = rules.iter().map(|r| r.filters.timeouts).collect();
    let s = Duration::from_secs;
    assert_eq!(
        timeouts,
        [
            Timeouts {
                request: Some(s(10)),
                backend_request: Some(s(2)),
            },
            // 0s is no timeout; then backendRequest has nothing to be compared with.
            Timeouts {
                request: None,
                backend_request: Some(s(90)),
            },
            Timeouts {
                request: Some(Duration::from_millis(500)),
                backend_request: None,
            },
            Timeouts::default(),
        ]
    );
}

#[test]
fn bad_timeouts_name_their_field() {
    assert_eq!(
        errors(
            r#"
- timeouts: {request: 10s, backendRequest: 11s}
  backendRefs: [{name: web, port: 80}]
- timeouts: {request: "5 s", backendRequest: 25h}
  backendRefs: [{name: web, port: 80}]
- timeouts: {request: "10"}
  backendRefs: [{name: web, port: 80}]
"#
        ),
        [
            "spec.rules[0].timeouts.backendRequest: 11s is longer than request (10s): one try \
             cannot outlast the whole request",
            r#"spec.rules[1].timeouts.request: "5 s" is not a duration (use e.g. 5s, 500ms, 1m30s)"#,
            "spec.rules[1].timeouts.backendRequest: must be at most 24h (or 0s for no timeout), \
             got 25h",
            r#"spec.rules[2].timeouts.request: "10" is not a duration (use e.g. 5s, 500ms, 1m30s)"#,
        ]
    );
}
