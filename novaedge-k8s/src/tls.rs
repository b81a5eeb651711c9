//! TLS material from Kubernetes objects: `kubernetes.io/tls` Secrets (inline or, standalone,
//! from PEM files next to the manifests), CA bundles from ConfigMaps, and the checks that make a
//! bad certificate an error at translation time rather than a failed handshake later.
//!
//! A Secret's key material is held only as bytes that no `Debug` output and no diagnostic ever
//! shows: messages name the Secret and the key (`tls.key`), never the content. PEM is parsed with
//! `rustls-pki-types`; the private key is loaded with the same crypto provider the data plane
//! uses (aws-lc-rs), and its public key is compared with the certificate's, so that a key that
//! does not belong to its certificate is refused here, naming the Gateway listener and Secret.
//!
//! Standalone (`novaedge run`), a Secret may point at PEM files instead of carrying `data`:
//!
//! ```yaml
//! apiVersion: v1
//! kind: Secret
//! type: kubernetes.io/tls
//! metadata:
//!   name: shop-tls
//!   annotations:
//!     novaedge.io/cert-file: certs/shop.crt   # relative to this YAML file's directory
//!     novaedge.io/key-file: certs/shop.key
//! ```
//!
//! The files are read on every load, and the file source watches them, so replacing them
//! rotates the certificate without a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostics::Diagnostic;

/// Secret annotation (standalone only): a PEM file with the certificate chain, read as `tls.crt`.
pub const CERT_FILE_ANNOTATION: &str = "novaedge.io/cert-file";
/// Secret annotation (standalone only): a PEM file with the private key, read as `tls.key`.
pub const KEY_FILE_ANNOTATION: &str = "novaedge.io/key-file";
/// Secret annotation (standalone only): a PEM file with CA certificates, read as `ca.crt`.
pub const CA_FILE_ANNOTATION: &str = "novaedge.io/ca-file";
/// Gateway annotation: HTTP listeners (comma-separated names) whose port answers every request
/// with a redirect to the Gateway's HTTPS port.
pub const HTTPS_REDIRECT_ANNOTATION: &str = "novaedge.io/https-redirect";
/// Service annotation: TLS to the Service's endpoints, an [`UpstreamTlsSpec`] in YAML or JSON.
pub const UPSTREAM_TLS_ANNOTATION: &str = "novaedge.io/upstream-tls";

/// The certificate chain key of a `kubernetes.io/tls` Secret.
pub const TLS_CRT: &str = "tls.crt";
/// The private key key of a `kubernetes.io/tls` Secret.
pub const TLS_KEY: &str = "tls.key";
/// The CA bundle key of a Secret or ConfigMap.
pub const CA_CRT: &str = "ca.crt";

/// kubectl copies the whole object, `data` included, into this annotation; it is dropped so that
/// nothing that prints metadata can print a key.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

// === impl Secret ===

/// A core `v1 Secret` as NovaEdge reads it: `data` (base64) and `stringData` merged (the latter
/// wins, as in Kubernetes), or the files its annotations name. `Debug` shows the keys, never the
/// values.
#[derive(Clone)]
pub struct Secret {
    pub metadata: ObjectMeta,
    /// `type`, e.g. `kubernetes.io/tls`.
    pub type_: Option<String>,
    data: BTreeMap<String, Vec<u8>>,
    /// The files read for it (`novaedge.io/*-file`), which the file source watches.
    pub files: Vec<PathBuf>,
    /// Something in the Secret was wrong (already reported): references to it fail.
    pub(crate) broken: bool,
}

impl Secret {
    /// The value of `key`, decoded.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// The keys it holds.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.data.keys().map(String::as_str)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("type", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("broken", &self.broken)
            .finish()
    }
}

