//! The subcommands.

pub(crate) mod admin;
pub(crate) mod agent;
pub(crate) mod check;
pub(crate) mod control_tls;
pub(crate) mod controller;
pub(crate) mod crdgen;
pub(crate) mod diff;
pub(crate) mod echo;
pub(crate) mod explain;
pub(crate) mod observe;
pub(crate) mod run;

/// Errors a command reports before exiting non-zero.
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            },
            Err(e) => {
                tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
