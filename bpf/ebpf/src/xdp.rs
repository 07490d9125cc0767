//! Attach point: XDP on the node's external devices (optional, `--xdp`). The same ingress
//! translation as `fe_host_ingress` (shared code in `nat_lb`, packet access in `pkt`), earlier
//! in the receive path, and the masquerade's reverse translation (`masq`); the TC egress
//! program still reverses translations of local backends' replies, and the pinned maps
//! (conntrack above all) are the same, so flows survive a switch.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_SUCCESS, xdp_action},
    helpers::generated::bpf_redirect,
    macros::xdp,
    programs::XdpContext,
};
use ferrite_abi::{XDP_DEV_GENERIC, XDP_DEV_TX};
use ferrite_ebpf::maps::{POD_DEVS, XDP_DEVS};
use ferrite_ebpf::masq::{self, Verdict};
use ferrite_ebpf::nat_lb::{Outcome, fib, ingress, parse};
use ferrite_ebpf::pkt::PacketCtx;

#[xdp]
pub fn fe_xdp_ingress(mut ctx: XdpContext) -> u32 {
    // Replies to masqueraded flows: back to the pod's address, then up the stack to its route.
    match masq::ingress(&mut ctx) {
        Verdict::Pass => {}
        Verdict::Translated => return xdp_action::XDP_PASS,
        Verdict::Drop => return xdp_action::XDP_DROP,
    }
    let Some(p) = parse(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match ingress(&mut ctx, &p) {
        Outcome::Pass => xdp_action::XDP_PASS,
        Outcome::Drop => xdp_action::XDP_DROP,
        Outcome::Forward(ct) => forward(&mut ctx, p.key.family, &ct.new_saddr, &ct.new_daddr),
    }
}

/// Sends the translated packet where the FIB says when XDP can get it there without help:
/// anywhere in generic mode, out of the receiving device itself where the driver transmits
/// XDP frames (`XDP_DEV_TX`). Everything else (a veth whose peer has no XDP/NAPI, an unresolved
/// neighbour) goes up the stack already translated, which routes it like any packet.
#[inline(always)]
fn forward(ctx: &mut XdpContext, family: u8, saddr: &[u32; 4], daddr: &[u32; 4]) -> u32 {
    let Some((rc, params)) = fib(ctx, family, saddr, daddr) else {
        return xdp_action::XDP_PASS;
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return xdp_action::XDP_PASS;
    }
    // A local pod: up the stack (already translated), where TC checks the pod's ingress
    // NetworkPolicy before it enters; generic XDP's redirect would skip the veth's egress hook.
    // SAFETY: lookup in a hash map of plain values.
    if unsafe { POD_DEVS.get(&params.ifindex) }.is_some() {
        return xdp_action::XDP_PASS;
    }
    let ingress_if = ctx.ifindex();
    // SAFETY: lookup in a hash map of plain structs.
    let Some(dev) = (unsafe { XDP_DEVS.get(&ingress_if) }) else {
        return xdp_action::XDP_PASS;
    };
    let same = params.ifindex == ingress_if;
    let generic = dev.flags & XDP_DEV_GENERIC != 0;
    if !generic && !(same && dev.flags & XDP_DEV_TX != 0) {
        return xdp_action::XDP_PASS;
    }
    if ctx.store(0, &params.dmac).is_none() || ctx.store(6, &params.smac).is_none() {
        return xdp_action::XDP_DROP;
    }
    if same {
        return xdp_action::XDP_TX;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(params.ifindex, 0) as u32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
