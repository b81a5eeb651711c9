//! TLS in the translation: HTTPS listeners and their certificates, client certificate
//! validation, redirects to HTTPS, and TLS to backends.
//!
//! - A Gateway listener `protocol: HTTPS`, `tls.mode: Terminate` contributes the certificates of
//!   its `certificateRefs` to the snapshot listener of its port (`https-{port}`): for its
//!   `hostname` when it has one, else for the certificates' own DNS names, and then the first
//!   such listener's first certificate is the port's default (served without SNI or for an
//!   unknown name). Every certificate is checked here (PEM, key present and loadable, key
//!   belongs to the certificate): a bad one is an error naming the listener field and the
//!   Secret, and the file source keeps serving the last good snapshot.
//! - `spec.tls.frontend` (`default`, `perPort`) asks for client certificates on the Gateway's
//!   HTTPS ports: `AllowValidOnly` (the default) requires one, `AllowInsecureFallback` lets a
//!   client without one through.
//! - The Gateway annotation [`HTTPS_REDIRECT_ANNOTATION`] names HTTP listeners whose port
//!   redirects everything to the Gateway's one HTTPS port.
//! - `BackendTLSPolicy` and the Service annotation [`UPSTREAM_TLS_ANNOTATION`] give a backend
//!   TLS; the policy wins for what it sets (hostname, CA), the annotation alone can add a client
//!   certificate.
//!
//! Listeners of several Gateways on one port share one snapshot listener: they must agree on the
//! protocol, the client validation and the redirect, or the later one is an error.

use std::collections::BTreeSet;
use std::collections::btree_map::Entry;

use gateway_api::gateways::{
    GatewayListeners, GatewayListenersTlsMode, GatewayTlsFrontendDefaultValidationMode,
    GatewayTlsFrontendPerPortTlsValidationMode,
};

use super::*;
use crate::tls::{
    CA_CRT, HTTPS_REDIRECT_ANNOTATION, UPSTREAM_TLS_ANNOTATION, UpstreamTlsSpec, ca_bundle,
    key_pair,
};
use novaedge_snapshot::{ListenerTls, UpstreamTls};

/// What a checked BackendTLSPolicy sets for one target.
pub(super) struct PolicyTls {
    /// The Service port name it is limited to (`sectionName`).
    section: Option<String>,
    server_name: String,
    ca_pem: String,
    /// `BackendTLSPolicy namespace/name`.
    policy: String,
}

/// A Gateway's client certificate validation: the default and the per-port overrides.
#[derive(Default)]
pub(super) struct Frontend {
    default: Option<ClientAuth>,
    per_port: BTreeMap<u16, Option<ClientAuth>>,
}

impl Frontend {
    pub(super) fn for_port(&self, port: u16) -> Option<ClientAuth> {
        match self.per_port.get(&port) {
            Some(auth) => auth.clone(),
            None => self.default.clone(),
        }
    }
}

/// A reference to a CA bundle, whichever Gateway API type wrote it.
struct CaRef<'r> {
    group: &'r str,
    kind: &'r str,
    name: &'r str,
    namespace: Option<&'r str>,
}

/// One port's snapshot listener while listeners are merged into it.
pub(super) struct PortEntry {
    pub(super) listener: Listener,
    /// `listener "x" of Gateway ns/name`, the first listener on the port.
    pub(super) owner: String,
    /// Certificate sources of the listener that gave the default certificate, and who it is.
    pub(super) default_from: Option<(Vec<String>, String)>,
    /// The Gateway (object, file) whose annotation redirects this port, for conflict errors.
    pub(super) redirect_owner: Option<(String, Option<PathBuf>)>,
}

fn redirect_field() -> String {
    format!("metadata.annotations[{HTTPS_REDIRECT_ANNOTATION}]")
}

