//! NetworkPolicy for this node's pods, evaluated on the packet as it is on the wire — after the
//! socket LB or the north-south LB translated a service address to the backend — at the two
//! places a pod's traffic passes: leaving it (its veth's TC ingress: [`egress`]) and entering
//! it (before `bpf_redirect_peer`, and on its veth's TC egress for what the stack delivers:
//! [`ingress`]). See `ferrite_abi::policy` for the maps.
//!
//! A pod that no policy isolates in a direction passes; an isolated one passes what an allow
//! rule of its endpoint holds for the peer's identity (a pod's, the longest `ipBlock` prefix's,
//! or any peer), the protocol and the destination port. Replies pass: every allowed tuple is
//! noted in `fe_polct_v1`, and a packet whose reverse tuple is there is a reply. The node always
//! reaches its own pods: every address of its network namespace is in the ipcache as
//! `IDENTITY_HOST` (kubelet probes, hostNetwork pods).
//! Neighbour discovery and ICMP errors are not policy's business (PMTUD keeps working);
//! neither is anything that is not IPv4/IPv6.

use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::programs::TcContext;
use ferrite_abi::{
    CtKey, FAMILY_V4, FAMILY_V6, FLOW_DROP_POLICY, FLOW_FLAG_EGRESS, FLOW_KIND_POLICY,
    IDENTITY_ANY, IDENTITY_HOST, IpInfo, MASQ_CIDR_PREFIX_BITS, MasqCidr, NodeAddrKey,
    POLICY_EGRESS, POLICY_INGRESS, POLICY_ISOLATED_EGRESS, POLICY_ISOLATED_INGRESS,
    POLICY_PREFIX_FULL, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PolicyCtValue,
    PolicyKey, policy_stat_slot,
};

use crate::flow::{self, Flow};
use crate::maps::{IPCACHE, POLICY, POLICY_CIDRS, POLICY_CT, POLICY_REVISION, POLICY_STATS};
use crate::pkt::PacketCtx;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;

/// The packet's tuple as a conntrack key, or `None` when policy does not apply to it.
#[inline(always)]
fn tuple(ctx: &TcContext) -> Option<CtKey> {
    let ethertype: u16 = PacketCtx::load(ctx, 12)?;
    let mut k = CtKey::default();
    let l4 = match u16::from_be(ethertype) {
        ETH_P_IP => {
            let vihl: u8 = PacketCtx::load(ctx, ETH_HLEN)?;
            if vihl >> 4 != 4 {
                return None;
            }
            k.family = FAMILY_V4;
            k.proto = PacketCtx::load(ctx, ETH_HLEN + 9)?;
            k.saddr[0] = PacketCtx::load(ctx, ETH_HLEN + 12)?;
            k.daddr[0] = PacketCtx::load(ctx, ETH_HLEN + 16)?;
            let frag: u16 = PacketCtx::load(ctx, ETH_HLEN + 6)?;
            if u16::from_be(frag) & 0x1fff != 0 {
                // A later fragment: no ports to read.
                return Some(k);
            }
            ETH_HLEN + usize::from(vihl & 0x0f) * 4
        }
        ETH_P_IPV6 => {
            k.family = FAMILY_V6;
            k.proto = PacketCtx::load(ctx, ETH_HLEN + 6)?;
            if k.proto == NEXTHDR_HOP {
                // Hop-by-hop options: MLD reports and router alerts.
                return None;
            }
            k.saddr = PacketCtx::load(ctx, ETH_HLEN + 8)?;
            k.daddr = PacketCtx::load(ctx, ETH_HLEN + 24)?;
            ETH_HLEN + IPV6_HLEN
        }
        _ => return None,
    };
    match k.proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            k.sport = PacketCtx::load(ctx, l4)?;
            k.dport = PacketCtx::load(ctx, l4 + 2)?;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let ty: u8 = PacketCtx::load(ctx, l4)?;
            // Echo: the identifier is the request's source "port", the reply's destination.
            let id: u16 = PacketCtx::load(ctx, l4 + 4).unwrap_or(0);
            match (k.proto, ty) {
                (PROTO_ICMP, 8) | (PROTO_ICMPV6, 128) => k.sport = id,
                (PROTO_ICMP, 0) | (PROTO_ICMPV6, 129) => k.dport = id,
                // Errors (unreachable, too big, time exceeded) and neighbour discovery.
                (PROTO_ICMP, 3 | 11 | 12) | (PROTO_ICMPV6, 1..=4 | 133..=137) => return None,
                _ => {}
            }
        }
        _ => {}
    }
    Some(k)
}

#[inline(always)]
fn addr_key(family: u8, addr: &[u32; 4]) -> NodeAddrKey {
    NodeAddrKey {
        family: u32::from(family),
        addr: *addr,
    }
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(c) = POLICY_STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array of u64.
        unsafe { *c += 1 };
    }
}

/// A reply: the reverse tuple was allowed before.
#[inline(always)]
fn is_reply(k: &CtKey) -> bool {
    let rev = CtKey {
        saddr: k.daddr,
        daddr: k.saddr,
        sport: k.dport,
        dport: k.sport,
        proto: k.proto,
        family: k.family,
        _pad: [0; 2],
    };
    // SAFETY: lookup in a hash map of plain values.
    unsafe { POLICY_CT.get(&rev) }.is_some()
}

/// The policy revision now.
#[inline(always)]
fn revision() -> u32 {
    POLICY_REVISION.get(0).copied().unwrap_or(0)
}

