//! Parsing what announcers send: ARP replies, gratuitous ARP, solicited and unsolicited
//! Neighbor Advertisements.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::raw::{Mac, checksum, pseudo_header};

use super::{ETH_P_ARP, ETH_P_IPV6, ND_ADVERT, OPT_TARGET_LL, PROTO_ICMPV6};

/// What an answer frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerKind {
    /// An ARP reply, or a Neighbor Advertisement with the Solicited flag.
    Reply,
    /// A gratuitous ARP request (sender = target address), or an unsolicited NA.
    Announcement,
}

/// An ARP or NDP frame claiming an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub kind: AnswerKind,
    /// The address claimed.
    pub ip: IpAddr,
    /// The link-layer address claimed (ARP sender hardware address, NA target link-layer
    /// option; the Ethernet source when the NA has none).
    pub mac: Mac,
    pub eth_src: Mac,
    pub eth_dst: Mac,
    /// NA only: the IPv6 destination.
    pub ip_dst: Option<IpAddr>,
    /// NA only: hop limit 255, code 0, a correct checksum and a target link-layer option
    /// (always true for ARP).
    pub well_formed: bool,
    /// NA only: the Override flag.
    pub override_flag: bool,
}

pub(crate) fn mac_at(f: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&f[at..at + 6]);
    Mac(m)
}

pub(crate) fn v4_at(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

pub(crate) fn v6_at(f: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&f[at..at + 16]);
    Ipv6Addr::from(o)
}

/// Parses an ARP reply, gratuitous ARP or Neighbor Advertisement (untagged Ethernet).
#[must_use]
pub fn parse_answer(f: &[u8]) -> Option<Answer> {
    if f.len() < 14 {
        return None;
    }
    let (eth_dst, eth_src) = (mac_at(f, 0), mac_at(f, 6));
    match u16::from_be_bytes([f[12], f[13]]) {
        ETH_P_ARP => {
            if f.len() < 42 || f[14..20] != [0, 1, 8, 0, 6, 4] {
                return None;
            }
            let op = u16::from_be_bytes([f[20], f[21]]);
            let (sha, spa, tpa) = (mac_at(f, 22), v4_at(f, 28), v4_at(f, 38));
            let kind = match op {
                2 => AnswerKind::Reply,
                1 if spa == tpa && !spa.is_unspecified() => AnswerKind::Announcement,
                _ => return None,
            };
            Some(Answer {
                kind,
                ip: IpAddr::V4(spa),
                mac: sha,
                eth_src,
                eth_dst,
                ip_dst: None,
                well_formed: true,
                override_flag: false,
            })
        }
        ETH_P_IPV6 => {
            if f.len() < 14 + 40 + 24
                || f[14] >> 4 != 6
                || f[20] != PROTO_ICMPV6
                || f[54] != ND_ADVERT
            {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
            let end = (54 + plen).min(f.len());
            let msg = &f[54..end];
            if msg.len() < 24 {
                return None;
            }
            let (src, dst) = (v6_at(f, 22), v6_at(f, 38));
            let sum_ok = checksum(&[
                &pseudo_header(IpAddr::V6(src), IpAddr::V6(dst), PROTO_ICMPV6, msg.len()),
                msg,
            ]) == 0;
            let target = v6_at(f, 62);
            let mut tlla = None;
            let mut at = 24;
            while at + 2 <= msg.len() {
                let len = usize::from(msg[at + 1]) * 8;
                if len == 0 || at + len > msg.len() {
                    break;
                }
                if msg[at] == OPT_TARGET_LL && len == 8 {
                    tlla = Some(mac_at(msg, at + 2));
                }
                at += len;
            }
            let flags = msg[4];
            Some(Answer {
                kind: if flags & 0x40 != 0 {
                    AnswerKind::Reply
                } else {
                    AnswerKind::Announcement
                },
                ip: IpAddr::V6(target),
                mac: tlla.unwrap_or(eth_src),
                eth_src,
                eth_dst,
                ip_dst: Some(IpAddr::V6(dst)),
                well_formed: f[21] == 255 && msg[1] == 0 && sum_ok && tlla.is_some(),
                override_flag: flags & 0x20 != 0,
            })
        }
        _ => None,
    }
}
