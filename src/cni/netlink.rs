//! Links, addresses and routes over rtnetlink, synchronously: a current-thread tokio runtime
//! drives one netlink socket per namespace (a socket stays in the namespace it was made in).

use std::net::IpAddr;
use std::path::PathBuf;

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoNetkit, InfoVeth, LinkAttribute, LinkFlags, LinkMessage, NetkitMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{
    Handle, LinkMessageBuilder, LinkNetkit, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::cidr::IpNet;
use super::error::code;
use super::netns::NetnsFile;
use super::plan::PlannedRoute;

const ENODEV: i32 = -libc::ENODEV;
const EEXIST: i32 = -libc::EEXIST;
/// What a kernel without a link kind answers (netkit before Linux 6.7).
const EOPNOTSUPP: i32 = -libc::EOPNOTSUPP;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI_NETNS {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI_NETNS {0} is the plugin's own network namespace")]
    SameNetns(PathBuf),
    #[error("interface {name} already exists {place}")]
    Exists { name: String, place: &'static str },
    #[error("a thread working inside {0} panicked")]
    Thread(PathBuf),
}

impl NetError {
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            Self::Netns { .. } | Self::SameNetns(_) => code::INVALID_ENV,
            Self::Exists { .. } => code::INTERFACE_EXISTS,
            Self::Netlink { .. } | Self::Io { .. } | Self::Thread(_) => code::IO_FAILURE,
        }
    }
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code()),
        _ => None,
    }
}

/// What CHECK and ADD need to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
}

/// A route as read back from the kernel (main table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteState {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// A netlink connection into one namespace.
#[derive(Clone, Debug)]
pub struct Nl(Handle);

/// The runtime that drives every connection of this process.
#[derive(Debug)]
pub struct Net {
    rt: tokio::runtime::Runtime,
    host: Nl,
}

