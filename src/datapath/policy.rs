//! NetworkPolicy's maps (see `ferrite_abi::policy`), written from a [`PolicyPlan`]
//! make-before-break: new allow rules and prefixes first, then the addresses (identities,
//! isolation), and only then what is gone — so a packet never meets an isolation without the
//! rules that still allow it — and then the revision (`fe_polrev_v1`) is bumped, so every
//! established flow is looked up against the new rules once (unchanged, it keeps its pass). The
//! content is read back from the pins at start, so a restarted agent rewrites nothing that is
//! already right and bumps nothing.
//!
//! Besides the plan's pod addresses, the ipcache holds every address of this node's own network
//! namespace as [`IDENTITY_HOST`] ([`PolicyMaps::set_host`], from the once-a-second netlink
//! dump): the node always reaches its own pods (kubelet probes), whichever of its addresses a
//! connection is sourced from, and hostNetwork pods (which hold no pod identity) are the node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData};
use ferrite_abi::{
    IDENTITY_HOST, IpInfo, MASQ_CIDR_PREFIX_BITS, MasqCidr, NodeAddrKey, PolicyKey, PolicyValue,
    map_names,
};
use ipnet::IpNet;

use super::DatapathError;
use super::maputil::{ignore_missing, lpm_key_parts, map_err, take};
use crate::lb::addr::{ip_words, words_ip};
use crate::policy::{AddrEntry, PolicyPlan, RuleKey};

/// What the maps hold, as the plan spells it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    pub addrs: BTreeMap<IpAddr, AddrEntry>,
    pub cidrs: BTreeMap<IpNet, u32>,
    pub rules: BTreeMap<RuleKey, u32>,
}

/// Writes made by one [`PolicyMaps::apply`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyOps {
    pub upserts: usize,
    pub deletes: usize,
}

pub struct PolicyMaps {
    ipcache: HashMap<MapData, NodeAddrKey, IpInfo>,
    cidrs: LpmTrie<MapData, MasqCidr, u32>,
    rules: LpmTrie<MapData, PolicyKey, PolicyValue>,
    revision: Array<MapData, u32>,
    state: PolicyState,
    /// The last applied plan's addresses.
    plan_addrs: BTreeMap<IpAddr, AddrEntry>,
    /// This node's own addresses (written as [`IDENTITY_HOST`] where no pod holds them).
    host: BTreeSet<IpAddr>,
}

const HOST_ENTRY: AddrEntry = AddrEntry {
    identity: IDENTITY_HOST,
    endpoint: 0,
    flags: 0,
};

fn addr_key(ip: IpAddr) -> NodeAddrKey {
    let (addr, family) = ip_words(ip);
    NodeAddrKey {
        family: u32::from(family),
        addr,
    }
}

fn rule_key(r: &RuleKey) -> Key<PolicyKey> {
    Key::new(
        r.prefix,
        PolicyKey {
            endpoint: r.endpoint,
            identity: r.identity,
            direction: r.direction,
            proto: r.proto,
            dport: r.port.to_be(),
        },
    )
}

