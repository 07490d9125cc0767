//! Attach point: TC (TCX) ingress of ferrite's overlay device (`ferrite.vxlan`): packets other
//! nodes sent over VXLAN, once decapsulated. BPF host routing ([`ferrite_ebpf::fwd`]): what is
//! for a local pod goes straight into its netns; everything else takes the stack.
#![no_std]
#![no_main]

use aya_ebpf::{macros::classifier, programs::TcContext};
use ferrite_ebpf::fwd;

#[classifier]
pub fn fe_tunnel_ingress(mut ctx: TcContext) -> i32 {
    fwd::route(&mut ctx, fwd::Origin::Device)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
