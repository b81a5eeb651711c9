//! TLS termination: the rustls server configuration of an HTTPS listener, the SNI certificate
//! resolver, and what a finished handshake tells the request path.
//!
//! A listener's configuration is built when a snapshot is compiled and picked up by each new
//! connection from the runtime it is accepted under: a rotated certificate serves the next
//! handshake, while connections already established go on with theirs. A configuration whose
//! material has not changed is reused across snapshots, which keeps session resumption (the
//! ticket keys and the session cache) alive across unrelated reloads.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use novaedge_filters::{CertificateIdentity, ClientCertificate};
use novaedge_snapshot as snapshot;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// Why a listener's TLS settings cannot be used. The message names the field and the
/// certificate's source.
#[derive(Debug, thiserror::Error)]
#[error("{field}{source_suffix}: {reason}", source_suffix = source_suffix(.source_name))]
pub struct TlsError {
    /// The field, e.g. `tls.certificates[1].private_key_pem`.
    pub field: String,
    /// Where the material came from (a Secret, a file), when known.
    pub source_name: String,
    /// What is wrong.
    pub reason: String,
}

fn source_suffix(source: &str) -> String {
    if source.is_empty() {
        String::new()
    } else {
        format!(" ({source})")
    }
}

/// The crypto provider of every TLS configuration NovaEdge builds (one provider per process).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses a PEM certificate chain and private key into a signing key, checking that the key
/// belongs to the leaf certificate.
pub(crate) fn certified_key(
    cert: &snapshot::TlsCertificate,
    field: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let error = |sub: &str, reason: String| TlsError {
        field: format!("{field}.{sub}"),
        source_name: cert.source.clone(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("cert_chain_pem", format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(error("cert_chain_pem", "no CERTIFICATE block".to_owned()));
    }
    if let Err(e) = x509_parser::parse_x509_certificate(&chain[0]) {
        return Err(error(
            "cert_chain_pem",
            format!("the first certificate does not parse: {e}"),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(cert.private_key_pem.as_bytes())
        .map_err(|e| error("private_key_pem", format!("no usable private key: {e}")))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => error(
            "private_key_pem",
            "the private key does not match the certificate".to_owned(),
        ),
        other => error("private_key_pem", other.to_string()),
    })
}

/// Parses PEM CA certificates into a root store.
pub(crate) fn root_store(pem: &str, field: &str) -> Result<RootCertStore, TlsError> {
    let error = |reason: String| TlsError {
        field: field.to_owned(),
        source_name: String::new(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| error(format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| error(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(error("no CERTIFICATE block".to_owned()));
    }
    Ok(roots)
}

/// Builds the server configuration of an HTTPS listener: certificates chosen by SNI, ALPN
/// `h2` then `http/1.1`, TLS 1.2 and 1.3 with rustls' safe defaults, session tickets and a
/// session cache for resumption, and client verification when configured.
pub(crate) fn server_config(tls: &snapshot::ListenerTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let resolver = SniResolver::build(tls, &provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| internal("tls", e))?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let roots = root_store(&auth.ca_pem, "tls.client_auth.ca_pem")?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if auth.optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| internal("tls.client_auth.ca_pem", e))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| internal("tls", e))?;
    Ok(Arc::new(config))
}

/// Sessions remembered for TLS 1.2 resumption by id (TLS 1.3 resumes with tickets).
const SESSION_CACHE_SIZE: usize = 4096;

fn internal(field: &str, e: impl fmt::Display) -> TlsError {
    TlsError {
        field: field.to_owned(),
        source_name: String::new(),
        reason: e.to_string(),
    }
}

/// Picks a certificate by the client's SNI: an exact name first, then the longest wildcard
/// suffix, then the default. Of several certificates for one name (an RSA and an ECDSA one,
/// say), the first whose key can sign with a scheme the client offers.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `(".example.com", keys)`, longest suffix first.
    wildcards: Vec<(String, Vec<Arc<CertifiedKey>>)>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn build(tls: &snapshot::ListenerTls, provider: &CryptoProvider) -> Result<Self, TlsError> {
        let mut exact: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut wildcards: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut default = None;
        for (i, cert) in tls.certificates.iter().enumerate() {
            let field = format!("tls.certificates[{i}]");
            let key = Arc::new(certified_key(cert, &field, provider)?);
            let names = if cert.server_names.is_empty() {
                certificate_dns_names(&key.cert[0])
            } else {
                cert.server_names.clone()
            };
            let is_default = tls.default_certificate == Some(i);
            if names.is_empty() && !is_default {
                return Err(TlsError {
                    field: format!("{field}.server_names"),
                    source_name: cert.source.clone(),
                    reason: "the certificate names no DNS name and is not the default: \
                             no client could get it"
                        .to_owned(),
                });
            }
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) => wildcards.entry(suffix.to_owned()).or_default(),
                    None => exact.entry(name).or_default(),
                }
                .push(Arc::clone(&key));
            }
            if is_default {
                default = Some(key);
            }
        }
        let mut wildcards: Vec<_> = wildcards.into_iter().collect();
        wildcards.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Ok(Self {
            exact,
            wildcards,
            default,
        })
    }

    fn lookup(&self, name: Option<&str>) -> Option<&[Arc<CertifiedKey>]> {
        let name = name?.trim_end_matches('.').to_ascii_lowercase();
        if let Some(keys) = self.exact.get(&name) {
            return Some(keys);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, keys)| keys.as_slice())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let usable = |key: &&Arc<CertifiedKey>| key.key.choose_scheme(schemes).is_some();
        let name = hello.server_name();
        let chosen = self
            .lookup(name)
            .and_then(|keys| keys.iter().find(usable))
            .or_else(|| self.default.as_ref().filter(usable));
        if chosen.is_none() {
            tracing::debug!(sni = ?name, "no certificate for the client's server name");
        }
        chosen.cloned()
    }
}

