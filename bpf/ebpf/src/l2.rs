//! Attach point: TC (TCX) ingress of the interfaces L2 announcements are made on. Answers ARP
//! and Neighbor Solicitations for the LoadBalancer addresses this node owns.
#![no_std]
#![no_main]

use aya_ebpf::{macros::classifier, programs::TcContext};
use ferrite_ebpf::l2_resp::respond;

#[classifier]
pub fn fe_l2_ingress(mut ctx: TcContext) -> i32 {
    respond(&mut ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
