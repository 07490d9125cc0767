//! ferrite's own model of desired state. Sources (`source::dir`, later `source::kube`) produce a
//! [`Snapshot`]; everything downstream (lb, lbipam, l2, policy) reads only these types.

mod cluster;
mod l2;
mod node;
mod policy;
mod pool;
mod service;

pub use cluster::{NamedPort, Namespace, Pod, PodPhase};
pub use l2::L2Policy;
pub use node::Node;
pub use policy::{NetworkPolicy, PolicyPeer, PolicyPort, PolicyPortNumber, PolicyRule};

pub use pool::{
    AllocatedIp, Condition, ConditionStatus, IpBlock, IpFamily, IpPool, IpamReason,
    LabelRequirement, LabelSelector, POOL_IPS_AVAILABLE, POOL_IPS_TOTAL, POOL_IPS_USED,
    PoolProblem, PoolStatus, SERVICE_NAME_LABEL, SERVICE_NAMESPACE_LABEL, ServiceIpamStatus,
};
pub use service::{
    Endpoint, EndpointPort, EndpointSlice, IpFamilyPolicy, NotProxied, Protocol, SCTP_NOT_SERVED,
    Service, ServiceName, ServicePort, ServiceType, SessionAffinity, TargetPort, TrafficPolicy,
    UnservedPort,
};

use std::collections::BTreeMap;

use smol_str::SmolStr;

/// Everything the agent should make true, as read from a source at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: BTreeMap<ServiceName, Service>,
    /// `EndpointSlices` by (namespace, slice name).
    pub endpoint_slices: BTreeMap<ServiceName, EndpointSlice>,
    /// `LoadBalancerIPPools` by name (cluster-scoped).
    pub pools: BTreeMap<SmolStr, IpPool>,
    /// `Nodes` by name.
    pub nodes: BTreeMap<SmolStr, Node>,
    /// `Namespaces` by name (their labels, for policy namespace selectors).
    pub namespaces: BTreeMap<SmolStr, Namespace>,
    /// Pods of every node by namespace/name.
    pub pods: BTreeMap<ServiceName, Pod>,
    /// `NetworkPolicies` by namespace/name.
    pub network_policies: BTreeMap<ServiceName, NetworkPolicy>,
    /// `L2AnnouncementPolicies` by name (cluster-scoped).
    pub l2_policies: BTreeMap<SmolStr, L2Policy>,
}
