//! A packet socket that sends and receives whole frames on one interface (on the `AF_PACKET`
//! primitives of [`crate::raw`]), and [`solicit`]: one request, every reply within a window.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::netns::Ns;
use crate::raw::socket::{ifindex_of, packet_socket, send_frame};
use crate::raw::{Mac, mac_of};

use super::{Answer, AnswerKind, parse_answer, request};

/// A packet socket bound to one interface and protocol, in the netns it was opened in.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    mac: Mac,
}

/// A received frame.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub bytes: Vec<u8>,
    /// Sent by this host (`PACKET_OUTGOING`).
    pub outgoing: bool,
}

impl PacketSocket {
    /// Opens a socket on `ifname` receiving `protocol` (`ETH_P_ALL`, `ETH_P_ARP`, ...), in the
    /// calling thread's netns.
    pub fn open(ifname: &str, protocol: u16) -> io::Result<Self> {
        let ifindex = ifindex_of(ifname)?;
        let mac = mac_of(ifname)?;
        let fd = packet_socket(protocol)?;
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).expect("fits");
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is live for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("fits"),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, ifindex, mac })
    }

    /// Opens it inside `ns` (the socket stays bound to that netns).
    pub fn open_in(ns: &Ns, ifname: &str, protocol: u16) -> io::Result<Self> {
        ns.run(|| Self::open(ifname, protocol))
            .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// The interface's MAC.
    #[must_use]
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Sends `frame` as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(&self.fd, self.ifindex, frame)
    }

    /// The next frame, or `None` when `deadline` passes first.
    pub fn recv_until(&self, deadline: Instant) -> io::Result<Option<Received>> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let ms = (deadline - now).as_micros().div_ceil(1000);
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, i32::try_from(ms).unwrap_or(i32::MAX)) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            let mut buf = vec![0u8; 2048];
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
            let mut len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("fits");
            // SAFETY: buf, sll and len are live for the call.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    std::ptr::from_mut(&mut sll).cast(),
                    &raw mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(e);
            }
            buf.truncate(usize::try_from(n).unwrap_or(0));
            return Ok(Some(Received {
                at: Instant::now(),
                bytes: buf,
                outgoing: sll.sll_pkttype == libc::PACKET_OUTGOING,
            }));
        }
    }
}

/// Sends one request for `target` from the socket's interface (`ip` as the sender address)
/// and returns every reply addressed to this interface within `window`.
pub fn solicit(
    sock: &PacketSocket,
    ip: IpAddr,
    target: IpAddr,
    window: Duration,
) -> io::Result<Vec<Answer>> {
    let deadline = Instant::now() + window;
    sock.send(&request(sock.mac(), ip, target))?;
    let mut out = Vec::new();
    while let Some(r) = sock.recv_until(deadline)? {
        if r.outgoing {
            continue;
        }
        if let Some(a) = parse_answer(&r.bytes)
            && a.kind == AnswerKind::Reply
            && a.ip == target
            && a.eth_dst == sock.mac()
        {
            out.push(a);
        }
    }
    Ok(out)
}
