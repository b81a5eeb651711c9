//! `ProxyGateway`: the ports NovaEdge listens on, the VIP that carries them and the nodes that
//! serve them.
//!
//! ```yaml
//! apiVersion: novaedge.io/v1alpha1
//! kind: ProxyGateway
//! metadata: {name: edge, namespace: shop}
//! spec:
//!   vipRef: {name: shop-vip}
//!   nodeSelector: {matchLabels: {node-role.kubernetes.io/edge: ""}}
//!   listeners:
//!     - {name: http, port: 80, protocol: HTTP}
//!     - name: https
//!       port: 443
//!       protocol: HTTPS
//!       hostname: shop.example.com
//!       tls: {certificateRefs: [{name: shop-tls}]}
//!       allowedRoutes: {namespaces: {from: All}}
//! ```
//!
//! Its listeners are Gateway API listeners with fewer choices (HTTP and HTTPS, TLS terminated,
//! routes from the same namespace or all), so [`to_gateway`] turns it into a Gateway API
//! `Gateway` of the same name and namespace with the same field paths, and the Gateway
//! translator serves it: a problem it finds in `spec.listeners[1].tls` is a problem in the same
//! field of the ProxyGateway. The VIP becomes a `NamedAddress`; the node selector stays on the
//! ProxyGateway, for the per-node choice of what a node serves.

use gateway_api::gateways::{
    Gateway, GatewayAddresses, GatewayListeners, GatewayListenersAllowedRoutes,
    GatewayListenersAllowedRoutesNamespaces, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersTls, GatewayListenersTlsCertificateRefs, GatewayListenersTlsMode, GatewaySpec,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ProxyGatewayStatus;
use super::{
    DNS_LABEL_PATTERN, HOSTNAME_PATTERN, LocalObjectRef, NodeSelector, Problems, SecretObjectRef,
};

/// The `gatewayClassName` of the Gateways `to_gateway` makes. It contains a `/`, which no
/// GatewayClass name can, so no GatewayClass in a cluster can claim these Gateways for another
/// controller: a ProxyGateway is NovaEdge's by its kind.
pub const PROXY_GATEWAY_CLASS: &str = "novaedge.io/proxy-gateway";

/// Gateway API's address type for an implementation-specific named address.
const NAMED_ADDRESS: &str = "NamedAddress";

/// Where NovaEdge listens: listeners (port, protocol, hostname, TLS), the ProxyVIP whose
/// addresses carry them, and the nodes that serve them.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "novaedge.io",
    version = "v1alpha1",
    kind = "ProxyGateway",
    namespaced,
    status = "ProxyGatewayStatus",
    derive = "PartialEq",
    shortname = "pgw",
    category = "novaedge",
    doc = "Where NovaEdge listens: HTTP and HTTPS listeners, the ProxyVIP that carries them and \
           the nodes that serve them.",
    printcolumn(name = "VIP", type_ = "string", json_path = ".spec.vipRef.name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyGatewaySpec {
    /// The listeners: each a port, a protocol and optionally a hostname. Names are unique, and
    /// so is each port and hostname combination.
    #[schemars(
        length(min = 1, max = 64),
        extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["name"],
            "x-kubernetes-validations" = [{
                "rule": "self.all(l1, self.exists_one(l2, l1.port == l2.port && \
                         (has(l1.hostname) ? (has(l2.hostname) && l1.hostname == l2.hostname) \
                         : !has(l2.hostname))))",
                "message": "each port and hostname combination must be unique",
            }],
        )
    )]
    pub listeners: Vec<ListenerSpec>,
    /// The ProxyVIP, in this namespace, whose addresses the listeners are reached on. Without
    /// one, the addresses of the nodes that serve the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip_ref: Option<LocalObjectRef>,
    /// The nodes that serve this gateway; default every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<NodeSelector>,
}

/// One port, protocol and hostname.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.tls) == (self.protocol == 'HTTPS')",
    "message": "tls must be set for an HTTPS listener and only for one",
}]))]
pub struct ListenerSpec {
    /// The listener's name, unique in the gateway; routes attach to it by
    /// `parentRefs[].sectionName`.
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// The TCP port.
    #[schemars(range(min = 1))]
    pub port: u16,
    /// `HTTP`, or `HTTPS` with `tls`.
    pub protocol: ListenerProtocol,
    /// Only requests for this host (or, with a leading `*.`, its subdomains) reach the routes;
    /// default any host. Routes' own hostnames are intersected with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(HOSTNAME_PATTERN))]
    pub hostname: Option<String>,
    /// TLS for an HTTPS listener: the certificates it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Which routes may attach; default routes in the gateway's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// The protocol of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum ListenerProtocol {
    /// Cleartext HTTP/1.1 and h2c.
    #[serde(rename = "HTTP")]
    Http,
    /// TLS, then HTTP/1.1 or HTTP/2 by ALPN.
    #[serde(rename = "HTTPS")]
    Https,
}