/// Parses a Secret document. Problems are reported (field paths inside the Secret, never a
/// value) and make the Secret `broken`; it is returned anyway, so that a Gateway referring to it
/// says it is unusable rather than missing. `base` is the directory file annotations are
/// relative to.
pub(crate) fn parse_secret(
    mut value: Value,
    object: &str,
    base: Option<&Path>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Secret> {
    let mut errors = Vec::new();
    let mut error = |field: String, message: String| errors.push((field, message));
    let metadata = value.get_mut("metadata").map(Value::take);
    let mut metadata: ObjectMeta =
        match serde_path_to_error::deserialize(metadata.unwrap_or_default()) {
            Ok(m) => m,
            Err(e) => {
                // Metadata holds no key material; its errors may be shown as they are.
                diagnostics.push(Diagnostic::error(
                    object,
                    format!("metadata.{}", e.path()),
                    e.into_inner().to_string(),
                ));
                return None;
            }
        };
    if let Some(a) = metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    let type_ = match value.get("type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => {
            error("type".into(), "expected a string".into());
            None
        }
    };
    let mut data = BTreeMap::new();
    for (section, base64) in [("data", true), ("stringData", false)] {
        match value.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (key, v) in map {
                    let field = format!("{section}[{key}]");
                    let Some(text) = v.as_str() else {
                        error(field, "expected a string".into());
                        continue;
                    };
                    let bytes = if base64 {
                        match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                            Ok(b) => b,
                            Err(_) => {
                                error(field, "not valid base64".into());
                                continue;
                            }
                        }
                    } else {
                        text.as_bytes().to_vec()
                    };
                    data.insert(key.clone(), bytes);
                }
            }
            Some(_) => error(
                section.into(),
                "expected a mapping of keys to strings".into(),
            ),
        }
    }
    let mut files = Vec::new();
    let annotations = metadata.annotations.clone().unwrap_or_default();
    for (annotation, key) in [
        (CERT_FILE_ANNOTATION, TLS_CRT),
        (KEY_FILE_ANNOTATION, TLS_KEY),
        (CA_FILE_ANNOTATION, CA_CRT),
    ] {
        let Some(path) = annotations.get(annotation) else {
            continue;
        };
        let field = format!("metadata.annotations[{annotation}]");
        if data.contains_key(key) {
            error(
                field,
                format!("the Secret also has {key} in data or stringData; set one or the other"),
            );
            continue;
        }
        let path = match base {
            Some(dir) => dir.join(path),
            None => PathBuf::from(path),
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                data.insert(key.to_owned(), bytes);
            }
            Err(e) => error(field, format!("{}: cannot read: {e}", path.display())),
        }
        // Watched even when unreadable: the file appearing is a change worth a reload.
        files.push(path);
    }
    let broken = !errors.is_empty();
    for (field, message) in errors {
        diagnostics.push(Diagnostic::error(object, field, message));
    }
    Some(Secret {
        metadata,
        type_,
        data,
        files,
        broken,
    })
}

// === material checks ===

/// A certificate chain and its key, both checked.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyPair {
    pub(crate) cert_chain_pem: String,
    pub(crate) private_key_pem: String,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field(
                "cert_chain_pem",
                &format_args!("<{} bytes>", self.cert_chain_pem.len()),
            )
            .field("private_key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

/// A PEM error in words that never quote the input.
fn pem_error(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
        pem::Error::NoItemsFound => "no PEM block of the expected type",
        pem::Error::SectionTooLarge => "a PEM block is too large",
        _ => "not readable as PEM",
    }
}

/// The certificates of a PEM text; an error (without the content) when there are none or the
/// PEM is malformed.
fn certificates(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&e).to_owned())?;
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block".into());
    }
    Ok(certs)
}

fn text(bytes: &[u8], key: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{key}: not PEM text"))
}

/// Checks `tls.crt` and `tls.key` of a Secret: the certificate parses, a private key (PKCS#8,
/// PKCS#1 or SEC1) is present and loads, and it belongs to the first certificate. Errors read
/// `tls.key: no private key`.
pub(crate) fn key_pair(secret: &Secret) -> Result<KeyPair, String> {
    let cert = secret
        .get(TLS_CRT)
        .ok_or_else(|| format!("{TLS_CRT}: missing"))?;
    let key = secret
        .get(TLS_KEY)
        .ok_or_else(|| format!("{TLS_KEY}: missing"))?;
    key_pair_of(cert, key)
}

/// [`key_pair`] on the two PEM texts.
pub(crate) fn key_pair_of(cert: &[u8], key: &[u8]) -> Result<KeyPair, String> {
    let chain = certificates(cert).map_err(|e| format!("{TLS_CRT}: {e}"))?;
    let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            format!("{TLS_KEY}: no private key (a PKCS#8, PKCS#1 or SEC1 PEM block)")
        }
        e => format!("{TLS_KEY}: {}", pem_error(&e)),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|_| {
            format!("{TLS_KEY}: not a usable private key (RSA, ECDSA P-256/P-384/P-521 or Ed25519)")
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(format!(
                "{TLS_KEY}: does not belong to the certificate in {TLS_CRT} (the public keys differ)"
            ));
        }
        Err(e) => return Err(format!("{TLS_CRT}: the first certificate is invalid: {e}")),
    }
    Ok(KeyPair {
        cert_chain_pem: text(cert, TLS_CRT)?,
        private_key_pem: text(key, TLS_KEY)?,
    })
}

/// Checks a CA bundle (`ca.crt`): PEM text with at least one certificate.
pub(crate) fn ca_bundle(bytes: &[u8]) -> Result<String, String> {
    certificates(bytes).map_err(|e| format!("{CA_CRT}: {e}"))?;
    text(bytes, CA_CRT)
}

// === upstream TLS annotation ===

