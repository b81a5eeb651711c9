//! `networking.k8s.io/v1` Ingress in the translation.
//!
//! - **Class.** An Ingress names its class in `spec.ingressClassName` (or the legacy annotation
//!   `kubernetes.io/ingress.class`). An IngressClass whose `spec.controller` is
//!   [`INGRESS_CONTROLLER_NAME`] is ours; one annotated
//!   `ingressclass.kubernetes.io/is-default-class: "true"` also takes the Ingresses that name no
//!   class. As with GatewayClasses, a class absent from the input is served (standalone
//!   configurations often leave it out), and a class of another controller is skipped with a
//!   warning.
//! - **Ports.** An Ingress names no port: every served Ingress is on
//!   [`TranslateOptions::ingress_http_port`] (listener `http-{port}`), and one with `spec.tls`
//!   also on [`TranslateOptions::ingress_https_port`] (`https-{port}`). A Gateway listener on
//!   the same port shares it: routes merge, and on the HTTPS port the certificates merge by
//!   server name (a name a Gateway certificate already serves keeps that certificate, with a
//!   warning). HTTP and HTTPS on one port is an error on the Ingress. On a shared port the
//!   router tries HTTPRoute rules before Ingress rules (`novaedge-router`: families never
//!   interleave), so an HTTPRoute for any host shadows the Ingresses there; a Gateway that
//!   redirects the whole HTTP port to HTTPS takes the Ingresses' HTTP side with it (warning).
//! - **Rules.** One snapshot route per Ingress, listener and host, in the
//!   [`RouteDialect::Ingress`] dialect (a wildcard covers exactly one label, the most specific
//!   host wins before the path): `ingress:ns/name` for rules without a host,
//!   `ingress:ns/name/HOST` for the rules of a host. Path types `Exact` and `Prefix` map to the
//!   router's exact and element-wise prefix matches; `ImplementationSpecific` is read as
//!   `Prefix`. Service backends name their port by number or by name (resolved through the
//!   Service); a Service port is the same snapshot backend an HTTPRoute to it uses. `resource`
//!   backends are not supported: the path is skipped with a warning.
//! - **Default backend.** `spec.defaultBackend` is a route of its own,
//!   `ingress:ns/name/defaultBackend`: any host, prefix `/`, with a creation time pushed past
//!   every real one so that it loses to every rule of every Ingress (the data plane breaks ties
//!   by creation time, then by name).
//! - **TLS.** Each `spec.tls` entry contributes its `kubernetes.io/tls` Secret, from the
//!   Ingress's namespace and checked like a Gateway's, for its `hosts`; an entry without hosts
//!   gives the port's default certificate unless one is set.
//! - **Redirect.** [`SSL_REDIRECT_ANNOTATION`] `"true"` (opt-in, even with TLS) answers the
//!   Ingress's requests on the HTTP port with a `301` to HTTPS on the Ingress HTTPS port. The
//!   snapshot's redirect is per listener, so it is written as route rules with a
//!   `RequestRedirect` filter instead: for each host of the Ingress a rule for every path, and
//!   for rules without a host (and the default backend) the same paths as on HTTPS. A
//!   redirected host that no `spec.tls` entry names (and no entry without hosts) is warned
//!   about: its HTTPS handshake would find no certificate of this Ingress.
//!
//! Any error drops the whole Ingress: serving part of it could send traffic elsewhere.

use std::collections::btree_map::Entry;

use k8s_openapi::api::networking::v1::{IngressBackend, IngressSpec};
use novaedge_snapshot::{ListenerTls, RequestRedirect, RouteDialect, RouteFilters};

use super::tls::PortEntry;
use super::*;

/// The `spec.controller` of IngressClasses that NovaEdge serves.
pub const INGRESS_CONTROLLER_NAME: &str = "novaedge.io/ingress-controller";
/// Ingress annotation: `"true"` redirects the Ingress's requests on the HTTP port to HTTPS.
pub const SSL_REDIRECT_ANNOTATION: &str = "novaedge.io/ssl-redirect";
/// The legacy way of naming an Ingress's class.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub(super) const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Creation time added to a default backend's route: past every real creation time, so the
/// default backend loses every tie against a rule (and default backends among themselves still
/// go by creation time).
const DEFAULT_BACKEND_AGE: i64 = 1 << 40;

