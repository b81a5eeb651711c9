//! `novaedge agent`: the node agent. Receives its node's snapshot from the controller and
//! applies it to the engine; keeps serving the last good snapshot while the controller is away,
//! and across its own restarts from a cache file. Holds the VIPs its snapshot assigns to the
//! node.
//!
//! # L2 VIPs and the controller
//!
//! The controller gives a silent node's L2 VIPs to another node once the node has been silent
//! for its fencing delay. So that two nodes never answer for one address, the agent holds L2
//! VIPs only while its contact with the controller is fresh: until the fencing delay, less a
//! margin ([`l2_margin`]), after it sent the last heartbeat the controller answered. After a
//! start (even from the cache) it holds none until the controller has answered once. BGP VIPs,
//! which several nodes announce at once, do not wait for the controller.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use novaedge_core::{Engine, EngineConfig};
use novaedge_snapshot::distribution::{
    self, Applier, Backoff, Contact, Subscriber, SubscriberConfig,
};
use novaedge_snapshot::{ConfigSnapshot, Vip};
use novaedge_vip::manager::{ManagerConfig, VipManager};
use tokio::sync::watch;
use tonic::transport::Endpoint;

use super::control_tls::TlsFiles;

#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) controller: String,
    pub(crate) node: String,
    /// `None`: plaintext (only with `--insecure`).
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) controller_name: String,
    pub(crate) cache: Option<PathBuf>,
    pub(crate) bind: IpAddr,
    pub(crate) drain_timeout: Duration,
    pub(crate) vip: VipOptions,
    /// `None`: the default address, and only a warning if it is taken.
    pub(crate) admin_addr: Option<std::net::SocketAddr>,
    pub(crate) observe: super::observe::ObserveOptions,
    /// The engine's settings from the command line; `default_bind` and `observe` are set here.
    pub(crate) engine: EngineConfig,
}

/// How the agent holds VIPs.
#[derive(Debug, Clone)]
pub(crate) struct VipOptions {
    /// Valid lifetime of L2 VIP addresses (the kernel drops them this long after the agent
    /// stops refreshing them, e.g. when it is killed).
    pub(crate) l2_lease: Duration,
    /// BGP identifier for VIPs that give none.
    pub(crate) router_id: Option<Ipv4Addr>,
    /// Set `arp_ignore=1`/`arp_announce=2` on L2 VIP interfaces.
    pub(crate) set_arp_sysctls: bool,
}

impl VipOptions {
    pub(crate) fn manager(&self) -> VipManager {
        VipManager::new(ManagerConfig {
            l2_lease: self.l2_lease,
            router_id: self.router_id,
            set_arp_sysctls: self.set_arp_sysctls,
            ..ManagerConfig::default()
        })
    }
}

/// Applies snapshots to the engine, hands their VIPs to the VIP task, and remembers the last
/// snapshot in the cache file.
struct EngineApplier {
    engine: Engine,
    cache: Option<PathBuf>,
    version: u64,
    digest: Vec<u8>,
    vips: watch::Sender<Vec<Vip>>,
    manager: VipManager,
    /// The snapshot in force, for the admin listener.
    current: watch::Sender<Option<Arc<ConfigSnapshot>>>,
}

impl Applier for EngineApplier {
    fn apply(&mut self, snapshot: ConfigSnapshot, digest: Vec<u8>) -> Result<(), String> {
        self.engine.apply(&snapshot).map_err(|e| e.to_string())?;
        self.vips.send_if_modified(|vips| {
            let changed = *vips != snapshot.vips;
            if changed {
                vips.clone_from(&snapshot.vips);
            }
            changed
        });
        self.version = snapshot.version;
        self.digest = digest;
        if let Some(cache) = &self.cache
            && let Err(e) = write_cache(cache, &snapshot)
        {
            // Serving is what matters; a cache that cannot be written only costs a cold start.
            tracing::warn!(cache = %cache.display(), error = %e, "cannot write the snapshot cache");
        }
        self.current.send_replace(Some(Arc::new(snapshot)));
        Ok(())
    }

    fn current(&self) -> (u64, Vec<u8>) {
        (self.version, self.digest.clone())
    }

    fn held_vips(&self) -> Vec<String> {
        self.manager.held_l2()
    }
}

/// How long before the controller's fencing delay runs out the agent drops its L2 VIPs: a
/// fifth of the delay, at least 100 ms (removing an address takes a few milliseconds).
pub(crate) fn l2_margin(fencing_delay: Duration) -> Duration {
    (fencing_delay / 5).max(Duration::from_millis(100))
}

