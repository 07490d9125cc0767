//! Socket plumbing std does not offer: v6-only listeners with a large backlog, UDP replies sent
//! from the address a datagram arrived at (`IP_PKTINFO`/`IPV6_PKTINFO`), `SO_LINGER` 0, and a
//! minimal-syscall connect for load generation.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, UdpSocket,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).expect("option sizes fit socklen_t");
    // SAFETY: `value` points to a live T of `len` bytes.
    cvt(unsafe { libc::setsockopt(fd, level, name, std::ptr::from_ref(value).cast(), len) })
        .map(drop)
}

/// A `sockaddr_storage` holding `addr`, and its length.
#[must_use]
pub fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::sa_family_t::try_from(libc::AF_INET).expect("AF_INET fits"),
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::sa_family_t::try_from(libc::AF_INET6).expect("AF_INET6 fits"),
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::from_mut(&mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, libc::socklen_t::try_from(len).expect("fits"))
}

/// Decodes a `sockaddr_storage` filled in by the kernel.
#[must_use]
pub fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read(std::ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read(std::ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn new_socket(addr: &SocketAddr, ty: i32) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) returns a fresh descriptor we take ownership of.
    let fd = cvt(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd is a valid, owned descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if addr.is_ipv6() {
        // Separate v4 and v6 listeners on one port must not collide.
        setsockopt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &1i32)?;
    }
    Ok(fd)
}

fn bind(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), std::ptr::from_ref(&storage).cast(), len) }).map(drop)
}

/// A TCP listener on `addr` with `SO_REUSEADDR`, v6-only for IPv6, and `backlog`.
pub fn tcp_listener(addr: &SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let fd = new_socket(addr, libc::SOCK_STREAM)?;
    setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32)?;
    bind(&fd, addr)?;
    // SAFETY: listen(2) on our bound socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(TcpListener::from(fd))
}

/// A UDP socket on `addr` (v6-only for IPv6) that learns each datagram's destination address.
pub fn udp_socket(addr: &SocketAddr) -> io::Result<UdpSocket> {
    let fd = new_socket(addr, libc::SOCK_DGRAM)?;
    if addr.is_ipv4() {
        setsockopt(fd.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, &1i32)?;
    } else {
        setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            &1i32,
        )?;
    }
    bind(&fd, addr)?;
    Ok(UdpSocket::from(fd))
}

/// Sets `SO_LINGER {on, 0}`: `close()` sends RST and leaves no `TIME_WAIT`.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &linger)
}

/// Where a datagram came from and which local address and interface it was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    pub to: Option<IpAddr>,
    pub ifindex: u32,
}

// Enough for one in6_pktinfo control message (the larger of the two).
const CMSG_BUF: usize = 64;

#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF]);

/// `recvmsg` on a socket made by [`udp_socket`]: payload into `buf`, plus addresses.
pub fn recv_datagram(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut from: libc::sockaddr_storage = unsafe { zeroed() };
    let mut cmsg = CmsgBuf([0; CMSG_BUF]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = std::ptr::from_mut(&mut from).cast();
    msg.msg_namelen = libc::socklen_t::try_from(size_of::<libc::sockaddr_storage>()).expect("fits");
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    // `as _`: msghdr/cmsghdr length fields are usize on glibc and u32 on musl.
    msg.msg_controllen = CMSG_BUF as _;
    // SAFETY: msg points to live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, 0) };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let from = from_sockaddr(&from)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown address family"))?;
    let (mut to, mut ifindex) = (None, 0);
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled in, within
    // msg_controllen; payloads are read unaligned.
    unsafe {
        let mut hdr = libc::CMSG_FIRSTHDR(&raw const msg);
        while !hdr.is_null() {
            let (level, ty) = ((*hdr).cmsg_level, (*hdr).cmsg_type);
            if level == libc::IPPROTO_IP && ty == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(hdr).cast());
                to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
                ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
            } else if level == libc::IPPROTO_IPV6 && ty == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(hdr).cast());
                to = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                ifindex = info.ipi6_ifindex;
            }
            hdr = libc::CMSG_NXTHDR(&raw const msg, hdr);
        }
    }
    Ok(Datagram {
        len,
        from,
        to,
        ifindex,
    })
}

/// `sendmsg` of `payload` to `to`, from local address `from` when given (unicast only).
pub fn send_datagram(
    sock: &UdpSocket,
    payload: &[u8],
    to: &SocketAddr,
    from: Option<IpAddr>,
    ifindex: u32,
) -> io::Result<usize> {
    let (mut dest, dest_len) = to_sockaddr(to);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut cmsg = CmsgBuf([0; CMSG_BUF]);
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = std::ptr::from_mut(&mut dest).cast();
    msg.msg_namelen = dest_len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    let from = from.filter(|ip| !ip.is_multicast() && *ip != IpAddr::V4(Ipv4Addr::BROADCAST));
    if let Some(src) = from {
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        // SAFETY: the buffer is CMSG_BUF bytes, enough for one pktinfo message of either
        // family; CMSG_* compute offsets inside it and writes are unaligned.
        unsafe {
            let (level, ty, size) = match src {
                IpAddr::V4(_) => (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    size_of::<libc::in_pktinfo>(),
                ),
                IpAddr::V6(_) => (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    size_of::<libc::in6_pktinfo>(),
                ),
            };
            let size = u32::try_from(size).expect("fits");
            msg.msg_controllen = libc::CMSG_SPACE(size) as _;
            let hdr = libc::CMSG_FIRSTHDR(&raw const msg);
            (*hdr).cmsg_level = level;
            (*hdr).cmsg_type = ty;
            (*hdr).cmsg_len = libc::CMSG_LEN(size) as _;
            match src {
                IpAddr::V4(ip) => {
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(ip).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast(), info);
                }
                IpAddr::V6(ip) => {
                    // The interface matters only for link-local sources.
                    let scoped = ip.is_unicast_link_local();
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: if scoped { ifindex } else { 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast(), info);
                }
            }
        }
    }
    // SAFETY: msg points to live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// A TCP connection to `remote` from `local` (`SO_REUSEADDR`, so a fixed source port can be
