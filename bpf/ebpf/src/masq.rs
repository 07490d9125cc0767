//! Masquerade: a pod's traffic to anything outside the cluster's pod CIDRs (and outside
//! `--masquerade-exclude`) leaves the external device with the device's address and a port from
//! the SNAT table (egress); replies and the ICMP errors they provoke are translated back to the
//! pod (ingress, TC or XDP through [`PacketCtx`]). TCP, UDP and ICMP echo (the identifier is the
//! "port"), IPv4 and IPv6.
//!
//! The inner transport checksum of an ICMP error's quoted packet is left alone (the quote is
//! usually truncated, and no receiver verifies it — nf_nat and Cilium do the same); the outer
//! IPv4 header, the quoted IPv4 header and the ICMP checksums are kept valid.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32, maps::lpm_trie::Key};
use ferrite_abi::{
    CtKey, DEV_HAS_V4, DEV_HAS_V6, FAMILY_V4, FAMILY_V6, FLOW_DROP_NO_SNAT, FLOW_KIND_MASQUERADE,
    MASQ_CIDR_PREFIX_BITS, MASQ_PORT_MAX, MASQ_PORT_MIN, MasqCidr, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP, PROTO_UDP, SNAT_FLAG_EGRESS, SNAT_FLAG_INBOUND, SNAT_FLAG_REPLY, SnatValue,
};

use crate::flow::{Flow, emit};

use crate::maps::{CONNTRACK, DEVICES, MASQ_EXCLUDE, MASQ_PODS, MASQ_SCRATCH, SNAT};
use crate::pkt::PacketCtx;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROB: u8 = 12;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PARAM_PROB: u8 = 4;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Candidate ports tried for a new flow before giving up (the packet then leaves untranslated
/// and its replies are lost, as with a full conntrack table).
const PORT_TRIES: u32 = 8;

/// What a packet is to the masquerade.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TCP, UDP or an ICMP echo request/reply: the tuple is in `key`.
    Flow,
    /// An ICMP(v6) error quoting a packet at `inner_l3`.
    IcmpError,
}

struct Pkt {
    /// Addresses, protocol and family as on the wire; ports (or the echo identifier) for flows.
    key: CtKey,
    kind: Kind,
    l4_off: usize,
    /// The transport checksum (the ICMP checksum for ICMP).
    csum_off: usize,
    /// Where the source and destination "ports" live (the identifier for both with echo).
    sport_off: usize,
    dport_off: usize,
    /// May open a flow: a TCP SYN without ACK, or any UDP/ICMP echo packet. A TCP segment of a
    /// connection someone outside opened to a pod (its replies) is never masqueraded, as
    /// conntrack-based masquerade never touches an established inbound flow.
    opens: bool,
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Parses Ethernet + IPv4/IPv6 + the transport header of a first fragment; `None` for anything
/// else (passed untouched).
#[inline(always)]
fn parse<C: PacketCtx>(ctx: &C) -> Option<Pkt> {
    let proto_be: u16 = ctx.load(12)?;
    let mut key = CtKey::default();
    let l4_off;
    let ip_end;
    match u16::from_be(proto_be) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(ETH_HLEN)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return None;
            }
            let frag: u16 = ctx.load(ETH_HLEN + 6)?;
            if u16::from_be(frag) & 0x3fff != 0 {
                return None;
            }
            key.proto = ctx.load(ETH_HLEN + 9)?;
            key.saddr[0] = ctx.load(ETH_HLEN + 12)?;
            key.daddr[0] = ctx.load(ETH_HLEN + 16)?;
            key.family = FAMILY_V4;
            l4_off = ETH_HLEN + ihl;
            let tot_len: u16 = ctx.load(ETH_HLEN + 2)?;
            ip_end = ETH_HLEN + usize::from(u16::from_be(tot_len));
        }
        ETH_P_IPV6 => {
            key.proto = ctx.load(ETH_HLEN + 6)?;
            key.saddr = ctx.load(ETH_HLEN + 8)?;
            key.daddr = ctx.load(ETH_HLEN + 24)?;
            key.family = FAMILY_V6;
            l4_off = ETH_HLEN + 40;
            let payload: u16 = ctx.load(ETH_HLEN + 4)?;
            ip_end = l4_off + usize::from(u16::from_be(payload));
        }
        _ => return None,
    }
    if ip_end > ctx.frame_len() {
        return None;
    }
    let mut p = Pkt {
        key,
        kind: Kind::Flow,
        l4_off,
        csum_off: 0,
        sport_off: l4_off,
        dport_off: l4_off + 2,
        opens: true,
    };
    match (p.key.proto, p.key.family) {
        (PROTO_TCP, _) => {
            if l4_off + 20 > ip_end {
                return None;
            }
            p.csum_off = l4_off + 16;
            let flags: u8 = ctx.load(l4_off + 13)?;
            p.opens = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        }
        (PROTO_UDP, _) => {
            if l4_off + 8 > ip_end {
                return None;
            }
            p.csum_off = l4_off + 6;
        }
        (PROTO_ICMP, FAMILY_V4) | (PROTO_ICMPV6, FAMILY_V6) => {
            if l4_off + 8 > ip_end {
                return None;
            }
            p.csum_off = l4_off + 2;
            let ty: u8 = ctx.load(l4_off)?;
            let v4 = p.key.family == FAMILY_V4;
            let (request, reply) = if v4 {
                (ICMP_ECHO, ICMP_ECHO_REPLY)
            } else {
                (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
            };
            let error = if v4 {
                matches!(
                    ty,
                    ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB
                )
            } else {
                (ICMPV6_DEST_UNREACH..=ICMPV6_PARAM_PROB).contains(&ty)
            };
            let id: u16 = ctx.load(l4_off + 4)?;
            p.sport_off = l4_off + 4;
            p.dport_off = l4_off + 4;
            if ty == request {
                p.key.sport = id;
            } else if ty == reply {
                p.key.dport = id;
            } else if error {
                p.kind = Kind::IcmpError;
                return Some(p);
            } else {
                return None;
            }
            return Some(p);
        }
        _ => return None,
    }
    // The checksum field must be inside the frame too.
    let _: u16 = ctx.load(p.csum_off)?;
    p.key.sport = ctx.load(l4_off)?;
    p.key.dport = ctx.load(l4_off + 2)?;
    Some(p)
}