/// A checked Ingress, ready to be placed on its ports.
struct Checked {
    /// Rules grouped by host (`None`: any host), in the order the hosts first appear.
    hosts: Vec<(Option<String>, Vec<RouteRule>)>,
    default_backend: Option<RouteRule>,
    /// `(index in spec.tls, certificate)`; `server_names` empty for an entry without hosts.
    certificates: Vec<(usize, TlsCertificate)>,
    has_tls: bool,
    ssl_redirect: bool,
}

fn listener_protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Http => "HTTP",
        ListenerProtocol::Https => "HTTPS",
    }
}

impl<'a> Translator<'a> {
    /// Every Ingress this controller serves: its listeners and certificates merged into
    /// `table`, its routes returned.
    pub(super) fn ingresses(
        &mut self,
        table: &mut BTreeMap<u16, PortEntry>,
        options: &TranslateOptions,
    ) -> Vec<snapshot::Route> {
        let mut routes = Vec::new();
        let all: Vec<_> = self
            .ingresses
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for ((namespace, name), (ingress, file)) in all {
            let object = format!("Ingress {namespace}/{name}");
            if !self.ingress_is_ours(ingress, &object, file) {
                continue;
            }
            let key = (namespace.clone(), name.clone());
            self.ingress_status.insert(key.clone(), false);
            let Some(spec) = &ingress.spec else {
                self.warning(
                    file,
                    object,
                    "spec".into(),
                    "missing: nothing to serve".into(),
                );
                continue;
            };
            let Some(checked) = self.check_ingress(ingress, spec, &namespace, &object, file) else {
                continue;
            };
            if !self.place_ingress(table, &checked, options, &object, file) {
                continue;
            }
            self.ingress_status.insert(key, true);
            let created = ingress
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second());
            let base = format!("ingress:{namespace}/{name}");
            let http = format!("http-{}", options.ingress_http_port);
            let https = format!("https-{}", options.ingress_https_port);
            let redirect = RequestRedirect {
                scheme: Some("https".into()),
                port: (options.ingress_https_port != 443).then_some(options.ingress_https_port),
                status_code: 301,
                ..RequestRedirect::default()
            };
            let mut add = |listener: &str, redirect: Option<&RequestRedirect>| {
                for (host, rules) in &checked.hosts {
                    let rules = match (redirect, host) {
                        (None, _) => rules.clone(),
                        // Every request for the host, whichever of its paths it asks for.
                        (Some(r), Some(_)) => vec![redirect_rule(RouteMatch::default(), r)],
                        // Without a host, only what the Ingress itself serves.
                        (Some(r), None) => rules
                            .iter()
                            .flat_map(|rule| rule.matches.iter().cloned())
                            .map(|m| redirect_rule(m, r))
                            .collect(),
                    };
                    routes.push(snapshot::Route {
                        name: match host {
                            Some(h) => format!("{base}/{h}"),
                            None => base.clone(),
                        },
                        listener: listener.to_owned(),
                        hostnames: host.iter().cloned().collect(),
                        rules,
                        creation_timestamp: created,
                        dialect: RouteDialect::Ingress,
                    });
                }
                if let Some(rule) = &checked.default_backend {
                    let rule = match redirect {
                        None => rule.clone(),
                        Some(r) => redirect_rule(RouteMatch::default(), r),
                    };
                    routes.push(snapshot::Route {
                        name: format!("{base}/defaultBackend"),
                        listener: listener.to_owned(),
                        hostnames: Vec::new(),
                        rules: vec![rule],
                        creation_timestamp: created.saturating_add(DEFAULT_BACKEND_AGE),
                        dialect: RouteDialect::Ingress,
                    });
                }
            };
            let redirects = checked.ssl_redirect && checked.has_tls;
            add(&http, redirects.then_some(&redirect));
            if checked.has_tls {
                add(&https, None);
            }
        }
        routes
    }

    /// Whether the Ingress's class is served by NovaEdge; warns when it is not.
    fn ingress_is_ours(&mut self, ingress: &Ingress, object: &str, file: Option<&PathBuf>) -> bool {
        let by_spec = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        let by_annotation = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLASS_ANNOTATION))
            .map(String::as_str);
        let annotation_field = format!("metadata.annotations[{CLASS_ANNOTATION}]");
        if let (Some(spec), Some(annotation)) = (by_spec, by_annotation)
            && spec != annotation
        {
            self.warning(
                file,
                object.into(),
                annotation_field.clone(),
                format!("{annotation:?} differs from spec.ingressClassName {spec:?}; ignored"),
            );
        }
        let (class, field) = match (by_spec, by_annotation) {
            (Some(c), _) => (c, "spec.ingressClassName".to_owned()),
            (None, Some(c)) => (c, annotation_field),
            (None, None) => {
                // Without a class, the default classes decide; with none in the input, serve.
                let defaults: Vec<(&str, &str)> = self
                    .ingress_classes
                    .iter()
                    .filter(|(_, (_, default))| *default)
                    .map(|(name, (controller, _))| (*name, *controller))
                    .collect();
                if defaults.is_empty()
                    || defaults
                        .iter()
                        .any(|(_, controller)| *controller == INGRESS_CONTROLLER_NAME)
                {
                    return true;
                }
                let (name, controller) = defaults[0];
                self.warning(
                    file,
                    object.into(),
                    "spec.ingressClassName".into(),
                    format!(
                        "not set, and the default IngressClass {name} belongs to controller \
                         {controller:?}; not served"
                    ),
                );
                return false;
            }
        };
        match self.ingress_classes.get(class) {
            Some((controller, _)) if *controller != INGRESS_CONTROLLER_NAME => {
                self.warning(
                    file,
                    object.into(),
                    field,
                    format!(
                        "IngressClass {class} belongs to controller {controller:?}; not served"
                    ),
                );
                false
            }
            _ => true,
        }
    }

    /// Checks every field of an Ingress NovaEdge reads; `None` after reporting the errors.
    fn check_ingress(
        &mut self,
        ingress: &Ingress,
        spec: &IngressSpec,
        namespace: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Option<Checked> {
        let mut ok = true;
        let annotation_field = format!("metadata.annotations[{SSL_REDIRECT_ANNOTATION}]");
        let ssl_redirect = match ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
            .map(String::as_str)
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                self.error(
                    file,
                    object.into(),
                    annotation_field.clone(),
                    format!("{other:?}: use \"true\" or \"false\""),
                );
                ok = false;
                false
            }
        };

        let mut hosts: Vec<(Option<String>, Vec<RouteRule>)> = Vec::new();
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let field = format!("spec.rules[{i}]");
            let host = rule.host.clone().filter(|h| !h.is_empty());
            if let Some(h) = &host
                && let Err(why) = check_hostname(h)
            {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.host"),
                    format!("{h:?}: {why}"),
                );
                ok = false;
                continue;
            }
            let mut rules = Vec::new();
            for (j, p) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                let field = format!("{field}.http.paths[{j}]");
                let value = p.path.clone().filter(|v| !v.is_empty());
                let path = match (p.path_type.as_str(), value) {
                    ("Exact", Some(v)) => PathMatch::Exact(v),
                    ("Prefix" | "ImplementationSpecific", Some(v)) => PathMatch::Prefix(v),
                    ("ImplementationSpecific", None) => PathMatch::Prefix("/".into()),
                    ("Exact" | "Prefix", None) => {
                        self.error(
                            file,
                            object.into(),
                            format!("{field}.path"),
                            format!("required with pathType {}", p.path_type),
                        );
                        ok = false;
                        continue;
                    }
                    (other, _) => {
                        self.error(
                            file,
                            object.into(),
                            format!("{field}.pathType"),
                            format!("{other:?}: use Exact, Prefix or ImplementationSpecific"),
                        );
                        ok = false;
                        continue;
                    }
                };
                if !path.value().starts_with('/') {
                    self.error(
                        file,
                        object.into(),
                        format!("{field}.path"),
                        format!("{:?} must start with '/'", path.value()),
                    );
                    ok = false;
                    continue;
                }
                match self.ingress_backend(
                    &p.backend,
                    namespace,
                    &format!("{field}.backend"),
                    object,
                    file,
                ) {
                    Err(()) => ok = false,
                    Ok(None) => {}
                    Ok(Some(backend)) => rules.push(RouteRule {
                        matches: vec![RouteMatch {
                            path,
                            ..RouteMatch::default()
                        }],
                        backends: vec![BackendRef { backend, weight: 1 }],
                        invalid_backend_weight: 0,
                        filters: RouteFilters::default().into(),
                    }),
                }
            }
            if rules.is_empty() {
                continue; // a host without paths: the default backend serves it
            }
            match hosts.iter_mut().find(|(h, _)| *h == host) {
                Some((_, have)) => have.extend(rules),
                None => hosts.push((host, rules)),
            }
        }

        let default_backend = match &spec.default_backend {
            None => None,
            Some(b) => {
                match self.ingress_backend(b, namespace, "spec.defaultBackend", object, file) {
                    Err(()) => {
                        ok = false;
                        None
                    }
                    Ok(backend) => backend.map(|backend| RouteRule {
                        matches: vec![RouteMatch::default()],
                        backends: vec![BackendRef { backend, weight: 1 }],
                        invalid_backend_weight: 0,
                        filters: RouteFilters::default().into(),
                    }),
                }
            }
        };

        let tls = spec.tls.as_deref().unwrap_or_default();
        let mut certificates = Vec::new();
        for (i, entry) in tls.iter().enumerate() {
            let field = format!("spec.tls[{i}]");
            let names: Vec<String> = entry.hosts.iter().flatten().cloned().collect();
            for (k, h) in names.iter().enumerate() {
                if let Err(why) = check_hostname(h) {
                    self.error(
                        file,
                        object.into(),
                        format!("{field}.hosts[{k}]"),
                        format!("{h:?}: {why}"),
                    );
                    ok = false;
                }
            }
            let Some(secret) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                self.error(
                    file,
                    object.into(),
                    format!("{field}.secretName"),
                    "required: NovaEdge has no certificate of its own to fall back on".into(),
                );
                ok = false;
                continue;
            };
            match self.secret_certificate(&(namespace.to_owned(), secret.to_owned())) {
                Ok(mut c) => {
                    c.server_names = names;
                    certificates.push((i, c));
                }
                Err(message) => {
                    self.error(file, object.into(), format!("{field}.secretName"), message);
                    ok = false;
                }
            }
        }
        if ssl_redirect && tls.is_empty() {
            self.warning(
                file,
                object.into(),
                annotation_field,
                "the Ingress has no spec.tls, so it is not served over HTTPS; no redirect".into(),
            );
        }
        let has_default = certificates.iter().any(|(_, c)| c.server_names.is_empty());
        if ssl_redirect && ok && !tls.is_empty() && !has_default {
            for (i, rule) in spec.rules.iter().flatten().enumerate() {
                let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) else {
                    continue;
                };
                let named = certificates
                    .iter()
                    .any(|(_, c)| c.server_names.iter().any(|n| tls_covers(n, host)));
                if !named {
                    self.warning(
                        file,
                        object.into(),
                        format!("spec.rules[{i}].host"),
                        format!(
                            "{host} is redirected to HTTPS ({SSL_REDIRECT_ANNOTATION}), but no \
                             spec.tls entry of the Ingress names it"
                        ),
                    );
                }
            }
        }
        if hosts.is_empty() && default_backend.is_none() && ok {
            self.warning(
                file,
                object.into(),
                "spec".into(),
                "no rule path and no defaultBackend: nothing to route".into(),
            );
        }
        ok.then_some(Checked {
            hosts,
            default_backend,
            certificates,
            has_tls: !tls.is_empty(),
            ssl_redirect,
        })
    }

    /// The snapshot backend of an Ingress backend: `Ok(None)` for one that is skipped (after a
    /// warning), `Err` after an error.
    fn ingress_backend(
        &mut self,
        b: &IngressBackend,
        namespace: &str,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) -> Result<Option<String>, ()> {
        let fail = |t: &mut Self, sub: &str, message: String| {
            t.error(file, object.into(), format!("{field}{sub}"), message);
            Err(())
        };
        if b.resource.is_some() {
            self.warning(
                file,
                object.into(),
                format!("{field}.resource"),
                "resource backends are not supported; skipped".into(),
            );
            return Ok(None);
        }
        let Some(service) = &b.service else {
            return fail(self, "", "needs a service".into());
        };
        let key: Key = (namespace.to_owned(), service.name.clone());
        let Some((svc, _)) = self.services.get(&key).copied() else {
            return fail(
                self,
                ".service.name",
                format!("Service {namespace}/{} not found", service.name),
            );
        };
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let port = service.port.as_ref();
        let found = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(_), Some(_)) => {
                return fail(self, ".service.port", "set number or name, not both".into());
            }
            (None, None) => {
                return fail(self, ".service.port", "required: a number or a name".into());
            }
            (Some(number), None) => match ports.iter().find(|p| p.port == number) {
                Some(p) => p,
                None => {
                    return fail(
                        self,
                        ".service.port.number",
                        format!("Service {namespace}/{} has no port {number}", service.name),
                    );
                }
            },
            (None, Some(name)) => match ports.iter().find(|p| p.name.as_deref() == Some(name)) {
                Some(p) => p,
                None => {
                    return fail(
                        self,
                        ".service.port.name",
                        format!(
                            "Service {namespace}/{} has no port named {name:?}",
                            service.name
                        ),
                    );
                }
            },
        };
        Ok(Some(self.backend(&key, found, RouteKind::Http)))
    }

    /// Puts a checked Ingress on its ports: the HTTP listener, and with TLS the HTTPS one and
    /// its certificates. `false` (reported, nothing changed) when a port is of the other
    /// protocol.
    fn place_ingress(
        &mut self,
        table: &mut BTreeMap<u16, PortEntry>,
        checked: &Checked,
        options: &TranslateOptions,
        object: &str,
        file: Option<&PathBuf>,
    ) -> bool {
        let (http, https) = (options.ingress_http_port, options.ingress_https_port);
        let mut wanted = vec![(http, ListenerProtocol::Http, "", "the Ingress HTTP port")];
        if checked.has_tls {
            wanted.push((
                https,
                ListenerProtocol::Https,
                "spec.tls",
                "the Ingress HTTPS port",
            ));
        }
        let mut ok = true;
        for &(port, protocol, field, what) in &wanted {
            let clash = table
                .get(&port)
                .filter(|e| e.listener.protocol != protocol)
                .map(|e| (e.listener.protocol, e.owner.clone()))
                .or_else(|| {
                    // Both on one port: the Ingress would need it to be HTTP and HTTPS.
                    (protocol == ListenerProtocol::Https && http == https)
                        .then(|| (ListenerProtocol::Http, "its own HTTP side".to_owned()))
                });
            if let Some((have, owner)) = clash {
                self.error(
                    file,
                    object.into(),
                    field.into(),
                    format!(
                        "port {port} ({what}) is {} for {owner}; HTTP and HTTPS cannot share a \
                         port (see --ingress-http-port and --ingress-https-port)",
                        listener_protocol_name(have)
                    ),
                );
                ok = false;
            }
        }
        if !ok {
            return false;
        }
        if let Some(entry) = table.get(&http)
            && let Some(to) = entry.listener.https_redirect_port
        {
            let message = format!(
                "port {http} (the Ingress HTTP port) is shared with {}, whose Gateway redirects \
                 every request on it to HTTPS port {to}; the Ingress is not served over HTTP",
                entry.owner
            );
            self.warning(file, object.into(), String::new(), message);
        }
        for &(port, protocol, _, _) in &wanted {
            if let Entry::Vacant(v) = table.entry(port) {
                let (prefix, tls) = match protocol {
                    ListenerProtocol::Http => ("http", None),
                    ListenerProtocol::Https => ("https", Some(ListenerTls::default())),
                };
                v.insert(PortEntry {
                    listener: Listener {
                        name: format!("{prefix}-{port}"),
                        bind: None,
                        port,
                        protocol,
                        tls,
                        https_redirect_port: None,
                    },
                    owner: object.to_owned(),
                    default_from: None,
                    redirect_owner: None,
                });
            }
        }
        if !checked.has_tls {
            return true;
        }
        let Some(entry) = table.get_mut(&https) else {
            return true; // just inserted; cannot happen
        };
        let mut warnings = Vec::new();
        if let Some(tls) = entry.listener.tls.as_mut() {
            if tls.client_auth.is_some() {
                warnings.push((
                    "spec.tls".to_owned(),
                    format!(
                        "port {https} is shared with {}, whose Gateway asks clients for \
                         certificates; the Ingress's clients are asked too",
                        entry.owner
                    ),
                ));
            }
            for (i, c) in &checked.certificates {
                let field = format!("spec.tls[{i}]");
                if c.server_names.is_empty() {
                    let index = match tls.certificates.iter().position(|have| have == c) {
                        Some(index) => index,
                        None => {
                            tls.certificates.push(c.clone());
                            tls.certificates.len() - 1
                        }
                    };
                    let sources = vec![c.source.clone()];
                    match &entry.default_from {
                        None => {
                            tls.default_certificate = Some(index);
                            entry.default_from = Some((sources, object.to_owned()));
                        }
                        Some((have, _)) if *have == sources => {}
                        Some((_, from)) => warnings.push((
                            field,
                            format!(
                                "port {https} already serves the certificates of {from} to \
                                 clients without a known SNI name; {} is served only for its \
                                 own DNS names",
                                c.source
                            ),
                        )),
                    }
                    continue;
                }
                // Names another certificate already serves keep it: the first one is chosen.
                let mut names = Vec::new();
                for (k, name) in c.server_names.iter().enumerate() {
                    let other = tls.certificates.iter().find(|have| {
                        have.server_names.contains(name)
                            && (have.cert_chain_pem != c.cert_chain_pem
                                || have.private_key_pem != c.private_key_pem)
                    });
                    match other {
                        Some(other) => warnings.push((
                            format!("{field}.hosts[{k}]"),
                            format!(
                                "{name} is already served on port {https} with the certificate \
                                 of {}; {} is not used for it",
                                other.source, c.source
                            ),
                        )),
                        None => names.push(name.clone()),
                    }
                }
                let same = tls.certificates.iter_mut().find(|have| {
                    !have.server_names.is_empty()
                        && have.source == c.source
                        && have.cert_chain_pem == c.cert_chain_pem
                        && have.private_key_pem == c.private_key_pem
                });
                match same {
                    Some(have) => {
                        for n in names {
                            if !have.server_names.contains(&n) {
                                have.server_names.push(n);
                            }
                        }
                    }
                    None if !names.is_empty() => tls.certificates.push(TlsCertificate {
                        server_names: names,
                        ..c.clone()
                    }),
                    None => {}
                }
            }
        }
        for (field, message) in warnings {
            self.warning(file, object.into(), field, message);
        }
        true
    }
}

/// Whether a certificate for server name `name` is served for `host` (SNI: a wildcard covers
/// any depth, see `novaedge_snapshot::TlsCertificate::server_names`).
fn tls_covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    let Some(suffix) = name.strip_prefix('*') else {
        return false;
    };
    let host = host.strip_prefix('*').unwrap_or(host);
    host.len() > suffix.len() && host.ends_with(suffix)
}

/// A rule answering every request of `m` with `redirect`.
fn redirect_rule(m: RouteMatch, redirect: &RequestRedirect) -> RouteRule {
    RouteRule {
        matches: vec![m],
        backends: Vec::new(),
        invalid_backend_weight: 0,
        filters: RouteFilters {
            redirect: Some(redirect.clone()),
            ..RouteFilters::default()
        }
        .into(),
    }
}
