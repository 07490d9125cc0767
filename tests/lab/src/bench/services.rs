//! The benchmark's service set, written two ways: Kubernetes YAML for ferrite's `dir:` source
//! (`v1 Service` + `discovery.k8s.io/v1 EndpointSlice`), and the nat table kube-proxy's
//! iptables mode would generate for the same services.

use std::fmt::Write;
use std::net::Ipv4Addr;

use ferrite_lab::Cidr;

/// Service `ClusterIPs` come from here, starting at `.10` (`.1` is the API server's).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// kube-proxy's `--cluster-cidr`: traffic from outside it is masqueraded.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
pub const NAMESPACE: &str = "default";
const PORT_NAME: &str = "http";

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

/// A kube-proxy style chain name: `PREFIX` + 16 base32 characters of a hash of `key`.
/// (kube-proxy hashes with SHA-256; the shape and length are what matter for the kernel.)
fn chain_name(prefix: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let bits =
        (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x8422_2325_cbf2_9ce4));
    let mut name = String::from(prefix);
    for i in 0..16 {
        let index = usize::try_from((bits >> (i * 5)) & 31).expect("5 bits");
        name.push(char::from(ALPHABET[index]));
    }
    name
}

/// kube-proxy's probability for endpoint `i` of `n`: `1/(n-i)` with 10 decimals.
fn probability(i: usize, n: usize) -> String {
    #[expect(clippy::cast_precision_loss, reason = "endpoint counts are tiny")]
    let p = 1.0 / (n - i) as f64;
    format!("{p:.10}")
}

/// The nat table, in `iptables-restore` format, that kube-proxy (iptables mode) writes for
/// `services`: `KUBE-SERVICES` with one rule per `ClusterIP` in order (the last service is the
/// worst case for a linear walk), `KUBE-SVC-*` with masquerade marking and random-probability
/// jumps, `KUBE-SEP-*` with hairpin marking and DNAT, and the postrouting masquerade.
#[must_use]
pub fn nat_table(services: &[Service]) -> String {
    let chains: Vec<(String, Vec<String>)> = services
        .iter()
        .map(|s| {
            let port_name = format!("{NAMESPACE}/{}:{PORT_NAME}", s.name);
            let svc = chain_name("KUBE-SVC-", &format!("{port_name}tcp"));
            let seps = s
                .endpoints
                .iter()
                .map(|ep| {
                    chain_name(
                        "KUBE-SEP-",
                        &format!("{port_name}tcp{ep}:{}", s.target_port),
                    )
                })
                .collect();
            (svc, seps)
        })
        .collect();

    let mut out = String::with_capacity(services.len() * 1500);
    out.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    out.push_str(":KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    for (svc, seps) in &chains {
        let _ = writeln!(out, ":{svc} - [0:0]");
        for sep in seps {
            let _ = writeln!(out, ":{sep} - [0:0]");
        }
    }
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
    for (s, (svc, _)) in services.iter().zip(&chains) {
        let _ = writeln!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"{NAMESPACE}/{}:{PORT_NAME} cluster IP\" -m tcp -p tcp -d {}/32 --dport {} -j {svc}",
            s.name, s.cluster_ip, s.port
        );
    }
    for (s, (svc, seps)) in services.iter().zip(&chains) {
        let port_name = format!("{NAMESPACE}/{}:{PORT_NAME}", s.name);
        let _ = writeln!(
            out,
            "-A {svc} -m comment --comment \"{port_name} cluster IP\" -m tcp -p tcp -d {}/32 --dport {} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
            s.cluster_ip, s.port
        );
        let n = seps.len();
        for (i, (ep, sep)) in s.endpoints.iter().zip(seps).enumerate() {
            let comment = format!(
                "-m comment --comment \"{port_name} -> {ep}:{}\"",
                s.target_port
            );
            if i + 1 < n {
                let _ = writeln!(
                    out,
                    "-A {svc} {comment} -m statistic --mode random --probability {} -j {sep}",
                    probability(i, n)
                );
            } else {
                let _ = writeln!(out, "-A {svc} {comment} -j {sep}");
            }
        }
        for (ep, sep) in s.endpoints.iter().zip(seps) {
            let _ = writeln!(
                out,
                "-A {sep} -m comment --comment {port_name} -s {ep}/32 -j KUBE-MARK-MASQ\n\
                 -A {sep} -m comment --comment {port_name} -m tcp -p tcp -j DNAT --to-destination {ep}:{}",
                s.target_port
            );
        }
    }
    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
         COMMIT\n",
    );
    out
}

/// Number of rules (`-A` lines) in an `iptables-restore` text.
#[must_use]
pub fn rule_count(table: &str) -> usize {
    table.lines().filter(|l| l.starts_with("-A ")).count()
}

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
        let chain = chain_name("KUBE-SVC-", "default/svc-00000:httptcp");
        assert_eq!(chain.len(), "KUBE-SVC-".len() + 16);
        assert_ne!(chain, chain_name("KUBE-SVC-", "default/svc-00001:httptcp"));
    }
}
