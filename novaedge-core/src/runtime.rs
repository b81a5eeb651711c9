//! A runtime: everything compiled from one snapshot, immutable once built. The engine swaps
//! whole runtimes; nothing in here changes after [`Runtime::prepare`]. The one thing runtimes
//! share is the per-backend balancer ([`Balancers`]), whose endpoint load and health outlive
//! reloads.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};

use novaedge_filters::rewrite::MatchedPrefix;
use novaedge_health::{CircuitBreaker, Limits};
use novaedge_lb::{
    BuildOptions, EndpointSet, HashPolicy, LbPolicy, MaglevSize, Selector, WeightedRoundRobin,
};
use novaedge_router::{self as router, Router};
use novaedge_snapshot::{self as snapshot, ConfigSnapshot, HashOn, HealthPolicy, UpstreamProtocol};

use crate::engine::Shared;
use crate::filters::{FilterError, FilterStack, FilterState};
use crate::health::BackendHealth;
use crate::observe::access_log::Names;
use crate::proxy::{Forward, MirrorTarget};
use crate::tls::{TlsError, TlsState};
use crate::upstream::Wire;
use crate::upstream_tls::{UpstreamTlsConfig, UpstreamTlsError};

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
    /// Looked up per request. Keys come from the configuration, not from clients, so they need
    /// no DoS-resistant (and slower) SipHash.
    listeners: HashMap<SocketKey, ListenerRuntime, foldhash::fast::RandomState>,
}

/// What a listening socket serves under one runtime.
#[derive(Debug)]
pub(crate) struct ListenerRuntime {
    /// The listener's name, for metrics and logs.
    pub(crate) name: Arc<str>,
    /// The listener, without a route, as access logs write it: for requests no route takes.
    pub(crate) log: Arc<Names>,
    pub(crate) router: Router<Arc<MatchTarget>>,
    /// HTTPS: the configuration new connections handshake with.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Every request is redirected to `https` on this port.
    pub(crate) https_redirect_port: Option<u16>,
}

/// One balancer, health state and circuit breaker per backend name, kept across runtimes so
/// that the load, health and open requests each backend has accumulated survive reloads.
pub(crate) type Balancers = HashMap<String, BackendState>;

/// What a backend keeps across runtimes.
#[derive(Debug, Clone)]
pub(crate) struct BackendState {
    pub(crate) endpoints: EndpointSet<SocketAddr>,
    pub(crate) health: Arc<BackendHealth>,
    breaker: CircuitBreaker,
    /// Kept while the backend's TLS settings stay the same (TLS session resumption).
    tls: Option<Arc<UpstreamTlsConfig>>,
}

impl BackendState {
    /// An empty balancer with the detectors `policy` asks for, probing over `tls` where the
    /// probes go to the traffic port.
    fn new(
        policy: LbPolicy,
        options: BuildOptions,
        health: &HealthPolicy,
        tls: Option<&UpstreamTlsConfig>,
    ) -> Self {
        let endpoints = EndpointSet::with_options(policy, options);
        Self {
            health: Arc::new(BackendHealth::new(health, tls, &endpoints)),
            breaker: CircuitBreaker::new(limits(&health.circuit_breakers)),
            endpoints,
            tls: None,
        }
    }

    /// The state for `backend` after a reload: the same balancer and breaker, and the same
    /// detectors unless their settings changed, or the TLS settings their probes use. Returns
    /// the detectors it replaces, if any.
    fn reuse(
        &self,
        health: &HealthPolicy,
        tls: Option<&UpstreamTlsConfig>,
    ) -> (Self, Option<Arc<BackendHealth>>) {
        if self.health.matches(health, tls) {
            return (self.clone(), None);
        }
        let state = Self {
            endpoints: self.endpoints.clone(),
            health: Arc::new(BackendHealth::new(health, tls, &self.endpoints)),
            breaker: self.breaker.clone(),
            tls: self.tls.clone(),
        };
        (state, Some(self.health.clone()))
    }
}

