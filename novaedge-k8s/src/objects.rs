//! Parsing Kubernetes YAML into the typed objects NovaEdge reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

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
/// directories recursively, in sorted order) and parses every document in them, on every core:
/// a large file is cut at its document markers, and gives what one pass over it gives.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<Sourced>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths {
        collect_files(path, &mut files, &mut diagnostics);
    }
    let read: Vec<_> = files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file);
            (file, text)
        })
        .collect();
    let texts: Vec<_> = read
        .iter()
        .filter_map(|(file, text)| Some((text.as_deref().ok()?, Some(file.as_path()))))
        .collect();
    let mut parsed = parse_texts(&texts, cores(), PIECE_BYTES).into_iter();
    let mut objects = Vec::new();
    for (file, text) in &read {
        match text {
            Ok(_) => {
                if let Some((o, d)) = parsed.next() {
                    objects.extend(o);
                    diagnostics.extend(d);
                }
            }
            Err(e) => diagnostics.push(
                Diagnostic::error("file", "", format!("cannot read: {e}"))
                    .in_file(Some(file.clone())),
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
    parse_texts(&[(text, file)], cores(), PIECE_BYTES)
        .pop()
        .unwrap_or_default()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The least work worth a thread of its own: YAML parses at about 10 MB/s.
const PIECE_BYTES: usize = 128 * 1024;

/// Parses texts, each with the file it came from, on up to `threads` threads (the caller's
/// among them), and returns what each holds, in order: YAML parsing is most of the time
/// `novaedge run` takes to start with ten thousand routes (11 MB).
///
/// The work is cut into pieces: each text, and a large one cut further at its document markers
/// into pieces of at least `piece_bytes`, a few per thread so that one slow piece does not
/// leave the others idle. A text cut in pieces gives what one pass over it gives; whenever it
/// might not ([`Parsed::positional`]), the text is parsed again in one pass.
fn parse_texts(
    texts: &[(&str, Option<&Path>)],
    threads: usize,
    piece_bytes: usize,
) -> Vec<(Vec<Sourced>, Vec<Diagnostic>)> {
    let total: usize = texts.iter().map(|(text, _)| text.len()).sum();
    let threads = if total < 2 * piece_bytes { 1 } else { threads };
    let pieces = plan(texts, threads, piece_bytes);
    let mut parsed = parse_pieces(&pieces, texts, threads)
        .into_iter()
        .zip(&pieces)
        .peekable();
    let mut out = Vec::with_capacity(texts.len());
    for (i, &(text, file)) in texts.iter().enumerate() {
        let mut mine = Vec::new();
        while let Some((p, _)) = parsed.next_if(|(_, (of, _))| *of == i) {
            mine.push(p);
        }
        if mine.len() > 1 && mine.iter().any(|p| p.positional) {
            mine = vec![parse_documents(text, base_of(file))];
        }
        let mut objects = Vec::new();
        let mut diagnostics = Vec::new();
        for p in mine {
            objects.extend(p.objects);
            diagnostics.extend(p.diagnostics);
        }
        let file = file.map(Path::to_owned);
        for o in &mut objects {
            o.file = file.clone();
        }
        for d in &mut diagnostics {
            d.file = file.clone();
        }
        out.push((objects, diagnostics));
    }
    out
}

/// The pieces [`parse_texts`] parses: (text index, piece), in order.
///
/// A text is cut only where a line starts with the document marker `---`. YAML reserves such
/// a line: inside a block scalar the content is indented, a plain scalar ends there and a
/// quoted one is an error. So every piece is a run of whole documents, and anchors do not
/// cross documents. A text with YAML directives (`%YAML`, `%TAG`: they belong to the document
/// marker after them) is not cut.
fn plan<'a>(
    texts: &[(&'a str, Option<&Path>)],
    threads: usize,
    piece_bytes: usize,
) -> Vec<(usize, &'a str)> {
    let mut pieces = Vec::new();
    for (i, &(text, _)) in texts.iter().enumerate() {
        let directives = text.starts_with('%') || text.contains("\n%");
        let cuts = if threads > 1 && text.len() >= 2 * piece_bytes && !directives {
            (text.len() / piece_bytes).min(threads * 4)
        } else {
            1
        };
        pieces.extend(split_documents(text, cuts).into_iter().map(|p| (i, p)));
    }
    pieces
}

/// Secrets' file annotations are relative to the directory of their YAML file.
fn base_of(file: Option<&Path>) -> Option<&Path> {
    file.map(|f| {
        f.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    })
}

/// What one pass over a YAML text found.
struct Parsed {
    objects: Vec<Sourced>,
    diagnostics: Vec<Diagnostic>,
    /// Whether something found depends on where the text starts: a YAML error (reported with
    /// its line, and the end of the stream: documents after it are not read) or an object
    /// without a name, which is named by its document's number.
    positional: bool,
}

fn parse_documents(text: &str, base: Option<&Path>) -> Parsed {
    let mut objects = Vec::new();
    let mut diagnostics = Vec::new();
    let mut positional = false;
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    format!("document {}", index + 1),
                    "",
                    format!("YAML: {e}"),
                ));
                positional = true;
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
    // Conservative: an object of a kind that starts with "document " is taken for one.
    positional |= diagnostics
        .iter()
        .any(|d| d.object.starts_with("document "));
    Parsed {
        objects,
        diagnostics,
        positional,
    }
}

/// Parses the pieces on up to `threads` threads, the caller's among them, in their order.
fn parse_pieces(
    pieces: &[(usize, &str)],
    texts: &[(&str, Option<&Path>)],
    threads: usize,
) -> Vec<Parsed> {
    let parse = |&(of, piece): &(usize, &str)| parse_documents(piece, base_of(texts[of].1));
    if threads < 2 || pieces.len() < 2 {
        return pieces.iter().map(parse).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(piece) = pieces.get(i) else {
                return done;
            };
            done.push((i, parse(piece)));
        }
    };
    let mut done = std::thread::scope(|scope| {
        // A helper that cannot be started leaves its share to the others.
        let helpers: Vec<_> = (1..threads.min(pieces.len()))
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut done = work();
        for helper in helpers {
            match helper.join() {
                Ok(theirs) => done.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, parsed)| parsed).collect()
}

/// Cuts `text` into at most `pieces` runs of whole documents of about equal size, each after
/// the first starting at a line that starts with the document marker `---`.
fn split_documents(text: &str, pieces: usize) -> Vec<&str> {
    let mut cut = Vec::with_capacity(pieces);
    let mut start = 0;
    for k in 1..pieces {
        let target = (text.len() * k / pieces).max(start);
        match next_document_marker(text.as_bytes(), target) {
            Some(at) if at > start => {
                cut.push(&text[start..at]);
                start = at;
            }
            Some(_) => {}
            None => break,
        }
    }
    cut.push(&text[start..]);
    cut
}

/// The offset of the first line at or after `from` (not counting a line that starts exactly
/// at `from`) that is a document marker: `---` then a blank or the end.
fn next_document_marker(text: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let newline = at + text.get(at..)?.iter().position(|&b| b == b'\n')?;
        let line = newline + 1;
        let marker = text.get(line..line + 3) == Some(b"---");
        let then_blank = matches!(
            text.get(line + 3),
            None | Some(b' ' | b'\t' | b'\r' | b'\n')
        );
        if marker && then_blank {
            return Some(line);
        }
        at = line;
    }
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

    /// Documents that try the cuts between pieces: markers inside block scalars and quoted
    /// strings, commented markers, a marker with content after it, empty documents, an end
    /// marker, Lists, a kind NovaEdge does not read (a warning) and a field error.
    fn stream(copies: usize) -> String {
        let mut text = String::from("# manifests\n");
        for i in 0..copies {
            text += &format!(
                r#"apiVersion: v1
kind: Service
metadata: {{name: s{i}, namespace: ns, annotations: {{note: "a --- b"}}}}
spec: {{ports: [{{port: 80}}]}}
---
# --- not a marker
apiVersion: v1
kind: ConfigMap
metadata:
  name: c{i}
data:
  ca.crt: |
    ---
    not a marker either
  quoted: "line one
    --- continued"
--- 
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d{i}}}
...
--- {{apiVersion: v1, kind: List, items: [{{apiVersion: v1, kind: Service, metadata: {{name: l{i}}}}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: bad{i}}}
spec: {{ports: [{{port: eighty}}]}}
---
"#
            );
        }
        text
    }

    fn parsed(texts: &[&str], threads: usize) -> Vec<(String, Vec<Diagnostic>)> {
        let file = Some(Path::new("m.yaml"));
        let texts: Vec<_> = texts.iter().map(|text| (*text, file)).collect();
        parse_texts(&texts, threads, 64)
            .into_iter()
            .map(|(objects, diagnostics)| (format!("{objects:?}"), diagnostics))
            .collect()
    }

    fn in_one_pass(text: &str) -> (String, Vec<Diagnostic>) {
        parsed(&[text], 1).remove(0)
    }

    fn in_pieces(text: &str) -> (String, Vec<Diagnostic>) {
        assert!(plan(&[(text, None)], 3, 64).len() > 1);
        parsed(&[text], 3).remove(0)
    }

    #[test]
    fn pieces_are_whole_documents_and_parse_as_one_pass_does() {
        let text = stream(40);
        let pieces = split_documents(&text, 12);
        assert_eq!(pieces.len(), 12);
        assert_eq!(pieces.concat(), text);
        for piece in &pieces[1..] {
            assert!(
                piece.starts_with("---\n") || piece.starts_with("--- "),
                "{piece:.40}"
            );
        }

        let (objects, diagnostics) = in_pieces(&text);
        assert_eq!((objects.clone(), diagnostics.clone()), in_one_pass(&text));
        assert_eq!(objects.matches("Service(").count(), 80, "{objects:.300}");
        assert_eq!(objects.matches("ConfigMap(").count(), 40);
        assert!(objects.contains("not a marker either"));
        assert_eq!(diagnostics.len(), 80, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].object, "Deployment default/d0");
        assert_eq!(diagnostics[1].object, "Service default/bad0");
        assert_eq!(diagnostics[1].field, "spec.ports[0].port");
        assert_eq!(diagnostics[79].object, "Service default/bad39");
    }

    #[test]
    fn what_names_a_document_by_its_place_is_read_in_one_pass() {
        let mut text = stream(30);
        text += "apiVersion: v1\nkind: Service\nmetadata: {namespace: x}\n---\n";
        text += &stream(30);
        let (objects, diagnostics) = in_pieces(&text);
        assert_eq!((objects, diagnostics.clone()), in_one_pass(&text));
        // Six documents a copy, and the one without a name after thirty copies.
        assert!(
            diagnostics
                .iter()
                .any(|d| d.object == "document 181 (Service)" && d.field == "metadata.name"),
            "{diagnostics:#?}"
        );

        // A syntax error far in: what comes before it is read, nothing after, and the error
        // gives its line in the whole text.
        let mut broken = stream(30);
        let line = broken.lines().count() + 1;
        broken += "apiVersion: v1\nkind: [Service\n---\n";
        broken += &stream(30);
        let (objects, diagnostics) = in_pieces(&broken);
        assert_eq!((objects.clone(), diagnostics.clone()), in_one_pass(&broken));
        assert_eq!(objects.matches("ConfigMap(").count(), 30);
        let last = diagnostics.last().unwrap();
        assert!(last.message.starts_with("YAML: "), "{last:?}");
        assert!(
            last.message.contains(&format!("line {}", line + 2)),
            "{line}: {last:?}"
        );
    }

    #[test]
    fn texts_are_cut_only_when_it_is_worth_it_and_safe() {
        let text = stream(20);
        assert_eq!(plan(&[(&text, None)], 3, 64).len(), 12);
        assert_eq!(plan(&[(&text, None)], 1, 64).len(), 1);
        assert_eq!(plan(&[(&text, None)], 3, text.len()).len(), 1);
        let directives = format!("%YAML 1.2\n---\n{text}");
        assert_eq!(plan(&[(&directives, None)], 3, 64).len(), 1);
        assert_eq!(parsed(&[&directives], 3), parsed(&[&directives], 1));
    }

    #[test]
    fn many_texts_come_back_in_order_each_whole() {
        let big = stream(25);
        let mut broken = stream(10);
        broken += "apiVersion: v1\nkind: [Service\n";
        let texts = [
            "",
            &big,
            "apiVersion: v1\nkind: Service\nmetadata: {name: one}\n",
            &broken,
            &big,
        ];
        assert_eq!(parsed(&texts, 3), parsed(&texts, 1));
        let results = parsed(&texts, 3);
        assert_eq!(results[0], (String::from("[]"), Vec::new()));
        assert!(results[2].0.contains("\"one\""));
        assert!(results[3].1.last().unwrap().message.starts_with("YAML: "));
        assert_eq!(results[4], results[1]);
    }

    #[test]
    fn unpacks_lists() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: a}}\n- {apiVersion: v1, kind: Service, metadata: {name: b}}\n";
        let (objects, diags) = parse_yaml(text, None);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(objects.len(), 2);
    }
}
