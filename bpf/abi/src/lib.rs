//! Kernel/user ABI of ferrite's eBPF maps.
//!
//! Every type here is `#[repr(C)]`, explicitly padded (no implicit holes the verifier or the
//! kernel's hash would see as garbage) and has a size/offset test. Addresses and ports are stored
//! exactly as the kernel exposes them in `bpf_sock_addr`: IPv4 as one `u32` in network byte order,
//! IPv6 as four such words, ports as network-order `u16`.
#![no_std]

mod sock;

pub use sock::{
    AffinityKey, AffinityValue, Backend, RevNatKey, RevNatValue, SlotKey, SvcKey, SvcValue,
};

/// Version suffix of every pinned map name. Bump it when a key/value layout changes so a new agent
/// never reinterprets an old pinned map.
pub const MAP_VERSION: &str = "v1";

/// Pinned map names (≤15 bytes: the kernel's object name limit).
pub mod map_names {
    pub const SERVICES: &str = "fe_svc_v1";
    pub const SLOTS: &str = "fe_slot_v1";
    pub const BACKENDS: &str = "fe_backend_v1";
    pub const AFFINITY: &str = "fe_affin_v1";
    pub const REVNAT: &str = "fe_revnat_v1";
}

/// Capacity of each map (entries).
pub mod map_sizes {
    pub const SERVICES: u32 = 65_536;
    pub const SLOTS: u32 = 262_144;
    pub const BACKENDS: u32 = 131_072;
    pub const AFFINITY: u32 = 65_536;
    pub const REVNAT: u32 = 262_144;
}

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// `SvcValue::flags`: ClientIP session affinity is on for this frontend.
pub const SVC_FLAG_AFFINITY: u16 = 1;

/// errno returned to `connect()`/`sendmsg()` for a service without ready endpoints.
pub const ECONNREFUSED: i32 = 111;
