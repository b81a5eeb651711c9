//! Load balancing for NovaEdge, usable by any Rust proxy: selectors over a changing endpoint set,
//! generic over the endpoint key, and a tower [`Service`](tower::Service) that balances requests
//! over endpoint services.
//!
//! # Model
//!
//! - A **table** is built once from `(endpoint, weight)` pairs and is immutable afterwards; its
//!   [`Selector::pick_with`] chooses an endpoint per request using atomics only, so every worker
//!   thread picks from the same table without locks. The crate never looks inside an endpoint
//!   `E` (an address, a pool handle, a name); hashing tables only ask it for a stable name
//!   ([`EndpointId`]).
//! - Each endpoint's **state** ([`EndpointState`]: health flag, requests in flight, latency
//!   estimate) lives outside the table, shared by `Arc`, so it survives rebuilds.
//! - An [`EndpointSet`] is the changing set of one backend: it keeps the states by key, rebuilds
//!   the table off the request path when membership or weights change, and swaps it in
//!   atomically, as pingora's load balancer does with `ArcSwap`. Health changes flip a flag and
//!   rebuild nothing. A proxy keeps one set per backend across configuration reloads.
//! - [`LbPolicy`] names an algorithm and its parameters, as configuration does, and builds a
//!   [`Table`] of it.
//! - [`Balance`] is the tower integration: a `Service` over an [`EndpointSet`] of endpoint
//!   services, fed by a [`Discover`](tower::discover::Discover) stream through [`discover`].
//!
//! # Algorithms
//!
//! One module each, all implementing [`Selector`]; the module docs explain the algorithm and
//! cite its source.
//!
//! | policy | table | source |
//! |---|---|---|
//! | [`LbPolicy::RoundRobin`] | [`WeightedRoundRobin`] ([`RoundRobin`] without weights) | nginx's smooth weighted round robin |
//! | [`LbPolicy::Random`] | [`Random`] | Walker/Vose alias method |
//! | [`LbPolicy::LeastRequest`] | [`LeastRequest`] | power of two choices (Mitzenmacher 2001), Envoy `LEAST_REQUEST` |
//! | [`LbPolicy::PeakEwma`] | [`PeakEwma`] | Finagle's peak EWMA, tower `load::PeakEwma`, linkerd |
//! | [`LbPolicy::RingHash`] | [`RingHash`] | consistent hashing (Karger et al. 1997), libketama, Envoy `RING_HASH` |
//! | [`LbPolicy::Maglev`] | [`Maglev`] | Eisenbud et al., NSDI 2016; Envoy `MAGLEV` |
//!
//! Hash keys come from the request through [`HashPolicy`] (a header, a cookie, the client IP, a
//! query parameter), computed as Envoy does. Unhealthy endpoints are skipped with a bounded
//! fallback walk, and a panic threshold balances over all endpoints when too few are healthy; see
//! [`Selector`].
//!
//! # Example: a selector
//!
//! ```
//! use std::net::SocketAddr;
//! use novaedge_lb::{EndpointSet, HashPolicy, LbPolicy, PickContext, Selector};
//!
//! let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
//! // One set per backend, kept across reloads; the policy comes from configuration.
//! let backend = EndpointSet::new(LbPolicy::maglev());
//! backend.update([(addr("10.0.0.1:80"), 1), (addr("10.0.0.2:80"), 1), (addr("10.0.0.3:80"), 2)]);
//!
//! // Per request: hash it, pick, count it in flight while it runs.
//! let req = http::Request::get("/").header("x-user", "alice").body(()).unwrap();
//! let peer = "192.0.2.1".parse().unwrap();
//! let hash = HashPolicy::Header(http::HeaderName::from_static("x-user")).hash(&req, peer);
//! let table = backend.load();
//! let picked = table.pick_with(&PickContext::new().with_hash(hash)).expect("endpoints");
//! let endpoint = *picked.endpoint();
//! let in_flight = picked.start();
//! // ... forward the request to `endpoint` ...
//! in_flight.finish(); // records the response time; dropping it instead records nothing
//!
//! // The same key keeps going to the same endpoint...
//! assert_eq!(table.pick_with(&PickContext::new().with_hash(hash)).unwrap().endpoint(), &endpoint);
//! // ...until it is marked down: no rebuild, the next pick falls back to another endpoint.
//! backend.set_healthy(&endpoint, false);
//! let fallback = *backend.load().pick_with(&PickContext::new().with_hash(hash)).unwrap().endpoint();
//! assert_ne!(fallback, endpoint);
//! ```
//!
//! # Example: a tower `Service`
//!
//! ```
//! use std::convert::Infallible;
//! use novaedge_lb::{Balance, EndpointSet, LbPolicy, discover};
//! use tower::discover::Change;
//! use tower::{Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), novaedge_lb::BoxError> {
//! // Endpoint services; in a proxy, clients of connection pools.
//! let endpoint = |name: &'static str| {
//!     service_fn(move |req: String| async move { Ok::<_, Infallible>(format!("{name}: {req}")) })
//! };
//! let set = EndpointSet::new(LbPolicy::least_request());
//! // Discovery feeds the set from any tower `Discover` stream, on its own task.
//! let changes = futures_util::stream::iter([
//!     Ok::<_, Infallible>(Change::Insert("a", endpoint("a"))),
//!     Ok(Change::Insert("b", endpoint("b"))),
//! ]);
//! tokio::spawn(discover(set.clone(), changes)).await??;
//!
//! let mut balance = Balance::new(set.clone());
//! let answer = balance.ready().await?.call("hello".to_owned()).await?;
//! assert!(answer == "a: hello" || answer == "b: hello");
//! // Load and latency were recorded on the endpoint that answered.
//! let who = if answer.starts_with('a') { "a" } else { "b" };
//! assert_eq!(set.state(&who).unwrap().pending(), 0);
//! assert!(set.state(&who).unwrap().rtt_estimate(std::time::Instant::now()).is_some());
//! # Ok(())
//! # }
//! ```
//!
//! `examples/proxy.rs` embeds this crate and `novaedge-router` in a small hyper proxy.
#![forbid(unsafe_code)]

pub mod balanced;
mod cursor;
pub mod endpoint;
pub mod hash;
pub mod least_request;
pub mod maglev;
mod members;
pub mod peak_ewma;
pub mod policy;
pub mod random;
pub mod ring_hash;
mod rng;
pub mod round_robin;
pub mod selector;
pub mod service;
pub mod set;
pub mod weighted_round_robin;

pub use balanced::Balanced;
pub use endpoint::{EndpointState, InFlight};
pub use hash::{EndpointId, HashPolicy, hash_key};
pub use least_request::LeastRequest;
pub use maglev::{Maglev, MaglevSize};
pub use peak_ewma::PeakEwma;
pub use policy::{BuildOptions, LbPolicy, PolicyError, Table};
pub use random::Random;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use selector::{FALLBACK_PROBES, PickContext, Picked, Selector};
pub use service::{
    Balance, BoxError, Clock, NoEndpoint, NoHash, PeerAddr, RequestHash, ResponseFuture,
    SystemClock, discover,
};
pub use set::{EndpointSet, Snapshot, Weighted};
pub use weighted_round_robin::{MAX_SCHEDULE_LEN, WeightedRoundRobin};
