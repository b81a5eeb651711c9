//! `novaedge run`: the file source feeding the engine, reloading on change, draining on SIGTERM.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use novaedge_core::{Engine, EngineConfig};
use novaedge_echo::EchoServer;
use novaedge_k8s::file_source::FileSource;
use novaedge_k8s::{Diagnostic, TranslateOptions};
use novaedge_snapshot::{ConfigSnapshot, Vip};

/// How long the files must be quiet after a change before they are read again.
const RELOAD_QUIET: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) paths: Vec<PathBuf>,
    /// Translation settings (the Ingress ports).
    pub(crate) translate: TranslateOptions,
    pub(crate) bind: IpAddr,
    pub(crate) demo_backends: bool,
    pub(crate) drain_timeout: Duration,
    pub(crate) vip: super::agent::VipOptions,
    /// `None`: the default address, and only a warning if it is taken.
    pub(crate) admin_addr: Option<std::net::SocketAddr>,
    pub(crate) observe: super::observe::ObserveOptions,
    /// The engine's settings from the command line; `default_bind` and `observe` are set here.
    pub(crate) engine: EngineConfig,
}

pub(crate) async fn run(options: Options) -> Result<ExitCode, super::Error> {
    let mut source = FileSource::new(options.paths).with_options(options.translate);
    let first = match source.load() {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            report(&diagnostics);
            return Err("the configuration has errors; nothing is served".into());
        }
    };
    report(&first.warnings);

    // Held until exit: dropping an EchoServer stops it.
    let _demo = if options.demo_backends {
        start_demo_backends(&first.snapshot).await?
    } else {
        Vec::new()
    };

    let observability = options.observe.start()?;
    let engine = Engine::new(EngineConfig {
        default_bind: options.bind,
        observe: observability.config.clone(),
        ..options.engine
    });
    engine.apply(&first.snapshot)?;
    // One machine holds every ProxyVIP of the files (node selectors have no nodes to pick
    // from here), L2 ones included: there is no other node to fence against.
    let vips = options.vip.manager();
    let mut current_vips = vip_list(&first.vips);
    vips.set(&current_vips, true).await;
    // One copy of the snapshot in force, shared with the admin listener: at ten thousand
    // routes a snapshot is tens of MiB.
    let mut current = Arc::new(first.snapshot);
    let (in_force, in_force_rx) = watch::channel(Some(current.clone()));
    let draining = Arc::new(AtomicBool::new(false));
    let admin = super::admin::node_admin(&engine, in_force_rx, &vips, draining.clone());
    super::admin::start(admin, options.admin_addr, std::future::pending()).await?;
    let mut changes = source.watch()?;
    tracing::info!(paths = ?source.paths(), "watching for changes");

    let terminated = super::terminated();
    tokio::pin!(terminated);
    loop {
        tokio::select! {
            _ = &mut terminated => break,
            changed = changes.next(RELOAD_QUIET) => {
                if !changed {
                    tracing::warn!("file watcher stopped; configuration will no longer reload");
                    terminated.as_mut().await;
                    break;
                }
                if let Some(new_vips) = reload(&mut source, &engine, &mut current) {
                    in_force.send_if_modified(|s| {
                        let changed = !s.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current));
                        if changed {
                            *s = Some(current.clone());
                        }
                        changed
                    });
                    if new_vips != current_vips {
                        vips.set(&new_vips, true).await;
                        current_vips = new_vips;
                    }
                }
            }
        }
    }

    // VIPs go first, so that new traffic moves elsewhere while this machine drains.
    draining.store(true, Ordering::Relaxed);
    vips.shutdown().await;
    tracing::info!(timeout = ?options.drain_timeout, "draining");
    let report = engine.shutdown(options.drain_timeout).await;
    if report.drained {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain timeout reached; remaining connections were cut");
    }
    observability.finish().await;
    Ok(ExitCode::SUCCESS)
}

/// Loads the files again and applies the result if it differs; on any error the running
/// configuration (VIPs included) stays. Returns the VIPs of a configuration now in force.
fn reload(
    source: &mut FileSource,
    engine: &Engine,
    current: &mut Arc<ConfigSnapshot>,
) -> Option<Vec<Vip>> {
    let loaded = match source.load() {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            report(&diagnostics);
            tracing::error!(
                serving = current.version,
                "configuration has errors; keeping the last good one"
            );
            return None;
        }
    };
    report(&loaded.warnings);
    let vips = vip_list(&loaded.vips);
    if loaded.snapshot.same_config(current) {
        tracing::debug!("the configuration (VIPs aside) did not change");
        return Some(vips);
    }
    match engine.apply(&loaded.snapshot) {
        Ok(()) => {
            *current = Arc::new(loaded.snapshot);
            Some(vips)
        }
        Err(e) => {
            tracing::error!(
                serving = current.version,
                error = %e,
                "configuration rejected; keeping the last good one"
            );
            None
        }
    }
}

fn vip_list(scoped: &[novaedge_k8s::placement::ScopedVip]) -> Vec<Vip> {
    scoped.iter().map(|s| s.vip.clone()).collect()
}

pub(crate) fn report(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        if d.is_error() {
            tracing::error!("{d}");
        } else {
            tracing::warn!("{d}");
        }
    }
}

/// An echo server on every loopback endpoint the configuration names, named after its (first)
/// backend. Two backends can share endpoints: a Service port used by both an HTTPRoute and a
/// GRPCRoute is an HTTP/1.1 and an h2c backend.
async fn start_demo_backends(snapshot: &ConfigSnapshot) -> Result<Vec<EchoServer>, super::Error> {
    let mut servers = Vec::new();
    let mut started = std::collections::HashSet::new();
    for backend in &snapshot.backends {
        for (i, endpoint) in backend.endpoints.iter().enumerate() {
            if !endpoint.address.ip().is_loopback() || !started.insert(endpoint.address) {
                continue;
            }
            let name = format!("{}#{i}", backend.name);
            let server = EchoServer::start(endpoint.address, name.clone())
                .await
                .map_err(|e| format!("demo backend {name} on {}: {e}", endpoint.address))?;
            tracing::info!(backend = %name, addr = %server.local_addr(), "demo backend started");
            servers.push(server);
        }
    }
    if servers.is_empty() {
        tracing::warn!("--demo-backends: no loopback endpoint in the configuration");
    }
    Ok(servers)
}
