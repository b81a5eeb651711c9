//! VIP placement: which nodes hold which ProxyVIP.
//!
//! - An **L2** VIP is held by exactly one node: the kernel of the holder answers ARP/ND for it,
//!   and two holders would split the traffic between two MACs. The holder keeps it while it
//!   stays healthy and selected, so a recovered node never takes a VIP back (no flapping). When
//!   the holder stops being healthy, the VIP moves only once the holder is *fenced*: it has been
//!   silent for longer than the fencing delay, by which time it has withdrawn the VIP itself
//!   (an agent that loses the controller withdraws its L2 VIPs, and the address it added expires
//!   on its own lease). A new holder is the healthy selected node holding the fewest L2 VIPs,
//!   then the first by name.
//! - A **BGP** or **OSPF** VIP is announced by every healthy selected node; routers spread the
//!   traffic over them (ECMP) and stop using a node as soon as its session or adjacency goes.
//!
//! [`place`] is a pure function of the VIPs, what the controller knows of the nodes, and the
//! previous L2 holders; the controller calls it whenever any of those changes.

use std::collections::BTreeMap;

use novaedge_snapshot::{Vip, VipAnnounce};

use crate::crd::NodeSelector;

/// A checked ProxyVIP, in the snapshot's form, with the nodes that may hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedVip {
    pub vip: Vip,
    pub node_selector: NodeSelector,
}

/// What the controller knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCandidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub health: NodeHealth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHealth {
    /// Its agent is connected, heartbeating and ready.
    Healthy,
    /// Not healthy, but heard from within the fencing delay: it may still hold its L2 VIPs.
    Suspect,
    /// Silent for longer than the fencing delay: it holds nothing any more.
    Fenced,
}

/// The outcome of [`place`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The VIPs each node is to hold, in the order of the input.
    pub per_node: BTreeMap<String, Vec<Vip>>,
    /// L2 VIP name -> its holder, to pass back to the next [`place`].
    pub l2_holders: BTreeMap<String, String>,
    /// VIPs no node can hold now (no healthy selected node), by name.
    pub unplaced: Vec<String>,
}

/// Places `vips` on `nodes`, keeping each L2 VIP with its `previous` holder when it may.
pub fn place(
    vips: &[ScopedVip],
    nodes: &[NodeCandidate],
    previous: &BTreeMap<String, String>,
) -> Placement {
    let mut out = Placement::default();
    let mut l2_load: BTreeMap<&str, usize> = BTreeMap::new();
    let selects = |v: &ScopedVip, n: &NodeCandidate| v.node_selector.matches(&n.labels);
    // Kept holders first, so that new holders are chosen knowing every node's load.
    let mut kept: BTreeMap<&str, &str> = BTreeMap::new();
    for v in vips.iter().filter(|v| is_l2(v)) {
        let holder = previous
            .get(&v.vip.name)
            .and_then(|name| nodes.iter().find(|n| n.name == *name));
        if let Some(n) = holder
            && selects(v, n)
            && n.health != NodeHealth::Fenced
        {
            // Healthy: it keeps the VIP. Suspect: it may still answer ARP, so nobody else may
            // take the VIP before it is fenced.
            kept.insert(&v.vip.name, &n.name);
            *l2_load.entry(&n.name).or_default() += 1;
        }
    }
    for v in vips {
        let name = v.vip.name.as_str();
        if is_l2(v) {
            let holder = match kept.get(name) {
                Some(holder) => Some(*holder),
                None => {
                    let chosen = nodes
                        .iter()
                        .filter(|n| n.health == NodeHealth::Healthy && selects(v, n))
                        .min_by_key(|n| {
                            (l2_load.get(n.name.as_str()).copied().unwrap_or(0), &n.name)
                        });
                    if let Some(n) = chosen {
                        *l2_load.entry(&n.name).or_default() += 1;
                    }
                    chosen.map(|n| n.name.as_str())
                }
            };
            match holder {
                Some(holder) => {
                    out.l2_holders.insert(name.to_owned(), holder.to_owned());
                    let health = nodes.iter().find(|n| n.name == holder).map(|n| n.health);
                    // A suspect holder keeps the VIP in its snapshot: if it is only slow, it
                    // must not drop the VIP; if it is gone, the snapshot does not reach it.
                    if health.is_some_and(|h| h != NodeHealth::Fenced) {
                        out.per_node
                            .entry(holder.to_owned())
                            .or_default()
                            .push(v.vip.clone());
                    }
                }
                None => out.unplaced.push(name.to_owned()),
            }
        } else {
            let mut any = false;
            for n in nodes
                .iter()
                .filter(|n| n.health == NodeHealth::Healthy && selects(v, n))
            {
                any = true;
                out.per_node
                    .entry(n.name.clone())
                    .or_default()
                    .push(v.vip.clone());
            }
            if !any {
                out.unplaced.push(name.to_owned());
            }
        }
    }
    out
}

