//! The Kubernetes API source of `novaedge controller`: watch the objects the translator reads,
//! translate them when they change, publish the snapshot to the agents, and write back what the
//! translation found (Gateway API status, Events).
//!
//! ```text
//!  API server ──watch──▶ reflectors (one store per kind) ──changed──▶ debounced rebuild
//!                                                                     │ translate()
//!                                         every replica:  Publisher ◀─┤
//!                                         leader only:  status writer ◀┘ (server-side apply,
//!                                                                        Events)
//! ```
//!
//! - [Watchers](#watchers): a reflector per kind (kube-runtime's `watcher` with its
//!   `default_backoff`: a failed list or watch is logged and retried, never fatal). The first
//!   rebuild waits until every kind has been listed, so that the first snapshot is complete (a
//!   kind the controller may not list, for want of RBAC, holds it up, with a warning every
//!   retry); a kind whose resource the API server does not know (a CRD that is not installed)
//!   counts as listed and empty until it appears.
//! - Rebuilds are debounced: after a change the controller waits for [`Debounce::quiet`]
//!   without further changes, but never longer than [`Debounce::max_delay`] after the first
//!   one, so that a steady trickle of EndpointSlice updates still reaches the agents.
//! - [`Elector`]: leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//!   `leaderelection` does it (expiry judged by when *this* replica last saw the Lease change,
//!   so clocks need not agree).
//! - Each node gets its own snapshot through a [`Distributor`]: the Gateways its labels select
//!   and the VIPs placed on it, placed again when a Node's labels or an agent's health change.
//!
//! # Status and Events
//!
//! The leader turns the translation's [`Statuses`](crate::Statuses) into Gateway API status:
//! GatewayClass conditions; Gateway conditions and listeners (name, supported kinds, attached
//! routes, conditions); HTTPRoute and GRPCRoute `parents` with `controllerName`
//! [`GATEWAY_CONTROLLER_NAME`](crate::GATEWAY_CONTROLLER_NAME); and the same for NovaEdge's
//! ProxyGateways and ProxyRoutes, in their own status types ([`crate::crd`]).
//! [`ControllerConfig::publish_addresses`] are written to `status.addresses` of every accepted
//! Gateway and `status.loadBalancer.ingress` of every served Ingress (ProxyBackend, ProxyPolicy
//! and ProxyVIP have no status written). A condition keeps its
//! `lastTransitionTime` from the API server's copy while its status holds; `observedGeneration`
//! is the generation translated. A route's `parents` list is atomic in its schema: the entries
//! of other controllers are copied from the current status, ours are replaced. Translation
//! errors about an object become a `Warning` Event on it (`events.k8s.io/v1`, reason
//! `InvalidConfiguration`), once while the error lasts.
//!
//! # Every replica watches; only the leader serves and writes
//!
//! Every replica watches and translates, so that a new leader has everything at hand. Only the
//! leader serves snapshots: VIP placement (an L2 VIP on exactly one node) must be decided in
//! one place, from the heartbeats of every agent, and two replicas each seeing half of the
//! agents would each place the VIP. A follower ends every stream and refuses new ones with
//! `UNAVAILABLE` ([`Publisher::refuse`]); agents retry (with backoff and jitter, through the
//! controller's Service) until they reach the leader. A new leader waits one fencing delay for
//! the agents to say which L2 VIPs they hold before it places the others; an agent that cannot
//! reach a leader drops its L2 VIPs after the fencing delay, so a leader change costs L2 VIPs
//! their traffic for about the time the election takes.
//!
//! What else must happen once is left to the leader too: the status subresources (server-side
//! apply with the field manager [`FIELD_MANAGER`], forced, only when the status differs from
//! what the API server has), the Events, and the ProxyVIP finalizer (module `housekeeping`). A
//! replica that loses the Lease stops writing before its term can have expired for the others
//! ([`LeaseConfig::renew_deadline`] < [`LeaseConfig::lease_duration`]).
//!
//! # Watchers
//!
//! | kind | scope of the watch |
//! |---|---|
//! | GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant, BackendTLSPolicy (`gateway.networking.k8s.io/v1`) | all |
//! | Service, ConfigMap | all |
//! | EndpointSlice | those with the `kubernetes.io/service-name` label, listed in pages of [`ControllerConfig::page_size`] |
//! | Secret | type `kubernetes.io/tls` only (a field selector) |
//! | Ingress, IngressClass | all |
//! | ProxyPolicy (`novaedge.io/v1alpha1`) | all |
//! | Node | metadata only; a change of labels is a change |
//!
//! Secrets: only `kubernetes.io/tls` Secrets are watched, chosen by the API server through a
//! field selector, so that the controller never receives the cluster's other Secrets
//! (passwords, tokens). Everything NovaEdge reads from a Secret is a certificate and key (or a
//! CA bundle, `ca.crt`, which a `kubernetes.io/tls` Secret may carry): a CA bundle in a
//! Secret of another type is not seen (the reference reads "not found"); put it in a ConfigMap.
//! RBAC cannot narrow `list`/`watch` by field, so the ClusterRole still grants them on all
//! Secrets; the field selector is what keeps the rest out of the controller's memory. The
//! `novaedge.io/cert-file` family of annotations names files on the machine that reads the
//! Secret: they are honoured only by the file source and ignored here, with a warning, since
//! they would let anyone who can write a Secret make the controller read its own files.
//!
//! Objects are kept without `managedFields` and without kubectl's last-applied annotation (a
//! full copy of the object, Secret data included).

