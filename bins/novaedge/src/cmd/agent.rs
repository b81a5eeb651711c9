//! `novaedge agent`: the node agent. Receives its node's snapshot from the controller and
//! applies it to the engine; keeps serving the last good snapshot while the controller is away,
//! and across its own restarts from a cache file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use novaedge_core::{Engine, EngineConfig};
use novaedge_snapshot::ConfigSnapshot;
use novaedge_snapshot::distribution::{self, Applier, Backoff, Subscriber, SubscriberConfig};
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
}

/// Applies snapshots to the engine and remembers the last one in the cache file.
struct EngineApplier {
    engine: Engine,
    cache: Option<PathBuf>,
    version: u64,
    digest: Vec<u8>,
}

impl Applier for EngineApplier {
    fn apply(&mut self, snapshot: ConfigSnapshot, digest: Vec<u8>) -> Result<(), String> {
        self.engine.apply(&snapshot).map_err(|e| e.to_string())?;
        self.version = snapshot.version;
        self.digest = digest;
        if let Some(cache) = &self.cache
            && let Err(e) = write_cache(cache, &snapshot)
        {
            // Serving is what matters; a cache that cannot be written only costs a cold start.
            tracing::warn!(cache = %cache.display(), error = %e, "cannot write the snapshot cache");
        }
        Ok(())
    }

    fn current(&self) -> (u64, Vec<u8>) {
        (self.version, self.digest.clone())
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
    let engine = Engine::new(EngineConfig {
        default_bind: options.bind,
        ..EngineConfig::default()
    });
    let mut applier = EngineApplier {
        engine: engine.clone(),
        cache: options.cache.clone(),
        version: 0,
        digest: Vec::new(),
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
    let stream = tokio::spawn(subscriber.run());

    super::terminated().await;
    stream.abort();
    tracing::info!(timeout = ?options.drain_timeout, "draining");
    let report = engine.shutdown(options.drain_timeout).await;
    if !report.drained {
        tracing::warn!("drain timeout reached; remaining connections were cut");
    }
    Ok(ExitCode::SUCCESS)
}
