//! Hand-made Ethernet frames for robustness tests of a load balancer's datapath: a catalog of
//! malformed, unknown-port and stray IPv4/IPv6 packets aimed at one frontend (an LB IP or a
//! node address with its node ports), and an `AF_PACKET` sender that puts any byte string on
//! the wire, whatever the kernel's own IP stack would refuse to build.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;
const PROTO_EXPERIMENTAL: u8 = 253;
const V6_HOP_BY_HOP: u8 = 0;
const V6_FRAGMENT: u8 = 44;
const V6_DEST_OPTS: u8 = 60;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

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
fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, doff: u8) -> Vec<u8> {
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

fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    tcp(src, dst, sport, dport, SYN, 5)
}

/// A UDP datagram with a correct checksum; `len` overrides the length field.
fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, len: Option<u16>) -> Vec<u8> {
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
struct V4 {
    version: u8,
    /// Written as given; the header is 20 bytes plus `options`.
    ihl: u8,
    tot_len: Option<u16>,
    /// Flags and fragment offset (in 8-byte units), as on the wire.
    frag: u16,
    proto: u8,
    options: Vec<u8>,
    bad_checksum: bool,
}

impl V4 {
    fn new(proto: u8) -> Self {
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

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, h: &V4, id: u16, payload: &[u8]) -> Vec<u8> {
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

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8], plen: Option<u16>) -> Vec<u8> {
    ipv6_with_version(6, src, dst, next, payload, plen)
}

fn ipv6_with_version(
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
fn v6_opts(next: u8, hdr_ext_len: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, hdr_ext_len, 1, 4, 0, 0, 0, 0]; // PadN of 4 bytes
    h.extend_from_slice(rest);
    h
}

/// A fragment header (offset in 8-byte units, more-fragments flag) before `rest`.
fn v6_frag(next: u8, offset: u16, more: bool, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&0x00c0_ffee_u32.to_be_bytes());
    h.extend_from_slice(rest);
    h
}

fn eth(src: Mac, dst: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn eth_vlan(src: Mac, dst: Mac, vid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETH_VLAN.to_be_bytes());
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
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

/// An `AF_PACKET` socket bound to one interface of the calling thread's netns.
#[derive(Debug)]
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSender {
    /// Opens a sender on `ifname` (in the netns of the calling thread).
    pub fn open(ifname: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // Protocol 0: this socket only sends, it receives nothing.
        // SAFETY: socket(2) returns a fresh descriptor we take ownership of.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: fd is a fresh descriptor.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            ifindex: i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex too large"))?,
        })
    }

    /// Sends `frame` (from its Ethernet header on) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).expect("fits");
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        if frame.len() >= 14 {
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        }
        // SAFETY: frame and sll are live for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&sll).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("fits"),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// The MAC address of `ifname` in the calling thread's netns.
pub fn mac_of(ifname: &str) -> io::Result<Mac> {
    #[repr(C)]
    struct IfreqHwaddr {
        name: [u8; 16],
        family: u16,
        data: [u8; 14],
        _pad: [u8; 8],
    }
    if ifname.len() >= 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: plain data, all-zero is valid.
    let mut req: IfreqHwaddr = unsafe { zeroed() };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: a datagram socket just for the ioctl.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: req is a live ifreq-sized buffer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.data[..6]);
    Ok(Mac(mac))
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
mod tests {
    use super::*;

    fn aim(src: &str, dst: &str) -> Aim {
        Aim {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            tcp_port: 30080,
            udp_port: 30053,
        }
    }

    #[test]
    fn checksums_match_known_values() {
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03], &[0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        let h = ipv4(
            "192.168.50.3".parse().unwrap(),
            "192.168.50.1".parse().unwrap(),
            &V4::new(PROTO_TCP),
            1,
            &[],
        );
        // A correct header sums to zero.
        assert_eq!(checksum(&[&h]), 0);
        let src: IpAddr = "192.168.50.3".parse().unwrap();
        let dst: IpAddr = "192.168.50.1".parse().unwrap();
        let t = syn(src, dst, 1000, 80);
        assert_eq!(
            checksum(&[&pseudo_header(src, dst, PROTO_TCP, t.len()), &t]),
            0
        );
        let src6: IpAddr = "fd00:50::3".parse().unwrap();
        let dst6: IpAddr = "fd00:50::1".parse().unwrap();
        let u = udp(src6, dst6, 1000, 53, None);
        assert_eq!(
            checksum(&[&pseudo_header(src6, dst6, PROTO_UDP, u.len()), &u]),
            0
        );
    }

