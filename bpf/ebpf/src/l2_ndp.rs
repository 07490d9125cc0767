//! IPv6 Neighbor Solicitations for announced addresses, turned into Neighbor Advertisements in
//! place (RFC 4861 7.1.1 validity, 7.2.4 replies). Three solicitations are answered:
//!
//! - address resolution: a specified source with exactly one source link-layer option (to the
//!   solicited-node group or unicast to us) → a solicited NA (S+O) to that link-layer address;
//! - neighbor unreachability detection: a specified source, no option, sent unicast to the
//!   announced address and to our MAC → a solicited NA (S+O) to the frame's Ethernet source and
//!   the IPv6 source;
//! - duplicate address detection: the unspecified source `::`, no option (RFC: a DAD probe
//!   never carries one), sent to the target's solicited-node group → an unsolicited NA with
//!   the Override flag to all-nodes `ff02::1`, so the probing host sees the duplicate.
//!
//! Every reply carries the target link-layer option (the frame grows by 8 bytes when the
//! solicitation had no option). Anything else — wrong hop limit, code, length, checksum, a
//! multicast source, an option with a `::` source, a multicast solicitation without one —
//! passes untouched.

use aya_ebpf::{bindings::__sk_buff, helpers::generated::bpf_skb_change_tail, programs::TcContext};
use ferrite_abi::{FAMILY_V6, L2Key};

use crate::maps::L2_ADDRS;

const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;
const ICMP: usize = ETH_HLEN + IPV6_HLEN;
const IPPROTO_ICMPV6: u8 = 58;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;
/// NS/NA without options: 4 header + 4 flags/reserved + 16 target.
const ND_BARE: usize = 24;
/// With one link-layer address option.
const ND_LEN: usize = 32;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;
/// All-nodes `ff02::1` (as loaded from the packet: words in network byte order) and its
/// Ethernet group.
const ALL_NODES: [u32; 4] = [
    u32::from_ne_bytes([0xff, 2, 0, 0]),
    0,
    0,
    u32::from_ne_bytes([0, 0, 0, 1]),
];
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

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

/// ICMPv6 checksum sum (unfolded) over the pseudo-header and a message of `len` bytes whose
/// bytes past `len` in `msg` are zero.
#[inline(always)]
fn icmp_sum(src: &[u32; 4], dst: &[u32; 4], len: usize, msg: &[u8; ND_LEN]) -> u32 {
    let mut s = add_words(add_words(0, src), dst) + len as u32 + u32::from(IPPROTO_ICMPV6);
    let mut i = 0;
    while i < ND_LEN {
        s += u32::from(u16::from_be_bytes([msg[i], msg[i + 1]]));
        i += 2;
    }
    s
}

