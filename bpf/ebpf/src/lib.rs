//! Shared pieces of ferrite's eBPF programs: the maps and small verifier-friendly helpers.
//! Entry points live in one file per attach point (`sock.rs`, …).
#![no_std]

pub mod l2_resp;
pub mod maps;
pub mod nat_lb;
pub mod sock_lb;
