//! Conversions between std addresses and the ABI's kernel-order words.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ferrite_abi::{Backend, FAMILY_V4, FAMILY_V6};

/// An address as the kernel's `bpf_sock_addr` holds it: network-order words and a family tag.
pub fn ip_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// The inverse of [`ip_words`]; `None` for an unknown family tag.
pub fn words_ip(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        FAMILY_V6 => {
            let mut o = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

pub fn backend_of(sa: SocketAddr) -> Backend {
    let (addr, family) = ip_words(sa.ip());
    Backend {
        addr,
        port: sa.port().to_be(),
        family,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_words_are_network_order_bytes() {
        let (w, fam) = ip_words("10.96.0.1".parse().unwrap());
        assert_eq!(fam, FAMILY_V4);
        assert_eq!(w[0].to_ne_bytes(), [10, 96, 0, 1]);
        assert_eq!(&w[1..], &[0, 0, 0]);
    }

    #[test]
    fn v6_round_trips() {
        let ip: IpAddr = "fd00:10:96::a".parse().unwrap();
        let (w, fam) = ip_words(ip);
        assert_eq!(words_ip(w, fam), Some(ip));
        assert_eq!(w[0].to_ne_bytes(), [0xfd, 0, 0, 0x10]);
    }

    #[test]
    fn backend_port_is_big_endian() {
        let b = backend_of("10.0.0.5:8080".parse().unwrap());
        assert_eq!(b.port.to_ne_bytes(), 8080u16.to_be_bytes());
        assert_eq!(
            words_ip(b.addr, b.family),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(words_ip([0; 4], 9), None);
    }
}
