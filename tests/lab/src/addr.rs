//! [`Cidr`]: an address with a prefix length, plus the address arithmetic labs need.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A malformed `ADDR/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDR/PREFIX with PREFIX ≤ 32 (IPv4) or ≤ 128 (IPv6)")]
pub struct CidrError(pub String);

/// An address and prefix length, e.g. `10.244.0.2/24` (the host bits are kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CidrError(format!("{addr}/{prefix}")));
        }
        Ok(Self { addr, prefix })
    }

    /// `addr/32` or `addr/128`.
    #[must_use]
    pub fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }

    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    #[must_use]
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    #[must_use]
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    fn bits(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    fn mask(&self) -> u128 {
        let host_bits = self.bits() - u32::from(self.prefix);
        let all = if self.bits() == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all.checked_shl(host_bits).unwrap_or(0) & all
    }

    /// The network (host bits cleared) with the same prefix.
    #[must_use]
    pub fn network(&self) -> Self {
        let bits = to_u128(self.addr) & self.mask();
        Self {
            addr: from_u128(bits, self.addr.is_ipv6()),
            prefix: self.prefix,
        }
    }

    /// The `n`-th address of the network (0 is the network address), `None` past its end.
    #[must_use]
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        if n > !self.mask() & self.all_ones() {
            return None;
        }
        Some(from_u128(
            to_u128(self.network().addr) + n,
            self.addr.is_ipv6(),
        ))
    }

    fn all_ones(&self) -> u128 {
        if self.bits() == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        }
    }

    /// The same address with another prefix length.
    pub fn with_prefix(&self, prefix: u8) -> Result<Self, CidrError> {
        Self::new(self.addr, prefix)
    }

    /// Whether `ip` is inside this network.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.addr.is_ipv6()
            && (to_u128(ip) & self.mask()) == (to_u128(self.addr) & self.mask())
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        IpAddr::V4(Ipv4Addr::from(
            u32::try_from(bits).expect("IPv4 arithmetic stays within 32 bits"),
        ))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Self::new(addr, prefix).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let c: Cidr = "10.244.1.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.1.7/24");
        assert_eq!(c.network().to_string(), "10.244.1.0/24");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert_eq!(
            "fd00:10:244::5/64"
                .parse::<Cidr>()
                .unwrap()
                .network()
                .to_string(),
            "fd00:10:244::/64"
        );
    }

    #[test]
    fn nth_and_contains() {
        let c: Cidr = "10.96.0.0/16".parse().unwrap();
        assert_eq!(c.nth(10).unwrap().to_string(), "10.96.0.10");
        assert_eq!(c.nth(300).unwrap().to_string(), "10.96.1.44");
        assert_eq!(c.nth(65535).unwrap().to_string(), "10.96.255.255");
        assert_eq!(c.nth(65536), None);
        assert!(c.contains("10.96.200.1".parse().unwrap()));
        assert!(!c.contains("10.97.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let v6: Cidr = "fd00::/64".parse().unwrap();
        assert_eq!(v6.nth(2).unwrap().to_string(), "fd00::2");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert_eq!(Cidr::host("::1".parse().unwrap()).prefix(), 128);
        assert_eq!(c.with_prefix(24).unwrap().to_string(), "10.96.0.0/24");
    }
}
