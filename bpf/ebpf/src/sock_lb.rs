//! Socket-layer service translation shared by the cgroup sock_addr entry points.

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SockAddrContext,
};
use ferrite_abi::{
    AffinityKey, AffinityValue, Backend, ECONNREFUSED, FAMILY_V4, FLOW_DROP_NO_BACKEND,
    FLOW_KIND_SOCK_LB, RevNatKey, RevNatValue, SVC_FLAG_AFFINITY, SlotKey, SvcKey, SvcValue,
};

use crate::flow::{Flow, emit};
use crate::maps::{AFFINITY, BACKENDS, REVNAT, SERVICES, SLOTS};

const NO_ADDR: [u32; 4] = [0; 4];

/// The flow event of a translation (`backend`) or a refusal (`None`).
#[inline(always)]
fn flow_event(key: &SvcKey, backend: Option<&Backend>, cookie: u64) {
    let (xaddr, xport, reason) = match backend {
        Some(b) => (&b.addr, b.port, 0),
        None => (&NO_ADDR, 0, FLOW_DROP_NO_BACKEND),
    };
    emit(&Flow {
        kind: FLOW_KIND_SOCK_LB,
        reason,
        proto: key.proto,
        family: key.family,
        tcp_flags: 0,
        flags: 0,
        ifindex: 0,
        cookie,
        saddr: &NO_ADDR,
        daddr: &key.addr,
        xaddr,
        sport: 0,
        dport: key.port,
        xport,
    });
}

/// What a forward hook (connect/sendmsg) decided.
pub enum Verdict {
    /// Not a service, or translated: let the syscall continue.
    Pass,
    /// A service without ready endpoints: fail the syscall with ECONNREFUSED.
    Refuse,
}

#[inline(always)]
fn read_addr(sa: *const bpf_sock_addr, family: u8) -> [u32; 4] {
    // SAFETY: `sa` is the context pointer the kernel handed the program; 4-byte field reads.
    unsafe {
        if family == FAMILY_V4 {
            [(*sa).user_ip4, 0, 0, 0]
        } else {
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ]
        }
    }
}

#[inline(always)]
fn write_addr(sa: *mut bpf_sock_addr, family: u8, addr: &[u32; 4], port: u16) {
    // SAFETY: as in `read_addr`; the kernel allows 4-byte writes of user_ip4/user_ip6/user_port.
    unsafe {
        if family == FAMILY_V4 {
            (*sa).user_ip4 = addr[0];
        } else {
            (*sa).user_ip6[0] = addr[0];
            (*sa).user_ip6[1] = addr[1];
            (*sa).user_ip6[2] = addr[2];
            (*sa).user_ip6[3] = addr[3];
        }
        (*sa).user_port = u32::from(port);
    }
}

#[inline(always)]
fn random_backend(svc: &SvcValue) -> Option<u32> {
    // SAFETY: helper without arguments.
    let rnd = unsafe { bpf_get_prandom_u32() };
    // checked_rem: no panic path for the verifier to reject (count 0 is handled by the caller).
    let slot = rnd.checked_rem(u32::from(svc.count))? as u16;
    let key = SlotKey {
        svc_id: svc.svc_id,
        slot,
        _pad: 0,
    };
    // SAFETY: values are plain u32s; the map is never resized.
    unsafe { SLOTS.get(&key).copied() }
}

#[inline(always)]
fn affine_backend(ctx: &SockAddrContext, svc: &SvcValue) -> Option<u32> {
    // SAFETY: helpers valid for cgroup sock_addr programs.
    let (cookie, now) = unsafe {
        (
            bpf_get_netns_cookie(ctx.sock_addr.cast()),
            bpf_ktime_get_ns(),
        )
    };
    let key = AffinityKey {
        netns_cookie: cookie,
        svc_id: svc.svc_id,
        _pad: 0,
    };
    let timeout_ns = u64::from(svc.affinity_timeout_s) * 1_000_000_000;
    if let Some(entry) = AFFINITY.get_ptr_mut(&key) {
        // SAFETY: pointer into a map value returned by the kernel for this key.
        let entry = unsafe { &mut *entry };
        // SAFETY: a lookup in a hash map of plain structs.
        let alive = unsafe { BACKENDS.get(&entry.backend_id).is_some() };
        if alive && now.wrapping_sub(entry.last_used_ns) <= timeout_ns {
            entry.last_used_ns = now;
            return Some(entry.backend_id);
        }
    }
    let backend_id = random_backend(svc)?;
    let value = AffinityValue {
        last_used_ns: now,
        backend_id,
        _pad: 0,
    };
    // An LRU insert only fails under memory pressure; the connection still goes to the backend.
    let _ = AFFINITY.insert(&key, &value, 0);
    Some(backend_id)
}

/// connect/sendmsg: translate a service address to a backend and remember the reverse mapping.
#[inline(always)]
pub fn forward(ctx: &SockAddrContext, family: u8) -> Verdict {
    let sa = ctx.sock_addr;
    // SAFETY: context field reads.
    let (port, proto) = unsafe { ((*sa).user_port as u16, (*sa).protocol as u8) };
    let key = SvcKey {
        addr: read_addr(sa, family),
        port,
        proto,
        family,
    };
    // SAFETY: a lookup in a hash map of plain structs.
    let Some(svc) = (unsafe { SERVICES.get(&key) }) else {
        return Verdict::Pass;
    };
    // SAFETY: helper valid for cgroup sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
    if svc.count == 0 {
        flow_event(&key, None, cookie);
        return Verdict::Refuse;
    }
    let backend_id = if svc.flags & SVC_FLAG_AFFINITY != 0 {
        affine_backend(ctx, svc)
    } else {
        random_backend(svc)
    };
    // A slot or backend missing in the middle of an update: refuse rather than hang on the VIP.
    // SAFETY: a lookup in a hash map of plain structs.
    let Some(backend) = backend_id.and_then(|id| unsafe { BACKENDS.get(&id) }) else {
        flow_event(&key, None, cookie);
        return Verdict::Refuse;
    };
    remember_reverse(cookie, &key, backend);
    flow_event(&key, Some(backend), cookie);
    write_addr(sa, family, &backend.addr, backend.port);
    Verdict::Pass
}

#[inline(always)]
fn remember_reverse(cookie: u64, svc: &SvcKey, backend: &Backend) {
    let key = RevNatKey {
        cookie,
        addr: backend.addr,
        port: backend.port,
        family: backend.family,
        _pad: [0; 5],
    };
    let value = RevNatValue {
        addr: svc.addr,
        port: svc.port,
        family: svc.family,
        _pad: 0,
    };
    // Best effort: without it only the reply's apparent source address differs.
    let _ = REVNAT.insert(&key, &value, 0);
}

/// recvmsg/getpeername: show the service address instead of the backend's.
#[inline(always)]
pub fn reverse(ctx: &SockAddrContext, family: u8) {
    let sa = ctx.sock_addr;
    // SAFETY: helper valid for cgroup sock_addr programs; context field read.
    let (cookie, port) = unsafe { (bpf_get_socket_cookie(sa.cast()), (*sa).user_port as u16) };
    let key = RevNatKey {
        cookie,
        addr: read_addr(sa, family),
        port,
        family,
        _pad: [0; 5],
    };
    // SAFETY: a lookup in a hash map of plain structs.
    if let Some(orig) = unsafe { REVNAT.get(&key) } {
        write_addr(sa, family, &orig.addr, orig.port);
    }
}

/// ECONNREFUSED as the errno the caller of the hooked syscall sees.
pub const REFUSED_RETVAL: i32 = -ECONNREFUSED;