/// The DNS names a certificate is for (its subject alternative names).
fn certificate_dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .collect()
}

/// What a completed handshake tells the request path about a connection.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The verified client certificate, if the client sent one.
    pub(crate) client: Option<ClientCertificate>,
}

impl Session {
    pub(crate) fn of(conn: &rustls::ServerConnection) -> Self {
        let client = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| ClientCertificate(Arc::new(identity(leaf))));
        Self { client }
    }
}

/// The identity in a (verified) certificate.
fn identity(der: &CertificateDer<'_>) -> CertificateIdentity {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut id = CertificateIdentity {
        der: Bytes::copy_from_slice(der),
        sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        ..CertificateIdentity::default()
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return id;
    };
    id.subject = cert.subject().to_string();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            use x509_parser::extensions::GeneralName;
            match name {
                GeneralName::DNSName(n) => id.dns_names.push((*n).to_owned()),
                GeneralName::URI(u) => id.uris.push((*u).to_owned()),
                GeneralName::RFC822Name(e) => id.emails.push((*e).to_owned()),
                _ => {}
            }
        }
    }
    id
}

/// Listener TLS configurations of the current snapshot, kept for the next one: a listener
/// whose TLS settings did not change gets the same configuration back.
#[derive(Debug, Default)]
pub(crate) struct TlsState {
    configs: Vec<(snapshot::ListenerTls, Arc<ServerConfig>)>,
}

impl TlsState {
    /// The configuration for `tls`: reused from `previous` (or from this state) when the
    /// settings are the same, built otherwise.
    pub(crate) fn config(
        &mut self,
        previous: &TlsState,
        tls: &snapshot::ListenerTls,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let known = self
            .configs
            .iter()
            .chain(&previous.configs)
            .find(|(settings, _)| settings == tls)
            .map(|(_, config)| Arc::clone(config));
        let config = match known {
            Some(config) => config,
            None => server_config(tls)?,
        };
        if !self.configs.iter().any(|(settings, _)| settings == tls) {
            self.configs.push((tls.clone(), Arc::clone(&config)));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[&str], key: &rcgen::KeyPair) -> String {
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.self_signed(key).unwrap().pem()
    }

    fn entry(names: &[&str], server_names: &[&str]) -> snapshot::TlsCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        snapshot::TlsCertificate {
            source: "Secret shop/web".into(),
            server_names: server_names.iter().map(|n| n.to_string()).collect(),
            cert_chain_pem: certificate(names, &key),
            private_key_pem: key.serialize_pem(),
        }
    }

    fn resolver(certs: Vec<snapshot::TlsCertificate>, default: Option<usize>) -> SniResolver {
        let tls = snapshot::ListenerTls {
            certificates: certs,
            default_certificate: default,
            client_auth: None,
        };
        SniResolver::build(&tls, &provider()).unwrap()
    }

