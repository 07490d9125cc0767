//! Which LoadBalancer/external addresses this node may announce, on which interface, and why
//! (or why not): L2AnnouncementPolicy selection (service, node, interface regexes), interface
//! state, the north-south datapath serving the interface (an address answered for where
//! nothing translates it would be a black hole), and for externalTrafficPolicy Local a ready
//! endpoint on this node. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use regex_lite::Regex;
use serde::Serialize;

use crate::model::{
    L2Policy, LabelSelector, Node, Service, ServiceName, ServiceType, Snapshot, TrafficPolicy,
};

/// An interface of this node: name and whether it is up (operstate up / carrier).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInterface {
    pub name: String,
    pub up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub addr: IpAddr,
    pub service: ServiceName,
    /// The interface this node would announce on (first matching, up).
    pub interface: Option<String>,
    pub eligible: bool,
    pub reason: String,
}

/// A policy's problem (bad regex), reported as a condition on the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyProblem {
    pub policy: String,
    pub message: String,
}

fn selects(
    sel: Option<&LabelSelector>,
    labels: &BTreeMap<smol_str::SmolStr, smol_str::SmolStr>,
) -> bool {
    sel.is_none_or(|s| s.matches(|k| labels.get(k).map(smol_str::SmolStr::as_str)))
}

/// Synthetic labels Cilium adds so selectors can pick services by namespace/name.
fn service_labels(svc: &Service) -> BTreeMap<smol_str::SmolStr, smol_str::SmolStr> {
    let mut l = svc.labels.clone();
    l.insert(
        "io.kubernetes.service.namespace".into(),
        svc.name.namespace.clone(),
    );
    l.insert("io.kubernetes.service.name".into(), svc.name.name.clone());
    l
}

/// Compiled interface regexes of every policy; bad ones are reported and the policy is skipped.
pub fn compile(
    policies: &BTreeMap<smol_str::SmolStr, L2Policy>,
) -> (Vec<(&L2Policy, Vec<Regex>)>, Vec<PolicyProblem>) {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for p in policies.values() {
        let mut res = Vec::new();
        let mut bad = None;
        for pat in &p.interfaces {
            // Cilium matches the regex anywhere unless anchored; same here.
            match Regex::new(pat) {
                Ok(r) => res.push(r),
                Err(e) => bad = Some(format!("interface regex {pat:?}: {e}")),
            }
        }
        match bad {
            Some(message) => problems.push(PolicyProblem {
                policy: p.name.to_string(),
                message,
            }),
            None => ok.push((p, res)),
        }
    }
    (ok, problems)
}

/// Every address a policy could announce, with this node's eligibility for it. `served` are
/// the interfaces the north-south datapath is attached to: only those may answer.
pub fn candidates(
    snapshot: &Snapshot,
    lb_ips: &BTreeMap<ServiceName, Vec<IpAddr>>,
    node_name: &str,
    interfaces: &[LocalInterface],
    served: &BTreeSet<String>,
) -> (Vec<Candidate>, Vec<PolicyProblem>) {
    let here = Here {
        node_name,
        snapshot,
        interfaces,
        served,
    };
    let (policies, problems) = compile(&snapshot.l2_policies);
    let empty = Node::default();
    let node = snapshot.nodes.get(node_name).unwrap_or(&empty);
    let mut out: BTreeMap<IpAddr, Candidate> = BTreeMap::new();
    for svc in snapshot.services.values() {
        let labels = service_labels(svc);
        let lb: &[IpAddr] = if svc.service_type == ServiceType::LoadBalancer {
            lb_ips
                .get(&svc.name)
                .map_or(&svc.status_ingress[..], Vec::as_slice)
        } else {
            &[]
        };
        for (policy, regexes) in &policies {
            if !selects(policy.service_selector.as_ref(), &labels) {
                continue;
            }
            let mut addrs: Vec<IpAddr> = Vec::new();
            if policy.load_balancer_ips {
                addrs.extend(lb);
            }
            if policy.external_ips {
                addrs.extend(&svc.external_ips);
            }
            for addr in addrs {
                if out.get(&addr).is_some_and(|c| c.eligible) {
                    continue;
                }
                out.insert(addr, judge(addr, svc, policy, regexes, node, &here));
            }
        }
    }
    (out.into_values().collect(), problems)
}

/// What [`judge`] needs to know about this node.
struct Here<'a> {
    node_name: &'a str,
    snapshot: &'a Snapshot,
    interfaces: &'a [LocalInterface],
    served: &'a BTreeSet<String>,
}

fn judge(
    addr: IpAddr,
    svc: &Service,
    policy: &L2Policy,
    regexes: &[Regex],
    node: &Node,
    here: &Here<'_>,
) -> Candidate {
    let Here {
        node_name,
        snapshot,
        interfaces,
        served,
    } = *here;
    let verdict = |eligible: bool, interface: Option<String>, reason: String| Candidate {
        addr,
        service: svc.name.clone(),
        interface,
        eligible,
        reason,
    };
    if !selects(policy.node_selector.as_ref(), &node.labels) {
        return verdict(
            false,
            None,
            format!("policy {} does not select this node", policy.name),
        );
    }
    let matching: Vec<&LocalInterface> = interfaces
        .iter()
        .filter(|i| regexes.is_empty() || regexes.iter().any(|r| r.is_match(&i.name)))
        .collect();
    let up: Vec<&&LocalInterface> = matching.iter().filter(|i| i.up).collect();
    let Some(iface) = up.iter().find(|i| served.contains(&i.name)) else {
        let why = if matching.is_empty() {
            "no interface matches".to_string()
        } else if up.is_empty() {
            "matching interfaces are down".to_string()
        } else {
            let names: Vec<&str> = up.iter().map(|i| i.name.as_str()).collect();
            format!(
                "no north-south datapath on {} (not served there, so not announced)",
                names.join(", ")
            )
        };
        return verdict(false, None, format!("policy {}: {why}", policy.name));
    };
    if svc.external_traffic_policy == TrafficPolicy::Local {
        let local = snapshot
            .endpoint_slices
            .values()
            .filter(|s| s.service == svc.name)
            .any(|s| {
                s.endpoints
                    .iter()
                    .any(|e| e.ready && e.node_name.as_deref() == Some(node_name))
            });
        if !local {
            return verdict(
                false,
                None,
                "externalTrafficPolicy Local and no ready endpoint here".into(),
            );
        }
    }
    verdict(
        true,
        Some(iface.name.clone()),
        format!("policy {} on {}", policy.name, iface.name),
    )
}

#[cfg(test)]
#[path = "eligibility_tests.rs"]
mod tests;
