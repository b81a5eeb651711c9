//! The controller side: per-node snapshots, and the stream that delivers them.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::digest;
use super::proto::snapshot_distribution_server::{
    SnapshotDistribution, SnapshotDistributionServer,
};
use super::proto::{AgentMessage, ControllerMessage, agent_message};
use crate::ConfigSnapshot;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides whether the peer of a stream may receive the snapshot of `node`: typically, whether
/// its client certificate names that node. It is given the stream's request (metadata and
/// extensions, where tonic keeps the peer's address and certificates) without its body. An
/// `Err` ends the stream with that status.
pub type Authorize = Arc<dyn Fn(&Request<()>, &str) -> Result<(), Status> + Send + Sync>;

/// The snapshots of every node, and what the nodes said about them. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped on every change of a snapshot; streams wake up and look at their node's.
    changed: watch::Sender<u64>,
    config: PublisherConfig,
    metrics: Metrics,
}

/// The publisher's metrics, registered with [`Publisher::register_metrics`].
#[derive(Debug, Clone, Default)]
struct Metrics {
    pushes: Family<PushLabels, Counter>,
    sent: Counter,
    connected: Gauge,
    version: Gauge,
    vip_failovers: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PushLabels {
    result: PushResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values are lower case")]
enum PushResult {
    ack,
    nack,
}

/// What a [`Publisher`] asks of the agents.
#[derive(Debug, Clone, Copy)]
pub struct PublisherConfig {
    /// How often agents send heartbeats.
    pub heartbeat: Duration,
    /// How long after it last heard from a node the controller may give the node's L2 VIPs to
    /// another node; sent to the agents, which drop their L2 VIPs on their own before then.
    /// `None`: L2 VIPs are never moved, and agents keep them without the controller.
    pub fencing_delay: Option<Duration>,
}

#[derive(Default)]
struct State {
    /// For nodes without a snapshot of their own.
    default: Option<Published>,
    per_node: HashMap<String, Published>,
    reports: BTreeMap<String, NodeReport>,
    last_version: u64,
    /// Streams opened so far, to tell a node's current stream from an older one.
    streams: u64,
    /// Set by [`Publisher::close`]: every stream ends, new ones are refused.
    closed: bool,
    /// Set by [`Publisher::refuse`]: streams end, and new ones are refused, with this reason.
    refusing: Option<String>,
}

#[derive(Clone)]
struct Published {
    version: u64,
    digest: [u8; 16],
    wire: Arc<crate::proto::ConfigSnapshot>,
}

/// What the controller knows of one node from its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// A stream from the node is open.
    pub connected: bool,
    /// When the node's agent last sent a message (its Hello, a heartbeat, an ACK or NACK).
    pub last_seen: Instant,
    /// The node's data plane said it is ready in its last heartbeat.
    pub ready: bool,
    /// The last version sent to the node.
    pub sent: Option<u64>,
    /// The last version the node applied.
    pub acked: Option<u64>,
    /// The last version the node refused, and why; cleared by a later ACK.
    pub nacked: Option<(u64, String)>,
    /// The L2 VIPs (by name) the node said it holds, in its Hello or last heartbeat.
    pub held_vips: Vec<String>,
    /// The stream the report is from.
    stream: u64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Publisher")
            .field("last_version", &state.last_version)
            .field("nodes", &state.reports)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher with nothing to send yet, asking agents for a heartbeat every `heartbeat`,
    /// and with no fencing delay.
    pub fn new(heartbeat: Duration) -> Self {
        Self::with_config(PublisherConfig {
            heartbeat,
            fencing_delay: None,
        })
    }

    /// A publisher with nothing to send yet.
    pub fn with_config(config: PublisherConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                changed: watch::Sender::new(0),
                config,
                metrics: Metrics::default(),
            }),
        }
    }

    /// What the publisher asks of the agents.
    pub fn config(&self) -> PublisherConfig {
        self.inner.config
    }

    /// Registers the publisher's metrics:
    /// `novaedge_config_pushes_total{result="ack"|"nack"}` (snapshots the agents applied or
    /// refused), `novaedge_snapshots_sent_total`, `novaedge_agents_connected`,
    /// `novaedge_snapshot_version` (the last version published) and
    /// `novaedge_vip_failovers_total` (see [`Publisher::record_vip_failover`]).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "novaedge_config_pushes",
            "Snapshots the agents applied (ack) or refused (nack)",
            m.pushes.clone(),
        );
        registry.register(
            "novaedge_snapshots_sent",
            "Snapshots sent to agents",
            m.sent.clone(),
        );
        registry.register(
            "novaedge_agents_connected",
            "Agents with an open snapshot stream",
            m.connected.clone(),
        );
        registry.register(
            "novaedge_snapshot_version",
            "Version of the last snapshot published",
            m.version.clone(),
        );
        registry.register(
            "novaedge_vip_failovers",
            "L2 VIPs given to another node because their holder was fenced or no longer selected",
            m.vip_failovers.clone(),
        );
    }

    /// Counts an L2 VIP moved from one node to another (`novaedge_vip_failovers_total`).
    pub fn record_vip_failover(&self) {
        self.inner.metrics.vip_failovers.inc();
    }

    /// Whether a snapshot has been published (the controller has something to serve).
    pub fn has_snapshot(&self) -> bool {
        self.state().default.is_some()
    }

    /// The snapshot `node` is to run (`None`: the default one), as published; `None` if there
    /// is none.
    pub fn snapshot(&self, node: Option<&str>) -> Option<ConfigSnapshot> {
        let published = match node {
            Some(node) => self.effective(node),
            None => self.state().default.clone(),
        }?;
        ConfigSnapshot::try_from((*published.wire).clone()).ok()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after every statement; a panic elsewhere cannot break it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the snapshot of every node that has none of its own. Returns the version it got,
    /// or `None` when its content is what the nodes already have.
    pub fn publish_default(&self, snapshot: &ConfigSnapshot) -> Option<u64> {
        let mut state = self.state();
        let State {
            default,
            last_version,
            ..
        } = &mut *state;
        let version = stamp(last_version, default, snapshot);
        drop(state);
        self.published(version)
    }

    /// Sets the snapshot of `node`, overriding the default. Returns its version, or `None` when
    /// unchanged.
    pub fn publish_node(&self, node: &str, snapshot: &ConfigSnapshot) -> Option<u64> {
        let mut state = self.state();
        let State {
            per_node,
            last_version,
            ..
        } = &mut *state;
        let mut slot = per_node.remove(node);
        let version = stamp(last_version, &mut slot, snapshot);
        per_node.extend(slot.map(|p| (node.to_owned(), p)));
        drop(state);
        self.published(version)
    }

    /// Removes the snapshot of `node`; it gets the default again.
    pub fn remove_node(&self, node: &str) {
        let removed = self.state().per_node.remove(node).map(|p| p.version);
        self.changed(removed);
    }

    /// Wakes the streams up if `version` says something changed.
    fn changed(&self, version: Option<u64>) -> Option<u64> {
        if version.is_some() {
            self.inner.changed.send_modify(|g| *g += 1);
        }
        version
    }

    /// Records a newly published version, and wakes the streams up.
    fn published(&self, version: Option<u64>) -> Option<u64> {
        if let Some(v) = version {
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            self.inner.metrics.version.set(v);
        }
        self.changed(version)
    }

    /// Ends every stream with `UNAVAILABLE` and refuses new ones, so that agents reconnect
    /// (to another replica, or to this one restarted) and the server can shut down gracefully:
    /// streams never end on their own.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.changed.send_modify(|g| *g += 1);
    }

    /// Ends every stream with `UNAVAILABLE` and `reason`, and refuses new ones until called
    /// with `None`: for a replica that must not serve (not the leader), so that agents retry
    /// until they reach one that does.
    pub fn refuse(&self, reason: Option<String>) {
        let mut state = self.state();
        if state.refusing == reason {
            return;
        }
        state.refusing = reason;
        drop(state);
        self.inner.changed.send_modify(|g| *g += 1);
    }

    /// Why streams are not served now, if they are not.
    fn unavailable(&self) -> Option<Status> {
        let state = self.state();
        if state.closed {
            return Some(Status::unavailable("the controller is shutting down"));
        }
        state.refusing.as_deref().map(Status::unavailable)
    }

    /// What each node said, by node name.
    pub fn reports(&self) -> BTreeMap<String, NodeReport> {
        self.state().reports.clone()
    }

    /// The version of the snapshot `node` is to run now (its own, or the default).
    pub fn node_version(&self, node: &str) -> Option<u64> {
        self.effective(node).map(|p| p.version)
    }

    /// The tonic service that serves the snapshots, with `authorize` checking each stream.
    pub fn service(&self, authorize: Authorize) -> SnapshotDistributionServer<Service> {
        SnapshotDistributionServer::new(Service {
            publisher: self.clone(),
            authorize,
        })
    }

    /// The snapshot `node` is to run, if any.
    fn effective(&self, node: &str) -> Option<Published> {
        let state = self.state();
        state.per_node.get(node).or(state.default.as_ref()).cloned()
    }

    /// Updates the report of `node` if it is still from `stream`. `heard`: the update comes
    /// from a message of the agent, so the node was alive just now. Only such messages count:
    /// a snapshot sent into a dead connection, or the stream's end, says nothing of the node,
    /// and counting them would make a silent node look alive (and its old claims current).
    fn report(&self, node: &str, stream: u64, heard: bool, update: impl FnOnce(&mut NodeReport)) {
        let mut state = self.state();
        if let Some(report) = state.reports.get_mut(node)
            && report.stream == stream
        {
            if heard {
                report.last_seen = Instant::now();
            }
            update(report);
        }
    }
}

