//! `novaedge echo`: the echo backend, until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

pub(crate) async fn echo(listen: SocketAddr, name: String) -> Result<ExitCode, super::Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot bind {listen}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, %name, "echo backend listening");
    novaedge_echo::serve(listener, name, super::terminated()).await?;
    Ok(ExitCode::SUCCESS)
}