#[inline(always)]
fn in_trie(trie: &aya_ebpf::maps::LpmTrie<MasqCidr, u8>, family: u8, addr: &[u32; 4]) -> bool {
    let bits = if family == FAMILY_V4 { 32 } else { 128 };
    let key = Key::new(
        MASQ_CIDR_PREFIX_BITS + bits,
        MasqCidr {
            family: u32::from(family),
            addr: *addr,
        },
    );
    trie.get(&key).is_some()
}

/// Replaces the address at `off` (4 or 16 bytes by family), fixing the IPv4 header checksum
/// (`ip_csum`, outer or quoted) and the transport checksum at `csum_off`: as part of the pseudo
/// header when `pseudo`, as plain payload (inside an ICMP error's quote) otherwise.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per kind of rewrite"
)]
fn set_addr<C: PacketCtx>(
    ctx: &mut C,
    family: u8,
    off: usize,
    ip_csum: usize,
    csum_off: usize,
    pseudo: bool,
    udp: bool,
    old: &[u32; 4],
    new: &[u32; 4],
) -> Option<()> {
    if family == FAMILY_V4 {
        ctx.store(off, &new[0])?;
        if pseudo {
            ctx.l3_csum_replace4(ip_csum, old[0], new[0])?;
            if csum_off != 0 {
                ctx.l4_csum_replace(csum_off, old[0], new[0], 4, true, udp)?;
            }
        } else {
            // A quoted IPv4 header: its own checksum, then the ICMP checksum over both changes.
            let old_sum: u16 = ctx.load(ip_csum)?;
            let new_sum = crate::pkt::csum_replace(old_sum, old[0], new[0]);
            ctx.store(ip_csum, &new_sum)?;
            ctx.l4_csum_replace(csum_off, old[0], new[0], 4, false, false)?;
            ctx.l4_csum_replace(
                csum_off,
                u32::from(old_sum),
                u32::from(new_sum),
                2,
                false,
                false,
            )?;
        }
    } else {
        ctx.store(off, new)?;
        for i in 0..4 {
            ctx.l4_csum_replace(csum_off, old[i], new[i], 4, pseudo, udp)?;
        }
    }
    Some(())
}

#[inline(always)]
fn set_port<C: PacketCtx>(
    ctx: &mut C,
    off: usize,
    csum_off: usize,
    udp: bool,
    old: u16,
    new: u16,
) -> Option<()> {
    ctx.store(off, &new)?;
    ctx.l4_csum_replace(csum_off, u32::from(old), u32::from(new), 2, false, udp)
}

