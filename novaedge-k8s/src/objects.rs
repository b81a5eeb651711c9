//! Parsing Kubernetes YAML into the typed objects NovaEdge reads.

use std::path::{Path, PathBuf};

use gateway_api::backendtlspolicies::BackendTlsPolicy;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value;

use crate::crd::{self, ProxyBackend, ProxyGateway, ProxyRoute, ProxyVip};
use crate::diagnostics::Diagnostic;
use crate::policy::{PROXY_POLICY_API_VERSION, ProxyPolicy};
use crate::tls::{Secret, parse_secret};

/// A Kubernetes object of a kind NovaEdge understands.
#[derive(Debug, Clone)]
pub enum Object {
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    Service(Service),
    EndpointSlice(EndpointSlice),
    /// NovaEdge's own policy kind (see [`crate::policy`]); boxed, being the largest.
    ProxyPolicy(Box<ProxyPolicy>),
    /// Certificates and keys; its `Debug` never shows them (see [`crate::tls`]).
    Secret(Box<Secret>),
    /// CA bundles (`ca.crt`).
    ConfigMap(ConfigMap),
    BackendTlsPolicy(BackendTlsPolicy),
    ReferenceGrant(ReferenceGrant),
    /// `networking.k8s.io/v1` Ingress, served when its IngressClass is NovaEdge's.
    Ingress(Ingress),
    IngressClass(IngressClass),
    /// NovaEdge's own kinds (see [`crate::crd`]), boxed like ProxyPolicy.
    ProxyGateway(Box<ProxyGateway>),
    ProxyRoute(Box<ProxyRoute>),
    ProxyBackend(Box<ProxyBackend>),
    ProxyVip(Box<ProxyVip>),
    /// Read for its labels, which `allowedRoutes.namespaces.selector` selects on.
    Namespace(Namespace),
    /// Read for its labels, which node selectors of Gateways and ProxyVIPs select on.
    Node(Box<Node>),
}

/// An object and the file it was read from.
#[derive(Debug, Clone)]
pub struct Sourced {
    pub object: Object,
    pub file: Option<PathBuf>,
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::GatewayClass(_) => "GatewayClass",
            Object::Gateway(_) => "Gateway",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::GrpcRoute(_) => "GRPCRoute",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::ProxyPolicy(_) => "ProxyPolicy",
            Object::Secret(_) => "Secret",
            Object::ConfigMap(_) => "ConfigMap",
            Object::BackendTlsPolicy(_) => "BackendTLSPolicy",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::ProxyGateway(_) => "ProxyGateway",
            Object::ProxyRoute(_) => "ProxyRoute",
            Object::ProxyBackend(_) => "ProxyBackend",
            Object::ProxyVip(_) => "ProxyVIP",
            Object::Namespace(_) => "Namespace",
            Object::Node(_) => "Node",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::ProxyPolicy(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::BackendTlsPolicy(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::ProxyGateway(o) => &o.metadata,
            Object::ProxyRoute(o) => &o.metadata,
            Object::ProxyBackend(o) => &o.metadata,
            Object::ProxyVip(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
        }
    }

    /// Whether the kind lives in a namespace (GatewayClass, IngressClass and Namespace do not).
    pub fn is_namespaced(&self) -> bool {
        !matches!(
            self,
            Object::GatewayClass(_)
                | Object::IngressClass(_)
                | Object::Namespace(_)
                | Object::Node(_)
        )
    }

    /// `Kind namespace/name` (or `Kind name` for cluster-scoped kinds), as diagnostics print it.
    pub fn describe(&self) -> String {
        let meta = self.metadata();
        let name = meta.name.as_deref().unwrap_or("<unnamed>");
        if self.is_namespaced() {
            format!("{} {}/{}", self.kind(), namespace_of(meta), name)
        } else {
            format!("{} {}", self.kind(), name)
        }
    }
}

/// The namespace of an object, `default` when the manifest leaves it out (as kubectl does).
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Reads every `*.yaml` / `*.yml` file under `paths` (files are read whatever their name;
/// directories recursively, in sorted order) and parses every document in them.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<Sourced>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths {
        collect_files(path, &mut files, &mut diagnostics);
    }
    let mut objects = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let (o, d) = parse_yaml(&text, Some(&file));
                objects.extend(o);
                diagnostics.extend(d);
            }
            Err(e) => diagnostics.push(
                Diagnostic::error("file", "", format!("cannot read: {e}")).in_file(Some(file)),
            ),
        }
    }
    (objects, diagnostics)
}

