//! `novaedge snapshot diff A B`: what differs between two configurations, object by object
//! (listeners, routes, backends, VIPs), with the fields that changed.
//!
//! Each side is an agent's snapshot cache (the protobuf `ConfigSnapshot`, as `novaedge agent
//! --cache` writes it) or manifests (a directory or a YAML file, translated as `novaedge check`
//! translates them), told apart by content. Objects are compared in the redacted view of
//! `novaedge_snapshot::dump`, so a diff shows no secret; a secret that changed while its
//! redacted form did not (a private key of the same length) is still reported, as redacted.
//! The snapshot `version` is not compared.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use novaedge_k8s::TranslateOptions;
use novaedge_snapshot::{
    Backend, ConfigSnapshot, JwtKeys, Listener, Route, UpstreamTls, Vip, VipAnnounce,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::explain::{EXIT_ERROR, OutputFormat, load_manifests};

#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) a: PathBuf,
    pub(crate) b: PathBuf,
    pub(crate) translate: TranslateOptions,
    pub(crate) output: OutputFormat,
}

pub(crate) fn diff(options: Options) -> Result<ExitCode, super::Error> {
    let Some((a, a_kind)) = load(&options.a, &options.translate)? else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let Some((b, b_kind)) = load(&options.b, &options.translate)? else {
        return Ok(ExitCode::from(EXIT_ERROR));
    };
    let changes = compare(&a, &b)?;
    let mut out = std::io::stdout().lock();
    match options.output {
        OutputFormat::Json => {
            let side = |path: &Path, kind: &str, s: &ConfigSnapshot| json!({"path": path.display().to_string(), "kind": kind, "version": s.version});
            let report = json!({
                "a": side(&options.a, a_kind, &a),
                "b": side(&options.b, b_kind, &b),
                "equal": changes.is_empty(),
                "changes": changes.iter().map(ObjectChange::to_json).collect::<Vec<_>>(),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        OutputFormat::Text => {
            let mut text = String::new();
            for change in &changes {
                change.write_text(&mut text)?;
            }
            if changes.is_empty() {
                writeln!(
                    text,
                    "equal ({a_kind} version {} and {b_kind} version {}; versions are not compared)",
                    a.version, b.version
                )?;
            } else {
                writeln!(text, "{} object(s) differ", changes.len())?;
            }
            write!(out, "{text}")?;
        }
    }
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads one side: a snapshot cache or manifests, by content. `None`: errors were printed.
fn load(
    path: &Path,
    translate: &TranslateOptions,
) -> Result<Option<(ConfigSnapshot, &'static str)>, super::Error> {
    let manifests = |path: &Path| -> Result<_, super::Error> {
        Ok(load_manifests(&[path.to_owned()], translate)?.map(|s| (s, "manifests")))
    };
    if path.is_dir() {
        return manifests(path);
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            writeln!(std::io::stderr().lock(), "error: {}: {e}", path.display())?;
            return Ok(None);
        }
    };
    let text = std::str::from_utf8(&bytes).ok();
    // Every Kubernetes object names its apiVersion; a snapshot cache is binary protobuf,
    // which may happen to be valid UTF-8 but holds no such key.
    if text.is_some_and(|t| t.contains("apiVersion")) {
        return manifests(path);
    }
    match ConfigSnapshot::decode(&bytes) {
        Ok(snapshot) => Ok(Some((snapshot, "cache"))),
        // Text that is not a snapshot: let the manifest reader say what is wrong with it.
        Err(_) if text.is_some() => manifests(path),
        Err(e) => {
            writeln!(
                std::io::stderr().lock(),
                "error: {}: neither manifests nor a snapshot cache: {e}",
                path.display()
            )?;
            Ok(None)
        }
    }
}

// === comparison ===

/// One object that is not the same on both sides.
#[derive(Debug)]
struct ObjectChange {
    kind: &'static str,
    name: String,
    /// Routes: the listener they attach to.
    listener: Option<String>,
    change: Change,
}

#[derive(Debug)]
enum Change {
    /// Only in B; its redacted view.
    Added(Value),
    /// Only in A.
    Removed(Value),
    Changed(Vec<FieldChange>),
}

/// A field of the redacted view that differs. `old`/`new` are `None` where the field is absent
/// on that side (a list grew or shrank, an optional field was set or cleared).
#[derive(Debug)]
struct FieldChange {
    path: String,
    old: Option<Value>,
    new: Option<Value>,
    /// A secret changed; `old` and `new` are its redacted forms.
    secret: bool,
}

fn compare(a: &ConfigSnapshot, b: &ConfigSnapshot) -> Result<Vec<ObjectChange>, super::Error> {
    let mut changes = Vec::new();
    compare_kind(
        "listener",
        &a.listeners,
        &b.listeners,
        |l| (l.name.clone(), None),
        listener_secrets,
        &mut changes,
    )?;
    compare_kind(
        "route",
        &a.routes,
        &b.routes,
        |r| (r.name.clone(), Some(r.listener.clone())),
        route_secrets,
        &mut changes,
    )?;
    compare_kind(
        "backend",
        &a.backends,
        &b.backends,
        |b| (b.name.clone(), None),
        backend_secrets,
        &mut changes,
    )?;
    compare_kind(
        "vip",
        &a.vips,
        &b.vips,
        |v| (v.name.clone(), None),
        vip_secrets,
        &mut changes,
    )?;
    Ok(changes)
}

type Key = (String, Option<String>);

/// Compares the objects of one kind, matched by key: A's order, then B's new ones.
fn compare_kind<T: Serialize + PartialEq>(
    kind: &'static str,
    a: &[T],
    b: &[T],
    key: impl Fn(&T) -> Key,
    secrets: fn(&T) -> Vec<(String, &str)>,
    out: &mut Vec<ObjectChange>,
) -> Result<(), serde_json::Error> {
    let find = |list: &'_ [T], k: &Key| list.iter().position(|x| key(x) == *k);
    let object = |(name, listener): Key, change| ObjectChange {
        kind,
        name,
        listener,
        change,
    };
    for old in a {
        let k = key(old);
        match find(b, &k) {
            None => out.push(object(k, Change::Removed(serde_json::to_value(old)?))),
            Some(i) if b[i] == *old => {}
            Some(i) => {
                let new = &b[i];
                let (old_view, new_view) = (serde_json::to_value(old)?, serde_json::to_value(new)?);
                let mut fields = Vec::new();
                diff_values(String::new(), Some(&old_view), Some(&new_view), &mut fields);
                // Secrets whose redacted form is the same on both sides.
                let new_secrets = secrets(new);
                for (path, raw) in secrets(old) {
                    let changed = new_secrets.iter().any(|(p, r)| *p == path && *r != raw);
                    if changed && !fields.iter().any(|f| f.path == path) {
                        fields.push(FieldChange {
                            old: lookup(&old_view, &path).cloned(),
                            new: lookup(&new_view, &path).cloned(),
                            path,
                            secret: true,
                        });
                    }
                }
                if fields.is_empty() {
                    // Something the view does not show differs: only secrets are left out.
                    fields.push(FieldChange {
                        path: String::new(),
                        old: None,
                        new: None,
                        secret: true,
                    });
                }
                out.push(object(k, Change::Changed(fields)));
            }
        }
    }
    for new in b {
        let k = key(new);
        if find(a, &k).is_none() {
            out.push(object(k, Change::Added(serde_json::to_value(new)?)));
        }
    }
    Ok(())
}

/// The differing leaves of two views, by path (`rules[0].backends[1].weight`).
fn diff_values(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            for (key, old) in a {
                diff_values(join(key), Some(old), b.get(key), out);
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    diff_values(join(key), None, Some(new), out);
                }
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                diff_values(format!("{path}[{i}]"), a.get(i), b.get(i), out);
            }
        }
        (a, b) if a != b => {
            let secret = [a, b]
                .into_iter()
                .flatten()
                .any(|v| v.as_str().is_some_and(|s| s.starts_with("<redacted")));
            out.push(FieldChange {
                path,
                old: a.cloned(),
                new: b.cloned(),
                secret,
            });
        }
        _ => {}
    }
}