/// This device's address of `family`, if it has one.
#[inline(always)]
fn node_addr<C: PacketCtx>(ctx: &C, family: u8) -> Option<[u32; 4]> {
    // SAFETY: lookup in a hash map of plain structs.
    let dev = unsafe { DEVICES.get(&ctx.ifindex()) }?;
    if family == FAMILY_V4 {
        (dev.flags & DEV_HAS_V4 != 0).then_some([dev.v4, 0, 0, 0])
    } else {
        (dev.flags & DEV_HAS_V6 != 0).then_some(dev.v6)
    }
}

/// The tuple of replies to `k` leaving with `node`:`port`.
#[inline(always)]
fn reply_key(k: &CtKey, node: &[u32; 4], port: u16) -> CtKey {
    CtKey {
        saddr: k.daddr,
        daddr: *node,
        sport: k.dport,
        dport: port,
        proto: k.proto,
        family: k.family,
        _pad: [0; 2],
    }
}

/// Finds (or creates) the SNAT entry of a pod's flow: the node address and port it leaves with.
#[inline(always)]
fn snat_for(k: &CtKey, node: &[u32; 4], opens: bool, ifindex: u32) -> Option<SnatValue> {
    let back = SnatValue {
        addr: k.saddr,
        port: k.sport,
        flags: SNAT_FLAG_REPLY,
        _pad: 0,
    };
    // SAFETY: lookup in an LRU hash of plain structs.
    if let Some(v) = unsafe { SNAT.get(k) } {
        let v = *v;
        // The pod answers a UDP flow opened to its own address from outside.
        if v.flags & SNAT_FLAG_INBOUND != 0 {
            return None;
        }
        if v.addr == *node {
            // The LRU may have evicted the reply half alone: put it back.
            let rk = reply_key(k, node, v.port);
            // SAFETY: as above.
            if unsafe { SNAT.get(&rk) }.is_none() {
                SNAT.insert(&rk, &back, 0).ok()?;
            }
            return Some(v);
        }
    }
    if !opens {
        return None;
    }
    let span = u32::from(MASQ_PORT_MAX - MASQ_PORT_MIN) + 1;
    // SAFETY: plain helper call.
    let base = unsafe { bpf_get_prandom_u32() };
    let mut chosen = None;
    for i in 0..PORT_TRIES {
        let port = MASQ_PORT_MIN + (base.wrapping_add(i.wrapping_mul(7919)) % span) as u16;
        let rk = reply_key(k, node, port.to_be());
        // The LB's SNAT allocates on the same address and range: its tuples are taken too.
        // SAFETY: lookup in an LRU hash of plain structs.
        if unsafe { CONNTRACK.get(&rk) }.is_some() {
            continue;
        }
        if SNAT.insert(&rk, &back, u64::from(BPF_NOEXIST)).is_ok() {
            chosen = Some(port.to_be());
            break;
        }
    }
    let Some(port) = chosen else {
        flow_event(k, node, 0, ifindex, FLOW_DROP_NO_SNAT);
        return None;
    };
    let v = SnatValue {
        addr: *node,
        port,
        flags: SNAT_FLAG_EGRESS,
        _pad: 0,
    };
    SNAT.insert(k, &v, 0).ok()?;
    flow_event(k, node, port, ifindex, 0);
    Some(v)
}

/// The flow event of a new masqueraded flow (leaving as `node`:`port`), or of a flow that
/// found no free port (`reason`; it leaves untranslated).
#[inline(always)]
fn flow_event(k: &CtKey, node: &[u32; 4], port: u16, ifindex: u32, reason: u8) {
    emit(&Flow {
        kind: FLOW_KIND_MASQUERADE,
        reason,
        proto: k.proto,
        family: k.family,
        tcp_flags: 0,
        flags: 0,
        ifindex,
        cookie: 0,
        saddr: &k.saddr,
        daddr: &k.daddr,
        xaddr: node,
        sport: k.sport,
        dport: k.dport,
        xport: port,
    });
}

/// What the masquerade did to a packet.
pub enum Verdict {
    /// Not masqueraded traffic (or nothing to do): untouched.
    Pass,
    /// Rewritten; let it go on.
    Translated,
    /// Rewriting failed half-way: the packet is inconsistent and must not leave.
    Drop,
}

impl Verdict {
    #[inline(always)]
    fn of(r: Option<()>) -> Self {
        match r {
            Some(()) => Self::Translated,
            None => Self::Drop,
        }
    }
}

