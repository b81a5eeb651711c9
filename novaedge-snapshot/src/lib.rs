//! The `ConfigSnapshot`: everything one NovaEdge data plane needs, as one versioned value.
//!
//! A snapshot is produced by a translator (Kubernetes objects or files -> snapshot), carried as
//! protobuf (see `proto/novaedge/snapshot/v1/snapshot.proto`, the one definition of the wire
//! format), and applied whole by the engine. This crate owns three things:
//!
//! - [`proto`]: the generated wire types;
//! - the domain types ([`ConfigSnapshot`] and friends): typed, with addresses, header names and
//!   methods already parsed;
//! - validation: [`ConfigSnapshot::validate`] checks cross references and uniqueness, and
//!   [`ConfigSnapshot::decode`] / `TryFrom<proto::ConfigSnapshot>` turn untrusted wire data into
//!   a domain value or a list of errors, each naming the object and field at fault.
//!
//! A snapshot that fails validation is never partially used: callers keep their last good one.
//!
//! For people, [`dump`] shows a snapshot as YAML or JSON, with its secrets redacted.

#![forbid(unsafe_code)]

mod convert;
#[cfg(feature = "distribution")]
pub mod distribution;
pub mod dump;
mod error;
mod filters;
mod health;
mod model;
mod tls;
mod validate;
mod vip;

pub use validate::check_hostname;

pub use error::{FieldError, ValidationErrors};
pub use filters::{
    Cors, HeaderModifier, IpFilter, JWT_ALGORITHMS, JwtAuthentication, JwtKeys, PathModifier,
    RateLimit, RateLimitKey, RequestMirror, RequestRedirect, RetryPolicy, RouteFilters,
    SharedFilters, Timeouts, TokenLocation, UrlRewrite, check_cidr,
};
pub use health::{
    ActiveHealthCheck, CircuitBreakers, DEFAULT_EXPECTED_STATUSES, FailurePercentageEjection,
    HealthPolicy, HealthProbe, OutlierDetection, SuccessRateEjection,
};
pub use model::{
    Backend, BackendRef, ConfigSnapshot, DEFAULT_PANIC_THRESHOLD_PERCENT, Endpoint, HashOn,
    HeaderMatch, LbPolicy, Listener, ListenerProtocol, LoadBalancing, MatchType, PathMatch,
    QueryParamMatch, Route, RouteDialect, RouteMatch, RouteRule, UpstreamProtocol,
};
pub use tls::{ClientAuth, ListenerTls, TlsCertificate, UpstreamTls};
pub use validate::{REGEX_SIZE_LIMIT, check_regex};
pub use vip::{BgpAnnounce, BgpPeer, OspfAnnounce, OspfInterface, OspfNetwork, Vip, VipAnnounce};

/// Types generated from `snapshot.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/novaedge.snapshot.v1.rs"));
}
