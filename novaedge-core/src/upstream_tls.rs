//! TLS from the proxy to a backend's endpoints: the rustls client configuration of each backend
//! with [`UpstreamTls`], built once per snapshot and reused across reloads while the backend's
//! TLS settings stay the same (so the session cache, and with it TLS resumption, survives).
//!
//! - The server is verified against the CAs of `ca_pem`, or the public web PKI roots compiled in
//!   (webpki-roots) when it is empty. `server_name` is sent as SNI and must be named by the
//!   certificate; when it is empty no SNI is sent and the certificate must name the endpoint's
//!   IP address.
//! - A client certificate, when configured, is presented to servers that ask for one (mTLS). Its
//!   key must match the certificate: a mismatch refuses the snapshot rather than failing every
//!   handshake later.
//! - ALPN: an [`UpstreamProtocol::Http1`] backend offers `h2` and `http/1.1` and speaks whichever
//!   the server picks (HTTP/1.1 when it picks none); an [`UpstreamProtocol::H2c`] backend (gRPC)
//!   offers only `h2`. Upgrade requests (WebSocket) need HTTP/1.1, so they use a variant that
//!   offers only `http/1.1`.
//!
//! Each variant has an identity of its own ([`TlsDial::id`]) that keys the connection pools:
//! connections made with different settings (or in cleartext) to one address never mix.
//!
//! Active HTTP and gRPC health probes of the traffic port use the same settings
//! ([`UpstreamTlsConfig::probe_tls`]): same roots, server name and client certificate, with the
//! ALPN of the probe's protocol.
//!
//! One crypto provider, aws-lc-rs, as everywhere in NovaEdge; TLS 1.2 and 1.3.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use novaedge_health::ProbeTls;
use novaedge_snapshot::{Backend, TlsCertificate, UpstreamProtocol, UpstreamTls};
use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// ALPN name of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// ALPN name of HTTP/1.1.
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A backend's TLS settings that cannot be used: the snapshot is refused.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend:?}: {}: {problem}", location(.field, .origin.as_deref()))]
pub struct UpstreamTlsError {
    /// The backend's name.
    pub backend: String,
    /// The field under the backend's `tls`, e.g. `client_certificate.private_key_pem`; empty
    /// for the settings as a whole.
    pub field: &'static str,
    /// Where the certificate came from (its `source`, e.g. `Secret shop/client`), if known.
    pub origin: Option<String>,
    /// What is wrong with it.
    #[source]
    pub problem: TlsProblem,
}

/// `tls.field (source)`, or `tls` for the settings as a whole.
fn location(field: &str, origin: Option<&str>) -> String {
    let mut at = match field {
        "" => "tls".to_owned(),
        field => format!("tls.{field}"),
    };
    if let Some(origin) = origin {
        at.push_str(&format!(" ({origin})"));
    }
    at
}