/// Whether `dst` is the solicited-node group of `target` (`ff02::1:ffXX:XXXX`).
#[inline(always)]
fn solicited_node_of(dst: &[u32; 4], target: &[u32; 4]) -> bool {
    u32::from_be(dst[0]) == 0xff02_0000
        && dst[1] == 0
        && u32::from_be(dst[2]) == 1
        && u32::from_be(dst[3]) >> 24 == 0xff
        && u32::from_be(dst[3]) & 0x00ff_ffff == u32::from_be(target[3]) & 0x00ff_ffff
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the skb context.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Answers a Neighbor Solicitation for an announced address in place; `None`: pass the frame.
#[inline(always)]
pub fn ndp(ctx: &mut TcContext) -> Option<()> {
    let next: u8 = ctx.load(ETH_HLEN + 6).ok()?;
    let hop: u8 = ctx.load(ETH_HLEN + 7).ok()?;
    let plen = usize::from(u16::from_be(ctx.load::<u16>(ETH_HLEN + 4).ok()?));
    // RFC 4861 7.1.1: hop limit 255; no option or exactly one link-layer option.
    if next != IPPROTO_ICMPV6 || hop != 255 || (plen != ND_LEN && plen != ND_BARE) {
        return None;
    }
    let has_slla = plen == ND_LEN;
    let mut body = [0u8; ND_LEN];
    if has_slla {
        body = ctx.load(ICMP).ok()?;
    } else {
        let bare: [u8; ND_BARE] = ctx.load(ICMP).ok()?;
        let mut i = 0;
        while i < ND_BARE {
            body[i] = bare[i];
            i += 1;
        }
    }
    if body[0] != ND_NEIGHBOR_SOLICIT || body[1] != 0 {
        return None;
    }
    if has_slla && (body[24] != ND_OPT_SOURCE_LL || body[25] != 1) {
        return None;
    }
    let src: [u32; 4] = ctx.load(ETH_HLEN + 8).ok()?;
    let dst: [u32; 4] = ctx.load(ETH_HLEN + 24).ok()?;
    if src[0].to_ne_bytes()[0] == 0xff {
        return None; // a multicast source is invalid (RFC 4861 7.1.1)
    }
    // The solicitation's own checksum must verify (pseudo-header + message sums to 0xffff).
    if fold(icmp_sum(&src, &dst, plen, &body)) != 0 {
        return None;
    }
    let target: [u32; 4] = ctx.load(ICMP + 8).ok()?;
    let dad = src == [0; 4];
    let (peer, ip_dst, flags) = if dad {
        // RFC 4861 7.1.1: no source link-layer option with `::`; a DAD probe goes to the
        // solicited-node group. 7.2.4: answer to all-nodes, Solicited clear.
        if has_slla || !solicited_node_of(&dst, &target) {
            return None;
        }
        (ALL_NODES_MAC, ALL_NODES, NA_OVERRIDE)
    } else if has_slla {
        let mut peer = [0u8; 6];
        peer.copy_from_slice(&body[26..32]);
        (peer, src, NA_SOLICITED | NA_OVERRIDE)
    } else {
        // Unicast NUD probe: to the announced address itself (a multicast one must carry the
        // option), answered to where it came from.
        if dst != target {
            return None;
        }
        let peer: [u8; 6] = ctx.load(6).ok()?;
        (peer, src, NA_SOLICITED | NA_OVERRIDE)
    };
    let key = L2Key {
        addr: target,
        ifindex: ifindex(ctx),
        family: FAMILY_V6,
        _pad: [0; 3],
    };
    // SAFETY: lookup in a hash map of plain structs.
    let mac = unsafe { L2_ADDRS.get(&key) }?.mac;

    // Neighbor Advertisement: flags, target, our link-layer address.
    let mut na = [0u8; ND_LEN];
    na[0] = ND_NEIGHBOR_ADVERT;
    na[4] = flags;
    na[8..24].copy_from_slice(&body[8..24]);
    na[24] = ND_OPT_TARGET_LL;
    na[25] = 1;
    na[26..32].copy_from_slice(&mac);
    let csum = fold(icmp_sum(&target, &ip_dst, ND_LEN, &na)).to_be_bytes();
    na[2] = csum[0];
    na[3] = csum[1];

    if !has_slla {
        // Room for the target link-layer option.
        // SAFETY: plain helper call on this program's skb.
        let grown = unsafe {
            bpf_skb_change_tail(ctx.skb.skb.cast::<__sk_buff>(), (ICMP + ND_LEN) as u32, 0)
        };
        if grown != 0 {
            return None;
        }
        ctx.store(ETH_HLEN + 4, &(ND_LEN as u16).to_be(), 0).ok()?;
    }
    ctx.store(0, &peer, 0).ok()?;
    ctx.store(6, &mac, 0).ok()?;
    ctx.store(ETH_HLEN + 8, &target, 0).ok()?;
    ctx.store(ETH_HLEN + 24, &ip_dst, 0).ok()?;
    ctx.store(ICMP, &na, 0).ok()?;
    crate::l2_resp::answered(ifindex(ctx), FAMILY_V6, &src, &target);
    Some(())
}
