//! The node's external devices: ifindex and addresses (SNAT source, NodePort addresses).

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::DatapathError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub ifindex: u32,
    /// The SNAT source of each family: the first (primary) global address.
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// Every global address (NodePort answers on each).
    pub addrs: Vec<IpAddr>,
}

/// Looks `name` up: its ifindex, first global IPv4/IPv6 addresses and all global addresses.
pub fn device(name: &str) -> Result<Device, DatapathError> {
    let c = CString::new(name).map_err(|e| {
        DatapathError::io(
            "looking up device",
            name,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if ifindex == 0 {
        return Err(DatapathError::io(
            "looking up device",
            name,
            std::io::Error::last_os_error(),
        ));
    }
    let (mut v4, mut v6, mut addrs) = (None, None, Vec::new());
    for (ifname, ip) in addresses().map_err(|e| DatapathError::io("getifaddrs for", name, e))? {
        if ifname != name {
            continue;
        }
        match ip {
            IpAddr::V4(a) if !a.is_loopback() => {
                v4.get_or_insert(a);
                addrs.push(ip);
            }
            IpAddr::V6(a) if !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80 => {
                v6.get_or_insert(a);
                addrs.push(ip);
            }
            _ => {}
        }
    }
    Ok(Device {
        name: name.to_string(),
        ifindex,
        v4,
        v6,
        addrs,
    })
}

/// The interface's hardware address (SIOCGIFHWADDR works in the caller's network namespace,
/// unlike /sys/class/net, which shows the namespace sysfs was mounted in).
pub fn mac_address(name: &str) -> Result<[u8; 6], DatapathError> {
    let err = |e| DatapathError::io("reading the MAC address of", name, e);
    // SAFETY: a plain socket used only for the ioctl; closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new socket we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; the name is copied with a NUL terminator.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "name too long",
        )));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SIOCGIFHWADDR as _,
            &raw mut req,
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: the union member the ioctl filled.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = d.to_ne_bytes()[0];
    }
    Ok(mac)
}

/// Every (interface, address) pair of this network namespace.
fn addresses() -> std::io::Result<Vec<(String, IpAddr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_name is a NUL-terminated string; ifa_addr points at a sockaddr of the
            // family it declares.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: the family says it is a sockaddr_in; read unaligned to be safe.
                let sin =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                out.push((
                    name,
                    IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes())),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: the family says it is a sockaddr_in6; read unaligned to be safe.
                let sin6 =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in6>()) };
                out.push((name, IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_found_and_unknown_devices_fail() {
        let lo = super::device("lo").expect("lo exists");
        assert!(lo.ifindex > 0);
        assert!(
            lo.v4.is_none(),
            "loopback addresses are never used for SNAT"
        );
        assert!(super::device("no-such-dev0").is_err());
    }
}
