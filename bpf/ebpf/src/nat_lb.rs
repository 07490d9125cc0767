//! North-south load balancing on TC: external frontends (LoadBalancer IPs, externalIPs,
//! NodePorts) → Maglev-chosen backend, with connection tracking, SNAT to the node address for
//! remote backends and the reverse translation of replies.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT,
        bpf_fib_lookup,
    },
    helpers::{
        bpf_get_prandom_u32,
        generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    },
    maps::lpm_trie::Key,
    programs::TcContext,
};
use ferrite_abi::{
    CT_REPLY, CT_REWRITE_DST, CT_REWRITE_SRC, CtKey, CtValue, EXT_FLAG_CLIENT_AFFINITY,
    EXT_FLAG_LOCAL, EXT_FLAG_RANDOM, EXT_FLAG_SOURCE_RANGES, ExtSvcValue, FAMILY_V4, FAMILY_V6,
    FLOW_DROP_INVALID, FLOW_DROP_NO_BACKEND, FLOW_DROP_NO_SNAT, FLOW_DROP_SOURCE_RANGE,
    FLOW_FLAG_SNAT, FLOW_KIND_NORTH_SOUTH, NodeAddrKey, PROTO_TCP, PROTO_UDP, SNAT_PORT_MAX,
    SNAT_PORT_MIN, SRC_RANGE_PREFIX_BITS, SrcRangeData, SvcKey,
};

use crate::flow::{Flow, emit};
use crate::maps::{
    BACKENDS, CONNTRACK, DEVICES, EXTERNAL, FIB_SCRATCH, MAGLEV, NODE_ADDRS, POD_DEVS, SNAT,
    SOURCE_RANGES, TUNNELS,
};
use crate::pkt::PacketCtx;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Maglev table size; userspace overrides it at load (`--maglev-table-size`).
#[unsafe(no_mangle)]
static MAGLEV_M: u32 = ferrite_abi::MAGLEV_DEFAULT_M;

/// A parsed IPv4/IPv6 TCP/UDP packet: its tuple and where its fields live.
pub struct Packet {
    pub key: CtKey,
    l4_off: usize,
    csum_off: usize,
    tcp_flags: u8,
}

