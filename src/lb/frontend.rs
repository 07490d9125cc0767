//! Services + EndpointSlices → frontends (address, port, protocol) with their backends.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use smol_str::SmolStr;
use tracing::{debug, warn};

use crate::model::{
    EndpointSlice, Protocol, Service, ServiceName, ServicePort, SessionAffinity, Snapshot,
    TargetPort, TrafficPolicy,
};

/// One address:port/protocol a client can reach a service on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frontend {
    pub service: ServiceName,
    pub port_name: SmolStr,
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// Ready endpoints (or, when none is ready, serving+terminating ones), sorted and unique.
    pub backends: Vec<SocketAddr>,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: Option<u32>,
}

/// Every frontend of every service, in a deterministic order. When two services claim the same
/// address:port/protocol the first by namespace/name keeps it and the other is logged.
#[cfg(test)]
pub fn frontends(snapshot: &Snapshot) -> Vec<Frontend> {
    frontends_with(snapshot, &BTreeMap::new(), "")
}

/// Like [`frontends`], with extra addresses per service (allocated LoadBalancer IPs) served on
/// every port of the service like its cluster IPs, as seen from node `node` (whose endpoints are
/// the only ones of an `internalTrafficPolicy: Local` service's cluster IPs).
pub fn frontends_with(
    snapshot: &Snapshot,
    extra_ips: &BTreeMap<ServiceName, Vec<IpAddr>>,
    node: &str,
) -> Vec<Frontend> {
    FrontendCache::new(node).compute(snapshot, extra_ips)
}

/// Extra addresses per service (allocated LoadBalancer IPs).
type ExtraIps = BTreeMap<ServiceName, Vec<IpAddr>>;

/// [`frontends_with`] memoised per service: a service whose spec, `EndpointSlices` and extra
/// addresses equal those of the previous snapshot keeps its frontends, so an event costs one
/// comparison per service instead of rebuilding every backend set. Gives exactly what
/// [`frontends_with`] gives (`frontend_tests` compares both along random walks).
#[derive(Debug)]
pub struct FrontendCache {
    /// This node (for `internalTrafficPolicy: Local`).
    node: SmolStr,
    /// The previous call's inputs (the reconciler keeps that snapshot alive anyway).
    previous: Option<(Arc<Snapshot>, ExtraIps)>,
    /// Each service's frontends (before duplicates across services are dropped).
    by_service: HashMap<ServiceName, Memo>,
}

impl FrontendCache {
    /// An empty cache for the frontends as node `node` serves them.
    pub fn new(node: &str) -> Self {
        Self {
            node: SmolStr::new(node),
            previous: None,
            by_service: HashMap::new(),
        }
    }

    /// The frontends of `snapshot`, recomputing only services changed since the last call.
    pub fn update(
        &mut self,
        snapshot: &Arc<Snapshot>,
        extra_ips: &BTreeMap<ServiceName, Vec<IpAddr>>,
    ) -> Vec<Frontend> {
        let out = self.compute(snapshot, extra_ips);
        self.previous = Some((snapshot.clone(), extra_ips.clone()));
        out
    }

    fn compute(
        &mut self,
        snapshot: &Snapshot,
        extra_ips: &BTreeMap<ServiceName, Vec<IpAddr>>,
    ) -> Vec<Frontend> {
        let previous = self.previous.take();
        // The same snapshot again: only extra addresses can differ.
        let same_snapshot = previous
            .as_ref()
            .is_some_and(|(old, _)| std::ptr::eq(Arc::as_ptr(old), snapshot));
        let slices = slices_by_service(snapshot);
        let mut seen = HashSet::with_capacity(snapshot.services.len());
        let mut out = Vec::with_capacity(snapshot.services.len());
        for svc in snapshot.services.values() {
            let slices = slices.get(&svc.name).map_or(&[][..], Vec::as_slice);
            let extra = extra_ips.get(&svc.name).map_or(&[][..], Vec::as_slice);
            // Unchanged: the same spec, extra addresses and slices (as many, each equal to the
            // slice of that name before, which names the same service).
            let unchanged = |memo: &Memo| {
                let Some((old, old_extra)) = &previous else {
                    return false;
                };
                old_extra.get(&svc.name).map_or(&[][..], Vec::as_slice) == extra
                    && (same_snapshot
                        || (memo.slices == slices.len()
                            && old.services.get(&svc.name) == Some(svc)
                            && slices
                                .iter()
                                .all(|s| old.endpoint_slices.get(&s.name) == Some(*s))))
            };
            let frontends = match self.by_service.get_mut(&svc.name) {
                Some(memo) if unchanged(memo) => &memo.frontends,
                Some(memo) => {
                    *memo = Memo {
                        slices: slices.len(),
                        frontends: service_frontends(svc, extra, slices, &self.node),
                    };
                    &memo.frontends
                }
                None => {
                    let memo = Memo {
                        slices: slices.len(),
                        frontends: service_frontends(svc, extra, slices, &self.node),
                    };
                    &self
                        .by_service
                        .entry(svc.name.clone())
                        .or_insert(memo)
                        .frontends
                }
            };
            for fe in frontends {
                if seen.insert((fe.addr, fe.port, fe.protocol)) {
                    out.push(fe.clone());
                } else {
                    warn!(service = %svc.name, addr = %fe.addr, port = fe.port,
                          "frontend already used by another service; ignored");
                }
            }
        }
        if self.by_service.len() != snapshot.services.len() {
            self.by_service
                .retain(|name, _| snapshot.services.contains_key(name));
        }
        out
    }
}

