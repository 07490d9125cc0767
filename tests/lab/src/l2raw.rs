//! ARP and IPv6 neighbor discovery on the wire, for tests of L2 announcements: requests and
//! Neighbor Solicitations built by hand, a parser for the answers (ARP replies, gratuitous ARP,
//! solicited and unsolicited Neighbor Advertisements), [`solicit`] (one request, every answer
//! within a window), [`Watch`] (a background poller that records every answer and announcement
//! with its arrival time), [`answer_rate`] (requests as fast as possible, answers per second)
//! and [`catalog`]: truncated, malformed and unusual ARP/NDP frames, each from its own sender
//! MAC so that any answer names the frame that provoked it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::netns::Ns;
use crate::raw::{Mac, checksum, mac_of, pseudo_header};

pub const ETH_P_ALL: u16 = 0x0003;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_VLAN: u16 = 0x8100;
const PROTO_ICMPV6: u8 = 58;
const PROTO_UDP: u8 = 17;
const V6_HOP_BY_HOP: u8 = 0;
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
const OPT_NONCE: u8 = 14;
const BROADCAST: Mac = Mac([0xff; 6]);
/// A unicast MAC no lab host has: a bridge floods frames to it to every port.
pub const UNKNOWN_UNICAST: Mac = Mac([0x02, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a]);

fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// ARP fields a frame may get wrong.
#[derive(Clone, Copy, Debug)]
struct Arp {
    htype: u16,
    ptype: u16,
    hlen: u8,
    plen: u8,
    op: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
}

impl Arp {
    fn request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Self {
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
    fn bytes(&self) -> Vec<u8> {
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
struct V6 {
    version: u8,
    next: u8,
    hop: u8,
    /// `None`: the payload's length.
    plen: Option<u16>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
}

impl V6 {
    fn icmp(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self {
            version: 6,
            next: PROTO_ICMPV6,
            hop: 255,
            plen: None,
            src,
            dst,
        }
    }

    fn packet(&self, payload: &[u8]) -> Vec<u8> {
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
fn nd_message(
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

fn ll_option(kind: u8, mac: Mac) -> Vec<u8> {
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
    /// NA only: hop limit 255, code 0, a correct checksum and a target link-layer option
    /// (always true for ARP).
    pub well_formed: bool,
    /// NA only: the Override flag.
    pub override_flag: bool,
}

fn mac_at(f: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&f[at..at + 6]);
    Mac(m)
}

fn v4_at(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

fn v6_at(f: &[u8], at: usize) -> Ipv6Addr {
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
                well_formed: f[21] == 255 && msg[1] == 0 && sum_ok && tlla.is_some(),
                override_flag: flags & 0x20 != 0,
            })
        }
        _ => None,
    }
}

/// A packet socket bound to one interface and protocol, in the netns it was opened in.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    mac: Mac,
}

/// A received frame.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub bytes: Vec<u8>,
    /// Sent by this host (`PACKET_OUTGOING`).
    pub outgoing: bool,
}

impl PacketSocket {
    /// Opens a socket on `ifname` receiving `protocol` (`ETH_P_ALL`, `ETH_P_ARP`, ...), in the
    /// calling thread's netns.
    pub fn open(ifname: &str, protocol: u16) -> io::Result<Self> {
        let name = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex too large"))?;
        let mac = mac_of(ifname)?;
        // SAFETY: socket(2) returns a fresh descriptor we take ownership of.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is fresh.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).expect("fits");
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is live for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("fits"),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, ifindex, mac })
    }

    /// Opens it inside `ns` (the socket stays bound to that netns).
    pub fn open_in(ns: &Ns, ifname: &str, protocol: u16) -> io::Result<Self> {
        ns.run(|| Self::open(ifname, protocol))
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// The interface's MAC.
    #[must_use]
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Sends `frame` as it is.
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

    /// The next frame, or `None` when `deadline` passes first.
    pub fn recv_until(&self, deadline: Instant) -> io::Result<Option<Received>> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let ms = (deadline - now).as_micros().div_ceil(1000);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, i32::try_from(ms).unwrap_or(i32::MAX)) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            let mut buf = vec![0u8; 2048];
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
            let mut len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("fits");
            // SAFETY: buf, sll and len are live for the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    std::ptr::from_mut(&mut sll).cast(),
                    &raw mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(e);
            }
            buf.truncate(usize::try_from(n).unwrap_or(0));
            return Ok(Some(Received {
                at: Instant::now(),
                bytes: buf,
                outgoing: sll.sll_pkttype == libc::PACKET_OUTGOING,
            }));
        }
    }
}

