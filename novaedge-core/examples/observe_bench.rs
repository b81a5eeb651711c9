//! Serves one echo backend through three engines in one process, for `bench/observe.sh`: one
//! with every request observer off (no request id, no metrics, no access log), one with request
//! ids, metrics and a JSON access log to the file named by the first argument, and one with the
//! defaults (request ids only), the baseline that turning on metrics and an access log adds
//! to. Prints `off=PORT on=PORT backend=PORT ids=PORT` and serves until SIGINT, then prints how
//! many requests the metrics counted.
//!
//! A second argument, `HOST:PORT`, sends the engines to that backend instead of one in this
//! process, so that the process's CPU time is the proxy's alone (`bench/observe.sh` runs the
//! backend as another instance of this example). `NOVAEDGE_BENCH_OBSERVE=metrics` (or `log`) turns on only that observer in
//! the second engine, to see what each costs.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use novaedge_core::{AccessLog, AccessLogFormat, Engine, EngineConfig, ObserveConfig};
use novaedge_echo::EchoServer;
use novaedge_snapshot::{
    Backend, BackendRef, ConfigSnapshot, Endpoint, Listener, ListenerProtocol, Route, RouteRule,
    UpstreamProtocol,
};
use prometheus_client::registry::Registry;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn snapshot(backend: SocketAddr) -> ConfigSnapshot {
    ConfigSnapshot {
        version: 1,
        listeners: vec![Listener {
            name: "bench".into(),
            bind: Some(LOCALHOST),
            port: 0,
            protocol: ListenerProtocol::Http,
            tls: None,
            https_redirect_port: None,
        }],
        routes: vec![Route {
            name: "bench/echo".into(),
            listener: "bench".into(),
            hostnames: Vec::new(),
            rules: vec![RouteRule {
                matches: Vec::new(),
                backends: vec![BackendRef {
                    backend: "echo".into(),
                    weight: 1,
                }],
                invalid_backend_weight: 0,
                filters: Default::default(),
            }],
            creation_timestamp: 0,
            dialect: Default::default(),
        }],
        backends: vec![Backend {
            name: "echo".into(),
            protocol: UpstreamProtocol::Http1,
            endpoints: vec![Endpoint {
                address: backend,
                ready: true,
                weight: 1,
            }],
            load_balancing: Default::default(),
            health: Default::default(),
            tls: None,
        }],
        vips: Vec::new(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log_path = std::env::args()
        .nth(1)
        .ok_or("usage: observe_bench ACCESS-LOG-FILE [BACKEND-ADDR]")?;
    // Held for the life of the process when the backend is our own.
    let mut echo = None;
    let backend = match std::env::args().nth(2) {
        Some(addr) => addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("backend address {addr:?}: {e}"))?,
        None => echo
            .insert(EchoServer::start(SocketAddr::new(LOCALHOST, 0), "bench").await?)
            .local_addr(),
    };
    let snapshot = snapshot(backend);

    let off = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        observe: ObserveConfig {
            request_id: false,
            access_log: None,
            tracer: None,
        },
        ..EngineConfig::default()
    });
    off.apply(&snapshot)?;

    let ids = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        ..EngineConfig::default()
    });
    ids.apply(&snapshot)?;

    let mode = std::env::var("NOVAEDGE_BENCH_OBSERVE").unwrap_or_else(|_| "all".into());
    let file = std::fs::File::create(&log_path)?;
    let access_log = matches!(mode.as_str(), "all" | "log")
        .then(|| AccessLog::new(AccessLogFormat::Json, file, AccessLog::DEFAULT_QUEUE))
        .transpose()?;
    let on = Engine::new(EngineConfig {
        default_bind: LOCALHOST,
        observe: ObserveConfig {
            request_id: true,
            access_log: access_log.clone(),
            tracer: None,
        },
        ..EngineConfig::default()
    });
    let mut registry = Registry::default();
    if matches!(mode.as_str(), "all" | "metrics") {
        on.register_metrics(&mut registry);
    }
    on.apply(&snapshot)?;

    let port = |engine: &Engine| engine.local_addr("bench").map_or(0, |a| a.port());
    writeln!(
        std::io::stdout(),
        "off={} on={} backend={} ids={}",
        port(&off),
        port(&on),
        backend.port(),
        port(&ids)
    )?;
    std::io::stdout().flush()?;

    // Until the script says stop.
    tokio::signal::ctrl_c().await?;
    if let Some(log) = &access_log {
        log.flush().await;
        writeln!(
            std::io::stdout(),
            "access log lines dropped: {}",
            log.dropped()
        )?;
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    let requests: f64 = text
        .lines()
        .filter(|l| l.starts_with("novaedge_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    writeln!(std::io::stdout(), "observed requests counted: {requests}")?;
    Ok(())
}