/// The value at `path` (as `diff_values` writes paths) in a view.
fn lookup<'v>(view: &'v Value, path: &str) -> Option<&'v Value> {
    let mut value = view;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        value = value.get(key)?;
        for index in indices.split('[').skip(1) {
            value = value.get(index.strip_suffix(']')?.parse::<usize>().ok()?)?;
        }
    }
    Some(value)
}

// === secrets, by their paths in the view ===

fn listener_secrets(l: &Listener) -> Vec<(String, &str)> {
    l.tls
        .iter()
        .flat_map(|tls| {
            tls.certificates.iter().enumerate().map(|(i, c)| {
                (
                    format!("tls.certificates[{i}].private_key_pem"),
                    c.private_key_pem.as_str(),
                )
            })
        })
        .collect()
}

fn backend_secrets(b: &Backend) -> Vec<(String, &str)> {
    match &b.tls {
        Some(UpstreamTls {
            client_certificate: Some(c),
            ..
        }) => vec![(
            "tls.client_certificate.private_key_pem".to_owned(),
            c.private_key_pem.as_str(),
        )],
        _ => Vec::new(),
    }
}

fn route_secrets(r: &Route) -> Vec<(String, &str)> {
    r.rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let jwt = rule.filters.jwt.as_ref()?;
            Some(match &jwt.keys {
                JwtKeys::Inline(jwks) => (
                    format!("rules[{i}].filters.jwt.keys.jwks_inline"),
                    jwks.as_str(),
                ),
                JwtKeys::Url(url) => (
                    format!("rules[{i}].filters.jwt.keys.jwks_url"),
                    url.as_str(),
                ),
                JwtKeys::File(_) => return None,
            })
        })
        .collect()
}

