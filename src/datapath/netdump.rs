//! Netlink dumps of links, addresses and main-table routes ([`NetFacts`]) for device detection.
//!
//! The agent re-dumps every second rather than subscribing to the link/address multicast groups:
//! a dump is three small requests, it is always a complete, self-correcting picture (no missed
//! or reordered events, no resync after an `ENOBUFS` overrun), and one second is well within the
//! "a new address or device is picked up within a few seconds" the product promises.

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::RouteMessageBuilder;

use super::DatapathError;
use super::detect::{AddrFacts, LinkFacts, NetFacts, RouteFacts};

fn nl_err(what: &'static str) -> impl Fn(rtnetlink::Error) -> DatapathError {
    move |e| DatapathError::io(what, "netlink", std::io::Error::other(e.to_string()))
}

/// A netlink connection of this network namespace, driven by the current tokio runtime.
#[derive(Clone)]
pub struct Netlink(rtnetlink::Handle);

impl Netlink {
    pub fn new() -> Result<Self, DatapathError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| DatapathError::io("opening", "a netlink socket", e))?;
        tokio::spawn(conn);
        Ok(Self(handle))
    }

    /// Links, addresses and main-table routes, now.
    pub async fn dump(&self) -> Result<NetFacts, DatapathError> {
        let links: Vec<_> = self
            .0
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("listing links over"))?;
        let addrs: Vec<_> = self
            .0
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("listing addresses over"))?;
        let mut routes: Vec<RouteMessage> = Vec::new();
        for filter in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let got: Vec<RouteMessage> = self
                .0
                .route()
                .get(filter)
                .execute()
                .try_collect()
                .await
                .map_err(nl_err("listing routes over"))?;
            routes.extend(got);
        }
        Ok(NetFacts {
            links: links.iter().filter_map(link_facts).collect(),
            addrs: addrs.iter().filter_map(addr_facts).collect(),
            routes: routes.iter().filter_map(route_facts).collect(),
        })
    }
}

fn link_facts(m: &netlink_packet_route::link::LinkMessage) -> Option<LinkFacts> {
    let mut name = None;
    let mut kind = None;
    let mut master = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Controller(i) => master = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(LinkFacts {
        index: m.header.index,
        name: name?,
        kind,
        master,
        loopback: m.header.flags.contains(LinkFlags::Loopback),
    })
}

fn addr_facts(m: &netlink_packet_route::address::AddressMessage) -> Option<AddrFacts> {
    // IPv4 carries the local address in IFA_LOCAL (IFA_ADDRESS is the peer on point-to-point).
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    Some(AddrFacts {
        index: m.header.index,
        addr: local.or(address)?,
        global: m.header.scope == AddressScope::Universe,
        secondary: m.header.flags.contains(AddressHeaderFlags::Secondary),
    })
}

fn route_facts(m: &RouteMessage) -> Option<RouteFacts> {
    let mut table = u32::from(m.header.table);
    let mut oifs = Vec::new();
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oifs.push(*i),
            RouteAttribute::MultiPath(hops) => {
                oifs.extend(hops.iter().map(|h| h.interface_index));
            }
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(RouteFacts {
        v6: m.header.address_family == AddressFamily::Inet6,
        dst_len: m.header.destination_prefix_length,
        oifs,
    })
}
