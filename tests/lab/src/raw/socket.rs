//! `AF_PACKET` sockets: a sender that puts any byte string on the wire (whatever the kernel's
//! own IP stack would refuse to build) and the MAC address of an interface.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::frame::Mac;

/// The index of `ifname` in the calling thread's netns.
pub(crate) fn ifindex_of(ifname: &str) -> io::Result<i32> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(ifindex).map_err(|_| io::Error::other("ifindex too large"))
}

/// A fresh `AF_PACKET` raw socket receiving `protocol` (0: none, it only sends), unbound.
pub(crate) fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a fresh descriptor we take ownership of.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `frame` (from its Ethernet header on) as it is, out of interface `ifindex`.
pub(crate) fn send_frame(fd: &OwnedFd, ifindex: i32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET).expect("fits");
    sll.sll_ifindex = ifindex;
    sll.sll_halen = 6;
    if frame.len() >= 14 {
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
    }
    // SAFETY: frame and sll are live for the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::from_ref(&sll).cast(),
            libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("fits"),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An `AF_PACKET` socket bound to one interface of the calling thread's netns.
#[derive(Debug)]
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSender {
    /// Opens a sender on `ifname` (in the netns of the calling thread).
    pub fn open(ifname: &str) -> io::Result<Self> {
        let ifindex = ifindex_of(ifname)?;
        // Protocol 0: this socket only sends, it receives nothing.
        let fd = packet_socket(0)?;
        Ok(Self { fd, ifindex })
    }

    /// Sends `frame` (from its Ethernet header on) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(&self.fd, self.ifindex, frame)
    }
}

/// The MAC address of `ifname` in the calling thread's netns.
pub fn mac_of(ifname: &str) -> io::Result<Mac> {
    #[repr(C)]
    struct IfreqHwaddr {
        name: [u8; 16],
        family: u16,
        data: [u8; 14],
        _pad: [u8; 8],
    }
    if ifname.len() >= 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: plain data, all-zero is valid.
    let mut req: IfreqHwaddr = unsafe { zeroed() };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: a datagram socket just for the ioctl.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: req is a live ifreq-sized buffer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&req.data[..6]);
    Ok(Mac(mac))
}
