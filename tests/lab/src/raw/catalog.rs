//! The catalog: malformed, unknown-port and stray IPv4/IPv6 frames aimed at one frontend (an
//! LB IP or a node address with its node ports), each with the treatment a datapath owes it,
//! and [`send_catalog`] to put rounds of it on the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::frame::{
    ACK, ETH_IPV4, ETH_IPV6, FIN, Mac, PROTO_EXPERIMENTAL, PROTO_ICMP, PROTO_SCTP, PROTO_TCP,
    PROTO_UDP, RST, SYN, V4, V6_DEST_OPTS, V6_FRAGMENT, V6_HOP_BY_HOP, checksum, eth, eth_vlan,
    ipv4, ipv6, ipv6_with_version, syn, tcp, udp, v6_frag, v6_opts,
};
use super::socket::RawSender;

/// How a datapath is expected to treat a frame of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Broken headers (truncated, impossible lengths, non-first fragments read as L4): must
    /// never crash anything, never reach a backend, never leave a tracked connection behind.
    Malformed,
    /// Well-formed, but to a port or protocol no service listens on: nothing to track.
    UnknownPort,
    /// Legal or arguable packets a datapath may reasonably track or forward (stray ACK/RST,
    /// a bad IP checksum, first fragments, IP options, VLAN tags, foreign MACs): reported,
    /// not judged.
    Questionable,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed",
            Self::UnknownPort => "unknown-port",
            Self::Questionable => "questionable",
        })
    }
}

impl FromStr for Class {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "malformed" => Ok(Self::Malformed),
            "unknown-port" => Ok(Self::UnknownPort),
            "questionable" => Ok(Self::Questionable),
            other => Err(format!(
                "unknown class {other:?} (malformed, unknown-port, questionable)"
            )),
        }
    }
}

/// One crafted frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: String,
    pub class: Class,
    pub bytes: Vec<u8>,
}

/// Where the catalog aims: a frontend address `dst` with one TCP and one UDP service port,
/// reached on the link with `dst_mac`, sent from `src` / `src_mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aim {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub tcp_port: u16,
    pub udp_port: u16,
}

struct Catalog {
    frames: Vec<Frame>,
}

impl Catalog {
    fn push(&mut self, kind: impl Into<String>, class: Class, bytes: Vec<u8>) {
        self.frames.push(Frame {
            kind: kind.into(),
            class,
            bytes,
        });
    }
}

/// Source ports for the frames of one catalog round: every frame gets its own, so no two
/// frames share a 5-tuple (a datapath that tracked one would otherwise hide the other).
struct SourcePorts(std::cell::Cell<u32>);

impl SourcePorts {
    fn new(seq: u16) -> Self {
        Self(std::cell::Cell::new(u32::from(seq) * 128))
    }

    fn next(&self) -> u16 {
        let n = self.0.get();
        self.0.set(n + 1);
        u16::try_from(20_000 + n % 40_000).expect("below 60000")
    }
}