impl Net {
    /// Connects in the calling thread's namespace (the host's).
    pub fn new() -> Result<Self, NetError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| NetError::Io {
                what: "starting the netlink runtime".into(),
                source,
            })?;
        let host = {
            let _guard = rt.enter();
            connect(&rt)?
        };
        Ok(Self { rt, host })
    }

    #[must_use]
    pub fn host(&self) -> &Nl {
        &self.host
    }

    /// A connection inside `ns`.
    pub fn enter(&self, ns: &NetnsFile) -> Result<Nl, NetError> {
        let handle = self.rt.handle().clone();
        ns.run(move || {
            let _guard = handle.enter();
            let (conn, h, _) = rtnetlink::new_connection().map_err(|source| NetError::Io {
                what: "opening a netlink socket in the container".into(),
                source,
            })?;
            handle.spawn(conn);
            Ok(Nl(h))
        })?
    }

    /// The link called `name`, if any.
    pub fn link(&self, conn: &Nl, name: &str) -> Result<Option<LinkState>, NetError> {
        let req = conn.0.link().get().match_name(name.to_owned()).execute();
        let mut req = std::pin::pin!(req);
        match self.rt.block_on(req.try_next()) {
            Ok(Some(msg)) => Ok(Some(link_state(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("looking up link {name}"))(e)),
        }
    }

    /// The pod end of a pair: `peer` created directly inside `peer_ns` with `mtu`.
    fn peer_message(
        peer: &str,
        peer_ns: &NetnsFile,
        mtu: u32,
        peer_mac: Option<[u8; 6]>,
    ) -> LinkMessage {
        use std::os::fd::AsRawFd;
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .mtu(mtu)
            .setns_by_fd(peer_ns.file.as_raw_fd());
        if let Some(mac) = peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        peer_msg.build()
    }

    /// Adds the pair `msg` describes (`what`: its kind, for errors).
    fn add_pair(
        &self,
        msg: LinkMessage,
        host: &str,
        peer: &str,
        what: &'static str,
    ) -> Result<(), NetError> {
        match self.rt.block_on(self.host.0.link().add(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Err(NetError::Exists {
                name: format!("{host} or {peer}"),
                place: what,
            }),
            Err(e) => Err(nl(format!("creating {what} {host} <-> {peer}"))(e)),
        }
    }

    /// Creates the veth pair: `host` here, `peer` directly inside `peer_ns`, both with `mtu`.
    pub fn create_veth(
        &self,
        host: &str,
        peer: &str,
        peer_ns: &NetnsFile,
        mtu: u32,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<(), NetError> {
        let peer_msg = Self::peer_message(peer, peer_ns, mtu, peer_mac);
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_owned())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.add_pair(msg, host, peer, "(veth pair)")
    }

    /// Creates a netkit pair in L2 mode (an Ethernet pair like a veth, ARP and NDP included):
    /// `host` here is the primary, which alone takes BPF programs; `peer` directly inside
    /// `peer_ns`; both with `mtu` and a pass-through default policy, so the pair carries
    /// traffic like a veth until the agent attaches its program. `Ok(false)` when the kernel
    /// has no netkit (before Linux 6.7).
    pub fn create_netkit(
        &self,
        host: &str,
        peer: &str,
        peer_ns: &NetnsFile,
        mtu: u32,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<bool, NetError> {
        let peer_msg = Self::peer_message(peer, peer_ns, mtu, peer_mac);
        let msg = LinkMessageBuilder::<LinkNetkit>::new_with_info_kind(InfoKind::Netkit)
            .name(host.to_owned())
            .mtu(mtu)
            .set_info_data(InfoData::Netkit(vec![
                InfoNetkit::Mode(NetkitMode::L2),
                InfoNetkit::Peer(peer_msg),
            ]))
            .build();
        match self.add_pair(msg, host, peer, "(netkit pair)") {
            Ok(()) => Ok(true),
            Err(NetError::Netlink { source, .. }) if errno(&source) == Some(EOPNOTSUPP) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets link `index` up.
    pub fn set_up(&self, conn: &Nl, index: u32) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.rt
            .block_on(conn.0.link().change(msg).execute())
            .map_err(nl(format!("setting link {index} up")))
    }

    /// Adds `addr` to link `index` (no DAD: the address is ours by construction).
    pub fn add_address(&self, conn: &Nl, index: u32, addr: IpNet) -> Result<(), NetError> {
        let mut req = conn.0.address().add(index, addr.addr(), addr.prefix());
        if !addr.is_ipv4() {
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        match self.rt.block_on(req.execute()) {
            Err(e) if errno(&e) != Some(EEXIST) => {
                Err(nl(format!("adding {addr} to link {index}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// Adds `route` through link `index`.
    pub fn add_route(&self, conn: &Nl, index: u32, route: &PlannedRoute) -> Result<(), NetError> {
        let msg = route_message(index, route);
        self.rt
            .block_on(conn.0.route().add(msg).execute())
            .map_err(nl(format!("adding route {} via link {index}", route.dst)))
    }

    /// Deletes link `name`; `false` when there was none.
    pub fn del_link(&self, conn: &Nl, name: &str) -> Result<bool, NetError> {
        let Some(link) = self.link(conn, name)? else {
            return Ok(false);
        };
        match self.rt.block_on(conn.0.link().del(link.index).execute()) {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(nl(format!("deleting link {name}"))(e)),
        }
    }

    /// Addresses on link `index`.
    pub fn addresses(&self, conn: &Nl, index: u32) -> Result<Vec<IpNet>, NetError> {
        let req = conn
            .0
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let msgs: Vec<_> = self
            .rt
            .block_on(req.try_collect())
            .map_err(nl(format!("listing addresses of link {index}")))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => IpNet::new(*ip, m.header.prefix_len),
                    _ => None,
                })
            })
            .collect())
    }

    /// Routes of the main table of one family.
    pub fn routes(&self, conn: &Nl, v4: bool) -> Result<Vec<RouteState>, NetError> {
        let filter = if v4 {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .rt
            .block_on(conn.0.route().get(filter).execute().try_collect())
            .map_err(nl("listing routes"))?;
        Ok(msgs.iter().filter_map(|m| route_state(m, v4)).collect())
    }
}

fn connect(rt: &tokio::runtime::Runtime) -> Result<Nl, NetError> {
    let (conn, h, _) = rtnetlink::new_connection().map_err(|source| NetError::Io {
        what: "opening a netlink socket".into(),
        source,
    })?;
    rt.spawn(conn);
    Ok(Nl(h))
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut st = LinkState {
        index: msg.header.index,
        mac: Vec::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::Address(mac) => st.mac.clone_from(mac),
            LinkAttribute::Mtu(m) => st.mtu = *m,
            _ => {}
        }
    }
    st
}

fn route_message(index: u32, route: &PlannedRoute) -> RouteMessage {
    let scope = if route.gw.is_none() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    match (route.dst.addr(), route.gw) {
        (IpAddr::V4(dst), gw) => {
            let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(dst, route.dst.prefix())
                .output_interface(index)
                .scope(scope);
            if let Some(IpAddr::V4(gw)) = gw {
                b = b.gateway(gw);
            }
            b.build()
        }
        (IpAddr::V6(dst), gw) => {
            let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(dst, route.dst.prefix())
                .output_interface(index)
                .scope(scope);
            if let Some(IpAddr::V6(gw)) = gw {
                b = b.gateway(gw);
            }
            b.build()
        }
    }
}

fn route_state(m: &RouteMessage, v4: bool) -> Option<RouteState> {
    let family_ok = if v4 {
        m.header.address_family == AddressFamily::Inet
    } else {
        m.header.address_family == AddressFamily::Inet6
    };
    if !family_ok || m.header.table != RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let addr = |a: &RouteAddress| match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    };
    let mut dst = None;
    let mut gw = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = addr(d),
            RouteAttribute::Gateway(g) => gw = addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let any = if v4 {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    Some(RouteState {
        dst: IpNet::new(dst.unwrap_or(any), m.header.destination_prefix_length)?,
        gw,
        oif,
    })
}