/// Egress of an external device: a pod's packet to outside the cluster gets the device's
/// address and its flow's port as source.
#[inline(always)]
pub fn egress<C: PacketCtx>(ctx: &mut C) -> Verdict {
    let Some(p) = parse(ctx) else {
        return Verdict::Pass;
    };
    let k = &p.key;
    // Echo replies have no source identifier (a pod answering a ping from outside is not a
    // flow it started) and errors are not flows.
    if p.kind != Kind::Flow || (k.sport == 0 && is_icmp(k.proto)) {
        return Verdict::Pass;
    }
    if !in_trie(&MASQ_PODS, k.family, &k.saddr)
        || in_trie(&MASQ_PODS, k.family, &k.daddr)
        || in_trie(&MASQ_EXCLUDE, k.family, &k.daddr)
    {
        return Verdict::Pass;
    }
    // A flow of the north-south LB (a local backend's reply it did not translate): not ours.
    // SAFETY: lookup in an LRU hash of plain structs.
    if unsafe { CONNTRACK.get(k) }.is_some() {
        return Verdict::Pass;
    }
    let Some(node) = node_addr(ctx, k.family) else {
        return Verdict::Pass;
    };
    let Some(v) = snat_for(k, &node, p.opens, ctx.ifindex()) else {
        return Verdict::Pass;
    };
    rewrite_flow(ctx, &p, true, &v)
}

/// Rewrites a flow's source (`src`) or destination address and port to `v`'s, with every
/// checksum they are part of.
#[inline(always)]
fn rewrite_flow<C: PacketCtx>(ctx: &mut C, p: &Pkt, src: bool, v: &SnatValue) -> Verdict {
    let k = &p.key;
    let udp = k.proto == PROTO_UDP;
    let pseudo_csum = if k.proto == PROTO_ICMP { 0 } else { p.csum_off };
    let v4 = k.family == FAMILY_V4;
    let (addr_off, old_addr, port_off, old_port) = if src {
        (if v4 { 12 } else { 8 }, &k.saddr, p.sport_off, k.sport)
    } else {
        (if v4 { 16 } else { 24 }, &k.daddr, p.dport_off, k.dport)
    };
    let r = set_addr(
        ctx,
        k.family,
        ETH_HLEN + addr_off,
        ETH_HLEN + 10,
        pseudo_csum,
        true,
        udp,
        old_addr,
        &v.addr,
    )
    .and_then(|()| set_port(ctx, port_off, p.csum_off, udp, old_port, v.port));
    Verdict::of(r)
}

#[inline(always)]
fn is_icmp(proto: u8) -> bool {
    proto == PROTO_ICMP || proto == PROTO_ICMPV6
}

/// Ingress of an external device: replies to masqueraded flows (and ICMP errors about them)
/// are addressed back to the pod; the stack then routes them to it.
#[inline(always)]
pub fn ingress<C: PacketCtx>(ctx: &mut C) -> Verdict {
    if !ctx.for_this_host() {
        return Verdict::Pass;
    }
    let Some(p) = parse(ctx) else {
        return Verdict::Pass;
    };
    if p.kind == Kind::IcmpError {
        return icmp_error(ctx, &p);
    }
    let k = &p.key;
    // SAFETY: lookup in an LRU hash of plain structs.
    let Some(v) = (unsafe { SNAT.get(k) }) else {
        note_inbound(k);
        return Verdict::Pass;
    };
    let v = *v;
    if v.flags & SNAT_FLAG_REPLY == 0 {
        return Verdict::Pass;
    }
    rewrite_flow(ctx, &p, false, &v)
}

/// A UDP datagram from outside the cluster to a pod's own address (the pod CIDR is routed on
/// the LAN): the pod's replies to it must leave with the pod's address, so their tuple is
/// marked inbound before the pod can answer. The key is built in per-CPU scratch space: the
/// ingress programs' stack is close to the verifier's 512 bytes.
#[inline(always)]
fn note_inbound(k: &CtKey) {
    if k.proto != PROTO_UDP
        || !in_trie(&MASQ_PODS, k.family, &k.daddr)
        || in_trie(&MASQ_PODS, k.family, &k.saddr)
    {
        return;
    }
    let Some(rk) = MASQ_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let rk = unsafe { &mut *rk };
    rk.saddr = k.daddr;
    rk.daddr = k.saddr;
    rk.sport = k.dport;
    rk.dport = k.sport;
    rk.proto = k.proto;
    rk.family = k.family;
    rk._pad = [0; 2];
    let rk: &CtKey = rk;
    // SAFETY: lookup in an LRU hash of plain structs.
    if unsafe { SNAT.get(rk) }.is_some() {
        return;
    }
    let v = SnatValue {
        addr: [0; 4],
        port: 0,
        flags: SNAT_FLAG_INBOUND,
        _pad: 0,
    };
    // Best effort: a full table only means this flow's replies are masqueraded, as before.
    let _ = SNAT.insert(rk, &v, u64::from(BPF_NOEXIST));
}

