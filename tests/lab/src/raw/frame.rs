//! Frame builders: MAC addresses, the Internet checksum, and Ethernet, VLAN, IPv4, IPv6
//! (with extension headers), TCP and UDP headers written field by field, so a test can get any
//! of them wrong on purpose.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub(crate) const ETH_IPV4: u16 = 0x0800;
pub(crate) const ETH_IPV6: u16 = 0x86dd;
pub(crate) const ETH_VLAN: u16 = 0x8100;
pub(crate) const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
pub(crate) const PROTO_UDP: u8 = 17;
pub(crate) const PROTO_SCTP: u8 = 132;
pub(crate) const PROTO_EXPERIMENTAL: u8 = 253;
pub(crate) const V6_HOP_BY_HOP: u8 = 0;
pub(crate) const V6_FRAGMENT: u8 = 44;
pub(crate) const V6_DEST_OPTS: u8 = 60;

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const ACK: u8 = 0x10;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| format!("bad MAC {s:?}"))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("bad MAC {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("bad MAC {s:?}"));
        }
        Ok(Self(out))
    }
}

/// Internet checksum (RFC 1071) of `chunks` laid end to end (each of even length but the last).
pub(crate) fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for chunk in chunks {
        for &b in *chunk {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

pub(crate) fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
        p.extend_from_slice(&s.octets());
        p.extend_from_slice(&d.octets());
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        return p;
    }
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    };
    p.extend_from_slice(&v6(src).octets());
    p.extend_from_slice(&v6(dst).octets());
    p.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

/// A TCP segment with a correct checksum; `doff` is written as given (the header itself is
/// always 20 bytes).
pub(crate) fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    doff: u8,
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x1357_9bdf_u32.to_be_bytes());
    if flags & ACK != 0 {
        t[8..12].copy_from_slice(&0x2468_ace0_u32.to_be_bytes());
    }
    t[12] = doff << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let sum = checksum(&[&pseudo_header(src, dst, PROTO_TCP, t.len()), &t]);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

pub(crate) fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    tcp(src, dst, sport, dport, SYN, 5)
}

/// A UDP datagram with a correct checksum; `len` overrides the length field.
pub(crate) fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, len: Option<u16>) -> Vec<u8> {
    let payload = b"ferrite-lab?\n";
    let mut u = vec![0u8; 8];
    u.extend_from_slice(payload);
    let real = u16::try_from(u.len()).expect("small");
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&len.unwrap_or(real).to_be_bytes());
    let sum = checksum(&[&pseudo_header(src, dst, PROTO_UDP, u.len()), &u]);
    u[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
    u
}

/// IPv4 header fields a frame may get wrong.
#[derive(Clone, Debug)]
pub(crate) struct V4 {
    pub(crate) version: u8,
    /// Written as given; the header is 20 bytes plus `options`.
    pub(crate) ihl: u8,
    pub(crate) tot_len: Option<u16>,
    /// Flags and fragment offset (in 8-byte units), as on the wire.
    pub(crate) frag: u16,
    pub(crate) proto: u8,
    pub(crate) options: Vec<u8>,
    pub(crate) bad_checksum: bool,
}

impl V4 {
    pub(crate) fn new(proto: u8) -> Self {
        Self {
            version: 4,
            ihl: 5,
            tot_len: None,
            frag: 0x4000, // DF
            proto,
            options: Vec::new(),
            bad_checksum: false,
        }
    }
}

pub(crate) fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, h: &V4, id: u16, payload: &[u8]) -> Vec<u8> {
    let hlen = 20 + h.options.len();
    let mut p = vec![0u8; hlen];
    p[0] = (h.version << 4) | (h.ihl & 0x0f);
    let tot = h
        .tot_len
        .unwrap_or_else(|| u16::try_from(hlen + payload.len()).unwrap_or(u16::MAX));
    p[2..4].copy_from_slice(&tot.to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&h.frag.to_be_bytes());
    p[8] = 64;
    p[9] = h.proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(&h.options);
    let mut sum = checksum(&[&p]);
    if h.bad_checksum {
        sum ^= 0x5a5a;
    }
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

pub(crate) fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    payload: &[u8],
    plen: Option<u16>,
) -> Vec<u8> {
    ipv6_with_version(6, src, dst, next, payload, plen)
}

pub(crate) fn ipv6_with_version(
    version: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    payload: &[u8],
    plen: Option<u16>,
) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = version << 4;
    let len = plen.unwrap_or_else(|| u16::try_from(payload.len()).unwrap_or(u16::MAX));
    p[4..6].copy_from_slice(&len.to_be_bytes());
    p[6] = next;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

/// An 8-byte hop-by-hop or destination-options header (`hdr_ext_len` as given) before `rest`.
pub(crate) fn v6_opts(next: u8, hdr_ext_len: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, hdr_ext_len, 1, 4, 0, 0, 0, 0]; // PadN of 4 bytes
    h.extend_from_slice(rest);
    h
}

/// A fragment header (offset in 8-byte units, more-fragments flag) before `rest`.
pub(crate) fn v6_frag(next: u8, offset: u16, more: bool, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&0x00c0_ffee_u32.to_be_bytes());
    h.extend_from_slice(rest);
    h
}

pub(crate) fn eth(src: Mac, dst: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(dst, src, ethertype, payload)
}

/// An untagged Ethernet frame: destination, source, `EtherType`, payload.
#[must_use]
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(crate) fn eth_vlan(src: Mac, dst: Mac, vid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETH_VLAN.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
