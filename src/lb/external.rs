//! North-south frontends: LoadBalancer IPs, externalIPs and NodePorts of every service, with the
//! backends this node may use (all ready endpoints, or only local ones for
//! externalTrafficPolicy Local).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use serde::Serialize;
use smol_str::SmolStr;
use tracing::warn;

use super::frontend::{backends_for, slices_by_service};
use crate::model::{
    Protocol, Service, ServiceName, ServiceType, SessionAffinity, Snapshot, TrafficPolicy,
};

/// Annotation choosing the backend selection of external traffic: `maglev` (default) or `random`.
pub const LB_ALGORITHM_ANNOTATION: &str = "ferrite.dev/lb-algorithm";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ExtKind {
    LoadBalancer,
    ExternalIp,
    NodePort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent per-frontend switches the datapath reads as flags"
)]
pub struct ExtFrontend {
    pub service: ServiceName,
    pub port_name: SmolStr,
    pub kind: ExtKind,
    /// `None` for a NodePort: any address of the receiving device, in `family_v4`'s family.
    pub addr: Option<IpAddr>,
    pub family_v4: bool,
    pub port: u16,
    pub protocol: Protocol,
    pub backends: Vec<SocketAddr>,
    pub local_only: bool,
    pub client_affinity: bool,
    pub random: bool,
    pub source_ranges: Vec<(IpAddr, u8)>,
}

/// What this node needs to know to compute its external frontends.
#[derive(Clone, Debug)]
pub struct NodeView<'a> {
    pub node_name: &'a str,
    pub nodeport_range: RangeInclusive<u16>,
}

/// The LB addresses of a service: what LB IPAM allocated, else what its status already says.
fn lb_addresses<'a>(
    svc: &'a Service,
    allocated: &'a BTreeMap<ServiceName, Vec<IpAddr>>,
) -> &'a [IpAddr] {
    allocated
        .get(&svc.name)
        .map_or(&svc.status_ingress[..], Vec::as_slice)
}

pub fn external_frontends(
    snapshot: &Snapshot,
    allocated: &BTreeMap<ServiceName, Vec<IpAddr>>,
    node: &NodeView<'_>,
) -> Vec<ExtFrontend> {
    let slices = slices_by_service(snapshot);
    let mut out = Vec::new();
    for svc in snapshot.services.values() {
        if svc.service_type == ServiceType::ExternalName || !svc.proxied() {
            continue;
        }
        let local_only = svc.external_traffic_policy == TrafficPolicy::Local;
        let svc_slices = slices.get(&svc.name).map_or(&[][..], Vec::as_slice);
        let random = svc
            .annotations
            .get(LB_ALGORITHM_ANNOTATION)
            .is_some_and(|v| v == "random");
        let client_affinity = matches!(svc.session_affinity, SessionAffinity::ClientIp { .. });
        let lb_ips: &[IpAddr] = if svc.service_type == ServiceType::LoadBalancer {
            lb_addresses(svc, allocated)
        } else {
            &[]
        };
        let families: Vec<bool> = {
            let mut f: Vec<bool> = svc.cluster_ips.iter().map(IpAddr::is_ipv4).collect();
            if f.is_empty() {
                f.push(true);
            }
            f.dedup();
            f
        };
        for port in &svc.ports {
            let only = local_only.then_some(node.node_name);
            let mut add = |kind, addr: Option<IpAddr>, v4: bool, port_no: u16| {
                out.push(ExtFrontend {
                    service: svc.name.clone(),
                    port_name: port.name.clone(),
                    kind,
                    addr,
                    family_v4: v4,
                    port: port_no,
                    protocol: port.protocol,
                    backends: backends_for(port, v4, svc_slices, only),
                    local_only,
                    client_affinity,
                    random,
                    source_ranges: svc
                        .source_ranges
                        .iter()
                        .filter(|(a, _)| a.is_ipv4() == v4)
                        .copied()
                        .collect(),
                });
            };
            for &ip in lb_ips {
                add(ExtKind::LoadBalancer, Some(ip), ip.is_ipv4(), port.port);
            }
            for &ip in &svc.external_ips {
                add(ExtKind::ExternalIp, Some(ip), ip.is_ipv4(), port.port);
            }
            let wants_nodeport = matches!(
                svc.service_type,
                ServiceType::NodePort | ServiceType::LoadBalancer
            );
            if let (true, Some(np)) = (wants_nodeport, port.node_port) {
                if node.nodeport_range.contains(&np) {
                    for &v4 in &families {
                        add(ExtKind::NodePort, None, v4, np);
                    }
                } else {
                    warn!(service = %svc.name, node_port = np, "nodePort outside --nodeport-range; ignored");
                }
            }
        }
    }
    dedup(out)
}

/// One frontend per address/port/protocol: the first (by service name) wins, as for ClusterIPs.
fn dedup(all: Vec<ExtFrontend>) -> Vec<ExtFrontend> {
    let mut seen = std::collections::BTreeSet::new();
    all.into_iter()
        .filter(|f| {
            let fresh = seen.insert((f.addr, f.family_v4, f.port, f.protocol));
            if !fresh {
                warn!(service = %f.service, port = f.port, "external frontend already taken; ignored");
            }
            fresh
        })
        .collect()
}

#[cfg(test)]
#[path = "external_tests.rs"]
mod tests;
