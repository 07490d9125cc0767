//! Attach point: TC (TCX) ingress of each local pod's host-side veth — what the pod sends.
//! BPF host routing ([`ferrite_ebpf::fwd`]): routed traffic leaves by the device the FIB picks
//! (or enters another local pod) without a pass through the node's IP stack. First, the pod's
//! egress NetworkPolicy ([`ferrite_ebpf::policy::egress`]). With `--host-routing legacy` the
//! veth gets `fe_pod_policy` instead: the policy alone, then the stack routes.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use ferrite_ebpf::{TCX_NEXT, fwd, policy};

#[classifier]
pub fn fe_pod_ingress(mut ctx: TcContext) -> i32 {
    fwd::from_pod(&mut ctx, fwd::Origin::PodVeth)
}

#[classifier]
pub fn fe_pod_policy(ctx: TcContext) -> i32 {
    if policy::egress(&ctx) {
        TCX_NEXT
    } else {
        TC_ACT_SHOT as i32
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
