//! The allocator: pools + services + what services held before → who holds which address, and
//! the status of every pool and service. Pure and deterministic.
//!
//! Order of work:
//! 1. Pools are prepared (overlaps resolved by age, free intervals built).
//! 2. Requests are sorted by (creation time, namespace, name).
//! 3. Every service keeps the addresses it held (previous allocations and
//!    `status.loadBalancer.ingress`) that still fit its request, its pools and its neighbours.
//! 4. Then, in the same order, every service gets what it still lacks.
//!
//! Existing holders are served first, so an address is never moved to make room for a newcomer.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use smol_str::SmolStr;

use super::{
    pools::{Pools, selects},
    request::{self, Request, ShareDenied, Want},
};
use crate::model::{
    AllocatedIp, IpFamily, IpPool, IpamReason, PoolStatus, Service, ServiceIpamStatus, ServiceName,
};

/// The outcome of one allocation round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Every service LB IPAM handles.
    pub services: BTreeMap<ServiceName, ServiceIpamStatus>,
    /// Every pool.
    pub pools: BTreeMap<SmolStr, PoolStatus>,
}

impl Allocation {
    /// The LoadBalancer addresses of each service that holds any (for frontends, status
    /// ingress and the next round's `previous`).
    pub fn lb_ips(&self) -> BTreeMap<ServiceName, Vec<IpAddr>> {
        self.services
            .iter()
            .filter(|(_, status)| !status.addresses.is_empty())
            .map(|(name, status)| (name.clone(), status.ingress()))
            .collect()
    }
}

type Failure = (IpamReason, String);

/// An address and the services holding it (indices into the sorted requests).
struct Holding {
    pool: usize,
    holders: Vec<usize>,
}

struct Book<'a> {
    pools: Pools<'a>,
    requests: Vec<Request<'a>>,
    /// Per request: what it holds, as (address, pool index).
    held: Vec<Vec<(IpAddr, usize)>>,
    addresses: BTreeMap<IpAddr, Holding>,
    /// Addresses held under a sharing key, per family.
    shared: BTreeMap<(SmolStr, IpFamily), BTreeSet<IpAddr>>,
}

/// Allocates for every service LB IPAM [`handles`](request::handles). `previous` holds what each
/// service had before (e.g. the last round's [`Allocation::lb_ips`]); a service's
/// `status_ingress` counts as held too. Object names must be unique within `pools` and
/// `services`.
pub fn allocate<'a>(
    pools: impl IntoIterator<Item = &'a IpPool>,
    services: impl IntoIterator<Item = &'a Service>,
    previous: &BTreeMap<ServiceName, Vec<IpAddr>>,
) -> Allocation {
    let mut handled: Vec<&Service> = services
        .into_iter()
        .filter(|s| request::handles(s))
        .collect();
    handled.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));

    let mut out = Allocation::default();
    let mut requests = Vec::with_capacity(handled.len());
    for service in handled {
        match Request::new(service) {
            Ok(request) => requests.push(request),
            Err(message) => {
                out.services.insert(
                    service.name.clone(),
                    ServiceIpamStatus {
                        service: service.name.clone(),
                        addresses: Vec::new(),
                        reason: IpamReason::InvalidRequest,
                        message,
                    },
                );
            }
        }
    }
    let mut book = Book {
        pools: Pools::prepare(pools),
        held: vec![Vec::new(); requests.len()],
        requests,
        addresses: BTreeMap::new(),
        shared: BTreeMap::new(),
    };
    for index in 0..book.requests.len() {
        book.keep_previous(index, previous);
    }
    let mut outcomes = Vec::with_capacity(book.requests.len());
    for index in 0..book.requests.len() {
        outcomes.push(book.complete(index));
    }
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let name = book.requests[index].service.name.clone();
        let mut addresses: Vec<AllocatedIp> = book.held[index]
            .iter()
            .map(|&(ip, pool)| AllocatedIp {
                ip,
                pool: book.pools.list[pool].name().clone(),
            })
            .collect();
        addresses.sort();
        let (reason, message) = match outcome {
            Ok(note) => {
                let list: Vec<String> = addresses
                    .iter()
                    .map(|a| format!("{} (pool {})", a.ip, a.pool))
                    .collect();
                let mut message = format!("allocated {}", list.join(", "));
                if let Some(note) = note {
                    message.push_str("; ");
                    message.push_str(&note);
                }
                (IpamReason::Satisfied, message)
            }
            Err(failure) => failure,
        };
        out.services.insert(
            name.clone(),
            ServiceIpamStatus {
                service: name,
                addresses,
                reason,
                message,
            },
        );
    }
    for prepared in &book.pools.list {
        out.pools.insert(prepared.name().clone(), prepared.status());
    }
    out
}