impl<'a> Translator<'a> {
    /// Whether a ReferenceGrant in `to_namespace` lets `from_kind` objects of `from_namespace`
    /// refer to the core `to_kind` object `to_name`.
    pub(super) fn granted(
        &self,
        from_kind: &str,
        from_namespace: &str,
        to_kind: &str,
        to_namespace: &str,
        to_name: &str,
    ) -> bool {
        self.grants.iter().any(|g| {
            namespace_of(&g.metadata) == to_namespace
                && g.spec.from.iter().any(|f| {
                    f.group == GATEWAY_GROUP && f.kind == from_kind && f.namespace == from_namespace
                })
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
    }

    /// The checked certificate and key of a Secret, or why not (the message names the Secret).
    pub(super) fn secret_certificate(&self, key: &Key) -> Result<TlsCertificate, String> {
        let source = format!("Secret {}/{}", key.0, key.1);
        let Some(secret) = self.secrets.get(key) else {
            return Err(format!("{source} not found"));
        };
        if secret.broken {
            return Err(format!(
                "{source} is unusable (see the errors reported for it)"
            ));
        }
        let pair = key_pair(secret).map_err(|e| format!("{source}: {e}"))?;
        Ok(TlsCertificate {
            source,
            server_names: Vec::new(),
            cert_chain_pem: pair.cert_chain_pem,
            private_key_pem: pair.private_key_pem,
        })
    }

    /// The checked `ca.crt` of a ConfigMap (or a Secret, `kind` says), or why not.
    fn ca_of(&self, kind: &str, key: &Key) -> Result<String, String> {
        let source = format!("{kind} {}/{}", key.0, key.1);
        let bytes = if kind == "Secret" {
            let secret = self
                .secrets
                .get(key)
                .ok_or_else(|| format!("{source} not found"))?;
            if secret.broken {
                return Err(format!(
                    "{source} is unusable (see the errors reported for it)"
                ));
            }
            secret.get(CA_CRT)
        } else {
            let map = self
                .config_maps
                .get(key)
                .ok_or_else(|| format!("{source} not found"))?;
            map.data
                .as_ref()
                .and_then(|d| d.get(CA_CRT))
                .map(String::as_bytes)
        };
        let bytes = bytes.ok_or_else(|| format!("{source}: {CA_CRT}: missing"))?;
        ca_bundle(bytes).map_err(|e| format!("{source}: {e}"))
    }

    /// The CA bundles of `refs` (ConfigMaps or Secrets, key `ca.crt`), concatenated; `None`
    /// after reporting each bad reference under `field[j]`.
    #[allow(clippy::too_many_arguments)]
    fn ca_refs(
        &mut self,
        refs: &[CaRef<'_>],
        from_kind: &str,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Option<String> {
        let mut pem = String::new();
        let mut ok = true;
        for (j, r) in refs.iter().enumerate() {
            let field = format!("{field}[{j}]");
            if !r.group.is_empty() || !matches!(r.kind, "ConfigMap" | "Secret") {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.kind"),
                    format!(
                        "{} ({}) is not supported; use a core ConfigMap with {CA_CRT}",
                        r.kind, r.group
                    ),
                );
                ok = false;
                continue;
            }
            let to_namespace = r.namespace.unwrap_or(namespace);
            if to_namespace != namespace
                && !self.granted(from_kind, namespace, r.kind, to_namespace, r.name)
            {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.namespace"),
                    format!(
                        "{} {to_namespace}/{} is in another namespace and no ReferenceGrant \
                         there allows {from_kind}s of namespace {namespace} to refer to it",
                        r.kind, r.name
                    ),
                );
                ok = false;
                continue;
            }
            match self.ca_of(r.kind, &(to_namespace.to_owned(), r.name.to_owned())) {
                Ok(ca) => {
                    if !pem.is_empty() && !pem.ends_with('\n') {
                        pem.push('\n');
                    }
                    pem.push_str(&ca);
                }
                Err(message) => {
                    self.error(file, object.into(), field, message);
                    ok = false;
                }
            }
        }
        ok.then_some(pem)
    }

    /// `spec.tls` of a Gateway: client certificate validation (`frontend`); `backend` is not
    /// supported (a backend is shared by every Gateway that routes to it, so its client
    /// certificate comes from the Service, see [`UPSTREAM_TLS_ANNOTATION`]).
    pub(super) fn frontend_validation(
        &mut self,
        gateway: &Gateway,
        key: &Key,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Frontend {
        let mut out = Frontend::default();
        let Some(tls) = &gateway.spec.tls else {
            return out;
        };
        if tls
            .backend
            .as_ref()
            .is_some_and(|b| b.client_certificate_ref.is_some())
        {
            self.warning(
                file,
                object.into(),
                "spec.tls.backend.clientCertificateRef".into(),
                format!(
                    "not supported; give the Service a clientCertificateSecret in its \
                     {UPSTREAM_TLS_ANNOTATION} annotation"
                ),
            );
        }
        let Some(frontend) = &tls.frontend else {
            return out;
        };
        if let Some(v) = &frontend.default.validation {
            let refs: Vec<CaRef<'_>> = v
                .ca_certificate_refs
                .iter()
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                })
                .collect();
            let optional =
                v.mode == Some(GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback);
            out.default = self.client_auth(
                &refs,
                optional,
                &key.0,
                "spec.tls.frontend.default.validation",
                object,
                file,
            );
        }
        for (k, per_port) in frontend.per_port.iter().flatten().enumerate() {
            let field = format!("spec.tls.frontend.perPort[{k}]");
            let Some(port) = u16::try_from(per_port.port).ok().filter(|p| *p != 0) else {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.port"),
                    format!("{} is not a TCP port (1-65535)", per_port.port),
                );
                continue;
            };
            let auth = match &per_port.tls.validation {
                None => None,
                Some(v) => {
                    let refs: Vec<CaRef<'_>> = v
                        .ca_certificate_refs
                        .iter()
                        .map(|r| CaRef {
                            group: &r.group,
                            kind: &r.kind,
                            name: &r.name,
                            namespace: r.namespace.as_deref(),
                        })
                        .collect();
                    let optional = v.mode
                        == Some(GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback);
                    self.client_auth(
                        &refs,
                        optional,
                        &key.0,
                        &format!("{field}.tls.validation"),
                        object,
                        file,
                    )
                }
            };
            if out.per_port.insert(port, auth).is_some() {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.port"),
                    format!("port {port} appears more than once"),
                );
            }
        }
        out
    }

    fn client_auth(
        &mut self,
        refs: &[CaRef<'_>],
        optional: bool,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Option<ClientAuth> {
        if refs.is_empty() {
            self.error(
                file,
                object.into(),
                format!("{field}.caCertificateRefs"),
                "at least one CA certificate is needed to validate clients".into(),
            );
            return None;
        }
        let field = format!("{field}.caCertificateRefs");
        let ca_pem = self.ca_refs(refs, "Gateway", namespace, &field, object, file)?;
        Some(ClientAuth { ca_pem, optional })
    }

    /// The checked certificates of an HTTPS listener, their server names set from its hostname;
    /// when the listener cannot be served, the (reported) problem as the reason of its status
    /// condition.
    pub(super) fn listener_certificates(
        &mut self,
        l: &GatewayListeners,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Result<Vec<TlsCertificate>, ListenerProblem> {
        let Some(tls) = &l.tls else {
            self.error(
                file,
                object.into(),
                format!("{field}.tls"),
                "required for an HTTPS listener (mode Terminate and certificateRefs)".into(),
            );
            return Err(ListenerProblem::accepted(
                reasons::UNSUPPORTED_VALUE,
                "tls is required",
            ));
        };
        if tls.mode == Some(GatewayListenersTlsMode::Passthrough) {
            self.warning(
                file,
                object.into(),
                format!("{field}.tls.mode"),
                "Passthrough is not supported; listener skipped".into(),
            );
            return Err(ListenerProblem::accepted(
                reasons::UNSUPPORTED_VALUE,
                "TLS Passthrough is not supported",
            ));
        }
        if tls.options.as_ref().is_some_and(|o| !o.is_empty()) {
            self.warning(
                file,
                object.into(),
                format!("{field}.tls.options"),
                "not supported; ignored".into(),
            );
        }
        let refs = tls.certificate_refs.as_deref().unwrap_or_default();
        if refs.is_empty() {
            self.error(
                file,
                object.into(),
                format!("{field}.tls.certificateRefs"),
                "an HTTPS listener needs at least one certificate".into(),
            );
            return Err(ListenerProblem::refs(
                reasons::INVALID_CERTIFICATE_REF,
                "no certificateRefs",
            ));
        }
        let server_names: Vec<String> = l.hostname.iter().cloned().collect();
        let mut out = Vec::new();
        let mut problem = None;
        for (j, r) in refs.iter().enumerate() {
            let field = format!("{field}.tls.certificateRefs[{j}]");
            let group = r.group.as_deref().unwrap_or("");
            let kind = r.kind.as_deref().unwrap_or("Secret");
            if !group.is_empty() || kind != "Secret" {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.kind"),
                    format!("{kind} ({group}) is not supported; use a core Secret"),
                );
                problem.get_or_insert(ListenerProblem::refs(
                    reasons::INVALID_CERTIFICATE_REF,
                    format!("{field}: {kind} is not a core Secret"),
                ));
                continue;
            }
            let to_namespace = r.namespace.as_deref().unwrap_or(namespace);
            if to_namespace != namespace
                && !self.granted("Gateway", namespace, "Secret", to_namespace, &r.name)
            {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.namespace"),
                    format!(
                        "Secret {to_namespace}/{} is in another namespace and no ReferenceGrant \
                         there allows Gateways of namespace {namespace} to refer to it",
                        r.name
                    ),
                );
                problem.get_or_insert(ListenerProblem::refs(
                    reasons::REF_NOT_PERMITTED,
                    format!(
                        "{field}: no ReferenceGrant allows Secret {to_namespace}/{}",
                        r.name
                    ),
                ));
                continue;
            }
            match self.secret_certificate(&(to_namespace.to_owned(), r.name.clone())) {
                Ok(mut c) => {
                    c.server_names = server_names.clone();
                    out.push(c);
                }
                Err(message) => {
                    problem.get_or_insert(ListenerProblem::refs(
                        reasons::INVALID_CERTIFICATE_REF,
                        format!("{field}: {message}"),
                    ));
                    self.error(file, object.into(), field, message);
                }
            }
        }
        match problem {
            None => Ok(out),
            Some(p) => Err(p),
        }
    }

    /// Applies a Gateway's [`HTTPS_REDIRECT_ANNOTATION`] to its listeners.
    pub(super) fn https_redirect(
        &mut self,
        gateway: &Gateway,
        listeners: &mut [GatewayListener<'a>],
        object: &str,
        file: Option<&PathBuf>,
    ) {
        let Some(value) = gateway
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HTTPS_REDIRECT_ANNOTATION))
        else {
            return;
        };
        let https: BTreeSet<u16> = listeners
            .iter()
            .filter(|l| l.protocol == ListenerProtocol::Https)
            .map(|l| l.port)
            .collect();
        let target = match https.len() {
            1 => https.first().copied(),
            0 => {
                self.error(
                    file,
                    object.into(),
                    redirect_field(),
                    "the Gateway has no HTTPS listener to redirect to".into(),
                );
                None
            }
            _ => {
                let ports: Vec<String> = https.iter().map(u16::to_string).collect();
                self.error(
                    file,
                    object.into(),
                    redirect_field(),
                    format!(
                        "the Gateway has HTTPS listeners on several ports ({}); the redirect \
                         needs exactly one",
                        ports.join(", ")
                    ),
                );
                None
            }
        };
        let names: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            self.error(
                file,
                object.into(),
                redirect_field(),
                "names no listener; expected listener names separated by commas".into(),
            );
        }
        for name in names {
            match gateway.spec.listeners.iter().find(|l| l.name == name) {
                None => self.error(
                    file,
                    object.into(),
                    redirect_field(),
                    format!("the Gateway has no listener named {name:?}"),
                ),
                Some(l) if l.protocol != "HTTP" => self.error(
                    file,
                    object.into(),
                    redirect_field(),
                    format!(
                        "listener {name:?} is {}; only HTTP listeners redirect",
                        l.protocol
                    ),
                ),
                Some(_) => {
                    for l in listeners.iter_mut().filter(|l| l.name == name) {
                        l.redirect_to = target;
                    }
                }
            }
        }
    }

    /// One snapshot listener per port, merging the Gateway listeners on it. A listener that
    /// cannot share its port with the ones before it is reported and dropped.
    pub(super) fn ports(
        &mut self,
        listeners: &mut Vec<GatewayListener<'a>>,
    ) -> BTreeMap<u16, PortEntry> {
        let mut table: BTreeMap<u16, PortEntry> = BTreeMap::new();
        let mut kept = Vec::with_capacity(listeners.len());
        for l in listeners.drain(..) {
            let object = self.gateway_object(&l.gateway);
            let field = format!("spec.listeners[{}]", l.index);
            let me = format!("listener {:?} of {object}", l.name);
            let entry = match table.entry(l.port) {
                Entry::Vacant(v) => {
                    let (prefix, tls) = match l.protocol {
                        ListenerProtocol::Http => ("http", None),
                        ListenerProtocol::Https => (
                            "https",
                            Some(ListenerTls {
                                certificates: Vec::new(),
                                default_certificate: None,
                                client_auth: l.client_auth.clone(),
                            }),
                        ),
                    };
                    v.insert(PortEntry {
                        listener: Listener {
                            name: format!("{prefix}-{}", l.port),
                            bind: None,
                            port: l.port,
                            protocol: l.protocol,
                            tls,
                            https_redirect_port: l.redirect_to,
                        },
                        owner: me.clone(),
                        default_from: None,
                        redirect_owner: l.redirect_to.map(|_| (object.clone(), l.file.cloned())),
                    })
                }
                Entry::Occupied(o) => {
                    let entry = o.into_mut();
                    if entry.listener.protocol != l.protocol {
                        let name = |p| match p {
                            ListenerProtocol::Http => "HTTP",
                            ListenerProtocol::Https => "HTTPS",
                        };
                        self.error(
                            l.file,
                            object,
                            format!("{field}.protocol"),
                            format!(
                                "port {} is already {} for {}; HTTP and HTTPS cannot share a port",
                                l.port,
                                name(entry.listener.protocol),
                                entry.owner
                            ),
                        );
                        self.listener_problem(
                            &l.gateway,
                            l.index,
                            ListenerProblem::conflicted(
                                reasons::PROTOCOL_CONFLICT,
                                format!(
                                    "port {} is already {} for {}",
                                    l.port,
                                    name(entry.listener.protocol),
                                    entry.owner
                                ),
                            ),
                        );
                        continue;
                    }
                    let auth = entry
                        .listener
                        .tls
                        .as_ref()
                        .and_then(|t| t.client_auth.as_ref());
                    if l.protocol == ListenerProtocol::Https && auth != l.client_auth.as_ref() {
                        self.error(
                            l.file,
                            object,
                            "spec.tls.frontend".into(),
                            format!(
                                "port {} is shared with {}, whose Gateway validates client \
                                 certificates differently; listeners sharing a port must agree",
                                l.port, entry.owner
                            ),
                        );
                        self.listener_problem(
                            &l.gateway,
                            l.index,
                            ListenerProblem::conflicted(
                                reasons::PROTOCOL_CONFLICT,
                                format!(
                                    "port {} is shared with {}, which validates client \
                                     certificates differently",
                                    l.port, entry.owner
                                ),
                            ),
                        );
                        continue;
                    }
                    if entry.listener.https_redirect_port != l.redirect_to {
                        // Reported against the annotation that asks for the redirect.
                        let (redirecting, other) = match &entry.redirect_owner {
                            Some(owner) if l.redirect_to.is_none() => (owner.clone(), me.clone()),
                            _ => ((object.clone(), l.file.cloned()), entry.owner.clone()),
                        };
                        self.error(
                            redirecting.1.as_ref(),
                            redirecting.0,
                            redirect_field(),
                            format!(
                                "port {} is shared with {other}, which does not redirect the \
                                 same way; a redirect applies to the whole port",
                                l.port
                            ),
                        );
                        self.listener_problem(
                            &l.gateway,
                            l.index,
                            ListenerProblem::conflicted(
                                reasons::PROTOCOL_CONFLICT,
                                format!(
                                    "port {} is shared with a listener that redirects to HTTPS \
                                     differently",
                                    l.port
                                ),
                            ),
                        );
                        continue;
                    }
                    entry
                }
            };
            if let Some(tls) = entry.listener.tls.as_mut() {
                let mut first = None;
                for c in &l.certificates {
                    let index = match tls.certificates.iter().position(|have| have == c) {
                        Some(i) => i,
                        None => {
                            tls.certificates.push(c.clone());
                            tls.certificates.len() - 1
                        }
                    };
                    first.get_or_insert(index);
                }
                if l.hostname.is_none() {
                    let sources: Vec<String> =
                        l.certificates.iter().map(|c| c.source.clone()).collect();
                    match &entry.default_from {
                        None => {
                            tls.default_certificate = first;
                            entry.default_from = Some((sources, me.clone()));
                        }
                        Some((have, _)) if *have == sources => {}
                        Some((_, from)) => self.warning(
                            l.file,
                            object,
                            format!("{field}.tls.certificateRefs"),
                            format!(
                                "port {} already serves the certificates of {from} to clients \
                                 without a known SNI name; these are served only for their own \
                                 DNS names",
                                l.port
                            ),
                        ),
                    }
                }
            }
            kept.push(l);
        }
        *listeners = kept;
        table
    }

    /// Checks every BackendTLSPolicy and files it under its target Services, oldest first; a
    /// later policy for the same target is ignored with a warning (Gateway API: the oldest wins).
    pub(super) fn backend_tls_policies(&mut self) {
        let mut policies = std::mem::take(&mut self.tls_policies);
        policies.sort_by_key(|(p, _)| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                key_of(&p.metadata),
            )
        });
        for &(policy, file) in &policies {
            let (namespace, name) = key_of(&policy.metadata);
            let object = format!("BackendTLSPolicy {namespace}/{name}");
            let v = &policy.spec.validation;
            let mut ok = true;
            let hostname = v.hostname.as_str();
            if hostname.starts_with("*.") || check_hostname(hostname).is_err() {
                self.error(
                    file,
                    object.clone(),
                    "spec.validation.hostname".into(),
                    format!("{hostname:?} is not a DNS name"),
                );
                ok = false;
            }
            let refs: Vec<CaRef<'_>> = v
                .ca_certificate_refs
                .iter()
                .flatten()
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: None,
                })
                .collect();
            let ca_pem = match (refs.is_empty(), v.well_known_ca_certificates.as_deref()) {
                (false, None) => self.ca_refs(
                    &refs,
                    "BackendTLSPolicy",
                    &namespace,
                    "spec.validation.caCertificateRefs",
                    &object,
                    file,
                ),
                (true, Some("System")) => Some(String::new()),
                (true, Some(other)) => {
                    self.error(
                        file,
                        object.clone(),
                        "spec.validation.wellKnownCACertificates".into(),
                        format!("{other:?} is not supported; use System"),
                    );
                    None
                }
                (false, Some(_)) => {
                    self.error(
                        file,
                        object.clone(),
                        "spec.validation".into(),
                        "set caCertificateRefs or wellKnownCACertificates, not both".into(),
                    );
                    None
                }
                (true, None) => {
                    self.error(
                        file,
                        object.clone(),
                        "spec.validation".into(),
                        "needs caCertificateRefs or wellKnownCACertificates: System".into(),
                    );
                    None
                }
            };
            if v.subject_alt_names.as_ref().is_some_and(|s| !s.is_empty()) {
                self.warning(
                    file,
                    object.clone(),
                    "spec.validation.subjectAltNames".into(),
                    "not supported; the server certificate is verified against \
                     spec.validation.hostname"
                        .into(),
                );
            }
            if policy.spec.options.as_ref().is_some_and(|o| !o.is_empty()) {
                self.warning(
                    file,
                    object.clone(),
                    "spec.options".into(),
                    "not supported; ignored".into(),
                );
            }
            let (Some(ca_pem), true) = (ca_pem, ok) else {
                continue;
            };
            for (i, target) in policy.spec.target_refs.iter().enumerate() {
                let field = format!("spec.targetRefs[{i}]");
                if !target.group.is_empty() || target.kind != "Service" {
                    self.warning(
                        file,
                        object.clone(),
                        field,
                        format!(
                            "{} ({}) is not supported; only Services are; ignored",
                            target.kind, target.group
                        ),
                    );
                    continue;
                }
                let key: Key = (namespace.clone(), target.name.clone());
                let Some((service, _)) = self.services.get(&key).copied() else {
                    self.warning(
                        file,
                        object.clone(),
                        format!("{field}.name"),
                        format!("Service {}/{} not found; ignored", key.0, key.1),
                    );
                    continue;
                };
                if let Some(section) = &target.section_name {
                    let named = service
                        .spec
                        .as_ref()
                        .and_then(|s| s.ports.as_ref())
                        .is_some_and(|ports| {
                            ports.iter().any(|p| p.name.as_deref() == Some(section))
                        });
                    if !named {
                        self.warning(
                            file,
                            object.clone(),
                            format!("{field}.sectionName"),
                            format!(
                                "Service {}/{} has no port named {section:?}; ignored",
                                key.0, key.1
                            ),
                        );
                        continue;
                    }
                }
                let existing = self.backend_tls.entry(key).or_default();
                if let Some(older) = existing.iter().find(|p| p.section == target.section_name) {
                    let message = format!(
                        "{} already sets TLS for this target and is older; ignored for it",
                        older.policy
                    );
                    self.warning(file, object.clone(), field, message);
                    continue;
                }
                existing.push(PolicyTls {
                    section: target.section_name.clone(),
                    server_name: hostname.to_owned(),
                    ca_pem: ca_pem.clone(),
                    policy: object.clone(),
                });
            }
        }
        self.tls_policies = policies;
    }

    /// TLS to one Service port: its BackendTLSPolicy (for the port's name, else for the whole
    /// Service) and the Service's [`UPSTREAM_TLS_ANNOTATION`].
    pub(super) fn upstream_tls(
        &mut self,
        service: &Key,
        port: &ServicePort,
        file: Option<&PathBuf>,
    ) -> Option<UpstreamTls> {
        let object = format!("Service {}/{}", service.0, service.1);
        let policy = self.backend_tls.get(service).and_then(|policies| {
            policies
                .iter()
                .find(|p| p.section.is_some() && p.section == port.name)
                .or_else(|| policies.iter().find(|p| p.section.is_none()))
        });
        let policy = policy.map(|p| (p.server_name.clone(), p.ca_pem.clone(), p.policy.clone()));
        let spec_text = self
            .services
            .get(service)
            .and_then(|(s, _)| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(UPSTREAM_TLS_ANNOTATION));
        let prefix = format!("metadata.annotations[{UPSTREAM_TLS_ANNOTATION}]");
        let sub = |f: &str| format!("{prefix}.{f}");
        let annotation = match spec_text.map(|t| crate::health::parse_spec::<UpstreamTlsSpec>(t)) {
            None => None,
            Some(Ok(spec)) => Some(spec),
            Some(Err(e)) => {
                let field = if e.field.is_empty() {
                    prefix.clone()
                } else {
                    sub(&e.field)
                };
                self.error(file, object, field, e.message);
                return policy.map(|(server_name, ca_pem, _)| UpstreamTls {
                    server_name,
                    ca_pem,
                    client_certificate: None,
                });
            }
        };
        let Some(spec) = annotation else {
            return policy.map(|(server_name, ca_pem, _)| UpstreamTls {
                server_name,
                ca_pem,
                client_certificate: None,
            });
        };
        let mut tls = UpstreamTls::default();
        if let Some(name) = &spec.server_name {
            if name.starts_with("*.") || check_hostname(name).is_err() {
                self.error(
                    file,
                    object.clone(),
                    sub("serverName"),
                    format!("{name:?} is not a DNS name"),
                );
            } else {
                tls.server_name = name.clone();
            }
        }
        match (&spec.ca_config_map, &spec.ca_bundle) {
            (Some(_), Some(_)) => self.error(
                file,
                object.clone(),
                sub("caBundle"),
                "set caConfigMap or caBundle, not both".into(),
            ),
            (Some(map), None) => match self.ca_of("ConfigMap", &(service.0.clone(), map.clone())) {
                Ok(ca) => tls.ca_pem = ca,
                Err(message) => self.error(file, object.clone(), sub("caConfigMap"), message),
            },
            (None, Some(bundle)) => match ca_bundle(bundle.as_bytes()) {
                Ok(ca) => tls.ca_pem = ca,
                Err(message) => self.error(file, object.clone(), sub("caBundle"), message),
            },
            (None, None) => {}
        }
        if let Some(secret) = &spec.client_certificate_secret {
            match self.secret_certificate(&(service.0.clone(), secret.clone())) {
                Ok(c) => tls.client_certificate = Some(c),
                Err(message) => self.error(
                    file,
                    object.clone(),
                    sub("clientCertificateSecret"),
                    message,
                ),
            }
        }
        if let Some((server_name, ca_pem, policy)) = policy {
            if spec.server_name.is_some()
                || spec.ca_config_map.is_some()
                || spec.ca_bundle.is_some()
            {
                self.warning(
                    file,
                    object,
                    prefix.clone(),
                    format!(
                        "{policy} also applies to port {}; its hostname and CA certificates are \
                         used, and only clientCertificateSecret is taken from the annotation",
                        port.port
                    ),
                );
            }
            tls.server_name = server_name;
            tls.ca_pem = ca_pem;
        }
        Some(tls)
    }
}