fn is_l2(v: &ScopedVip) -> bool {
    matches!(v.vip.announce, VipAnnounce::L2 { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use novaedge_snapshot::BgpAnnounce;

    fn vip(name: &str, l2: bool, selector: &[(&str, &str)]) -> ScopedVip {
        ScopedVip {
            vip: Vip {
                name: name.into(),
                addresses: vec!["192.0.2.1".parse().unwrap()],
                announce: if l2 {
                    VipAnnounce::L2 { interface: None }
                } else {
                    VipAnnounce::Bgp(BgpAnnounce {
                        local_asn: 65_001,
                        router_id: None,
                        peers: Vec::new(),
                    })
                },
            },
            node_selector: NodeSelector {
                match_labels: selector
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                match_expressions: Vec::new(),
            },
        }
    }

    fn node(name: &str, health: NodeHealth, labels: &[(&str, &str)]) -> NodeCandidate {
        NodeCandidate {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            health,
        }
    }

    fn held(p: &Placement) -> BTreeMap<String, Vec<String>> {
        p.per_node
            .iter()
            .map(|(n, vips)| (n.clone(), vips.iter().map(|v| v.name.clone()).collect()))
            .collect()
    }

    use NodeHealth::*;

    #[test]
    fn l2_vips_spread_one_holder_each_and_bgp_vips_go_everywhere() {
        let vips = [
            vip("l2-a", true, &[]),
            vip("l2-b", true, &[]),
            vip("l2-c", true, &[("edge", "true")]),
            vip("bgp", false, &[]),
        ];
        let nodes = [
            node("n1", Healthy, &[("edge", "true")]),
            node("n2", Healthy, &[]),
            node("n3", Suspect, &[]),
        ];
        let p = place(&vips, &nodes, &BTreeMap::new());
        assert_eq!(
            held(&p),
            BTreeMap::from([
                (
                    "n1".into(),
                    vec!["l2-a".into(), "l2-c".into(), "bgp".into()]
                ),
                ("n2".into(), vec!["l2-b".into(), "bgp".into()]),
            ])
        );
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn a_holder_keeps_its_vip_until_fenced_and_a_recovered_node_takes_nothing_back() {
        let vips = [vip("web", true, &[])];
        let healthy = [node("a", Healthy, &[]), node("b", Healthy, &[])];
        let first = place(&vips, &healthy, &BTreeMap::new());
        assert_eq!(first.l2_holders["web"], "a");

        // a goes quiet: while it is only suspect, it keeps the VIP (it may still answer ARP) and
        // nobody else gets it.
        let suspect = [node("a", Suspect, &[]), node("b", Healthy, &[])];
        let p = place(&vips, &suspect, &first.l2_holders);
        assert_eq!(p.l2_holders["web"], "a");
        assert_eq!(held(&p), BTreeMap::from([("a".into(), vec!["web".into()])]));

        // Fenced: the VIP moves to b.
        let fenced = [node("a", Fenced, &[]), node("b", Healthy, &[])];
        let moved = place(&vips, &fenced, &p.l2_holders);
        assert_eq!(moved.l2_holders["web"], "b");
        assert_eq!(held(&moved)["b"], ["web"]);

        // a recovers: b keeps the VIP.
        let p = place(&vips, &healthy, &moved.l2_holders);
        assert_eq!(p.l2_holders["web"], "b");
        assert!(!p.per_node.contains_key("a"));
    }

    #[test]
    fn a_vip_moves_off_a_node_its_selector_no_longer_picks() {
        let vips = [vip("web", true, &[("edge", "true")])];
        let previous = BTreeMap::from([("web".to_owned(), "a".to_owned())]);
        let nodes = [
            node("a", Healthy, &[]),
            node("b", Healthy, &[("edge", "true")]),
        ];
        let p = place(&vips, &nodes, &previous);
        assert_eq!(p.l2_holders["web"], "b");

        // No healthy selected node at all: unplaced, and BGP VIPs likewise.
        let nodes = [node("a", Healthy, &[])];
        let p = place(
            &[vips[0].clone(), vip("bgp", false, &[("x", "y")])],
            &nodes,
            &previous,
        );
        assert_eq!(p.unplaced, ["web", "bgp"]);
        assert!(p.per_node.is_empty());
    }
}