impl Book<'_> {
    /// Phase 1: keeps the addresses request `index` held before, where they still fit.
    fn keep_previous(&mut self, index: usize, previous: &BTreeMap<ServiceName, Vec<IpAddr>>) {
        let service = self.requests[index].service;
        let candidates: BTreeSet<IpAddr> = previous
            .get(&service.name)
            .into_iter()
            .flatten()
            .chain(&service.status_ingress)
            .copied()
            .collect();
        for ip in candidates {
            let wanted = match &self.requests[index].want {
                Want::Addresses(list) => list.contains(&ip),
                Want::Families { families, .. } => {
                    families.contains(&IpFamily::of(ip))
                        && !self.holds_family(index, IpFamily::of(ip))
                }
            };
            let Some(pool) = self.pools.owner(ip) else {
                continue;
            };
            if wanted
                && selects(self.pools.list[pool].pool, service)
                && self.shareable(index, ip).is_ok()
            {
                self.take(index, ip, pool);
            }
        }
    }

    /// Phase 2: gives request `index` what it still lacks. `Ok` carries a note for a satisfied
    /// request that did not get everything it preferred.
    fn complete(&mut self, index: usize) -> Result<Option<String>, Failure> {
        match self.requests[index].want.clone() {
            Want::Addresses(list) => {
                let missing: Vec<IpAddr> = list
                    .into_iter()
                    .filter(|ip| !self.held[index].iter().any(|(held, _)| held == ip))
                    .collect();
                let mut found = Vec::with_capacity(missing.len());
                for ip in missing {
                    found.push((ip, self.claim(index, ip)?));
                }
                for (ip, pool) in found {
                    self.take(index, ip, pool);
                }
                Ok(None)
            }
            Want::Families {
                families,
                require_all,
            } => {
                let mut found = Vec::new();
                let mut failures = Vec::new();
                for family in families {
                    if self.holds_family(index, family) {
                        continue;
                    }
                    match self.find(index, family) {
                        Ok(hit) => found.push(hit),
                        Err((reason, message)) => {
                            failures.push((reason, format!("no {family} address: {message}")));
                        }
                    }
                }
                if require_all && !failures.is_empty() {
                    return Err(failures.swap_remove(0));
                }
                for (ip, pool) in found {
                    self.take(index, ip, pool);
                }
                match failures.into_iter().next() {
                    None => Ok(None),
                    Some(failure) if self.held[index].is_empty() => Err(failure),
                    Some((reason, message)) => Ok(Some(format!("{message} ({reason})"))),
                }
            }
        }
    }

    fn holds_family(&self, index: usize, family: IpFamily) -> bool {
        self.held[index]
            .iter()
            .any(|(ip, _)| IpFamily::of(*ip) == family)
    }

    /// Whether request `index` may get the specific address `ip`; `Ok` is the pool.
    fn claim(&self, index: usize, ip: IpAddr) -> Result<usize, Failure> {
        let service = self.requests[index].service;
        let Some(pool) = self.pools.owner(ip) else {
            return Err(match self.pools.reserved_in(ip) {
                Some((pool, block)) => (
                    IpamReason::InvalidRequest,
                    format!(
                        "{ip} is the first or last address of block {block} in pool {pool} \
                         (allowFirstLastIPs is No)"
                    ),
                ),
                None => (IpamReason::NoPool, format!("no usable pool contains {ip}")),
            });
        };
        let prepared = &self.pools.list[pool];
        if !prepared.accepts_new() {
            let why = if prepared.pool.disabled {
                "is disabled"
            } else {
                "has an invalid spec"
            };
            return Err((
                IpamReason::NoPool,
                format!("{ip} is in pool {} which {why}", prepared.name()),
            ));
        }
        if !selects(prepared.pool, service) {
            return Err((
                IpamReason::PoolSelectorMismatch,
                format!(
                    "{ip} is in pool {} whose serviceSelector does not select this service",
                    prepared.name()
                ),
            ));
        }
        self.shareable(index, ip).map(|()| pool)
    }

    /// A free or shareable address of `family` for request `index`, and its pool.
    fn find(&self, index: usize, family: IpFamily) -> Result<(IpAddr, usize), Failure> {
        let request = &self.requests[index];
        let usable = |pool: usize| {
            let prepared = &self.pools.list[pool];
            prepared.accepts_new() && selects(prepared.pool, request.service)
        };
        if let Some(key) = &request.sharing_key
            && let Some(candidates) = self.shared.get(&(key.clone(), family))
        {
            for &ip in candidates {
                if let Some(holding) = self.addresses.get(&ip)
                    && usable(holding.pool)
                    && self.shareable(index, ip).is_ok()
                {
                    return Ok((ip, holding.pool));
                }
            }
        }
        let (mut offered, mut accepting, mut selecting) = (false, false, false);
        for (pool, prepared) in self.pools.list.iter().enumerate() {
            if !prepared.offers(family) {
                continue;
            }
            offered = true;
            if !prepared.accepts_new() {
                continue;
            }
            accepting = true;
            if !selects(prepared.pool, request.service) {
                continue;
            }
            selecting = true;
            if let Some(ip) = prepared.first_free(family) {
                return Ok((ip, pool));
            }
        }
        Err(if !accepting {
            let why = if offered {
                " (the pools that have some are disabled or invalid)"
            } else {
                ""
            };
            (
                IpamReason::NoPool,
                format!("no pool offers {family} addresses{why}"),
            )
        } else if !selecting {
            (
                IpamReason::PoolSelectorMismatch,
                format!("no pool with {family} addresses selects this service"),
            )
        } else {
            (
                IpamReason::OutOfIps,
                format!("every pool with {family} addresses that selects this service is full"),
            )
        })
    }

    /// Whether request `index` may hold `ip` given its current holders.
    fn shareable(&self, index: usize, ip: IpAddr) -> Result<(), Failure> {
        let Some(holding) = self.addresses.get(&ip) else {
            return Ok(());
        };
        let request = &self.requests[index];
        for &holder in &holding.holders {
            let other = &self.requests[holder];
            let name = &other.service.name;
            match request.may_share(other) {
                Ok(()) => {}
                Err(ShareDenied::NoCommonKey) => {
                    return Err((
                        IpamReason::AlreadyAllocated,
                        format!("{ip} is allocated to {name} (no common sharing key)"),
                    ));
                }
                Err(ShareDenied::PolicyDiffers) => {
                    return Err((
                        IpamReason::SharingConflict,
                        format!(
                            "{ip} is shared with {name}, whose externalTrafficPolicy is {:?}",
                            other.traffic_policy()
                        ),
                    ));
                }
                Err(ShareDenied::PortCollision(protocol, port)) => {
                    return Err((
                        IpamReason::SharingConflict,
                        format!("{ip} is shared with {name}, which also uses {port}/{protocol}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records that request `index` holds `ip` from `pool`.
    fn take(&mut self, index: usize, ip: IpAddr, pool: usize) {
        let holding = self.addresses.entry(ip).or_insert_with(|| Holding {
            pool,
            holders: Vec::new(),
        });
        if holding.holders.is_empty() {
            self.pools.list[pool].take(ip);
        }
        holding.holders.push(index);
        self.held[index].push((ip, pool));
        if let Some(key) = &self.requests[index].sharing_key {
            self.shared
                .entry((key.clone(), IpFamily::of(ip)))
                .or_default()
                .insert(ip);
        }
    }
}
