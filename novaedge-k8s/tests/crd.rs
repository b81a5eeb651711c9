//! The NovaEdge CRDs as an API server sees them: the committed YAML is what the types generate,
//! the schemas are ones Kubernetes accepts (structural, every CEL rule compiles within the cost
//! budget, every field described), every sample in `config/samples/` passes the schema (OpenAPI
//! constraints and CEL rules) and the loader, and each invalid object in the table below is
//! refused by both the schema and the loader's admission checks, at the field the loader names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_cel::{CompiledSchema, Validator, WarningKind, compile_schema, estimate_rule_cost};
use novaedge_k8s::crd::{self, crd_yaml, crds};
use novaedge_k8s::objects::{load_paths, parse_yaml};
use novaedge_k8s::{TranslateOptions, translate};
use serde::Deserialize;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

const REGENERATE: &str = "cargo run -p novaedge -- crdgen > config/crd/novaedge.io.yaml";

#[test]
fn the_committed_crds_are_current() {
    let path = repo().join("config/crd/novaedge.io.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with `{REGENERATE}`", path.display()));
    let generated = crd_yaml().unwrap();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "config/crd/novaedge.io.yaml is stale (first difference at line {}); regenerate it \
             with `{REGENERATE}`",
            line + 1
        );
    }
}

/// The `openAPIV3Schema` of a CRD, as JSON.
fn schema(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap()
}

fn crd_of(kind: &str) -> CustomResourceDefinition {
    crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

#[test]
fn there_is_one_namespaced_crd_per_kind_with_a_status_subresource() {
    let all = crds();
    let kinds: Vec<&str> = all.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ProxyGateway",
            "ProxyRoute",
            "ProxyBackend",
            "ProxyPolicy",
            "ProxyVIP"
        ]
    );
    for c in &all {
        assert_eq!(c.spec.group, crd::GROUP);
        assert_eq!(c.spec.scope, "Namespaced");
        let version = &c.spec.versions[0];
        assert_eq!(version.name, crd::VERSION);
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let status = &schema(c)["properties"]["status"]["properties"];
        assert_eq!(status["observedGeneration"]["type"], "integer");
        // A ProxyRoute's conditions are per parent, as an HTTPRoute's.
        let conditions = if c.spec.names.kind == "ProxyRoute" {
            &status["parents"]["items"]["properties"]["conditions"]
        } else {
            &status["conditions"]
        };
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        assert!(
            conditions["items"]["properties"]["lastTransitionTime"].is_object(),
            "conditions are metav1.Conditions"
        );
    }
    let gateway = &schema(&all[0])["properties"]["status"]["properties"];
    assert_eq!(
        gateway["listeners"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["name"])
    );
    assert_eq!(
        all[4].metadata.name.as_deref(),
        Some("proxyvips.novaedge.io")
    );
}

/// Every node of a schema, with its path.
fn walk<'v>(schema: &'v Value, path: String, out: &mut Vec<(String, &'v Value)>) {
    out.push((path.clone(), schema));
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, format!("{path}[]"), out);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, format!("{path}[*]"), out);
    }
}

#[test]
fn the_schemas_are_structural_and_described() {
    let mut undescribed = Vec::new();
    for crd in crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema(&crd);
        let mut nodes = Vec::new();
        walk(&schema, kind.clone(), &mut nodes);
        for (path, node) in &nodes {
            // What a structural schema may not say, or what kube's rewrites should have removed.
            for key in [
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "$ref",
                "definitions",
                "$defs",
            ] {
                assert!(node.get(key).is_none(), "{path}: {key}");
            }
            assert_ne!(
                node.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{path}"
            );
            if let Some(values) = node.get("enum").and_then(Value::as_array) {
                assert!(!values.contains(&Value::Null), "{path}: null in enum");
            }
            let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            assert!(
                node.get("type").is_some() || int_or_string,
                "{path}: no type"
            );
            // Every field of a spec is documented: its doc comment is the description users
            // read in `kubectl explain`.
            let is_field = path.contains(".spec.") && !path.ends_with(']');
            if is_field {
                match node.get("description").and_then(Value::as_str) {
                    Some(d) if d.contains("[`") => {
                        undescribed.push(format!("{path}: rustdoc link in the description"));
                    }
                    Some(d) if !d.trim().is_empty() => {}
                    _ => undescribed.push(format!("{path}: no description")),
                }
            }
        }
    }
    assert!(undescribed.is_empty(), "{undescribed:#?}");
}

