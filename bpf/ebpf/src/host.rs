//! Attach point: TC (TCX) ingress and egress of the node's external devices. North-south load
//! balancing for LoadBalancer IPs, externalIPs and NodePorts; masquerade of pods' traffic
//! leaving the cluster (egress) and its replies (ingress); on ingress, what is left for a local
//! pod goes straight into its netns (BPF host routing, [`ferrite_ebpf::fwd`]).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};
use ferrite_ebpf::masq::{self, Verdict};
use ferrite_ebpf::nat_lb::{Outcome, egress, forward, ingress, parse};
use ferrite_ebpf::{TCX_NEXT, fwd};

#[classifier]
pub fn fe_host_ingress(mut ctx: TcContext) -> i32 {
    // A reply to a masqueraded flow matches its exact tuple in the SNAT table: first.
    match masq::ingress(&mut ctx) {
        Verdict::Pass => {}
        Verdict::Translated => return fwd::route(&mut ctx, fwd::Origin::Device),
        Verdict::Drop => return TC_ACT_SHOT as i32,
    }
    let Some(p) = parse(&ctx) else {
        return fwd::route(&mut ctx, fwd::Origin::Device);
    };
    match ingress(&mut ctx, &p) {
        Outcome::Pass => fwd::route(&mut ctx, fwd::Origin::Device),
        Outcome::Drop => TC_ACT_SHOT as i32,
        Outcome::Forward(ct) => forward(&mut ctx, p.key.family, &ct.new_saddr, &ct.new_daddr),
    }
}

#[classifier]
pub fn fe_host_egress(mut ctx: TcContext) -> i32 {
    if let Some(p) = parse(&ctx) {
        let verdict = egress(&mut ctx, &p);
        if verdict != TCX_NEXT {
            return verdict;
        }
    }
    match masq::egress(&mut ctx) {
        Verdict::Pass | Verdict::Translated => TCX_NEXT,
        Verdict::Drop => TC_ACT_SHOT as i32,
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
