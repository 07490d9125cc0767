//! ARP and IPv6 Neighbor Solicitation responder for announced addresses (the NDP side is
//! [`crate::l2_ndp`]). Requests are turned into replies in place and sent back out of the
//! interface they came in on. Anything that is not a well-formed request for an announced
//! address passes untouched.

use aya_ebpf::{helpers::generated::bpf_redirect, programs::TcContext};
use ferrite_abi::{FAMILY_V4, FLOW_KIND_L2, L2_HEARTBEAT_GRACE_NS, L2Key};

use crate::TCX_NEXT;
use crate::l2_ndp::ndp;
use crate::maps::{L2_ADDRS, L2_LIVE};

const ETH_HLEN: usize = 14;
const PACKET_OTHERHOST: u32 = 3;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86DD;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the skb context.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Whether the agent is alive (fresh heartbeat).
#[inline(always)]
fn agent_alive() -> bool {
    let Some(beat) = L2_LIVE.get(0) else {
        return false;
    };
    // SAFETY: plain helper call.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    now.wrapping_sub(*beat) <= L2_HEARTBEAT_GRACE_NS
}

#[inline(always)]
fn bounce(ctx: &TcContext) -> i32 {
    // SAFETY: plain helper call; egress of the receiving interface.
    unsafe { bpf_redirect(ifindex(ctx), 0) as i32 }
}

/// The entry point's verdict for a frame: a reply was sent, or pass it on.
#[inline(always)]
pub fn respond(ctx: &mut TcContext) -> i32 {
    let Ok(proto) = ctx.load::<u16>(12) else {
        return TCX_NEXT;
    };
    // SAFETY: reading fields of the skb context.
    let (pkt_type, vlan) = unsafe { ((*ctx.skb.skb).pkt_type, (*ctx.skb.skb).vlan_present) };
    // Frames for another host's MAC, or on a VLAN this interface is not: never ours to answer.
    if pkt_type == PACKET_OTHERHOST || vlan != 0 {
        return TCX_NEXT;
    }
    let answered = match u16::from_be(proto) {
        _ if !agent_alive() => None,
        ETH_P_ARP => arp(ctx),
        ETH_P_IPV6 => ndp(ctx),
        _ => None,
    };
    match answered {
        Some(()) => bounce(ctx),
        None => TCX_NEXT,
    }
}

#[inline(always)]
fn arp(ctx: &mut TcContext) -> Option<()> {
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, oper.
    let fixed: [u8; 8] = ctx.load(ETH_HLEN).ok()?;
    if fixed != [0, 1, 0x08, 0x00, 6, 4, 0, ARP_REQUEST as u8] {
        return None;
    }
    let sha: [u8; 6] = ctx.load(ETH_HLEN + 8).ok()?;
    let spa: u32 = ctx.load(ETH_HLEN + 14).ok()?;
    let tpa: u32 = ctx.load(ETH_HLEN + 24).ok()?;
    let key = L2Key {
        addr: [tpa, 0, 0, 0],
        ifindex: ifindex(ctx),
        family: FAMILY_V4,
        _pad: [0; 3],
    };
    // SAFETY: lookup in a hash map of plain structs.
    let mac = unsafe { L2_ADDRS.get(&key) }?.mac;
    ctx.store(0, &sha, 0).ok()?;
    ctx.store(6, &mac, 0).ok()?;
    ctx.store(ETH_HLEN + 6, &ARP_REPLY.to_be(), 0).ok()?;
    ctx.store(ETH_HLEN + 8, &mac, 0).ok()?;
    ctx.store(ETH_HLEN + 14, &tpa, 0).ok()?;
    ctx.store(ETH_HLEN + 18, &sha, 0).ok()?;
    ctx.store(ETH_HLEN + 24, &spa, 0).ok()?;
    answered(ifindex(ctx), FAMILY_V4, &[spa, 0, 0, 0], &[tpa, 0, 0, 0]);
    Some(())
}

/// The flow event of an answer: `asker` asked for `addr` on `ifindex`.
#[inline(always)]
pub fn answered(ifindex: u32, family: u8, asker: &[u32; 4], addr: &[u32; 4]) {
    crate::flow::emit(&crate::flow::Flow {
        kind: FLOW_KIND_L2,
        reason: 0,
        proto: 0,
        family,
        tcp_flags: 0,
        flags: 0,
        ifindex,
        cookie: 0,
        saddr: asker,
        daddr: addr,
        xaddr: &[0; 4],
        sport: 0,
        dport: 0,
        xport: 0,
    });
}