/// Compilation errors and cost-budget warnings of every rule under `node`; returns how many
/// rules there are.
fn cel_problems(node: &CompiledSchema, path: &str, out: &mut Vec<String>) -> usize {
    let mut rules = node.validations.len();
    for v in &node.validations {
        match v {
            Ok(compiled) => {
                for w in estimate_rule_cost(&compiled.rule.rule, node) {
                    if matches!(
                        w.kind,
                        WarningKind::CostExceeded | WarningKind::MissingBounds
                    ) {
                        out.push(format!("{path}: {}: {}", compiled.rule.rule, w.message));
                    }
                }
            }
            Err(e) => out.push(format!("{path}: {e}")),
        }
    }
    for (k, child) in &node.properties {
        rules += cel_problems(child, &format!("{path}.{k}"), out);
    }
    if let Some(items) = &node.items {
        rules += cel_problems(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = &node.additional_properties {
        rules += cel_problems(extra, &format!("{path}[*]"), out);
    }
    rules
}

#[test]
fn every_cel_rule_compiles_within_the_cost_budget() {
    let mut problems = Vec::new();
    for crd in crds() {
        let kind = &crd.spec.names.kind;
        let schema = schema(&crd);
        let mut nodes = Vec::new();
        walk(&schema, String::new(), &mut nodes);
        let written: usize = nodes
            .iter()
            .filter_map(|(_, n)| n.get("x-kubernetes-validations")?.as_array().map(Vec::len))
            .sum();
        let compiled = cel_problems(&compile_schema(&schema), kind, &mut problems);
        assert!(written > 0, "{kind}: no CEL rules");
        assert_eq!(compiled, written, "{kind}: rules the evaluator did not see");
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

// === validation against the schema ===

/// What the API server's OpenAPI validation would say about `value` (no CEL): types, required
/// fields, unknown fields (kubectl validates strictly by default), enums, patterns, lengths,
/// ranges, and the uniqueness that list types demand.
fn openapi(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            out.push(format!("{path}: must not be null"));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(format!("{path}: must be an integer or a string"));
        }
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        out.push(format!("{path}: {value} is not one of {values:?}"));
    }
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    let count = |key: &str| schema.get(key).and_then(Value::as_u64).map(|n| n as usize);
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(map) = value.as_object() else {
                out.push(format!("{path}: must be an object"));
                return;
            };
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|v| v.is_object());
            for (k, v) in map {
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) => openapi(s, v, &format!("{path}.{k}"), out),
                    (None, Some(s)) => openapi(s, v, &format!("{path}[{k}]"), out),
                    (None, None) => out.push(format!("{path}.{k}: unknown field")),
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let r = r.as_str().unwrap();
                if !map.contains_key(r) {
                    out.push(format!("{path}.{r}: required"));
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                out.push(format!("{path}: must be a list"));
                return;
            };
            if count("minItems").is_some_and(|min| items.len() < min) {
                out.push(format!("{path}: fewer than minItems"));
            }
            if count("maxItems").is_some_and(|max| items.len() > max) {
                out.push(format!("{path}: more than maxItems"));
            }
            for (i, item) in items.iter().enumerate() {
                openapi(&schema["items"], item, &format!("{path}[{i}]"), out);
            }
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let identity = |item: &Value| match list_type {
                Some("map") => keys
                    .iter()
                    .map(|k| item[*k].to_string())
                    .collect::<Vec<_>>(),
                _ => vec![item.to_string()],
            };
            if matches!(list_type, Some("map" | "set")) {
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    if !seen.insert(identity(item)) {
                        out.push(format!("{path}[{i}]: duplicate entry"));
                    }
                }
            }
        }
        Some("string") => {
            let Some(s) = value.as_str() else {
                out.push(format!("{path}: must be a string"));
                return;
            };
            let chars = s.chars().count();
            if count("minLength").is_some_and(|min| chars < min) {
                out.push(format!("{path}: shorter than minLength"));
            }
            if count("maxLength").is_some_and(|max| chars > max) {
                out.push(format!("{path}: longer than maxLength"));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                let re = regex::Regex::new(pattern)
                    .unwrap_or_else(|e| panic!("{path}: pattern {pattern}: {e}"));
                if !re.is_match(s) {
                    out.push(format!("{path}: {s:?} does not match {pattern}"));
                }
            }
        }
        Some("integer") => {
            if !(value.is_i64() || value.is_u64()) {
                out.push(format!("{path}: must be an integer"));
                return;
            }
            let n = value.as_f64().unwrap();
            if number("minimum").is_some_and(|min| n < min) {
                out.push(format!("{path}: below minimum"));
            }
            if number("maximum").is_some_and(|max| n > max) {
                out.push(format!("{path}: above maximum"));
            }
        }
        Some("boolean") => {
            if !value.is_boolean() {
                out.push(format!("{path}: must be a boolean"));
            }
        }
        other => panic!("{path}: unexpected schema type {other:?}"),
    }
}

