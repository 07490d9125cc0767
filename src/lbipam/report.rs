//! What LB IPAM reports in object status with the Kubernetes source, as a pure plan: the status
//! every service and pool should carry ([`desired`]), what they carry as far as the writer knows
//! ([`Known`], kept fresh by [`refresh`]), and the steps that close the gap ([`plan`]).
//!
//! Reported:
//! - on every LoadBalancer service ferrite handles: `status.loadBalancer.ingress`
//!   (`[{ip, ipMode: VIP}]`, absent when nothing is allocated) and the
//!   `ferrite.dev/IPAMRequestSatisfied` condition (reason: [`crate::model::IpamReason`]);
//! - on every `LoadBalancerIPPool`: the count conditions (`ferrite.dev/IPsTotal`,
//!   `IPsAvailable`, `IPsUsed`; status `Unknown`, the count as message, as Cilium's
//!   `io.cilium/ips-*`), `ferrite.dev/PoolConflict` and `ferrite.dev/InvalidSpec`.
//!
//! Every write is a server-side apply of the complete status ferrite wants on the object under
//! one field manager, so a service ferrite stops handling gets an apply with no status: the
//! server removes the ingress and condition ferrite wrote, and leaves other managers' fields.
//!
//! A `lastTransitionTime` changes only when the condition's status or reason changes; every
//! condition carries the `observedGeneration` of the object it was written on. What the writer
//! knows of an object comes from reading it (once after gaining the Lease, or when the object
//! changed) and from the object the server returns after each write, so nothing is written twice
//! while the watch has not caught up.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde_json::{Map, Value, json};
use smol_str::SmolStr;

use super::Allocation;
use crate::model::{Condition, ServiceName, ServiceType, Snapshot};

/// An object LB IPAM reports on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Service(ServiceName),
    Pool(SmolStr),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Service(name) => write!(f, "Service {name}"),
            Self::Pool(name) => write!(f, "LoadBalancerIPPool {name}"),
        }
    }
}

/// What ferrite wants on one object (times and generations are added when planning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// `status.loadBalancer.ingress` addresses (services only; empty: none).
    pub ingress: Vec<IpAddr>,
    pub conditions: Vec<Condition>,
}

/// The status every handled service and every pool should carry.
pub fn desired(allocation: &Allocation, snapshot: &Snapshot) -> BTreeMap<Target, Desired> {
    let services = allocation
        .services
        .iter()
        .filter(|(name, _)| snapshot.services.contains_key(*name))
        .map(|(name, status)| {
            (
                Target::Service(name.clone()),
                Desired {
                    ingress: status.ingress(),
                    conditions: vec![status.condition()],
                },
            )
        });
    let pools = allocation
        .pools
        .iter()
        .filter(|(name, _)| snapshot.pools.contains_key(*name))
        .map(|(name, status)| {
            (
                Target::Pool(name.clone()),
                Desired {
                    ingress: Vec::new(),
                    conditions: status.conditions(),
                },
            )
        });
    services.chain(pools).collect()
}

/// Services ferrite does not handle (now) that may still carry what it wrote when it did:
/// LoadBalancer services of another class, and any service with ingress addresses.
pub fn cleanup_candidates(allocation: &Allocation, snapshot: &Snapshot) -> BTreeSet<Target> {
    snapshot
        .services
        .values()
        .filter(|s| !allocation.services.contains_key(&s.name))
        .filter(|s| s.service_type == ServiceType::LoadBalancer || !s.status_ingress.is_empty())
        .map(|s| Target::Service(s.name.clone()))
        .collect()
}

/// The part of an object's status that matters to the writer, and what of it `manager` owns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Carried {
    pub generation: Option<i64>,
    /// `status.loadBalancer.ingress` as the object carries it.
    pub ingress: Vec<Value>,
    /// `status.conditions` as the object carries them.
    pub conditions: Vec<Value>,
    /// The manager owns `status.loadBalancer.ingress`.
    pub owns_ingress: bool,
    /// The condition types the manager owns.
    pub owned_conditions: BTreeSet<String>,
}

impl Carried {
    /// Reads an object as the API server returns it (`managedFields` included).
    pub fn from_object(object: &Value, manager: &str) -> Self {
        let list = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut carried = Self {
            generation: object
                .pointer("/metadata/generation")
                .and_then(Value::as_i64),
            ingress: list("/status/loadBalancer/ingress"),
            conditions: list("/status/conditions"),
            ..Self::default()
        };
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|m| m["manager"] == manager && m["operation"] == "Apply");
        for entry in entries {
            let status = &entry["fieldsV1"]["f:status"];
            if status.pointer("/f:loadBalancer/f:ingress").is_some() {
                carried.owns_ingress = true;
            }
            let keys = status
                .get("f:conditions")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(Map::keys);
            for key in keys {
                let parsed = key
                    .strip_prefix("k:")
                    .and_then(|k| serde_json::from_str::<Value>(k).ok());
                if let Some(kind) = parsed.as_ref().and_then(|k| k["type"].as_str()) {
                    carried.owned_conditions.insert(kind.to_owned());
                }
            }
        }
        carried
    }

    /// Whether the manager owns any status field here.
    pub fn owns_any(&self) -> bool {
        self.owns_ingress || !self.owned_conditions.is_empty()
    }

    /// The ingress addresses carried.
    pub fn ingress_ips(&self) -> Vec<IpAddr> {
        self.ingress
            .iter()
            .filter_map(|i| i["ip"].as_str()?.parse().ok())
            .collect()
    }

    fn condition(&self, kind: &str) -> Option<&Value> {
        self.conditions.iter().find(|c| c["type"] == kind)
    }
}

