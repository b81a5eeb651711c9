//! How a snapshot's routes become router entries: one place for the data plane and for tools
//! that must agree with it (`novaedge explain`).
//!
//! Gateway API: among equally specific matches the oldest route wins, then the first by
//! namespace/name, then the first rule of the route. Routes are ordered by creation time and
//! name, and an entry's `rank` is `position << 24 | rule index`, which encodes exactly that
//! order. A rule gives one entry per match; a rule without matches stands for `PathPrefix /`.

use std::collections::HashMap;

use novaedge_router as router;
use novaedge_snapshot::{self as snapshot, ConfigSnapshot};

/// Where a router entry comes from in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryRef {
    /// Index in `snapshot.routes`.
    pub route: usize,
    /// Index in the route's `rules`.
    pub rule: usize,
    /// Index in the rule's `matches`; `None` for a rule without matches.
    pub matched: Option<usize>,
}

impl EntryRef {
    /// The match this entry stands for (the default one for a rule without matches).
    pub fn route_match(&self, snapshot: &ConfigSnapshot) -> snapshot::RouteMatch {
        let rule = &snapshot.routes[self.route].rules[self.rule];
        self.matched
            .and_then(|i| rule.matches.get(i))
            .cloned()
            .unwrap_or_default()
    }
}

/// The router entries of every listener (by name; every listener has an entry, maybe empty),
/// in the data plane's order and with its ranks.
pub fn route_entries(snapshot: &ConfigSnapshot) -> HashMap<&str, Vec<router::Route<EntryRef>>> {
    let mut order: Vec<(usize, &snapshot::Route)> = snapshot.routes.iter().enumerate().collect();
    order.sort_by(|(_, a), (_, b)| {
        (a.creation_timestamp, &a.name).cmp(&(b.creation_timestamp, &b.name))
    });
    let mut per_listener: HashMap<&str, Vec<router::Route<EntryRef>>> = snapshot
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), Vec::new()))
        .collect();
    for (position, (route_index, route)) in order.into_iter().enumerate() {
        let entries = per_listener.entry(route.listener.as_str()).or_default();
        let dialect = match route.dialect {
            snapshot::RouteDialect::GatewayApi => router::Dialect::GatewayApi,
            snapshot::RouteDialect::Ingress => router::Dialect::Ingress,
        };
        for (rule_index, rule) in route.rules.iter().enumerate() {
            let rank = ((position as u64) << 24) | rule_index as u64;
            let matches: Vec<Option<usize>> = if rule.matches.is_empty() {
                vec![None]
            } else {
                (0..rule.matches.len()).map(Some).collect()
            };
            for matched in matches {
                let entry = EntryRef {
                    route: route_index,
                    rule: rule_index,
                    matched,
                };
                entries.push(router::Route {
                    hostnames: route.hostnames.clone(),
                    route_match: router_match(entry.route_match(snapshot)),
                    rank,
                    target: entry,
                    dialect,
                });
            }
        }
    }
    per_listener
}

fn match_type(kind: snapshot::MatchType) -> router::MatchType {
    match kind {
        snapshot::MatchType::Exact => router::MatchType::Exact,
        snapshot::MatchType::RegularExpression => router::MatchType::RegularExpression,
    }
}

fn router_match(m: snapshot::RouteMatch) -> router::RouteMatch {
    router::RouteMatch {
        path: match m.path {
            snapshot::PathMatch::Exact(p) => router::PathMatch::Exact(p),
            snapshot::PathMatch::Prefix(p) => router::PathMatch::Prefix(p),
            snapshot::PathMatch::RegularExpression(p) => router::PathMatch::RegularExpression(p),
        },
        method: m.method,
        headers: m
            .headers
            .into_iter()
            .map(|h| router::HeaderMatch {
                name: h.name,
                value: h.value,
                kind: match_type(h.kind),
            })
            .collect(),
        query_params: m
            .query_params
            .into_iter()
            .map(|q| router::QueryParamMatch {
                name: q.name,
                value: q.value,
                kind: match_type(q.kind),
            })
            .collect(),
    }
}