fn limits(c: &snapshot::CircuitBreakers) -> Limits {
    Limits {
        max_connections: c.max_connections.into(),
        max_pending_requests: c.max_pending_requests.into(),
        max_requests: c.max_requests.into(),
        max_retries: c.max_retries.into(),
    }
}

/// What one match of a route rule resolves to: the rule, and the path prefix the match is
/// (for prefix rewrites and redirects).
#[derive(Debug)]
pub(crate) struct MatchTarget {
    pub(crate) rule: Arc<RuleTarget>,
    pub(crate) prefix: Option<MatchedPrefix>,
}

/// What one route rule does with its requests.
#[derive(Debug)]
pub(crate) struct RuleTarget {
    /// `namespace/name` of the route, for logs.
    pub(crate) route: Arc<str>,
    /// The route and its listener as access logs write them (shared by the route's rules).
    pub(crate) log: Arc<Names>,
    /// `None`: no filters, the request is forwarded as it is.
    pub(crate) filters: Option<FilterStack>,
    pub(crate) backends: Arc<BackendChoice>,
    /// The rule's request body limit; `None`: the engine's.
    pub(crate) max_request_body_bytes: Option<u64>,
}

/// Where a rule's requests go.
#[derive(Debug)]
pub(crate) enum BackendChoice {
    /// No backend with a weight above 0: Gateway API says such a rule answers 500.
    None,
    One(Arc<Cluster>),
    /// By weight; a `None` entry stands for the rule's unresolved backend references, whose
    /// share of the requests is answered 500. Boxed: most rules have one backend, and a table
    /// of tens of thousands of rules holds one choice per rule.
    Weighted(Box<WeightedRoundRobin<Option<Arc<Cluster>>>>),
}

impl BackendChoice {
    /// The backend for the next request; `None`: answer 500.
    pub(crate) fn pick(&self) -> Option<&Arc<Cluster>> {
        match self {
            BackendChoice::None => None,
            BackendChoice::One(cluster) => Some(cluster),
            BackendChoice::Weighted(wrr) => wrr.pick().and_then(Option::as_ref),
        }
    }

    /// The backend of this choice that `cluster` is (by identity), if it is one.
    pub(crate) fn find(&self, cluster: usize) -> Option<&Arc<Cluster>> {
        match self {
            BackendChoice::None => None,
            BackendChoice::One(one) => (one.id() == cluster).then_some(one),
            BackendChoice::Weighted(wrr) => wrr
                .endpoints()
                .iter()
                .flatten()
                .find(|one| one.id() == cluster),
        }
    }
}

/// A backend at runtime: its ready endpoints behind a balancer.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) name: String,
    /// The name again, as metrics labels share it.
    pub(crate) label: Arc<str>,
    /// The name as access logs write it.
    pub(crate) log: Names,
    pub(crate) wire: Wire,
    pub(crate) endpoints: EndpointSet<SocketAddr>,
    /// Where request outcomes go: passive health.
    pub(crate) health: Arc<BackendHealth>,
    /// Limits on what the backend is asked at once.
    pub(crate) breaker: CircuitBreaker,
    /// What requests are hashed on, for hashing policies.
    pub(crate) hash: Option<HashPolicy>,
    /// TLS to the endpoints; `None`: cleartext.
    pub(crate) tls: Option<Arc<UpstreamTlsConfig>>,
    /// The backend's `novaedge_upstream_rtt_seconds` series, once a request has needed it.
    pub(crate) rtt: OnceLock<crate::observe::Latency>,
}

/// Why a validated snapshot could still not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("listener {listener:?}: {source}")]
    Router {
        listener: String,
        #[source]
        source: router::RouterError,
    },
    #[error("listener {listener:?}: {source}")]
    Tls {
        listener: String,
        #[source]
        source: TlsError,
    },
    #[error("route {route:?}: rules[{rule}].{source}")]
    Filter {
        route: String,
        rule: usize,
        #[source]
        source: FilterError,
    },
    #[error(transparent)]
    UpstreamTls(#[from] Box<UpstreamTlsError>),
}

