//! `novaedge controller`: translates the configuration and streams each node agent its
//! snapshot. With `--source kubernetes` the objects come from the API server (see
//! `novaedge_k8s::controller`: watchers, leader election, status); with `--source files:DIR`
//! from files (watched), so that the whole controller -> agent system runs without a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use novaedge_k8s::TranslateOptions;
use novaedge_k8s::controller::{
    Controller, ControllerConfig, ControllerMetrics, Distributor, LeaseConfig, PublishAddress,
    lock, watch_health,
};
use novaedge_k8s::file_source::FileSource;
use novaedge_snapshot::distribution::{Authorize, Publisher, PublisherConfig};
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
    /// Written to the status of what is served (`--source kubernetes`).
    pub(crate) publish_addresses: Vec<PublishAddress>,
    pub(crate) admin_addr: Option<SocketAddr>,
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
    let publisher = Publisher::with_config(PublisherConfig {
        heartbeat: options.heartbeat,
        fencing_delay: Some(options.fencing_delay),
    });
    let metrics = ControllerMetrics::default();
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
            if !options.publish_addresses.is_empty() {
                tracing::warn!(
                    "--publish-address is ignored with --source files: there is no API server \
                     to write status to"
                );
            }
            let mut source = FileSource::new(paths).with_options(options.translate);
            let mut distributor = Distributor::new(publisher.clone());
            match source.load() {
                Ok(loaded) => {
                    super::run::report(&loaded.warnings);
                    distributor.load(loaded.into());
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
            Running::Files(tokio::spawn(reload(
                source,
                changes,
                distributor,
                metrics.clone(),
            )))
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
                metrics: metrics.clone(),
                publish_addresses: options.publish_addresses,
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

    if let Some(addr) = options.admin_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--admin-addr {addr}: {e}"))?;
        let admin = admin(&publisher, &metrics);
        tracing::info!(addr = %listener.local_addr()?, "admin listener");
        tokio::spawn(admin.serve(listener, stopped(stop.clone())));
    }

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

/// The task of the source, once started.
enum Running {
    Files(tokio::task::JoinHandle<()>),
    Kubernetes(tokio::task::JoinHandle<()>),
}

/// Reloads the files on every change and looks at node health every `HEALTH_TICK`,
/// publishing what they come to. The health check runs apart from the file watcher, whose quiet
/// period a timer in the same loop would keep restarting.
async fn reload(
    mut source: FileSource,
    mut changes: novaedge_k8s::file_source::Changes,
    distributor: Distributor,
    metrics: ControllerMetrics,
) {
    let distributor = Mutex::new(distributor);
    let files = async {
        while changes.next(RELOAD_QUIET).await {
            let started = std::time::Instant::now();
            match source.load() {
                Ok(loaded) => {
                    super::run::report(&loaded.warnings);
                    lock(&distributor).load(loaded.into());
                    metrics.reconciled(started.elapsed());
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
    tokio::join!(watch_health(&distributor), files);
}

/// The controller's admin listener: readiness is having a snapshot to serve; `/agents` is what
/// each agent said on its stream.
fn admin(publisher: &Publisher, metrics: &ControllerMetrics) -> novaedge_admin::AdminBuilder {
    let mut admin = novaedge_admin::Admin::builder();
    publisher.register_metrics(admin.registry_mut());
    metrics.register(admin.registry_mut());
    let ready = publisher.clone();
    let agents = publisher.clone();
    let dump = publisher.clone();
    admin
        .ready(move || {
            if ready.has_snapshot() {
                Ok(())
            } else {
                Err("no snapshot to serve yet (configuration not read, or invalid)".into())
            }
        })
        .view("config_dump", move || {
            // The default snapshot (what a node without VIPs or node-selected Gateways runs),
            // and each connected node's own version; secrets redacted.
            let snapshot = dump.snapshot(None);
            let nodes: serde_json::Map<String, serde_json::Value> = dump
                .reports()
                .into_keys()
                .map(|node| {
                    let version = dump.node_version(&node);
                    (node, serde_json::json!(version))
                })
                .collect();
            async move {
                serde_json::json!({
                    "default": snapshot.map(|s| serde_json::to_value(&s).unwrap_or_default()),
                    "node_versions": nodes,
                })
            }
        })
        .view("agents", move || {
            let reports = agents.reports();
            async move {
                let agents: serde_json::Map<String, serde_json::Value> = reports
                    .into_iter()
                    .map(|(node, r)| {
                        let value = serde_json::json!({
                            "connected": r.connected,
                            "last_seen_ms_ago": u64::try_from(r.last_seen.elapsed().as_millis())
                                .unwrap_or(u64::MAX),
                            "ready": r.ready,
                            "sent": r.sent,
                            "acked": r.acked,
                            "nacked": r.nacked.map(|(version, error)| {
                                serde_json::json!({"version": version, "error": error})
                            }),
                            "held_l2_vips": r.held_vips,
                        });
                        (node, value)
                    })
                    .collect();
                serde_json::Value::Object(agents)
            }
        })
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