/// What the API server would say about `object` (one document of a NovaEdge kind), OpenAPI
/// and CEL alike.
fn schema_errors(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap();
    let schema = schema(&crd_of(kind));
    let mut out = Vec::new();
    // apiVersion, kind and metadata are the API server's own; the schema describes the rest.
    for (k, v) in object.as_object().unwrap() {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match schema["properties"].get(k) {
            Some(s) => openapi(s, v, k, &mut out),
            None => out.push(format!("{k}: unknown field")),
        }
    }
    if object.get("spec").is_none() {
        out.push("spec: required".into());
    }
    if let Err(errors) = Validator::new().validate(&schema, object, None) {
        out.extend(
            errors
                .iter()
                .map(|e| format!("CEL {}: {}", e.field_path, e.message)),
        );
    }
    out
}

/// The documents of the NovaEdge kinds in a YAML file.
fn novaedge_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| v["apiVersion"] == crd::API_VERSION)
        .collect()
}

fn samples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("config/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_sample_passes_the_schema_and_the_loader() {
    let mut kinds = BTreeSet::new();
    for file in samples() {
        let documents = novaedge_documents(&file);
        assert!(
            !documents.is_empty(),
            "{}: no NovaEdge object",
            file.display()
        );
        for doc in documents {
            let errors = schema_errors(&doc);
            assert!(
                errors.is_empty(),
                "{}: {} {}: {errors:#?}",
                file.display(),
                doc["kind"],
                doc["metadata"]["name"]
            );
            kinds.insert(doc["kind"].as_str().unwrap().to_owned());
        }
    }
    let every_kind: BTreeSet<String> = crds().into_iter().map(|c| c.spec.names.kind).collect();
    assert_eq!(kinds, every_kind, "a sample for each kind");

    // The loader reads them all (unknown fields refused, admission checks passed) and the
    // translator finds nothing wrong with the set.
    let (objects, diagnostics) = load_paths(&[repo().join("config/samples")]);
    assert!(
        !diagnostics.iter().any(|d| d.is_error()),
        "{diagnostics:#?}"
    );
    let loaded: BTreeSet<&str> = objects.iter().map(|o| o.object.kind()).collect();
    assert!(loaded.is_superset(&every_kind.iter().map(String::as_str).collect()));
    let t = translate(&objects, &TranslateOptions::default());
    assert!(!t.has_errors(), "{:#?}", t.diagnostics);
}

