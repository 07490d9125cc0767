//! The policy bench's objects, as one YAML document stream: the two real pods (a server on
//! node 2, a client on node 1), `identities` synthetic pods with distinct labels (each its own
//! identity), and `policies` NetworkPolicies — two that allow the bench traffic (the server's
//! ingress from the client, the client's egress to the server) and the rest allowing other
//! peers, ports and ranges, half on each side, so every lookup meets a full map. Two files:
//! the bulk, and the objects the enforcement timings change (the client pod and the two
//! allowing policies), so a change re-reads one small file as a watch event carries one object.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The server's namespace and the client's.
pub const SERVER_NS: &str = "bench-srv";
pub const CLIENT_NS: &str = "bench-cli";
/// Namespaces the synthetic pods are spread over.
const ID_NAMESPACES: usize = 10;
/// Ports the bench traffic uses (iperf3, connect rate).
pub const PORTS: [u16; 2] = [5201, 8080];

/// One row's cluster.
#[derive(Clone, Debug)]
pub struct Cluster<'a> {
    pub nodes: [&'a str; 2],
    /// (v4, v6) of the client (node 1) and the server (node 2).
    pub client: (IpAddr, Option<IpAddr>),
    pub server: (IpAddr, Option<IpAddr>),
    pub identities: usize,
    pub policies: usize,
    /// The client's `role` label (`client` is what the allow rule selects).
    pub client_role: &'a str,
    /// Leave the allow rule for the client out of the server's ingress.
    pub drop_allow: bool,
}

/// How many of `policies` select the server (ingress) and the client (egress).
#[must_use]
pub fn split(policies: usize) -> (usize, usize) {
    if policies == 0 {
        return (0, 0);
    }
    let noise = policies.saturating_sub(2);
    // Noise j is ingress when even: ⌈noise/2⌉ ingress, ⌊noise/2⌋ egress.
    (1 + noise.div_ceil(2), 1 + noise / 2)
}

fn namespace(out: &mut String, name: &str, label: &str) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    \
         kubernetes.io/metadata.name: {name}\n    ns: {label}\n"
    );
}

fn pod(
    out: &mut String,
    ns: &str,
    name: &str,
    labels: &str,
    node: &str,
    ips: (IpAddr, Option<IpAddr>),
) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n{labels}\
         spec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: bench\n    ports:\n    \
         - {{name: http, containerPort: 8080, protocol: TCP}}\n\
         status:\n  phase: Running\n  podIP: {}\n  podIPs:\n  - ip: {}\n",
        ips.0, ips.0
    );
    if let Some(v6) = ips.1 {
        let _ = writeln!(out, "  - ip: {v6}");
    }
}

/// Synthetic pod `i`'s address (outside every lab PodCIDR).
#[must_use]
pub fn synthetic_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    IpAddr::V4(std::net::Ipv4Addr::from(0x0afa_0000 + 1 + i))
}

fn policy(out: &mut String, ns: &str, name: &str, spec: &str) {
    let _ = write!(
        out,
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n{spec}"
    );
}

fn bench_ports() -> String {
    PORTS.iter().fold(String::from("    ports:\n"), |mut s, p| {
        let _ = writeln!(s, "    - {{protocol: TCP, port: {p}}}");
        s
    })
}

/// Noise policy `j`: ingress into the server (even `j`) or egress from the client (odd),
/// allowing synthetic pods, a port range or an `ipBlock` — never the bench traffic.
fn noise(out: &mut String, j: usize) {
    let peer_ns = format!("bench-id-{}", j % ID_NAMESPACES);
    let port = 9000 + (j % 500);
    let peers = match j % 3 {
        0 => format!(
            "    - namespaceSelector:\n        matchLabels: {{kubernetes.io/metadata.name: {peer_ns}}}\n      \
             podSelector:\n        matchLabels: {{pod: p{j}}}\n"
        ),
        1 => format!(
            "    - podSelector:\n        matchLabels: {{group: g{}}}\n",
            j % 50
        ),
        _ => format!(
            "    - ipBlock:\n        cidr: 10.250.{}.0/24\n        except: [10.250.{}.7/32]\n",
            j % 4,
            j % 4
        ),
    };
    let ports = if j % 4 == 1 {
        format!(
            "    ports:\n    - {{protocol: UDP, port: {port}, endPort: {}}}\n",
            port + 37
        )
    } else {
        format!("    ports:\n    - {{protocol: TCP, port: {port}}}\n")
    };
    if j.is_multiple_of(2) {
        let spec = format!(
            "  podSelector:\n    matchLabels: {{app: server}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n{peers}{ports}"
        );
        policy(out, SERVER_NS, &format!("noise-{j}"), &spec);
    } else {
        let spec = format!(
            "  podSelector:\n    matchLabels: {{app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n{peers}{ports}"
        );
        policy(out, CLIENT_NS, &format!("noise-{j}"), &spec);
    }
}

