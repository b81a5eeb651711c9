//! The link-state database of the area: every LSA heard or originated, with its age.
//!
//! An LSA is stored with the age it had at an instant (`stamp`); its current age is that plus
//! the whole seconds since, capped at MaxAge (RFC 2328 section 14). The database is capped at
//! a number of LSAs so that a misbehaving router cannot grow it without bound; LSAs that
//! would exceed the cap are refused (and counted) by the caller. Self-originated LSAs
//! (section 13.4: advertised by our router ID, or a Network-LSA whose link-state ID is one of
//! our interface addresses) are also indexed, so origination does not scan the database.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use super::packet::{Lsa, LsaHeader, LsaKey, MAX_AGE, ls_type};

/// One stored LSA.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The LSA; its age field is the age at `stamp`.
    pub(crate) lsa: Lsa,
    /// When the stored age was current.
    pub(crate) stamp: Instant,
    /// When it was installed from flooding (None: originated or flushed by us); for
    /// MinLSArrival (section 13, step 5a).
    pub(crate) received: Option<Instant>,
    /// When it was last sent back to a neighbour that had an older copy (section 13, step 8).
    pub(crate) echoed: Option<Instant>,
    /// It reached MaxAge and was flooded as such (section 14).
    pub(crate) maxage_flooded: bool,
}

impl Entry {
    /// The age now.
    pub(crate) fn age(&self, now: Instant) -> u16 {
        let base = self.lsa.header().effective_age();
        if base >= MAX_AGE {
            return MAX_AGE;
        }
        let elapsed = now.saturating_duration_since(self.stamp).as_secs();
        let age = u64::from(base).saturating_add(elapsed);
        u16::try_from(age.min(u64::from(MAX_AGE))).unwrap_or(MAX_AGE)
    }

    /// The header with the current age.
    pub(crate) fn header(&self, now: Instant) -> LsaHeader {
        LsaHeader {
            age: self.age(now),
            ..*self.lsa.header()
        }
    }

    /// The LSA with the current age.
    pub(crate) fn lsa(&self, now: Instant) -> Lsa {
        self.lsa.with_age(self.age(now))
    }
}

/// The database.
#[derive(Debug)]
pub(crate) struct Lsdb {
    map: BTreeMap<LsaKey, Entry>,
    own: BTreeSet<LsaKey>,
    router_id: Ipv4Addr,
    addresses: Vec<Ipv4Addr>,
    cap: usize,
}

impl Lsdb {
    pub(crate) fn new(router_id: Ipv4Addr, addresses: Vec<Ipv4Addr>, cap: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            own: BTreeSet::new(),
            router_id,
            addresses,
            cap,
        }
    }

    /// Whether `key` names a self-originated LSA (RFC 2328 section 13.4).
    pub(crate) fn is_self(&self, key: &LsaKey) -> bool {
        key.adv_router == self.router_id
            || (key.ls_type == ls_type::NETWORK && self.addresses.contains(&key.id))
    }

    pub(crate) fn get(&self, key: &LsaKey) -> Option<&Entry> {
        self.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &LsaKey) -> Option<&mut Entry> {
        self.map.get_mut(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether installing `key` would exceed the cap (a new key in a full database).
    pub(crate) fn is_full_for(&self, key: &LsaKey) -> bool {
        self.map.len() >= self.cap && !self.map.contains_key(key)
    }

    /// Installs `lsa` (replacing any instance with the same key), its age current at `now`.
    /// Self-originated LSAs always go in; others only within the cap (returns false if not).
    pub(crate) fn install(&mut self, lsa: Lsa, now: Instant, received: Option<Instant>) -> bool {
        let key = lsa.key();
        let is_self = self.is_self(&key);
        if !is_self && self.is_full_for(&key) {
            return false;
        }
        // A MaxAge LSA is installed only as it is flooded (received, or our flush).
        let maxage_flooded = lsa.header().effective_age() >= MAX_AGE;
        let entry = Entry {
            lsa,
            stamp: now,
            received,
            echoed: None,
            maxage_flooded,
        };
        self.map.insert(key, entry);
        if is_self {
            self.own.insert(key);
        }
        true
    }

    pub(crate) fn remove(&mut self, key: &LsaKey) {
        self.map.remove(key);
        self.own.remove(key);
    }

    /// The keys of the self-originated LSAs in the database.
    pub(crate) fn own_keys(&self) -> impl Iterator<Item = &LsaKey> {
        self.own.iter()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&LsaKey, &Entry)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ospf::packet::{ExternalLsa, ExternalMetric, LsaBody};

    fn lsa(id: u8, adv: Ipv4Addr, age: u16) -> Lsa {
        Lsa::build(
            age,
            2,
            Ipv4Addr::new(198, 51, 100, id),
            adv,
            1,
            &LsaBody::External(ExternalLsa {
                mask: Ipv4Addr::BROADCAST,
                entries: vec![ExternalMetric {
                    type2: true,
                    tos: 0,
                    metric: 20,
                    forwarding: Ipv4Addr::UNSPECIFIED,
                    tag: 0,
                }],
            }),
        )
        .unwrap()
    }

    #[test]
    fn ages_cap_and_self_detection() {
        let me = Ipv4Addr::new(10, 0, 0, 2);
        let other = Ipv4Addr::new(10, 0, 0, 1);
        let t0 = Instant::now();
        let mut db = Lsdb::new(me, vec![Ipv4Addr::new(172, 31, 0, 2)], 2);
        assert!(db.install(lsa(1, other, 3590), t0, Some(t0)));
        let key = lsa(1, other, 0).key();
        assert_eq!(
            db.get(&key).unwrap().age(t0 + Duration::from_millis(5500)),
            3595
        );
        assert_eq!(
            db.get(&key).unwrap().age(t0 + Duration::from_secs(100)),
            MAX_AGE
        );
        assert!(db.install(lsa(2, other, 0), t0, Some(t0)));
        // Full: a third foreign LSA is refused, ours is not.
        assert!(!db.install(lsa(3, other, 0), t0, Some(t0)));
        assert!(db.install(lsa(3, me, 0), t0, None));
        assert_eq!(db.own_keys().count(), 1);
        // Replacing an existing key is fine when full.
        assert!(db.install(lsa(2, other, 5), t0, Some(t0)));
        let net = LsaKey {
            ls_type: 2,
            id: Ipv4Addr::new(172, 31, 0, 2),
            adv_router: other,
        };
        assert!(db.is_self(&net), "a Network-LSA for one of our addresses");
        db.remove(&lsa(3, me, 0).key());
        assert_eq!(db.own_keys().count(), 0);
        assert_eq!(db.len(), 2);
    }
}
