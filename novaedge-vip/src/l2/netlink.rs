//! VIP addresses on one interface through rtnetlink: add (idempotently), refresh the lease,
//! remove.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, CacheInfo,
};
use rtnetlink::Handle;

/// What `ensure` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ensured {
    /// The driver added the address.
    Added,
    /// The address was already on the interface.
    PreExisting,
}

#[derive(Debug)]
pub(super) struct Addresses {
    handle: Handle,
    ifindex: u32,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Addresses {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

fn prefix_len(vip: IpAddr) -> u8 {
    if vip.is_ipv4() { 32 } else { 128 }
}

fn message_addr(m: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
    // links, so prefer LOCAL when both are present.
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    addr
}

impl Addresses {
    pub(super) fn open(ifindex: u32) -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let conn = tokio::spawn(conn);
        Ok(Self {
            handle,
            ifindex,
            conn,
        })
    }

    async fn find(&self, vip: IpAddr) -> Result<Option<AddressMessage>, rtnetlink::Error> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .execute();
        while let Some(m) = s.try_next().await? {
            if message_addr(&m) == Some(vip) {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    async fn add(
        &self,
        vip: IpAddr,
        lease: Option<Duration>,
        replace: bool,
    ) -> Result<(), rtnetlink::Error> {
        let mut req = self
            .handle
            .address()
            .add(self.ifindex, vip, prefix_len(vip));
        if replace {
            req = req.replace();
        }
        let msg = req.message_mut();
        if vip.is_ipv6() {
            msg.header.flags |= AddressHeaderFlags::Nodad;
        }
        if let Some(l) = lease {
            let secs = u32::try_from(l.as_secs().max(1)).unwrap_or(u32::MAX);
            let mut ci = CacheInfo::default();
            ci.ifa_preferred = secs;
            ci.ifa_valid = secs;
            msg.attributes.push(AddressAttribute::CacheInfo(ci));
        }
        req.execute().await
    }

    /// Puts `vip` on the interface unless it is there already.
    pub(super) async fn ensure(
        &self,
        vip: IpAddr,
        lease: Option<Duration>,
    ) -> Result<Ensured, rtnetlink::Error> {
        if self.find(vip).await?.is_some() {
            return Ok(Ensured::PreExisting);
        }
        match self.add(vip, lease, false).await {
            Ok(()) => Ok(Ensured::Added),
            // Someone added it between our look and our add (EEXIST): it is not ours.
            Err(e) => match self.find(vip).await {
                Ok(Some(_)) => Ok(Ensured::PreExisting),
                _ => Err(e),
            },
        }
    }

    /// Extends the lifetime of an address the driver added.
    pub(super) async fn refresh(
        &self,
        vip: IpAddr,
        lease: Option<Duration>,
    ) -> Result<(), rtnetlink::Error> {
        self.add(vip, lease, true).await
    }

    /// Removes `vip` from the interface; absent already is fine.
    pub(super) async fn remove(&self, vip: IpAddr) -> Result<(), rtnetlink::Error> {
        match self.find(vip).await? {
            Some(m) => self.handle.address().del(m).execute().await,
            None => Ok(()),
        }
    }
}