mod distributor;
mod events;
mod housekeeping;
mod leader;
mod metrics;
mod publish;
mod status;
mod watch;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use novaedge_snapshot::distribution::Publisher;
use tokio::sync::{Notify, watch as channel};
use tokio::time::Instant;

pub use distributor::{Desired, Distributor, HEALTH_TICK, lock, watch_health};
pub use housekeeping::{NACK_REASON, VIP_FINALIZER};
pub use leader::{Elector, LeaseConfig};
pub use metrics::ControllerMetrics;
pub use publish::{InvalidPublishAddress, PublishAddress};

use crate::translate::{TranslateOptions, translate};
use events::Problem;
use status::StatusWriter;
use watch::Stores;

/// The one field manager of every status NovaEdge writes.
pub const FIELD_MANAGER: &str = "novaedge-controller";

/// How rebuilds are spaced: after a change, wait until no change came for `quiet`, but no
/// longer than `max_delay` after the first change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Debounce {
    pub quiet: Duration,
    pub max_delay: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Self {
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl Debounce {
    /// Returns once changes (`notify`) have settled, after a first change was seen.
    async fn settle(&self, notify: &Notify) {
        let deadline = Instant::now() + self.max_delay;
        loop {
            let quiet_end = (Instant::now() + self.quiet).min(deadline);
            tokio::select! {
                () = notify.notified() => {
                    if Instant::now() >= deadline {
                        return;
                    }
                }
                () = tokio::time::sleep_until(quiet_end) => return,
            }
        }
    }
}

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Translation settings; `version` is ignored (the publisher stamps versions).
    pub translate: TranslateOptions,
    pub lease: LeaseConfig,
    pub debounce: Debounce,
    /// Objects per page when (re)listing a kind.
    pub page_size: u32,
    /// The addresses clients reach the proxies on, written to the status of the Ingresses and
    /// accepted Gateways NovaEdge serves; none: the entries written before are removed.
    pub publish_addresses: Vec<PublishAddress>,
    /// Where the controller counts watch events and times reconciliations.
    pub metrics: ControllerMetrics,
}

impl ControllerConfig {
    pub fn new(lease: LeaseConfig) -> Self {
        Self {
            translate: TranslateOptions::default(),
            lease,
            debounce: Debounce::default(),
            page_size: 500,
            publish_addresses: Vec::new(),
            metrics: ControllerMetrics::default(),
        }
    }
}

/// The controller: watchers, rebuilds, leader election and status writing on one
/// [`Client`], publishing to a [`Publisher`] (whose gRPC service the caller serves).
pub struct Controller {
    client: Client,
    publisher: Publisher,
    config: ControllerConfig,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("publisher", &self.publisher)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one translation hands to the status writer.
#[derive(Debug)]
struct Round {
    status: crate::status::Statuses,
    /// Errors about objects that a user must see as Events.
    problems: Vec<Problem>,
}

impl Controller {
    pub fn new(client: Client, publisher: Publisher, config: ControllerConfig) -> Self {
        Self {
            client,
            publisher,
            config,
        }
    }

    /// Runs until `shutdown` resolves; then gives the Lease up if it holds it, so that another
    /// replica takes over at once. Nothing here is fatal: API errors are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Controller {
            client,
            publisher,
            config,
        } = self;
        let changed = Arc::new(Notify::new());
        let (stores, watchers) = Stores::watch(
            &client,
            config.page_size,
            changed.clone(),
            config.metrics.clone(),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for watcher in watchers {
            tasks.spawn(watcher);
        }

        let (leading_tx, leading) = channel::channel(false);
        let (stop_elector, elector_stopped) = tokio::sync::oneshot::channel::<()>();
        let elector = Elector::new(client.clone(), config.lease.clone());
        let elector = tokio::spawn(elector.run(leading_tx, async {
            let _ = elector_stopped.await;
        }));

        // Only the leader serves snapshots: VIP placement must be decided in one place.
        publisher.refuse(Some(NOT_LEADER.to_owned()));
        let distributor = Arc::new(std::sync::Mutex::new(Distributor::new(publisher.clone())));
        tasks.spawn(serve_while_leading(
            publisher.clone(),
            distributor.clone(),
            leading.clone(),
        ));
        tasks.spawn(housekeeping::run(
            client.clone(),
            stores.clone(),
            distributor.clone(),
            publisher,
            leading.clone(),
            config.lease.identity.clone(),
        ));
        let (rounds_tx, rounds) = channel::channel(None);
        let writer = StatusWriter::new(client.clone(), stores.clone(), &config);
        tasks.spawn(writer.run(rounds, leading));

        let rebuild = rebuild_loop(&stores, &changed, &distributor, &config, &rounds_tx);
        tokio::select! {
            () = rebuild => {}
            () = watch_health(&distributor) => {}
            () = shutdown => tracing::info!("controller shutting down"),
        }
        // Status writes stop before the Lease is given up, so that the next leader is alone.
        tasks.shutdown().await;
        let _ = stop_elector.send(());
        if let Err(e) = elector.await {
            tracing::warn!(error = %e, "leader election task failed");
        }
    }
}

