//! Namespaces and this node's pods: what NetworkPolicy selectors are evaluated against.

use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;
use smol_str::SmolStr;

use super::ServiceName;

/// A `v1 Namespace`: its name and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub name: SmolStr,
    pub labels: BTreeMap<SmolStr, SmolStr>,
}

/// The phase of a pod (`status.phase`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// A named container port (`spec.containers[].ports[]` with a `name`): what NetworkPolicy's
/// named ports resolve to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamedPort {
    pub name: SmolStr,
    pub protocol: super::Protocol,
    pub port: u16,
}

/// A `v1 Pod` of any node (NetworkPolicy needs every pod's address and labels).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pod {
    pub name: ServiceName,
    pub labels: BTreeMap<SmolStr, SmolStr>,
    pub named_ports: Vec<NamedPort>,
    pub node_name: Option<SmolStr>,
    /// `status.podIPs` (or `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: the pod uses the node's addresses.
    pub host_network: bool,
    pub phase: PodPhase,
}
