//! The NovaEdge data plane.
//!
//! An [`Engine`] owns the listening sockets, the upstream connection pools and the current
//! runtime: routers, backends and balancers compiled from a
//! [`ConfigSnapshot`](novaedge_snapshot::ConfigSnapshot). [`Engine::apply`] compiles a new
//! runtime completely, binds any new sockets, and then swaps the runtime in with one atomic
//! pointer store:
//!
//! - a request that already picked its route finishes on the runtime it started on;
//! - sockets of listeners that stay are never closed, so reloads cut no client connection, and
//!   WebSockets keep going;
//! - upstream pools are shared by all runtimes, so connections to endpoints that stay are reused,
//!   and those to removed endpoints drain: in-flight requests finish, idle connections expire;
//! - a snapshot that fails validation or compilation, or whose sockets cannot be bound, changes
//!   nothing: the last good runtime keeps serving.
//!
//! Clients speak HTTP/1.1 or HTTP/2 with prior knowledge on the same port (told apart by the
//! connection preface). Upstreams speak HTTP/1.1 or h2c per backend; gRPC is HTTP/2 end to end
//! with trailers; HTTP/1.1 upgrades (WebSocket) are spliced byte for byte after the 101.

#![forbid(unsafe_code)]

mod body;
mod config;
mod engine;
mod error;
mod headers;
mod health;
mod listener;
mod proxy;
mod runtime;
mod upstream;

pub use config::EngineConfig;
pub use engine::{ApplyError, Engine, ShutdownReport};
pub use error::OVERLOADED_HEADER;
pub use runtime::CompileError;