// === invalid objects: refused by the schema and by the loader alike ===

const GATEWAY: &str = "apiVersion: novaedge.io/v1alpha1
kind: ProxyGateway
metadata: {name: edge, namespace: shop}
spec:
  listeners:
    - {name: http, port: 80, protocol: HTTP}
    - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: tls}]}}
";

const ROUTE: &str = "apiVersion: novaedge.io/v1alpha1
kind: ProxyRoute
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: api, port: 80}, {name: api-canary, kind: ProxyBackend, weight: 1}]
";

const BACKEND: &str = "apiVersion: novaedge.io/v1alpha1
kind: ProxyBackend
metadata: {name: api, namespace: shop}
spec:
  endpoints: [{address: 10.0.0.1, port: 80}]
";

const VIP: &str = "apiVersion: novaedge.io/v1alpha1
kind: ProxyVIP
metadata: {name: vip, namespace: shop}
spec:
  addresses: [192.0.2.10]
  mode: BGP
  bgp:
    localASN: 64512
    peers: [{address: 192.0.2.1, asn: 64500}]
";

/// `base` with the value at `pointer` (a JSON pointer into the document) replaced by `value`
/// (YAML), or removed when `value` is empty.
fn mutate(base: &str, pointer: &str, value: &str) -> Value {
    let mut doc: Value = serde_norway::from_str(base).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{pointer}"));
    if value.is_empty() {
        match parent {
            Value::Object(m) => {
                m.remove(key);
            }
            Value::Array(a) => {
                a.remove(key.parse().unwrap());
            }
            _ => panic!("{pointer}"),
        }
    } else {
        let value: Value = serde_norway::from_str(value).unwrap();
        match parent {
            Value::Object(m) => {
                m.insert(key.to_owned(), value);
            }
            Value::Array(a) => {
                let i: usize = key.parse().unwrap();
                if i == a.len() {
                    a.push(value);
                } else {
                    a[i] = value;
                }
            }
            _ => panic!("{pointer}"),
        }
    }
    doc
}

#[test]
fn the_bases_of_the_invalid_cases_are_valid() {
    for base in [GATEWAY, ROUTE, BACKEND, VIP] {
        let doc: Value = serde_norway::from_str(base).unwrap();
        assert_eq!(schema_errors(&doc), Vec::<String>::new(), "{base}");
        let (objects, diagnostics) = parse_yaml(base, None);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        assert_eq!(objects.len(), 1);
    }
}

