//! Attach point: TC (TCX) egress of each local pod's host-side veth — what the node's stack
//! delivers into the pod (from the node itself, from devices without ferrite's ingress hook,
//! whatever BPF host routing left to the stack). The pod's ingress NetworkPolicy
//! ([`ferrite_ebpf::policy::ingress`]); what `bpf_redirect_peer` sends in was checked before.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use ferrite_ebpf::{TCX_NEXT, policy};

#[classifier]
pub fn fe_pod_egress(ctx: TcContext) -> i32 {
    if policy::ingress(&ctx) {
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