/// Parses the headers; `None` (pass untouched) for anything that is not a well-formed first
/// fragment of TCP or UDP over IPv4/IPv6. Every read is bounds-checked by the helper.
#[inline(always)]
pub fn parse<C: PacketCtx>(ctx: &C) -> Option<Packet> {
    let proto_be: u16 = ctx.load(12)?;
    let mut key = CtKey::default();
    let l4_off;
    // End of the IP packet as its header declares it; must fit in the frame.
    let ip_end;
    match u16::from_be(proto_be) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(ETH_HLEN)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(vihl & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let frag: u16 = ctx.load(ETH_HLEN + 6)?;
            // More-fragments or a non-zero offset: no (whole) L4 header to translate.
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
    // The L4 header must be whole and consistent with the IP length (never translate, and never
    // create state for, a packet the receiver would discard as malformed).
    let (csum_off, tcp_flags) = match key.proto {
        PROTO_TCP => {
            let doff = usize::from(ctx.load::<u8>(l4_off + 12)? >> 4) * 4;
            if doff < 20 || l4_off + doff > ip_end {
                return None;
            }
            (l4_off + 16, ctx.load::<u8>(l4_off + 13)?)
        }
        PROTO_UDP => {
            let len = usize::from(u16::from_be(ctx.load::<u16>(l4_off + 4)?));
            if len < 8 || l4_off + len != ip_end {
                return None;
            }
            (l4_off + 6, 0)
        }
        _ => return None,
    };
    // The checksum field must be inside the packet too (a truncated L4 header is passed).
    let _: u16 = ctx.load(csum_off)?;
    key.sport = ctx.load(l4_off)?;
    key.dport = ctx.load(l4_off + 2)?;
    if key.sport == 0 || key.dport == 0 {
        return None;
    }
    Some(Packet {
        key,
        l4_off,
        csum_off,
        tcp_flags,
    })
}

/// Rewrites one address (source when `src`) and fixes the L3 and L4 checksums.
#[inline(always)]
fn set_addr<C: PacketCtx>(
    ctx: &mut C,
    p: &Packet,
    src: bool,
    old: &[u32; 4],
    new: &[u32; 4],
) -> Option<()> {
    let udp = p.key.proto == PROTO_UDP;
    if p.key.family == FAMILY_V4 {
        let off = ETH_HLEN + if src { 12 } else { 16 };
        ctx.store(off, &new[0])?;
        ctx.l3_csum_replace4(ETH_HLEN + 10, old[0], new[0])?;
        ctx.l4_csum_replace(p.csum_off, old[0], new[0], 4, true, udp)?;
    } else {
        let off = ETH_HLEN + if src { 8 } else { 24 };
        ctx.store(off, new)?;
        for i in 0..4 {
            ctx.l4_csum_replace(p.csum_off, old[i], new[i], 4, true, udp)?;
        }
    }
    Some(())
}

#[inline(always)]
fn set_port<C: PacketCtx>(ctx: &mut C, p: &Packet, src: bool, old: u16, new: u16) -> Option<()> {
    let off = p.l4_off + if src { 0 } else { 2 };
    ctx.store(off, &new)?;
    ctx.l4_csum_replace(
        p.csum_off,
        u32::from(old),
        u32::from(new),
        2,
        false,
        p.key.proto == PROTO_UDP,
    )
}

/// Applies a conntrack rewrite to the packet.
#[inline(always)]
pub fn rewrite<C: PacketCtx>(ctx: &mut C, p: &Packet, ct: &CtValue) -> Option<()> {
    if ct.flags & CT_REWRITE_SRC != 0 {
        set_addr(ctx, p, true, &p.key.saddr, &ct.new_saddr)?;
        set_port(ctx, p, true, p.key.sport, ct.new_sport)?;
    }
    if ct.flags & CT_REWRITE_DST != 0 {
        set_addr(ctx, p, false, &p.key.daddr, &ct.new_daddr)?;
        set_port(ctx, p, false, p.key.dport, ct.new_dport)?;
    }
    Some(())
}

/// FIB lookup for `daddr` from `saddr` as if forwarded from the receiving device. The
/// parameters live in a per-CPU scratch map, not on the stack: two 64-byte copies on the stack
/// put `fe_host_ingress` at 488 bytes, and kernels before 6.8 round each frame of a call chain
/// up to 32 bytes, so with the `memset` subprogram the verifier of Debian 12's 6.1 refused it
/// ("combined stack size of 2 calls is 544. Too large"). `None` only if the map lookup fails.
#[inline(always)]
pub fn fib<C: PacketCtx>(
    ctx: &C,
    family: u8,
    saddr: &[u32; 4],
    daddr: &[u32; 4],
) -> Option<(i64, &'static bpf_fib_lookup)> {
    // SAFETY: slot 0 of a per-CPU array; a BPF program runs to completion on its CPU before
    // another program of this object can use the slot there.
    let params = unsafe { &mut *FIB_SCRATCH.get_ptr_mut(0)? };
    // SAFETY: an all-zero bpf_fib_lookup is valid input.
    unsafe { core::ptr::write_bytes(core::ptr::from_mut(params), 0, 1) };
    params.ifindex = ctx.ifindex();
    if family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = saddr[0];
        params.__bindgen_anon_4.ipv4_dst = daddr[0];
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = *saddr;
        params.__bindgen_anon_4.ipv6_dst = *daddr;
    }
    let rc = ctx.fib(params);
    Some((rc, params))
}

/// Sends the (rewritten) packet straight out of the device the FIB picks; falls back to the
/// stack when the FIB cannot say.
#[inline(always)]
pub fn forward(ctx: &mut TcContext, family: u8, saddr: &[u32; 4], daddr: &[u32; 4]) -> i32 {
    let Some((rc, params)) = fib(ctx, family, saddr, daddr) else {
        return TC_ACT_OK as i32;
    };
    if rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        if ctx.store(0, &params.dmac).is_none() || ctx.store(6, &params.smac).is_none() {
            return TC_ACT_SHOT as i32;
        }
        // A local pod's veth: into the pod's netns directly (see `crate::fwd`), past the veth's
        // egress hook, so the pod's ingress policy is checked here.
        // SAFETY: lookup in a hash map of plain values.
        if unsafe { POD_DEVS.get(&params.ifindex) }.is_some() {
            if !crate::policy::ingress(ctx) {
                return TC_ACT_SHOT as i32;
            }
            // SAFETY: plain helper call; the device is a pod's host-side veth.
            return unsafe { bpf_redirect_peer(params.ifindex, 0) } as i32;
        }
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(params.ifindex, 0) } as i32;
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        // SAFETY: NULL params lets the kernel resolve the neighbour itself.
        return unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    }
    TC_ACT_OK as i32
}