fn vip_secrets(v: &Vip) -> Vec<(String, &str)> {
    match &v.announce {
        VipAnnounce::Bgp(bgp) => bgp
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((format!("bgp.peers[{i}].password"), p.password.as_deref()?)))
            .collect(),
        _ => Vec::new(),
    }
}

// === output ===

impl ObjectChange {
    fn title(&self) -> String {
        match &self.listener {
            Some(listener) => format!("{} {} (listener {listener})", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    fn write_text(&self, text: &mut String) -> std::fmt::Result {
        match &self.change {
            Change::Added(_) => writeln!(text, "+ {}: added", self.title()),
            Change::Removed(_) => writeln!(text, "- {}: removed", self.title()),
            Change::Changed(fields) => {
                writeln!(text, "~ {}: changed", self.title())?;
                for f in fields {
                    if f.path.is_empty() {
                        writeln!(text, "    a secret changed (redacted)")?;
                        continue;
                    }
                    let show = |v: &Option<Value>| v.as_ref().map_or("(none)".to_owned(), short);
                    write!(text, "    {}: {} -> {}", f.path, show(&f.old), show(&f.new))?;
                    if f.secret {
                        write!(text, " (secret changed, redacted)")?;
                    }
                    writeln!(text)?;
                }
                Ok(())
            }
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": self.kind,
            "name": self.name,
            "listener": self.listener,
        });
        match &self.change {
            Change::Added(object) => {
                v["change"] = "added".into();
                v["object"] = object.clone();
            }
            Change::Removed(object) => {
                v["change"] = "removed".into();
                v["object"] = object.clone();
            }
            Change::Changed(fields) => {
                v["change"] = "changed".into();
                v["fields"] = fields
                    .iter()
                    .map(|f| {
                        json!({
                            "path": f.path,
                            "old": f.old,
                            "new": f.new,
                            "secret": f.secret,
                        })
                    })
                    .collect::<Vec<_>>()
                    .into();
            }
        }
        v
    }
}

/// A value on one line; long strings (PEM) shortened.
fn short(value: &Value) -> String {
    const MAX: usize = 60;
    match value {
        Value::String(s) if s.len() > MAX => {
            let cut = (0..=MAX)
                .rev()
                .find(|&i| s.is_char_boundary(i))
                .unwrap_or(0);
            format!("{:?}... ({} bytes)", &s[..cut], s.len())
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_and_lookup() {
        let a = json!({"rules": [{"backends": [{"name": "x", "weight": 1}]}], "k": "v"});
        let b = json!({"rules": [{"backends": [{"name": "x", "weight": 2}, {"name": "y", "weight": 1}]}]});
        let mut out = Vec::new();
        diff_values(String::new(), Some(&a), Some(&b), &mut out);
        let paths: Vec<&str> = out.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            ["k", "rules[0].backends[0].weight", "rules[0].backends[1]"]
        );
        assert_eq!(out[0].new, None);
        assert_eq!(out[1].old, Some(json!(1)));
        assert_eq!(lookup(&b, "rules[0].backends[1].name"), Some(&json!("y")));
        assert_eq!(lookup(&b, "rules[1]"), None);
    }

    fn listener(key: &str) -> Listener {
        Listener {
            name: "l".to_owned(),
            bind: None,
            port: 443,
            protocol: novaedge_snapshot::ListenerProtocol::Https,
            tls: Some(novaedge_snapshot::ListenerTls {
                certificates: vec![novaedge_snapshot::TlsCertificate {
                    source: "Secret t/cert".to_owned(),
                    cert_chain_pem: "CERT".to_owned(),
                    private_key_pem: key.to_owned(),
                    ..Default::default()
                }],
                default_certificate: Some(0),
                client_auth: None,
            }),
            https_redirect_port: None,
        }
    }

    /// A secret whose redacted form stays the same (same length) is still a change.
    #[test]
    fn same_length_secrets_are_compared() {
        let snapshot = |key: &str| ConfigSnapshot {
            listeners: vec![listener(key)],
            ..ConfigSnapshot::default()
        };
        let changes = compare(&snapshot("key-one"), &snapshot("key-two")).expect("compares");
        assert_eq!(changes.len(), 1);
        let Change::Changed(fields) = &changes[0].change else {
            panic!("{changes:?}");
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].path, "tls.certificates[0].private_key_pem");
        assert!(fields[0].secret);
        assert_eq!(fields[0].old, Some(json!("<redacted: 7 bytes>")));
        assert_eq!(fields[0].new, Some(json!("<redacted: 7 bytes>")));
        let mut text = String::new();
        changes[0].write_text(&mut text).expect("writes");
        assert!(!text.contains("key-"), "{text}");
        assert!(
            compare(&snapshot("k"), &snapshot("k"))
                .expect("compares")
                .is_empty()
        );
    }
}
