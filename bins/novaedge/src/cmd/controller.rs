//! `novaedge controller`: translates the configuration and streams each node agent its
//! snapshot. With `--source files:DIR` the objects come from files (watched), so the whole
//! controller -> agent system runs without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use novaedge_k8s::TranslateOptions;
use novaedge_k8s::file_source::{FileSource, Loaded};
use novaedge_snapshot::distribution::{Authorize, Publisher};
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
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("files", paths)) if !paths.is_empty() => {
                Ok(Source::Files(paths.split(',').map(PathBuf::from).collect()))
            }
            _ => Err(format!(
                "{s:?}: use files:PATH[,PATH...] (the Kubernetes API source is not built yet)"
            )),
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
    pub(crate) translate: TranslateOptions,
}

pub(crate) async fn controller(options: Options) -> Result<ExitCode, super::Error> {
    let Source::Files(paths) = options.source;
    let mut source = FileSource::new(paths).with_options(options.translate);
    let publisher = Publisher::new(options.heartbeat);
    match source.load() {
        Ok(loaded) => {
            super::run::report(&loaded.warnings);
            publish(&publisher, &loaded);
        }
        // Agents keep what they run (their cache) until the files are fixed.
        Err(diagnostics) => {
            super::run::report(&diagnostics);
            tracing::error!("the configuration has errors; nothing is published until fixed");
        }
    }
    let mut changes = source.watch()?;

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
            super::terminated().await;
            tracing::info!("shutting down: closing the agents' streams");
            closing.close();
        });
    tracing::info!(addr = %local, tls = options.tls.is_some(), "serving snapshots");
    let serve = tokio::spawn(serve);

    let reload = async {
        while changes.next(RELOAD_QUIET).await {
            match source.load() {
                Ok(loaded) => {
                    super::run::report(&loaded.warnings);
                    publish(&publisher, &loaded);
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
    tokio::select! {
        served = serve => served??,
        () = reload => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes each node's snapshot: the whole snapshot to every node when no Gateway is limited
/// to some nodes; otherwise, to each node described by a Node object (labels) or connected, the
/// part that selects it, and to others the part that needs no labels.
fn publish(publisher: &Publisher, loaded: &Loaded) {
    let no_labels = BTreeMap::new();
    let whole = &loaded.snapshot;
    match publisher.publish_default(&loaded.nodes.snapshot_for(whole, &no_labels)) {
        Some(version) => tracing::info!(version, "snapshot published"),
        None => tracing::debug!("files changed but the configuration did not"),
    }
    let mut nodes: BTreeSet<String> = loaded.node_labels.keys().cloned().collect();
    nodes.extend(publisher.reports().into_keys());
    for node in nodes {
        if loaded.nodes.is_uniform() {
            publisher.remove_node(&node);
            continue;
        }
        let labels = loaded.node_labels.get(&node).unwrap_or(&no_labels);
        let snapshot = loaded.nodes.snapshot_for(whole, labels);
        if let Some(version) = publisher.publish_node(&node, &snapshot) {
            tracing::info!(node, version, "node snapshot published");
        }
    }
}
