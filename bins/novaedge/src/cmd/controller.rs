//! `novaedge controller`: translates the configuration and streams each node agent its
//! snapshot. With `--source kubernetes` the objects come from the API server (see
//! `novaedge_k8s::controller`: watchers, leader election, status); with `--source files:DIR`
//! from files (watched), so that the whole controller -> agent system runs without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use novaedge_k8s::TranslateOptions;
use novaedge_k8s::controller::{Controller, ControllerConfig, LeaseConfig};
use novaedge_k8s::file_source::{FileSource, Loaded};
use novaedge_k8s::placement::{NodeCandidate, NodeHealth, place};
use novaedge_snapshot::distribution::{Authorize, Publisher};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Status;
use tonic::transport::Server;

use super::control_tls::{self, TlsFiles};

/// How long the files must be quiet after a change before they are read again.
const RELOAD_QUIET: Duration = Duration::from_millis(100);

/// Where the controller reads objects from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Files or directories of YAML, watched.
    Files(Vec<PathBuf>),
    /// The Kubernetes API server (in-cluster configuration, or the kubeconfig).
    Kubernetes,
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "kubernetes" {
            return Ok(Source::Kubernetes);
        }
        match s.split_once(':') {
            Some(("files", paths)) if !paths.is_empty() => {
                Ok(Source::Files(paths.split(',').map(PathBuf::from).collect()))
            }
            _ => Err(format!("{s:?}: use kubernetes or files:PATH[,PATH...]")),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) source: Source,
    pub(crate) listen: SocketAddr,
    /// `None`: plaintext (only with `--insecure`).
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) heartbeat: Duration,
    /// How long a node must be silent before its L2 VIPs go to another node.
    pub(crate) fencing_delay: Duration,
    pub(crate) translate: TranslateOptions,
    pub(crate) lease: LeaseOptions,
}

/// The Lease the replicas elect their leader on (`--source kubernetes`).
#[derive(Debug)]
pub(crate) struct LeaseOptions {
    pub(crate) name: String,
    /// `None`: the namespace of the client's configuration (the Pod's, in a cluster).
    pub(crate) namespace: Option<String>,
    /// `None`: the host name (a Pod's name, in a cluster).
    pub(crate) identity: Option<String>,
}