/// A runtime compiled but not yet visible: [`commit`](Prepared::commit) updates the shared
/// balancers and hands the runtime over. Nothing shared is touched before that, so a snapshot
/// that fails later (a port that cannot be bound) leaves no trace.
#[derive(Debug)]
pub(crate) struct Prepared {
    runtime: Runtime,
    carried: Carried,
    updates: Vec<BalancerUpdate>,
}

#[derive(Debug)]
struct BalancerUpdate {
    state: BackendState,
    /// Detectors the new ones replace.
    retired: Option<Arc<BackendHealth>>,
    policy: LbPolicy,
    options: BuildOptions,
    limits: Limits,
    endpoints: Vec<(SocketAddr, u32)>,
}

/// What the engine keeps from one snapshot for the next: the balancers of backends (with their
/// health and load), stateful filters (JWT key caches, rate limiter buckets), listener TLS
/// configurations (session caches, ticket keys) and compiled regular expressions. Each
/// [`Runtime::prepare`] reads the current one and builds the next, holding only what the new
/// snapshot uses.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    pub(crate) balancers: Balancers,
    pub(crate) filters: FilterState,
    pub(crate) tls: TlsState,
    pub(crate) regexes: router::Regexes,
}

impl Prepared {
    /// Rebuilds the balancers whose endpoints or policy changed and returns the runtime and the
    /// state to keep for the next snapshot (the balancers of backends the snapshot dropped are
    /// gone).
    pub(crate) fn commit(self) -> (Runtime, Carried) {
        for u in self.updates {
            if let Some(old) = u.retired {
                old.retire();
            }
            let BackendState {
                endpoints,
                health,
                breaker,
                ..
            } = &u.state;
            health.activate();
            breaker.set_limits(u.limits);
            endpoints.set_policy(u.policy, u.options);
            let addresses: Vec<SocketAddr> = u.endpoints.iter().map(|(addr, _)| *addr).collect();
            health.set_endpoints(&addresses);
            endpoints.update(u.endpoints);
            health.start_probes();
        }
        (self.runtime, self.carried)
    }

    pub(crate) fn version(&self) -> u64 {
        self.runtime.version
    }
}

