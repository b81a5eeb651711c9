//! Engine settings that come from the process, not from the snapshot.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::observe::ObserveConfig;

/// Process-level settings for an [`Engine`](crate::Engine).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Address that listeners without their own bind address use.
    pub default_bind: IpAddr,
    /// How long to wait for a TCP connection to an upstream endpoint.
    pub connect_timeout: Duration,
    /// Idle upstream connections older than this are closed.
    pub upstream_idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per upstream endpoint; more are closed.
    pub max_idle_per_endpoint: usize,
    /// How long a client has to send a request head on HTTP/1.1.
    pub header_read_timeout: Duration,
    /// Pending-connection queue length of listening sockets.
    pub listen_backlog: i32,
    /// How long a client has to complete a TLS handshake on an HTTPS listener.
    pub tls_handshake_timeout: Duration,
    /// Request ids, access logs and request spans ([`ObserveConfig`]); metrics are turned on
    /// by [`Engine::register_metrics`](crate::Engine::register_metrics).
    pub observe: ObserveConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connect_timeout: Duration::from_secs(5),
            upstream_idle_timeout: Duration::from_secs(60),
            max_idle_per_endpoint: 256,
            header_read_timeout: Duration::from_secs(30),
            listen_backlog: 1024,
            tls_handshake_timeout: Duration::from_secs(10),
            observe: ObserveConfig::default(),
        }
    }
}
