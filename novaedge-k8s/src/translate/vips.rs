//! ProxyVIPs: checked (see [`crate::crd::vip`]), their BGP passwords read from Secrets, and put
//! in the snapshot's form for placement ([`crate::placement`]).

use std::time::Duration;

use novaedge_snapshot::{
    self as snapshot, OspfInterface as SnapshotOspfInterface, OspfNetwork, Vip, VipAnnounce,
};

use super::*;
use crate::crd::{Announce, OspfNetworkType, ProxyVip};
use crate::placement::ScopedVip;

/// A BGP peer's hold time when the ProxyVIP gives none (RFC 4271's suggestion).
const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);

impl<'a> Translator<'a> {
    /// Every valid ProxyVIP. An address may belong to one VIP only: a later VIP (by namespace
    /// and name) that repeats one is an error and left out.
    pub(super) fn scoped_vips(&mut self) -> Vec<ScopedVip> {
        let mut list = std::mem::take(&mut self.proxy_vips);
        list.sort_by_key(|(v, _)| key_of(&v.metadata));
        let mut out: Vec<ScopedVip> = Vec::new();
        for (v, file) in list {
            let Some(scoped) = self.vip(v, file) else {
                continue;
            };
            let taken = scoped.vip.addresses.iter().enumerate().find_map(|(i, a)| {
                out.iter()
                    .find(|o| o.vip.addresses.contains(a))
                    .map(|o| (i, *a, o.vip.name.clone()))
            });
            if let Some((i, address, other)) = taken {
                self.error(
                    file,
                    format!("ProxyVIP {}", scoped.vip.name),
                    format!("spec.addresses[{i}]"),
                    format!("{address} is also an address of ProxyVIP {other}"),
                );
                continue;
            }
            out.push(scoped);
        }
        out
    }

    /// The ProxyVIP in the snapshot's form, or `None` after reporting why not.
    pub(super) fn vip(&mut self, vip: &ProxyVip, file: Option<&PathBuf>) -> Option<ScopedVip> {
        let spec = match crate::crd::to_vip_spec(vip) {
            Ok(spec) => spec,
            Err(problems) => {
                self.diagnostics
                    .extend(problems.into_iter().map(|d| d.in_file(file.cloned())));
                return None;
            }
        };
        let namespace = namespace_of(&vip.metadata).to_owned();
        let object = format!("ProxyVIP {}", spec.name);
        let announce = match spec.announce {
            Announce::L2 { interface } => VipAnnounce::L2 {
                interface: (!interface.is_empty()).then_some(interface),
            },
            Announce::Bgp(bgp) => {
                let mut peers = Vec::new();
                for (i, p) in bgp.peers.into_iter().enumerate() {
                    let password = match &p.password {
                        None => None,
                        Some((secret, key)) => {
                            let field = format!("spec.bgp.peers[{i}].passwordSecretRef");
                            let value = self
                                .secrets
                                .get(&(namespace.clone(), secret.clone()))
                                .and_then(|s| s.get(key))
                                .map(|v| String::from_utf8(v.to_vec()));
                            match value {
                                Some(Ok(password)) => Some(password),
                                Some(Err(_)) => {
                                    self.error(
                                        file,
                                        object.clone(),
                                        field,
                                        format!(
                                            "Secret {namespace}/{secret} key {key:?} is not UTF-8"
                                        ),
                                    );
                                    return None;
                                }
                                None => {
                                    self.error(
                                        file,
                                        object.clone(),
                                        field,
                                        format!("no Secret {namespace}/{secret} with key {key:?}"),
                                    );
                                    return None;
                                }
                            }
                        }
                    };
                    peers.push(snapshot::BgpPeer {
                        address: p.address,
                        asn: p.asn,
                        port: p.port,
                        hold_time: p
                            .hold_time
                            .map_or(DEFAULT_HOLD_TIME, |s| Duration::from_secs(s.into())),
                        password,
                    });
                }
                VipAnnounce::Bgp(snapshot::BgpAnnounce {
                    local_asn: bgp.local_asn,
                    router_id: bgp.router_id,
                    peers,
                })
            }
            Announce::Ospf(ospf) => VipAnnounce::Ospf(snapshot::OspfAnnounce {
                area: ospf.area,
                interfaces: ospf
                    .interfaces
                    .into_iter()
                    .map(|i| SnapshotOspfInterface {
                        name: i.name,
                        hello_interval: i.hello_interval,
                        dead_interval: i.dead_interval,
                        priority: i.priority,
                        network: match i.network_type {
                            OspfNetworkType::Broadcast => OspfNetwork::Broadcast,
                            OspfNetworkType::PointToPoint => OspfNetwork::PointToPoint,
                        },
                        cost: i.cost,
                    })
                    .collect(),
            }),
        };
        Some(ScopedVip {
            vip: Vip {
                name: spec.name,
                addresses: spec.addresses,
                announce,
            },
            node_selector: spec.node_selector,
        })
    }
}
