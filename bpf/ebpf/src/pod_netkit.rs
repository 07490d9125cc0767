//! Attach point: a local pod's netkit device, as the pod transmits (`BPF_NETKIT_PEER` on the
//! host-side primary). What `fe_pod_ingress` does on a veth's TC ingress — the pod's egress
//! NetworkPolicy ([`ferrite_ebpf::policy::egress`]), then BPF host routing
//! ([`ferrite_ebpf::fwd`]) — but run inside the pod's own transmit, so a routed packet leaves
//! by the chosen device without the veth's backlog queue and second softirq pass. The verdicts
//! are netkit's: `TCX_NEXT` (-1) lets the packet through to the host's stack as the device's
//! default policy would, `TC_ACT_SHOT` is netkit's drop and `TC_ACT_REDIRECT` its redirect.
#![no_std]
#![no_main]

use aya_ebpf::{macros::classifier, programs::TcContext};
use ferrite_ebpf::fwd;

#[classifier]
pub fn fe_pod_netkit(mut ctx: TcContext) -> i32 {
    fwd::from_pod(&mut ctx, fwd::Origin::PodNetkit)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