/// What the writer knows of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    /// As read from the server (or returned by the last write) and unchanged since.
    Fresh(Carried),
    /// The object changed since it was read: read it again before deciding.
    Stale(Carried),
    /// The server said it does not exist (its deletion has not reached the snapshot yet).
    Gone,
}

/// One step of the writer.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Read the object (what it carries is unknown or outdated).
    Fetch(Target),
    /// Apply this status as the manager's complete status of the object (`None`: give up every
    /// status field the manager owns there).
    Write {
        target: Target,
        status: Option<Value>,
    },
}

/// `lastTransitionTime` is kept when status and reason are unchanged.
fn condition_json(condition: &Condition, carried: &Carried, now: &str) -> Value {
    let status = condition.status.as_str();
    let time = carried
        .condition(condition.condition_type)
        .filter(|c| c["status"] == status && c["reason"] == condition.reason.as_str())
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let mut c = json!({
        "type": condition.condition_type,
        "status": status,
        "reason": condition.reason.as_str(),
        "message": condition.message,
        "lastTransitionTime": time,
    });
    if let Some(generation) = carried.generation {
        c["observedGeneration"] = json!(generation);
    }
    c
}

fn ingress_json(ips: &[IpAddr]) -> Vec<Value> {
    ips.iter()
        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
        .collect()
}

/// The status to apply for `desired` on an object that carries `carried`.
pub fn status_json(desired: &Desired, carried: &Carried, now: &str) -> Value {
    let conditions: Vec<Value> = desired
        .conditions
        .iter()
        .map(|c| condition_json(c, carried, now))
        .collect();
    let mut status = json!({ "conditions": conditions });
    if !desired.ingress.is_empty() {
        status["loadBalancer"] = json!({ "ingress": ingress_json(&desired.ingress) });
    }
    status
}

/// Whether the object already carries `desired`, owned by the manager, and nothing else of it.
fn carries(desired: &Desired, carried: &Carried) -> bool {
    let ingress_ok = if desired.ingress.is_empty() {
        !carried.owns_ingress
    } else {
        carried.owns_ingress && carried.ingress == ingress_json(&desired.ingress)
    };
    // Built against `carried` itself: equal only when message, generation and time all match.
    let conditions_ok = desired.conditions.iter().all(|c| {
        carried.owned_conditions.contains(c.condition_type)
            && carried.condition(c.condition_type) == Some(&condition_json(c, carried, ""))
    }) && carried
        .owned_conditions
        .iter()
        .all(|kind| desired.conditions.iter().any(|c| c.condition_type == kind));
    ingress_ok && conditions_ok
}

/// The steps that make every object carry what is desired: reads of what is unknown, applies
/// of what differs, removals where ferrite owns fields it no longer wants. Deterministic (in
/// target order); `now` is the `lastTransitionTime` of conditions that change.
pub fn plan(
    desired: &BTreeMap<Target, Desired>,
    candidates: &BTreeSet<Target>,
    known: &BTreeMap<Target, Known>,
    now: &str,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let targets: BTreeSet<&Target> = desired
        .keys()
        .chain(candidates)
        .chain(known.keys())
        .collect();
    for target in targets {
        let step = match (desired.get(target), known.get(target)) {
            (_, Some(Known::Gone)) => None,
            (Some(want), Some(Known::Fresh(carried))) => {
                (!carries(want, carried)).then(|| Step::Write {
                    target: target.clone(),
                    status: Some(status_json(want, carried, now)),
                })
            }
            // Unknown (a candidate for cleanup, or desired), or outdated: read it first.
            (Some(_), None | Some(Known::Stale(_))) | (None, None) => {
                Some(Step::Fetch(target.clone()))
            }
            (None, Some(Known::Fresh(carried))) => carried.owns_any().then(|| Step::Write {
                target: target.clone(),
                status: None,
            }),
            (None, Some(Known::Stale(carried))) => {
                carried.owns_any().then(|| Step::Fetch(target.clone()))
            }
        };
        steps.extend(step);
    }
    steps
}

/// Brings `known` up to date with a new snapshot: objects gone from it are forgotten, objects
/// whose spec changed (a new generation, perhaps) are to be read again, and so are services whose
/// ingress changed to something else than what the writer knows (someone else wrote it).
pub fn refresh(known: &mut BTreeMap<Target, Known>, previous: &Snapshot, next: &Snapshot) {
    known.retain(|target, knowledge| {
        let changed = match target {
            Target::Pool(name) => match (previous.pools.get(name), next.pools.get(name)) {
                (_, None) => return false,
                (before, Some(after)) => before != Some(after),
            },
            Target::Service(name) => {
                let Some(after) = next.services.get(name) else {
                    return false;
                };
                match previous.services.get(name) {
                    None => true,
                    Some(before) if before == after => false,
                    Some(before) => {
                        let spec_changed = before.status_ingress == after.status_ingress || {
                            let mut same = before.clone();
                            same.status_ingress.clone_from(&after.status_ingress);
                            same != *after
                        };
                        spec_changed
                            || match knowledge {
                                Known::Fresh(c) | Known::Stale(c) => {
                                    c.ingress_ips() != after.status_ingress
                                }
                                Known::Gone => true,
                            }
                    }
                }
            }
        };
        if changed {
            match knowledge {
                Known::Fresh(c) => *knowledge = Known::Stale(std::mem::take(c)),
                Known::Stale(_) => {}
                Known::Gone => return false,
            }
        }
        true
    });
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
