//! BPF host routing (Cilium's name for it): forwarded pod traffic skips the node's IP stack.
//! From a pod's veth (its TC ingress) the packet goes straight to the device the FIB picks; from
//! an external device (or another pod) it goes straight into the local pod's network namespace
//! with `bpf_redirect_peer`, without a second pass through the veth's backlog queue. What the
//! FIB cannot decide — local delivery, no route, a TTL about to expire, a neighbour not resolved
//! yet towards a pod — takes the stack as before, so this is only ever a shortcut.

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_SHOT},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use ferrite_abi::{
    FAMILY_V4, FAMILY_V6, FWD_STAT_NEIGH, FWD_STAT_PEER, FWD_STAT_REDIRECT, FWD_STAT_STACK,
    NodeAddrKey,
};

use crate::TCX_NEXT;
use crate::maps::{FWD_STATS, NODE_ADDRS, POD_DEVS};
use crate::nat_lb::fib;
use crate::pkt::PacketCtx;
use crate::policy;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
/// Offsets in an Ethernet frame: IPv4 TTL (then protocol) and header checksum; IPv6 hop limit.
const V4_TTL: usize = 14 + 8;
const V4_CSUM: usize = 14 + 10;
const V6_HOPS: usize = 14 + 7;

/// The addresses of an IPv4/IPv6 packet, network byte order (IPv4 in `[0]`).
struct L3 {
    family: u8,
    saddr: [u32; 4],
    daddr: [u32; 4],
}

#[inline(always)]
fn l3(ctx: &TcContext) -> Option<L3> {
    let proto: u16 = PacketCtx::load(ctx, 12)?;
    match u16::from_be(proto) {
        ETH_P_IP => {
            let vihl: u8 = PacketCtx::load(ctx, 14)?;
            if vihl >> 4 != 4 {
                return None;
            }
            let s: u32 = PacketCtx::load(ctx, 14 + 12)?;
            let d: u32 = PacketCtx::load(ctx, 14 + 16)?;
            Some(L3 {
                family: FAMILY_V4,
                saddr: [s, 0, 0, 0],
                daddr: [d, 0, 0, 0],
            })
        }
        ETH_P_IPV6 => Some(L3 {
            family: FAMILY_V6,
            saddr: PacketCtx::load(ctx, 14 + 8)?,
            daddr: PacketCtx::load(ctx, 14 + 24)?,
        }),
        _ => None,
    }
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(c) = FWD_STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *c += 1 };
    }
}

/// The TTL / hop limit, if the packet may be forwarded once more (else the stack answers
/// with ICMP time exceeded, as a router must).
#[inline(always)]
fn hops_left(ctx: &TcContext, family: u8) -> bool {
    let off = if family == FAMILY_V4 { V4_TTL } else { V6_HOPS };
    PacketCtx::load::<u8>(ctx, off).is_some_and(|t| t > 1)
}

/// One router hop: TTL / hop limit minus one (IPv4 header checksum patched).
#[inline(always)]
fn hop(ctx: &mut TcContext, family: u8) -> Option<()> {
    if family == FAMILY_V4 {
        let old: u16 = PacketCtx::load(ctx, V4_TTL)?;
        let ttl: u8 = PacketCtx::load(ctx, V4_TTL)?;
        PacketCtx::store(ctx, V4_TTL, &(ttl - 1))?;
        let new: u16 = PacketCtx::load(ctx, V4_TTL)?;
        ctx.l3_csum_replace(V4_CSUM, u64::from(old), u64::from(new), 2)
            .ok()
    } else {
        let hops: u8 = PacketCtx::load(ctx, V6_HOPS)?;
        PacketCtx::store(ctx, V6_HOPS, &(hops - 1))
    }
}

/// An address of this node's north-south devices: delivered locally, never forwarded.
#[inline(always)]
fn to_node(l3: &L3) -> bool {
    let key = NodeAddrKey {
        family: u32::from(l3.family),
        addr: l3.daddr,
    };
    // SAFETY: lookup in a hash map of plain values.
    unsafe { NODE_ADDRS.get(&key) }.is_some()
}

/// Where [`route`] runs, which decides what it may forward and how it enters a local pod.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The TC ingress of an external or overlay device: only packets for a local pod.
    Device,
    /// The TC ingress of a pod's host-side veth: anything routed.
    PodVeth,
    /// A pod's netkit device as the pod transmits (`BPF_NETKIT_PEER`): anything routed, and
    /// straight out of the chosen device from the pod's own transmit, with no backlog queue at
    /// all. Not at a TC ingress hook, so another local pod is entered with `bpf_redirect` to its
    /// device (`bpf_redirect_peer` works only at ingress).
    PodNetkit,
}

/// What a local pod sent, at its device's hook (veth or netkit): the pod's egress
/// NetworkPolicy first (a denied packet is dropped), then [`route`].
#[inline(always)]
pub fn from_pod(ctx: &mut TcContext, origin: Origin) -> i32 {
    if !policy::egress(ctx) {
        return TC_ACT_SHOT as i32;
    }
    route(ctx, origin)
}

/// Forwards the packet at this hook past the stack when the FIB can (see [`Origin`]).
#[inline(always)]
pub fn route(ctx: &mut TcContext, origin: Origin) -> i32 {
    let from_pod = origin != Origin::Device;
    let Some(l3) = l3(ctx) else {
        return TCX_NEXT;
    };
    if to_node(&l3) {
        return TCX_NEXT;
    }
    if !hops_left(ctx, l3.family) {
        count(FWD_STAT_STACK);
        return TCX_NEXT;
    }
    let Some((rc, params)) = fib(ctx, l3.family, &l3.saddr, &l3.daddr) else {
        return TCX_NEXT;
    };
    let out = params.ifindex;
    // SAFETY: lookup in a hash map of plain values.
    let to_pod = unsafe { POD_DEVS.get(&out) }.is_some();
    if rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) && (from_pod || to_pod) {
        // Into a pod past its veth's egress hook: its ingress policy here.
        if to_pod && !policy::ingress(ctx) {
            return TC_ACT_SHOT as i32;
        }
        let (dmac, smac) = (params.dmac, params.smac);
        if PacketCtx::store(ctx, 0, &dmac).is_none()
            || PacketCtx::store(ctx, 6, &smac).is_none()
            || hop(ctx, l3.family).is_none()
        {
            return TC_ACT_SHOT as i32;
        }
        if to_pod && origin != Origin::PodNetkit {
            count(FWD_STAT_PEER);
            // SAFETY: plain helper call; `out` is a pod's host-side veth, whose peer is the pod.
            return unsafe { bpf_redirect_peer(out, 0) } as i32;
        }
        count(FWD_STAT_REDIRECT);
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(out, 0) } as i32;
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) && from_pod && !to_pod {
        if hop(ctx, l3.family).is_none() {
            return TC_ACT_SHOT as i32;
        }
        count(FWD_STAT_NEIGH);
        // SAFETY: NULL params lets the kernel resolve the neighbour itself.
        return unsafe { bpf_redirect_neigh(out, core::ptr::null_mut(), 0, 0) } as i32;
    }
    count(FWD_STAT_STACK);
    TCX_NEXT
}