impl Runtime {
    /// A runtime that serves nothing.
    #[allow(
        clippy::expect_used,
        reason = "start-up: the empty snapshot always compiles"
    )]
    pub(crate) fn empty(default_bind: IpAddr) -> Self {
        Self::prepare(
            &ConfigSnapshot::default(),
            default_bind,
            &Carried::default(),
            &Weak::new(),
        )
        .expect("the empty snapshot compiles")
        .commit()
        .0
    }

    /// Compiles a validated snapshot, reusing the balancers of backends that stay.
    pub(crate) fn prepare(
        snapshot: &ConfigSnapshot,
        default_bind: IpAddr,
        carried: &Carried,
        shared: &Weak<Shared>,
    ) -> Result<Prepared, CompileError> {
        let current = &carried.balancers;
        let mut next_tls_state = TlsState::default();
        let mut next_filter_state = FilterState::default();
        let mut next_regexes = router::Regexes::default();
        let mut balancers = Balancers::with_capacity(snapshot.backends.len());
        let mut updates = Vec::with_capacity(snapshot.backends.len());
        let clusters: HashMap<&str, Arc<Cluster>> = snapshot
            .backends
            .iter()
            .map(|b| {
                let current = current.get(&b.name);
                let tls = UpstreamTlsConfig::build(b, current.and_then(|c| c.tls.as_ref()))?;
                let (cluster, update) = Cluster::build(b, current, tls);
                balancers.insert(b.name.clone(), update.state.clone());
                updates.push(update);
                Ok((b.name.as_str(), Arc::new(cluster)))
            })
            .collect::<Result<_, CompileError>>()?;

        // Each rule's filters and backends are built once, and shared by its matches' entries.
        let mut rules: HashMap<(usize, usize), Arc<RuleTarget>> = HashMap::new();
        // A route's name, and its names as logs write them, shared by its rules.
        let mut route_names: HashMap<usize, (Arc<str>, Arc<Names>)> = HashMap::new();
        let mut per_listener: HashMap<&str, Vec<router::Route<Arc<MatchTarget>>>> =
            HashMap::with_capacity(snapshot.listeners.len());
        for (listener, entries) in crate::routing::route_entries(snapshot) {
            // Mapped in place: the entries' buffer becomes the routes' (a table of tens of
            // thousands of entries is not held twice).
            let compiled = entries
                .into_iter()
                .map(|entry| {
                    let at = entry.target;
                    let target = match rules.get(&(at.route, at.rule)) {
                        Some(target) => target.clone(),
                        None => {
                            let route = &snapshot.routes[at.route];
                            let rule = &route.rules[at.rule];
                            let (name, log) = route_names
                                .entry(at.route)
                                .or_insert_with(|| {
                                    (
                                        Arc::from(route.name.as_str()),
                                        Arc::new(Names::route(Some(listener), Some(&route.name))),
                                    )
                                })
                                .clone();
                            let backends = Arc::new(BackendChoice::build(rule, &clusters));
                            let timed = rule.filters.timeouts != snapshot::Timeouts::default();
                            let forward =
                                Forward::new(shared.clone(), name.clone(), backends.clone(), timed);
                            let filters = crate::filters::compile(
                                &rule.filters,
                                forward,
                                |backend| {
                                    let cluster = clusters.get(backend)?.clone();
                                    Some(MirrorTarget::new(shared.clone(), name.clone(), cluster))
                                },
                                &(name.clone(), at.rule),
                                &carried.filters,
                                &mut next_filter_state,
                            )
                            .map_err(|source| {
                                CompileError::Filter {
                                    route: route.name.clone(),
                                    rule: at.rule,
                                    source,
                                }
                            })?;
                            let target = Arc::new(RuleTarget {
                                route: name,
                                log,
                                filters,
                                backends,
                                max_request_body_bytes: rule.filters.max_request_body_bytes,
                            });
                            rules.insert((at.route, at.rule), target.clone());
                            target
                        }
                    };
                    let prefix = match &entry.route_match.path {
                        router::PathMatch::Prefix(p) => Some(MatchedPrefix(Arc::from(p.as_str()))),
                        _ => None,
                    };
                    Ok(router::Route {
                        hostnames: entry.hostnames,
                        route_match: entry.route_match,
                        rank: entry.rank,
                        target: Arc::new(MatchTarget {
                            rule: target,
                            prefix,
                        }),
                        dialect: entry.dialect,
                    })
                })
                .collect::<Result<Vec<_>, CompileError>>()?;
            per_listener.insert(listener, compiled);
        }

        let mut listeners =
            HashMap::with_capacity_and_hasher(snapshot.listeners.len(), Default::default());
        for listener in &snapshot.listeners {
            let tls = listener
                .tls
                .as_ref()
                .map(|tls| next_tls_state.config(&carried.tls, tls))
                .transpose()
                .map_err(|source| CompileError::Tls {
                    listener: listener.name.clone(),
                    source,
                })?;
            let entries = per_listener
                .remove(listener.name.as_str())
                .unwrap_or_default();
            let router = Router::with_regexes(entries, &carried.regexes, &mut next_regexes)
                .map_err(|source| CompileError::Router {
                    listener: listener.name.clone(),
                    source,
                })?;
            listeners.insert(
                SocketKey::of(listener, default_bind),
                ListenerRuntime {
                    name: Arc::from(listener.name.as_str()),
                    log: Arc::new(Names::route(Some(&listener.name), None)),
                    router,
                    tls,
                    https_redirect_port: listener.https_redirect_port,
                },
            );
        }
        Ok(Prepared {
            runtime: Runtime {
                version: snapshot.version,
                listeners,
            },
            carried: Carried {
                balancers,
                filters: next_filter_state,
                tls: next_tls_state,
                regexes: next_regexes,
            },
            updates,
        })
    }

    pub(crate) fn listener(&self, key: &SocketKey) -> Option<&ListenerRuntime> {
        self.listeners.get(key)
    }
}

