//! The IPAM state of one network and the pure operations on it: reserve, commit, release,
//! and the selections GC and crash recovery remove.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::IpamError;
use crate::cni::cidr::IpNet;
use crate::cni::env::Attachment;

/// The process that reserved an address and has not committed it yet. `start_time` (clock
/// ticks since boot, `/proc/PID/stat` field 22) tells a reused pid from the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub pid: u32,
    pub start_time: u64,
}

/// One address held by one attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub ip: IpAddr,
    /// The pod CIDR it came from.
    pub cidr: IpNet,
    pub container_id: String,
    pub ifname: String,
    /// The host end of the veth pair (deterministic from the attachment).
    pub host_ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Set from the reservation until the ADD that made it has configured the interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Owner>,
    pub created_unix_ms: u64,
}

impl Allocation {
    #[must_use]
    pub fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    #[must_use]
    pub fn belongs_to(&self, a: &Attachment) -> bool {
        self.container_id == a.container_id && self.ifname == a.ifname
    }
}

/// Everything the store keeps for one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamState {
    /// `/proc/sys/kernel/random/boot_id` when last written: after a reboot no veth survives.
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// The last address handed out per CIDR: the next search starts after it, so a released
    /// address is not reused at once (a stale peer may still have it in its ARP cache).
    #[serde(default)]
    pub last: BTreeMap<String, IpAddr>,
}

/// What one ADD asks of the IPAM.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub attachment: &'a Attachment,
    pub host_ifname: &'a str,
    pub cidrs: &'a [IpNet],
    /// `runtimeConfig.ips`: specific addresses, at most one per family.
    pub wanted: &'a [IpAddr],
    pub owner: Owner,
    pub pod: Option<String>,
    pub netns: Option<String>,
    pub now_unix_ms: u64,
}

/// The gateway of a pod CIDR: its first host address, which every host veth carries.
#[must_use]
pub fn gateway(cidr: &IpNet) -> IpAddr {
    cidr.nth(1).unwrap_or(cidr.addr())
}

/// Offsets of addresses that may go to pods: not the network address, not the gateway, not
/// the IPv4 broadcast address.
fn usable_offsets(cidr: &IpNet) -> (u128, u128) {
    let end = if cidr.is_ipv4() {
        cidr.size() - 1
    } else {
        cidr.size()
    };
    (2, end.max(2))
}