/// An ICMP error about a masqueraded packet (frag-needed, packet too big, port unreachable,
/// time exceeded): the outer destination and the quoted packet's source go back to the pod.
#[inline(always)]
fn icmp_error<C: PacketCtx>(ctx: &mut C, p: &Pkt) -> Verdict {
    let family = p.key.family;
    let inner_l3 = p.l4_off + 8;
    let mut q = CtKey {
        family,
        ..CtKey::default()
    };
    let inner_l4;
    let (saddr_off, inner_csum);
    if family == FAMILY_V4 {
        let Some(vihl) = ctx.load::<u8>(inner_l3) else {
            return Verdict::Pass;
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return Verdict::Pass;
        }
        let (Some(proto), Some(s), Some(d)) = (
            ctx.load::<u8>(inner_l3 + 9),
            ctx.load::<u32>(inner_l3 + 12),
            ctx.load::<u32>(inner_l3 + 16),
        ) else {
            return Verdict::Pass;
        };
        q.proto = proto;
        q.saddr[0] = s;
        q.daddr[0] = d;
        inner_l4 = inner_l3 + ihl;
        saddr_off = inner_l3 + 12;
        inner_csum = inner_l3 + 10;
    } else {
        let (Some(proto), Some(s), Some(d)) = (
            ctx.load::<u8>(inner_l3 + 6),
            ctx.load::<[u32; 4]>(inner_l3 + 8),
            ctx.load::<[u32; 4]>(inner_l3 + 24),
        ) else {
            return Verdict::Pass;
        };
        q.proto = proto;
        q.saddr = s;
        q.daddr = d;
        inner_l4 = inner_l3 + 40;
        saddr_off = inner_l3 + 8;
        inner_csum = 0;
    }
    // The quoted packet is one we sent: node:port → remote. Its ports (or echo identifier).
    let sport_off = match q.proto {
        PROTO_TCP | PROTO_UDP => {
            let (Some(s), Some(d)) = (ctx.load::<u16>(inner_l4), ctx.load::<u16>(inner_l4 + 2))
            else {
                return Verdict::Pass;
            };
            q.sport = s;
            q.dport = d;
            inner_l4
        }
        PROTO_ICMP | PROTO_ICMPV6 if q.proto == p.key.proto => {
            let Some(id) = ctx.load::<u16>(inner_l4 + 4) else {
                return Verdict::Pass;
            };
            q.sport = id;
            inner_l4 + 4
        }
        _ => return Verdict::Pass,
    };
    let rk = CtKey {
        saddr: q.daddr,
        daddr: q.saddr,
        sport: q.dport,
        dport: q.sport,
        proto: q.proto,
        family,
        _pad: [0; 2],
    };
    // SAFETY: lookup in an LRU hash of plain structs.
    let Some(v) = (unsafe { SNAT.get(&rk) }) else {
        return Verdict::Pass;
    };
    let v = *v;
    if v.flags & SNAT_FLAG_REPLY == 0 {
        return Verdict::Pass;
    }
    let icmp_csum = p.csum_off;
    // Outer destination: the IPv4 header checksum; ICMPv6's pseudo header (ICMPv4 has none).
    let outer_l4_csum = if family == FAMILY_V4 { 0 } else { icmp_csum };
    let r = set_addr(
        ctx,
        family,
        ETH_HLEN + if family == FAMILY_V4 { 16 } else { 24 },
        ETH_HLEN + 10,
        outer_l4_csum,
        true,
        false,
        &p.key.daddr,
        &v.addr,
    )
    .and_then(|()| {
        set_addr(
            ctx, family, saddr_off, inner_csum, icmp_csum, false, false, &q.saddr, &v.addr,
        )
    })
    .and_then(|()| set_port(ctx, sport_off, icmp_csum, false, q.sport, v.port));
    Verdict::of(r)
}
