//! Why a set of routes could not be compiled.

use std::fmt;

use crate::path::PathError;

/// The part of a [`Route`](crate::Route) an error is about, written the way
/// the field is named in Rust (`hostnames[1]`, `route_match.headers[0]`), so
/// a translator can map it back to the field of the object it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `hostnames[i]`
    Hostname(usize),
    /// `route_match.path`
    Path,
    /// `route_match.headers[i]`
    Header(usize),
    /// `route_match.query_params[i]`
    QueryParam(usize),
    /// `route_match.path` (gRPC), `service`
    GrpcService,
    /// `route_match.path` (gRPC), `method`
    GrpcMethod,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hostname(i) => write!(f, "hostnames[{i}]"),
            Self::Path => f.write_str("route_match.path"),
            Self::Header(i) => write!(f, "route_match.headers[{i}]"),
            Self::QueryParam(i) => write!(f, "route_match.query_params[{i}]"),
            Self::GrpcService => f.write_str("route_match.path.service"),
            Self::GrpcMethod => f.write_str("route_match.path.method"),
        }
    }
}

/// A route that [`Router::new`](crate::Router::new) refused.
///
/// `route` is the position of the offending route in the sequence given to
/// `Router::new`, counting from 0, and `field` the part of it that is wrong,
/// so the caller can point at the object and field it came from.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("route #{route}: {field}: invalid hostname {hostname:?}: {reason}")]
    InvalidHostname {
        route: usize,
        field: Field,
        /// The hostname exactly as given.
        hostname: String,
        reason: &'static str,
    },
    #[error("route #{route}: {field}: invalid path {path:?}: {source}")]
    InvalidPath {
        route: usize,
        field: Field,
        /// The path exactly as given.
        path: String,
        #[source]
        source: PathError,
    },
    #[error("route #{route}: {field}: invalid regular expression {pattern:?}: {source}")]
    InvalidRegex {
        route: usize,
        field: Field,
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("route #{route}: {field}: invalid value {value:?}: {reason}")]
    InvalidValue {
        route: usize,
        field: Field,
        value: String,
        reason: &'static str,
    },
}

impl RouterError {
    /// The position of the offending route in the input.
    pub fn route(&self) -> usize {
        match self {
            Self::InvalidHostname { route, .. }
            | Self::InvalidPath { route, .. }
            | Self::InvalidRegex { route, .. }
            | Self::InvalidValue { route, .. } => *route,
        }
    }

    /// The offending field of that route.
    pub fn field(&self) -> Field {
        match self {
            Self::InvalidHostname { field, .. }
            | Self::InvalidPath { field, .. }
            | Self::InvalidRegex { field, .. }
            | Self::InvalidValue { field, .. } => *field,
        }
    }
}