/// What is wrong with a TLS setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The PEM text does not parse.
    #[error("bad PEM: {0}")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// The PEM text holds no certificate.
    #[error("holds no certificate")]
    NoCertificate,
    /// A certificate could not be used (bad encoding, unsupported).
    #[error("certificate rejected: {0}")]
    Certificate(#[source] rustls::Error),
    /// The private key could not be parsed or is of an unsupported kind.
    #[error("private key rejected: {0}")]
    PrivateKey(#[source] rustls::Error),
    /// The private key is not the one of the certificate.
    #[error("private key does not match the certificate")]
    KeyMismatch,
    /// Not a DNS name.
    #[error("{0:?} is not a DNS name")]
    ServerName(String),
    /// rustls refused the configuration as a whole.
    #[error("{0}")]
    Config(#[source] rustls::Error),
}

/// Identities of client configurations, for pool keys. Never reused: a pool entry of a dropped
/// configuration can never match a new one.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How one backend's connections are secured. Built by [`UpstreamTlsConfig::build`].
#[derive(Debug)]
pub(crate) struct UpstreamTlsConfig {
    /// What it was built from, to tell whether a reload may keep it.
    spec: UpstreamTls,
    protocol: UpstreamProtocol,
    /// For ordinary requests: ALPN `h2` + `http/1.1`, or `h2` alone for an h2c backend.
    main: TlsDial,
    /// For upgrade requests of an HTTP/1.1 backend: ALPN `http/1.1` only.
    upgrade: TlsDial,
}

/// One client configuration and the name to verify: what a connection is dialled with.
#[derive(Debug, Clone)]
pub(crate) struct TlsDial {
    id: u64,
    config: Arc<ClientConfig>,
    /// `None`: the endpoint's IP address (and no SNI).
    server_name: Option<ServerName<'static>>,
}

// === impl UpstreamTlsConfig ===

impl UpstreamTlsConfig {
    /// The TLS configuration of `backend`, `None` for a cleartext backend. `current` (what the
    /// backend had before the reload) is kept when the settings did not change.
    pub(crate) fn build(
        backend: &Backend,
        current: Option<&Arc<UpstreamTlsConfig>>,
    ) -> Result<Option<Arc<UpstreamTlsConfig>>, Box<UpstreamTlsError>> {
        let Some(spec) = &backend.tls else {
            return Ok(None);
        };
        if let Some(current) = current
            && current.spec == *spec
            && current.protocol == backend.protocol
        {
            return Ok(Some(current.clone()));
        }
        let fail = |field: &'static str, origin: Option<&str>, problem: TlsProblem| {
            Box::new(UpstreamTlsError {
                backend: backend.name.clone(),
                field,
                origin: origin.filter(|o| !o.is_empty()).map(str::to_owned),
                problem,
            })
        };
        let server_name = match spec.server_name.as_str() {
            "" => None,
            name => Some(
                ServerName::try_from(name.to_owned())
                    .map_err(|_| fail("server_name", None, TlsProblem::ServerName(name.into())))?,
            ),
        };
        let roots = roots(&spec.ca_pem).map_err(|p| fail("ca_pem", None, p))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("", None, TlsProblem::Config(e)))?
            .with_root_certificates(roots);
        let mut config = match &spec.client_certificate {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let key = certified_key(cert, &provider)
                    .map_err(|(field, problem)| fail(field, Some(cert.source.as_str()), problem))?;
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key)))
            }
        };
        config.alpn_protocols = match backend.protocol {
            UpstreamProtocol::Http1 => vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
            UpstreamProtocol::H2c => vec![ALPN_H2.to_vec()],
        };
        // Same session cache: a resumed session is as good for an upgrade as for a request.
        let mut upgrade = config.clone();
        upgrade.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
        let dial = |config: ClientConfig| TlsDial {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config: Arc::new(config),
            server_name: server_name.clone(),
        };
        Ok(Some(Arc::new(UpstreamTlsConfig {
            spec: spec.clone(),
            protocol: backend.protocol,
            main: dial(config),
            upgrade: dial(upgrade),
        })))
    }

    /// What active health probes of the traffic port dial with, and its identity (which
    /// changes exactly when the settings do). `novaedge_health` copies the configuration once
    /// with the ALPN its probe speaks (`http/1.1` or `h2`).
    pub(crate) fn probe_tls(&self) -> (u64, ProbeTls) {
        (
            self.main.id,
            ProbeTls::new(self.main.config.clone(), self.main.server_name.clone()),
        )
    }

    /// What a request is dialled with: `upgrade` for an HTTP/1.1 upgrade (WebSocket), which
    /// must not end up on HTTP/2.
    pub(crate) fn dial(&self, upgrade: bool) -> &TlsDial {
        if upgrade && self.protocol == UpstreamProtocol::Http1 {
            &self.upgrade
        } else {
            &self.main
        }
    }
}

/// The CAs of `ca_pem`, or the web PKI roots when it is empty.
fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, TlsProblem> {
    if ca_pem.trim().is_empty() {
        return Ok(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(TlsProblem::Pem)?)
            .map_err(TlsProblem::Certificate)?;
    }
    if roots.is_empty() {
        return Err(TlsProblem::NoCertificate);
    }
    Ok(roots)
}

/// The client certificate and its key, checked to belong together. On error, the field
/// (under `tls.`) at fault.
fn certified_key(
    cert: &TlsCertificate,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, (&'static str, TlsProblem)> {
    const CHAIN: &str = "client_certificate.cert_chain_pem";
    const KEY: &str = "client_certificate.private_key_pem";
    let chain = CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (CHAIN, TlsProblem::Pem(e)))?;
    if chain.is_empty() {
        return Err((CHAIN, TlsProblem::NoCertificate));
    }
    let key = PrivateKeyDer::from_pem_slice(cert.private_key_pem.as_bytes())
        .map_err(|e| (KEY, TlsProblem::Pem(e)))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| (KEY, TlsProblem::PrivateKey(e)))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // A key that cannot tell its public half is let through, as rustls itself does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err(("client_certificate", TlsProblem::KeyMismatch))
        }
        Err(e) => Err((CHAIN, TlsProblem::Certificate(e))),
    }
}

// === impl TlsDial ===