impl PolicyMaps {
    /// Takes the maps from an object that declares them (the pod veth program) and reads
    /// what they hold.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DatapathError> {
        let mut maps = Self {
            ipcache: take(ebpf, map_names::IPCACHE)?,
            cidrs: take(ebpf, map_names::POLICY_CIDRS)?,
            rules: take(ebpf, map_names::POLICY)?,
            revision: take(ebpf, map_names::POLICY_REVISION)?,
            state: PolicyState::default(),
            plan_addrs: BTreeMap::new(),
            host: BTreeSet::new(),
        };
        maps.state = maps.read()?;
        // What a previous agent wrote stays wanted until this one says otherwise: a restart
        // neither drops the node's addresses nor the pods' before the first plan and dump.
        for (ip, e) in &maps.state.addrs {
            if *e == HOST_ENTRY {
                maps.host.insert(*ip);
            } else {
                maps.plan_addrs.insert(*ip, *e);
            }
        }
        Ok(maps)
    }

    fn read(&self) -> Result<PolicyState, DatapathError> {
        let mut s = PolicyState::default();
        for item in &self.ipcache {
            let (k, v) = item.map_err(map_err(map_names::IPCACHE))?;
            if let Some(ip) = u8::try_from(k.family)
                .ok()
                .and_then(|f| words_ip(k.addr, f))
            {
                s.addrs.insert(
                    ip,
                    AddrEntry {
                        identity: v.identity,
                        endpoint: v.endpoint,
                        flags: v.flags,
                    },
                );
            }
        }
        for item in &self.cidrs {
            let (k, v) = item.map_err(map_err(map_names::POLICY_CIDRS))?;
            let (len, data) = lpm_key_parts(&k);
            let len = u8::try_from(len.saturating_sub(MASQ_CIDR_PREFIX_BITS)).unwrap_or(0);
            if let Some(ip) = u8::try_from(data.family)
                .ok()
                .and_then(|f| words_ip(data.addr, f))
                && let Ok(net) = IpNet::new(ip, len)
            {
                s.cidrs.insert(net, v);
            }
        }
        for item in &self.rules {
            let (k, v) = item.map_err(map_err(map_names::POLICY))?;
            let (prefix, d) = lpm_key_parts(&k);
            s.rules.insert(
                RuleKey {
                    prefix,
                    endpoint: d.endpoint,
                    identity: d.identity,
                    direction: d.direction,
                    proto: d.proto,
                    port: u16::from_be(d.dport),
                },
                v.policy,
            );
        }
        Ok(s)
    }

    /// Makes the maps hold `plan` (see the module docs for the order).
    pub fn apply(&mut self, plan: &PolicyPlan) -> Result<PolicyOps, DatapathError> {
        let mut ops = PolicyOps::default();
        for (k, slot) in &plan.rules {
            if self.state.rules.get(k) != Some(slot) {
                let v = PolicyValue {
                    policy: *slot,
                    _pad: 0,
                };
                self.rules
                    .insert(&rule_key(k), v, 0)
                    .map_err(map_err(map_names::POLICY))?;
                self.state.rules.insert(*k, *slot);
                ops.upserts += 1;
            }
        }
        for (net, id) in &plan.cidrs {
            if self.state.cidrs.get(net) != Some(id) {
                self.cidrs
                    .insert(&super::masq::key(net), *id, 0)
                    .map_err(map_err(map_names::POLICY_CIDRS))?;
                self.state.cidrs.insert(*net, *id);
                ops.upserts += 1;
            }
        }
        self.plan_addrs.clone_from(&plan.addrs);
        self.sync_addrs(&mut ops)?;
        let gone: Vec<IpNet> = self
            .state
            .cidrs
            .keys()
            .filter(|n| !plan.cidrs.contains_key(n))
            .copied()
            .collect();
        for net in gone {
            ignore_missing(self.cidrs.remove(&super::masq::key(&net)))
                .map_err(map_err(map_names::POLICY_CIDRS))?;
            self.state.cidrs.remove(&net);
            ops.deletes += 1;
        }
        let gone: Vec<RuleKey> = self
            .state
            .rules
            .keys()
            .filter(|k| !plan.rules.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            ignore_missing(self.rules.remove(&rule_key(&k))).map_err(map_err(map_names::POLICY))?;
            self.state.rules.remove(&k);
            ops.deletes += 1;
        }
        self.bump(ops)?;
        Ok(ops)
    }

    /// After writes: established flows are evaluated against them once.
    fn bump(&mut self, ops: PolicyOps) -> Result<(), DatapathError> {
        if ops.upserts + ops.deletes == 0 {
            return Ok(());
        }
        let now = self.revision.get(&0, 0).unwrap_or(0);
        self.revision
            .set(0, now.wrapping_add(1), 0)
            .map_err(map_err(map_names::POLICY_REVISION))
    }

    /// Makes the node's own addresses `addrs` (see the module docs).
    pub fn set_host(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<PolicyOps, DatapathError> {
        let mut ops = PolicyOps::default();
        if *addrs != self.host {
            self.host.clone_from(addrs);
            self.sync_addrs(&mut ops)?;
            self.bump(ops)?;
        }
        Ok(ops)
    }

    /// The plan's addresses, and the node's where no pod holds them.
    fn wanted_addrs(&self) -> BTreeMap<IpAddr, AddrEntry> {
        let mut want = self.plan_addrs.clone();
        for ip in &self.host {
            want.entry(*ip).or_insert(HOST_ENTRY);
        }
        want
    }

    /// Writes what [`Self::wanted_addrs`] changed, then removes what it no longer holds.
    fn sync_addrs(&mut self, ops: &mut PolicyOps) -> Result<(), DatapathError> {
        let want = self.wanted_addrs();
        for (ip, e) in &want {
            if self.state.addrs.get(ip) != Some(e) {
                let v = IpInfo {
                    identity: e.identity,
                    endpoint: e.endpoint,
                    flags: e.flags,
                    _pad: 0,
                };
                self.ipcache
                    .insert(addr_key(*ip), v, 0)
                    .map_err(map_err(map_names::IPCACHE))?;
                self.state.addrs.insert(*ip, *e);
                ops.upserts += 1;
            }
        }
        let gone: Vec<IpAddr> = self
            .state
            .addrs
            .keys()
            .filter(|ip| !want.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            ignore_missing(self.ipcache.remove(&addr_key(ip)))
                .map_err(map_err(map_names::IPCACHE))?;
            self.state.addrs.remove(&ip);
            ops.deletes += 1;
        }
        Ok(())
    }
}