/// Holds the VIPs of the snapshot in force; L2 ones only while the contact with the controller
/// allows (see the module docs).
async fn hold_vips(
    manager: VipManager,
    mut desired: watch::Receiver<Vec<Vip>>,
    mut contact: watch::Receiver<Contact>,
) {
    let mut last: Option<(Vec<Vip>, bool)> = None;
    loop {
        let vips = desired.borrow_and_update().clone();
        let c = *contact.borrow_and_update();
        let now = tokio::time::Instant::now();
        let (allowed, until) = match c.fencing_delay {
            // This controller never moves L2 VIPs: hold them once it has been heard from.
            None => (c.confirmed.is_some(), None),
            Some(delay) => match c.l2_deadline(l2_margin(delay)) {
                Some(deadline) if deadline > now => (true, Some(deadline)),
                _ => (false, None),
            },
        };
        let was_allowed = last.as_ref().map(|(_, a)| *a);
        if last
            .as_ref()
            .is_none_or(|(v, a)| *v != vips || *a != allowed)
        {
            let has_l2 = vips
                .iter()
                .any(|v| matches!(v.announce, novaedge_snapshot::VipAnnounce::L2 { .. }));
            match (was_allowed, allowed) {
                (Some(true), false) if has_l2 => tracing::warn!(
                    "no answer from the controller within the fencing delay: dropping L2 VIPs"
                ),
                (None, false) if has_l2 => {
                    tracing::info!("L2 VIPs wait for the controller's first answer")
                }
                (Some(false), true) if has_l2 => {
                    tracing::info!("the controller answers again: holding L2 VIPs")
                }
                _ => {}
            }
            manager.set(&vips, allowed).await;
            last = Some((vips, allowed));
        }
        let expiry = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            changed = contact.changed() => if changed.is_err() { return },
            () = expiry => {}
        }
    }
}

/// Writes the snapshot next to the cache file, then renames it over: a crash never leaves a
/// torn cache.
fn write_cache(path: &Path, snapshot: &ConfigSnapshot) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, snapshot.encode_to_vec())?;
    std::fs::rename(&tmp, path)
}

pub(crate) async fn agent(options: Options) -> Result<ExitCode, super::Error> {
    let observability = options.observe.start()?;
    let engine = Engine::new(EngineConfig {
        default_bind: options.bind,
        observe: observability.config.clone(),
        ..options.engine
    });
    let manager = options.vip.manager();
    let (vips_tx, vips) = watch::channel(Vec::new());
    let (current_tx, current) = watch::channel(None);
    let draining = Arc::new(AtomicBool::new(false));
    let admin = super::admin::node_admin(&engine, current, &manager, draining.clone());
    super::admin::start(admin, options.admin_addr, std::future::pending()).await?;
    let mut applier = EngineApplier {
        engine: engine.clone(),
        cache: options.cache.clone(),
        version: 0,
        digest: Vec::new(),
        vips: vips_tx,
        manager: manager.clone(),
        current: current_tx,
    };
    if let Some(cache) = &options.cache {
        match std::fs::read(cache) {
            Ok(bytes) => match ConfigSnapshot::decode(&bytes) {
                Ok(snapshot) => {
                    let digest = distribution::digest(&snapshot).to_vec();
                    let version = snapshot.version;
                    match applier.apply(snapshot, digest) {
                        Ok(()) => tracing::info!(version, "serving the cached snapshot"),
                        Err(e) => tracing::warn!(error = e, "the cached snapshot does not apply"),
                    }
                }
                Err(e) => {
                    tracing::warn!(cache = %cache.display(), error = %e, "ignoring an invalid snapshot cache")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(cache = %cache.display(), error = %e, "cannot read the snapshot cache")
            }
        }
    }

    let mut endpoint = Endpoint::from_shared(options.controller.clone())
        .map_err(|e| format!("--controller {}: {e}", options.controller))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(tls) = &options.tls {
        endpoint = endpoint.tls_config(tls.client(&options.controller_name)?)?;
    }
    let subscriber = Subscriber::new(
        SubscriberConfig {
            endpoint,
            node: options.node.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            backoff: Backoff::default(),
        },
        applier,
    );
    tracing::info!(
        node = options.node,
        controller = options.controller,
        "agent started"
    );
    let vip_task = tokio::spawn(hold_vips(manager.clone(), vips, subscriber.contact()));
    let stream = tokio::spawn(subscriber.run());

    super::terminated().await;
    draining.store(true, Ordering::Relaxed);
    stream.abort();
    vip_task.abort();
    // VIPs go first, so that new traffic moves to other nodes while this one drains.
    manager.shutdown().await;
    tracing::info!(timeout = ?options.drain_timeout, "draining");
    let report = engine.shutdown(options.drain_timeout).await;
    if !report.drained {
        tracing::warn!("drain timeout reached; remaining connections were cut");
    }
    observability.finish().await;
    Ok(ExitCode::SUCCESS)
}
