//! The status a translation computes for the objects it read, in Gateway API's terms: conditions
//! with a type, a status, a machine-readable reason and a message for people.
//!
//! The translation is a pure function, so these carry no timestamps: whoever writes them to the
//! API server (the controller) stamps `lastTransitionTime`, keeping the previous time when a
//! condition's status did not change, and `observedGeneration` from [`ObjectStatus::generation`].
//! `novaedge check` prints them.
//!
//! Routes get one entry per parent reference that names a Gateway NovaEdge serves (or a Gateway
//! that does not exist), with `Accepted` and `ResolvedRefs`; Gateways get `Accepted` and
//! `Programmed`, and each listener `Accepted`, `ResolvedRefs`, `Conflicted` and `Programmed`,
//! its supported route kinds and the number of routes attached to it; GatewayClasses with
//! NovaEdge's controller name get `Accepted`. ProxyGateways and ProxyRoutes get the same as
//! the Gateways and HTTPRoutes they convert to. Ingresses of NovaEdge's classes are listed with
//! whether they are served.

use std::collections::BTreeMap;
use std::fmt;

/// Condition types.
pub mod types {
    pub const ACCEPTED: &str = "Accepted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const PROGRAMMED: &str = "Programmed";
    pub const CONFLICTED: &str = "Conflicted";
}

/// Condition reasons, as the Gateway API specification names them.
pub mod reasons {
    // Positive reasons.
    pub const ACCEPTED: &str = "Accepted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const PROGRAMMED: &str = "Programmed";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    // Routes.
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    // Gateways and listeners.
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const INVALID: &str = "Invalid";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
}

/// One observation about an object, as `metav1.Condition` without its timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, ...: see [`types`].
    pub type_: &'static str,
    pub status: bool,
    /// CamelCase, see [`reasons`].
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub(crate) fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.status { "True" } else { "False" };
        write!(f, "{}={status} ({})", self.type_, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// Everything a translation has to say about the objects' status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statuses {
    pub gateway_classes: BTreeMap<String, ObjectStatus>,
    pub gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// By route kind (`HTTPRoute`, `GRPCRoute`, `ProxyRoute`), then namespace and name.
    pub routes: BTreeMap<(&'static str, ObjectKey), RouteStatus>,
    /// The Ingresses of NovaEdge's classes, and whether each is served (`false`: left out for
    /// its errors). An Ingress has no conditions; the controller writes where it is reachable.
    pub ingresses: BTreeMap<ObjectKey, bool>,
}

/// Conditions of an object with no parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectStatus {
    /// The `metadata.generation` the conditions were computed from.
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayStatus {
    /// `Gateway` or `ProxyGateway`.
    pub kind: &'static str,
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
    /// In `spec.listeners` order.
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    /// Route kinds of group `gateway.networking.k8s.io` that may attach.
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteStatus {
    pub generation: Option<i64>,
    /// One per parent reference NovaEdge answers for, in `spec.parentRefs` order.
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteParentStatus {
    /// Its index in `spec.parentRefs`.
    pub index: usize,
    /// `namespace/name` of the Gateway, with `/section` and `:port` when the reference names
    /// them.
    pub parent: String,
    pub conditions: Vec<Condition>,
}

impl Statuses {
    /// Every condition that is not as it should be (`Accepted=False`, `Conflicted=True`, ...),
    /// one line each, naming the object and the part: what `novaedge check` prints.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let bad = |c: &Condition| {
            if c.type_ == types::CONFLICTED {
                c.status
            } else {
                !c.status
            }
        };
        for (name, s) in &self.gateway_classes {
            for c in s.conditions.iter().filter(|c| bad(c)) {
                out.push(format!("GatewayClass {name}: {c}"));
            }
        }
        for ((ns, name), s) in &self.gateways {
            let kind = s.kind;
            for c in s.conditions.iter().filter(|c| bad(c)) {
                out.push(format!("{kind} {ns}/{name}: {c}"));
            }
            for l in &s.listeners {
                for c in l.conditions.iter().filter(|c| bad(c)) {
                    out.push(format!("{kind} {ns}/{name}: listener {:?}: {c}", l.name));
                }
            }
        }
        for ((kind, (ns, name)), s) in &self.routes {
            for p in &s.parents {
                for c in p.conditions.iter().filter(|c| bad(c)) {
                    out.push(format!(
                        "{kind} {ns}/{name}: spec.parentRefs[{}] ({}): {c}",
                        p.index, p.parent
                    ));
                }
            }
        }
        out
    }

    /// All statuses as readable YAML-like text, for `novaedge check --status`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let conditions = |out: &mut String, indent: &str, list: &[Condition]| {
            for c in list {
                let _ = writeln!(out, "{indent}- {c}");
            }
        };
        for (name, s) in &self.gateway_classes {
            let _ = writeln!(out, "GatewayClass {name}:");
            conditions(&mut out, "  ", &s.conditions);
        }
        for ((ns, name), s) in &self.gateways {
            let _ = writeln!(out, "{} {ns}/{name}:", s.kind);
            conditions(&mut out, "  ", &s.conditions);
            for l in &s.listeners {
                let _ = writeln!(
                    out,
                    "  listener {:?} (kinds: {}; attached routes: {}):",
                    l.name,
                    l.supported_kinds.join(", "),
                    l.attached_routes
                );
                conditions(&mut out, "    ", &l.conditions);
            }
        }
        for ((kind, (ns, name)), s) in &self.routes {
            let _ = writeln!(out, "{kind} {ns}/{name}:");
            for p in &s.parents {
                let _ = writeln!(out, "  parentRefs[{}] {}:", p.index, p.parent);
                conditions(&mut out, "    ", &p.conditions);
            }
        }
        out
    }
}