/// TLS of an HTTPS listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// What happens to TLS; default and only choice `Terminate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    /// `kubernetes.io/tls` Secrets with a certificate chain (`tls.crt`) and its key (`tls.key`).
    /// With a `hostname`, each is served for it; without, for the DNS names in the certificate.
    /// The first is the default, for clients that send no or an unknown server name.
    #[schemars(length(min = 1, max = 64))]
    pub certificate_refs: Vec<SecretObjectRef>,
}

/// The TLS modes of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum TlsMode {
    /// TLS ends at NovaEdge, which forwards HTTP to the backends.
    Terminate,
}

/// The routes that may attach to a listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    /// The namespaces routes may come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
}

/// The namespaces routes may come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    /// `Same` (the default): the gateway's namespace; `All`: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<FromNamespaces>,
}

/// Where routes may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = super::field_describes)]
pub enum FromNamespaces {
    /// The gateway's own namespace.
    Same,
    /// Every namespace.
    All,
}

// === admission ===

/// The schema's rules, for an object no API server has checked.
pub(super) fn admit(spec: &ProxyGatewaySpec, p: &mut Problems) {
    let field = "spec.listeners";
    p.min_items(field, spec.listeners.len(), 1);
    p.max_items(field, spec.listeners.len(), 64);
    for (i, l) in spec.listeners.iter().enumerate() {
        let field = format!("{field}[{i}]");
        p.label(&format!("{field}.name"), &l.name);
        if spec.listeners[..i].iter().any(|o| o.name == l.name) {
            p.error(
                format!("{field}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        p.port(&format!("{field}.port"), l.port);
        if let Some(h) = &l.hostname {
            p.hostname(&format!("{field}.hostname"), h);
        }
        let clash = spec.listeners[..i]
            .iter()
            .position(|o| o.port == l.port && o.hostname == l.hostname);
        if let Some(j) = clash {
            p.error(
                &field,
                format!(
                    "each port and hostname combination must be unique: listener {:?} has the \
                     same (spec.listeners[{j}])",
                    spec.listeners[j].name
                ),
            );
        }
        match (l.protocol, &l.tls) {
            (ListenerProtocol::Https, None) => p.error(
                format!("{field}.tls"),
                "tls must be set for an HTTPS listener and only for one",
            ),
            (ListenerProtocol::Http, Some(_)) => p.error(
                format!("{field}.tls"),
                "tls must be set for an HTTPS listener and only for one",
            ),
            _ => {}
        }
        if let Some(tls) = &l.tls {
            let field = format!("{field}.tls.certificateRefs");
            p.min_items(&field, tls.certificate_refs.len(), 1);
            p.max_items(&field, tls.certificate_refs.len(), 64);
            for (j, r) in tls.certificate_refs.iter().enumerate() {
                p.name(&format!("{field}[{j}].name"), &r.name);
                if let Some(ns) = &r.namespace {
                    p.label(&format!("{field}[{j}].namespace"), ns);
                }
            }
        }
    }
    if let Some(vip) = &spec.vip_ref {
        p.name("spec.vipRef.name", &vip.name);
    }
    if let Some(selector) = &spec.node_selector {
        selector.admit("spec.nodeSelector", p);
    }
}

// === conversion ===

/// The Gateway API `Gateway` a ProxyGateway stands for: same metadata, listeners with the same
/// field paths, class [`PROXY_GATEWAY_CLASS`], and the ProxyVIP (if any) as a `NamedAddress`.
pub(crate) fn to_gateway(gateway: &ProxyGateway) -> Gateway {
    let spec = &gateway.spec;
    Gateway {
        metadata: gateway.metadata.clone(),
        spec: GatewaySpec {
            gateway_class_name: PROXY_GATEWAY_CLASS.to_owned(),
            listeners: spec.listeners.iter().map(listener).collect(),
            addresses: spec.vip_ref.as_ref().map(|vip| {
                vec![GatewayAddresses {
                    r#type: Some(NAMED_ADDRESS.to_owned()),
                    value: Some(vip.name.clone()),
                }]
            }),
            ..GatewaySpec::default()
        },
        status: None,
    }
}

fn listener(l: &ListenerSpec) -> GatewayListeners {
    GatewayListeners {
        name: l.name.clone(),
        port: i32::from(l.port),
        protocol: match l.protocol {
            ListenerProtocol::Http => "HTTP",
            ListenerProtocol::Https => "HTTPS",
        }
        .to_owned(),
        hostname: l.hostname.clone(),
        tls: l.tls.as_ref().map(|tls| GatewayListenersTls {
            mode: Some(match tls.mode.unwrap_or(TlsMode::Terminate) {
                TlsMode::Terminate => GatewayListenersTlsMode::Terminate,
            }),
            certificate_refs: Some(
                tls.certificate_refs
                    .iter()
                    .map(|r| GatewayListenersTlsCertificateRefs {
                        group: Some(String::new()),
                        kind: Some("Secret".to_owned()),
                        name: r.name.clone(),
                        namespace: r.namespace.clone(),
                    })
                    .collect(),
            ),
            ..GatewayListenersTls::default()
        }),
        allowed_routes: l
            .allowed_routes
            .as_ref()
            .map(|a| GatewayListenersAllowedRoutes {
                namespaces: a.namespaces.as_ref().map(|n| {
                    GatewayListenersAllowedRoutesNamespaces {
                        from: n.from.map(|from| match from {
                            FromNamespaces::Same => {
                                GatewayListenersAllowedRoutesNamespacesFrom::Same
                            }
                            FromNamespaces::All => GatewayListenersAllowedRoutesNamespacesFrom::All,
                        }),
                        selector: None,
                    }
                }),
                kinds: None,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Object, parse_yaml};

    fn gateway(spec: &str) -> ProxyGateway {
        let text = format!(
            "apiVersion: novaedge.io/v1alpha1\nkind: ProxyGateway\n\
             metadata: {{name: edge, namespace: shop, generation: 3}}\nspec:\n{spec}"
        );
        let (objects, diags) = parse_yaml(&text, None);
        assert!(diags.is_empty(), "{diags:#?}");
        match &objects[0].object {
            Object::ProxyGateway(g) => (**g).clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn converts_to_a_gateway_with_the_same_field_paths() {
        let g = gateway(
            "  vipRef: {name: shop-vip}
  listeners:
    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
    - name: https
      port: 443
      protocol: HTTPS
      hostname: '*.shop.example'
      tls: {certificateRefs: [{name: a}, {name: b, namespace: certs}]}
",
        );
        let out = to_gateway(&g);
        assert_eq!(out.metadata, g.metadata);
        assert_eq!(out.spec.gateway_class_name, PROXY_GATEWAY_CLASS);
        let want: serde_json::Value = serde_json::json!({
            "gatewayClassName": PROXY_GATEWAY_CLASS,
            "addresses": [{"type": "NamedAddress", "value": "shop-vip"}],
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "https", "port": 443, "protocol": "HTTPS",
                 "hostname": "*.shop.example",
                 "tls": {"mode": "Terminate", "certificateRefs": [
                     {"group": "", "kind": "Secret", "name": "a"},
                     {"group": "", "kind": "Secret", "name": "b", "namespace": "certs"},
                 ]}},
            ],
        });
        assert_eq!(serde_json::to_value(&out.spec).unwrap(), want);
    }

    #[test]
    fn without_vip_and_defaults_the_gateway_has_no_addresses() {
        let g = gateway("  listeners: [{name: web, port: 8080, protocol: HTTP}]\n");
        let out = to_gateway(&g);
        assert_eq!(out.spec.addresses, None);
        assert_eq!(out.spec.listeners[0].allowed_routes, None);
        assert_eq!(out.spec.listeners[0].hostname, None);
    }

    #[test]
    fn admission_names_each_broken_field() {
        let text = "apiVersion: novaedge.io/v1alpha1\nkind: ProxyGateway\n\
                    metadata: {name: edge}\nspec:\n  listeners:\n\
                    \x20   - {name: Web, port: 0, protocol: HTTPS}\n\
                    \x20   - {name: b, port: 80, protocol: HTTP, hostname: 'x..y', \
                    tls: {certificateRefs: []}}\n\
                    \x20   - {name: b, port: 80, protocol: HTTP, hostname: 'x..y'}\n";
        let (objects, diags) = parse_yaml(text, None);
        assert!(
            objects.is_empty(),
            "an object the API server would refuse is left out"
        );
        let got: Vec<String> = diags.iter().map(|d| d.field.clone()).collect();
        assert_eq!(
            got,
            [
                "spec.listeners[0].name",
                "spec.listeners[0].port",
                "spec.listeners[0].tls",
                "spec.listeners[1].hostname",
                "spec.listeners[1].tls",
                "spec.listeners[1].tls.certificateRefs",
                "spec.listeners[2].name",
                "spec.listeners[2].hostname",
                "spec.listeners[2]",
            ]
        );
        assert!(
            diags
                .iter()
                .all(|d| d.is_error() && d.object == "ProxyGateway default/edge")
        );
    }
}
