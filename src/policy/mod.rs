//! NetworkPolicy compiled to what the datapath looks up (see `ferrite_abi::policy`): the
//! identity of every pod address, the allow rules of this node's isolated pods, and the
//! `ipBlock` prefixes. Pure: [`compile`] turns the model into a [`PolicyPlan`]; applying it is
//! `datapath::policy`.
//!
//! Identities are hashes of the label sets (namespace labels, pod labels), so every node and
//! every restart computes the same numbers and an unchanged cluster rewrites nothing; a hash
//! collision between two sets is resolved by probing in sorted order.

mod ports;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrite_abi::{
    IDENTITY_ANY, IDENTITY_CIDR_BIT, IDENTITY_POD_MIN, POLICY_EGRESS, POLICY_INGRESS,
    POLICY_ISOLATED_EGRESS, POLICY_ISOLATED_INGRESS, POLICY_PREFIX_ANY_PORT,
    POLICY_PREFIX_ANY_PROTO, POLICY_STAT_SLOTS,
};
use ipnet::IpNet;
use serde::Serialize;
use smol_str::SmolStr;

use crate::model::{
    LabelSelector, NetworkPolicy, Pod, PodPhase, PolicyPeer, PolicyPort, PolicyPortNumber,
    PolicyRule, ServiceName, Snapshot,
};

/// Labels of a pod: its namespace's, then its own.
type LabelSet = (BTreeMap<SmolStr, SmolStr>, BTreeMap<SmolStr, SmolStr>);

/// One address's entry (`fe_ipcache_v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AddrEntry {
    pub identity: u32,
    /// This node's endpoint number (0: another node's pod).
    pub endpoint: u32,
    /// `POLICY_ISOLATED_*`.
    pub flags: u32,
}

/// One allow rule (`fe_policy_v1`): the key's fields and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleKey {
    pub prefix: u32,
    pub endpoint: u32,
    pub identity: u32,
    /// `POLICY_INGRESS` / `POLICY_EGRESS`.
    pub direction: u8,
    pub proto: u8,
    /// Host byte order (the first port of the prefix block).
    pub port: u16,
}

/// What `ferrite policy` shows for one local pod.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct EndpointReport {
    pub pod: String,
    pub endpoint: u32,
    pub identity: u32,
    pub addresses: Vec<IpAddr>,
    pub ingress_isolated: bool,
    pub egress_isolated: bool,
    /// Policies selecting the pod, `namespace/name`.
    pub policies: Vec<String>,
    /// One line per allow rule: direction, peers, ports.
    pub rules: Vec<String>,
}

/// Everything the datapath holds for a snapshot on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyPlan {
    pub addrs: BTreeMap<IpAddr, AddrEntry>,
    /// `ipBlock` prefixes (and exceptions) → their identity.
    pub cidrs: BTreeMap<IpNet, u32>,
    /// Allow rules → the (1-based) slot of the first policy allowing it.
    pub rules: BTreeMap<RuleKey, u32>,
    /// Policy slot → `namespace/name` (slot 0 is "denied").
    pub slots: Vec<String>,
    pub endpoints: Vec<EndpointReport>,
}

fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Numbers for `items` (sorted, distinct) from their hashes, in `[min, max]`, collisions probed.
fn numbers<T: Ord + Clone>(
    items: impl IntoIterator<Item = (T, String)>,
    min: u32,
    max: u32,
) -> BTreeMap<T, u32> {
    let span = max - min + 1;
    let mut used = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (item, text) in items {
        let mut n = min + fnv(&text) % span;
        while !used.insert(n) {
            n = if n == max { min } else { n + 1 };
        }
        out.insert(item, n);
    }
    out
}

fn canonical(labels: &LabelSet) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for (k, v) in &labels.0 {
        let _ = write!(s, "ns:{k}={v};");
    }
    for (k, v) in &labels.1 {
        let _ = write!(s, "pod:{k}={v};");
    }
    s
}

/// A pod that holds its addresses as a pod: not hostNetwork, not finished.
fn has_pod_addresses(pod: &Pod) -> bool {
    !pod.host_network
        && !pod.ips.is_empty()
        && !matches!(pod.phase, PodPhase::Succeeded | PodPhase::Failed)
}

struct Ctx<'a> {
    snapshot: &'a Snapshot,
    labels: BTreeMap<&'a ServiceName, LabelSet>,
    identities: BTreeMap<LabelSet, u32>,
    cidr_ids: BTreeMap<IpNet, u32>,
}