/// Notes that `direction` allowed `k` under `rev` (`held`: the tuple's entry, if any) so its
/// replies pass and its next packets skip the rules; `true` when the tuple was new.
#[inline(always)]
fn note(k: &CtKey, direction: u8, rev: u32, held: Option<PolicyCtValue>) -> bool {
    let bit = 1u32 << direction;
    let allowed = match held {
        Some(h) if h.revision == rev && h.allowed & bit != 0 => return false,
        Some(h) if h.revision == rev => h.allowed | bit,
        _ => bit,
    };
    let v = PolicyCtValue {
        allowed,
        revision: rev,
    };
    let _ = POLICY_CT.insert(k, &v, 0);
    held.is_none()
}

/// The tuple's entry (see [`note`]).
#[inline(always)]
fn held(k: &CtKey) -> Option<PolicyCtValue> {
    // SAFETY: lookup in a hash map of plain values.
    unsafe { POLICY_CT.get(k) }.copied()
}

/// The allow rule of `endpoint` for peers of `identity`, if any: its policy's slot.
#[inline(always)]
fn rule(endpoint: u32, identity: u32, direction: u8, k: &CtKey) -> Option<u32> {
    let key = Key::new(
        POLICY_PREFIX_FULL,
        PolicyKey {
            endpoint,
            identity,
            direction,
            proto: k.proto,
            dport: k.dport,
        },
    );
    POLICY.get(&key).map(|v| v.policy)
}

/// The policy slot allowing traffic between `endpoint` and `peer`, if one does.
#[inline(always)]
fn allowed_by(endpoint: u32, peer: &[u32; 4], direction: u8, k: &CtKey) -> Option<u32> {
    // SAFETY: lookup in a hash map of plain values.
    if let Some(remote) = unsafe { IPCACHE.get(&addr_key(k.family, peer)) } {
        if let Some(p) = rule(endpoint, remote.identity, direction, k) {
            return Some(p);
        }
    }
    let prefix = if k.family == FAMILY_V4 { 32 } else { 128 };
    let cidr = Key::new(
        MASQ_CIDR_PREFIX_BITS + prefix,
        MasqCidr {
            family: u32::from(k.family),
            addr: *peer,
        },
    );
    if let Some(class) = POLICY_CIDRS.get(&cidr) {
        if let Some(p) = rule(endpoint, *class, direction, k) {
            return Some(p);
        }
    }
    rule(endpoint, IDENTITY_ANY, direction, k)
}

/// The verdict for `k` at local endpoint `ep` in `direction`: pass (noted) or drop (counted,
/// reported).
#[inline(always)]
fn verdict(ctx: &TcContext, k: &CtKey, ep: &IpInfo, direction: u8) -> bool {
    let isolated = if direction == POLICY_INGRESS {
        ep.flags & POLICY_ISOLATED_INGRESS != 0
    } else {
        ep.flags & POLICY_ISOLATED_EGRESS != 0
    };
    let rev = revision();
    let held = held(k);
    if let Some(h) = held
        && h.revision == rev
        && h.allowed & (1 << direction) != 0
    {
        // Allowed before, and nothing changed since.
        return true;
    }
    if is_reply(k) {
        return true;
    }
    if !isolated {
        let _ = note(k, direction, rev, held);
        return true;
    }
    let peer = if direction == POLICY_INGRESS {
        &k.saddr
    } else {
        &k.daddr
    };
    let flags = if direction == POLICY_EGRESS {
        FLOW_FLAG_EGRESS
    } else {
        0
    };
    if let Some(policy) = allowed_by(ep.endpoint, peer, direction, k) {
        count(policy_stat_slot(policy, direction));
        if note(k, direction, rev, held) {
            report(ctx, k, 0, flags, policy);
        }
        return true;
    }
    count(policy_stat_slot(0, direction));
    report(ctx, k, FLOW_DROP_POLICY, flags, 0);
    false
}

#[inline(always)]
fn report(ctx: &TcContext, k: &CtKey, reason: u8, flags: u8, policy: u32) {
    flow::emit(&Flow {
        kind: FLOW_KIND_POLICY,
        reason,
        proto: k.proto,
        family: k.family,
        tcp_flags: 0,
        flags,
        ifindex: PacketCtx::ifindex(ctx),
        cookie: u64::from(policy),
        saddr: &k.saddr,
        daddr: &k.daddr,
        xaddr: &k.daddr,
        sport: k.sport,
        dport: k.dport,
        xport: k.dport,
    });
}

/// A packet a local pod sent (its veth's TC ingress): may it leave?
#[inline(always)]
pub fn egress(ctx: &TcContext) -> bool {
    let Some(k) = tuple(ctx) else {
        return true;
    };
    // SAFETY: lookup in a hash map of plain values.
    match unsafe { IPCACHE.get(&addr_key(k.family, &k.saddr)) } {
        Some(ep) if ep.endpoint != 0 => verdict(ctx, &k, ep, POLICY_EGRESS),
        _ => true,
    }
}

/// Sent by the node itself (one of its addresses is the source).
#[inline(always)]
fn from_host(k: &CtKey) -> bool {
    // SAFETY: lookup in a hash map of plain values.
    unsafe { IPCACHE.get(&addr_key(k.family, &k.saddr)) }
        .is_some_and(|s| s.identity == IDENTITY_HOST)
}

/// A packet for a local pod: may it enter?
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> bool {
    let Some(k) = tuple(ctx) else {
        return true;
    };
    // SAFETY: lookup in a hash map of plain values.
    let Some(ep) = (unsafe { IPCACHE.get(&addr_key(k.family, &k.daddr)) }) else {
        return true;
    };
    if ep.endpoint == 0 {
        return true;
    }
    if ep.flags & POLICY_ISOLATED_INGRESS != 0 && from_host(&k) {
        let _ = note(&k, POLICY_INGRESS, revision(), held(&k));
        return true;
    }
    verdict(ctx, &k, ep, POLICY_INGRESS)
}
