//! Flow events into the pinned ring buffer, capped per CPU (see `ferrite_abi::FlowEvent`).
//! Every program that decides a flow's fate calls [`emit`] once for it; the event is written in
//! place in the ring (nothing on the 512-byte stack but the arguments).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use ferrite_abi::{
    FLOW_STAT_EMITTED, FLOW_STAT_RATE_LIMITED, FLOW_STAT_RING_FULL, FlowEvent, flow_verdict_slot,
};

use crate::maps::{FLOW_CONFIG, FLOW_LIMIT, FLOW_STAT, FLOW_VERDICT, FLOWS};

const WINDOW_NS: u64 = 1_000_000_000;

/// What one event says; addresses by reference so the caller's copies are used in place.
pub struct Flow<'a> {
    pub kind: u8,
    pub reason: u8,
    pub proto: u8,
    pub family: u8,
    pub tcp_flags: u8,
    pub flags: u8,
    pub ifindex: u32,
    pub cookie: u64,
    pub saddr: &'a [u32; 4],
    pub daddr: &'a [u32; 4],
    pub xaddr: &'a [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub xport: u16,
}

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = FLOW_STAT.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU array of u64.
        unsafe { *c += 1 };
    }
}

/// Whether this CPU may send one more event in the current one-second window (flows off: no).
#[inline(always)]
fn admit(now: u64) -> bool {
    let rate = match FLOW_CONFIG.get(0) {
        Some(c) => c.rate_per_cpu,
        None => 0,
    };
    if rate == 0 {
        return false;
    }
    let Some(lim) = FLOW_LIMIT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array of plain structs.
    let lim = unsafe { &mut *lim };
    if now.wrapping_sub(lim.window_start_ns) >= WINDOW_NS {
        lim.window_start_ns = now;
        lim.count = 0;
    }
    if lim.count >= rate {
        count(FLOW_STAT_RATE_LIMITED);
        return false;
    }
    lim.count += 1;
    true
}

/// Counts the flow's verdict (always, flows on or off), then sends one event unless over the
/// rate or the ring is full (both counted).
#[inline(always)]
pub fn emit(f: &Flow<'_>) {
    if let Some(c) = FLOW_VERDICT.get_ptr_mut(flow_verdict_slot(f.kind, f.reason)) {
        // SAFETY: this CPU's slot of a per-CPU array of u64.
        unsafe { *c += 1 };
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !admit(now) {
        return;
    }
    let Some(mut entry) = FLOWS.reserve::<FlowEvent>(0) else {
        count(FLOW_STAT_RING_FULL);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved ring slot of size_of::<FlowEvent>() bytes; every field
    // is written before the submit.
    unsafe {
        (*e).ts_ns = now;
        (*e).saddr = *f.saddr;
        (*e).daddr = *f.daddr;
        (*e).xaddr = *f.xaddr;
        (*e).sport = f.sport;
        (*e).dport = f.dport;
        (*e).xport = f.xport;
        (*e).kind = f.kind;
        (*e).reason = f.reason;
        (*e).proto = f.proto;
        (*e).family = f.family;
        (*e).tcp_flags = f.tcp_flags;
        (*e).flags = f.flags;
        (*e).ifindex = f.ifindex;
        (*e).cookie = f.cookie;
    }
    entry.submit(0);
    count(FLOW_STAT_EMITTED);
}
