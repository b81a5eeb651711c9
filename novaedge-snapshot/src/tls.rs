//! TLS in the snapshot: certificates of HTTPS listeners (selected by SNI), client certificate
//! verification, redirects to HTTPS, and TLS to backends.
//!
//! Certificate material travels inline, as PEM, so a snapshot is complete on its own and a
//! rotated certificate is simply a new snapshot. This crate checks the shape (names, PEM
//! blocks present, indexes in range); the data plane parses the material and refuses a
//! snapshot whose certificate or key cannot be used, naming the listener or backend and the
//! certificate's source. Private keys never appear in `Debug` output.

use std::fmt;

use crate::error::FieldError;
use crate::model::{Listener, ListenerProtocol};
use crate::proto;
use crate::validate::check_hostname;

/// The TLS side of an HTTPS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerTls {
    /// Candidates for every handshake: the client's SNI picks among them (exact names before
    /// wildcards, the longest wildcard first); of several for one name, the first whose key
    /// can sign with a scheme the client offers.
    pub certificates: Vec<TlsCertificate>,
    /// Index into `certificates` of the one served to a client that sends no SNI or a name no
    /// certificate serves. `None`: such a handshake fails (`unrecognized_name`).
    pub default_certificate: Option<usize>,
    /// Client certificate verification; `None`: no client certificate is asked for.
    pub client_auth: Option<ClientAuth>,
}

/// A certificate chain and its private key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsCertificate {
    /// Where the material comes from, for error messages: `Secret shop/web-tls`, a file path.
    pub source: String,
    /// The SNI names it is served for, exact or `*.suffix` (a wildcard covers any depth, as a
    /// Gateway listener hostname does). Empty: the DNS names of the certificate itself.
    pub server_names: Vec<String>,
    /// PEM: the leaf certificate first, then intermediates.
    pub cert_chain_pem: String,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub private_key_pem: String,
}

impl fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("source", &self.source)
            .field("server_names", &self.server_names)
            .field(
                "cert_chain_pem",
                &format_args!("<{} bytes>", self.cert_chain_pem.len()),
            )
            .field("private_key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

/// Verification of client certificates on a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// PEM: the CA certificates a client certificate must chain to.
    pub ca_pem: String,
    /// `false`: a client without a certificate is refused in the handshake. `true`: it is let
    /// through without an identity (a certificate it does send must still verify).
    pub optional: bool,
}

/// TLS from the proxy to a backend's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Sent as SNI and verified against the server's certificate. Empty: no SNI, and the
    /// certificate must name the endpoint's IP address.
    pub server_name: String,
    /// PEM: the CA certificates that verify the server. Empty: the public web PKI roots.
    pub ca_pem: String,
    /// Presented when the server asks for a client certificate (mTLS).
    pub client_certificate: Option<TlsCertificate>,
}

const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

fn has_private_key(pem: &str) -> bool {
    [
        "PRIVATE KEY-----",
        "RSA PRIVATE KEY-----",
        "EC PRIVATE KEY-----",
    ]
    .iter()
    .any(|tag| pem.contains(&format!("-----BEGIN {tag}")))
}

/// Checks a listener's TLS fields against its protocol.
pub(crate) fn validate_listener(l: &Listener, object: &str, errors: &mut Vec<FieldError>) {
    match (l.protocol, &l.tls) {
        (ListenerProtocol::Https, None) => {
            errors.push(FieldError::new(
                object,
                "tls",
                "an HTTPS listener needs certificates",
            ));
        }
        (ListenerProtocol::Http, Some(_)) => {
            errors.push(FieldError::new(
                object,
                "tls",
                "only an HTTPS listener has TLS settings",
            ));
        }
        (ListenerProtocol::Https, Some(tls)) => validate_listener_tls(tls, object, errors),
        (ListenerProtocol::Http, None) => {}
    }
    if let Some(port) = l.https_redirect_port {
        if l.protocol != ListenerProtocol::Http {
            errors.push(FieldError::new(
                object,
                "https_redirect_port",
                "only an HTTP listener redirects to HTTPS",
            ));
        }
        if port == 0 {
            errors.push(FieldError::new(
                object,
                "https_redirect_port",
                "must not be 0",
            ));
        }
    }
}