pub(crate) async fn controller(options: Options) -> Result<ExitCode, super::Error> {
    let publisher = Publisher::new(options.heartbeat);
    // One shutdown signal for the server and the source.
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        super::terminated().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };

    // The source is ready (files read, API client configured) before the port is opened.
    let source = match options.source {
        Source::Files(paths) => {
            let mut source = FileSource::new(paths).with_options(options.translate);
            let mut distributor = Distributor {
                publisher: publisher.clone(),
                heartbeat: options.heartbeat,
                fencing_delay: options.fencing_delay,
                loaded: None,
                holders: BTreeMap::new(),
                last_health: Vec::new(),
            };
            match source.load() {
                Ok(loaded) => {
                    super::run::report(&loaded.warnings);
                    distributor.load(loaded);
                }
                // Agents keep what they run (their cache) until the files are fixed.
                Err(diagnostics) => {
                    super::run::report(&diagnostics);
                    tracing::error!(
                        "the configuration has errors; nothing is published until fixed"
                    );
                }
            }
            let changes = source.watch()?;
            Running::Files(tokio::spawn(reload(source, changes, distributor)))
        }
        Source::Kubernetes => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("cannot configure the Kubernetes client: {e}"))?;
            let lease = LeaseConfig::new(
                options.lease.name,
                options
                    .lease
                    .namespace
                    .unwrap_or_else(|| client.default_namespace().to_owned()),
                options.lease.identity.map_or_else(host_name, Ok)?,
            );
            tracing::info!(
                lease = %lease.name,
                namespace = %lease.namespace,
                identity = %lease.identity,
                "watching the Kubernetes API"
            );
            let config = ControllerConfig {
                translate: options.translate,
                ..ControllerConfig::new(lease)
            };
            let controller = Controller::new(client, publisher.clone(), config);
            Running::Kubernetes(tokio::spawn(controller.run(stopped(stop.clone()))))
        }
    };

    let authorize: Authorize = if options.tls.is_some() {
        Arc::new(|request: &tonic::Request<()>, node: &str| {
            let certs = request
                .peer_certs()
                .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
            let named = certs.first().and_then(|leaf| control_tls::node_of(leaf));
            match named {
                Some(named) if named == node => Ok(()),
                Some(named) => Err(Status::permission_denied(format!(
                    "the client certificate is for node {named:?}, not {node:?}"
                ))),
                None => Err(Status::permission_denied(format!(
                    "the client certificate names no node ({}NAME URI SAN)",
                    control_tls::NODE_URI_PREFIX
                ))),
            }
        })
    } else {
        Arc::new(|_: &tonic::Request<()>, _: &str| Ok(()))
    };

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", options.listen))?;
    let local = listener.local_addr()?;
    let mut server = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)));
    if let Some(tls) = &options.tls {
        server = server.tls_config(tls.server()?)?;
    }
    let incoming = TcpListenerStream::new(listener);
    let closing = publisher.clone();
    let serve = server
        .add_service(publisher.service(authorize))
        .serve_with_incoming_shutdown(incoming, async move {
            stopped(stop).await;
            tracing::info!("shutting down: closing the agents' streams");
            closing.close();
        });
    tracing::info!(addr = %local, tls = options.tls.is_some(), "serving snapshots");
    serve.await?;
    match source {
        Running::Files(reload) => reload.abort(),
        // It gives its Lease up on the same signal; wait for that.
        Running::Kubernetes(controller) => {
            if let Err(e) = controller.await {
                tracing::warn!(error = %e, "the Kubernetes source stopped abnormally");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lock(distributor: &Mutex<Distributor>) -> std::sync::MutexGuard<'_, Distributor> {
    // Every method leaves the distributor consistent; a panic in one cannot corrupt it.
    distributor.lock().unwrap_or_else(|e| e.into_inner())
}

/// How often node health is looked at for VIP placement.
const HEALTH_TICK: Duration = Duration::from_millis(100);

/// Turns the configuration and what the agents report into each node's snapshot.
struct Distributor {
    publisher: Publisher,
    heartbeat: Duration,
    fencing_delay: Duration,
    loaded: Option<Loaded>,
    /// L2 VIP -> the node holding it.
    holders: BTreeMap<String, String>,
    /// The node health the last placement was made with.
    last_health: Vec<(String, NodeHealth)>,
}

impl Distributor {
    fn load(&mut self, loaded: Loaded) {
        self.loaded = Some(loaded);
        let health = self.health();
        self.publish(health);
    }

    /// Places and publishes again if any node's health changed.
    fn health_changed(&mut self) {
        let health = self.health();
        if health != self.last_health {
            self.publish(health);
        }
    }

    /// Every node known from Node objects or from a stream, with its health: healthy while
    /// its agent is connected, ready and heartbeating; suspect once not, until it has been
    /// silent for the fencing delay; fenced after.
    fn health(&self) -> Vec<(String, NodeHealth)> {
        let reports = self.publisher.reports();
        let mut nodes: BTreeSet<&String> = reports.keys().collect();
        if let Some(loaded) = &self.loaded {
            nodes.extend(loaded.node_labels.keys());
        }
        nodes
            .into_iter()
            .map(|name| {
                let health = match reports.get(name) {
                    Some(r)
                        if r.connected && r.ready && r.last_seen.elapsed() < self.heartbeat * 3 =>
                    {
                        NodeHealth::Healthy
                    }
                    Some(r) if r.last_seen.elapsed() < self.fencing_delay => NodeHealth::Suspect,
                    _ => NodeHealth::Fenced,
                };
                (name.clone(), health)
            })
            .collect()
    }

    /// Places the VIPs and publishes each node's snapshot: the part of the configuration its
    /// labels select (everything, when no Gateway is limited to some nodes) and its VIPs.
    /// Nodes nobody knows of get the part that needs no labels, and no VIPs.
    fn publish(&mut self, health: Vec<(String, NodeHealth)>) {
        let Some(loaded) = &self.loaded else {
            return;
        };
        let no_labels = BTreeMap::new();
        let candidates: Vec<NodeCandidate> = health
            .iter()
            .map(|(name, health)| NodeCandidate {
                name: name.clone(),
                labels: loaded.node_labels.get(name).cloned().unwrap_or_default(),
                health: *health,
            })
            .collect();
        let placement = place(&loaded.vips, &candidates, &self.holders);
        for (vip, node) in &placement.l2_holders {
            if self.holders.get(vip) != Some(node) {
                tracing::info!(vip, node, "L2 VIP assigned");
            }
        }
        for vip in &placement.unplaced {
            tracing::warn!(vip, "no healthy node may hold this VIP");
        }
        self.holders = placement.l2_holders.clone();
        self.last_health = health;

        let whole = &loaded.snapshot;
        match self
            .publisher
            .publish_default(&loaded.nodes.snapshot_for(whole, &no_labels))
        {
            Some(version) => tracing::info!(version, "snapshot published"),
            None => tracing::debug!("the default snapshot did not change"),
        }
        for (node, _) in &self.last_health {
            let vips = placement.per_node.get(node);
            if loaded.nodes.is_uniform() && vips.is_none() {
                self.publisher.remove_node(node);
                continue;
            }
            let labels = loaded.node_labels.get(node).unwrap_or(&no_labels);
            let mut snapshot = loaded.nodes.snapshot_for(whole, labels);
            snapshot.vips = vips.cloned().unwrap_or_default();
            if let Some(version) = self.publisher.publish_node(node, &snapshot) {
                tracing::info!(node, version, "node snapshot published");
            }
        }
    }
}

/// The task of the source, once started.
enum Running {
    Files(tokio::task::JoinHandle<()>),
    Kubernetes(tokio::task::JoinHandle<()>),
}

/// Reloads the files on every change and looks at node health every [`HEALTH_TICK`], publishing
/// what they come to. The health check runs apart from the file watcher, whose quiet period a
/// timer in the same loop would keep restarting.
async fn reload(
    mut source: FileSource,
    mut changes: novaedge_k8s::file_source::Changes,
    distributor: Distributor,
) {
    let distributor = Mutex::new(distributor);
    let health = async {
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            lock(&distributor).health_changed();
        }
    };
    let files = async {
        while changes.next(RELOAD_QUIET).await {
            match source.load() {
                Ok(loaded) => {
                    super::run::report(&loaded.warnings);
                    lock(&distributor).load(loaded);
                }
                Err(diagnostics) => {
                    super::run::report(&diagnostics);
                    tracing::error!("configuration has errors; agents keep the last good one");
                }
            }
        }
        tracing::warn!("file watcher stopped; configuration will no longer reload");
        std::future::pending::<()>().await;
    };
    tokio::join!(health, files);
}

/// This machine's name: the Pod's name in a cluster (Kubernetes sets the host name to it).
fn host_name() -> Result<String, super::Error> {
    if let Ok(name) = std::env::var("HOSTNAME")
        && !name.is_empty()
    {
        return Ok(name);
    }
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
        _ => Err("cannot tell this replica's identity: give --identity (or POD_NAME)".into()),
    }
}
