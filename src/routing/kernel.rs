//! rtnetlink reads (local networks, ferrite's routes, the VXLAN device and its neighbour and FDB
//! entries) and writes (the [`Op`]s of a diff).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::diff::{Current, CurrentRoute, CurrentVxlan, Op};
use super::plan::{DesiredRoute, LocalNet, RouteDev, VxlanDevice};
use super::{RTPROT_FERRITE, RoutingError, VXLAN_DEV};

const ENOENT: i32 = -libc::ENOENT;
const ESRCH: i32 = -libc::ESRCH;
const ENODEV: i32 = -libc::ENODEV;
const EEXIST: i32 = -libc::EEXIST;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code()),
        _ => None,
    }
}

/// Already gone: fine for a delete.
fn gone(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(ENOENT | ESRCH | ENODEV))
}

fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

/// One netlink connection in the agent's namespace.
#[derive(Clone, Debug)]
pub struct Kernel {
    handle: Handle,
}

/// A link as dumped, with what device detection and the plan need.
#[derive(Clone, Debug)]
struct Link {
    index: u32,
    name: String,
    mtu: u32,
    up: bool,
    mac: Option<[u8; 6]>,
    kind: Option<InfoKind>,
    vxlan: Vec<InfoVxlan>,
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut l = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        mac: None,
        kind: None,
        vxlan: Vec::new(),
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name.clone_from(n),
            LinkAttribute::Mtu(m) => l.mtu = *m,
            LinkAttribute::Address(mac) => l.mac = mac6(mac),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan.clone_from(v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

impl Kernel {
    /// Opens the connection; its driver runs on the current tokio runtime.
    pub fn connect() -> Result<Self, RoutingError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(RoutingError::io("opening a netlink socket"))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    async fn links(&self) -> Result<Vec<Link>, RoutingError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(RoutingError::netlink("listing links"))?;
        Ok(msgs.iter().map(link_of).collect())
    }

    /// Global addresses of every link that is up, with their prefix (ferrite's own VXLAN device
    /// and pod veths excluded: nodes are never reached through them).
    pub async fn local_nets(&self) -> Result<Vec<LocalNet>, RoutingError> {
        let links = self.links().await?;
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(RoutingError::netlink("listing addresses"))?;
        let mut out = Vec::new();
        for m in &msgs {
            if m.header.scope != AddressScope::Universe {
                continue;
            }
            let Some(link) = links.iter().find(|l| l.index == m.header.index) else {
                continue;
            };
            if !link.up
                || link.name == VXLAN_DEV
                || link.name.starts_with(crate::cni::plan::HOST_IFNAME_PREFIX)
            {
                continue;
            }
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(net) = addr.and_then(|ip| IpNet::new(ip, m.header.prefix_len).ok()) {
                out.push(LocalNet {
                    ifname: link.name.clone(),
                    ifindex: link.index,
                    net,
                    mtu: link.mtu,
                });
            }
        }
        Ok(out)
    }

    async fn routes_of(&self, v4: bool, current: &mut Current) -> Result<(), RoutingError> {
        let filter = if v4 {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(RoutingError::netlink("listing routes"))?;
        for m in &msgs {
            if m.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut dst = None;
            let mut gateway = None;
            let mut ifindex = 0;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(d) => dst = route_addr(d),
                    RouteAttribute::Gateway(g) => gateway = route_addr(g),
                    RouteAttribute::Oif(i) => ifindex = *i,
                    _ => {}
                }
            }
            let any = if v4 {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            let Ok(dst) = IpNet::new(dst.unwrap_or(any), m.header.destination_prefix_length) else {
                continue;
            };
            if m.header.protocol == RouteProtocol::Other(RTPROT_FERRITE) {
                current.routes.push(CurrentRoute {
                    dst,
                    gateway,
                    ifindex,
                    onlink: m.header.flags.contains(RouteFlags::Onlink),
                });
            } else {
                current.foreign.push(dst);
            }
        }
        Ok(())
    }

    /// Everything ferrite owns in the kernel now.
    #[expect(
        clippy::too_many_lines,
        reason = "one dump per object kind, read in one place"
    )]
    pub async fn current(&self) -> Result<Current, RoutingError> {
        let mut current = Current::default();
        self.routes_of(true, &mut current).await?;
        self.routes_of(false, &mut current).await?;
        current.routes.sort();
        let links = self.links().await?;
        let Some(dev) = links.iter().find(|l| l.name == VXLAN_DEV) else {
            return Ok(current);
        };
        let mut v = CurrentVxlan {
            ifindex: dev.index,
            vni: None,
            port: None,
            local: None,
            mtu: dev.mtu,
            mac: dev.mac,
            up: dev.up,
            addrs: Vec::new(),
        };
        for i in &dev.vxlan {
            match i {
                InfoVxlan::Id(id) => v.vni = Some(*id),
                InfoVxlan::Port(p) => v.port = Some(*p),
                InfoVxlan::Local(a) => v.local = Some(IpAddr::V4(*a)),
                InfoVxlan::Local6(a) => v.local = Some(IpAddr::V6(*a)),
                _ => {}
            }
        }
        if dev.kind != Some(InfoKind::Vxlan) {
            // Someone else's device under our name: recreate it.
            v.vni = None;
        }
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(dev.index)
            .execute()
            .try_collect()
            .await
            .map_err(RoutingError::netlink(format!(
                "listing addresses of {VXLAN_DEV}"
            )))?;
        v.addrs = addrs
            .iter()
            .filter(|m| m.header.index == dev.index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => IpNet::new(*ip, m.header.prefix_len).ok(),
                    _ => None,
                })
            })
            // The kernel's own link-local address is not ferrite's to manage.
            .filter(|a| !matches!(a, IpNet::V6(v) if v.addr().segments()[0] & 0xffc0 == 0xfe80))
            .collect();
        let neighs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(RoutingError::netlink("listing neighbours"))?;
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(RoutingError::netlink("listing FDB entries"))?;
        for m in neighs.iter().chain(&fdb) {
            if m.header.ifindex != dev.index || m.header.state != NeighbourState::Permanent {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        ip = Some(IpAddr::V4(*a));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        ip = Some(IpAddr::V6(*a));
                    }
                    // Bridge-family entries carry NDA_DST as raw bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        ip = match b.len() {
                            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            _ => None,
                        };
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => mac = mac6(l),
                    _ => {}
                }
            }
            let (Some(ip), Some(mac)) = (ip, mac) else {
                continue;
            };
            if m.header.family == AddressFamily::Bridge {
                current.fdb.push((mac, ip));
            } else {
                current.neighs.push((ip, mac));
            }
        }
        current.vxlan = Some(v);
        Ok(current)
    }

    /// The VXLAN device's ifindex, when it exists.
    pub async fn vxlan_index(&self) -> Result<Option<u32>, RoutingError> {
        Ok(self
            .links()
            .await?
            .iter()
            .find(|l| l.name == VXLAN_DEV)
            .map(|l| l.index))
    }

    async fn create_vxlan(&self, v: &VxlanDevice) -> Result<(), RoutingError> {
        let mut b = LinkVxlan::new(VXLAN_DEV, v.vni)
            .port(v.port)
            .learning(false)
            .dev(v.underlay_ifindex)
            .mtu(v.mtu)
            .address(v.mac.to_vec());
        b = match v.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        match self.handle.link().add(b.up().build()).execute().await {
            Err(e) if errno(&e) != Some(EEXIST) => {
                Err(RoutingError::netlink(format!("creating {VXLAN_DEV}"))(e))
            }
            _ => Ok(()),
        }
    }

    async fn route_message(&self, r: &DesiredRoute) -> Result<RouteMessage, RoutingError> {
        let ifindex = match r.dev {
            RouteDev::Index(i) => i,
            RouteDev::Vxlan => self.vxlan_index().await?.ok_or_else(|| RoutingError::Io {
                what: format!("route {} needs {VXLAN_DEV}", r.dst),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?,
        };
        let proto = RouteProtocol::Other(RTPROT_FERRITE);
        let msg = match (r.dst, r.gateway) {
            (IpNet::V4(dst), IpAddr::V4(gw)) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst.addr(), dst.prefix_len())
                    .gateway(gw)
                    .output_interface(ifindex)
                    .protocol(proto)
                    .scope(RouteScope::Universe);
                if r.onlink {
                    b = b.onlink();
                }
                b.build()
            }
            (IpNet::V6(dst), IpAddr::V6(gw)) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(dst.addr(), dst.prefix_len())
                    .gateway(gw)
                    .output_interface(ifindex)
                    .protocol(proto)
                    .scope(RouteScope::Universe);
                if r.onlink {
                    b = b.onlink();
                }
                b.build()
            }
            _ => {
                return Err(RoutingError::Io {
                    what: format!("route {} via {}", r.dst, r.gateway),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                });
            }
        };
        Ok(msg)
    }

    fn current_route_message(r: &CurrentRoute) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if r.dst.addr().is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = r.dst.prefix_len();
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Other(RTPROT_FERRITE);
        m.header.scope = RouteScope::Universe;
        m.attributes
            .push(RouteAttribute::Destination(match r.dst.addr() {
                IpAddr::V4(a) => RouteAddress::Inet(a),
                IpAddr::V6(a) => RouteAddress::Inet6(a),
            }));
        if r.ifindex != 0 {
            m.attributes.push(RouteAttribute::Oif(r.ifindex));
        }
        m
    }

    /// Carries out one operation.
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per operation, each a few lines"
    )]
    pub async fn apply(&self, op: &Op) -> Result<(), RoutingError> {
        let h = &self.handle;
        match op {
            Op::CreateVxlan(v) => self.create_vxlan(v).await,
            Op::DeleteVxlan { ifindex } => match h.link().del(*ifindex).execute().await {
                Err(e) if !gone(&e) => {
                    Err(RoutingError::netlink(format!("deleting {VXLAN_DEV}"))(e))
                }
                _ => Ok(()),
            },
            Op::SetVxlan { ifindex, mtu, mac } => {
                let msg = LinkUnspec::new_with_index(*ifindex)
                    .mtu(*mtu)
                    .address(mac.to_vec())
                    .up()
                    .build();
                h.link()
                    .change(msg)
                    .execute()
                    .await
                    .map_err(RoutingError::netlink(format!("setting up {VXLAN_DEV}")))
            }
            Op::AddVxlanAddr(a) => {
                let Some(index) = self.vxlan_index().await? else {
                    return Ok(());
                };
                let mut req = h.address().add(index, a.addr(), a.prefix_len());
                if !a.addr().is_ipv4() {
                    req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
                }
                match req.execute().await {
                    Err(e) if errno(&e) != Some(EEXIST) => Err(RoutingError::netlink(format!(
                        "adding {a} to {VXLAN_DEV}"
                    ))(e)),
                    _ => Ok(()),
                }
            }
            Op::DelVxlanAddr(a) => {
                let Some(index) = self.vxlan_index().await? else {
                    return Ok(());
                };
                let msgs: Vec<_> = h
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .set_address_filter(a.addr())
                    .execute()
                    .try_collect()
                    .await
                    .map_err(RoutingError::netlink(format!("finding {a} on {VXLAN_DEV}")))?;
                for m in msgs {
                    if let Err(e) = h.address().del(m).execute().await
                        && !gone(&e)
                    {
                        return Err(RoutingError::netlink(format!(
                            "removing {a} from {VXLAN_DEV}"
                        ))(e));
                    }
                }
                Ok(())
            }
            Op::ReplaceFdb(f) => {
                let Some(index) = self.vxlan_index().await? else {
                    return Ok(());
                };
                h.neighbours()
                    .add_bridge(index, &f.mac)
                    .flags(NeighbourFlags::Own)
                    .destination(f.dst)
                    .replace()
                    .execute()
                    .await
                    .map_err(RoutingError::netlink(format!(
                        "FDB entry {} → {}",
                        crate::cni::config::format_mac(&f.mac),
                        f.dst
                    )))
            }
            Op::DelFdb { mac, dst } => {
                let Some(index) = self.vxlan_index().await? else {
                    return Ok(());
                };
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = index;
                m.header.flags = NeighbourFlags::Own;
                m.header.state = NeighbourState::Permanent;
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                m.attributes
                    .push(NeighbourAttribute::Destination(match dst {
                        IpAddr::V4(a) => NeighbourAddress::Inet(*a),
                        IpAddr::V6(a) => NeighbourAddress::Inet6(*a),
                    }));
                match h.neighbours().del(m).execute().await {
                    Err(e) if !gone(&e) => {
                        Err(RoutingError::netlink(format!("deleting FDB entry → {dst}"))(e))
                    }
                    _ => Ok(()),
                }
            }
            Op::ReplaceNeigh(n) => {
                let Some(index) = self.vxlan_index().await? else {
                    return Ok(());
                };
                h.neighbours()
                    .add(index, n.ip)
                    .link_layer_address(&n.mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(RoutingError::netlink(format!("neighbour {}", n.ip)))
            }
            Op::DelNeigh { ip, .. } => {
                let Some(index) = self.vxlan_index().await? else {
                    return Ok(());
                };
                let mut m = NeighbourMessage::default();
                m.header.family = if ip.is_ipv4() {
                    AddressFamily::Inet
                } else {
                    AddressFamily::Inet6
                };
                m.header.ifindex = index;
                m.attributes.push(NeighbourAttribute::Destination(match ip {
                    IpAddr::V4(a) => NeighbourAddress::Inet(*a),
                    IpAddr::V6(a) => NeighbourAddress::Inet6(*a),
                }));
                match h.neighbours().del(m).execute().await {
                    Err(e) if !gone(&e) => {
                        Err(RoutingError::netlink(format!("deleting neighbour {ip}"))(e))
                    }
                    _ => Ok(()),
                }
            }
            Op::ReplaceRoute(r) => {
                let msg = self.route_message(r).await?;
                h.route()
                    .add(msg)
                    .replace()
                    .execute()
                    .await
                    .map_err(RoutingError::netlink(format!(
                        "route {} via {}",
                        r.dst, r.gateway
                    )))
            }
            Op::DelRoute(r) => {
                match h
                    .route()
                    .del(Self::current_route_message(r))
                    .execute()
                    .await
                {
                    Err(e) if !gone(&e) => Err(RoutingError::netlink(format!(
                        "deleting route {}",
                        r.dst
                    ))(e)),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// `ferrite agent --cleanup`: deletes every route carrying ferrite's protocol number and the
/// VXLAN device; returns what it removed and every error (it keeps going past failures).
pub async fn cleanup() -> (Vec<String>, Vec<RoutingError>) {
    let (mut removed, mut errors) = (Vec::new(), Vec::new());
    let kernel = match Kernel::connect() {
        Ok(k) => k,
        Err(e) => return (removed, vec![e]),
    };
    let current = match kernel.current().await {
        Ok(c) => c,
        Err(e) => return (removed, vec![e]),
    };
    for r in &current.routes {
        match kernel.apply(&Op::DelRoute(*r)).await {
            Ok(()) => removed.push(format!("route {}", r.dst)),
            Err(e) => errors.push(e),
        }
    }
    if let Some(v) = &current.vxlan {
        match kernel.apply(&Op::DeleteVxlan { ifindex: v.ifindex }).await {
            Ok(()) => removed.push(format!("device {VXLAN_DEV}")),
            Err(e) => errors.push(e),
        }
    }
    (removed, errors)
}
