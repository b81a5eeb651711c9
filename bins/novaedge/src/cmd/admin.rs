//! The admin listener of `novaedge run` and `novaedge agent` (`--admin-addr`, default
//! 127.0.0.1:9901): `/live`, `/ready`, `/metrics`, and the views `/config_dump` (the snapshot
//! in force, secrets redacted), `/endpoints` (backends, endpoints, health, load, outlier
//! ejections) and `/vips` (the VIPs held and each driver's state, BGP sessions included).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use novaedge_admin::{Admin, AdminBuilder};
use novaedge_core::{BackendView, Engine};
use novaedge_snapshot::ConfigSnapshot;
use novaedge_vip::manager::VipManager;
use novaedge_vip::{DriverStatus, SessionState, VipState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Where the admin listener listens when `--admin-addr` is not given.
pub(crate) const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);

/// The snapshot in force, for `/config_dump` and readiness.
pub(crate) type Current = watch::Receiver<Option<Arc<ConfigSnapshot>>>;

/// The admin listener of a node: ready once a snapshot is applied, until `draining`.
pub(crate) fn node_admin(
    engine: &Engine,
    current: Current,
    vips: &VipManager,
    draining: Arc<AtomicBool>,
) -> AdminBuilder {
    let mut admin = Admin::builder();
    engine.register_metrics(admin.registry_mut());
    let version = Gauge::<i64>::default();
    admin.registry_mut().register(
        "novaedge_snapshot_version",
        "Version of the snapshot in force",
        version.clone(),
    );
    admin
        .registry_mut()
        .register_collector(Box::new(EndpointHealth {
            engine: engine.clone(),
        }));
    let mut watched = current.clone();
    tokio::spawn(async move {
        loop {
            let v = watched
                .borrow_and_update()
                .as_ref()
                .map_or(0, |s| s.version);
            version.set(i64::try_from(v).unwrap_or(i64::MAX));
            if watched.changed().await.is_err() {
                return;
            }
        }
    });
    let ready = current.clone();
    let dump = current;
    let engine = engine.clone();
    let vips = vips.clone();
    admin
        .ready(move || {
            if draining.load(Ordering::Relaxed) {
                return Err("draining".into());
            }
            match ready.borrow().as_ref() {
                Some(_) => Ok(()),
                None => Err("no snapshot applied yet".into()),
            }
        })
        .view("config_dump", move || {
            let snapshot = dump.borrow().clone();
            async move {
                snapshot
                    .map(|s| serde_json::to_value(&*s).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null)
            }
        })
        .view("endpoints", move || {
            let backends = engine.backends();
            async move { Value::Array(backends.iter().map(backend_json).collect()) }
        })
        .view("vips", move || {
            let vips = vips.clone();
            async move { vips_json(&vips).await }
        })
}

/// Serves `admin` on `addr` until `stop`. An explicit address that cannot be bound is an error;
/// the default one only gets a warning (another NovaEdge on this machine may have it).
pub(crate) async fn start(
    admin: AdminBuilder,
    addr: Option<SocketAddr>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), super::Error> {
    let listener = match tokio::net::TcpListener::bind(addr.unwrap_or(DEFAULT_ADDR)).await {
        Ok(listener) => listener,
        Err(e) if addr.is_none() => {
            tracing::warn!(addr = %DEFAULT_ADDR, error = %e,
                "admin listener not started (give --admin-addr to choose another address)");
            return Ok(());
        }
        Err(e) => return Err(format!("--admin-addr {}: {e}", addr.unwrap_or(DEFAULT_ADDR)).into()),
    };
    tracing::info!(addr = %listener.local_addr()?, "admin listener");
    tokio::spawn(admin.serve(listener, stop));
    Ok(())
}

/// `novaedge_backend_endpoints{backend, health}`, read from the engine at each scrape.
#[derive(Debug)]
struct EndpointHealth {
    engine: Engine,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    backend: String,
    health: &'static str,
}

impl Collector for EndpointHealth {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let family = Family::<EndpointLabels, Gauge>::default();
        for backend in self.engine.backends() {
            for health in ["healthy", "unhealthy"] {
                let n = backend
                    .endpoints
                    .iter()
                    .filter(|e| e.healthy == (health == "healthy"))
                    .count();
                family
                    .get_or_create(&EndpointLabels {
                        backend: backend.name.clone(),
                        health,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let metric = encoder.encode_descriptor(
            "novaedge_backend_endpoints",
            "Endpoints of each backend the balancer sends traffic to (healthy) or not",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

fn backend_json(b: &BackendView) -> Value {
    json!({
        "name": b.name,
        "policy": b.policy,
        "endpoints": b.endpoints.iter().map(|e| json!({
            "address": e.address.to_string(),
            "weight": e.weight,
            "healthy": e.healthy,
            "pending": e.pending,
            "rtt_estimate_ms": e.rtt_estimate.map(|d| d.as_secs_f64() * 1000.0),
            "ejected_for_ms": e.ejected_for.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })).collect::<Vec<_>>(),
    })
}

async fn vips_json(vips: &VipManager) -> Value {
    let drivers: Vec<Value> = vips
        .statuses()
        .await
        .iter()
        .map(|(name, status)| driver_json(name, status))
        .collect();
    json!({
        "held_l2": vips.held_l2(),
        "problems": vips.problems(),
        "drivers": drivers,
    })
}

fn driver_json(name: &str, s: &DriverStatus) -> Value {
    json!({
        "driver": name,
        "vips": s.vips.iter().map(|(ip, state)| json!({
            "address": ip.to_string(),
            "state": match state {
                VipState::Pending => "pending".to_owned(),
                VipState::Active { peers } => format!("active ({peers})"),
            },
            "l2": s.l2.get(ip).map(|l| json!({
                "interface": l.interface,
                "added": l.added,
                "pre_existing": l.pre_existing,
                "announcements": l.announcements,
                "last_error": l.last_error,
            })),
        })).collect::<Vec<_>>(),
        "peers": s.peers.iter().map(|p| json!({
            "address": p.addr.to_string(),
            "remote_as": p.remote_as,
            "state": session_state(p.state),
            "hold_time": p.hold_time,
            "established_count": p.established_count,
            "announced": p.announced.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "last_error": p.last_error,
        })).collect::<Vec<_>>(),
        "ospf": s.ospf.iter().map(|i| json!({
            "interface": i.name,
            "address": format!("{}/{}", i.address, i.prefix_len),
            "state": format!("{:?}", i.state),
            "dr": i.dr.to_string(),
            "bdr": i.bdr.to_string(),
            "neighbors": i.neighbors.iter().map(|n| json!({
                "router_id": n.router_id.to_string(),
                "address": n.address.to_string(),
                "state": format!("{:?}", n.state),
                "priority": n.priority,
            })).collect::<Vec<_>>(),
            "last_problem": i.last_problem,
        })).collect::<Vec<_>>(),
        "warnings": s.warnings,
        "shut_down": s.shut_down,
    })
}

fn session_state(s: SessionState) -> &'static str {
    match s {
        SessionState::Idle => "idle",
        SessionState::Connect => "connect",
        SessionState::Active => "active",
        SessionState::OpenSent => "open_sent",
        SessionState::OpenConfirm => "open_confirm",
        SessionState::Established => "established",
    }
}