/// Why a follower refuses agents' streams.
const NOT_LEADER: &str = "this controller replica is not the leader; try another";

/// Serves snapshots while this replica leads, and refuses streams otherwise. A new leader
/// learns the current VIP holders from the agents' claims during its grace period.
async fn serve_while_leading(
    publisher: Publisher,
    distributor: Arc<std::sync::Mutex<Distributor>>,
    mut leading: channel::Receiver<bool>,
) {
    loop {
        if *leading.borrow_and_update() {
            lock(&distributor).restart();
            publisher.refuse(None);
            tracing::info!("leading: serving snapshots to the agents");
        } else {
            publisher.refuse(Some(NOT_LEADER.to_owned()));
        }
        if leading.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until every kind is listed, then rebuilds after every settled burst of changes.
async fn rebuild_loop(
    stores: &Stores,
    changed: &Notify,
    distributor: &std::sync::Mutex<Distributor>,
    config: &ControllerConfig,
    rounds: &channel::Sender<Option<Arc<Round>>>,
) {
    while !stores.all_listed() {
        changed.notified().await;
        tracing::debug!(pending = ?stores.pending(), "waiting for the first listing");
    }
    tracing::info!("every kind is listed; building the first snapshot");
    let mut reported = BTreeSet::new();
    loop {
        let round = rebuild(stores, distributor, config, &mut reported);
        rounds.send_replace(Some(Arc::new(round)));
        changed.notified().await;
        config.debounce.settle(changed).await;
    }
}

/// One translation of everything in the stores, handed to the distributor, which publishes
/// each node's part. `reported` holds the diagnostics logged so far, so that each is logged
/// once while it lasts.
fn rebuild(
    stores: &Stores,
    distributor: &std::sync::Mutex<Distributor>,
    config: &ControllerConfig,
    reported: &mut BTreeSet<String>,
) -> Round {
    let started = std::time::Instant::now();
    let (objects, mut diagnostics) = stores.objects();
    let translation = translate(&objects, &config.translate);
    diagnostics.extend(translation.diagnostics);

    let current: BTreeSet<String> = diagnostics.iter().map(ToString::to_string).collect();
    for d in &diagnostics {
        let line = d.to_string();
        if !reported.contains(&line) {
            if d.is_error() {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
        }
    }
    *reported = current;

    // Objects with errors are left out of the snapshot, which is otherwise served: one
    // object's mistake must not freeze everyone's configuration. A snapshot that fails its own
    // validation is a translator bug; the agents keep what they have.
    match translation.snapshot.validate() {
        Ok(()) => {
            lock(distributor).load(Desired {
                snapshot: translation.snapshot,
                nodes: translation.nodes,
                node_labels: translation.node_labels,
                vips: translation.vips,
            });
            tracing::debug!(
                objects = objects.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "translated"
            );
        }
        Err(e) => tracing::error!(error = %e, "the translated snapshot is invalid; not published"),
    }
    let problems = events::problems(&objects, diagnostics.iter().filter(|d| d.is_error()));
    config.metrics.reconciled(started.elapsed());
    Round {
        status: translation.status,
        problems,
    }
}

/// Whether an API error is a `404 Not Found`.
fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is a `409 Conflict` (or `AlreadyExists`).
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notifies every `every` until `until`, returning when `settle` returned.
    async fn settle_under(every: Duration, until: Duration) -> Duration {
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        let start = Instant::now();
        let noise = tokio::spawn(async move {
            while start.elapsed() < until {
                n.notify_one();
                tokio::time::sleep(every).await;
            }
        });
        notify.notified().await;
        Debounce::default().settle(&notify).await;
        noise.abort();
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_settles_after_the_quiet_period() {
        // Changes every 30 ms for 300 ms: the rebuild comes 100 ms after the last one.
        let waited = settle_under(Duration::from_millis(30), Duration::from_millis(300)).await;
        assert!(
            waited >= Duration::from_millis(300) && waited <= Duration::from_millis(430),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_is_rebuilt_after_the_maximum_delay() {
        // A change every 50 ms, for ever: the rebuild still comes after 1 s.
        let waited = settle_under(Duration::from_millis(50), Duration::from_secs(60)).await;
        assert!(
            waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1060),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_change_waits_only_the_quiet_period() {
        let notify = Notify::new();
        notify.notify_one();
        notify.notified().await;
        let start = Instant::now();
        Debounce::default().settle(&notify).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }
}