impl Cluster {
    /// This cluster's identity, never 0: its address, unique while it lives. A request's
    /// observation records where it went by this, without taking a reference, and finds the
    /// cluster again in its rule's [`BackendChoice`], which the request holds.
    pub(crate) fn id(&self) -> usize {
        std::ptr::from_ref(self).addr()
    }

    fn build(
        backend: &snapshot::Backend,
        current: Option<&BackendState>,
        tls: Option<Arc<UpstreamTlsConfig>>,
    ) -> (Self, BalancerUpdate) {
        let lb = &backend.load_balancing;
        let policy = lb_policy(lb.policy);
        let options = BuildOptions::new().with_panic_threshold(lb.panic_threshold_percent);
        // A new backend's set starts empty; `commit` fills it before anyone can see it.
        let (mut state, retired) = match current {
            Some(current) => current.reuse(&backend.health, tls.as_deref()),
            None => (
                BackendState::new(
                    policy.clone(),
                    options.clone(),
                    &backend.health,
                    tls.as_deref(),
                ),
                None,
            ),
        };
        state.tls = tls.clone();
        let update = BalancerUpdate {
            state: state.clone(),
            retired,
            policy,
            options,
            limits: limits(&backend.health.circuit_breakers),
            endpoints: backend
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .map(|e| (e.address, e.weight))
                .collect(),
        };
        let cluster = Cluster {
            name: backend.name.clone(),
            label: Arc::from(backend.name.as_str()),
            log: Names::backend(Some(&backend.name)),
            wire: match backend.protocol {
                UpstreamProtocol::Http1 => Wire::Http1,
                UpstreamProtocol::H2c => Wire::H2c,
            },
            endpoints: state.endpoints,
            health: state.health,
            breaker: state.breaker,
            hash: lb.hash_on.as_ref().map(|h| match h {
                HashOn::Header(name) => HashPolicy::Header(name.clone()),
                HashOn::Cookie(name) => HashPolicy::Cookie(name.clone()),
                HashOn::SourceIp => HashPolicy::SourceIp,
                HashOn::QueryParam(name) => HashPolicy::QueryParam(name.clone()),
            }),
            tls,
            rtt: OnceLock::new(),
        };
        (cluster, update)
    }
}

fn lb_policy(policy: snapshot::LbPolicy) -> LbPolicy {
    match policy {
        snapshot::LbPolicy::RoundRobin => LbPolicy::RoundRobin,
        snapshot::LbPolicy::Random => LbPolicy::Random,
        snapshot::LbPolicy::LeastRequest { choices } => LbPolicy::LeastRequest { choices },
        snapshot::LbPolicy::PeakEwma { decay, default_rtt } => {
            LbPolicy::PeakEwma { decay, default_rtt }
        }
        snapshot::LbPolicy::RingHash {
            points_per_weight,
            max_ring_size,
        } => LbPolicy::RingHash {
            points_per_weight,
            max_ring_size,
        },
        snapshot::LbPolicy::Maglev { table_size } => LbPolicy::Maglev {
            // The snapshot validated it as a prime in range.
            table_size: MaglevSize::new(table_size).unwrap_or_default(),
        },
    }
}

impl BackendChoice {
    fn build(rule: &snapshot::RouteRule, clusters: &HashMap<&str, Arc<Cluster>>) -> Self {
        let mut weighted: Vec<(Option<Arc<Cluster>>, u32)> = rule
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .filter_map(|b| Some((Some(clusters.get(b.backend.as_str())?.clone()), b.weight)))
            .collect();
        if rule.invalid_backend_weight > 0 {
            weighted.push((None, rule.invalid_backend_weight));
        }
        match weighted.as_slice() {
            [] | [(None, _)] => BackendChoice::None,
            [(Some(cluster), _)] => BackendChoice::One(cluster.clone()),
            _ => BackendChoice::Weighted(Box::new(WeightedRoundRobin::new(weighted))),
        }
    }
}
