//! Attach point: cgroup sock_addr hooks (connect, sendmsg, recvmsg, getpeername; v4 and v6).
//! ClusterIP load balancing at the socket layer: no per-packet cost after `connect()`.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated::bpf_set_retval, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use ferrite_abi::{FAMILY_V4, FAMILY_V6};
use ferrite_ebpf::sock_lb::{REFUSED_RETVAL, Verdict, forward, reverse};

/// cgroup sock_addr return codes: 1 lets the syscall proceed; 0 fails it with the set retval.
const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// Whether the kernel has `bpf_set_retval` (Linux 5.18); userspace overrides it at load from
/// its feature probe. The value is a constant of the frozen `.rodata`, so on a kernel without
/// the helper the verifier never visits its call (dead code) and the program still loads.
#[unsafe(no_mangle)]
static HAVE_SET_RETVAL: u8 = 1;

#[inline(always)]
fn forward_hook(ctx: &SockAddrContext, family: u8) -> i32 {
    match forward(ctx, family) {
        Verdict::Pass => ALLOW,
        Verdict::Refuse => {
            // SAFETY: reading a global the loader may have overridden.
            if unsafe { core::ptr::read_volatile(&raw const HAVE_SET_RETVAL) } != 0 {
                // SAFETY: only reached where the probe found bpf_set_retval for sock_addr
                // programs; without it the syscall fails with EPERM instead of ECONNREFUSED.
                unsafe { bpf_set_retval(REFUSED_RETVAL) };
            }
            DENY
        }
    }
}

#[cgroup_sock_addr(connect4)]
pub fn fe_connect4(ctx: SockAddrContext) -> i32 {
    forward_hook(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(connect6)]
pub fn fe_connect6(ctx: SockAddrContext) -> i32 {
    forward_hook(&ctx, FAMILY_V6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn fe_sendmsg4(ctx: SockAddrContext) -> i32 {
    forward_hook(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn fe_sendmsg6(ctx: SockAddrContext) -> i32 {
    forward_hook(&ctx, FAMILY_V6)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn fe_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V4);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn fe_recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V6);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn fe_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V4);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn fe_getpeername6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V6);
    ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