fn validate_listener_tls(tls: &ListenerTls, object: &str, errors: &mut Vec<FieldError>) {
    if tls.certificates.is_empty() {
        errors.push(FieldError::new(
            object,
            "tls.certificates",
            "an HTTPS listener needs at least one certificate",
        ));
    }
    for (i, c) in tls.certificates.iter().enumerate() {
        validate_certificate(c, object, &format!("tls.certificates[{i}]"), errors);
        for (j, name) in c.server_names.iter().enumerate() {
            if let Err(why) = check_hostname(name) {
                errors.push(FieldError::new(
                    object,
                    format!("tls.certificates[{i}].server_names[{j}]"),
                    format!("{name:?}: {why}"),
                ));
            }
        }
    }
    if let Some(d) = tls.default_certificate
        && d >= tls.certificates.len()
    {
        errors.push(FieldError::new(
            object,
            "tls.default_certificate",
            format!("{d} is not the index of a certificate"),
        ));
    }
    if let Some(auth) = &tls.client_auth
        && !auth.ca_pem.contains(PEM_CERTIFICATE)
    {
        errors.push(FieldError::new(
            object,
            "tls.client_auth.ca_pem",
            "holds no PEM CERTIFICATE block",
        ));
    }
}

fn validate_certificate(
    c: &TlsCertificate,
    object: &str,
    field: &str,
    errors: &mut Vec<FieldError>,
) {
    let from = if c.source.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.source)
    };
    if !c.cert_chain_pem.contains(PEM_CERTIFICATE) {
        errors.push(FieldError::new(
            object,
            format!("{field}.cert_chain_pem"),
            format!("holds no PEM CERTIFICATE block{from}"),
        ));
    }
    if !has_private_key(&c.private_key_pem) {
        errors.push(FieldError::new(
            object,
            format!("{field}.private_key_pem"),
            format!("holds no PEM private key (PKCS#8, RSA or EC){from}"),
        ));
    }
}

/// Checks a backend's TLS settings.
pub(crate) fn validate_upstream(tls: &UpstreamTls, object: &str, errors: &mut Vec<FieldError>) {
    if !tls.server_name.is_empty()
        && (tls.server_name.starts_with("*.") || check_hostname(&tls.server_name).is_err())
    {
        errors.push(FieldError::new(
            object,
            "tls.server_name",
            format!("{:?} is not a DNS name", tls.server_name),
        ));
    }
    if !tls.ca_pem.is_empty() && !tls.ca_pem.contains(PEM_CERTIFICATE) {
        errors.push(FieldError::new(
            object,
            "tls.ca_pem",
            "holds no PEM CERTIFICATE block",
        ));
    }
    if let Some(c) = &tls.client_certificate {
        validate_certificate(c, object, "tls.client_certificate", errors);
    }
}

fn certificate_from_wire(c: proto::TlsCertificate) -> TlsCertificate {
    TlsCertificate {
        source: c.source,
        server_names: c.server_names,
        cert_chain_pem: c.cert_chain_pem,
        private_key_pem: c.private_key_pem,
    }
}

fn certificate_to_wire(c: &TlsCertificate) -> proto::TlsCertificate {
    proto::TlsCertificate {
        source: c.source.clone(),
        server_names: c.server_names.clone(),
        cert_chain_pem: c.cert_chain_pem.clone(),
        private_key_pem: c.private_key_pem.clone(),
    }
}

pub(crate) fn listener_tls_from_wire(t: proto::ListenerTls) -> ListenerTls {
    ListenerTls {
        certificates: t
            .certificates
            .into_iter()
            .map(certificate_from_wire)
            .collect(),
        default_certificate: t
            .default_certificate
            .map(|d| usize::try_from(d).unwrap_or(usize::MAX)),
        client_auth: t.client_auth.map(|a| ClientAuth {
            ca_pem: a.ca_pem,
            optional: a.optional,
        }),
    }
}

pub(crate) fn listener_tls_to_wire(t: &ListenerTls) -> proto::ListenerTls {
    proto::ListenerTls {
        certificates: t.certificates.iter().map(certificate_to_wire).collect(),
        default_certificate: t
            .default_certificate
            .map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
        client_auth: t.client_auth.as_ref().map(|a| proto::ClientAuth {
            ca_pem: a.ca_pem.clone(),
            optional: a.optional,
        }),
    }
}

pub(crate) fn upstream_tls_from_wire(t: proto::UpstreamTls) -> UpstreamTls {
    UpstreamTls {
        server_name: t.server_name,
        ca_pem: t.ca_pem,
        client_certificate: t.client_certificate.map(certificate_from_wire),
    }
}