/// The files `load_paths` reads for `path`.
pub fn yaml_files(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    collect_files(path, &mut files, &mut Vec::new());
    files
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    if path.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                diagnostics.push(
                    Diagnostic::error("directory", "", format!("cannot read: {e}"))
                        .in_file(Some(path.to_owned())),
                );
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        children.sort();
        for child in children {
            let hidden = child
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if child.is_dir() {
                collect_files(&child, files, diagnostics);
            } else if child
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                files.push(child);
            }
        }
    } else if path.exists() {
        files.push(path.to_owned());
    } else {
        diagnostics
            .push(Diagnostic::error("path", "", "does not exist").in_file(Some(path.to_owned())));
    }
}

/// Parses every document of a multi-document YAML text. `kind: List` documents are unpacked.
/// Documents of kinds NovaEdge does not read are reported as warnings.
pub fn parse_yaml(text: &str, file: Option<&Path>) -> (Vec<Sourced>, Vec<Diagnostic>) {
    let mut objects = Vec::new();
    let mut diagnostics = Vec::new();
    let file_buf = file.map(Path::to_owned);
    // File annotations of Secrets are relative to the YAML file's directory.
    let base = file.map(|f| {
        f.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    });
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                diagnostics.push(
                    Diagnostic::error(format!("document {}", index + 1), "", format!("YAML: {e}"))
                        .in_file(file_buf.clone()),
                );
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        parse_value(
            value,
            &format!("document {}", index + 1),
            base,
            &mut objects,
            &mut diagnostics,
        );
    }
    for o in &mut objects {
        o.file = file_buf.clone();
    }
    for d in &mut diagnostics {
        d.file = file_buf.clone();
    }
    (objects, diagnostics)
}