    /// Which certificate (by its DNS names) a name gets, the default included.
    fn served(r: &SniResolver, name: Option<&str>) -> Option<String> {
        let key = match r.lookup(name) {
            Some(keys) => keys.first(),
            None => r.default.as_ref(),
        };
        key.map(|k| certificate_dns_names(&k.cert[0]).join(","))
    }

    #[test]
    fn exact_names_beat_wildcards_and_the_longest_wildcard_wins() {
        let r = resolver(
            vec![
                entry(&["a.example.com"], &[]),
                entry(&["*.example.com"], &[]),
                entry(&["*.eu.example.com"], &[]),
                entry(&["fallback.test"], &[]),
            ],
            Some(3),
        );
        assert_eq!(served(&r, Some("a.example.com")).unwrap(), "a.example.com");
        assert_eq!(served(&r, Some("A.Example.COM.")).unwrap(), "a.example.com");
        assert_eq!(served(&r, Some("b.example.com")).unwrap(), "*.example.com");
        assert_eq!(
            served(&r, Some("x.eu.example.com")).unwrap(),
            "*.eu.example.com"
        );
        // A wildcard never covers its own suffix.
        assert_eq!(served(&r, Some("example.com")).unwrap(), "fallback.test");
        assert_eq!(served(&r, None).unwrap(), "fallback.test");
    }

    #[test]
    fn server_names_override_the_certificates_own() {
        let r = resolver(vec![entry(&["cert.test"], &["listener.test"])], None);
        assert!(served(&r, Some("listener.test")).is_some());
        assert!(served(&r, Some("cert.test")).is_none());
        assert!(served(&r, None).is_none(), "no default: no certificate");
    }

    #[test]
    fn unusable_material_is_refused_with_field_and_source() {
        let mismatched = {
            let mut e = entry(&["a.test"], &[]);
            e.private_key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
            e
        };
        let no_key = {
            let mut e = entry(&["a.test"], &[]);
            e.private_key_pem =
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
            e
        };
        let garbage_cert = {
            let mut e = entry(&["a.test"], &[]);
            e.cert_chain_pem =
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into();
            e
        };
        let nameless = entry(&[], &[]);
        for (cert, want) in [
            (
                mismatched,
                "tls.certificates[0].private_key_pem (Secret shop/web): the private key does not match the certificate",
            ),
            (
                no_key,
                "tls.certificates[0].private_key_pem (Secret shop/web): ",
            ),
            (
                garbage_cert,
                "tls.certificates[0].cert_chain_pem (Secret shop/web): the first certificate does not parse",
            ),
            (
                nameless,
                "tls.certificates[0].server_names (Secret shop/web): the certificate names no DNS name",
            ),
        ] {
            let tls = snapshot::ListenerTls {
                certificates: vec![cert],
                default_certificate: None,
                client_auth: None,
            };
            let err = server_config(&tls).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}\nwanted: {want}");
        }
    }

    #[test]
    fn pkcs1_sec1_and_pkcs8_keys_are_read() {
        // rcgen writes PKCS#8 only: these were made by openssl (see the fixtures' README).
        for (cert, key) in [
            (
                include_str!("../tests/fixtures/tls/rsa-pkcs1.crt"),
                include_str!("../tests/fixtures/tls/rsa-pkcs1.key"),
            ),
            (
                include_str!("../tests/fixtures/tls/ec-sec1.crt"),
                include_str!("../tests/fixtures/tls/ec-sec1.key"),
            ),
            (
                include_str!("../tests/fixtures/tls/ec-pkcs8.crt"),
                include_str!("../tests/fixtures/tls/ec-pkcs8.key"),
            ),
        ] {
            let c = snapshot::TlsCertificate {
                source: "fixture".into(),
                server_names: vec![],
                cert_chain_pem: cert.into(),
                private_key_pem: key.into(),
            };
            certified_key(&c, "tls.certificates[0]", &provider()).unwrap();
        }
    }

    #[test]
    fn configurations_are_reused_while_unchanged() {
        let tls = snapshot::ListenerTls {
            certificates: vec![entry(&["a.test"], &[])],
            default_certificate: Some(0),
            client_auth: None,
        };
        let mut first = TlsState::default();
        let a = first.config(&TlsState::default(), &tls).unwrap();
        let mut second = TlsState::default();
        let b = second.config(&first, &tls).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let mut changed = tls.clone();
        changed.default_certificate = None;
        let c = second.config(&first, &changed).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