/// Sends one request for `target` from the socket's interface (`ip` as the sender address)
/// and returns every reply addressed to this interface within `window`.
pub fn solicit(
    sock: &PacketSocket,
    ip: IpAddr,
    target: IpAddr,
    window: Duration,
) -> io::Result<Vec<Answer>> {
    let deadline = Instant::now() + window;
    sock.send(&request(sock.mac(), ip, target))?;
    let mut out = Vec::new();
    while let Some(r) = sock.recv_until(deadline)? {
        if r.outgoing {
            continue;
        }
        if let Some(a) = parse_answer(&r.bytes)
            && a.kind == AnswerKind::Reply
            && a.ip == target
            && a.eth_dst == sock.mac()
        {
            out.push(a);
        }
    }
    Ok(out)
}

/// One answer seen by a [`Watch`].
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub at: Instant,
    pub answer: Answer,
}

/// What a [`Watch`] saw.
#[derive(Clone, Debug)]
pub struct WatchLog {
    /// This interface's MAC (replies to the watch's requests go there).
    pub mac: Mac,
    /// When each request went out.
    pub requests: Vec<Instant>,
    /// Every answer for the watched address (replies to anyone, announcements), in order.
    pub answers: Vec<Seen>,
}

impl WatchLog {
    /// The distinct MACs that replied to each request, by request (replies arriving before the
    /// next request count for the previous one).
    #[must_use]
    pub fn replies_by_request(&self) -> Vec<(Instant, BTreeSet<Mac>)> {
        let mut out: Vec<(Instant, BTreeSet<Mac>)> = self
            .requests
            .iter()
            .map(|t| (*t, BTreeSet::new()))
            .collect();
        for s in &self.answers {
            if s.answer.kind != AnswerKind::Reply || s.answer.eth_dst != self.mac {
                continue;
            }
            let i = self.requests.partition_point(|t| *t <= s.at);
            if i > 0 {
                out[i - 1].1.insert(s.answer.mac);
            }
        }
        out
    }

    /// Requests sent in `[from, to)` that more than one MAC answered.
    #[must_use]
    pub fn double_answered(&self, from: Instant, to: Instant) -> usize {
        self.replies_by_request()
            .iter()
            .filter(|(t, macs)| *t >= from && *t < to && macs.len() > 1)
            .count()
    }

    /// From the first to the last request sent in `[from, to)` that more than one MAC
    /// answered (`None` when none was).
    #[must_use]
    pub fn double_answered_span(&self, from: Instant, to: Instant) -> Option<Duration> {
        let times: Vec<Instant> = self
            .replies_by_request()
            .iter()
            .filter(|(t, macs)| *t >= from && *t < to && macs.len() > 1)
            .map(|(t, _)| *t)
            .collect();
        Some(*times.last()? - *times.first()?)
    }

    /// Requests sent in `[from, to)` that nobody answered.
    #[must_use]
    pub fn unanswered(&self, from: Instant, to: Instant) -> usize {
        self.replies_by_request()
            .iter()
            .filter(|(t, macs)| *t >= from && *t < to && macs.is_empty())
            .count()
    }

    /// The first answer at or after `from` that satisfies `pred`.
    pub fn first(&self, from: Instant, pred: impl Fn(&Answer) -> bool) -> Option<&Seen> {
        self.answers
            .iter()
            .find(|s| s.at >= from && pred(&s.answer))
    }

