//! Who announces what: `owner(addr) = argmax over live members m that advertise addr of
//! score(addr, m.name)` — rendezvous (highest-random-weight) hashing.
//!
//! Each node decides locally which addresses it *may* announce (policy, interface up, a ready
//! local endpoint for externalTrafficPolicy Local: [`crate::l2::eligibility`]) and advertises
//! that set as its membership metadata. Every node then evaluates [`assign`] on the same
//! gossiped view, so they agree without a leader or the API server. Properties (unit-tested):
//! exactly one owner per address among the live members advertising it, none when nobody does;
//! when a member dies or stops advertising an address, only the addresses it owned move, each to
//! the next-highest eligible member; a joining member takes only the addresses it now scores
//! highest for (about 1/n of them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;
use smol_str::SmolStr;

use crate::l2::eligibility::Candidate;
use crate::l2::membership::MemberView;
use crate::model::ServiceName;

/// A node (member) name.
pub type NodeName = SmolStr;

/// One address that some L2 policy wants announced.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AddrReq {
    pub addr: IpAddr,
    /// The service it belongs to (for display; ownership depends on the address alone).
    pub service: ServiceName,
}

impl AddrReq {
    #[must_use]
    pub fn new(addr: IpAddr, service: ServiceName) -> Self {
        Self { addr, service }
    }

    /// One request per candidate address of [`crate::l2::eligibility::candidates`] (they are
    /// the same on every node; only the eligibility differs).
    #[must_use]
    pub fn from_candidates(candidates: &[Candidate]) -> Vec<Self> {
        candidates
            .iter()
            .map(|c| Self::new(c.addr, c.service.clone()))
            .collect()
    }
}

/// Rendezvous weight of `node` for `addr`: FNV-1a over (family, octets, 0xff, name), finished
/// with MurmurHash3's fmix64. Fixed forever: nodes running different versions must agree.
#[must_use]
pub fn score(addr: IpAddr, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match addr {
        IpAddr::V4(v4) => {
            feed(&[4]);
            feed(&v4.octets());
        }
        IpAddr::V6(v6) => {
            feed(&[6]);
            feed(&v6.octets());
        }
    }
    feed(&[0xff]);
    feed(node.as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The owner of `addr`: the live member advertising it with the highest [`score`] (ties, which
/// need a 64-bit collision, go to the greater name).
#[must_use]
pub fn owner(addr: IpAddr, members: &[MemberView]) -> Option<&MemberView> {
    members
        .iter()
        .filter(|m| m.state.is_live() && m.eligible.contains(&addr))
        .max_by(|a, b| (score(addr, &a.name), &a.name).cmp(&(score(addr, &b.name), &b.name)))
}

/// Every requested address that some live member is eligible for, with its one owner.
/// Addresses nobody may announce are absent.
#[must_use]
pub fn assign(addresses: &[AddrReq], members: &[MemberView]) -> BTreeMap<IpAddr, NodeName> {
    addresses
        .iter()
        .filter_map(|req| owner(req.addr, members).map(|m| (req.addr, m.name.clone())))
        .collect()
}

/// The addresses `node` owns in `assignment`.
#[must_use]
pub fn owned_by(assignment: &BTreeMap<IpAddr, NodeName>, node: &str) -> BTreeSet<IpAddr> {
    assignment
        .iter()
        .filter(|(_, owner)| *owner == node)
        .map(|(addr, _)| *addr)
        .collect()
}

#[cfg(test)]
#[path = "ownership_tests.rs"]
mod tests;
