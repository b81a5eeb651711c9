//! Status bookkeeping of the translation: listener problems and attached routes as they are
//! found, turned into Gateway API conditions at the end (see [`crate::status`]).

use gateway_api::gateways::GatewayListenersAllowedRoutesKinds;

use super::*;

/// The route kinds a listener can serve, in the order they are listed in its status.
pub(super) const ROUTE_KINDS: &[&str] = &["HTTPRoute", "GRPCRoute"];

impl<'a> Translator<'a> {
    pub(super) fn listener_state(
        &mut self,
        gateway: &Key,
        index: usize,
    ) -> Option<&mut ListenerState> {
        self.gateway_state
            .get_mut(gateway)?
            .listeners
            .get_mut(index)
    }

    /// Records why listener `index` of `gateway` is not (fully) served.
    pub(super) fn listener_problem(
        &mut self,
        gateway: &Key,
        index: usize,
        problem: ListenerProblem,
    ) {
        if let Some(state) = self.listener_state(gateway, index) {
            state.problems.push(problem);
        }
    }

    /// Records the route kinds listener `index` accepts, from its `allowedRoutes.kinds` (all
    /// that NovaEdge serves when empty), for its status. A kind NovaEdge does not serve is reported and makes the
    /// listener's `ResolvedRefs` false (`InvalidRouteKinds`); the listener still serves the others.
    pub(super) fn supported_kinds(
        &mut self,
        kinds: Option<&[GatewayListenersAllowedRoutesKinds]>,
        gateway: &Key,
        index: usize,
        field: &str,
        object: &str,
        file: Option<&PathBuf>,
    ) {
        let supported: Vec<&'static str> = match kinds {
            None | Some([]) => ROUTE_KINDS.to_vec(),
            Some(kinds) => {
                let mut out = Vec::new();
                for (k, kind) in kinds.iter().enumerate() {
                    let group = kind.group.as_deref().unwrap_or(GATEWAY_GROUP);
                    match ROUTE_KINDS.iter().find(|known| **known == kind.kind) {
                        Some(known) if group == GATEWAY_GROUP => {
                            if !out.contains(known) {
                                out.push(*known);
                            }
                        }
                        _ => {
                            self.warning(
                                file,
                                object.into(),
                                format!("{field}.allowedRoutes.kinds[{k}]"),
                                format!(
                                    "route kind {} ({group}) is not served by NovaEdge; \
                                     serving {}",
                                    kind.kind,
                                    ROUTE_KINDS.join(", ")
                                ),
                            );
                            self.listener_problem(
                                gateway,
                                index,
                                ListenerProblem::refs(
                                    reasons::INVALID_ROUTE_KINDS,
                                    format!(
                                        "{} ({group}) is not a supported route kind",
                                        kind.kind
                                    ),
                                ),
                            );
                        }
                    }
                }
                out
            }
        };
        // A ProxyGateway lists no kinds and takes ProxyRoutes only.
        let supported = if self.proxy_gateway_keys.contains(gateway) {
            vec!["ProxyRoute"]
        } else {
            supported
        };
        if let Some(state) = self.listener_state(gateway, index) {
            state.supported_kinds = supported;
        }
    }

    /// Notes an unresolved reference of the route being translated (the first one is the one
    /// its `ResolvedRefs` condition names).
    pub(super) fn unresolved(&mut self, reason: &'static str, message: String) {
        self.unresolved.get_or_insert((reason, message));
    }

    /// Every status, once the snapshot is built.
    pub(super) fn statuses(&mut self) -> Statuses {
        let mut out = Statuses::default();
        for (name, controller) in &self.classes {
            if *controller == GATEWAY_CONTROLLER_NAME {
                out.gateway_classes.insert(
                    (*name).to_owned(),
                    ObjectStatus {
                        generation: self.class_generations.get(name).copied().flatten(),
                        conditions: vec![Condition::new(
                            types::ACCEPTED,
                            true,
                            reasons::ACCEPTED,
                            "served by NovaEdge",
                        )],
                    },
                );
            }
        }
        for (key, state) in std::mem::take(&mut self.gateway_state) {
            out.gateways.insert(key, gateway_status(state));
        }
        out.routes = std::mem::take(&mut self.route_status);
        out.ingresses = std::mem::take(&mut self.ingress_status);
        out
    }
}

fn gateway_status(state: GatewayState) -> GatewayStatus {
    let listeners: Vec<ListenerStatus> = state.listeners.into_iter().map(listener_status).collect();
    let condition = |l: &ListenerStatus, type_: &str| {
        l.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .is_some_and(|c| c.status)
    };
    let programmed = listeners
        .iter()
        .filter(|l| condition(l, types::PROGRAMMED))
        .count();
    let accepted = if programmed == listeners.len() {
        Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, "")
    } else {
        Condition::new(
            types::ACCEPTED,
            programmed > 0,
            reasons::LISTENERS_NOT_VALID,
            format!(
                "{} of {} listeners are not valid",
                listeners.len() - programmed,
                listeners.len()
            ),
        )
    };
    let programmed = if programmed > 0 {
        Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "")
    } else {
        Condition::new(
            types::PROGRAMMED,
            false,
            reasons::INVALID,
            "no listener can be served",
        )
    };
    GatewayStatus {
        kind: state.kind,
        generation: state.generation,
        conditions: vec![accepted, programmed],
        listeners,
    }
}

fn listener_status(state: ListenerState) -> ListenerStatus {
    let first = |type_: &str| state.problems.iter().find(|p| p.type_ == type_);
    let accepted = match first(types::ACCEPTED) {
        Some(p) => Condition::new(types::ACCEPTED, false, p.reason, p.message.clone()),
        None => Condition::new(types::ACCEPTED, true, reasons::ACCEPTED, ""),
    };
    let resolved = match first(types::RESOLVED_REFS) {
        Some(p) => Condition::new(types::RESOLVED_REFS, false, p.reason, p.message.clone()),
        None => Condition::new(types::RESOLVED_REFS, true, reasons::RESOLVED_REFS, ""),
    };
    let conflicted = match first(types::CONFLICTED) {
        Some(p) => Condition::new(types::CONFLICTED, true, p.reason, p.message.clone()),
        None => Condition::new(types::CONFLICTED, false, reasons::NO_CONFLICTS, ""),
    };
    let programmed = if state.programmed {
        Condition::new(types::PROGRAMMED, true, reasons::PROGRAMMED, "")
    } else {
        Condition::new(types::PROGRAMMED, false, reasons::INVALID, "not served")
    };
    ListenerStatus {
        name: state.name,
        supported_kinds: state.supported_kinds,
        attached_routes: state.attached_routes,
        conditions: vec![accepted, resolved, conflicted, programmed],
    }
}