/// The two streams for `c`: the bulk, and the changing objects.
#[must_use]
pub fn render(c: &Cluster<'_>) -> [String; 2] {
    let mut out = String::new();
    let mut change = String::new();
    namespace(&mut out, SERVER_NS, "srv");
    namespace(&mut out, CLIENT_NS, "cli");
    for k in 0..ID_NAMESPACES.min(c.identities) {
        namespace(&mut out, &format!("bench-id-{k}"), "id");
    }
    pod(
        &mut out,
        SERVER_NS,
        "server",
        "    app: server\n",
        c.nodes[1],
        c.server,
    );
    let client_labels = format!("    app: client\n    role: {}\n", c.client_role);
    pod(
        &mut change,
        CLIENT_NS,
        "client",
        &client_labels,
        c.nodes[0],
        c.client,
    );
    for i in 0..c.identities {
        let labels = format!("    pod: p{i}\n    group: g{}\n", i % 50);
        let ns = format!("bench-id-{}", i % ID_NAMESPACES);
        pod(
            &mut out,
            &ns,
            &format!("p{i}"),
            &labels,
            "elsewhere",
            (synthetic_ip(i), None),
        );
    }
    if c.policies == 0 {
        return [out, change];
    }
    let ports = bench_ports();
    let ingress = if c.drop_allow {
        // Still isolated, the client no longer allowed.
        "  podSelector:\n    matchLabels: {app: server}\n  policyTypes: [Ingress]\n".to_owned()
    } else {
        format!(
            "  podSelector:\n    matchLabels: {{app: server}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    \
             - namespaceSelector:\n        matchLabels: {{ns: cli}}\n      podSelector:\n        \
             matchLabels: {{role: client}}\n{ports}"
        )
    };
    policy(&mut change, SERVER_NS, "allow-client", &ingress);
    let egress = format!(
        "  podSelector:\n    matchLabels: {{app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    \
         - namespaceSelector:\n        matchLabels: {{ns: srv}}\n      podSelector:\n        \
         matchLabels: {{app: server}}\n{ports}"
    );
    policy(&mut change, CLIENT_NS, "allow-to-server", &egress);
    for j in 0..c.policies.saturating_sub(2) {
        noise(&mut out, j);
    }
    [out, change]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(identities: usize, policies: usize) -> Cluster<'static> {
        Cluster {
            nodes: ["n1", "n2"],
            client: ("10.246.1.2".parse().unwrap(), None),
            server: (
                "10.246.2.2".parse().unwrap(),
                Some("fd00::2".parse().unwrap()),
            ),
            identities,
            policies,
            client_role: "client",
            drop_allow: false,
        }
    }

    fn both(c: &Cluster<'_>) -> String {
        render(c).concat()
    }

    fn count(text: &str, kind: &str) -> usize {
        text.matches(&format!("kind: {kind}\n")).count()
    }

    #[test]
    fn rows_hold_the_objects_they_name() {
        let none = both(&cluster(0, 0));
        assert_eq!(count(&none, "Pod"), 2);
        assert_eq!(count(&none, "NetworkPolicy"), 0);
        let big = both(&cluster(1000, 1000));
        assert_eq!(count(&big, "Pod"), 1002);
        assert_eq!(count(&big, "NetworkPolicy"), 1000);
        assert_eq!(count(&big, "Namespace"), 12);
        let ten = both(&cluster(1000, 10));
        let [_, change] = render(&cluster(1000, 10));
        assert_eq!(
            (count(&change, "Pod"), count(&change, "NetworkPolicy")),
            (1, 2)
        );
        assert_eq!(count(&ten, "NetworkPolicy"), 10);
        assert_eq!(split(10), (5, 5));
        assert_eq!(split(1000), (500, 500));
        assert_eq!(split(0), (0, 0));
        assert_eq!(
            ten.matches("namespace: bench-srv\nspec").count(),
            split(10).0
        );
        assert_eq!(
            ten.matches("namespace: bench-cli\nspec").count(),
            split(10).1
        );
    }

    #[test]
    fn the_allow_rule_can_be_dropped_and_the_client_relabelled() {
        let mut c = cluster(10, 10);
        c.drop_allow = true;
        c.client_role = "other";
        let text = both(&c);
        assert!(!text.contains("matchLabels: {role: client}"), "{text}");
        assert!(text.contains("role: other"));
        assert_eq!(count(&text, "NetworkPolicy"), 10);
    }

    #[test]
    fn synthetic_addresses_are_distinct_and_outside_the_lab() {
        assert_eq!(synthetic_ip(0).to_string(), "10.250.0.1");
        assert_eq!(synthetic_ip(999).to_string(), "10.250.3.232");
    }
}