    /// The last answer at or after `from` (and before `to`) that satisfies `pred`.
    pub fn last(
        &self,
        from: Instant,
        to: Instant,
        pred: impl Fn(&Answer) -> bool,
    ) -> Option<&Seen> {
        self.answers
            .iter()
            .rev()
            .find(|s| s.at >= from && s.at < to && pred(&s.answer))
    }
}

/// Polls an address from one interface in the background: a request every `interval`, and
/// every answer or announcement for the address recorded with its arrival time.
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<io::Result<WatchLog>>>,
}

impl Watch {
    /// Starts watching `target` from `ifname` in `ns`, sending requests as `ip`.
    pub fn start(
        ns: &Ns,
        ifname: &str,
        ip: IpAddr,
        target: IpAddr,
        interval: Duration,
    ) -> io::Result<Self> {
        let sock = PacketSocket::open_in(ns, ifname, ETH_P_ALL)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("l2-watch".into())
            .spawn(move || {
                let mut log = WatchLog {
                    mac: sock.mac(),
                    requests: Vec::new(),
                    answers: Vec::new(),
                };
                let frame = request(sock.mac(), ip, target);
                let mut next = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= next {
                        sock.send(&frame)?;
                        log.requests.push(Instant::now());
                        next += interval;
                        if next < now {
                            next = now + interval;
                        }
                    }
                    let until = next.min(Instant::now() + Duration::from_millis(50));
                    while let Some(r) = sock.recv_until(until)? {
                        if r.outgoing {
                            continue;
                        }
                        if let Some(a) = parse_answer(&r.bytes)
                            && a.ip == target
                        {
                            log.answers.push(Seen {
                                at: r.at,
                                answer: a,
                            });
                        }
                    }
                }
                Ok(log)
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops and returns what it saw.
    pub fn stop(mut self) -> io::Result<WatchLog> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("joined once");
        handle
            .join()
            .map_err(|_| io::Error::other("the watch thread panicked"))?
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Requests sent and replies received by [`answer_rate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct AnswerRate {
    pub requests: u64,
    pub replies: u64,
    pub seconds: f64,
    /// Replies per second.
    pub rate: f64,
}

/// Sends requests for `target` from `ifname` in `ns` as fast as one thread can for `duration`
/// while another counts the replies addressed to this interface.
pub fn answer_rate(
    ns: &Ns,
    ifname: &str,
    ip: IpAddr,
    target: IpAddr,
    duration: Duration,
) -> io::Result<AnswerRate> {
    let proto = if target.is_ipv4() {
        ETH_P_ARP
    } else {
        ETH_P_IPV6
    };
    let tx = PacketSocket::open_in(ns, ifname, proto)?;
    let rx = PacketSocket::open_in(ns, ifname, proto)?;
    let replies = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let frame = request(tx.mac(), ip, target);
    let start = Instant::now();
    let (requests, rx_result) = std::thread::scope(|scope| {
        let counter = scope.spawn(|| -> io::Result<()> {
            while !done.load(Ordering::Relaxed) {
                let until = Instant::now() + Duration::from_millis(50);
                while let Some(r) = rx.recv_until(until)? {
                    if !r.outgoing
                        && let Some(a) = parse_answer(&r.bytes)
                        && a.kind == AnswerKind::Reply
                        && a.ip == target
                        && a.eth_dst == rx.mac()
                    {
                        replies.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        });
        let mut requests = 0u64;
        while start.elapsed() < duration {
            match tx.send(&frame) {
                Ok(()) => requests += 1,
                // A full socket buffer: let the wire drain.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                Err(e) => {
                    done.store(true, Ordering::Relaxed);
                    return (Err(e), Ok(()));
                }
            }
        }
        // Replies still in flight.
        std::thread::sleep(Duration::from_millis(100));
        done.store(true, Ordering::Relaxed);
        let rx_result = counter
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("counter panicked")));
        (Ok(requests), rx_result)
    });
    rx_result?;
    let requests = requests?;
    let seconds = duration.as_secs_f64();
    let replies = replies.load(Ordering::Relaxed);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let rate = replies as f64 / seconds;
    Ok(AnswerRate {
        requests,
        replies,
        seconds,
        rate,
    })
}

/// What an announcer must do with a frame of the [`catalog`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// A well-formed request for the announced address: must be answered (the controls).
    Answer,
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
type ArpChange = (&'static str, fn(&mut Arp));

struct Catalog {
    frames: Vec<L2Frame>,
    seq: u16,
}

impl Catalog {
    /// The MAC the next frame sends from.
    fn mac(&self) -> Mac {
        sender_mac(self.seq, self.frames.len())
    }

    fn push(&mut self, kind: &str, expect: Expect, bytes: Vec<u8>) {
        let reply_to = self.mac();
        self.push_to(kind, expect, bytes, reply_to);
    }

    fn push_to(&mut self, kind: &str, expect: Expect, bytes: Vec<u8>, reply_to: Mac) {
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

fn next_v4(ip: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(1))
}

fn next_v6(ip: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(ip).wrapping_add(1))
}

#[expect(
    clippy::many_single_char_names,
    clippy::too_many_lines,
    reason = "a flat list of frames reads best with short names for the fixed parts"
)]
fn arp_catalog(c: &mut Catalog, aim: &L2Aim, s: Ipv4Addr, t: Ipv4Addr) {
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

#[expect(
    clippy::many_single_char_names,
    clippy::too_many_lines,
    reason = "a flat list of frames reads best with short names for the fixed parts"
)]
fn nd_catalog(c: &mut Catalog, aim: &L2Aim, s: Ipv6Addr, t: Ipv6Addr) {
    use Expect::{Answer, Either, Silent};
    let (group, group_mac) = solicited_node(t);
    // A Neighbor Solicitation from `m`: IPv6 header `h`, ICMPv6 type/code, options.
    let ns = |m: Mac, h: V6, code: u8, target: Ipv6Addr, options: &[u8]| {
        let body = nd_message(ND_SOLICIT, code, 0, target, options, (h.src, h.dst));
        eth(group_mac, m, ETH_P_IPV6, &h.packet(&body))
    };
    let slla = |m: Mac| ll_option(OPT_SOURCE_LL, m);
    let h = V6::icmp(s, group);

    // Controls.
    let m = c.mac();
    c.push("ns-multicast", Answer, ns(m, h, 0, t, &slla(m)));
    let m = c.mac();
    let mut f = ns(m, V6::icmp(s, t), 0, t, &slla(m));
    f[..6].copy_from_slice(&aim.owner_mac.0);
    c.push("ns-unicast-to-owner", Answer, f);

    // Truncated.
    let m = c.mac();
    c.push(
        "ns-ethernet-header-only",
        Silent,
        eth(group_mac, m, ETH_P_IPV6, &[]),
    );
    let m = c.mac();
    let full = ns(m, h, 0, t, &slla(m));
    c.push("ns-ipv6-header-truncated", Silent, full[..14 + 20].to_vec());
    let m = c.mac();
    let full = ns(m, h, 0, t, &slla(m));
    c.push(
        "ns-icmp-truncated-16",
        Silent,
        full[..14 + 40 + 16].to_vec(),
    );
    let m = c.mac();
    let full = ns(m, h, 0, t, &slla(m));
    c.push(
        "ns-option-truncated",
        Silent,
        full[..full.len() - 2].to_vec(),
    );
    let m = c.mac();
    c.push(
        "ns-payload-length-past-frame",
        Silent,
        ns(
            m,
            V6 {
                plen: Some(40),
                ..h
            },
            0,
            t,
            &slla(m),
        ),
    );
    // Not a valid solicitation (RFC 4861 7.1.1 says discard).
    let m = c.mac();
    c.push(
        "ns-hop-limit-64",
        Silent,
        ns(m, V6 { hop: 64, ..h }, 0, t, &slla(m)),
    );
    let m = c.mac();
    c.push("ns-code-1", Silent, ns(m, h, 1, t, &slla(m)));
    let m = c.mac();
    let mut f = ns(m, h, 0, t, &slla(m));
    f[14 + 40 + 2] ^= 0x5a;
    c.push("ns-bad-checksum", Silent, f);
    let m = c.mac();
    let mut zero_len = slla(m);
    zero_len[1] = 0;
    c.push("ns-option-length-0", Silent, ns(m, h, 0, t, &zero_len));
    let m = c.mac();
    c.push(
        "ns-dad-with-source-link-layer",
        Silent,
        ns(
            m,
            V6 {
                src: Ipv6Addr::UNSPECIFIED,
                ..h
            },
            0,
            t,
            &slla(m),
        ),
    );
    let m = c.mac();
    c.push(
        "ns-source-multicast",
        Silent,
        ns(
            m,
            V6 {
                src: Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                ..h
            },
            0,
            t,
            &slla(m),
        ),
    );
    let m = c.mac();
    c.push(
        "ns-ip-version-4",
        Silent,
        ns(m, V6 { version: 4, ..h }, 0, t, &slla(m)),
    );
    // Not a solicitation for the address, or not for this host.
    let m = c.mac();
    c.push("ns-other-target", Silent, ns(m, h, 0, next_v6(t), &slla(m)));
    let m = c.mac();
    c.push("ns-target-multicast", Silent, ns(m, h, 0, group, &slla(m)));
    let m = c.mac();
    let body = nd_message(
        ND_ADVERT,
        0,
        0x20,
        t,
        &ll_option(OPT_TARGET_LL, m),
        (s, group),
    );
    c.push(
        "na-for-target",
        Silent,
        eth(group_mac, m, ETH_P_IPV6, &h.packet(&body)),
    );
    let m = c.mac();
    let body = nd_message(ND_SOLICIT, 0, 0, t, &slla(m), (s, group));
    c.push(
        "ns-body-as-udp",
        Silent,
        eth(
            group_mac,
            m,
            ETH_P_IPV6,
            &V6 {
                next: PROTO_UDP,
                ..h
            }
            .packet(&body),
        ),
    );
    let m = c.mac();
    let mut f = ns(m, h, 0, t, &slla(m));
    f[..6].copy_from_slice(&UNKNOWN_UNICAST.0);
    c.push("ns-unicast-to-other-host", Silent, f);

    // Arguable.
    let m = c.mac();
    let mut f = ns(m, h, 0, t, &slla(m));
    f.extend_from_slice(&[0; 16]);
    c.push("ns-trailing-padding", Either, f);
    let m = c.mac();
    let mut f = ns(m, V6::icmp(s, t), 0, t, &[]);
    f[..6].copy_from_slice(&aim.owner_mac.0);
    c.push("ns-unicast-without-source-link-layer", Either, f);
    let m = c.mac();
    let mut opts = slla(m);
    opts.extend_from_slice(&[OPT_NONCE, 1, 1, 2, 3, 4, 5, 6]);
    c.push("ns-with-nonce-option", Either, ns(m, h, 0, t, &opts));
    let m = c.mac();
    c.push(
        "ns-dad",
        Either,
        ns(
            m,
            V6 {
                src: Ipv6Addr::UNSPECIFIED,
                ..h
            },
            0,
            t,
            &[],
        ),
    );
    let m = c.mac();
    let mut all_nodes = ns(
        m,
        V6::icmp(s, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
        0,
        t,
        &slla(m),
    );
    all_nodes[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    c.push("ns-to-all-nodes", Either, all_nodes);
    let m = c.mac();
    let body = nd_message(ND_SOLICIT, 0, 0, t, &slla(m), (s, group));
    let mut hbh = vec![PROTO_ICMPV6, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&body);
    c.push(
        "ns-hop-by-hop-header",
        Either,
        eth(
            group_mac,
            m,
            ETH_P_IPV6,
            &V6 {
                next: V6_HOP_BY_HOP,
                ..h
            }
            .packet(&hbh),
        ),
    );
    let m = c.mac();
    let mut f = Vec::new();
    f.extend_from_slice(&group_mac.0);
    f.extend_from_slice(&m.0);
    f.extend_from_slice(&ETH_P_VLAN.to_be_bytes());
    f.extend_from_slice(&7u16.to_be_bytes());
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    let body = nd_message(ND_SOLICIT, 0, 0, t, &slla(m), (s, group));
    f.extend_from_slice(&h.packet(&body));
    c.push("ns-vlan-tagged", Silent, f);
}

/// How the announcer treated each frame of a [`catalog`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogReport {
    /// Kind → expectation.
    pub expect: BTreeMap<String, Expect>,
    /// Kind → frames sent.
    pub sent: BTreeMap<String, u64>,
    /// Kind → the error of a failed send.
    pub failed: BTreeMap<String, String>,
    /// Kind → answers it drew (kinds that drew none are absent).
    pub answered: BTreeMap<String, u64>,
    /// Kind → answers that were not well formed (NA checksum, hop limit, option).
    pub ill_formed_answers: BTreeMap<String, u64>,
    /// Answers for the target that no frame of the catalog asked for.
    pub stray_answers: u64,
}

impl CatalogReport {
    /// Kinds expected to be answered that drew no answer.
    #[must_use]
    pub fn missing_answers(&self) -> Vec<&str> {
        self.expect
            .iter()
            .filter(|(k, e)| **e == Expect::Answer && !self.answered.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Kinds expected to stay silent that drew an answer.
    #[must_use]
    pub fn wrongly_answered(&self) -> Vec<&str> {
        self.expect
            .iter()
            .filter(|(k, e)| **e == Expect::Silent && self.answered.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Arguable kinds that drew an answer (for the record).
    #[must_use]
    pub fn either_answered(&self) -> Vec<&str> {
        self.expect
            .iter()
            .filter(|(k, e)| **e == Expect::Either && self.answered.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Sends `rounds` rounds of the catalog for `aim` one frame at a time from `ifname` in `ns`,
/// waiting `gap` after each for an answer; answers are matched to frames by their
/// destination MAC (each frame's own sender MAC) and, failing that, by time.
pub fn send_catalog(
    ns: &Ns,
    ifname: &str,
    aim: &L2Aim,
    rounds: u16,
    gap: Duration,
) -> io::Result<CatalogReport> {
    let sock = PacketSocket::open_in(ns, ifname, ETH_P_ALL)?;
    let mut report = CatalogReport::default();
    for seq in 0..rounds {
        for frame in catalog(aim, seq) {
            report.expect.insert(frame.kind.clone(), frame.expect);
            if let Err(e) = sock.send(&frame.bytes) {
                report.failed.insert(frame.kind.clone(), e.to_string());
                continue;
            }
            *report.sent.entry(frame.kind.clone()).or_default() += 1;
            let deadline = Instant::now() + gap;
            while let Some(r) = sock.recv_until(deadline)? {
                if r.outgoing {
                    continue;
                }
                let Some(a) = parse_answer(&r.bytes) else {
                    continue;
                };
                if a.ip != aim.target || a.kind != AnswerKind::Reply {
                    continue;
                }
                // Matched by destination; a reply to a broadcast or zero sender address can
                // only be matched by time (one frame is in flight at a time).
                if a.eth_dst == frame.reply_to
                    || a.eth_dst.0[0] & 1 == 1
                    || a.eth_dst == Mac::default()
                {
                    *report.answered.entry(frame.kind.clone()).or_default() += 1;
                    if !a.well_formed {
                        *report
                            .ill_formed_answers
                            .entry(frame.kind.clone())
                            .or_default() += 1;
                    }
                } else {
                    report.stray_answers += 1;
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aim4() -> L2Aim {
        L2Aim {
            src: "192.168.50.9".parse().unwrap(),
            target: "192.168.50.200".parse().unwrap(),
            owner_mac: Mac([2, 0, 0, 0, 0, 3]),
        }
    }

    fn aim6() -> L2Aim {
        L2Aim {
            src: "fd00:50::9".parse().unwrap(),
            target: "fd00:50::200".parse().unwrap(),
            owner_mac: Mac([2, 0, 0, 0, 0, 3]),
        }
    }

    /// What an announcer would send back for a well-formed request (for parser tests).
    fn arp_reply(req: &[u8], mac: Mac) -> Vec<u8> {
        let sha = mac_at(req, 22);
        let a = Arp {
            op: 2,
            sha: mac,
            spa: v4_at(req, 38),
            tha: sha,
            tpa: v4_at(req, 28),
            ..Arp::request(mac, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        };
        eth(sha, mac, ETH_P_ARP, &a.bytes())
    }

    #[test]
    fn requests_are_well_formed() {
        let mac = Mac([2, 0, 0, 0, 0, 9]);
        let f = arp_request(
            mac,
            "192.168.50.9".parse().unwrap(),
            "192.168.50.200".parse().unwrap(),
        );
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..22], &[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[38..42], &[192, 168, 50, 200]);

        let src: Ipv6Addr = "fd00:50::9".parse().unwrap();
        let t: Ipv6Addr = "fd00:50::12:3456".parse().unwrap();
        let f = neighbor_solicitation(mac, src, t);
        assert_eq!(f.len(), 86);
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        assert_eq!(f[21], 255, "hop limit");
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!(v6_at(&f, 38), group);
        let msg = &f[54..];
        assert_eq!(msg[0], ND_SOLICIT);
        assert_eq!(
            checksum(&[
                &pseudo_header(IpAddr::V6(src), IpAddr::V6(group), PROTO_ICMPV6, msg.len()),
                msg
            ]),
            0
        );
        assert_eq!(&msg[24..26], &[OPT_SOURCE_LL, 1]);
        assert_eq!(&msg[26..32], &mac.0);
    }

    #[test]
    fn answers_parse() {
        let me = Mac([2, 0, 0, 0, 0, 9]);
        let owner = Mac([2, 0, 0, 0, 0, 3]);
        let req = arp_request(
            me,
            "192.168.50.9".parse().unwrap(),
            "192.168.50.200".parse().unwrap(),
        );
        let a = parse_answer(&arp_reply(&req, owner)).unwrap();
        assert_eq!(a.kind, AnswerKind::Reply);
        assert_eq!(a.ip, "192.168.50.200".parse::<IpAddr>().unwrap());
        assert_eq!((a.mac, a.eth_dst), (owner, me));
        assert!(parse_answer(&req).is_none(), "a plain request is no answer");
        let garp = arp_request(
            owner,
            "192.168.50.200".parse().unwrap(),
            "192.168.50.200".parse().unwrap(),
        );
        assert_eq!(parse_answer(&garp).unwrap().kind, AnswerKind::Announcement);

        // An unsolicited NA as ferrite's announcer builds it.
        let t: Ipv6Addr = "fd00:50::200".parse().unwrap();
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let body = nd_message(
            ND_ADVERT,
            0,
            0x20,
            t,
            &ll_option(OPT_TARGET_LL, owner),
            (t, all),
        );
        let na = eth(
            Mac([0x33, 0x33, 0, 0, 0, 1]),
            owner,
            ETH_P_IPV6,
            &V6::icmp(t, all).packet(&body),
        );
        let a = parse_answer(&na).unwrap();
        assert_eq!(a.kind, AnswerKind::Announcement);
        assert!(a.well_formed && a.override_flag);
        assert_eq!(a.mac, owner);
        let mut bad = na.clone();
        bad[14 + 40 + 2] ^= 1;
        assert!(!parse_answer(&bad).unwrap().well_formed);
        let solicited = nd_message(
            ND_ADVERT,
            0,
            0x60,
            t,
            &ll_option(OPT_TARGET_LL, owner),
            (t, t),
        );
        let a = parse_answer(&eth(
            me,
            owner,
            ETH_P_IPV6,
            &V6::icmp(t, t).packet(&solicited),
        ))
        .unwrap();
        assert_eq!(a.kind, AnswerKind::Reply);
    }

    #[test]
    fn catalogs_have_unique_kinds_and_sender_macs() {
        for aim in [aim4(), aim6()] {
            let frames = catalog(&aim, 3);
            let kinds: BTreeSet<_> = frames.iter().map(|f| &f.kind).collect();
            assert_eq!(kinds.len(), frames.len());
            let macs: BTreeSet<_> = frames.iter().map(|f| f.reply_to).collect();
            assert!(
                macs.len() >= frames.len() - 2,
                "reply-to MACs mostly unique"
            );
            for e in [Expect::Answer, Expect::Silent, Expect::Either] {
                assert!(
                    frames.iter().any(|f| f.expect == e),
                    "{e} in {:?}",
                    aim.target
                );
            }
            assert!(frames.iter().filter(|f| f.expect == Expect::Silent).count() >= 10);
            // Every frame's Ethernet source is a catalog MAC of this round.
            for f in &frames {
                if f.bytes.len() >= 12 {
                    assert_eq!(&f.bytes[6..8], &[0x02, 0x1b], "{}", f.kind);
                    assert_eq!(&f.bytes[8..10], &3u16.to_be_bytes(), "{}", f.kind);
                }
            }
        }
        let f = catalog(&aim4(), 0);
        let get = |k: &str| f.iter().find(|x| x.kind == k).unwrap();
        assert_eq!(get("arp-truncated-27").bytes.len(), 14 + 27);
        assert_eq!(get("arp-request-padded-60").bytes.len(), 60);
        assert_eq!(&get("arp-hlen-8").bytes[18..20], &[8, 4]);
        let f6 = catalog(&aim6(), 0);
        let get6 = |k: &str| f6.iter().find(|x| x.kind == k).unwrap();
        assert_eq!(get6("ns-ipv6-header-truncated").bytes.len(), 34);
        assert_eq!(get6("ns-hop-limit-64").bytes[21], 64);
        assert_eq!(get6("ns-multicast").bytes.len(), 86);
        assert_eq!(&get6("ns-unicast-to-owner").bytes[..6], &[2, 0, 0, 0, 0, 3]);
    }

    #[test]
    fn watch_log_counts_double_answers() {
        let t0 = Instant::now();
        let me = Mac([2, 0, 0, 0, 0, 9]);
        let reply = |mac: Mac| Answer {
            kind: AnswerKind::Reply,
            ip: "192.168.50.200".parse().unwrap(),
            mac,
            eth_src: mac,
            eth_dst: me,
            well_formed: true,
            override_flag: false,
        };
        let ms = |n| t0 + Duration::from_millis(n);
        let (a, b) = (Mac([2, 0, 0, 0, 0, 1]), Mac([2, 0, 0, 0, 0, 2]));
        let log = WatchLog {
            mac: me,
            requests: vec![ms(0), ms(20), ms(40)],
            answers: vec![
                Seen {
                    at: ms(1),
                    answer: reply(a),
                },
                Seen {
                    at: ms(21),
                    answer: reply(a),
                },
                Seen {
                    at: ms(22),
                    answer: reply(b),
                },
            ],
        };
        assert_eq!(log.double_answered(t0, ms(100)), 1);
        assert_eq!(log.double_answered_span(t0, ms(100)), Some(Duration::ZERO));
        assert_eq!(log.double_answered_span(ms(30), ms(100)), None);
        assert_eq!(log.unanswered(t0, ms(100)), 1);
        assert_eq!(log.first(ms(2), |x| x.mac == b).unwrap().at, ms(22));
        assert_eq!(log.last(t0, ms(100), |x| x.mac == a).unwrap().at, ms(21));
    }
}