impl TlsDial {
    /// Identifies the configuration, for pool keys.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The TLS handshake on a connected `stream` to `addr`.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::IpAddress(addr.ip().into()),
        };
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        ca_pem: String,
        cert_pem: String,
        key_pem: String,
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.test".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn backend(tls: UpstreamTls) -> Backend {
        Backend {
            name: "shop/api:443".into(),
            protocol: UpstreamProtocol::Http1,
            endpoints: Vec::new(),
            load_balancing: Default::default(),
            health: Default::default(),
            tls: Some(tls),
        }
    }

    fn client(pki: &Pki) -> TlsCertificate {
        TlsCertificate {
            source: "Secret shop/client".into(),
            server_names: Vec::new(),
            cert_chain_pem: pki.cert_pem.clone(),
            private_key_pem: pki.key_pem.clone(),
        }
    }

    fn error(tls: UpstreamTls) -> UpstreamTlsError {
        *UpstreamTlsConfig::build(&backend(tls), None).unwrap_err()
    }

    #[test]
    fn a_good_configuration_builds_and_is_reused_while_unchanged() {
        let pki = pki();
        let mut b = backend(UpstreamTls {
            server_name: "api.internal".into(),
            ca_pem: pki.ca_pem.clone(),
            client_certificate: Some(client(&pki)),
        });
        let built = UpstreamTlsConfig::build(&b, None).unwrap().unwrap();
        assert_eq!(
            built.dial(false).config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(
            built.dial(true).config.alpn_protocols,
            [b"http/1.1".to_vec()]
        );
        assert_ne!(built.dial(false).id(), built.dial(true).id());
        assert!(
            built
                .dial(false)
                .config
                .client_auth_cert_resolver
                .has_certs()
        );

        let again = UpstreamTlsConfig::build(&b, Some(&built)).unwrap().unwrap();
        assert!(Arc::ptr_eq(&built, &again), "unchanged settings are kept");

        b.protocol = UpstreamProtocol::H2c;
        let h2 = UpstreamTlsConfig::build(&b, Some(&built)).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&built, &h2));
        assert_ne!(h2.dial(false).id(), built.dial(false).id());
        assert_eq!(h2.dial(false).config.alpn_protocols, [b"h2".to_vec()]);
        // An h2c backend has no upgrades (they are refused before dialling).
        assert_eq!(h2.dial(true).id(), h2.dial(false).id());
    }

    #[test]
    fn empty_ca_means_web_pki_roots_and_cleartext_means_none() {
        let built = UpstreamTlsConfig::build(&backend(UpstreamTls::default()), None)
            .unwrap()
            .unwrap();
        assert!(built.dial(false).server_name.is_none());
        assert!(
            !built
                .dial(false)
                .config
                .client_auth_cert_resolver
                .has_certs()
        );
        let mut plain = backend(UpstreamTls::default());
        plain.tls = None;
        assert!(UpstreamTlsConfig::build(&plain, None).unwrap().is_none());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_backend_field_and_source() {
        let (pki, other) = (pki(), pki());
        let mut cert = client(&pki);
        cert.private_key_pem = other.key_pem;
        let e = error(UpstreamTls {
            client_certificate: Some(cert),
            ..UpstreamTls::default()
        });
        assert!(matches!(e.problem, TlsProblem::KeyMismatch), "{e:?}");
        assert_eq!(
            e.to_string(),
            "backend \"shop/api:443\": tls.client_certificate (Secret shop/client): \
             private key does not match the certificate"
        );
    }

    #[test]
    fn bad_pem_names_its_field() {
        let pki = pki();
        let garbage_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let not_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";

        let e = error(UpstreamTls {
            ca_pem: garbage_cert.into(),
            ..UpstreamTls::default()
        });
        assert_eq!(e.field, "ca_pem");
        assert!(matches!(e.problem, TlsProblem::Certificate(_)), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("backend \"shop/api:443\": tls.ca_pem: certificate rejected"),
            "{e}"
        );

        let e = error(UpstreamTls {
            ca_pem: not_base64.into(),
            ..UpstreamTls::default()
        });
        assert_eq!(e.field, "ca_pem");
        assert!(matches!(e.problem, TlsProblem::Pem(_)), "{e:?}");

        let e = error(UpstreamTls {
            ca_pem: "no PEM here".into(),
            ..UpstreamTls::default()
        });
        assert!(matches!(e.problem, TlsProblem::NoCertificate), "{e:?}");

        let mut cert = client(&pki);
        cert.cert_chain_pem = garbage_cert.into();
        let e = error(UpstreamTls {
            client_certificate: Some(cert),
            ..UpstreamTls::default()
        });
        assert_eq!(e.field, "client_certificate.cert_chain_pem");
        assert_eq!(e.origin.as_deref(), Some("Secret shop/client"));
        assert!(matches!(e.problem, TlsProblem::Certificate(_)), "{e:?}");

        let mut cert = client(&pki);
        cert.private_key_pem =
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
        let e = error(UpstreamTls {
            client_certificate: Some(cert),
            ..UpstreamTls::default()
        });
        assert_eq!(e.field, "client_certificate.private_key_pem");
        assert!(matches!(e.problem, TlsProblem::PrivateKey(_)), "{e:?}");
        assert!(
            e.to_string().contains(
                "tls.client_certificate.private_key_pem (Secret shop/client): private key rejected"
            ),
            "{e}"
        );

        let mut cert = client(&pki);
        cert.private_key_pem = "nothing".into();
        let e = error(UpstreamTls {
            client_certificate: Some(cert),
            ..UpstreamTls::default()
        });
        assert_eq!(e.field, "client_certificate.private_key_pem");
        assert!(matches!(e.problem, TlsProblem::Pem(_)), "{e:?}");
    }

    #[test]
    fn a_name_that_is_not_a_dns_name_is_refused() {
        let e = error(UpstreamTls {
            server_name: "not a name".into(),
            ..UpstreamTls::default()
        });
        assert_eq!(e.field, "server_name");
        assert!(e.origin.is_none());
    }
}
