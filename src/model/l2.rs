//! `L2AnnouncementPolicy` (Cilium's `CiliumL2AnnouncementPolicy`): which services' addresses are
//! answered for with ARP/NDP, from which nodes and interfaces.

use serde::Serialize;
use smol_str::SmolStr;

use super::LabelSelector;

/// One L2 announcement policy (cluster-scoped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct L2Policy {
    pub name: SmolStr,
    /// `serviceSelector`; `None` selects every service.
    pub service_selector: Option<LabelSelector>,
    /// `nodeSelector`; `None` selects every node.
    pub node_selector: Option<LabelSelector>,
    /// `interfaces`: regular expressions of interface names; empty means every interface.
    pub interfaces: Vec<SmolStr>,
    /// `externalIPs`: announce the services' `spec.externalIPs`.
    pub external_ips: bool,
    /// `loadBalancerIPs`: announce the services' `status.loadBalancer.ingress` addresses.
    pub load_balancer_ips: bool,
}
