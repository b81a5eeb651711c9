//! A runtime: everything compiled from one snapshot, immutable once built. The engine swaps
//! whole runtimes; nothing in here changes after [`Runtime::build`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use novaedge_lb::{Selector, WeightedRoundRobin};
use novaedge_router::{self as router, Router};
use novaedge_snapshot::{self as snapshot, ConfigSnapshot, UpstreamProtocol};

use crate::upstream::Wire;

/// Identifies a listening socket across snapshots: a reload that keeps the key keeps the socket.
/// Fixed ports are keyed by address; ephemeral ones (port 0, for tests) by listener name, since
/// each gets a port of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SocketKey {
    Fixed(SocketAddr),
    Ephemeral { ip: IpAddr, listener: String },
}

impl SocketKey {
    pub(crate) fn of(listener: &snapshot::Listener, default_bind: IpAddr) -> Self {
        let ip = listener.bind.unwrap_or(default_bind);
        if listener.port == 0 {
            SocketKey::Ephemeral {
                ip,
                listener: listener.name.clone(),
            }
        } else {
            SocketKey::Fixed(SocketAddr::new(ip, listener.port))
        }
    }

    pub(crate) fn bind_addr(&self) -> SocketAddr {
        match self {
            SocketKey::Fixed(addr) => *addr,
            SocketKey::Ephemeral { ip, .. } => SocketAddr::new(*ip, 0),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) version: u64,
    routers: HashMap<SocketKey, Router<Arc<RuleTarget>>>,
}

/// What one route rule sends its requests to.
#[derive(Debug)]
pub(crate) struct RuleTarget {
    /// `namespace/name` of the route, for logs.
    pub(crate) route: Arc<str>,
    backends: BackendChoice,
}

#[derive(Debug)]
enum BackendChoice {
    /// No backend with a weight above 0: Gateway API says such a rule answers 500.
    None,
    One(Arc<Cluster>),
    Weighted(WeightedRoundRobin<Arc<Cluster>>),
}

impl RuleTarget {
    pub(crate) fn pick_backend(&self) -> Option<&Arc<Cluster>> {
        match &self.backends {
            BackendChoice::None => None,
            BackendChoice::One(cluster) => Some(cluster),
            BackendChoice::Weighted(wrr) => wrr.pick(),
        }
    }
}

/// A backend at runtime: its ready endpoints behind a balancer.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) wire: Wire,
    endpoints: WeightedRoundRobin<SocketAddr>,
}

impl Cluster {
    pub(crate) fn pick(&self) -> Option<SocketAddr> {
        self.endpoints.pick().copied()
    }
}

/// Why a validated snapshot could still not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("listener {listener:?}: {source}")]
pub struct CompileError {
    listener: String,
    #[source]
    source: router::RouterError,
}

impl Runtime {
    /// Compiles a validated snapshot.
    pub(crate) fn build(
        snapshot: &ConfigSnapshot,
        default_bind: IpAddr,
    ) -> Result<Self, CompileError> {
        let clusters: HashMap<&str, Arc<Cluster>> = snapshot
            .backends
            .iter()
            .map(|b| (b.name.as_str(), Arc::new(Cluster::build(b))))
            .collect();

        // Gateway API: among equally specific matches the oldest route wins, then the first by
        // namespace/name, then the first rule in the route. `rank` encodes exactly that order.
        let mut order: Vec<&snapshot::Route> = snapshot.routes.iter().collect();
        order.sort_by(|a, b| (a.creation_timestamp, &a.name).cmp(&(b.creation_timestamp, &b.name)));

        let mut per_listener: HashMap<&str, Vec<router::Route<Arc<RuleTarget>>>> = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), Vec::new()))
            .collect();
        for (route_index, route) in order.iter().enumerate() {
            let name: Arc<str> = Arc::from(route.name.as_str());
            let entries = per_listener.entry(route.listener.as_str()).or_default();
            for (rule_index, rule) in route.rules.iter().enumerate() {
                let target = Arc::new(RuleTarget {
                    route: name.clone(),
                    backends: BackendChoice::build(rule, &clusters),
                });
                let rank = ((route_index as u64) << 24) | rule_index as u64;
                let matches = if rule.matches.is_empty() {
                    vec![snapshot::RouteMatch::default()]
                } else {
                    rule.matches.clone()
                };
                for m in matches {
                    entries.push(router::Route {
                        hostnames: route.hostnames.clone(),
                        route_match: router_match(m),
                        rank,
                        target: target.clone(),
                    });
                }
            }
        }

        let mut routers = HashMap::with_capacity(snapshot.listeners.len());
        for listener in &snapshot.listeners {
            let entries = per_listener
                .remove(listener.name.as_str())
                .unwrap_or_default();
            let router = Router::new(entries).map_err(|source| CompileError {
                listener: listener.name.clone(),
                source,
            })?;
            routers.insert(SocketKey::of(listener, default_bind), router);
        }
        Ok(Runtime {
            version: snapshot.version,
            routers,
        })
    }

    pub(crate) fn router(&self, key: &SocketKey) -> Option<&Router<Arc<RuleTarget>>> {
        self.routers.get(key)
    }
}

impl Cluster {
    fn build(backend: &snapshot::Backend) -> Self {
        let ready = backend
            .endpoints
            .iter()
            .filter(|e| e.ready)
            .map(|e| (e.address, e.weight));
        Cluster {
            name: backend.name.clone(),
            wire: match backend.protocol {
                UpstreamProtocol::Http1 => Wire::Http1,
                UpstreamProtocol::H2c => Wire::H2c,
            },
            endpoints: WeightedRoundRobin::new(ready),
        }
    }
}

impl BackendChoice {
    fn build(rule: &snapshot::RouteRule, clusters: &HashMap<&str, Arc<Cluster>>) -> Self {
        let mut weighted: Vec<(Arc<Cluster>, u32)> = rule
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .filter_map(|b| Some((clusters.get(b.backend.as_str())?.clone(), b.weight)))
            .collect();
        match weighted.len() {
            0 => BackendChoice::None,
            1 => BackendChoice::One(weighted.pop().expect("one element").0),
            _ => BackendChoice::Weighted(WeightedRoundRobin::new(weighted)),
        }
    }
}

fn router_match(m: snapshot::RouteMatch) -> router::RouteMatch {
    router::RouteMatch {
        path: match m.path {
            snapshot::PathMatch::Exact(p) => router::PathMatch::Exact(p),
            snapshot::PathMatch::Prefix(p) => router::PathMatch::Prefix(p),
        },
        method: m.method,
        headers: m
            .headers
            .into_iter()
            .map(|h| router::HeaderMatch {
                name: h.name,
                value: h.value,
            })
            .collect(),
    }
}