/// used again at once), giving up after `timeout`.
pub fn tcp_connect_from(
    local: &SocketAddr,
    remote: &SocketAddr,
    timeout: Duration,
) -> io::Result<std::net::TcpStream> {
    let fd = new_socket(remote, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)?;
    setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32)?;
    bind(&fd, local)?;
    let (storage, len) = to_sockaddr(remote);
    // SAFETY: storage holds a valid sockaddr of `len` bytes.
    let ret = unsafe { libc::connect(fd.as_raw_fd(), std::ptr::from_ref(&storage).cast(), len) };
    if ret != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let ready = cvt(unsafe { libc::poll(&raw mut pfd, 1, ms) })?;
        if ready == 0 {
            return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        let mut so_error: libc::c_int = 0;
        let mut optlen =
            libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("fits socklen_t");
        // SAFETY: so_error and optlen are live and sized for SO_ERROR.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                std::ptr::from_mut(&mut so_error).cast(),
                &raw mut optlen,
            )
        })?;
        if so_error != 0 {
            return Err(io::Error::from_raw_os_error(so_error));
        }
    }
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// A connect target with its `sockaddr` prepared once, for tight connect loops.
#[derive(Clone, Copy)]
pub struct ConnectTarget {
    addr: SocketAddr,
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl ConnectTarget {
    #[must_use]
    pub fn new(addr: SocketAddr) -> Self {
        let (storage, len) = to_sockaddr(&addr);
        Self { addr, storage, len }
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// One TCP connect+close with the fewest syscalls: socket, `SO_SNDTIMEO` (bounds the
    /// blocking connect), `SO_LINGER` 0 (close sends RST, no `TIME_WAIT`), connect, close.
    /// `Ok` if the connect succeeded; a connect cut short by the timeout is `ETIMEDOUT`.
    pub fn connect_and_reset(&self, timeout: Duration) -> io::Result<()> {
        let family = if self.addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: socket(2) returns a fresh descriptor we take ownership of.
        let fd = cvt(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: fd is valid and owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Field types differ between libcs (and musl deprecates naming them), so fill in place.
        // SAFETY: timeval is plain data; all-zero is valid.
        let mut tv: libc::timeval = unsafe { zeroed() };
        tv.tv_sec = timeout
            .as_secs()
            .min(86_400)
            .try_into()
            .expect("a day fits time_t");
        tv.tv_usec = timeout.subsec_micros().into();
        setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)?;
        set_linger_zero(fd.as_raw_fd())?;
        // SAFETY: storage holds a valid sockaddr of `len` bytes.
        let ret = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                std::ptr::from_ref(&self.storage).cast(),
                self.len,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINPROGRESS) {
            Err(io::Error::from_raw_os_error(libc::ETIMEDOUT))
        } else {
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for text in ["10.1.2.3:80", "[fd00::5]:8080", "[fe80::1%2]:53"] {
            let addr: SocketAddr = text.parse().unwrap();
            let (storage, _) = to_sockaddr(&addr);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
    }

    #[test]
    fn udp_reply_comes_from_the_destination_address() {
        // 127.0.0.2 is local but not the address routing would pick for a reply to 127.0.0.1.
        let server = udp_socket(&"0.0.0.0:0".parse().unwrap()).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.send_to(b"hi", ("127.0.0.2", port)).unwrap();
        let mut buf = [0u8; 16];
        let dgram = recv_datagram(&server, &mut buf).unwrap();
        assert_eq!(&buf[..dgram.len], b"hi");
        assert_eq!(dgram.to, Some("127.0.0.2".parse().unwrap()));
        send_datagram(&server, b"yo", &dgram.from, dgram.to, dgram.ifindex).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"yo");
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 2], port)));
    }

    #[test]
    fn v4_and_v6_listeners_share_a_port() {
        let v4 = tcp_listener(&"127.0.0.1:0".parse().unwrap(), 128).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = tcp_listener(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), 128);
        // The v6 socket is v6-only, so it does not clash with the v4 one.
        assert!(v6.is_ok(), "{v6:?}");
        let target = ConnectTarget::new(SocketAddr::from(([127, 0, 0, 1], port)));
        target.connect_and_reset(Duration::from_secs(1)).unwrap();
        let closed = {
            let l = tcp_listener(&"127.0.0.1:0".parse().unwrap(), 1).unwrap();
            l.local_addr().unwrap()
        };
        let err = ConnectTarget::new(closed)
            .connect_and_reset(Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    #[test]
    fn connect_from_a_fixed_source_port_twice() {
        let listener = tcp_listener(&"127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let remote = listener.local_addr().unwrap();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = free.local_addr().unwrap();
        drop(free);
        for _ in 0..2 {
            let stream = tcp_connect_from(&local, &remote, Duration::from_secs(1)).unwrap();
            assert_eq!(stream.local_addr().unwrap(), local);
            let (peer, _) = listener.accept().unwrap();
            // An RST close leaves no TIME_WAIT, so the same 4-tuple can connect again.
            set_linger_zero(stream.as_raw_fd()).unwrap();
            drop(stream);
            drop(peer);
        }
        let closed = {
            let l = tcp_listener(&"127.0.0.1:0".parse().unwrap(), 1).unwrap();
            l.local_addr().unwrap()
        };
        let err = tcp_connect_from(
            &"127.0.0.1:0".parse().unwrap(),
            &closed,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    }
}
