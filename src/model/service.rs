//! Services and their endpoints, as ferrite sees them (no Kubernetes types).

use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;
use smol_str::SmolStr;

use super::IpFamily;

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceName {
    pub namespace: SmolStr,
    pub name: SmolStr,
}

impl ServiceName {
    pub fn new(namespace: impl Into<SmolStr>, name: impl Into<SmolStr>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            // A cluster-scoped object (e.g. a pool) keyed like a namespaced one.
            return f.write_str(&self.name);
        }
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Only in NetworkPolicy ports and named container ports: the load balancer does not serve
    /// SCTP (service ports of it are skipped, see [`SCTP_NOT_SERVED`]).
    Sctp,
}

impl Protocol {
    /// IANA protocol number, as the kernel reports it.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The name Kubernetes uses (`TCP`, `UDP`, `SCTP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TargetPort {
    Number(u16),
    Name(SmolStr),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// Empty when the service has a single unnamed port.
    pub name: SmolStr,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    /// `nodePort` (NodePort and LoadBalancer services).
    pub node_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum SessionAffinity {
    #[default]
    None,
    /// `ClientIP` affinity with its timeout in seconds (Kubernetes default 10800).
    ClientIp { timeout_seconds: u32 },
}

/// `spec.type` of a Service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ServiceType {
    /// Reachable on its cluster IPs only (the Kubernetes default).
    #[default]
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// `ClusterIP` plus a port on every node.
    NodePort,
    /// `NodePort` plus an external load-balancer IP.
    LoadBalancer,
    /// A DNS alias: never has cluster IPs, nothing to load-balance.
    ExternalName,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: ServiceName,
    #[expect(
        clippy::struct_field_names,
        reason = "`type` is a keyword; `service_type` is the name used everywhere"
    )]
    pub service_type: ServiceType,
    /// `clusterIPs` (or `clusterIP`), IPv4 and/or IPv6. Empty for headless services.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub session_affinity: SessionAffinity,
    /// `metadata.creationTimestamp` in Unix seconds (LB IPAM serves older requests first).
    pub created_unix: Option<i64>,
    /// `metadata.labels` (for pool selectors).
    pub labels: BTreeMap<SmolStr, SmolStr>,
    /// `metadata.annotations` (LB IPAM requests and sharing keys).
    pub annotations: BTreeMap<SmolStr, SmolStr>,
    /// `spec.loadBalancerIP` as written; LB IPAM validates it.
    pub load_balancer_ip: Option<SmolStr>,
    /// `spec.loadBalancerClass`; ferrite handles unset and `ferrite.dev/l2`.
    pub load_balancer_class: Option<SmolStr>,
    pub ip_family_policy: IpFamilyPolicy,
    /// `spec.ipFamilies`, in order (empty when unset).
    pub ip_families: Vec<IpFamily>,
    pub external_traffic_policy: TrafficPolicy,
    /// `status.loadBalancer.ingress[].ip`: addresses already given out, adopted by LB IPAM.
    pub status_ingress: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `spec.healthCheckNodePort` (ETP=Local LoadBalancer services).
    pub health_check_node_port: Option<u16>,
    /// `spec.loadBalancerSourceRanges`: (network address, prefix length).
    pub source_ranges: Vec<(IpAddr, u8)>,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// Set when the service's labels hand it to another proxy: ferrite then programs none of
    /// its frontends (as kube-proxy and Cilium skip it).
    pub not_proxied: Option<NotProxied>,
    /// Ports the service declares that ferrite does not serve (SCTP), for notes and logs.
    pub unserved_ports: Vec<UnservedPort>,
}

/// Why an SCTP port is not served (the Service's other ports are).
pub const SCTP_NOT_SERVED: &str = "ferrite's load balancer handles TCP and UDP only";

/// A declared port ferrite does not serve, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnservedPort {
    pub name: SmolStr,
    pub port: u16,
    /// The protocol as Kubernetes spells it (`SCTP`).
    pub protocol: SmolStr,
    pub reason: &'static str,
}

impl std::fmt::Display for UnservedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.name.is_empty() {
            write!(f, "{} ", self.name)?;
        }
        write!(
            f,
            "{}/{} not served: {}",
            self.port, self.protocol, self.reason
        )
    }
}

/// Why a service is left to another proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum NotProxied {
    /// `service.kubernetes.io/service-proxy-name` names a proxy (any value, even empty).
    OtherProxy(SmolStr),
    /// `service.kubernetes.io/headless` is set.
    HeadlessLabel,
}

impl Service {
    /// Whether ferrite load-balances this service at all.
    pub fn proxied(&self) -> bool {
        self.not_proxied.is_none()
    }

    /// One line per declared port that is not served (`ns/web: port sig 9999/SCTP not served:
    /// ...`), for the status and the log.
    pub fn unserved_notes(&self) -> impl Iterator<Item = String> + '_ {
        self.unserved_ports
            .iter()
            .map(|p| format!("Service {}: port {p}", self.name))
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[expect(clippy::enum_variant_names, reason = "Kubernetes' names")]
pub enum IpFamilyPolicy {
    #[default]
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// `spec.externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointPort {
    /// Matches the service port's name (empty for an unnamed port).
    pub name: SmolStr,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; Kubernetes treats an unset value as ready.
    pub ready: bool,
    /// `conditions.serving`; unset means the value of `ready`.
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<SmolStr>,
    /// `targetRef` when it is a Pod: its namespace/name (flows name a backend on another node
    /// by it; the kube source reads only this node's pods).
    pub pod: Option<ServiceName>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    /// The slice's own namespace/name.
    pub name: ServiceName,
    /// From the `kubernetes.io/service-name` label.
    pub service: ServiceName,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}
