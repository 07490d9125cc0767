//! Attach point: TC (TCX) ingress and egress of the node's external devices. North-south load
//! balancing for LoadBalancer IPs, externalIPs and NodePorts.
#![no_std]
#![no_main]

use aya_ebpf::{macros::classifier, programs::TcContext};
use ferrite_ebpf::TCX_NEXT;
use ferrite_ebpf::nat_lb::{Outcome, egress, forward, ingress, parse};

#[classifier]
pub fn fe_host_ingress(mut ctx: TcContext) -> i32 {
    let Some(p) = parse(&ctx) else {
        return TCX_NEXT;
    };
    match ingress(&mut ctx, &p) {
        Outcome::Pass => TCX_NEXT,
        Outcome::Drop => aya_ebpf::bindings::TC_ACT_SHOT as i32,
        Outcome::Forward(ct) => forward(&mut ctx, p.key.family, &ct.new_saddr, &ct.new_daddr),
    }
}

#[classifier]
pub fn fe_host_egress(mut ctx: TcContext) -> i32 {
    match parse(&ctx) {
        Some(p) => egress(&mut ctx, &p),
        None => TCX_NEXT,
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