#[inline(always)]
fn flow_hash(k: &CtKey, client_only: bool) -> u32 {
    let mut h: u32 = 0x9e37_79b9;
    for i in 0..4 {
        h = (h ^ k.saddr[i]).wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
    }
    if !client_only {
        h = (h ^ u32::from(k.sport) ^ (u32::from(k.dport) << 16)).wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h = (h ^ k.daddr[0] ^ k.daddr[3] ^ u32::from(k.proto)).wrapping_mul(0x27d4_eb2d);
        h ^= h >> 15;
    }
    h
}

/// The frontend a packet is addressed to: exact (LB IP, externalIP) or a NodePort on any address
/// of the node's north-south devices.
#[inline(always)]
fn frontend(k: &CtKey) -> Option<&'static ExtSvcValue> {
    let key = SvcKey {
        addr: k.daddr,
        port: k.dport,
        proto: k.proto,
        family: k.family,
    };
    // SAFETY: lookups in hash maps of plain structs.
    if let Some(v) = unsafe { EXTERNAL.get(&key) } {
        return Some(v);
    }
    let node = NodeAddrKey {
        family: u32::from(k.family),
        addr: if k.family == FAMILY_V4 {
            [k.daddr[0], 0, 0, 0]
        } else {
            k.daddr
        },
    };
    unsafe { NODE_ADDRS.get(&node) }?;
    let any = SvcKey {
        addr: [0; 4],
        port: k.dport,
        proto: k.proto,
        family: k.family,
    };
    unsafe { EXTERNAL.get(&any) }
}

#[inline(always)]
fn source_allowed(svc: &ExtSvcValue, k: &CtKey) -> bool {
    if svc.flags & EXT_FLAG_SOURCE_RANGES == 0 {
        return true;
    }
    let bits = if k.family == FAMILY_V4 { 32 } else { 128 };
    let key = Key::new(
        SRC_RANGE_PREFIX_BITS + bits,
        SrcRangeData {
            ext_id: svc.ext_id,
            family: u32::from(k.family),
            addr: k.saddr,
        },
    );
    SOURCE_RANGES.get(&key).is_some()
}

/// What happened to a packet addressed to a frontend.
pub enum Outcome {
    /// Not ours: pass it to the stack untouched.
    Pass,
    Drop,
    /// Translated: send it on with [`forward`].
    Forward(CtValue),
}

/// Ingress: an established flow (either direction) or a new connection to a frontend.
#[inline(always)]
pub fn ingress<C: PacketCtx>(ctx: &mut C, p: &Packet) -> Outcome {
    // Frames for another host's MAC (flooded by a switch, promiscuous mode): not ours to take.
    if !ctx.for_this_host() {
        return Outcome::Pass;
    }
    // SAFETY: lookup in an LRU hash of plain structs.
    if let Some(ct) = unsafe { CONNTRACK.get(&p.key) } {
        let ct = *ct;
        return match rewrite(ctx, p, &ct) {
            Some(()) => Outcome::Forward(ct),
            None => Outcome::Drop,
        };
    }
    let Some(svc) = frontend(&p.key) else {
        return Outcome::Pass;
    };
    let drop = if !source_allowed(svc, &p.key) {
        FLOW_DROP_SOURCE_RANGE
    } else if svc.count == 0 {
        FLOW_DROP_NO_BACKEND
    // Only a SYN opens a TCP flow; anything else without state is invalid (as conntrack would say).
    } else if p.key.proto == PROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN {
        FLOW_DROP_INVALID
    } else {
        0
    };
    if drop != 0 {
        flow_event(ctx, p, None, drop);
        return Outcome::Drop;
    }
    match new_flow(ctx, p, svc) {
        Some(ct) => {
            flow_event(ctx, p, Some(&ct), 0);
            Outcome::Forward(ct)
        }
        None => {
            flow_event(ctx, p, None, FLOW_DROP_NO_SNAT);
            Outcome::Drop
        }
    }
}

/// The flow event of a new north-south flow (`ct`: its translation) or of its drop.
#[inline(always)]
fn flow_event<C: PacketCtx>(ctx: &C, p: &Packet, ct: Option<&CtValue>, reason: u8) {
    const NONE: [u32; 4] = [0; 4];
    let k = &p.key;
    let (xaddr, xport, flags) = match ct {
        Some(ct) => (
            &ct.new_daddr,
            ct.new_dport,
            if ct.flags & CT_REWRITE_SRC != 0 {
                FLOW_FLAG_SNAT
            } else {
                0
            },
        ),
        None => (&NONE, 0, 0),
    };
    emit(&Flow {
        kind: FLOW_KIND_NORTH_SOUTH,
        reason,
        proto: k.proto,
        family: k.family,
        tcp_flags: p.tcp_flags,
        flags,
        ifindex: ctx.ifindex(),
        cookie: 0,
        saddr: &k.saddr,
        daddr: &k.daddr,
        xaddr,
        sport: k.sport,
        dport: k.dport,
        xport,
    });
}