    #[test]
    fn catalog_frames_are_what_they_say() {
        let frames = catalog(&aim("192.168.50.3", "192.168.50.1"), 0);
        let get = |k: &str| {
            frames
                .iter()
                .find(|f| f.kind == k)
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        let kinds: std::collections::BTreeSet<_> = frames.iter().map(|f| &f.kind).collect();
        assert_eq!(kinds.len(), frames.len(), "kinds are unique");
        for class in [Class::Malformed, Class::UnknownPort, Class::Questionable] {
            assert!(frames.iter().filter(|f| f.class == class).count() >= 5);
        }
        assert_eq!(get("eth-header-only").bytes.len(), 14);
        assert_eq!(&get("eth-header-only").bytes[12..14], &[0x08, 0x00]);
        assert_eq!(get("ipv4-header-truncated").bytes.len(), 14 + 12);
        assert_eq!(get("ipv4-ihl-3").bytes[14], 0x43);
        assert_eq!(get("ipv4-version-5").bytes[14] >> 4, 5);
        let short = &get("ipv4-total-length-excludes-l4").bytes;
        assert_eq!(u16::from_be_bytes([short[16], short[17]]), 20);
        assert_eq!(short.len(), 14 + 40);
        assert_eq!(get("tcp-header-truncated-8").bytes.len(), 14 + 28);
        let frag = &get("ipv4-later-fragment-tcp").bytes;
        assert_eq!(u16::from_be_bytes([frag[20], frag[21]]) & 0x1fff, 8);
        // The bytes after a later fragment's header look like the service port.
        assert_eq!(u16::from_be_bytes([frag[36], frag[37]]), 30080);
        let syn = &get("tcp-syn-port-30081").bytes;
        assert_eq!(u16::from_be_bytes([syn[36], syn[37]]), 30081);
        assert_eq!(syn[47], SYN);
        assert!(!kinds.contains(&"tcp-syn-port-30080".to_owned()));
        let vlan = &get("vlan-tagged-syn").bytes;
        assert_eq!(&vlan[12..14], &[0x81, 0x00]);
        // Every frame has its own source port (so its own 5-tuple).
        let source_port = |k: &str| {
            let b = &get(k).bytes;
            u16::from_be_bytes([b[34], b[35]])
        };
        assert_ne!(
            source_port("tcp-data-offset-2"),
            source_port("ipv4-total-length-excludes-l4")
        );
        assert_ne!(source_port("tcp-syn-port-1"), source_port("tcp-syn-port-0"));
        // Different rounds use different source ports.
        let again = catalog(&aim("192.168.50.3", "192.168.50.1"), 1);
        assert_ne!(
            again
                .iter()
                .find(|f| f.kind == "tcp-syn-port-1")
                .unwrap()
                .bytes,
            get("tcp-syn-port-1").bytes
        );
    }

    #[test]
    fn ipv6_catalog() {
        let frames = catalog(&aim("fd00:50::3", "fd00:50::1"), 0);
        let get = |k: &str| &frames.iter().find(|f| f.kind == k).unwrap().bytes;
        assert_eq!(get("ipv6-header-truncated").len(), 14 + 20);
        assert_eq!(&get("ipv6-eth-header-only")[12..14], &[0x86, 0xdd]);
        let chain = get("ipv6-eight-destination-options-syn");
        // Eight 8-byte option headers, then the TCP header with the service port.
        let tcp_at = 14 + 40 + 64;
        assert_eq!(
            u16::from_be_bytes([chain[tcp_at + 2], chain[tcp_at + 3]]),
            30080
        );
        assert_eq!(chain[14 + 40 + 56], PROTO_TCP);
        assert_eq!(chain[14 + 40], V6_DEST_OPTS);
        assert!(frames.iter().all(|f| f.kind.starts_with("ipv6-")));
    }

    #[test]
    fn macs_parse_and_print() {
        let m: Mac = "02:aB:00:01:ff:10".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:00:01:ff:10");
        assert!("02:ab:00".parse::<Mac>().is_err());
        assert!("02:ab:00:01:ff:10:11".parse::<Mac>().is_err());
        assert_eq!(mac_of("lo").unwrap(), Mac([0; 6]));
    }
}