impl Ctx<'_> {
    fn ns_labels(&self, ns: &str) -> BTreeMap<SmolStr, SmolStr> {
        let mut labels = self
            .snapshot
            .namespaces
            .get(ns)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        // Kubernetes sets it on every namespace; a source that lacks it still matches it.
        labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| SmolStr::new(ns));
        labels
    }

    fn identity(&self, pod: &ServiceName) -> u32 {
        self.identities[&self.labels[pod]]
    }

    /// The pods (with addresses) a peer selects, for a policy of namespace `ns`.
    fn peer_pods(
        &self,
        ns: &str,
        pod_selector: Option<&LabelSelector>,
        namespace_selector: Option<&LabelSelector>,
    ) -> Vec<&ServiceName> {
        self.labels
            .iter()
            .filter(|(name, (ns_labels, pod_labels))| {
                let ns_ok = match namespace_selector {
                    None => name.namespace == ns,
                    Some(sel) => sel.matches(|k| ns_labels.get(k).map(SmolStr::as_str)),
                };
                ns_ok
                    && pod_selector
                        .is_none_or(|sel| sel.matches(|k| pod_labels.get(k).map(SmolStr::as_str)))
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// The identities of the `ipBlock` prefixes whose addresses `cidr` minus `except` holds.
    fn block_ids(&self, cidr: &IpNet, except: &[IpNet]) -> Vec<u32> {
        self.cidr_ids
            .iter()
            .filter(|(p, _)| cidr.contains(*p) && !except.iter().any(|e| e.contains(*p)))
            .map(|(_, id)| *id)
            .collect()
    }
}

/// Compiles every policy for the pods of `node` (see the module docs).
#[must_use]
pub fn compile(snapshot: &Snapshot, node: &str) -> PolicyPlan {
    let mut ctx = Ctx {
        snapshot,
        labels: BTreeMap::new(),
        identities: BTreeMap::new(),
        cidr_ids: BTreeMap::new(),
    };
    for (name, pod) in &snapshot.pods {
        if has_pod_addresses(pod) {
            let set = (ctx.ns_labels(&name.namespace), pod.labels.clone());
            ctx.labels.insert(name, set);
        }
    }
    let sets: BTreeSet<&LabelSet> = ctx.labels.values().collect();
    ctx.identities = numbers(
        sets.into_iter().map(|s| (s.clone(), canonical(s))),
        IDENTITY_POD_MIN,
        IDENTITY_CIDR_BIT - 1,
    );
    let mut prefixes = BTreeSet::new();
    for policy in snapshot.network_policies.values() {
        for rule in policy.ingress.iter().chain(policy.egress.iter()).flatten() {
            for peer in &rule.peers {
                if let PolicyPeer::IpBlock { cidr, except } = peer {
                    prefixes.insert(cidr.trunc());
                    prefixes.extend(except.iter().map(IpNet::trunc));
                }
            }
        }
    }
    ctx.cidr_ids = numbers(
        prefixes.into_iter().map(|p| (p, p.to_string())),
        IDENTITY_CIDR_BIT,
        u32::MAX,
    );
    let mut plan = PolicyPlan {
        cidrs: ctx.cidr_ids.clone(),
        slots: std::iter::once("(denied)".to_owned())
            .chain(snapshot.network_policies.keys().map(ToString::to_string))
            .take(POLICY_STAT_SLOTS as usize / 2)
            .collect(),
        ..PolicyPlan::default()
    };
    let local: Vec<&ServiceName> = ctx
        .labels
        .keys()
        .copied()
        .filter(|n| snapshot.pods[*n].node_name.as_deref() == Some(node))
        .collect();
    let endpoints = numbers(
        local.iter().map(|n| (*n, n.to_string())),
        1,
        IDENTITY_CIDR_BIT - 1,
    );
    for (name, pod) in &snapshot.pods {
        if !ctx.labels.contains_key(name) {
            continue;
        }
        let identity = ctx.identity(name);
        let endpoint = endpoints.get(name).copied().unwrap_or(0);
        let mut flags = 0;
        if endpoint != 0 {
            let report = endpoint_rules(&ctx, &mut plan, name, pod, endpoint, &mut flags);
            plan.endpoints.push(EndpointReport {
                pod: name.to_string(),
                endpoint,
                identity,
                addresses: pod.ips.clone(),
                ingress_isolated: flags & POLICY_ISOLATED_INGRESS != 0,
                egress_isolated: flags & POLICY_ISOLATED_EGRESS != 0,
                ..report
            });
        }
        for ip in &pod.ips {
            plan.addrs.insert(
                *ip,
                AddrEntry {
                    identity,
                    endpoint,
                    flags,
                },
            );
        }
    }
    plan
}

/// The rules of local pod `name` (endpoint `endpoint`) into `plan`; its isolation into `flags`.
fn endpoint_rules(
    ctx: &Ctx<'_>,
    plan: &mut PolicyPlan,
    name: &ServiceName,
    pod: &Pod,
    endpoint: u32,
    flags: &mut u32,
) -> EndpointReport {
    let mut report = EndpointReport::default();
    for (slot, (pname, policy)) in ctx.snapshot.network_policies.iter().enumerate() {
        if pname.namespace != name.namespace
            || !policy
                .pod_selector
                .matches(|k| pod.labels.get(k).map(SmolStr::as_str))
        {
            continue;
        }
        report.policies.push(pname.to_string());
        let slot = u32::try_from(slot + 1)
            .unwrap_or(u32::MAX)
            .min(POLICY_STAT_SLOTS / 2 - 1);
        for (direction, rules, flag) in [
            (POLICY_INGRESS, &policy.ingress, POLICY_ISOLATED_INGRESS),
            (POLICY_EGRESS, &policy.egress, POLICY_ISOLATED_EGRESS),
        ] {
            let Some(rules) = rules else { continue };
            *flags |= flag;
            for rule in rules {
                let line = rule_entries(ctx, plan, policy, rule, pod, endpoint, direction, slot);
                report.rules.push(line);
            }
        }
    }
    report
}

/// The entries of one rule; returns its description for `ferrite policy`.
#[expect(
    clippy::too_many_arguments,
    reason = "one rule's whole context, used once"
)]
fn rule_entries(
    ctx: &Ctx<'_>,
    plan: &mut PolicyPlan,
    policy: &NetworkPolicy,
    rule: &PolicyRule,
    pod: &Pod,
    endpoint: u32,
    direction: u8,
    slot: u32,
) -> String {
    let (peers, peer_text) = rule_peers(ctx, policy, rule);
    let port_text = ports::describe(&rule.ports);
    let (named, numbered): (Vec<PolicyPort>, Vec<PolicyPort>) = rule
        .ports
        .iter()
        .cloned()
        .partition(|p| matches!(p.port, Some(PolicyPortNumber::Name(_))));
    let mut add = |identity: u32, blocks: BTreeSet<ports::Block>| {
        for (proto, block) in blocks {
            let (prefix, port) = match (proto, block) {
                (None, _) => (POLICY_PREFIX_ANY_PROTO, 0),
                (Some(_), None) => (POLICY_PREFIX_ANY_PORT, 0),
                (Some(_), Some((port, bits))) => (POLICY_PREFIX_ANY_PORT + bits, port),
            };
            let key = RuleKey {
                prefix,
                endpoint,
                identity,
                direction,
                proto: proto.unwrap_or(0),
                port,
            };
            plan.rules.entry(key).or_insert(slot);
        }
    };
    for (identity, peer_pods) in &peers {
        if direction == POLICY_INGRESS {
            // Named ports resolve on the destination: this pod.
            add(*identity, ports::blocks(&rule.ports, &[pod]));
            continue;
        }
        if rule.ports.is_empty() || !numbered.is_empty() {
            add(*identity, ports::blocks(&numbered, &[]));
        }
        // Egress: a named port resolves on each destination pod, so it is allowed towards that
        // pod's identity only (pods sharing an identity share their named ports' numbers).
        if !named.is_empty() {
            for p in peer_pods {
                if ctx.labels.contains_key(&p.name) {
                    add(ctx.identity(&p.name), ports::blocks(&named, &[p]));
                }
            }
        }
    }
    let dir = if direction == POLICY_INGRESS {
        "ingress from"
    } else {
        "egress to"
    };
    format!(
        "{dir} {} on {} ({})",
        peer_text.join(" | "),
        if port_text.is_empty() {
            "every port".to_owned()
        } else {
            port_text.join(",")
        },
        policy.name
    )
}