/// TLS to a Service's endpoints, as the `novaedge.io/upstream-tls` annotation and the `tls` field
/// of a `ProxyBackend` write it. Every field is optional: `{}` is TLS verified against the
/// public web PKI roots, without SNI.
///
/// ```yaml
/// novaedge.io/upstream-tls: |
///   serverName: api.shop.internal
///   caConfigMap: shop-ca            # ConfigMap in the Service's namespace, key ca.crt
///   clientCertificateSecret: proxy-client   # kubernetes.io/tls Secret, for mTLS
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(has(self.caConfigMap) && has(self.caBundle))",
    "message": "set caConfigMap or caBundle, not both",
}]))]
pub struct UpstreamTlsSpec {
    /// Sent as SNI and verified against the server's certificate; default none (the
    /// certificate must then name the endpoint's IP address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// A ConfigMap in the Service's namespace whose `ca.crt` verifies the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_config_map: Option<String>,
    /// CA certificates inline, PEM. At most one of `caConfigMap` and `caBundle`; neither: the
    /// public web PKI roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// A `kubernetes.io/tls` Secret in the Service's namespace presented as client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate_secret: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn secret(yaml: &str) -> (Option<Secret>, Vec<Diagnostic>) {
        let value: Value = serde_norway::from_str(yaml).unwrap();
        let mut d = Vec::new();
        let s = parse_secret(value, "Secret t/s", None, &mut d);
        (s, d)
    }

    #[test]
    fn a_matching_pair_passes_and_mistakes_are_named() {
        let (cert, key) = pair("a.example.test");
        let (_, other_key) = pair("b.example.test");
        let ok = key_pair_of(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(ok.cert_chain_pem, cert);
        assert_eq!(ok.private_key_pem, key);
        let err = |c: &str, k: &str| key_pair_of(c.as_bytes(), k.as_bytes()).unwrap_err();
        assert_eq!(
            err(&cert, &cert),
            "tls.key: no private key (a PKCS#8, PKCS#1 or SEC1 PEM block)"
        );
        assert_eq!(err("junk", &key), "tls.crt: no PEM CERTIFICATE block");
        assert!(
            err(&cert, &other_key).starts_with("tls.key: does not belong"),
            "{}",
            err(&cert, &other_key)
        );
        let truncated = &key[..key.len() - 30];
        assert_eq!(
            err(&cert, truncated),
            "tls.key: a PEM block has no END line"
        );
        let garbage_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(err(&cert, garbage_key).starts_with("tls.key: not a usable private key"));
        let garbage_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            err(garbage_cert, &key).starts_with("tls.crt: the first certificate is invalid"),
            "{}",
            err(garbage_cert, &key)
        );
        // Nothing of the key ever shows.
        let body = key.lines().nth(1).unwrap();
        for message in [err(&cert, &other_key), err(&cert, truncated)] {
            assert!(!message.contains(body), "{message}");
        }
        assert_eq!(
            ca_bundle(b"nope").unwrap_err(),
            "ca.crt: no PEM CERTIFICATE block"
        );
        assert_eq!(ca_bundle(cert.as_bytes()).unwrap(), cert);
    }

    #[test]
    fn secrets_merge_data_and_string_data_and_hide_values() {
        let (cert, key) = pair("a.example.test");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&cert);
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n  name: s\n  \
             annotations: {{kubectl.kubernetes.io/last-applied-configuration: secret-stuff}}\n\
             data: {{tls.crt: {b64}, tls.key: {b64}}}\nstringData:\n  tls.key: |\n{}",
            key.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let (s, d) = secret(&yaml);
        assert!(d.is_empty(), "{d:?}");
        let s = s.unwrap();
        assert_eq!(s.get(TLS_CRT), Some(cert.as_bytes()));
        assert_eq!(s.get(TLS_KEY), Some(key.as_bytes()), "stringData wins");
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let printed = format!("{s:?}");
        for secret_text in ["BEGIN", "secret-stuff", &b64[..20]] {
            assert!(!printed.contains(secret_text), "{printed}");
        }
        assert!(printed.contains("tls.key"), "{printed}");
    }

    #[test]
    fn secret_problems_name_the_field_not_the_value() {
        let (s, d) = secret(
            "metadata: {name: s, annotations: {novaedge.io/cert-file: /nonexistent/x.pem}}\n\
             data: {tls.key: 'not*base64', tls.crt: 3}\ntype: [x]\n",
        );
        assert!(s.unwrap().broken);
        let got: Vec<String> = d
            .iter()
            .map(|d| format!("{} | {}", d.field, d.message))
            .collect();
        assert_eq!(
            got,
            [
                "type | expected a string",
                "data[tls.crt] | expected a string",
                "data[tls.key] | not valid base64",
                "metadata.annotations[novaedge.io/cert-file] | /nonexistent/x.pem: cannot read: \
                 No such file or directory (os error 2)",
            ]
        );
    }
}
