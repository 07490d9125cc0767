//! Shared pieces of ferrite's eBPF programs: the maps and small verifier-friendly helpers.
//! Entry points live in one file per attach point (`sock.rs`, …).
#![no_std]

pub mod flow;
pub mod fwd;
pub mod l2_ndp;
pub mod l2_resp;
pub mod maps;
pub mod masq;
pub mod nat_lb;
pub mod pkt;
pub mod policy;
pub mod sock_lb;

/// TCX verdict "not mine": run the next program on the hook (or, if last, pass the packet).
/// `TC_ACT_OK` would end the chain and skip programs attached after this one.
pub const TCX_NEXT: i32 = -1;
