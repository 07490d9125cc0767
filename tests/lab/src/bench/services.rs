//! The benchmark's service set, written two ways: Kubernetes YAML for ferrite's `dir:` source
//! (`v1 Service` + `discovery.k8s.io/v1 EndpointSlice`), and the nat table kube-proxy's
//! iptables mode would generate for the same services.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ferrite_lab::kubeproxy;
use ferrite_lab::{Cidr, NsService, Protocol, SvcEndpoint, SvcPort};

/// Service `ClusterIPs` come from here, starting at `.10` (`.1` is the API server's).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// kube-proxy's `--cluster-cidr`: traffic from outside it is masqueraded.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
pub const NAMESPACE: &str = "default";
const PORT_NAME: &str = "http";
/// The node kube-proxy runs on in the baseline (the client pod's; no endpoint is on it).
const KUBE_PROXY_NODE: &str = "client";

/// One `ClusterIP` service with one TCP port and its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<Ipv4Addr>,
    pub target_port: u16,
}

/// `count` services `svc-00000`… with `ClusterIPs` `10.96.0.10`… all backed by `endpoints`.
#[must_use]
pub fn generate(count: usize, endpoints: &[Ipv4Addr]) -> Vec<Service> {
    let cidr: Cidr = SERVICE_CIDR.parse().expect("valid constant");
    (0..count)
        .map(|i| {
            let ip = cidr
                .nth(10 + i as u128)
                .expect("service CIDR holds 65k services");
            let std::net::IpAddr::V4(cluster_ip) = ip else {
                unreachable!("IPv4 service CIDR")
            };
            Service {
                name: format!("svc-{i:05}"),
                cluster_ip,
                port: SERVICE_PORT,
                endpoints: endpoints.to_vec(),
                target_port: TARGET_PORT,
            }
        })
        .collect()
}

/// Multi-document YAML with a `Service` and an `EndpointSlice` per service.
#[must_use]
pub fn to_yaml(services: &[Service]) -> String {
    let mut out = String::with_capacity(services.len() * 900);
    for s in services {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
             spec:\n  type: ClusterIP\n  clusterIP: {ip}\n  clusterIPs:\n  - {ip}\n  ipFamilies:\n  - IPv4\n\
             \x20 selector:\n    app: {name}\n  ports:\n  - name: {PORT_NAME}\n    protocol: TCP\n    port: {port}\n    targetPort: {target}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-lab\n  namespace: {NAMESPACE}\n\
             \x20 labels:\n    kubernetes.io/service-name: {name}\n    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\n\
             addressType: IPv4\nports:\n- name: {PORT_NAME}\n  protocol: TCP\n  port: {target}\nendpoints:\n",
            name = s.name,
            ip = s.cluster_ip,
            port = s.port,
            target = s.target_port,
        );
        for ep in &s.endpoints {
            let _ = write!(
                out,
                "- addresses:\n  - {ep}\n  conditions:\n    ready: true\n    serving: true\n    terminating: false\n"
            );
        }
    }
    out
}

/// The services as [`ferrite_lab::kubeproxy`] sees them: `ClusterIP` only, one TCP port, ready
/// endpoints (none of them local to the node, which does not matter without external access).
fn as_kube_proxy_services(services: &[Service]) -> Vec<NsService> {
    services
        .iter()
        .map(|s| NsService {
            name: s.name.clone(),
            namespace: NAMESPACE.to_owned(),
            service_type: "ClusterIP".to_owned(),
            cluster_ip: s.cluster_ip,
            ports: vec![SvcPort::new(
                PORT_NAME,
                Protocol::Tcp,
                s.port,
                s.target_port,
            )],
            lb_ips: Vec::new(),
            external_ips: Vec::new(),
            local: false,
            health_check_node_port: None,
            source_ranges: Vec::new(),
            affinity_seconds: None,
            algorithm: None,
            endpoints: s
                .endpoints
                .iter()
                .map(|&ep| SvcEndpoint::new(ep, KUBE_PROXY_NODE))
                .collect(),
        })
        .collect()
}

