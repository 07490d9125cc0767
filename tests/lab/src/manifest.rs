//! North-south services for the labs, written two ways: standard Kubernetes YAML (`v1
//! Service` with `NodePort`/`LoadBalancer` fields and `status.loadBalancer.ingress`, plus a
//! `discovery.k8s.io/v1 EndpointSlice` whose endpoints carry `nodeName`) for ferrite's `dir:`
//! source, and — in [`crate::kubeproxy`] — the iptables rules kube-proxy would write.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use crate::addr::Cidr;

/// The annotation choosing ferrite's backend selection (`random` or `maglev`).
pub const LB_ALGORITHM_ANNOTATION: &str = "ferrite.dev/lb-algorithm";

/// Transport of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `TCP` / `UDP`, as Kubernetes spells it.
    #[must_use]
    pub fn k8s(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }

    /// `tcp` / `udp`, as iptables spells it.
    #[must_use]
    pub fn lower(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: u16,
    pub node_port: Option<u16>,
}

impl SvcPort {
    #[must_use]
    pub fn new(name: &str, protocol: Protocol, port: u16, target_port: u16) -> Self {
        Self {
            name: name.to_owned(),
            protocol,
            port,
            target_port,
            node_port: None,
        }
    }

    #[must_use]
    pub fn node_port(mut self, node_port: u16) -> Self {
        self.node_port = Some(node_port);
        self
    }
}

/// One endpoint: a pod address on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcEndpoint {
    pub ip: IpAddr,
    pub node: String,
    pub ready: bool,
}

impl SvcEndpoint {
    #[must_use]
    pub fn new(ip: impl Into<IpAddr>, node: &str) -> Self {
        Self {
            ip: ip.into(),
            node: node.to_owned(),
            ready: true,
        }
    }
}

/// A `NodePort` or `LoadBalancer` service and its (single-family IPv4) endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsService {
    pub name: String,
    pub namespace: String,
    /// `NodePort` or `LoadBalancer`.
    pub service_type: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<SvcPort>,
    /// Written to `status.loadBalancer.ingress[].ip`.
    pub lb_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// `externalTrafficPolicy: Local` (else `Cluster`).
    pub local: bool,
    pub health_check_node_port: Option<u16>,
    pub source_ranges: Vec<Cidr>,
    /// `sessionAffinity: ClientIP` with this timeout.
    pub affinity_seconds: Option<u32>,
    /// Value of the `ferrite.dev/lb-algorithm` annotation.
    pub algorithm: Option<String>,
    pub endpoints: Vec<SvcEndpoint>,
}

impl NsService {
    /// A `LoadBalancer` service in namespace `test` whose status holds `lb_ip`, with ports
    /// `http` (TCP 80 → 8080, node port `node_port`) and `dns` (UDP 53 → 5353, node port
    /// `node_port - 27`, i.e. 30053 for 30080), `externalTrafficPolicy: Cluster`.
    #[must_use]
    pub fn load_balancer(name: &str, cluster_ip: Ipv4Addr, lb_ip: IpAddr, node_port: u16) -> Self {
        Self {
            name: name.to_owned(),
            namespace: "test".to_owned(),
            service_type: "LoadBalancer".to_owned(),
            cluster_ip,
            ports: vec![
                SvcPort::new("http", Protocol::Tcp, 80, 8080).node_port(node_port),
                SvcPort::new("dns", Protocol::Udp, 53, 5353).node_port(node_port - 27),
            ],
            lb_ips: vec![lb_ip],
            external_ips: Vec::new(),
            local: false,
            health_check_node_port: None,
            source_ranges: Vec::new(),
            affinity_seconds: None,
            algorithm: None,
            endpoints: Vec::new(),
        }
    }

    /// The same as a `NodePort` service (no LB IP).
    #[must_use]
    pub fn node_port(name: &str, cluster_ip: Ipv4Addr, node_port: u16) -> Self {
        let mut s = Self::load_balancer(name, cluster_ip, IpAddr::V4(cluster_ip), node_port);
        "NodePort".clone_into(&mut s.service_type);
        s.lb_ips.clear();
        s
    }