/// One service's frontends, and how many slices they were computed from.
#[derive(Debug)]
struct Memo {
    slices: usize,
    frontends: Vec<Frontend>,
}

/// EndpointSlices grouped by the service they belong to.
pub(super) fn slices_by_service(
    snapshot: &Snapshot,
) -> BTreeMap<&ServiceName, Vec<&EndpointSlice>> {
    let mut by_service: BTreeMap<&ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in snapshot.endpoint_slices.values() {
        by_service.entry(&slice.service).or_default().push(slice);
    }
    by_service
}

/// One service's frontends on node `node`: its cluster IPs use only `node`'s endpoints when its
/// `internalTrafficPolicy` is `Local` (none there: no backend, so connections are refused, as
/// kube-proxy does); extra (LoadBalancer) addresses always use every endpoint.
fn service_frontends(
    svc: &Service,
    extra: &[IpAddr],
    slices: &[&EndpointSlice],
    node: &str,
) -> Vec<Frontend> {
    if let Some(reason) = &svc.not_proxied {
        debug!(service = %svc.name, ?reason, "left to another proxy by its labels; not served");
        return Vec::new();
    }
    let affinity_timeout = match svc.session_affinity {
        SessionAffinity::None => None,
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
    };
    let internal_only = (svc.internal_traffic_policy == TrafficPolicy::Local).then_some(node);
    let mut out = Vec::new();
    for port in &svc.ports {
        let cluster = svc.cluster_ips.iter().map(|ip| (*ip, internal_only));
        for (addr, only_node) in cluster.chain(extra.iter().map(|ip| (*ip, None))) {
            out.push(Frontend {
                service: svc.name.clone(),
                port_name: port.name.clone(),
                addr,
                port: port.port,
                protocol: port.protocol,
                backends: backends_for(port, addr.is_ipv4(), slices, only_node),
                affinity_timeout,
            });
        }
    }
    out
}

/// Endpoints of `slices` serving `port` in the frontend's family: the ready ones, or when none is
/// ready the serving-and-terminating ones (graceful termination, as kube-proxy and Cilium do).
/// With `only_node`, endpoints on other nodes are left out (a traffic policy `Local`).
pub(super) fn backends_for(
    port: &ServicePort,
    v4: bool,
    slices: &[&EndpointSlice],
    only_node: Option<&str>,
) -> Vec<SocketAddr> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let Some(target) = slice_port(port, slice) else {
            continue;
        };
        for ep in &slice.endpoints {
            if only_node.is_some_and(|n| ep.node_name.as_deref() != Some(n)) {
                continue;
            }
            let set = if ep.ready {
                &mut ready
            } else if ep.serving && ep.terminating {
                &mut terminating
            } else {
                continue;
            };
            for &ip in ep.addresses.iter().filter(|ip| ip.is_ipv4() == v4) {
                set.insert(SocketAddr::new(ip, target));
            }
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    chosen.into_iter().collect()
}

/// The slice's port number for a service port: matched by the service port's name (what the
/// EndpointSlice controller writes), else by a named targetPort.
fn slice_port(port: &ServicePort, slice: &EndpointSlice) -> Option<u16> {
    let by_name = |name: &str| {
        slice
            .ports
            .iter()
            .find(|p| p.name == name && p.protocol == port.protocol)
            .map(|p| p.port)
    };
    by_name(&port.name).or_else(|| match &port.target_port {
        TargetPort::Name(n) => by_name(n),
        TargetPort::Number(_) => None,
    })
}

#[cfg(test)]
#[path = "frontend_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "frontend_cache_tests.rs"]
mod cache_tests;