#[test]
fn the_schema_and_the_loader_refuse_the_same_objects() {
    // (base, JSON pointer, new value or "" to remove, the field the loader names)
    let cases: &[(&str, &str, &str, &str)] = &[
        // ProxyGateway
        (GATEWAY, "/spec/listeners", "[]", "spec.listeners"),
        (
            GATEWAY,
            "/spec/listeners/0/name",
            "Web",
            "spec.listeners[0].name",
        ),
        (
            GATEWAY,
            "/spec/listeners/0/port",
            "0",
            "spec.listeners[0].port",
        ),
        (
            GATEWAY,
            "/spec/listeners/1/tls",
            "",
            "spec.listeners[1].tls",
        ),
        (
            GATEWAY,
            "/spec/listeners/0/tls",
            "{certificateRefs: [{name: tls}]}",
            "spec.listeners[0].tls",
        ),
        (
            GATEWAY,
            "/spec/listeners/2",
            "{name: other, port: 80, protocol: HTTP}",
            "spec.listeners[2]",
        ),
        (
            GATEWAY,
            "/spec/listeners/2",
            "{name: http, port: 81, protocol: HTTP}",
            "spec.listeners[2].name",
        ),
        (
            GATEWAY,
            "/spec/listeners/0/hostname",
            "Shop.Example",
            "spec.listeners[0].hostname",
        ),
        (
            GATEWAY,
            "/spec/listeners/1/tls/certificateRefs",
            "[]",
            "spec.listeners[1].tls.certificateRefs",
        ),
        (
            GATEWAY,
            "/spec/nodeSelector",
            "{matchExpressions: [{key: zone, operator: In}]}",
            "spec.nodeSelector.matchExpressions[0].values",
        ),
        (
            GATEWAY,
            "/spec/nodeSelector",
            "{matchExpressions: [{key: -zone, operator: Exists}]}",
            "spec.nodeSelector.matchExpressions[0].key",
        ),
        (
            GATEWAY,
            "/spec/vipRef",
            "{name: Bad_Name}",
            "spec.vipRef.name",
        ),
        // ProxyRoute
        (ROUTE, "/spec/parentRefs", "[]", "spec.parentRefs"),
        (
            ROUTE,
            "/spec/parentRefs/0/sectionName",
            "HTTPS",
            "spec.parentRefs[0].sectionName",
        ),
        (ROUTE, "/spec/hostnames", "['*']", "spec.hostnames[0]"),
        (ROUTE, "/spec/rules", "[]", "spec.rules"),
        (
            ROUTE,
            "/spec/rules/0/backendRefs/0/port",
            "",
            "spec.rules[0].backendRefs[0].port",
        ),
        (
            ROUTE,
            "/spec/rules/0/backendRefs/1/port",
            "80",
            "spec.rules[0].backendRefs[1].port",
        ),
        (
            ROUTE,
            "/spec/rules/0/backendRefs/1/weight",
            "1000001",
            "spec.rules[0].backendRefs[1].weight",
        ),
        (
            ROUTE,
            "/spec/rules/0/matches/0/path/value",
            "api",
            "spec.rules[0].matches[0].path.value",
        ),
        (
            ROUTE,
            "/spec/rules/0/matches/0/path",
            "{value: /a/../b}",
            "spec.rules[0].matches[0].path.value",
        ),
        (
            ROUTE,
            "/spec/rules/0/matches/0/path",
            "{type: Exact, value: /a/.}",
            "spec.rules[0].matches[0].path.value",
        ),
        (
            ROUTE,
            "/spec/rules/0/matches/0/headers",
            "[{name: x-a, value: '1'}, {name: x-a, value: '2'}]",
            "spec.rules[0].matches[0].headers[1].name",
        ),
        (
            ROUTE,
            "/spec/rules/0/matches/0/queryParams",
            "[{name: 'a b', value: '1'}]",
            "spec.rules[0].matches[0].queryParams[0].name",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestRedirect, requestHeaderModifier: {remove: [x]}}]",
            "spec.rules[0].filters[0].requestHeaderModifier",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestRedirect, requestRedirect: {}}, {type: URLRewrite, urlRewrite: {}}]",
            "spec.rules[0].filters",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: ResponseHeaderModifier, responseHeaderModifier: {}}, \
             {type: ResponseHeaderModifier, responseHeaderModifier: {}}]",
            "spec.rules[0].filters",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestRedirect, requestRedirect: {statusCode: 304}}]",
            "spec.rules[0].filters[0].requestRedirect.statusCode",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestRedirect, requestRedirect: {hostname: '*.shop'}}]",
            "spec.rules[0].filters[0].requestRedirect.hostname",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]",
            "spec.rules[0].filters[0].urlRewrite.path",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestHeaderModifier, requestHeaderModifier: \
             {set: [{name: x, value: a}, {name: x, value: b}]}}]",
            "spec.rules[0].filters[0].requestHeaderModifier.set[1].name",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x, value: ''}]}}]",
            "spec.rules[0].filters[0].requestHeaderModifier.add[0].value",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 5, \
             fraction: {numerator: 1}}}]",
            "spec.rules[0].filters[0].requestMirror",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, \
             fraction: {numerator: 3, denominator: 2}}}]",
            "spec.rules[0].filters[0].requestMirror.fraction",
        ),
        (
            ROUTE,
            "/spec/rules/0/filters",
            "[{type: RequestMirror, requestMirror: {backendRef: {name: m}}}]",
            "spec.rules[0].filters[0].requestMirror.backendRef.port",
        ),
        // ProxyBackend
        (BACKEND, "/spec/serviceRef", "{name: api, port: 80}", "spec"),
        (BACKEND, "/spec/endpoints", "", "spec"),
        (BACKEND, "/spec/endpoints", "[]", "spec.endpoints"),
        (
            BACKEND,
            "/spec/endpoints/0/address",
            "10.0.0.300",
            "spec.endpoints[0].address",
        ),
        (
            BACKEND,
            "/spec/endpoints/1",
            "{address: 10.0.0.1, port: 80, weight: 2}",
            "spec.endpoints[1]",
        ),
        (
            BACKEND,
            "/spec/endpoints/0/weight",
            "0",
            "spec.endpoints[0].weight",
        ),
        (
            BACKEND,
            "/spec/loadBalancing",
            "{policy: RingHash}",
            "spec.loadBalancing.hashOn",
        ),
        (
            BACKEND,
            "/spec/loadBalancing",
            "{hashOn: {header: x-user}}",
            "spec.loadBalancing.hashOn",
        ),
        (
            BACKEND,
            "/spec/loadBalancing",
            "{policy: Maglev, hashOn: {header: x-user, cookie: id}}",
            "spec.loadBalancing.hashOn",
        ),
        (
            BACKEND,
            "/spec/loadBalancing",
            "{panicThreshold: 101}",
            "spec.loadBalancing.panicThreshold",
        ),
        (
            BACKEND,
            "/spec/healthCheck",
            "{http: {}, tcp: {}}",
            "spec.healthCheck",
        ),
        (
            BACKEND,
            "/spec/healthCheck",
            "{interval: 5s}",
            "spec.healthCheck",
        ),
        (
            BACKEND,
            "/spec/tls",
            "{caConfigMap: ca, caBundle: pem}",
            "spec.tls",
        ),
        (
            BACKEND,
            "/spec/serviceRef",
            "{name: 1api, port: 80}",
            "spec.serviceRef.name",
        ),
        // ProxyVIP
        (VIP, "/spec/bgp", "", "spec.bgp"),
        (VIP, "/spec/mode", "L2", "spec.interface"),
        (VIP, "/spec/interface", "eth0", "spec.interface"),
        (VIP, "/spec/addresses", "[]", "spec.addresses"),
        (
            VIP,
            "/spec/addresses/0",
            "192.0.2.0/24",
            "spec.addresses[0]",
        ),
        (VIP, "/spec/addresses/1", "192.0.2.10", "spec.addresses[1]"),
        (VIP, "/spec/bgp/localASN", "0", "spec.bgp.localASN"),
        (
            VIP,
            "/spec/bgp/routerID",
            "'2001:db8::1'",
            "spec.bgp.routerID",
        ),
        (VIP, "/spec/bgp/peers", "[]", "spec.bgp.peers"),
        (
            VIP,
            "/spec/bgp/peers/0/address",
            "router-1",
            "spec.bgp.peers[0].address",
        ),
        (
            VIP,
            "/spec/bgp/peers/1",
            "{address: 192.0.2.1, asn: 64501}",
            "spec.bgp.peers[1].address",
        ),
        (VIP, "/spec/bgp/peers/0/port", "0", "spec.bgp.peers[0].port"),
        (
            VIP,
            "/spec/bgp/peers/0/passwordSecretRef",
            "{name: bgp, key: 'a/b'}",
            "spec.bgp.peers[0].passwordSecretRef.key",
        ),
        (VIP, "/spec/mode", "OSPF", "spec.ospf"),
        (
            VIP,
            "/spec",
            "{addresses: [192.0.2.10], mode: OSPF, ospf: {area: 1.2.3, interfaces: [{name: eth0}]}}",
            "spec.ospf.area",
        ),
        (
            VIP,
            "/spec",
            "{addresses: [192.0.2.10], mode: OSPF, ospf: {area: '0', interfaces: \
             [{name: a-very-long-interface}]}}",
            "spec.ospf.interfaces[0].name",
        ),
        (
            VIP,
            "/spec",
            "{addresses: [192.0.2.10], mode: OSPF, ospf: {area: '0', interfaces: \
             [{name: eth0, cost: 0}]}}",
            "spec.ospf.interfaces[0].cost",
        ),
        (
            VIP,
            "/spec",
            "{addresses: [192.0.2.10], mode: OSPF, ospf: {area: '0', interfaces: \
             [{name: eth0}, {name: eth0}]}}",
            "spec.ospf.interfaces[1].name",
        ),
    ];
    let mut failures = Vec::new();
    for (base, pointer, value, field) in cases {
        let doc = mutate(base, pointer, value);
        let case = format!("{} {pointer} = {value:?}", doc["kind"]);
        let schema = schema_errors(&doc);
        if schema.is_empty() {
            failures.push(format!("{case}: the schema accepts it"));
        }
        let text = serde_norway::to_string(&doc).unwrap();
        let (objects, diagnostics) = parse_yaml(&text, None);
        if !objects.is_empty() {
            failures.push(format!("{case}: the loader accepts it"));
        }
        let fields: Vec<&str> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.field.as_str())
            .collect();
        if !fields.contains(field) {
            failures.push(format!(
                "{case}: the loader names {fields:?}, not {field:?} (schema: {schema:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// === fields of the wrong type ===

#[test]
fn a_crd_field_of_the_wrong_type_names_the_object_and_the_field() {
    let cases = [
        (
            ROUTE.replace("weight: 1", "weight: heavy"),
            "ProxyRoute shop/shop",
            "spec.rules[0].backendRefs[1].weight",
            "invalid type: string \"heavy\", expected u32",
        ),
        (
            VIP.replace("localASN: 64512", "localASN: [64512]"),
            "ProxyVIP shop/vip",
            "spec.bgp.localASN",
            "invalid type: sequence, expected u32",
        ),
        (
            GATEWAY.replace("port: 443", "port: 70000"),
            "ProxyGateway shop/edge",
            "spec.listeners[1].port",
            "invalid value: integer `70000`, expected u16",
        ),
        (
            GATEWAY.replace("protocol: HTTP}", "protocol: TCP}"),
            "ProxyGateway shop/edge",
            "spec.listeners[0].protocol",
            "unknown variant `TCP`, expected `HTTP` or `HTTPS`",
        ),
        (
            BACKEND.replace("port: 80}", "port: 80, wieght: 2}"),
            "ProxyBackend shop/api",
            "spec.endpoints[0].wieght",
            "unknown field `wieght`, expected one of `address`, `port`, `weight`",
        ),
        (
            BACKEND.to_owned() + "  healthCheck: {tcp: {}, interval: 5 seconds}\n",
            "ProxyBackend shop/api",
            "spec.healthCheck.interval",
            "\"5 seconds\" is not a duration (use e.g. 5s, 500ms, 1m30s)",
        ),
    ];
    for (text, object, field, message) in cases {
        let (objects, diagnostics) = parse_yaml(&text, Some(Path::new("app.yaml")));
        assert!(objects.is_empty());
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let d = &diagnostics[0];
        assert!(d.is_error());
        assert_eq!(
            (d.object.as_str(), d.field.as_str(), d.message.as_str()),
            (object, field, message)
        );
        assert_eq!(
            d.to_string(),
            format!("error: app.yaml: {object}: {field}: {message}")
        );
    }
}
