//! Snapshot distribution: the gRPC service over which the controller streams each node agent
//! its snapshot, and the agent ACKs or NACKs it (`proto/novaedge/distribution/v1`).
//!
//! - [`Publisher`] (controller side) holds the snapshot of every node, sends a node's snapshot
//!   only when its content changed, and keeps what each node said: the version it applied or
//!   refused and when it was last heard of. [`Publisher::service`] is the tonic service.
//! - [`Subscriber`] (agent side) keeps one stream open to the controller, reconnecting with
//!   exponential backoff and jitter, hands each snapshot to an [`Applier`] and reports the
//!   outcome, and says on every (re)connection what it already runs, so that nothing is sent
//!   twice.
//!
//! Transport security is the caller's: the server and the endpoint are plain tonic, so mutual
//! TLS is configured around them, and [`Publisher::service`] takes an [`Authorize`] check
//! that ties the node named in a stream to the peer's identity.
//!
//! Versions: the publisher stamps each changed snapshot with a version above every version it
//! stamped before and at least the current Unix time in milliseconds, so versions keep growing
//! across controller restarts. What is compared to decide whether to send is the [`digest`] of
//! the content, which leaves the version out.

mod client;
mod server;

pub use client::{Applier, Backoff, Contact, Subscriber, SubscriberConfig};
pub use server::{Authorize, NodeReport, Publisher, PublisherConfig};

use crate::ConfigSnapshot;

/// Types and gRPC stubs generated from `distribution.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/novaedge.distribution.v1.rs"));
}

/// A digest of a snapshot's content, version excluded: equal digests, same configuration.
pub fn digest(snapshot: &ConfigSnapshot) -> [u8; 16] {
    use prost::Message;
    let mut wire = crate::proto::ConfigSnapshot::from(snapshot);
    wire.version = 0;
    xxhash_rust::xxh3::xxh3_128(&wire.encode_to_vec()).to_be_bytes()
}
