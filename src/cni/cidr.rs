//! [`IpNet`]: an address with a prefix length (`10.244.0.0/24`, `fd00:10:244::5/128`), the unit
//! of pod CIDRs, pod addresses and routes in the CNI plugin.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP address and prefix length. The address may have host bits set (`10.244.0.5/24` is an
/// address inside its subnet); [`IpNet::network`] clears them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Text that is not `ADDRESS/PREFIX` with a prefix the family allows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not a CIDR (ADDRESS/PREFIX): {why}")]
pub struct CidrError {
    pub text: String,
    pub why: &'static str,
}

impl IpNet {
    /// `None` when `prefix` is longer than the family's address.
    #[must_use]
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= max_prefix(addr)).then_some(Self { addr, prefix })
    }

    /// A single address: `/32` or `/128`.
    #[must_use]
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix: max_prefix(addr),
        }
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
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The subnet: host bits cleared.
    #[must_use]
    pub fn network(&self) -> Self {
        Self {
            addr: from_bits(self.addr, to_bits(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    fn mask(&self) -> u128 {
        let width = u32::from(max_prefix(self.addr));
        let all = u128::MAX >> (128 - width);
        u128::MAX
            .checked_shl(width - u32::from(self.prefix))
            .unwrap_or(0)
            & all
    }

    /// Whether `ip` is inside this subnet (same family).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && to_bits(ip) & self.mask() == to_bits(self.addr) & self.mask()
    }

    /// Number of addresses in the subnet (saturating at `u128::MAX`).
    #[must_use]
    pub fn size(&self) -> u128 {
        let host = u32::from(max_prefix(self.addr) - self.prefix);
        1u128.checked_shl(host).unwrap_or(u128::MAX)
    }

    /// The address `offset` past the network address (`None` past the end).
    #[must_use]
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        (offset < self.size()).then(|| from_bits(self.addr, to_bits(self.network().addr) + offset))
    }

    /// Offset of `ip` from the network address (`None` outside the subnet).
    #[must_use]
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        self.contains(ip)
            .then(|| to_bits(ip) - to_bits(self.network().addr))
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn to_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

fn from_bits(family: IpAddr, bits: u128) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from_bits(
            u32::try_from(bits & u128::from(u32::MAX)).unwrap_or(u32::MAX),
        )),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from_bits(bits)),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| CidrError {
            text: text.to_owned(),
            why,
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(|| err("no /PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|_| err("bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        Self::new(addr, prefix).ok_or_else(|| err("prefix longer than the address"))
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(net("10.244.0.0/24").to_string(), "10.244.0.0/24");
        assert_eq!(net("fd00:10:244::/64").to_string(), "fd00:10:244::/64");
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0.0".parse::<IpNet>().is_err());
        assert!("nope/8".parse::<IpNet>().is_err());
        assert!("::/129".parse::<IpNet>().is_err());
    }

    #[test]
    fn network_contains_and_offsets() {
        let n = net("10.244.1.77/24");
        assert_eq!(n.network(), net("10.244.1.0/24"));
        assert!(n.contains("10.244.1.255".parse().unwrap()));
        assert!(!n.contains("10.244.2.0".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        assert_eq!(n.size(), 256);
        assert_eq!(n.nth(1), Some("10.244.1.1".parse().unwrap()));
        assert_eq!(n.nth(256), None);
        assert_eq!(n.offset_of("10.244.1.9".parse().unwrap()), Some(9));
        let v6 = net("fd00:10:244::/64");
        assert_eq!(v6.nth(2), Some("fd00:10:244::2".parse().unwrap()));
        assert_eq!(v6.size(), 1 << 64);
        assert_eq!(net("0.0.0.0/0").size(), 1 << 32);
        assert!(net("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert_eq!(net("::/0").size(), u128::MAX);
        assert_eq!(IpNet::host("10.0.0.1".parse().unwrap()), net("10.0.0.1/32"));
    }

    #[test]
    fn serde_roundtrip() {
        let v: Vec<IpNet> = serde_json::from_str(r#"["10.0.0.0/8","fd00::/8"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"["10.0.0.0/8","fd00::/8"]"#
        );
        assert!(serde_json::from_str::<IpNet>(r#""10.0.0.0""#).is_err());
    }
}
