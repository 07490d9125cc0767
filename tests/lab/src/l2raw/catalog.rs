//! The catalog: truncated, malformed and unusual ARP/NDP frames, each from its own sender MAC
//! so that any answer names the frame that provoked it, with what an announcer must do with it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::raw::Mac;

use super::{Arp, BROADCAST, ETH_P_ARP, ETH_P_VLAN, UNKNOWN_UNICAST, eth, nd_catalog};

/// What an announcer must do with a frame of the [`catalog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// A well-formed request for the announced address: must be answered (the controls).
    Answer,
    /// A duplicate address detection probe (source `::`) for the announced address: must draw
    /// an unsolicited advertisement with the Override flag to all-nodes (RFC 4861 7.2.4).
    Defend,
    /// Truncated, malformed, not a request, for another address, addressed to another host
    /// or tagged for another VLAN: must never be answered.
    Silent,
    /// Legal or arguable (trailing bytes, extension headers, DAD probes, odd sender
    /// addresses): reported, not judged.
    Either,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Answer => "answer",
            Self::Defend => "defend",
            Self::Silent => "silent",
            Self::Either => "either",
        })
    }
}

/// One crafted ARP/NDP frame. An answer to it is sent to `reply_to` (its own sender MAC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Frame {
    pub kind: String,
    pub expect: Expect,
    pub bytes: Vec<u8>,
    pub reply_to: Mac,
}

/// Where the catalog aims: the announced address (`target`), sent from `src` on a host of the
/// same LAN, and the announcer's MAC (for unicast requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Aim {
    pub src: IpAddr,
    pub target: IpAddr,
    pub owner_mac: Mac,
}

/// The sender MAC of frame `index` of round `seq`: locally administered, unique per frame.
#[must_use]
pub fn sender_mac(seq: u16, index: usize) -> Mac {
    let [s0, s1] = seq.to_be_bytes();
    let [i0, i1] = u16::try_from(index).unwrap_or(u16::MAX).to_be_bytes();
    Mac([0x02, 0x1b, s0, s1, i0, i1])
}

/// A named change to a well-formed ARP request.
pub(crate) type ArpChange = (&'static str, fn(&mut Arp));

pub(crate) struct Catalog {
    pub(crate) frames: Vec<L2Frame>,
    pub(crate) seq: u16,
}

impl Catalog {
    /// The MAC the next frame sends from.
    pub(crate) fn mac(&self) -> Mac {
        sender_mac(self.seq, self.frames.len())
    }

    pub(crate) fn push(&mut self, kind: &str, expect: Expect, bytes: Vec<u8>) {
        let reply_to = self.mac();
        self.push_to(kind, expect, bytes, reply_to);
    }

    pub(crate) fn push_to(&mut self, kind: &str, expect: Expect, bytes: Vec<u8>, reply_to: Mac) {
        self.frames.push(L2Frame {
            kind: kind.to_owned(),
            expect,
            bytes,
            reply_to,
        });
    }
}

/// The ARP or NDP catalog for `aim` (by its family). `seq` varies the sender MACs between
/// rounds.
///
/// # Panics
/// If `aim.src` and `aim.target` are of different families.
#[must_use]
pub fn catalog(aim: &L2Aim, seq: u16) -> Vec<L2Frame> {
    let mut c = Catalog {
        frames: Vec::new(),
        seq,
    };
    match (aim.src, aim.target) {
        (IpAddr::V4(s), IpAddr::V4(t)) => arp_catalog(&mut c, aim, s, t),
        (IpAddr::V6(s), IpAddr::V6(t)) => nd_catalog(&mut c, aim, s, t),
        _ => panic!("catalog source and target of different families"),
    }
    c.frames
}

pub(crate) fn next_v4(ip: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(1))
}

pub(crate) fn next_v6(ip: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(ip).wrapping_add(1))
}

