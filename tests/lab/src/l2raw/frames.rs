//! ARP requests and Neighbor Solicitations built field by field (any field may be wrong on
//! purpose), on the Ethernet builder of [`crate::raw`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::raw::{Mac, checksum, pseudo_header};

pub(crate) use crate::raw::ethernet as eth;

pub const ETH_P_ALL: u16 = 0x0003;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const ETH_P_VLAN: u16 = 0x8100;
pub(crate) const PROTO_ICMPV6: u8 = 58;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const V6_HOP_BY_HOP: u8 = 0;
pub(crate) const ND_SOLICIT: u8 = 135;
pub(crate) const ND_ADVERT: u8 = 136;
pub(crate) const OPT_SOURCE_LL: u8 = 1;
pub(crate) const OPT_TARGET_LL: u8 = 2;
pub(crate) const OPT_NONCE: u8 = 14;
pub(crate) const BROADCAST: Mac = Mac([0xff; 6]);
/// All-nodes `ff02::1` and its Ethernet group.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_NODES_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 1]);
/// A unicast MAC no lab host has: a bridge floods frames to it to every port.
pub const UNKNOWN_UNICAST: Mac = Mac([0x02, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a]);

/// ARP fields a frame may get wrong.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arp {
    pub(crate) htype: u16,
    pub(crate) ptype: u16,
    pub(crate) hlen: u8,
    pub(crate) plen: u8,
    pub(crate) op: u16,
    pub(crate) sha: Mac,
    pub(crate) spa: Ipv4Addr,
    pub(crate) tha: Mac,
    pub(crate) tpa: Ipv4Addr,
}

impl Arp {
    pub(crate) fn request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Self {
        Self {
            htype: 1,
            ptype: 0x0800,
            hlen: 6,
            plen: 4,
            op: 1,
            sha,
            spa,
            tha: Mac::default(),
            tpa,
        }
    }

    /// The 28-byte Ethernet/IPv4 layout (whatever `hlen`/`plen` claim).
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(28);
        a.extend_from_slice(&self.htype.to_be_bytes());
        a.extend_from_slice(&self.ptype.to_be_bytes());
        a.extend_from_slice(&[self.hlen, self.plen]);
        a.extend_from_slice(&self.op.to_be_bytes());
        a.extend_from_slice(&self.sha.0);
        a.extend_from_slice(&self.spa.octets());
        a.extend_from_slice(&self.tha.0);
        a.extend_from_slice(&self.tpa.octets());
        a
    }
}

/// A broadcast ARP request (42 bytes) for `target` from `mac`/`ip`.
#[must_use]
pub fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    eth(
        BROADCAST,
        mac,
        ETH_P_ARP,
        &Arp::request(mac, ip, target).bytes(),
    )
}

/// The solicited-node multicast group of `ip` and its Ethernet address.
#[must_use]
pub fn solicited_node(ip: Ipv6Addr) -> (Ipv6Addr, Mac) {
    let o = ip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    (group, Mac([0x33, 0x33, 0xff, o[13], o[14], o[15]]))
}

/// IPv6 header fields a frame may get wrong.
#[derive(Clone, Copy, Debug)]
pub(crate) struct V6 {
    pub(crate) version: u8,
    pub(crate) next: u8,
    pub(crate) hop: u8,
    /// `None`: the payload's length.
    pub(crate) plen: Option<u16>,
    pub(crate) src: Ipv6Addr,
    pub(crate) dst: Ipv6Addr,
}

impl V6 {
    pub(crate) fn icmp(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self {
            version: 6,
            next: PROTO_ICMPV6,
            hop: 255,
            plen: None,
            src,
            dst,
        }
    }

    pub(crate) fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = self.version << 4;
        let len = self
            .plen
            .unwrap_or_else(|| u16::try_from(payload.len()).unwrap_or(u16::MAX));
        p[4..6].copy_from_slice(&len.to_be_bytes());
        p[6] = self.next;
        p[7] = self.hop;
        p[8..24].copy_from_slice(&self.src.octets());
        p[24..40].copy_from_slice(&self.dst.octets());
        p.extend_from_slice(payload);
        p
    }
}

/// An `ICMPv6` NS/NA body: type, code, checksum over the pseudo-header, flags, target, options.
pub(crate) fn nd_message(
    kind: u8,
    code: u8,
    flags: u8,
    target: Ipv6Addr,
    options: &[u8],
    (src, dst): (Ipv6Addr, Ipv6Addr),
) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(options);
    let sum = checksum(&[
        &pseudo_header(IpAddr::V6(src), IpAddr::V6(dst), PROTO_ICMPV6, m.len()),
        &m,
    ]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

pub(crate) fn ll_option(kind: u8, mac: Mac) -> Vec<u8> {
    let mut o = vec![kind, 1];
    o.extend_from_slice(&mac.0);
    o
}

/// A Neighbor Solicitation for `target` from `mac`/`ip` to the target's solicited-node group,
/// with a source link-layer address option (86 bytes).
#[must_use]
pub fn neighbor_solicitation(mac: Mac, ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let body = nd_message(
        ND_SOLICIT,
        0,
        0,
        target,
        &ll_option(OPT_SOURCE_LL, mac),
        (ip, group),
    );
    eth(
        group_mac,
        mac,
        ETH_P_IPV6,
        &V6::icmp(ip, group).packet(&body),
    )
}

/// A request for `target` (ARP or NS, by family) from `mac`/`ip`.
///
/// # Panics
/// If `ip` and `target` are of different families.
#[must_use]
pub fn request(mac: Mac, ip: IpAddr, target: IpAddr) -> Vec<u8> {
    match (ip, target) {
        (IpAddr::V4(ip), IpAddr::V4(t)) => arp_request(mac, ip, t),
        (IpAddr::V6(ip), IpAddr::V6(t)) => neighbor_solicitation(mac, ip, t),
        _ => panic!("request for {target} from {ip}: different families"),
    }
}