/// Ports near the service ports that nothing should serve (besides fixed oddballs).
fn unknown_ports(aim: &Aim) -> Vec<u16> {
    let mut ports = vec![
        0,
        1,
        aim.tcp_port.wrapping_add(1),
        aim.tcp_port.wrapping_sub(1),
        30000,
        32767,
        65535,
    ];
    ports.retain(|p| *p != aim.tcp_port && *p != aim.udp_port);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The whole catalog for `aim`. `seq` varies source ports and IP ids, so repeated rounds
/// look like distinct flows. Frames of one family only (that of `aim.dst`).
///
/// # Panics
/// If `aim.src` and `aim.dst` are of different families.
#[must_use]
pub fn catalog(aim: &Aim, seq: u16) -> Vec<Frame> {
    let mut c = Catalog { frames: Vec::new() };
    match (aim.src, aim.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => v4_catalog(&mut c, aim, s, d, seq),
        (IpAddr::V6(s), IpAddr::V6(d)) => v6_catalog(&mut c, aim, s, d, seq),
        _ => panic!("source and destination of different families"),
    }
    c.frames
}

#[expect(
    clippy::many_single_char_names,
    clippy::too_many_lines,
    reason = "a flat list of frames reads best with short names for the fixed parts"
)]
fn v4_catalog(c: &mut Catalog, aim: &Aim, s: Ipv4Addr, d: Ipv4Addr, seq: u16) {
    use Class::{Malformed, Questionable, UnknownPort};
    let (src, dst) = (IpAddr::V4(s), IpAddr::V4(d));
    let ports = SourcePorts::new(seq);
    let sport = || ports.next();
    let id = 0x4000u16.wrapping_add(seq);
    let (p, u) = (aim.tcp_port, aim.udp_port);
    let frame = |payload: &[u8]| eth(aim.src_mac, aim.dst_mac, ETH_IPV4, payload);
    let ip = |h: &V4, payload: &[u8]| frame(&ipv4(s, d, h, id, payload));
    let good_syn = || syn(src, dst, ports.next(), p);
    let tcp_h = V4::new(PROTO_TCP);
    let udp_h = V4::new(PROTO_UDP);

    // Malformed: everything aims at the service port, so a parser that reads past what the
    // headers allow finds a "connection" to track.
    c.push("eth-header-only", Malformed, frame(&[]));
    c.push(
        "ipv4-header-truncated",
        Malformed,
        frame(&ipv4(s, d, &tcp_h, id, &good_syn())[..12]),
    );
    c.push(
        "ipv4-ihl-3",
        Malformed,
        ip(
            &V4 {
                ihl: 3,
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "ipv4-ihl-15-past-end",
        Malformed,
        ip(
            &V4 {
                ihl: 15,
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "ipv4-version-5",
        Malformed,
        ip(
            &V4 {
                version: 5,
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "ipv4-total-length-excludes-l4",
        Malformed,
        ip(
            &V4 {
                tot_len: Some(20),
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "ipv4-total-length-past-end",
        Malformed,
        ip(
            &V4 {
                tot_len: Some(1400),
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "ipv4-total-length-below-header",
        Malformed,
        ip(
            &V4 {
                tot_len: Some(12),
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "tcp-header-truncated-8",
        Malformed,
        ip(&tcp_h, &good_syn()[..8]),
    );
    c.push(
        "tcp-header-truncated-2",
        Malformed,
        ip(&tcp_h, &good_syn()[..2]),
    );
    c.push("tcp-header-missing", Malformed, ip(&tcp_h, &[]));
    c.push(
        "tcp-data-offset-2",
        Malformed,
        ip(&tcp_h, &tcp(src, dst, sport(), p, SYN, 2)),
    );
    c.push(
        "tcp-data-offset-15-past-end",
        Malformed,
        ip(&tcp_h, &tcp(src, dst, sport(), p, SYN, 15)),
    );
    let good_udp = || udp(src, dst, ports.next(), u, None);
    c.push(
        "udp-header-truncated-4",
        Malformed,
        ip(&udp_h, &good_udp()[..4]),
    );
    c.push(
        "udp-length-below-header",
        Malformed,
        ip(&udp_h, &udp(src, dst, sport(), u, Some(4))),
    );
    c.push(
        "udp-length-past-end",
        Malformed,
        ip(&udp_h, &udp(src, dst, sport(), u, Some(512))),
    );
    // Non-first fragments carry no L4 header; these carry bytes that look like one.
    c.push(
        "ipv4-later-fragment-tcp",
        Malformed,
        ip(
            &V4 {
                frag: 8,
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "ipv4-later-fragment-udp",
        Malformed,
        ip(
            &V4 {
                frag: 0x2000 | 1,
                ..udp_h.clone()
            },
            &good_udp(),
        ),
    );

    // Unknown ports and protocols, well-formed.
    for port in unknown_ports(aim) {
        c.push(
            format!("tcp-syn-port-{port}"),
            UnknownPort,
            ip(&tcp_h, &syn(src, dst, sport(), port)),
        );
        c.push(
            format!("udp-port-{port}"),
            UnknownPort,
            ip(&udp_h, &udp(src, dst, sport(), port, None)),
        );
    }
    if u != p {
        c.push(
            format!("tcp-syn-to-udp-service-port-{u}"),
            UnknownPort,
            ip(&tcp_h, &syn(src, dst, sport(), u)),
        );
        c.push(
            format!("udp-to-tcp-service-port-{p}"),
            UnknownPort,
            ip(&udp_h, &udp(src, dst, sport(), p, None)),
        );
    }
    c.push(
        "ip-protocol-253",
        UnknownPort,
        ip(&V4::new(PROTO_EXPERIMENTAL), &good_syn()),
    );
    let mut sctp = Vec::new();
    sctp.extend_from_slice(&sport().to_be_bytes());
    sctp.extend_from_slice(&p.to_be_bytes());
    sctp.extend_from_slice(&[0; 8]);
    sctp.extend_from_slice(&[
        1, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0, 1, 0, 1, 0, 0, 0, 1,
    ]);
    c.push(
        "sctp-init-to-tcp-service-port",
        UnknownPort,
        ip(&V4::new(PROTO_SCTP), &sctp),
    );

    // Questionable: reported only.
    c.push(
        "ipv4-bad-checksum-syn",
        Questionable,
        ip(
            &V4 {
                bad_checksum: true,
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    c.push(
        "ipv4-options-syn",
        Questionable,
        ip(
            &V4 {
                ihl: 6,
                options: vec![1, 1, 1, 0],
                ..tcp_h.clone()
            },
            &good_syn(),
        ),
    );
    for (name, flags) in [
        ("tcp-ack-without-connection", ACK),
        ("tcp-rst-without-connection", RST),
        ("tcp-fin-without-connection", FIN | ACK),
        ("tcp-syn-ack-without-connection", SYN | ACK),
    ] {
        c.push(
            name,
            Questionable,
            ip(&tcp_h, &tcp(src, dst, sport(), p, flags, 5)),
        );
    }
    c.push(
        "tcp-syn-from-port-0",
        Questionable,
        ip(&tcp_h, &syn(src, dst, 0, p)),
    );
    c.push(
        "ipv4-first-fragment-udp",
        Questionable,
        ip(
            &V4 {
                frag: 0x2000,
                ..udp_h.clone()
            },
            &good_udp(),
        ),
    );
    c.push(
        "vlan-tagged-syn",
        Questionable,
        eth_vlan(
            aim.src_mac,
            aim.dst_mac,
            100,
            ETH_IPV4,
            &ipv4(s, d, &tcp_h, id, &good_syn()),
        ),
    );
    c.push(
        "foreign-mac-syn",
        Questionable,
        eth(
            aim.src_mac,
            Mac([0x02, 0, 0, 0, 0, 0x99]),
            ETH_IPV4,
            &ipv4(s, d, &tcp_h, id, &good_syn()),
        ),
    );
    let mut echo = vec![8, 0, 0, 0, 0x12, 0x34];
    echo.extend_from_slice(&seq.to_be_bytes());
    echo.extend_from_slice(b"ferrite-lab");
    let sum = checksum(&[&echo]);
    echo[2..4].copy_from_slice(&sum.to_be_bytes());
    c.push("icmp-echo", Questionable, ip(&V4::new(PROTO_ICMP), &echo));
}

#[expect(
    clippy::many_single_char_names,
    reason = "a flat list of frames reads best with short names for the fixed parts"
)]
fn v6_catalog(c: &mut Catalog, aim: &Aim, s: Ipv6Addr, d: Ipv6Addr, seq: u16) {
    use Class::{Malformed, Questionable, UnknownPort};
    let (src, dst) = (IpAddr::V6(s), IpAddr::V6(d));
    let ports = SourcePorts::new(seq);
    let sport = || ports.next();
    let (p, u) = (aim.tcp_port, aim.udp_port);
    let frame = |payload: &[u8]| eth(aim.src_mac, aim.dst_mac, ETH_IPV6, payload);
    let good_syn = || syn(src, dst, ports.next(), p);
    let good_udp = || udp(src, dst, ports.next(), u, None);
    let ip = |next: u8, payload: &[u8]| frame(&ipv6(s, d, next, payload, None));

    c.push("ipv6-eth-header-only", Malformed, frame(&[]));
    c.push(
        "ipv6-header-truncated",
        Malformed,
        frame(&ipv6(s, d, PROTO_TCP, &good_syn(), None)[..20]),
    );
    c.push(
        "ipv6-version-4",
        Malformed,
        frame(&ipv6_with_version(4, s, d, PROTO_TCP, &good_syn(), None)),
    );
    c.push(
        "ipv6-payload-length-excludes-l4",
        Malformed,
        frame(&ipv6(s, d, PROTO_TCP, &good_syn(), Some(0))),
    );
    c.push(
        "ipv6-payload-length-past-end",
        Malformed,
        frame(&ipv6(s, d, PROTO_TCP, &good_syn(), Some(1400))),
    );
    c.push(
        "ipv6-tcp-header-truncated-8",
        Malformed,
        ip(PROTO_TCP, &good_syn()[..8]),
    );
    c.push(
        "ipv6-udp-length-below-header",
        Malformed,
        ip(PROTO_UDP, &udp(src, dst, sport(), u, Some(4))),
    );
    c.push(
        "ipv6-hop-by-hop-past-end",
        Malformed,
        ip(V6_HOP_BY_HOP, &v6_opts(PROTO_TCP, 255, &good_syn())),
    );
    c.push(
        "ipv6-later-fragment-tcp",
        Malformed,
        ip(V6_FRAGMENT, &v6_frag(PROTO_TCP, 8, false, &good_syn())),
    );

    for port in unknown_ports(aim) {
        c.push(
            format!("ipv6-tcp-syn-port-{port}"),
            UnknownPort,
            ip(PROTO_TCP, &syn(src, dst, sport(), port)),
        );
        c.push(
            format!("ipv6-udp-port-{port}"),
            UnknownPort,
            ip(PROTO_UDP, &udp(src, dst, sport(), port, None)),
        );
    }
    c.push(
        "ipv6-next-header-253",
        UnknownPort,
        ip(PROTO_EXPERIMENTAL, &good_syn()),
    );

    let mut chain = good_syn();
    for _ in 0..8 {
        chain = v6_opts(V6_DEST_OPTS, 0, &chain);
    }
    // The innermost header's "next" must be TCP; the outer ones point at more options.
    chain[8 * 7] = PROTO_TCP;
    c.push(
        "ipv6-eight-destination-options-syn",
        Questionable,
        ip(V6_DEST_OPTS, &chain),
    );
    c.push(
        "ipv6-first-fragment-udp",
        Questionable,
        ip(V6_FRAGMENT, &v6_frag(PROTO_UDP, 0, true, &good_udp())),
    );
    c.push(
        "ipv6-tcp-ack-without-connection",
        Questionable,
        ip(PROTO_TCP, &tcp(src, dst, sport(), p, ACK, 5)),
    );
}

/// What [`send_catalog`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageReport {
    /// Kind → frames sent.
    pub sent: BTreeMap<String, u64>,
    /// Kind → the error of a failed send.
    pub failed: BTreeMap<String, String>,
    /// Kind → class.
    pub classes: BTreeMap<String, Class>,
}

#[must_use]
/// Sends `rounds` rounds of the catalog for `aim` (classes in `only`, or all) on `sender`.
pub fn send_catalog(
    sender: &RawSender,
    aim: &Aim,
    rounds: u16,
    only: Option<Class>,
) -> GarbageReport {
    let mut report = GarbageReport::default();
    for seq in 0..rounds {
        for frame in catalog(aim, seq) {
            if only.is_some_and(|c| c != frame.class) {
                continue;
            }
            report.classes.insert(frame.kind.clone(), frame.class);
            match sender.send(&frame.bytes) {
                Ok(()) => *report.sent.entry(frame.kind).or_default() += 1,
                Err(e) => {
                    report.failed.insert(frame.kind, e.to_string());
                }
            }
        }
    }
    report
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