fn parse_value(
    value: Value,
    where_: &str,
    base: Option<&Path>,
    objects: &mut Vec<Sourced>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if value.is_null() {
        return; // an empty document, e.g. after a trailing `---`
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let object = if name.is_empty() {
        format!("{where_} ({kind})")
    } else if matches!(kind, "GatewayClass" | "IngressClass" | "Namespace" | "Node") {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    };
    if !value.is_object() {
        diagnostics.push(Diagnostic::error(
            where_,
            "",
            "not a Kubernetes object (expected a mapping)",
        ));
        return;
    }
    if kind.is_empty() || api_version.is_empty() {
        diagnostics.push(Diagnostic::error(
            object,
            if kind.is_empty() {
                "kind"
            } else {
                "apiVersion"
            },
            "required",
        ));
        return;
    }
    if kind == "List" {
        match value.get("items").and_then(Value::as_array) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    parse_value(
                        item.clone(),
                        &format!("{where_} items[{i}]"),
                        base,
                        objects,
                        diagnostics,
                    );
                }
            }
            None => diagnostics.push(Diagnostic::error(object, "items", "a List needs items")),
        }
        return;
    }
    if name.is_empty() {
        diagnostics.push(Diagnostic::error(object, "metadata.name", "required"));
        return;
    }

    let typed = match (api_version, kind) {
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "GatewayClass") => {
            typed(value).map(Object::GatewayClass)
        }
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "Gateway") => {
            typed(value).map(Object::Gateway)
        }
        ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
            typed(value).map(Object::HttpRoute)
        }
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => typed(value).map(Object::GrpcRoute),
        ("v1", "Service") => typed(value).map(Object::Service),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(value).map(Object::EndpointSlice),
        (PROXY_POLICY_API_VERSION, "ProxyPolicy") => {
            typed(value).map(Box::new).map(Object::ProxyPolicy)
        }
        // Parsed by hand: serde's messages may quote a value, and a value may be a key.
        ("v1", "Secret") => match parse_secret(value, &object, base, diagnostics) {
            Some(secret) => Ok(Object::Secret(Box::new(secret))),
            None => return,
        },
        ("v1", "ConfigMap") => typed(value).map(Object::ConfigMap),
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy") => {
            typed(value).map(Object::BackendTlsPolicy)
        }
        (
            "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1",
            "ReferenceGrant",
        ) => typed(value).map(Object::ReferenceGrant),
        ("networking.k8s.io/v1", "Ingress") => typed(value).map(Object::Ingress),
        ("networking.k8s.io/v1", "IngressClass") => typed(value).map(Object::IngressClass),
        (crd::API_VERSION, "ProxyGateway") => typed(value).map(Box::new).map(Object::ProxyGateway),
        (crd::API_VERSION, "ProxyRoute") => typed(value).map(Box::new).map(Object::ProxyRoute),
        (crd::API_VERSION, "ProxyBackend") => typed(value).map(Box::new).map(Object::ProxyBackend),
        (crd::API_VERSION, "ProxyVIP") => typed(value).map(Box::new).map(Object::ProxyVip),
        ("v1", "Namespace") => typed(value).map(Object::Namespace),
        ("v1", "Node") => typed(value).map(Box::new).map(Object::Node),
        _ => {
            diagnostics.push(Diagnostic::warning(
                object,
                "",
                format!("kind {kind} ({api_version}) is not read by NovaEdge; ignored"),
            ));
            return;
        }
    };
    match typed {
        Ok(o) => {
            // What the API server checks on admission from a CRD's schema; an object it would
            // refuse is reported and left out.
            let refused = crd::admit(&o);
            if refused.is_empty() {
                objects.push(Sourced {
                    object: o,
                    file: None,
                });
            } else {
                diagnostics.extend(refused);
            }
        }
        Err((field, message)) => diagnostics.push(Diagnostic::error(object, field, message)),
    }
}

/// Deserializes into a typed object, reporting the path of the first field that does not fit.
fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        (field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_and_reports_field_errors() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80, name: http}]
---
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken}
spec:
  rules:
    - matches:
        - path: {type: Glob, value: /x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
"#;
        let (objects, diags) = parse_yaml(text, Some(Path::new("x.yaml")));
        assert_eq!(objects.len(), 1);
        assert_eq!(objects[0].object.describe(), "Service shop/web");
        assert_eq!(diags.len(), 2, "{diags:#?}");
        assert!(diags[0].is_error());
        assert_eq!(diags[0].object, "HTTPRoute default/broken");
        assert_eq!(diags[0].field, "spec.rules[0].matches[0].path.type");
        assert!(diags[0].message.contains("Glob"), "{}", diags[0].message);
        assert_eq!(
            diags[0].to_string(),
            format!(
                "error: x.yaml: HTTPRoute default/broken: spec.rules[0].matches[0].path.type: {}",
                diags[0].message
            )
        );
        assert!(!diags[1].is_error());
        assert!(diags[1].message.contains("Deployment"));
    }

    #[test]
    fn wrong_type_and_missing_fields() {
        let text =
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: eighty}]}\n";
        let (_, diags) = parse_yaml(text, None);
        assert_eq!(diags[0].field, "spec.ports[0].port");
        let (_, diags) = parse_yaml("kind: Service\nmetadata: {name: s}\n", None);
        assert_eq!(diags[0].field, "apiVersion");
        let (_, diags) = parse_yaml("apiVersion: v1\nkind: Service\n", None);
        assert_eq!(diags[0].field, "metadata.name");
        let (_, diags) = parse_yaml("a: [b\n", None);
        assert!(
            diags[0].message.starts_with("YAML: "),
            "{}",
            diags[0].message
        );
    }

    #[test]
    fn unpacks_lists() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n- {apiVersion: v1, kind: Service, metadata: {name: b}}\n";
        let (objects, diags) = parse_yaml(text, None);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(objects.len(), 2);
    }
}