    /// The port called `name`.
    ///
    /// # Panics
    /// If there is none.
    #[must_use]
    pub fn port(&self, name: &str) -> &SvcPort {
        self.ports
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("service {} has no port {name}", self.name))
    }

    /// `Service` + `EndpointSlice` documents.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        let mut out = String::with_capacity(2048);
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\n",
            self.name, self.namespace
        );
        if let Some(algorithm) = &self.algorithm {
            let _ = write!(
                out,
                "  annotations:\n    {LB_ALGORITHM_ANNOTATION}: {algorithm}\n"
            );
        }
        let _ = write!(
            out,
            "spec:\n  type: {}\n  clusterIP: {ip}\n  clusterIPs: [\"{ip}\"]\n  ipFamilies: [IPv4]\n  selector:\n    app: {}\n",
            self.service_type,
            self.name,
            ip = self.cluster_ip
        );
        let _ = writeln!(
            out,
            "  externalTrafficPolicy: {}",
            if self.local { "Local" } else { "Cluster" }
        );
        if let Some(port) = self.health_check_node_port {
            let _ = writeln!(out, "  healthCheckNodePort: {port}");
        }
        if !self.source_ranges.is_empty() {
            let _ = writeln!(
                out,
                "  loadBalancerSourceRanges: [{}]",
                quoted(&self.source_ranges)
            );
        }
        if !self.external_ips.is_empty() {
            let _ = writeln!(out, "  externalIPs: [{}]", quoted(&self.external_ips));
        }
        if let Some(seconds) = self.affinity_seconds {
            let _ = write!(
                out,
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: {seconds}\n"
            );
        }
        out.push_str("  ports:\n");
        for p in &self.ports {
            let _ = write!(
                out,
                "  - name: {}\n    protocol: {}\n    port: {}\n    targetPort: {}\n",
                p.name,
                p.protocol.k8s(),
                p.port,
                p.target_port
            );
            if let Some(np) = p.node_port {
                let _ = writeln!(out, "    nodePort: {np}");
            }
        }
        if !self.lb_ips.is_empty() {
            out.push_str("status:\n  loadBalancer:\n    ingress:\n");
            for ip in &self.lb_ips {
                let _ = writeln!(out, "    - ip: {ip}");
            }
        }
        let _ = write!(
            out,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-lab\n  namespace: {}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n",
            self.namespace,
            name = self.name
        );
        for p in &self.ports {
            let _ = write!(
                out,
                "- name: {}\n  protocol: {}\n  port: {}\n",
                p.name,
                p.protocol.k8s(),
                p.target_port
            );
        }
        if self.endpoints.is_empty() {
            out.push_str("endpoints: []\n");
        } else {
            out.push_str("endpoints:\n");
            for ep in &self.endpoints {
                let _ = write!(
                    out,
                    "- addresses: [\"{}\"]\n  nodeName: {}\n  conditions:\n    ready: {}\n    serving: {}\n    terminating: false\n",
                    ep.ip, ep.node, ep.ready, ep.ready
                );
            }
        }
        out
    }
}

/// A `ferrite.dev/v1alpha1 L2AnnouncementPolicy` announcing the `LoadBalancer` and external
/// IPs of every service on interfaces matching `interfaces` (regexes), on every node.
#[must_use]
pub fn l2_policy_yaml(name: &str, interfaces: &[&str]) -> String {
    let list = interfaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "---\napiVersion: ferrite.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata:\n  name: {name}\nspec:\n  interfaces: [{list}]\n  loadBalancerIPs: true\n  externalIPs: true\n"
    )
}

/// A `ferrite.dev/v1alpha1 LoadBalancerIPPool` with one CIDR block, for every service.
#[must_use]
pub fn ip_pool_yaml(name: &str, cidr: &Cidr) -> String {
    format!(
        "---\napiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata:\n  name: {name}\nspec:\n  blocks:\n  - cidr: {cidr}\n"
    )
}

