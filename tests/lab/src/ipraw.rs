//! IPv4 raw sockets for one protocol number: the kernel builds the IP header, the test writes
//! the transport header itself. For protocols this kernel has no handler for (SCTP on kernels
//! built without it): raw sockets still send and receive them, so the datapath's handling of
//! their headers can be tested end to end.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// IANA protocol number of SCTP.
pub const PROTO_SCTP: u8 = 132;

/// An `AF_INET` / `SOCK_RAW` socket for one protocol, in the netns it was opened in.
pub struct IpRaw(OwnedFd);

impl IpRaw {
    pub fn open(proto: u8) -> io::Result<Self> {
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, i32::from(proto)) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `payload` (the transport header and data) to `dst`.
    pub fn send_to(&self, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let addr = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2),
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid buffer and address of the stated lengths.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                u32::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(16),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Every packet received within `window`, each without its IP header.
    #[must_use]
    pub fn drain(&self, window: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let end = Instant::now() + window;
        let mut buf = [0u8; 2048];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&raw mut pfd, 1, ms) } <= 0 {
                continue;
            }
            // SAFETY: valid buffer of the stated length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else {
                continue;
            };
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n > ihl {
                out.push(buf[ihl..n].to_vec());
            }
        }
    }
}

/// An SCTP common header (ports, a verification tag; the CRC32c left zero) and one empty DATA
/// chunk header: enough for anything that reads the ports.
#[must_use]
pub fn sctp_packet(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&0x1234_5678_u32.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    // DATA chunk: type 0, flags 3 (begin + end), length 4 (header only).
    p.extend_from_slice(&[0, 3, 0, 4]);
    p
}

/// The destination port of a received SCTP packet.
#[must_use]
pub fn sctp_dport(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_their_ports() {
        let p = sctp_packet(40000, 5000);
        assert_eq!(p.len(), 16);
        assert_eq!(sctp_dport(&p), Some(5000));
        assert_eq!(&p[..2], &40000u16.to_be_bytes());
    }
}
