//! The membership protocol on the wire: one compact binary datagram per message, big-endian.
//!
//! ```text
//! packet  = "FL2M" version:u8 cluster:u32 from:name msg records:u16 record*
//! msg     = 0 seq:u32 target:name                  ping (the target's name guards against a
//!                                                   new process at an old address)
//!         | 1 seq:u32                              ack
//!         | 2 seq:u32 target:name target:sockaddr  ping-req: probe target for me
//!         | 3 reply:u8                             sync: the records are the sender's whole table
//!         | 4                                      gossip only
//! record  = name:name addr:sockaddr incarnation:u64 state:u8 from:name eligible:u16 ip*
//! name    = len:u8 utf8
//! ip      = 4 octets[4] | 6 octets[16]
//! sockaddr= ip port:u16
//! ```
//! Every message piggybacks records (SWIM's infection-style dissemination). On the network
//! every packet travels sealed by [`super::auth`] (HMAC-SHA256 + replay window); the cluster
//! tag only separates clusters sharing a key by mistake.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::view::MemberState;
use crate::l2::ownership::NodeName;

pub const MAGIC: [u8; 4] = *b"FL2M";
pub const VERSION: u8 = 1;
/// Size budget of one packet (sealed with [`super::auth`], it fits an Ethernet MTU with IPv6
/// and UDP headers). A sync whose table is larger is split; a single record larger than this
/// still goes out alone.
pub const MAX_DATAGRAM: usize = 1400 - super::auth::OVERHEAD;

/// A malformed or foreign datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram ends inside {0}")]
    Truncated(&'static str),
    #[error("not a ferrite membership datagram (bad magic)")]
    BadMagic,
    #[error("membership protocol version {0} is not supported (this build speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{0} is not UTF-8")]
    BadName(&'static str),
    #[error("{0} bytes after the last record")]
    TrailingBytes(usize),
}

/// One member's state as gossiped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: NodeName,
    pub addr: SocketAddr,
    pub incarnation: u64,
    pub state: MemberState,
    /// Who says so: the member itself for alive/left, the accuser for suspect/dead.
    pub from: NodeName,
    /// Addresses the member may announce (empty in dead/left records).
    pub eligible: BTreeSet<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    Ping {
        seq: u32,
        target: NodeName,
    },
    Ack {
        seq: u32,
    },
    PingReq {
        seq: u32,
        target: NodeName,
        target_addr: SocketAddr,
    },
    Sync {
        reply: bool,
    },
    Gossip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Hash of the cluster name: agents of another cluster on the same LAN are ignored.
    pub cluster: u32,
    pub from: NodeName,
    pub msg: Msg,
    pub records: Vec<Record>,
}

fn ip_len(ip: &IpAddr) -> usize {
    if ip.is_ipv4() { 5 } else { 17 }
}

fn name_len(name: &str) -> usize {
    1 + name.len().min(usize::from(u8::MAX))
}

impl Record {
    /// Bytes this record takes in a datagram.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        name_len(&self.name)
            + ip_len(&self.addr.ip())
            + 2
            + 8
            + 1
            + name_len(&self.from)
            + 2
            + self.eligible.iter().map(ip_len).sum::<usize>()
    }
}

impl Msg {
    fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Ping { target, .. } => 4 + name_len(target),
            Self::Ack { .. } => 4,
            Self::PingReq {
                target,
                target_addr,
                ..
            } => 4 + name_len(target) + ip_len(&target_addr.ip()) + 2,
            Self::Sync { .. } => 1,
            Self::Gossip => 0,
        }
    }
}

/// Bytes of a packet from `from` carrying `msg` and no records.
#[must_use]
pub fn header_len(from: &str, msg: &Msg) -> usize {
    MAGIC.len() + 1 + 4 + name_len(from) + msg.encoded_len() + 2
}

/// A stable 32-bit tag of a cluster name (FNV-1a).
#[must_use]
pub fn cluster_tag(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn put_name(buf: &mut Vec<u8>, name: &str) {
    // Names are validated to fit at configuration time; clamp defensively at a char boundary.
    let mut end = name.len().min(usize::from(u8::MAX));
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    buf.push(u8::try_from(end).unwrap_or(u8::MAX));
    buf.extend_from_slice(&name.as_bytes()[..end]);
}

fn put_ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            buf.push(4);
            buf.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            buf.push(6);
            buf.extend_from_slice(&v6.octets());
        }
    }
}