pub(crate) fn upstream_tls_to_wire(t: &UpstreamTls) -> proto::UpstreamTls {
    proto::UpstreamTls {
        server_name: t.server_name.clone(),
        ca_pem: t.ca_pem.clone(),
        client_certificate: t.client_certificate.as_ref().map(certificate_to_wire),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConfigSnapshot;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

    fn certificate(names: &[&str]) -> TlsCertificate {
        TlsCertificate {
            source: "Secret shop/web".into(),
            server_names: names.iter().map(|n| n.to_string()).collect(),
            cert_chain_pem: CERT.into(),
            private_key_pem: KEY.into(),
        }
    }

    fn https(tls: ListenerTls) -> Listener {
        Listener {
            name: "https".into(),
            bind: None,
            port: 443,
            protocol: ListenerProtocol::Https,
            tls: Some(tls),
            https_redirect_port: None,
        }
    }

    fn snapshot_errors(listeners: Vec<Listener>) -> Vec<FieldError> {
        let snapshot = ConfigSnapshot {
            listeners,
            ..ConfigSnapshot::default()
        };
        match snapshot.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.errors().to_vec(),
        }
    }

    #[test]
    fn a_full_listener_round_trips_and_validates() {
        let snapshot = ConfigSnapshot {
            version: 3,
            listeners: vec![
                https(ListenerTls {
                    certificates: vec![certificate(&["a.example.com", "*.b.example.com"]), {
                        let mut c = certificate(&[]);
                        c.private_key_pem = "-----BEGIN EC PRIVATE KEY-----\n".into();
                        c
                    }],
                    default_certificate: Some(1),
                    client_auth: Some(ClientAuth {
                        ca_pem: CERT.into(),
                        optional: true,
                    }),
                }),
                Listener {
                    name: "http".into(),
                    bind: None,
                    port: 80,
                    protocol: ListenerProtocol::Http,
                    tls: None,
                    https_redirect_port: Some(443),
                },
            ],
            ..ConfigSnapshot::default()
        };
        snapshot.validate().unwrap();
        let decoded = ConfigSnapshot::decode(&snapshot.encode_to_vec()).unwrap();
        assert_eq!(decoded, snapshot);
    }

    #[test]
    fn listener_mistakes_name_their_field() {
        let mut bad = certificate(&["*"]);
        bad.cert_chain_pem = "junk".into();
        bad.private_key_pem = "-----BEGIN PUBLIC KEY-----".into();
        let errors = snapshot_errors(vec![
            https(ListenerTls {
                certificates: vec![bad],
                default_certificate: Some(1),
                client_auth: Some(ClientAuth::default()),
            }),
            Listener {
                name: "plain".into(),
                bind: None,
                port: 80,
                protocol: ListenerProtocol::Http,
                tls: Some(ListenerTls::default()),
                https_redirect_port: Some(0),
            },
            Listener {
                name: "bare".into(),
                bind: None,
                port: 8443,
                protocol: ListenerProtocol::Https,
                tls: None,
                https_redirect_port: None,
            },
        ]);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tls.certificates[0].cert_chain_pem",
                "tls.certificates[0].private_key_pem",
                "tls.certificates[0].server_names[0]",
                "tls.default_certificate",
                "tls.client_auth.ca_pem",
                "tls",
                "https_redirect_port",
                "tls",
            ],
            "{errors:#?}"
        );
        assert_eq!(errors[0].object, "listener \"https\"");
        assert!(
            errors[0].message.contains("(Secret shop/web)"),
            "the source is named: {}",
            errors[0]
        );
    }

    #[test]
    fn private_keys_stay_out_of_debug_output() {
        let c = certificate(&["a.example.com"]);
        let printed = format!("{c:?}");
        assert!(!printed.contains("MIIB"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn upstream_mistakes_name_their_field() {
        let mut errors = Vec::new();
        let mut client = certificate(&[]);
        client.private_key_pem.clear();
        validate_upstream(
            &UpstreamTls {
                server_name: "*.example.com".into(),
                ca_pem: "nope".into(),
                client_certificate: Some(client),
            },
            "backend \"b\"",
            &mut errors,
        );
        let fields: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            fields,
            [
                "tls.server_name",
                "tls.ca_pem",
                "tls.client_certificate.private_key_pem"
            ]
        );
        let wire = upstream_tls_to_wire(&UpstreamTls {
            server_name: "api.internal".into(),
            ca_pem: CERT.into(),
            client_certificate: Some(certificate(&[])),
        });
        assert_eq!(
            upstream_tls_from_wire(wire).client_certificate,
            Some(certificate(&[]))
        );
    }
}
