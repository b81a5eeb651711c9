//! A plain linear matcher with exactly the semantics of [`Router`], for
//! differential testing.
//!
//! [`LinearRouter`] compiles routes the same way (so the two agree on what a
//! single route matches) but finds the best one the obvious way: it tests
//! every route's hostnames against the request host by string comparison,
//! tests every route's conditions, and takes the minimum of the precedence
//! order. It has none of the router's buckets, indexes or pruning, so any
//! disagreement between the two is a bug in those. The fuzz target and the
//! property tests compare them on random route sets and requests.
//!
//! It is correct but slow (every lookup reads every route): do not serve
//! traffic with it.
//!
//! [`Router`]: crate::Router

use std::cmp::Reverse;

use http::{HeaderMap, Method};

use crate::error::RouterError;
use crate::host::{Hostname, normalize_request_host, wildcard_matches};
use crate::matcher::{
    CompiledRoute, HostRank, HostnameCache, Key, RegexBuild, Regexes, RequestParts,
};
use crate::route::{Dialect, Route};

/// Every route in a list, read in full on every lookup.
#[derive(Debug, Clone)]
pub struct LinearRouter<T> {
    routes: Vec<CompiledRoute<T>>,
}

impl<T> LinearRouter<T> {
    /// Validates and compiles `routes`, failing exactly where
    /// [`Router::new`](crate::Router::new) fails.
    pub fn new(routes: impl IntoIterator<Item = Route<T>>) -> Result<Self, RouterError> {
        let routes = routes
            .into_iter()
            .enumerate()
            // Each route parses its own hostnames and compiles its own
            // regular expressions: nothing shared with its neighbours,
            // unlike in `Router`.
            .map(|(index, route)| {
                let mut regexes = Regexes::default();
                CompiledRoute::compile(
                    index,
                    route,
                    &mut HostnameCache::default(),
                    &mut RegexBuild::new(&Regexes::default(), &mut regexes),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    /// As [`Router::find`](crate::Router::find).
    pub fn find(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Option<&T> {
        self.find_parts(&RequestParts {
            host,
            path,
            query: "",
            method,
            headers,
        })
    }

    /// As [`Router::find_parts`](crate::Router::find_parts).
    pub fn find_parts(&self, request: &RequestParts<'_>) -> Option<&T> {
        let host = normalize_request_host(request.host);
        self.routes
            .iter()
            .filter_map(|route| {
                let host_rank = host_rank(route, &host)?;
                route
                    .matches(request)
                    .then(|| (Key::new(&route.precedence, host_rank), &route.target))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, target)| target)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// How specifically the best of the route's hostnames matches `host`, or
/// `None` when none does.
pub(crate) fn host_rank<T>(route: &CompiledRoute<T>, host: &str) -> Option<HostRank> {
    if route.hostnames.is_empty() {
        return Some(HostRank::Any);
    }
    route
        .hostnames
        .iter()
        .filter_map(|hostname| hostname_rank(hostname, host, route.dialect))
        .min()
}

/// How specifically one route hostname matches `host`, or `None`.
pub(crate) fn hostname_rank(hostname: &Hostname, host: &str, dialect: Dialect) -> Option<HostRank> {
    match hostname {
        Hostname::Exact(name) => (**name == *host).then_some(HostRank::Exact),
        Hostname::Wildcard(suffix) => {
            let one_label = dialect == Dialect::Ingress;
            wildcard_matches(suffix, host, one_label)
                .then_some(HostRank::Wildcard(Reverse(suffix.len())))
        }
    }
}