/// A rule's peers as (identity, the pods it stands for — where named ports resolve on
/// egress), and their description.
fn rule_peers<'a>(
    ctx: &Ctx<'a>,
    policy: &NetworkPolicy,
    rule: &PolicyRule,
) -> (Vec<(u32, Vec<&'a Pod>)>, Vec<String>) {
    let ns = policy.name.namespace.as_str();
    // Peers: (identity, the pods it stands for — where named ports resolve on egress).
    let mut peers: Vec<(u32, Vec<&Pod>)> = Vec::new();
    let mut peer_text = Vec::new();
    if rule.peers.is_empty() {
        peers.push((IDENTITY_ANY, ctx.snapshot.pods.values().collect()));
        peer_text.push("any".to_owned());
    }
    for peer in &rule.peers {
        match peer {
            PolicyPeer::Pods {
                pod_selector,
                namespace_selector,
            } => {
                let pods = ctx.peer_pods(ns, pod_selector.as_ref(), namespace_selector.as_ref());
                peer_text.push(format!("{} pods", pods.len()));
                let mut by_id: BTreeMap<u32, Vec<&Pod>> = BTreeMap::new();
                for p in pods {
                    by_id
                        .entry(ctx.identity(p))
                        .or_default()
                        .push(&ctx.snapshot.pods[p]);
                }
                peers.extend(by_id);
            }
            PolicyPeer::IpBlock { cidr, except } => {
                peer_text.push(if except.is_empty() {
                    cidr.to_string()
                } else {
                    format!(
                        "{cidr} except {}",
                        except
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                });
                let inside: Vec<&Pod> = ctx
                    .snapshot
                    .pods
                    .values()
                    .filter(|p| {
                        p.ips
                            .iter()
                            .any(|ip| cidr.contains(ip) && !except.iter().any(|e| e.contains(ip)))
                    })
                    .collect();
                for id in ctx.block_ids(cidr, except) {
                    peers.push((id, inside.clone()));
                }
            }
        }
    }
    (peers, peer_text)
}