/// A `v1 Node` with labels and an `InternalIP`.
#[must_use]
pub fn node_yaml(name: &str, internal_ip: IpAddr, labels: &[(&str, &str)]) -> String {
    let mut out = format!("---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n");
    if !labels.is_empty() {
        out.push_str("  labels:\n");
        for (k, v) in labels {
            let _ = writeln!(out, "    {k}: \"{v}\"");
        }
    }
    let _ = write!(
        out,
        "status:\n  addresses:\n  - type: InternalIP\n    address: {internal_ip}\n  - type: Hostname\n    address: {name}\n"
    );
    out
}

/// A `v1 Node` with an `InternalIP` and `spec.podCIDRs` (the first also as `spec.podCIDR`), as
/// the k3s controller manager assigns them.
#[must_use]
pub fn node_with_pod_cidrs_yaml(name: &str, internal_ip: IpAddr, pod_cidrs: &[Cidr]) -> String {
    let mut out = node_yaml(name, internal_ip, &[]);
    if let Some(first) = pod_cidrs.first() {
        let _ = write!(
            out,
            "spec:\n  podCIDR: {first}\n  podCIDRs: [{}]\n",
            quoted(pod_cidrs)
        );
    }
    out
}

fn quoted<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_carries_every_north_south_field() {
        let mut s = NsService::load_balancer(
            "web",
            "10.96.0.10".parse().unwrap(),
            "172.30.0.10".parse().unwrap(),
            30080,
        );
        s.local = true;
        s.health_check_node_port = Some(32100);
        s.source_ranges = vec!["192.168.50.3/32".parse().unwrap()];
        s.affinity_seconds = Some(300);
        s.algorithm = Some("maglev".into());
        s.external_ips = vec!["172.30.9.9".parse().unwrap()];
        s.endpoints = vec![
            SvcEndpoint::new("10.244.1.2".parse::<Ipv4Addr>().unwrap(), "node1"),
            SvcEndpoint {
                ready: false,
                ..SvcEndpoint::new("10.244.2.2".parse::<Ipv4Addr>().unwrap(), "node2")
            },
        ];
        let y = s.to_yaml();
        for needle in [
            "  type: LoadBalancer\n",
            "    ferrite.dev/lb-algorithm: maglev\n",
            "  externalTrafficPolicy: Local\n",
            "  healthCheckNodePort: 32100\n",
            "  loadBalancerSourceRanges: [\"192.168.50.3/32\"]\n",
            "  externalIPs: [\"172.30.9.9\"]\n",
            "      timeoutSeconds: 300\n",
            "    port: 80\n    targetPort: 8080\n    nodePort: 30080\n",
            "    protocol: UDP\n    port: 53\n    targetPort: 5353\n    nodePort: 30053\n",
            "status:\n  loadBalancer:\n    ingress:\n    - ip: 172.30.0.10\n",
            "    kubernetes.io/service-name: web\n",
            "- addresses: [\"10.244.1.2\"]\n  nodeName: node1\n  conditions:\n    ready: true\n",
            "  nodeName: node2\n  conditions:\n    ready: false\n",
        ] {
            assert!(y.contains(needle), "{needle:?} missing from\n{y}");
        }
        assert_eq!(s.port("dns").node_port, Some(30053));

        let p = l2_policy_yaml("lan", &["^eth[0-9]+"]);
        assert!(p.contains("kind: L2AnnouncementPolicy\n"), "{p}");
        assert!(p.contains("  interfaces: [\"^eth[0-9]+\"]\n"), "{p}");
        let pool = ip_pool_yaml("lan", &"192.168.50.208/28".parse().unwrap());
        assert!(pool.contains("  - cidr: 192.168.50.208/28\n"), "{pool}");
        let n = node_yaml("node1", "192.168.50.1".parse().unwrap(), &[("zone", "a")]);
        assert!(n.contains("    zone: \"a\"\n"), "{n}");
        assert!(
            n.contains("  - type: InternalIP\n    address: 192.168.50.1\n"),
            "{n}"
        );

        let np = NsService::node_port("np", "10.96.0.11".parse().unwrap(), 31080);
        let y = np.to_yaml();
        assert!(y.contains("  type: NodePort\n"), "{y}");
        assert!(!y.contains("status:"), "{y}");
        assert!(y.contains("  externalTrafficPolicy: Cluster\n"), "{y}");
        assert!(y.ends_with("endpoints: []\n"), "{y}");
    }
}