/// Puts `snapshot` in `slot` with a new version, unless the slot holds the same content.
fn stamp(
    last_version: &mut u64,
    slot: &mut Option<Published>,
    snapshot: &ConfigSnapshot,
) -> Option<u64> {
    let digest = digest(snapshot);
    if slot.as_ref().is_some_and(|p| p.digest == digest) {
        return None;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let version = now.max(*last_version + 1);
    let mut wire = crate::proto::ConfigSnapshot::from(snapshot);
    wire.version = version;
    *slot = Some(Published {
        version,
        digest,
        wire: Arc::new(wire),
    });
    *last_version = version;
    Some(version)
}

/// The gRPC service of a [`Publisher`].
pub struct Service {
    publisher: Publisher,
    authorize: Authorize,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

type ControllerStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotDistribution for Service {
    type SubscribeStream = ControllerStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (metadata, extensions, mut inbound) = request.into_parts();
        let peer = Request::from_parts(metadata, extensions, ());
        let hello = {
            let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await;
            match first {
                Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
                Ok(Ok(Some(AgentMessage {
                    message: Some(agent_message::Message::Hello(hello)),
                }))) => hello,
                Ok(Ok(_)) => {
                    return Err(Status::invalid_argument(
                        "the first message must be a Hello",
                    ));
                }
                Ok(Err(status)) => return Err(status),
            }
        };
        if let Some(status) = self.publisher.unavailable() {
            return Err(status);
        }
        if hello.node.is_empty() {
            return Err(Status::invalid_argument("Hello.node is empty"));
        }
        if let Err(status) = (self.authorize)(&peer, &hello.node) {
            tracing::warn!(
                node = hello.node,
                peer = ?peer.remote_addr(),
                status = status.message(),
                "subscription refused"
            );
            return Err(status);
        }
        let node = hello.node.clone();
        let publisher = self.publisher.clone();
        let stream_id = {
            let mut state = publisher.state();
            state.streams += 1;
            let id = state.streams;
            state.reports.insert(
                node.clone(),
                NodeReport {
                    connected: true,
                    last_seen: Instant::now(),
                    ready: false,
                    sent: None,
                    acked: (hello.current_version != 0).then_some(hello.current_version),
                    nacked: None,
                    held_vips: hello.held_vips.clone(),
                    stream: id,
                },
            );
            id
        };
        publisher.inner.metrics.connected.inc();
        tracing::info!(
            node,
            current_version = hello.current_version,
            agent = hello.agent_version,
            "agent subscribed"
        );

        let (tx, rx) = mpsc::channel(4);
        // The latest heartbeat to answer, from the reader to the sender.
        let (beats_tx, mut beats) = watch::channel(0u64);
        // Sends the node's snapshot whenever it differs from what the agent runs, and answers
        // heartbeats. One task does both so that an answer never overtakes a snapshot: a
        // heartbeat that arrives after the node's snapshot changed is answered with (or after)
        // the new snapshot, which is what lets the agent trust its L2 VIPs until an answer is
        // overdue.
        let sender = {
            let publisher = publisher.clone();
            let node = node.clone();
            let mut running = hello.current_digest.clone();
            let mut changed = publisher.inner.changed.subscribe();
            let config = publisher.inner.config;
            let heartbeat_interval_ms = millis(config.heartbeat);
            let fencing_delay_ms = config.fencing_delay.map_or(0, millis);
            let mut answered = 0;
            tokio::spawn(async move {
                loop {
                    changed.borrow_and_update();
                    if let Some(status) = publisher.unavailable() {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    let mut message = ControllerMessage {
                        snapshot: None,
                        digest: Vec::new(),
                        heartbeat_interval_ms,
                        heartbeat_ack: 0,
                        fencing_delay_ms,
                    };
                    let mut sent = None;
                    if let Some(p) = publisher.effective(&node)
                        && p.digest[..] != running[..]
                    {
                        message.snapshot = Some((*p.wire).clone());
                        message.digest = p.digest.to_vec();
                        sent = Some((p.version, p.digest));
                    }
                    let beat = *beats.borrow_and_update();
                    if beat > answered {
                        message.heartbeat_ack = beat;
                    }
                    if sent.is_some() || message.heartbeat_ack != 0 {
                        if tx.send(Ok(message)).await.is_err() {
                            return; // the stream is gone
                        }
                        answered = answered.max(beat);
                        if let Some((version, digest)) = sent {
                            publisher.inner.metrics.sent.inc();
                            running = digest.to_vec();
                            publisher.report(&node, stream_id, false, |r| r.sent = Some(version));
                            tracing::debug!(node, version, "snapshot sent");
                        }
                    }
                    tokio::select! {
                        changed = changed.changed() => if changed.is_err() { return },
                        beat = beats.changed() => if beat.is_err() { return },
                        () = tx.closed() => return,
                    }
                }
            })
        };
        // Reads the agent's answers until the stream ends.
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => match message.message {
                        Some(agent_message::Message::Ack(ack)) => {
                            tracing::info!(node, version = ack.version, "snapshot applied");
                            publisher
                                .inner
                                .metrics
                                .pushes
                                .get_or_create(&PushLabels {
                                    result: PushResult::ack,
                                })
                                .inc();
                            publisher.report(&node, stream_id, true, |r| {
                                r.acked = Some(ack.version);
                                r.nacked = None;
                            });
                        }
                        Some(agent_message::Message::Nack(nack)) => {
                            tracing::warn!(
                                node,
                                version = nack.version,
                                error = nack.error,
                                "snapshot refused by the agent"
                            );
                            publisher
                                .inner
                                .metrics
                                .pushes
                                .get_or_create(&PushLabels {
                                    result: PushResult::nack,
                                })
                                .inc();
                            publisher.report(&node, stream_id, true, |r| {
                                r.nacked = Some((nack.version, nack.error));
                            });
                        }
                        Some(agent_message::Message::Heartbeat(beat)) => {
                            publisher.report(&node, stream_id, true, |r| {
                                r.ready = beat.ready;
                                r.held_vips = beat.held_vips;
                            });
                            if beat.sequence != 0 {
                                beats_tx.send_if_modified(|last| {
                                    let newer = beat.sequence > *last;
                                    *last = (*last).max(beat.sequence);
                                    newer
                                });
                            }
                        }
                        Some(agent_message::Message::Hello(_)) | None => {
                            tracing::warn!(node, "unexpected message from the agent; ignored");
                        }
                    },
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(node, %status, "agent stream failed");
                        break;
                    }
                }
            }
            publisher.report(&node, stream_id, false, |r| r.connected = false);
            publisher.inner.metrics.connected.dec();
            sender.abort();
            tracing::info!(node, "agent unsubscribed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