fn put_sockaddr(buf: &mut Vec<u8>, addr: SocketAddr) {
    put_ip(buf, addr.ip());
    buf.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_record(buf: &mut Vec<u8>, r: &Record) {
    put_name(buf, &r.name);
    put_sockaddr(buf, r.addr);
    buf.extend_from_slice(&r.incarnation.to_be_bytes());
    buf.push(r.state.rank());
    put_name(buf, &r.from);
    let count = u16::try_from(r.eligible.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&count.to_be_bytes());
    for ip in r.eligible.iter().take(usize::from(count)) {
        put_ip(buf, *ip);
    }
}

/// Encodes a packet (at most `u16::MAX` records; callers stay far below).
#[must_use]
pub fn encode(p: &Packet) -> Vec<u8> {
    let mut buf = Vec::with_capacity(
        header_len(&p.from, &p.msg) + p.records.iter().map(Record::encoded_len).sum::<usize>(),
    );
    buf.extend_from_slice(&MAGIC);
    buf.push(VERSION);
    buf.extend_from_slice(&p.cluster.to_be_bytes());
    put_name(&mut buf, &p.from);
    match &p.msg {
        Msg::Ping { seq, target } => {
            buf.push(0);
            buf.extend_from_slice(&seq.to_be_bytes());
            put_name(&mut buf, target);
        }
        Msg::Ack { seq } => {
            buf.push(1);
            buf.extend_from_slice(&seq.to_be_bytes());
        }
        Msg::PingReq {
            seq,
            target,
            target_addr,
        } => {
            buf.push(2);
            buf.extend_from_slice(&seq.to_be_bytes());
            put_name(&mut buf, target);
            put_sockaddr(&mut buf, *target_addr);
        }
        Msg::Sync { reply } => {
            buf.push(3);
            buf.push(u8::from(*reply));
        }
        Msg::Gossip => buf.push(4),
    }
    let count = u16::try_from(p.records.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&count.to_be_bytes());
    for r in p.records.iter().take(usize::from(count)) {
        put_record(&mut buf, r);
    }
    buf
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.array(what).map(u64::from_be_bytes)
    }

    fn name(&mut self, what: &'static str) -> Result<NodeName, WireError> {
        let len = self.u8(what)?;
        let bytes = self.take(usize::from(len), what)?;
        std::str::from_utf8(bytes)
            .map(NodeName::new)
            .map_err(|_| WireError::BadName(what))
    }

    fn ip(&mut self, what: &'static str) -> Result<IpAddr, WireError> {
        match self.u8(what)? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?))),
            tag => Err(WireError::UnknownTag {
                what: "address family",
                tag,
            }),
        }
    }

    fn sockaddr(&mut self, what: &'static str) -> Result<SocketAddr, WireError> {
        let ip = self.ip(what)?;
        Ok(SocketAddr::new(ip, self.u16(what)?))
    }

    fn record(&mut self) -> Result<Record, WireError> {
        let name = self.name("record name")?;
        let addr = self.sockaddr("record address")?;
        let incarnation = self.u64("record incarnation")?;
        let tag = self.u8("record state")?;
        let state = MemberState::from_tag(tag).ok_or(WireError::UnknownTag {
            what: "member state",
            tag,
        })?;
        let from = self.name("record reporter")?;
        let count = self.u16("eligibility count")?;
        let mut eligible = BTreeSet::new();
        for _ in 0..count {
            eligible.insert(self.ip("eligible address")?);
        }
        Ok(Record {
            name,
            addr,
            incarnation,
            state,
            from,
            eligible,
        })
    }
}

