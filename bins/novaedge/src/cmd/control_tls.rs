//! Mutual TLS between the controller and the agents.
//!
//! Identities: the controller's certificate names it by DNS (`novaedge-controller` by default,
//! which agents verify); each agent's certificate carries the URI SAN `novaedge://node/NAME` of
//! the node it runs on, and the controller only ever sends an agent the snapshot of that node.
//! `novaedge certs` writes a development CA and such certificates.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Error;

/// The URI SAN prefix of agent certificates.
pub(crate) const NODE_URI_PREFIX: &str = "novaedge://node/";
/// The name agents expect in the controller's certificate unless told otherwise.
pub(crate) const DEFAULT_CONTROLLER_NAME: &str = "novaedge-controller";

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()).into())
}

/// Certificate, key and CA files of one side.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

impl TlsFiles {
    /// The controller's server settings: its identity, and agents' certificates must chain to
    /// the CA.
    pub(crate) fn server(&self) -> Result<ServerTlsConfig, Error> {
        let identity =
            Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        Ok(ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(read(&self.ca, "CA bundle")?))
            .client_auth_optional(false))
    }

    /// An agent's client settings: its identity, and the controller's certificate must chain
    /// to the CA and name `controller_name`.
    pub(crate) fn client(&self, controller_name: &str) -> Result<ClientTlsConfig, Error> {
        let identity =
            Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        Ok(ClientTlsConfig::new()
            .identity(identity)
            .ca_certificate(Certificate::from_pem(read(&self.ca, "CA bundle")?))
            .domain_name(controller_name))
    }
}

/// The node an agent certificate (DER) names, from its `novaedge://node/NAME` URI SAN.
pub(crate) fn node_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => uri.strip_prefix(NODE_URI_PREFIX).map(str::to_owned),
        _ => None,
    })
}

/// Writes a development CA, a controller certificate and one agent certificate per node into
/// `out`: `ca.crt` (and `ca.key`), `controller.crt/.key`, `agent-NODE.crt/.key`.
pub(crate) fn write_dev_certs(
    out: &Path,
    nodes: &[String],
    controller_names: &[String],
) -> Result<(), Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: &str, text: &str| -> Result<(), Error> {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()).into())
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "NovaEdge development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    write("ca.crt", &ca_cert.pem())?;
    write("ca.key", &issuer.key().serialize_pem())?;

    let mut names = vec![DEFAULT_CONTROLLER_NAME.to_owned(), "localhost".to_owned()];
    names.extend(controller_names.iter().cloned());
    let mut controller = CertificateParams::new(names)?;
    controller
        .distinguished_name
        .push(DnType::CommonName, DEFAULT_CONTROLLER_NAME);
    for ip in [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ] {
        controller.subject_alt_names.push(SanType::IpAddress(ip));
    }
    controller.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = controller.signed_by(&key, &issuer)?;
    write("controller.crt", &cert.pem())?;
    write("controller.key", &key.serialize_pem())?;

    for node in nodes {
        let mut agent = CertificateParams::new(Vec::<String>::new())?;
        agent
            .distinguished_name
            .push(DnType::CommonName, node.as_str());
        agent
            .subject_alt_names
            .push(SanType::URI(format!("{NODE_URI_PREFIX}{node}").try_into()?));
        agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = agent.signed_by(&key, &issuer)?;
        write(&format!("agent-{node}.crt"), &cert.pem())?;
        write(&format!("agent-{node}.key"), &key.serialize_pem())?;
    }
    Ok(())
}