/// The nat table, in `iptables-restore` format, that kube-proxy (iptables mode) writes for
/// `services` ([`kubeproxy::nat_rules`]): `KUBE-SERVICES` with one rule per `ClusterIP` in
/// order (the last service is the worst case for a linear walk), `KUBE-SVC-*` with masquerade
/// marking and random-probability jumps, `KUBE-SEP-*` with hairpin marking and DNAT, and the
/// postrouting masquerade.
#[must_use]
pub fn nat_table(services: &[Service]) -> String {
    let cluster_cidr: Cidr = CLUSTER_CIDR.parse().expect("valid constant");
    kubeproxy::nat_rules(
        &as_kube_proxy_services(services),
        KUBE_PROXY_NODE,
        cluster_cidr,
    )
}

pub use kubeproxy::rule_count;

#[cfg(test)]
mod tests {
    use super::*;

    fn eps() -> Vec<Ipv4Addr> {
        vec![
            "10.244.0.2".parse().unwrap(),
            "10.244.0.3".parse().unwrap(),
            "10.244.0.4".parse().unwrap(),
        ]
    }

    #[test]
    fn services_get_sequential_cluster_ips() {
        let s = generate(300, &eps());
        assert_eq!(s[0].name, "svc-00000");
        assert_eq!(s[0].cluster_ip.to_string(), "10.96.0.10");
        assert_eq!(s[299].cluster_ip.to_string(), "10.96.1.53");
        assert_eq!(
            generate(10_000, &eps())[9_999].cluster_ip.to_string(),
            "10.96.39.25"
        );
    }

    #[test]
    fn yaml_has_a_service_and_a_slice_per_service() {
        let yaml = to_yaml(&generate(2, &eps()));
        assert_eq!(yaml.matches("kind: Service\n").count(), 2);
        assert_eq!(yaml.matches("kind: EndpointSlice\n").count(), 2);
        assert_eq!(
            yaml.matches("kubernetes.io/service-name: svc-00001\n")
                .count(),
            1
        );
        assert_eq!(yaml.matches("ready: true").count(), 6);
        assert!(yaml.contains("  clusterIP: 10.96.0.11\n"));
        assert!(yaml.contains("    targetPort: 8080\n"));
        assert!(yaml.contains("  port: 8080\nendpoints:\n- addresses:\n  - 10.244.0.2\n"));
    }

    #[test]
    fn nat_table_is_shaped_like_kube_proxy() {
        let services = generate(3, &eps());
        let table = nat_table(&services);
        // 7 fixed + 1 nodeports + per service: 1 KUBE-SERVICES + 1 masq + 3 jumps + 3×2 SEP.
        assert_eq!(rule_count(&table), 8 + 3 * 11);
        assert_eq!(table.matches(" - [0:0]\n").count(), 4 + 3 * 4);
        assert!(table.contains("--probability 0.3333333333 -j KUBE-SEP-"));
        assert!(table.contains("--probability 0.5000000000 -j KUBE-SEP-"));
        assert!(table.contains("-j DNAT --to-destination 10.244.0.4:8080"));
        assert!(table.ends_with("-j KUBE-NODEPORTS\nCOMMIT\n"));
        // Services appear in KUBE-SERVICES in order, the last one last before the nodeports rule.
        let svc_rules: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES -m comment --comment \"default/"))
            .collect();
        assert!(svc_rules[2].contains("-d 10.96.0.12/32"));
        let chain = kubeproxy::chain_name("KUBE-SVC-", "default/svc-00000:httptcp");
        assert!(table.contains(&format!(
            "-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j {chain}\n"
        )));
        assert!(table.contains(&format!("-A {chain} ! -s {CLUSTER_CIDR} ")));
        assert!(!table.contains("*filter"));
    }
}
