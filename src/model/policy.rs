//! `networking.k8s.io/v1 NetworkPolicy`, as plain values for the policy compiler.

use ipnet::IpNet;
use smol_str::SmolStr;

use super::{LabelSelector, Protocol, ServiceName};

/// One NetworkPolicy. A pod selected by any policy with `ingress` (or `egress`) set is isolated in
/// that direction, and allowed what the union of the rules allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub name: ServiceName,
    /// `spec.podSelector`: the pods of the policy's namespace it applies to (empty = all).
    pub pod_selector: LabelSelector,
    /// `Some` when `policyTypes` includes `Ingress` (rules may be empty: deny all ingress).
    pub ingress: Option<Vec<PolicyRule>>,
    /// `Some` when `policyTypes` includes `Egress`.
    pub egress: Option<Vec<PolicyRule>>,
}

/// One ingress or egress rule: traffic from/to any of `peers` on any of `ports`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    /// Empty: every peer.
    pub peers: Vec<PolicyPeer>,
    /// Empty: every port.
    pub ports: Vec<PolicyPort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyPeer {
    /// `podSelector` and/or `namespaceSelector`. `None` namespace selector: the policy's own
    /// namespace; `None` pod selector: every pod of the selected namespaces.
    Pods {
        pod_selector: Option<LabelSelector>,
        namespace_selector: Option<LabelSelector>,
    },
    /// `ipBlock`: a CIDR minus exceptions.
    IpBlock { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyPortNumber {
    Number(u16),
    /// A named container port.
    Name(SmolStr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyPort {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PolicyPortNumber>,
    /// `endPort`: a range `port..=end_port` (numeric `port` only).
    pub end_port: Option<u16>,
}