#[expect(
    clippy::many_single_char_names,
    clippy::too_many_lines,
    reason = "a flat list of frames reads best with short names for the fixed parts"
)]
pub(crate) fn arp_catalog(c: &mut Catalog, aim: &L2Aim, s: Ipv4Addr, t: Ipv4Addr) {
    use Expect::{Answer, Either, Silent};
    let req = |m: Mac| Arp::request(m, s, t);
    let bcast = |m: Mac, a: &Arp| eth(BROADCAST, m, ETH_P_ARP, &a.bytes());

    // Controls.
    let m = c.mac();
    c.push("arp-request", Answer, bcast(m, &req(m)));
    let m = c.mac();
    let mut f = bcast(m, &req(m));
    f.resize(60, 0);
    c.push("arp-request-padded-60", Answer, f);
    let m = c.mac();
    c.push(
        "arp-request-unicast-to-owner",
        Answer,
        eth(aim.owner_mac, m, ETH_P_ARP, &req(m).bytes()),
    );

    // Truncated.
    let m = c.mac();
    c.push(
        "arp-ethernet-header-only",
        Silent,
        eth(BROADCAST, m, ETH_P_ARP, &[]),
    );
    for cut in [8usize, 14, 24, 27] {
        let m = c.mac();
        let full = req(m).bytes();
        c.push(
            &format!("arp-truncated-{cut}"),
            Silent,
            eth(BROADCAST, m, ETH_P_ARP, &full[..cut]),
        );
    }
    // Wrong fixed fields.
    let variants: [ArpChange; 8] = [
        ("arp-htype-6", |a| a.htype = 6),
        ("arp-ptype-ipv6", |a| a.ptype = 0x86dd),
        ("arp-hlen-8", |a| a.hlen = 8),
        ("arp-plen-16", |a| a.plen = 16),
        ("arp-reply-for-target", |a| a.op = 2),
        ("arp-op-0", |a| a.op = 0),
        ("arp-op-rarp-request", |a| a.op = 3),
        ("arp-op-256", |a| a.op = 256),
    ];
    for (kind, change) in variants {
        let m = c.mac();
        let mut a = req(m);
        change(&mut a);
        c.push(kind, Silent, bcast(m, &a));
    }
    let m = c.mac();
    c.push(
        "arp-request-other-address",
        Silent,
        bcast(m, &Arp::request(m, s, next_v4(t))),
    );
    let m = c.mac();
    c.push(
        "arp-request-unicast-to-other-host",
        Silent,
        eth(UNKNOWN_UNICAST, m, ETH_P_ARP, &req(m).bytes()),
    );
    let m = c.mac();
    c.push(
        "arp-ethertype-ipv4",
        Silent,
        eth(BROADCAST, m, 0x0800, &req(m).bytes()),
    );

    // Arguable.
    let m = c.mac();
    let mut f = bcast(m, &req(m));
    f.extend_from_slice(&[0xa5; 1000]);
    c.push("arp-request-1000-trailing-bytes", Either, f);
    let m = c.mac();
    c.push(
        "arp-probe-sender-0.0.0.0",
        Either,
        bcast(
            m,
            &Arp {
                spa: Ipv4Addr::UNSPECIFIED,
                ..req(m)
            },
        ),
    );
    let m = c.mac();
    c.push(
        "arp-gratuitous-for-target",
        Either,
        bcast(m, &Arp { spa: t, ..req(m) }),
    );
    let m = c.mac();
    c.push(
        "arp-request-target-hardware-set",
        Either,
        bcast(
            m,
            &Arp {
                tha: UNKNOWN_UNICAST,
                ..req(m)
            },
        ),
    );
    // The reply would go to the ARP sender hardware address, not the Ethernet source.
    let m = c.mac();
    let sha = Mac([0x02, 0x1c, m.0[2], m.0[3], m.0[4], m.0[5]]);
    c.push_to(
        "arp-sender-hardware-differs-from-ethernet-source",
        Either,
        eth(BROADCAST, m, ETH_P_ARP, &Arp::request(sha, s, t).bytes()),
        sha,
    );
    let m = c.mac();
    c.push_to(
        "arp-sender-hardware-broadcast",
        Either,
        eth(
            BROADCAST,
            m,
            ETH_P_ARP,
            &Arp::request(BROADCAST, s, t).bytes(),
        ),
        BROADCAST,
    );
    let m = c.mac();
    c.push_to(
        "arp-sender-hardware-zero",
        Either,
        eth(
            BROADCAST,
            m,
            ETH_P_ARP,
            &Arp::request(Mac::default(), s, t).bytes(),
        ),
        Mac::default(),
    );
    let m = c.mac();
    let mut f = Vec::new();
    f.extend_from_slice(&BROADCAST.0);
    f.extend_from_slice(&m.0);
    f.extend_from_slice(&ETH_P_VLAN.to_be_bytes());
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&req(m).bytes());
    // Tagged for a VLAN this interface is not in: the address is not announced there.
    c.push("arp-vlan-tagged", Silent, f);
}
