//! Why a set of routes could not be compiled.

/// A route that [`Router::new`](crate::Router::new) refused.
///
/// `route` is the position of the offending route in the sequence given to
/// `Router::new`, counting from 0, so the caller can map it back to the object
/// it came from.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("route #{route}: invalid hostname {hostname:?}: {reason}")]
    InvalidHostname {
        route: usize,
        /// The hostname exactly as given.
        hostname: String,
        reason: &'static str,
    },
    #[error("route #{route}: invalid path {path:?}: a path must start with \"/\"")]
    InvalidPath {
        route: usize,
        /// The path exactly as given.
        path: String,
    },
}