pub fn decode(bytes: &[u8]) -> Result<Packet, WireError> {
    let mut r = Reader { rest: bytes };
    if r.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(WireError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let cluster = r.u32("cluster tag")?;
    let from = r.name("sender name")?;
    let msg = match r.u8("message tag")? {
        0 => Msg::Ping {
            seq: r.u32("ping")?,
            target: r.name("ping target")?,
        },
        1 => Msg::Ack { seq: r.u32("ack")? },
        2 => Msg::PingReq {
            seq: r.u32("ping-req")?,
            target: r.name("ping-req target")?,
            target_addr: r.sockaddr("ping-req target address")?,
        },
        3 => Msg::Sync {
            reply: r.u8("sync")? != 0,
        },
        4 => Msg::Gossip,
        tag => {
            return Err(WireError::UnknownTag {
                what: "message",
                tag,
            });
        }
    };
    let count = r.u16("record count")?;
    let mut records = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        records.push(r.record()?);
    }
    if !r.rest.is_empty() {
        return Err(WireError::TrailingBytes(r.rest.len()));
    }
    Ok(Packet {
        cluster,
        from,
        msg,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, state: MemberState, eligible: &[&str]) -> Record {
        Record {
            name: name.into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            incarnation: 1_700_000_000_123,
            state,
            from: "node-b".into(),
            eligible: eligible.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn packet(msg: Msg, records: Vec<Record>) -> Packet {
        Packet {
            cluster: cluster_tag("ferrite"),
            from: "node-a".into(),
            msg,
            records,
        }
    }

    #[test]
    fn every_message_round_trips_with_its_exact_length() {
        let records = vec![
            record("node-a", MemberState::Alive, &["192.168.1.240", "fd00::10"]),
            record("node-ä", MemberState::Suspect, &[]),
            record("node-c", MemberState::Dead, &[]),
            record("node-d", MemberState::Left, &["10.1.1.1"]),
        ];
        let msgs = [
            Msg::Ping {
                seq: 7,
                target: "node-b".into(),
            },
            Msg::Ack { seq: u32::MAX },
            Msg::PingReq {
                seq: 9,
                target: "node-c".into(),
                target_addr: "[fd00::3]:7946".parse().unwrap(),
            },
            Msg::Sync { reply: true },
            Msg::Sync { reply: false },
            Msg::Gossip,
        ];
        for msg in msgs {
            let p = packet(msg, records.clone());
            let bytes = encode(&p);
            let expected = header_len(&p.from, &p.msg)
                + p.records.iter().map(Record::encoded_len).sum::<usize>();
            assert_eq!(bytes.len(), expected, "{:?}", p.msg);
            assert_eq!(decode(&bytes).unwrap(), p);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let p = packet(
            Msg::PingReq {
                seq: 1,
                target: "x".into(),
                target_addr: "10.0.0.3:1".parse().unwrap(),
            },
            vec![record("n", MemberState::Alive, &["10.0.0.9", "fd00::9"])],
        );
        let bytes = encode(&p);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(WireError::TrailingBytes(1)));
    }

    #[test]
    fn foreign_and_corrupt_datagrams_are_rejected() {
        let mut bytes = encode(&packet(Msg::Gossip, vec![]));
        bytes[4] = 9;
        assert_eq!(decode(&bytes), Err(WireError::UnsupportedVersion(9)));
        assert_eq!(decode(b"GET / HTTP/1.1"), Err(WireError::BadMagic));
        let mut bad_state = encode(&packet(
            Msg::Gossip,
            vec![record("n", MemberState::Alive, &[])],
        ));
        // The state byte follows name(2) + v4 sockaddr(7) + incarnation(8) in the record.
        let state_at = header_len("node-a", &Msg::Gossip) + 2 + 7 + 8;
        bad_state[state_at] = 77;
        assert!(matches!(
            decode(&bad_state),
            Err(WireError::UnknownTag {
                what: "member state",
                tag: 77
            })
        ));
        let mut bad_name = encode(&packet(Msg::Gossip, vec![]));
        bad_name[10] = 0xff; // first byte of the sender name "node-a"
        assert_eq!(decode(&bad_name), Err(WireError::BadName("sender name")));
    }

    #[test]
    fn cluster_tags_are_stable_and_distinct() {
        // Pinned: changing the tag function splits mixed-version clusters.
        assert_eq!(cluster_tag(""), 0x811c_9dc5);
        assert_eq!(cluster_tag("ferrite"), cluster_tag("ferrite"));
        assert_ne!(cluster_tag("ferrite"), cluster_tag("ferrite-2"));
    }
}
