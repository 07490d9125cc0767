//! Pools made ready for allocation: conflicts resolved (the newer of two overlapping pools is not
//! used), usable intervals merged into free sets, and an index from address to pool.

use std::{cmp::Ordering, collections::BTreeMap, net::IpAddr};

use smol_str::SmolStr;

use super::ranges::{self, FreeSet, Interval, from_int, slot, to_int};
use crate::model::{
    IpBlock, IpFamily, IpPool, PoolStatus, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL, Service,
};

/// One pool with its bookkeeping.
#[derive(Debug)]
pub struct Prepared<'a> {
    pub pool: &'a IpPool,
    /// Merged usable intervals per family (empty for a conflicting pool).
    usable: [Vec<Interval>; 2],
    pub free: [FreeSet; 2],
    total: u128,
    pub used: u128,
    pub conflict: Option<String>,
}

impl Prepared<'_> {
    pub fn name(&self) -> &SmolStr {
        &self.pool.name
    }

    /// Whether new services may get addresses of `family` here.
    pub fn offers(&self, family: IpFamily) -> bool {
        self.conflict.is_none() && !self.usable[slot(family)].is_empty()
    }

    pub fn accepts_new(&self) -> bool {
        self.conflict.is_none() && self.pool.accepts_new()
    }

    /// The first free address of `family`.
    pub fn first_free(&self, family: IpFamily) -> Option<IpAddr> {
        self.free[slot(family)].first().map(|n| from_int(family, n))
    }

    /// Marks `ip` used; `false` if it was not free.
    pub fn take(&mut self, ip: IpAddr) -> bool {
        let taken = self.free[slot(IpFamily::of(ip))].take(to_int(ip));
        if taken {
            self.used += 1;
        }
        taken
    }

    pub fn status(&self) -> PoolStatus {
        let available = if self.conflict.is_some() {
            0
        } else {
            self.total.saturating_sub(self.used)
        };
        PoolStatus {
            name: self.pool.name.clone(),
            total: self.total,
            used: self.used,
            available,
            conflict: self.conflict.clone(),
            problems: self.pool.problems.clone(),
            disabled: self.pool.disabled,
        }
    }
}

/// Whether `pool`'s selector selects `service` (with the synthetic namespace/name labels).
pub fn selects(pool: &IpPool, service: &Service) -> bool {
    pool.service_selector.as_ref().is_none_or(|selector| {
        selector.matches(|key| match key {
            SERVICE_NAMESPACE_LABEL => Some(service.name.namespace.as_str()),
            SERVICE_NAME_LABEL => Some(service.name.name.as_str()),
            _ => service.labels.get(key).map(SmolStr::as_str),
        })
    })
}

/// Every pool, in the order new allocations try them.
#[derive(Debug)]
pub struct Pools<'a> {
    pub list: Vec<Prepared<'a>>,
    /// Usable intervals of non-conflicting pools per family: first → (last, index in `list`).
    owners: [BTreeMap<u128, (u128, usize)>; 2],
}

/// Age order: creation time (unset first), then name.
fn by_age(a: &IpPool, b: &IpPool) -> Ordering {
    (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name))
}

impl<'a> Pools<'a> {
    pub fn prepare(pools: impl IntoIterator<Item = &'a IpPool>) -> Self {
        let mut by_age_order: Vec<&IpPool> = pools.into_iter().collect();
        by_age_order.sort_by(|a, b| by_age(a, b));

        // Raw extents (reserved addresses included) claimed by older, non-conflicting pools.
        let mut claimed: [BTreeMap<u128, (u128, SmolStr)>; 2] = Default::default();
        let mut ready = Vec::with_capacity(by_age_order.len());
        for pool in by_age_order {
            let mut raw: [Vec<Interval>; 2] = Default::default();
            let mut usable: [Vec<Interval>; 2] = Default::default();
            for block in &pool.blocks {
                let family = slot(block.family());
                let (first, last) = block.bounds();
                raw[family].push((to_int(first), to_int(last)));
                usable[family].extend(ranges::usable(block, pool.allow_first_last_ips));
            }
            let raw = raw.map(ranges::merge);
            let usable = usable.map(ranges::merge);
            let conflict = conflict_with(&claimed, &raw, pool);
            if conflict.is_none() {
                for (family, intervals) in raw.iter().enumerate() {
                    for &(first, last) in intervals {
                        claimed[family].insert(first, (last, pool.name.clone()));
                    }
                }
            }
            let total = usable.iter().flatten().fold(0u128, |sum, &interval| {
                sum.saturating_add(ranges::size(interval))
            });
            let usable = if conflict.is_some() {
                Default::default()
            } else {
                usable
            };
            ready.push(Prepared {
                pool,
                free: [FreeSet::new(&usable[0]), FreeSet::new(&usable[1])],
                usable,
                total,
                used: 0,
                conflict,
            });
        }
        ready.sort_by(|a, b| {
            a.pool
                .priority
                .cmp(&b.pool.priority)
                .then_with(|| by_age(a.pool, b.pool))
        });
        let mut owners: [BTreeMap<u128, (u128, usize)>; 2] = Default::default();
        for (index, prepared) in ready.iter().enumerate() {
            for (family, intervals) in prepared.usable.iter().enumerate() {
                for &(first, last) in intervals {
                    owners[family].insert(first, (last, index));
                }
            }
        }
        Self {
            list: ready,
            owners,
        }
    }

    /// The index of the usable (non-conflicting) pool whose usable addresses include `ip`.
    pub fn owner(&self, ip: IpAddr) -> Option<usize> {
        let n = to_int(ip);
        self.owners[slot(IpFamily::of(ip))]
            .range(..=n)
            .next_back()
            .and_then(|(_, &(last, index))| (n <= last).then_some(index))
    }

    /// A block of a usable pool that holds `ip` as a reserved (network or broadcast) address.
    pub fn reserved_in(&self, ip: IpAddr) -> Option<(&SmolStr, IpBlock)> {
        self.list
            .iter()
            .filter(|p| p.conflict.is_none())
            .find_map(|p| {
                p.pool
                    .blocks
                    .iter()
                    .find(|block| {
                        let (first, last) = block.bounds();
                        block.family() == IpFamily::of(ip) && first <= ip && ip <= last
                    })
                    .map(|block| (p.name(), *block))
            })
    }
}

/// The message for a pool whose raw extents overlap an older pool's.
fn conflict_with(
    claimed: &[BTreeMap<u128, (u128, SmolStr)>; 2],
    raw: &[Vec<Interval>; 2],
    pool: &IpPool,
) -> Option<String> {
    for (family, intervals) in raw.iter().enumerate() {
        for &(first, last) in intervals {
            if let Some((&other_first, (other_last, other))) =
                claimed[family].range(..=last).next_back()
                && *other_last >= first
            {
                let family = if family == 0 {
                    IpFamily::V4
                } else {
                    IpFamily::V6
                };
                let from = from_int(family, first.max(other_first));
                let to = from_int(family, last.min(*other_last));
                return Some(format!(
                    "pool {} overlaps older pool {other} ({from}-{to}); it is not used",
                    pool.name
                ));
            }
        }
    }
    None
}
