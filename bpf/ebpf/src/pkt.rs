//! The few packet operations the north-south translation needs, over either attach point: load
//! and store bytes at an offset, patch checksums, FIB lookup and "is this frame for this host".
//! TC implements them with the skb helpers; XDP with the bounds-checked `bpf_xdp_{load,store}_bytes` helpers and
//! incremental checksum updates (RFC 1624) computed exactly as the kernel's skb helpers compute
//! them for a packet without checksum offload, so both produce byte-identical packets.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, bpf_fib_lookup},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::{TcContext, XdpContext},
};

use crate::maps::XDP_DEVS;

const PACKET_HOST: u32 = 0;

/// Packet access for the shared translation code.
pub trait PacketCtx {
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
    fn store<T: Copy>(&mut self, off: usize, v: &T) -> Option<()>;
    /// Bytes in the (linear part of the) frame.
    fn frame_len(&self) -> usize;
    /// The receiving device.
    fn ifindex(&self) -> u32;
    /// The frame is addressed to this host's MAC (not flooded or promiscuous).
    fn for_this_host(&self) -> bool;
    /// `bpf_fib_lookup` with this context.
    fn fib(&self, params: &mut bpf_fib_lookup) -> i64;
    /// Replaces the 4-byte `old` by `new` in the IPv4 header checksum at `csum_off`.
    fn l3_csum_replace4(&mut self, csum_off: usize, old: u32, new: u32) -> Option<()>;
    /// Replaces `old` by `new` (`size` 2 or 4 bytes; part of the pseudo header when `pseudo`)
    /// in the L4 checksum at `csum_off`; `udp`: a zero checksum means "none" and stays zero.
    fn l4_csum_replace(
        &mut self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
        pseudo: bool,
        udp: bool,
    ) -> Option<()>;
}

impl PacketCtx for TcContext {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        TcContext::load(self, off).ok()
    }

    #[inline(always)]
    fn store<T: Copy>(&mut self, off: usize, v: &T) -> Option<()> {
        TcContext::store(self, off, v, 0).ok()
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len() as usize
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the skb context.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn for_this_host(&self) -> bool {
        // SAFETY: reading a field of the skb context.
        unsafe { (*self.skb.skb).pkt_type == PACKET_HOST }
    }

    #[inline(always)]
    fn fib(&self, params: &mut bpf_fib_lookup) -> i64 {
        // SAFETY: params is a valid, writable bpf_fib_lookup of the size passed.
        unsafe {
            fib_lookup(
                self.skb.skb.cast(),
                core::ptr::from_mut(params),
                core::mem::size_of::<bpf_fib_lookup>() as i32,
                0,
            )
        }
    }

    #[inline(always)]
    fn l3_csum_replace4(&mut self, csum_off: usize, old: u32, new: u32) -> Option<()> {
        self.l3_csum_replace(csum_off, u64::from(old), u64::from(new), 4)
            .ok()
    }

    #[inline(always)]
    fn l4_csum_replace(
        &mut self,
        csum_off: usize,
        old: u32,
        new: u32,
        size: u8,
        pseudo: bool,
        udp: bool,
    ) -> Option<()> {
        let mut flags = u64::from(size);
        if pseudo {
            flags |= u64::from(BPF_F_PSEUDO_HDR);
        }
        if udp {
            flags |= u64::from(BPF_F_MARK_MANGLED_0);
        }
        TcContext::l4_csum_replace(self, csum_off, u64::from(old), u64::from(new), flags).ok()
    }
}

/// One's complement add with end-around carry (the kernel's `csum_add`).
#[inline(always)]
fn csum_add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(u32::from(carry))
}

/// The kernel's `csum_fold`: 32 → 16 bits, complemented.
#[inline(always)]
fn csum_fold(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, in the kernel's word arithmetic
/// (`csum_replace4`): `old`/`new` are the field's bytes as a native-endian word, like the
/// checksum itself, so the result is the same on either endianness.
#[inline(always)]
#[must_use]
pub fn csum_replace(sum: u16, old: u32, new: u32) -> u16 {
    csum_fold(csum_add(csum_add(!u32::from(sum), !old), new))
}

impl PacketCtx for XdpContext {
    // bpf_xdp_load_bytes/store_bytes (kernel ≥ 5.18) check bounds in the kernel: direct packet
    // access at the variable L4 offset loses the verifier's range tracking once LLVM re-derives
    // the pointer.
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let mut v = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes into `v` or fails.
        let rc = unsafe {
            bpf_xdp_load_bytes(
                self.ctx,
                off as u32,
                v.as_mut_ptr().cast(),
                core::mem::size_of::<T>() as u32,
            )
        };
        if rc == 0 {
            // SAFETY: fully written by the helper.
            Some(unsafe { v.assume_init() })
        } else {
            None
        }
    }

    #[inline(always)]
    fn store<T: Copy>(&mut self, off: usize, v: &T) -> Option<()> {
        // SAFETY: the helper reads exactly size_of::<T>() bytes from `v`.
        let rc = unsafe {
            bpf_xdp_store_bytes(
                self.ctx,
                off as u32,
                core::ptr::from_ref(v).cast_mut().cast(),
                core::mem::size_of::<T>() as u32,
            )
        };
        (rc == 0).then_some(())
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        // SAFETY: plain helper call on the program's context.
        unsafe { aya_ebpf::helpers::generated::bpf_xdp_get_buff_len(self.ctx) as usize }
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn for_this_host(&self) -> bool {
        let ifindex = PacketCtx::ifindex(self);
        // SAFETY: lookup in a hash map of plain structs.
        let Some(dev) = (unsafe { XDP_DEVS.get(&ifindex) }) else {
            return false;
        };
        let Some(dst) = self.load::<[u8; 6]>(0) else {
            return false;
        };
        dst == dev.mac
    }

    #[inline(always)]
    fn fib(&self, params: &mut bpf_fib_lookup) -> i64 {
        // SAFETY: params is a valid, writable bpf_fib_lookup of the size passed.
        unsafe {
            fib_lookup(
                self.ctx.cast(),
                core::ptr::from_mut(params),
                core::mem::size_of::<bpf_fib_lookup>() as i32,
                0,
            )
        }
    }

    #[inline(always)]
    fn l3_csum_replace4(&mut self, csum_off: usize, old: u32, new: u32) -> Option<()> {
        let sum: u16 = self.load(csum_off)?;
        self.store(csum_off, &csum_replace(sum, old, new))
    }

    #[inline(always)]
    fn l4_csum_replace(
        &mut self,
        csum_off: usize,
        old: u32,
        new: u32,
        _size: u8,
        _pseudo: bool,
        udp: bool,
    ) -> Option<()> {
        let sum: u16 = self.load(csum_off)?;
        // As BPF_F_MARK_MANGLED_0: a zero UDP checksum means "none"; a computed zero is sent
        // as 0xffff (CSUM_MANGLED_0).
        if udp && sum == 0 {
            return Some(());
        }
        let mut new_sum = csum_replace(sum, old, new);
        if udp && new_sum == 0 {
            new_sum = 0xffff;
        }
        self.store(csum_off, &new_sum)
    }
}