#[inline(always)]
fn new_flow<C: PacketCtx>(ctx: &mut C, p: &Packet, svc: &ExtSvcValue) -> Option<CtValue> {
    // SAFETY: reading a global the loader may have overridden.
    let m = unsafe { core::ptr::read_volatile(&raw const MAGLEV_M) };
    let h = if svc.flags & EXT_FLAG_RANDOM != 0 {
        // SAFETY: plain helper call.
        unsafe { bpf_get_prandom_u32() }
    } else {
        flow_hash(&p.key, svc.flags & EXT_FLAG_CLIENT_AFFINITY != 0)
    };
    let idx = svc.ext_id.checked_mul(m)?.checked_add(h.checked_rem(m)?)?;
    let backend_id = *MAGLEV.get(idx)?;
    // SAFETY: lookup in a hash map of plain structs.
    let backend = unsafe { BACKENDS.get(&backend_id) }?;
    let k = &p.key;

    // Remote backend (the FIB sends it back out of this device, or into the overlay to another
    // node) and not ETP=Local: SNAT to the device's address so the reply comes back here.
    let snat = svc.flags & EXT_FLAG_LOCAL == 0
        && fib(ctx, k.family, &k.saddr, &backend.addr).is_some_and(|(rc, params)| {
            (rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) || rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH))
            // SAFETY: lookup in a hash map of plain integers.
            && (params.ifindex == ctx.ifindex() || unsafe { TUNNELS.get(&params.ifindex) }.is_some())
        });
    let mut fwd = CtValue {
        new_saddr: k.saddr,
        new_daddr: backend.addr,
        new_sport: k.sport,
        new_dport: backend.port,
        flags: CT_REWRITE_DST,
    };
    let mut rev_key = CtKey {
        saddr: backend.addr,
        daddr: k.saddr,
        sport: backend.port,
        dport: k.sport,
        proto: k.proto,
        family: k.family,
        _pad: [0; 2],
    };
    let mut rev = CtValue {
        new_saddr: k.daddr,
        new_daddr: k.saddr,
        new_sport: k.dport,
        new_dport: k.sport,
        flags: CT_REWRITE_SRC | CT_REPLY,
    };
    if snat {
        // SAFETY: lookup in a hash map of plain structs.
        let dev = unsafe { DEVICES.get(&ctx.ifindex()) }?;
        let node = if k.family == FAMILY_V4 {
            [dev.v4, 0, 0, 0]
        } else {
            dev.v6
        };
        let span = u32::from(SNAT_PORT_MAX - SNAT_PORT_MIN) + 1;
        let base = flow_hash(k, false);
        let mut chosen = None;
        for i in 0..8u32 {
            let port = SNAT_PORT_MIN + (base.wrapping_add(i.wrapping_mul(7919)) % span) as u16;
            rev_key.daddr = node;
            rev_key.dport = port.to_be();
            rev.flags = CT_REWRITE_SRC | CT_REWRITE_DST | CT_REPLY;
            // The masquerade allocates on the same address and range: its tuples are taken.
            // SAFETY: lookup in an LRU hash of plain structs.
            if unsafe { SNAT.get(&rev_key) }.is_some() {
                continue;
            }
            if CONNTRACK
                .insert(&rev_key, &rev, u64::from(BPF_NOEXIST))
                .is_ok()
            {
                chosen = Some(port.to_be());
                break;
            }
        }
        let port = chosen?;
        fwd.new_saddr = node;
        fwd.new_sport = port;
        fwd.flags |= CT_REWRITE_SRC;
    } else {
        CONNTRACK.insert(&rev_key, &rev, 0).ok()?;
    }
    CONNTRACK.insert(k, &fwd, 0).ok()?;
    rewrite(ctx, p, &fwd)?;
    Some(fwd)
}

/// Egress: replies of local backends leave with the frontend's address.
#[inline(always)]
pub fn egress(ctx: &mut TcContext, p: &Packet) -> i32 {
    // SAFETY: lookup in an LRU hash of plain structs.
    if let Some(ct) = unsafe { CONNTRACK.get(&p.key) } {
        let ct = *ct;
        if ct.flags & CT_REPLY != 0 {
            return match rewrite(ctx, p, &ct) {
                Some(()) => TC_ACT_OK as i32,
                None => TC_ACT_SHOT as i32,
            };
        }
    }
    crate::TCX_NEXT
}
