//! ARP and IPv6 Neighbor Solicitation responder for announced addresses. Requests are turned
//! into replies in place and sent back out of the interface they came in on. Anything that is
//! not a well-formed request for an announced address passes untouched.

use aya_ebpf::{helpers::generated::bpf_redirect, programs::TcContext};
use ferrite_abi::{FAMILY_V4, FAMILY_V6, L2_HEARTBEAT_GRACE_NS, L2Key};

use crate::TCX_NEXT;
use crate::maps::{L2_ADDRS, L2_LIVE};

const ETH_HLEN: usize = 14;
const PACKET_OTHERHOST: u32 = 3;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86DD;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;
/// ICMPv6 NS/NA body with one link-layer address option: 4 header + 4 flags + 16 target + 8.
const ND_LEN: usize = 32;

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
    Some(())
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[inline(always)]
fn add_words(sum: u32, words: &[u32; 4]) -> u32 {
    let mut s = sum;
    for w in words {
        let b = w.to_ne_bytes();
        s += u32::from(u16::from_be_bytes([b[0], b[1]]))
            + u32::from(u16::from_be_bytes([b[2], b[3]]));
    }
    s
}

#[inline(always)]
fn ndp(ctx: &mut TcContext) -> Option<()> {
    let next: u8 = ctx.load(ETH_HLEN + 6).ok()?;
    let hop: u8 = ctx.load(ETH_HLEN + 7).ok()?;
    let plen: u16 = ctx.load(ETH_HLEN + 4).ok()?;
    // RFC 4861 7.1.1: hop limit 255; exactly one source link-layer option (ours to answer to).
    if next != IPPROTO_ICMPV6 || hop != 255 || usize::from(u16::from_be(plen)) != ND_LEN {
        return None;
    }
    let icmp = ETH_HLEN + 40;
    let body: [u8; ND_LEN] = ctx.load(icmp).ok()?;
    if body[0] != ND_NEIGHBOR_SOLICIT
        || body[1] != 0
        || body[24] != ND_OPT_SOURCE_LL
        || body[25] != 1
    {
        return None;
    }
    let src: [u32; 4] = ctx.load(ETH_HLEN + 8).ok()?;
    if src == [0; 4] {
        return None; // duplicate address detection: not a resolution request
    }
    if src[0].to_ne_bytes()[0] == 0xff {
        return None; // a multicast source is invalid (RFC 4861 7.1.1)
    }
    // The solicitation's own checksum must verify (pseudo-header + message sums to 0xffff).
    let mut check = add_words(0, &src) + ND_LEN as u32 + u32::from(IPPROTO_ICMPV6);
    let dst: [u32; 4] = ctx.load(ETH_HLEN + 24).ok()?;
    check = add_words(check, &dst);
    let mut j = 0;
    while j < ND_LEN {
        check += u32::from(u16::from_be_bytes([body[j], body[j + 1]]));
        j += 2;
    }
    if fold(check) != 0 {
        return None;
    }
    let target: [u32; 4] = ctx.load(icmp + 8).ok()?;
    let key = L2Key {
        addr: target,
        ifindex: ifindex(ctx),
        family: FAMILY_V6,
        _pad: [0; 3],
    };
    // SAFETY: lookup in a hash map of plain structs.
    let mac = unsafe { L2_ADDRS.get(&key) }?.mac;
    let mut peer_mac = [0u8; 6];
    peer_mac.copy_from_slice(&body[26..32]);

    // Neighbor Advertisement: Solicited + Override, target, our link-layer address.
    let mut na = [0u8; ND_LEN];
    na[0] = ND_NEIGHBOR_ADVERT;
    na[4] = 0x60;
    na[8..24].copy_from_slice(&body[8..24]);
    na[24] = ND_OPT_TARGET_LL;
    na[25] = 1;
    na[26..32].copy_from_slice(&mac);
    // Checksum over the pseudo-header (src, dst, length, next header) and the message.
    let mut sum =
        add_words(add_words(0, &target), &src) + ND_LEN as u32 + u32::from(IPPROTO_ICMPV6);
    let mut i = 0;
    while i < ND_LEN {
        sum += u32::from(u16::from_be_bytes([na[i], na[i + 1]]));
        i += 2;
    }
    let csum = fold(sum).to_be_bytes();
    na[2] = csum[0];
    na[3] = csum[1];

    ctx.store(0, &peer_mac, 0).ok()?;
    ctx.store(6, &mac, 0).ok()?;
    ctx.store(ETH_HLEN + 8, &target, 0).ok()?;
    ctx.store(ETH_HLEN + 24, &src, 0).ok()?;
    ctx.store(icmp, &na, 0).ok()?;
    Some(())
}
