//! Address arithmetic for the allocator: addresses as integers per family, the usable interval
//! of a block, and a set of free intervals with O(log n) "first free" and "take this one".

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::model::{IpBlock, IpFamily};

/// An address as an integer in its family's space.
pub fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`to_int`].
pub fn from_int(family: IpFamily, n: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Index of a family in per-family arrays.
pub fn slot(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// Inclusive interval `(first, last)` of integers.
pub type Interval = (u128, u128);

/// The addresses of `block` a service may get: all of them for a start/stop range; for a CIDR,
/// all but the network and broadcast (last) address unless `allow_first_last`, except that
/// IPv4 /31 and /32 and IPv6 /127 and /128 always use every address (Cilium's semantics).
/// `None` when nothing is left.
pub fn usable(block: &IpBlock, allow_first_last: bool) -> Option<Interval> {
    let (first, last) = block.bounds();
    let (first, last) = (to_int(first), to_int(last));
    match block {
        IpBlock::Cidr(net) => {
            let tiny = net.max_prefix_len() - net.prefix_len() <= 1;
            if allow_first_last || tiny {
                Some((first, last))
            } else {
                (first + 1 < last).then(|| (first + 1, last - 1))
            }
        }
        IpBlock::Range { .. } => Some((first, last)),
    }
}

/// Sorts and merges overlapping or adjacent intervals.
pub fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(intervals.len());
    for (first, last) in intervals {
        match out.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// Number of integers in `interval`, saturating at `u128::MAX` (only a whole IPv6 /0 overflows).
pub fn size(interval: Interval) -> u128 {
    (interval.1 - interval.0).saturating_add(1)
}

/// Disjoint free intervals keyed by their first integer.
#[derive(Clone, Debug, Default)]
pub struct FreeSet {
    intervals: BTreeMap<u128, u128>,
}

impl FreeSet {
    /// A set holding `intervals`, which must be disjoint (as [`merge`] returns them).
    pub fn new(intervals: &[Interval]) -> Self {
        Self {
            intervals: intervals.iter().copied().collect(),
        }
    }

    /// The lowest free integer.
    pub fn first(&self) -> Option<u128> {
        self.intervals.first_key_value().map(|(first, _)| *first)
    }

    /// Takes `n` out of the set; `false` if it was not free.
    pub fn take(&mut self, n: u128) -> bool {
        let Some((&first, &last)) = self.intervals.range(..=n).next_back() else {
            return false;
        };
        if n > last {
            return false;
        }
        self.intervals.remove(&first);
        if first < n {
            self.intervals.insert(first, n - 1);
        }
        if n < last {
            self.intervals.insert(n + 1, last);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> IpBlock {
        IpBlock::parse(Some(text), None, None).unwrap()
    }

    fn ip(text: &str) -> u128 {
        to_int(text.parse().unwrap())
    }

    #[test]
    fn cidr_blocks_reserve_network_and_broadcast_unless_allowed() {
        let block = cidr("10.0.0.0/24");
        assert_eq!(
            usable(&block, false),
            Some((ip("10.0.0.1"), ip("10.0.0.254")))
        );
        assert_eq!(
            usable(&block, true),
            Some((ip("10.0.0.0"), ip("10.0.0.255")))
        );
        let v6 = cidr("fd00::/120");
        assert_eq!(usable(&v6, false), Some((ip("fd00::1"), ip("fd00::fe"))));
    }

    #[test]
    fn tiny_blocks_use_every_address() {
        for (text, first, last) in [
            ("10.0.0.7/32", "10.0.0.7", "10.0.0.7"),
            ("10.0.0.6/31", "10.0.0.6", "10.0.0.7"),
            ("fd00::5/128", "fd00::5", "fd00::5"),
            ("fd00::4/127", "fd00::4", "fd00::5"),
        ] {
            assert_eq!(
                usable(&cidr(text), false),
                Some((ip(first), ip(last))),
                "{text}"
            );
        }
        assert_eq!(
            usable(&cidr("10.0.0.4/30"), false),
            Some((ip("10.0.0.5"), ip("10.0.0.6")))
        );
    }

    #[test]
    fn ranges_use_every_address() {
        let block = IpBlock::parse(None, Some("10.0.0.0"), Some("10.0.0.255")).unwrap();
        assert_eq!(
            usable(&block, false),
            Some((ip("10.0.0.0"), ip("10.0.0.255")))
        );
    }

    #[test]
    fn merge_joins_overlapping_and_adjacent() {
        assert_eq!(
            merge(vec![(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]),
            [(1, 9), (20, 30)]
        );
        assert_eq!(merge(vec![(0, u128::MAX), (3, 4)]), [(0, u128::MAX)]);
    }

    #[test]
    fn free_set_takes_first_and_specific_addresses() {
        let mut free = FreeSet::new(&[(10, 12), (20, 20)]);
        assert_eq!(free.first(), Some(10));
        assert!(free.take(11));
        assert!(!free.take(11), "taken twice");
        assert!(!free.take(15), "outside");
        assert!(free.take(10));
        assert_eq!(free.first(), Some(12));
        assert!(free.take(12) && free.take(20));
        assert_eq!(free.first(), None);
    }

    #[test]
    fn sizes_saturate() {
        assert_eq!(size((0, u128::MAX)), u128::MAX);
        assert_eq!(size((7, 7)), 1);
    }

    #[test]
    fn ints_round_trip() {
        for text in ["0.0.0.0", "255.255.255.255", "::", "fd00::1"] {
            let addr: IpAddr = text.parse().unwrap();
            assert_eq!(from_int(IpFamily::of(addr), to_int(addr)), addr);
        }
    }
}
