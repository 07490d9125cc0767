//! Announcing an address on the LAN: gratuitous ARP (RFC 5227 announcement) for IPv4,
//! unsolicited Neighbor Advertisement (RFC 4861 7.2.6) for IPv6, sent as raw Ethernet frames on
//! the interface; and joining the solicited-node multicast group of every announced IPv6
//! address so multicast Neighbor Solicitations reach the responder (a NIC filters them out
//! otherwise).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("{op} on interface {ifname}: {source}")]
    Io {
        op: &'static str,
        ifname: String,
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, ifname: &'a str) -> impl Fn(std::io::Error) -> AnnounceError + 'a {
    move |source| AnnounceError::Io {
        op,
        ifname: ifname.to_string(),
        source,
    }
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86DD;

/// A gratuitous ARP request: sender = target = `ip`, broadcast.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&u32::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap_or(0))
}

/// An unsolicited Neighbor Advertisement (Override set) for `ip` to all nodes.
pub fn unsolicited_na_frame(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut msg = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    msg.extend_from_slice(&ip.octets());
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&mac);
    let csum = icmpv6_checksum(&ip, &dst, &msg);
    msg[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + msg.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(msg.len()).unwrap_or(0).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&msg);
    f
}

/// The solicited-node multicast group of `ip` (ff02::1:ffXX:XXXX).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Sends one announcement frame for `ip` out of `ifindex`.
pub fn announce(ifname: &str, ifindex: u32, mac: [u8; 6], ip: IpAddr) -> Result<(), AnnounceError> {
    let (frame, proto) = match ip {
        IpAddr::V4(v4) => (garp_frame(mac, v4), ETH_P_ARP),
        IpAddr::V6(v6) => (unsolicited_na_frame(mac, v6), ETH_P_IPV6),
    };
    // SAFETY: a new raw packet socket, owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io("opening a packet socket", ifname)(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by socket().
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: frame and sll are valid for the lengths given.
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const sll).cast(),
            u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap_or(0),
        )
    };
    if rc < 0 {
        return Err(io("sending an announcement", ifname)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Solicited-node multicast memberships, one socket per interface, reference-counted per group.
#[derive(Default)]
pub struct Multicast {
    sockets: BTreeMap<u32, OwnedFd>,
    groups: BTreeMap<(u32, Ipv6Addr), usize>,
}

impl Multicast {
    fn membership(
        &mut self,
        ifname: &str,
        ifindex: u32,
        group: Ipv6Addr,
        join: bool,
    ) -> Result<(), AnnounceError> {
        let sock = match self.sockets.entry(ifindex) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                // SAFETY: a new UDP socket used only for memberships.
                let fd = unsafe {
                    libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
                };
                if fd < 0 {
                    return Err(io("opening a multicast socket", ifname)(
                        std::io::Error::last_os_error(),
                    ));
                }
                // SAFETY: fd was just returned by socket().
                e.insert(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: group.octets(),
            },
            ipv6mr_interface: ifindex,
        };
        let opt = if join {
            libc::IPV6_ADD_MEMBERSHIP
        } else {
            libc::IPV6_DROP_MEMBERSHIP
        };
        // SAFETY: mreq is a valid ipv6_mreq of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                opt,
                (&raw const mreq).cast(),
                u32::try_from(std::mem::size_of::<libc::ipv6_mreq>()).unwrap_or(0),
            )
        };
        if rc != 0 {
            let op = if join {
                "joining a solicited-node group"
            } else {
                "leaving a solicited-node group"
            };
            return Err(io(op, ifname)(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Joins the solicited-node group of `ip` on the interface (once per group).
    pub fn join(&mut self, ifname: &str, ifindex: u32, ip: Ipv6Addr) -> Result<(), AnnounceError> {
        let g = solicited_node(ip);
        let n = self.groups.entry((ifindex, g)).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.membership(ifname, ifindex, g, true)?;
        }
        Ok(())
    }

    /// Leaves it when no announced address needs it any more.
    pub fn leave(&mut self, ifname: &str, ifindex: u32, ip: Ipv6Addr) -> Result<(), AnnounceError> {
        let g = solicited_node(ip);
        if let Some(n) = self.groups.get_mut(&(ifindex, g)) {
            *n -= 1;
            if *n == 0 {
                self.groups.remove(&(ifindex, g));
                self.membership(ifname, ifindex, g, false)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_is_a_broadcast_request_with_sender_equal_target() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], "192.168.1.200".parse().unwrap());
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "ARP request");
        assert_eq!(&f[28..32], &f[38..42], "spa == tpa");
    }

    #[test]
    fn unsolicited_na_checksum_verifies() {
        let ip: Ipv6Addr = "fd00:50::200".parse().unwrap();
        let f = unsolicited_na_frame([2, 0, 0, 0, 0, 1], ip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(f[14 + 7], 255, "hop limit 255");
        let msg = &f[54..];
        assert_eq!(msg[0], 136);
        assert_eq!(msg[4] & 0x40, 0, "not solicited");
        assert_eq!(msg[4] & 0x20, 0x20, "override");
        // A message with its checksum in place sums to zero.
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(&ip, &dst, msg), 0);
    }

    #[test]
    fn solicited_node_group() {
        let g = solicited_node("fd00::12:3456".parse().unwrap());
        assert_eq!(g, "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
    }
}