impl IpamState {
    /// The allocations of an attachment.
    pub fn of<'a>(&'a self, a: &'a Attachment) -> impl Iterator<Item = &'a Allocation> + 'a {
        self.allocations.iter().filter(move |x| x.belongs_to(a))
    }

    fn in_use(&self) -> HashSet<IpAddr> {
        self.allocations.iter().map(|a| a.ip).collect()
    }

    /// Reserves one address per CIDR for `req` (pending under `req.owner`) and returns them.
    /// Dead owners' reservations must have been removed first (see [`IpamState::take`]).
    pub fn reserve(&mut self, req: &Request<'_>) -> Result<Vec<Allocation>, IpamError> {
        if let Some(existing) = self.of(req.attachment).next() {
            return Err(match existing.pending {
                Some(owner) => IpamError::InFlight {
                    attachment: format!(
                        "{}/{}",
                        req.attachment.container_id, req.attachment.ifname
                    ),
                    pid: owner.pid,
                },
                None => IpamError::AlreadyAttached {
                    attachment: format!(
                        "{}/{}",
                        req.attachment.container_id, req.attachment.ifname
                    ),
                    ip: existing.ip,
                },
            });
        }
        if let Some(ip) = req
            .wanted
            .iter()
            .find(|ip| !req.cidrs.iter().any(|c| c.is_ipv4() == ip.is_ipv4()))
        {
            return Err(IpamError::Unavailable {
                ip: *ip,
                why: "the node has no pod CIDR of its family".into(),
            });
        }
        let mut used = self.in_use();
        let mut picked = Vec::new();
        for cidr in req.cidrs {
            let ip = match req.wanted.iter().find(|w| w.is_ipv4() == cidr.is_ipv4()) {
                Some(w) => Self::check_wanted(cidr, *w, &used)?,
                None => self.next_free(cidr, &used)?,
            };
            used.insert(ip);
            self.last.insert(cidr.to_string(), ip);
            picked.push(Allocation {
                ip,
                cidr: *cidr,
                container_id: req.attachment.container_id.clone(),
                ifname: req.attachment.ifname.clone(),
                host_ifname: req.host_ifname.to_owned(),
                pod: req.pod.clone(),
                netns: req.netns.clone(),
                pending: Some(req.owner),
                created_unix_ms: req.now_unix_ms,
            });
        }
        self.allocations.extend(picked.iter().cloned());
        Ok(picked)
    }

    fn check_wanted(cidr: &IpNet, ip: IpAddr, used: &HashSet<IpAddr>) -> Result<IpAddr, IpamError> {
        let (first, end) = usable_offsets(cidr);
        let why = match cidr.offset_of(ip) {
            None => Some(format!("outside the pod CIDR {cidr}")),
            Some(o) if o < first || o >= end => Some(format!(
                "the network, gateway or broadcast address of {cidr}"
            )),
            Some(_) if used.contains(&ip) => Some("in use".to_owned()),
            Some(_) => None,
        };
        match why {
            Some(why) => Err(IpamError::Unavailable { ip, why }),
            None => Ok(ip),
        }
    }

    fn next_free(&self, cidr: &IpNet, used: &HashSet<IpAddr>) -> Result<IpAddr, IpamError> {
        let (first, end) = usable_offsets(cidr);
        let span = end - first;
        let start = self
            .last
            .get(&cidr.to_string())
            .and_then(|ip| cidr.offset_of(*ip))
            .filter(|o| (first..end).contains(o))
            .map_or(0, |o| o - first + 1);
        // Among `used.len() + 1` consecutive candidates at least one is free, unless the
        // whole range is smaller than that.
        let tries = span.min(
            u128::try_from(used.len())
                .unwrap_or(u128::MAX)
                .saturating_add(1),
        );
        for i in 0..tries {
            let offset = first + (start + i) % span;
            if let Some(ip) = cidr.nth(offset)
                && !used.contains(&ip)
            {
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            cidr: *cidr,
            used: self.allocations.iter().filter(|a| a.cidr == *cidr).count(),
        })
    }

    /// Marks `owner`'s reservations for `a` as configured; returns how many there were.
    pub fn commit(&mut self, a: &Attachment, owner: Owner) -> usize {
        let mut n = 0;
        for x in &mut self.allocations {
            if x.belongs_to(a) && x.pending == Some(owner) {
                x.pending = None;
                n += 1;
            }
        }
        n
    }

    /// Removes and returns the allocations for which `pred` holds.
    pub fn take(&mut self, mut pred: impl FnMut(&Allocation) -> bool) -> Vec<Allocation> {
        let (gone, kept): (Vec<_>, Vec<_>) = self.allocations.drain(..).partition(|a| pred(a));
        self.allocations = kept;
        gone
    }

    /// DEL: everything of the attachment.
    pub fn release(&mut self, a: &Attachment) -> Vec<Allocation> {
        self.take(|x| x.belongs_to(a))
    }

    /// Number of free pod addresses in `cidr`.
    #[must_use]
    pub fn free_in(&self, cidr: &IpNet) -> u128 {
        let (first, end) = usable_offsets(cidr);
        let used = self
            .allocations
            .iter()
            .filter(|a| {
                cidr.offset_of(a.ip)
                    .is_some_and(|o| (first..end).contains(&o))
            })
            .count();
        (end - first).saturating_sub(u128::try_from(used).unwrap_or(u128::MAX))
    }
}

/// GC: allocations whose attachment is not in `valid`, except reservations of ADDs still
/// running (`alive`) — the runtime does not GC concurrently with ADD, but a foreign runtime
/// sharing the network might.
#[must_use]
pub fn stale_for_gc(
    state: &IpamState,
    valid: &HashSet<Attachment>,
    alive: impl Fn(&Owner) -> bool,
) -> HashSet<IpAddr> {
    state
        .allocations
        .iter()
        .filter(|a| !valid.contains(&a.attachment()))
        .filter(|a| !a.pending.as_ref().is_some_and(&alive))
        .map(|a| a.ip)
        .collect()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
