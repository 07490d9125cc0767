//! NetworkPolicy enforced by the datapath, cell for cell, in the upstream e2e model
//! (`test/e2e/network/netpol`): namespaces x, y, z, pods a, b, c in each spread over two nodes,
//! every pod serving TCP and UDP on 80 and 81, one ClusterIP service per pod and family; every
//! pod probes every service (a 9×9 matrix per port, protocol and family) through the socket LB,
//! so policy is evaluated after service translation. The agents are the shipped ones on a `dir:` folder;
//! pods are network namespaces made through the CNI plugin from the conflist they wrote.

mod common;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{FERRITE, lab_bin, require_root};
use ferrite_lab::podlab::{PodLab, PodLabConfig};
use ferrite_lab::{Child, report::ClientReport};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// A cell of the model: (namespace, pod).
type Peer = (&'static str, &'static str);

struct Model {
    lab: PodLab,
    /// (peer, node index, pod index on that node, its address, its service's ClusterIP).
    pods: Vec<(Peer, usize, usize, IpAddr, IpAddr)>,
    /// Each pod's IPv6 address (same order as `pods`).
    v6: Vec<IpAddr>,
    _servers: Vec<Child>,
}

/// Pod `i`'s IPv6 ClusterIP.
fn cluster_v6(i: usize) -> IpAddr {
    format!("fd00:96::{:x}", 0x10 + i).parse().expect("ip")
}

fn peers() -> Vec<Peer> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| (*ns, *p)))
        .collect()
}

fn namespace_yaml(ns: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
         kubernetes.io/metadata.name: {ns}\n    ns: {ns}\n{extra}"
    )
}

fn pod_yaml(peer: Peer, node: &str, ip: IpAddr, v6: IpAddr, extra_labels: &str) -> String {
    let (ns, pod) = peer;
    let mut y = format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  labels:\n    \
         pod: {pod}\n{extra_labels}spec:\n  nodeName: {node}\n  containers:\n"
    );
    for port in [80, 81] {
        for proto in ["TCP", "UDP"] {
            let _ = write!(
                y,
                "  - name: cont-{port}-{p}\n    image: agnhost\n    ports:\n    - name: serve-{port}-{p}\n      containerPort: {port}\n      protocol: {proto}\n",
                p = proto.to_lowercase()
            );
        }
    }
    let _ = write!(
        y,
        "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n  - ip: {ip}\n  - ip: {v6}\n"
    );
    y
}

/// Pod `peer`'s service of one family (`s-POD` for IPv4, `s-POD-v6`), its one endpoint the pod.
fn service_yaml(peer: Peer, cluster_ip: IpAddr, pod_ip: IpAddr, node: &str) -> String {
    let (ns, pod) = peer;
    let (name, family) = if cluster_ip.is_ipv4() {
        (format!("s-{pod}"), "IPv4")
    } else {
        (format!("s-{pod}-v6"), "IPv6")
    };
    let mut y = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         type: ClusterIP\n  clusterIP: {cluster_ip}\n  clusterIPs: [\"{cluster_ip}\"]\n  \
         ipFamilies: [{family}]\n  selector:\n    pod: {pod}\n  ports:\n"
    );
    let ports = [(80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP")];
    for (port, proto) in ports {
        let _ = write!(
            y,
            "  - name: serve-{port}-{p}\n    protocol: {proto}\n    port: {port}\n    targetPort: {port}\n",
            p = proto.to_lowercase()
        );
    }
    let _ = write!(
        y,
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
         namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: {family}\nports:\n"
    );
    for (port, proto) in ports {
        let _ = write!(
            y,
            "- name: serve-{port}-{p}\n  protocol: {proto}\n  port: {port}\n",
            p = proto.to_lowercase()
        );
    }
    let _ = write!(
        y,
        "endpoints:\n- addresses: [\"{pod_ip}\"]\n  nodeName: {node}\n  conditions:\n    ready: true\n"
    );
    y
}

impl Model {
    fn start() -> Self {
        require_root();
        let _ = ferrite_lab::cleanup_stale("np");
        let mut lab = PodLab::start(
            Path::new(FERRITE),
            PodLabConfig {
                prefix: "np".into(),
                lan_nodes: 2,
                far_nodes: 0,
                ..PodLabConfig::default()
            },
        )
        .unwrap_or_else(|e| panic!("starting the lab: {e}"));
        let mut pods = Vec::new();
        let mut servers = Vec::new();
        let mut v6 = Vec::new();
        for (i, peer) in peers().into_iter().enumerate() {
            let node = i % 2;
            let index = lab.nodes[node].add_pod("np").expect("CNI ADD");
            let cni = &lab.nodes[node].pods[index];
            let mut serve = cni
                .command(lab_bin().to_str().expect("utf-8 path"))
                .expect("serve");
            serve
                .args(["serve", "--name", &format!("{}/{}", peer.0, peer.1)])
                .args(["--tcp", "0.0.0.0:80", "--tcp", "0.0.0.0:81"])
                .args(["--udp", "0.0.0.0:80", "--udp", "0.0.0.0:81"])
                .args(["--tcp", "[::]:80", "--tcp", "[::]:81"])
                .args(["--udp", "[::]:80", "--udp", "[::]:81"])
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            servers.push(Child::spawn(&mut serve).expect("spawn serve"));
            let cluster_ip: IpAddr = format!("10.96.7.{}", 10 + i).parse().expect("ip");
            v6.push(cni.v6.expect("the conflist gives pods IPv6 too"));
            pods.push((peer, node, index, cni.v4, cluster_ip));
        }
        let model = Self {
            lab,
            pods,
            v6,
            _servers: servers,
        };
        model.write_namespaces(&[]);
        model.write_pods(&[]);
        let mut services = String::new();
        for (i, (peer, node, _, ip, cluster_ip)) in model.pods.iter().enumerate() {
            let node = &model.lab.nodes[*node].name;
            services.push_str(&service_yaml(*peer, *cluster_ip, *ip, node));
            services.push_str(&service_yaml(*peer, cluster_v6(i), model.v6[i], node));
        }
        model
            .lab
            .write_manifest("services.yaml", &services)
            .expect("write services");
        model
    }

    /// The namespaces, `extra` labels for some of them.
    fn write_namespaces(&self, extra: &[(&str, &str)]) {
        let mut y = String::new();
        for ns in NAMESPACES {
            let more =
                extra
                    .iter()
                    .filter(|(n, _)| *n == ns)
                    .fold(String::new(), |mut acc, (_, l)| {
                        let _ = writeln!(acc, "    {l}");
                        acc
                    });
            y.push_str(&namespace_yaml(ns, &more));
        }
        self.lab
            .write_manifest("namespaces.yaml", &y)
            .expect("write namespaces");
    }

    /// The pods, `extra` labels for some of them.
    fn write_pods(&self, extra: &[(Peer, &str)]) {
        let mut y = String::new();
        for (i, (peer, node, _, ip, _)) in self.pods.iter().enumerate() {
            let more =
                extra
                    .iter()
                    .filter(|(p, _)| p == peer)
                    .fold(String::new(), |mut acc, (_, l)| {
                        let _ = writeln!(acc, "    {l}");
                        acc
                    });
            y.push_str(&pod_yaml(
                *peer,
                &self.lab.nodes[*node].name,
                *ip,
                self.v6[i],
                &more,
            ));
        }
        self.lab
            .write_manifest("pods.yaml", &y)
            .expect("write pods");
    }

    fn ip(&self, peer: Peer) -> IpAddr {
        self.pods.iter().find(|p| p.0 == peer).expect("peer").3
    }

    /// Whether `from` reaches `to`'s IPv6 address on TCP 80 (directly: the services are IPv4).
    fn reaches_v6(&self, from: Peer, to: Peer) -> bool {
        let i = self.pods.iter().position(|p| p.0 == from).expect("from");
        let j = self.pods.iter().position(|p| p.0 == to).expect("to");
        let (_, node, index, ..) = self.pods[i];
        let netns = self.lab.nodes[node].pods[index].netns.ns();
        self.connects(node, netns, SocketAddr::new(self.v6[j], 80))
    }

    /// Whether a process of lab node `node` (its netns and cgroup, so the socket LB applies)
    /// opens a TCP connection to `target`.
    fn node_reaches(&self, node: usize, target: SocketAddr) -> bool {
        self.connects(node, self.lab.nodes[node].ns.ns(), target)
    }

    /// One TCP connect to `target` from `netns`, in node `node`'s cgroup.
    fn connects(&self, node: usize, netns: &ferrite_lab::Ns, target: SocketAddr) -> bool {
        let mut cmd = self.lab.nodes[node]
            .cgroup()
            .command(lab_bin(), Some(netns))
            .expect("client command");
        cmd.args(["client", "--json", "--proto", "tcp"])
            .args(["--target", &target.to_string()])
            .args(["--count", "1", "--timeout-ms", "700"]);
        ferrite_lab::cmd::run(&mut cmd)
            .ok()
            .and_then(|o| serde_json::from_slice::<ClientReport>(&o.stdout).ok())
            .is_some_and(|r| r.ok == 1)
    }

    /// The node's own connections reach its ingress-isolated pod `to` (its IPv4 and IPv6
    /// address and its ClusterIP: kubelet probes); the other node's do not.
    fn assert_only_own_node_reaches(&self, to: Peer) {
        let (_, node, _, ip, cluster_ip) = *self.pods.iter().find(|p| p.0 == to).expect("peer");
        let i = self.pods.iter().position(|p| p.0 == to).expect("peer");
        for target in [ip, self.v6[i], cluster_ip] {
            let target = SocketAddr::new(target, 80);
            assert!(
                (0..10).any(|_| self.node_reaches(node, target)),
                "node {node} must reach its own isolated pod {to:?} at {target}"
            );
        }
        let other = 1 - node;
        for target in [ip, self.v6[i]] {
            let target = SocketAddr::new(target, 80);
            assert!(
                (0..3).all(|_| !self.node_reaches(other, target)),
                "node {other} must not reach {to:?}'s {target} under default-deny ingress"
            );
        }
    }

    /// `kill -9` of node `node`'s agent and a restart onto its pins: it must find the policy
    /// maps (pod identities, rules, the node's addresses) right and write none of them.
    fn restart_rewrites_nothing(&mut self, node: usize) {
        let log = self.lab.nodes[node].log.clone();
        let before = std::fs::read_to_string(&log).map_or(0, |t| t.len());
        self.lab.nodes[node].kill_agent().expect("kill the agent");
        self.lab.start_agent(node).expect("restart the agent");
        // A few maintenance rounds (the node's addresses are synced once a second).
        std::thread::sleep(Duration::from_secs(3));
        let text = std::fs::read_to_string(&log).expect("agent log");
        let since = &text[before..];
        let writes: Vec<&str> = since
            .lines()
            .filter(|l| l.contains("NetworkPolicy maps") || l.contains("the node's addresses"))
            .collect();
        assert!(
            writes.is_empty(),
            "a restarted agent rewrote policy maps that were right:\n{}",
            writes.join("\n")
        );
    }

    /// A UDP socket in `from`'s pod (one tuple for as long as it lives: an established flow).
    fn udp_socket(&self, from: Peer) -> std::net::UdpSocket {
        let (_, node, index, ..) = *self.pods.iter().find(|p| p.0 == from).expect("peer");
        let sock = self.lab.nodes[node].pods[index]
            .netns
            .ns()
            .run(|| std::net::UdpSocket::bind("0.0.0.0:0"))
            .expect("enter the pod")
            .expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(400)))
            .expect("timeout");
        sock
    }

    /// Invalid policies (a bad CIDR, an unknown protocol) are reported in `ferrite status` on
    /// every node while the valid one stays enforced; then they are removed again.
    fn assert_invalid_policies_reported_and_the_rest_enforced(&self) {
        let bad = [
            (
                "bad-cidr.yaml",
                "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/33}\n",
            ),
            (
                "bad-proto.yaml",
                "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: ICMP, port: 80}\n",
            ),
        ];
        for (file, spec) in bad {
            let name = file.trim_end_matches(".yaml");
            self.lab
                .write_manifest(file, &policy("y", name, spec))
                .expect("write a bad policy");
        }
        for node in &self.lab.nodes {
            let mut errors = serde_json::Value::Null;
            let seen =
                ferrite_lab::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
                    errors = node.status().expect("ferrite status")["source_errors"].clone();
                    bad.iter()
                        .all(|(file, _)| errors.to_string().contains(file))
                });
            assert!(
                seen.is_ok(),
                "{}: both bad policies in source_errors: {errors}",
                node.name
            );
        }
        // Neither isolates y: everything but x's ingress stays as the valid policy says.
        self.expect(
            "default-deny ingress, invalid policies beside it",
            80,
            false,
            |_, to| to.0 != "x",
        );
        for (file, _) in bad {
            self.lab
                .write_manifest(file, "")
                .expect("remove a bad policy");
        }
    }

    /// The destination ports of the SCTP packets `from` sends (each port three times) that
    /// reach `to`'s pod.
    fn sctp_ports_arriving(&self, from: Peer, to: Peer, ports: &[u16]) -> Vec<u16> {
        use ferrite_lab::ipraw::{IpRaw, PROTO_SCTP, sctp_dport, sctp_packet};
        let netns = |p: Peer| {
            let (_, node, index, ..) = *self.pods.iter().find(|x| x.0 == p).expect("peer");
            self.lab.nodes[node].pods[index].netns.ns()
        };
        let open = |p: Peer| {
            netns(p)
                .run(|| IpRaw::open(PROTO_SCTP))
                .expect("enter the pod")
                .expect("raw SCTP socket (root)")
        };
        let (tx, rx) = (open(from), open(to));
        let IpAddr::V4(dst) = self.ip(to) else {
            panic!("IPv4 pod address");
        };
        for round in 0..3u16 {
            for &port in ports {
                tx.send_to(dst, &sctp_packet(40_000 + round, port))
                    .expect("send SCTP");
            }
        }
        let mut got: Vec<u16> = rx
            .drain(Duration::from_millis(700))
            .iter()
            .filter_map(|p| sctp_dport(p))
            .collect();
        got.sort_unstable();
        got.dedup();
        got
    }

    /// Whether a datagram from `from` to the closed `to` comes back as "connection refused"
    /// (the ICMP port-unreachable reached `from`'s socket), in three tries.
    fn udp_refused(&self, from: Peer, to: SocketAddr) -> bool {
        let sock = self.udp_socket(from);
        sock.connect(to).expect("connect UDP");
        let mut buf = [0u8; 64];
        (0..3).any(|_| {
            let _ = sock.send(b"x");
            matches!(sock.recv(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        })
    }

    fn set_policies(&self, yaml: &str) {
        self.lab
            .write_manifest("policies.yaml", yaml)
            .expect("write policies");
    }

    /// One probe of every (from, to) cell at once: a new connection (TCP) or datagram (UDP)
    /// from `from`'s pod to `to`'s service port.
    fn observe(&self, port: u16, udp: bool, v6: bool) -> Vec<Vec<bool>> {
        let mut children = Vec::new();
        for (_, node, index, _, _) in &self.pods {
            let n = &self.lab.nodes[*node];
            let netns = n.pods[*index].netns.ns();
            for (j, (_, _, _, _, v4)) in self.pods.iter().enumerate() {
                let cluster_ip = if v6 { &cluster_v6(j) } else { v4 };
                let mut cmd = n
                    .cgroup()
                    .command(lab_bin(), Some(netns))
                    .expect("client command");
                cmd.args(["client", "--json"])
                    .args(["--target", &SocketAddr::new(*cluster_ip, port).to_string()])
                    .args(["--proto", if udp { "udp" } else { "tcp" }])
                    .args(["--count", "1", "--timeout-ms", "700"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                children.push(cmd.spawn().expect("spawn client"));
            }
        }
        let n = self.pods.len();
        let mut out = vec![vec![false; n]; n];
        for (i, child) in children.into_iter().enumerate() {
            let output = child.wait_with_output().expect("client");
            let ok =
                serde_json::from_slice::<ClientReport>(&output.stdout).is_ok_and(|r| r.ok == 1);
            out[i / n][i % n] = ok;
        }
        out
    }

    fn render(&self, m: &[Vec<bool>]) -> String {
        let mut s = String::from("      ");
        for (peer, ..) in &self.pods {
            let _ = write!(s, "{}/{} ", peer.0, peer.1);
        }
        s.push('\n');
        for (i, (peer, ..)) in self.pods.iter().enumerate() {
            let _ = write!(s, "{}/{}   ", peer.0, peer.1);
            for cell in &m[i] {
                s.push_str(if *cell { " .  " } else { " X  " });
            }
            s.push('\n');
        }
        s
    }

    /// Probes until every cell of (port, protocol) is as `expect(from, to)` says (policy
    /// changes take a moment to arrive), or fails printing both matrices.
    fn expect(&self, case: &str, port: u16, udp: bool, expect: impl Fn(Peer, Peer) -> bool) {
        self.expect_family(case, port, udp, false, expect);
    }

    /// [`Self::expect`] through the pods' IPv6 services.
    fn expect_v6(&self, case: &str, port: u16, udp: bool, expect: impl Fn(Peer, Peer) -> bool) {
        self.expect_family(case, port, udp, true, expect);
    }

    fn expect_family(
        &self,
        case: &str,
        port: u16,
        udp: bool,
        v6: bool,
        expect: impl Fn(Peer, Peer) -> bool,
    ) {
        let want: Vec<Vec<bool>> = self
            .pods
            .iter()
            // A pod always reaches itself (upstream's `AllowLoopback`): that traffic never
            // leaves its network namespace.
            .map(|f| {
                self.pods
                    .iter()
                    .map(|t| f.0 == t.0 || expect(f.0, t.0))
                    .collect()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut got = self.observe(port, udp, v6);
        while got != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            got = self.observe(port, udp, v6);
        }
        assert!(
            got == want,
            "{case}: {}{} {port}: the matrix (row: from, column: to; . reaches, X does not)\n\
             expected:\n{}observed:\n{}node 1 log:\n{}\nnode 2 log:\n{}",
            if v6 { "IPv6 " } else { "" },
            if udp { "UDP" } else { "TCP" },
            self.render(&want),
            self.render(&got),
            self.lab.nodes[0].log_tail(20),
            self.lab.nodes[1].log_tail(20),
        );
    }
}

impl Model {
    /// `ferrite policy -o json` on node 1 shows its x pods isolated by `policy`, and
    /// `ferrite observe` shows the denied probes as policy drops.
    fn assert_reported(&self, policy: &str) {
        let node = &self.lab.nodes[0];
        let out = node.cli(&["policy", "-o", "json"]).expect("ferrite policy");
        let pods: serde_json::Value = serde_json::from_slice(&out.stdout).expect("policy JSON");
        let local: Vec<&serde_json::Value> = pods.as_array().expect("a list").iter().collect();
        let on_node = self.pods.iter().filter(|p| p.1 == 0).count();
        assert_eq!(local.len(), on_node, "one entry per local pod: {pods}");
        for p in &local {
            let in_x = p["pod"].as_str().is_some_and(|n| n.starts_with("x/"));
            assert_eq!(p["ingress_isolated"], in_x, "{p}");
            if in_x {
                assert_eq!(p["policies"][0], policy, "{p}");
            }
        }
        let out = node
            .cli(&[
                "observe",
                "--last",
                "1000",
                "--verdict",
                "dropped",
                "-o",
                "json",
            ])
            .expect("ferrite observe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .any(|l| l.contains("\"policy\"") && l.contains("policy-denied")),
            "no policy drop among the flows:\n{text}"
        );
    }
}

impl Model {
    /// `ferrite observe` on node 1 shows a connection a policy allowed into an x pod as a
    /// forwarded `policy` flow.
    fn assert_allowed_reported(&self) {
        let out = self.lab.nodes[0]
            .cli(&[
                "observe",
                "--last",
                "2000",
                "--verdict",
                "forwarded",
                "-o",
                "json",
            ])
            .expect("ferrite observe");
        let text = String::from_utf8_lossy(&out.stdout);
        let allowed = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|f| f["kind"] == "policy" && f["verdict"] == "FORWARDED");
        assert!(allowed, "no allowed policy flow among the flows:\n{text}");
    }
}

/// Whether a datagram from `sock` to `to` gets an answer (three tries).
fn udp_answered(sock: &std::net::UdpSocket, to: SocketAddr) -> bool {
    let mut buf = [0u8; 256];
    (0..3).any(|_| sock.send_to(b"x", to).is_ok() && sock.recv_from(&mut buf).is_ok())
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n{spec}"
    )
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one case after another, as upstream's list reads"
)]
fn network_policy_matrix_matches_the_upstream_truth_tables() {
    let mut m = Model::start();
    let all = |_: Peer, _: Peer| true;
    m.expect("no policy", 80, false, all);
    m.expect("no policy", 81, true, all);
    m.expect_v6("no policy", 80, false, all);
    m.expect_v6("no policy", 81, true, all);

    // Default deny ingress in x: nobody reaches x's pods; x's pods reach everyone else.
    m.set_policies(&policy(
        "x",
        "deny-ingress",
        "  podSelector: {}\n  policyTypes: [Ingress]\n",
    ));
    m.expect("default-deny ingress", 80, false, |_, to| to.0 != "x");
    m.expect("default-deny ingress", 80, true, |_, to| to.0 != "x");
    m.expect_v6("default-deny ingress", 80, false, |_, to| to.0 != "x");
    m.expect_v6("default-deny ingress", 81, true, |_, to| to.0 != "x");
    m.assert_reported("x/deny-ingress");
    m.assert_only_own_node_reaches(("x", "a"));
    m.assert_only_own_node_reaches(("x", "b"));
    m.assert_invalid_policies_reported_and_the_rest_enforced();
    // ICMP errors are not policed: x/a (ingress-isolated) learns that y/a's port is closed.
    let closed = SocketAddr::new(m.ip(("y", "a")), 9);
    assert!(
        m.udp_refused(("x", "a"), closed),
        "the port-unreachable for x/a's datagram must reach it"
    );
    // IPv6 too, on another node and on the same one.
    for (from, to, want) in [
        (("y", "a"), ("x", "a"), false),
        (("x", "c"), ("x", "a"), false),
        (("x", "a"), ("y", "a"), true),
        (("z", "b"), ("y", "c"), true),
    ] {
        // Allowed: reached once neighbour discovery is done; denied: never in three tries.
        let ok = if want {
            (0..10).any(|_| m.reaches_v6(from, to))
        } else {
            (0..3).all(|_| !m.reaches_v6(from, to))
        };
        assert!(
            ok,
            "IPv6 {from:?} → {to:?} should be {want} under default-deny ingress in x"
        );
    }

    // Allow from namespace y into x.
    m.set_policies(&policy(
        "x",
        "allow-y",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {ns: y}\n",
    ));
    m.expect("allow from namespace", 80, false, |f, t| {
        t.0 != "x" || f.0 == "y"
    });
    m.assert_allowed_reported();

    // namespaceSelector AND podSelector in one peer: only y/b into x/a.
    m.set_policies(&policy(
        "x",
        "and",
        "  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n  - from:\n    - namespaceSelector:\n        \
         matchLabels: {ns: y}\n      podSelector:\n        matchLabels: {pod: b}\n",
    ));
    m.expect("namespace AND pod selector", 80, false, |f, t| {
        t != ("x", "a") || f == ("y", "b")
    });
    // Two peers (OR): every pod of y, and b of x itself.
    m.set_policies(&policy(
        "x",
        "or",
        "  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n  - from:\n    - namespaceSelector:\n        \
         matchLabels: {ns: y}\n    - podSelector:\n        matchLabels: {pod: b}\n",
    ));
    m.expect("namespace OR pod selector", 80, false, |f, t| {
        t != ("x", "a") || f.0 == "y" || f == ("x", "b")
    });

    // matchExpressions NotIn: from every namespace but y.
    m.set_policies(&policy(
        "x",
        "notin",
        "  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n  - from:\n    - namespaceSelector:\n        \
         matchExpressions:\n        - {key: ns, operator: NotIn, values: [y]}\n",
    ));
    m.expect("matchExpressions NotIn", 80, false, |f, t| {
        t != ("x", "a") || f.0 != "y"
    });

    // Port 81 only, from namespace y; named port serve-80-udp from anyone (UDP 80).
    m.set_policies(&policy(
        "x",
        "port-81",
        "  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n  - from:\n    - namespaceSelector:\n        \
         matchLabels: {ns: y}\n    ports:\n    - {protocol: TCP, port: 81}\n  - ports:\n    - {protocol: UDP, port: serve-80-udp}\n",
    ));
    m.expect("port 81 from y", 81, false, |f, t| {
        t != ("x", "a") || f.0 == "y"
    });
    m.expect("port 81 from y", 80, false, |_, t| t != ("x", "a"));
    m.expect("named port", 80, true, all);
    m.expect("named port", 81, true, |_, t| t != ("x", "a"));

    // endPort range and protocol-only ports: TCP 80-81 from anyone; UDP nowhere.
    m.set_policies(&policy(
        "x",
        "range",
        "  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 80, endPort: 81}\n",
    ));
    m.expect("endPort", 81, false, all);
    m.expect("endPort", 81, true, |_, t| t != ("x", "a"));
    m.set_policies(&policy(
        "x",
        "tcp-only",
        "  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n  - ports:\n    - protocol: TCP\n",
    ));
    m.expect("protocol only", 80, false, all);
    m.expect("protocol only", 80, true, |_, t| t != ("x", "a"));

    // SCTP ports (this kernel has no SCTP: raw IP sockets carry the packets, the datapath
    // reads their ports): x/a admits SCTP 5000 only.
    m.set_policies(&policy(
        "x",
        "sctp-5000",
        "  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n  - ports:\n    - {protocol: SCTP, port: 5000}\n",
    ));
    m.expect("SCTP port only", 80, false, |_, t| t != ("x", "a"));
    assert_eq!(
        m.sctp_ports_arriving(("y", "a"), ("x", "a"), &[5000, 5001]),
        [5000],
        "SCTP into x/a: only the allowed port"
    );
    assert_eq!(
        m.sctp_ports_arriving(("x", "b"), ("x", "c"), &[5000, 5001]),
        [5000, 5001],
        "SCTP into x/c (not isolated): every port"
    );

    // Egress: x/a may send nowhere (its replies still leave: others reach it).
    m.set_policies(&policy(
        "x",
        "deny-egress",
        "  podSelector:\n    matchLabels: {pod: a}\n  policyTypes: [Egress]\n",
    ));
    m.expect("default-deny egress", 80, false, |f, _| f != ("x", "a"));
    m.expect_v6("default-deny egress", 80, true, |f, _| f != ("x", "a"));
    // Egress to port 81 only.
    m.set_policies(&policy(
        "x",
        "egress-81",
        "  podSelector:\n    matchLabels: {pod: a}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {protocol: TCP, port: 81}\n",
    ));
    m.expect("egress to a port", 81, false, all);
    m.expect("egress to a port", 80, false, |f, _| f != ("x", "a"));

    // ipBlock with except: into x/a from the pod network except x/b's address.
    let xb = m.ip(("x", "b"));
    m.set_policies(&policy(
        "x",
        "ipblock",
        &format!(
            "  podSelector:\n    matchLabels: {{pod: a}}\n  ingress:\n  - from:\n    - ipBlock:\n        \
             cidr: 10.246.0.0/16\n        except: [{xb}/32]\n"
        ),
    ));
    m.expect("ipBlock except", 80, false, |f, t| {
        t != ("x", "a") || f != ("x", "b")
    });
    // The block is IPv4: over IPv6 nobody else reaches x/a.
    m.expect_v6("ipBlock (IPv4 only)", 80, false, |_, t| t != ("x", "a"));

    // Two policies combine as a union; ingress and egress in one policy.
    m.set_policies(&format!(
        "{}{}",
        policy(
            "y",
            "from-x",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {ns: x}\n",
        ),
        policy(
            "y",
            "from-z-and-out-to-y",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - namespaceSelector:\n        \
             matchLabels: {ns: z}\n  egress:\n  - to:\n    - namespaceSelector:\n        matchLabels: {ns: y}\n",
        ),
    ));
    let combined = |f: Peer, t: Peer| {
        let into_y = t.0 != "y" || f.0 == "x" || f.0 == "z";
        let out_of_y = f.0 != "y" || t.0 == "y";
        // y → y: y's egress allows it, y's ingress does not (only x and z).
        into_y && out_of_y
    };
    m.expect("two policies, ingress and egress", 80, false, combined);
    m.restart_rewrites_nothing(0);
    m.expect("two policies, after an agent restart", 80, false, combined);

    // A namespace label change and a pod label change take effect.
    m.set_policies(&policy(
        "x",
        "from-team",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchLabels: {team: blue}\n      \
         podSelector:\n        matchLabels: {role: client}\n",
    ));
    m.expect("nobody labelled yet", 80, false, |_, t| t.0 != "x");
    m.write_namespaces(&[("z", "team: blue")]);
    m.write_pods(&[(("z", "c"), "role: client")]);
    m.expect("after label changes", 80, false, |f, t| {
        t.0 != "x" || f == ("z", "c")
    });
    m.write_pods(&[]);
    m.expect("after the pod label is gone", 80, false, |_, t| t.0 != "x");

    // Update allow-all → deny, then deletion.
    m.set_policies(&policy(
        "x",
        "allow-all",
        "  podSelector: {}\n  ingress:\n  - {}\n",
    ));
    m.expect("allow all", 80, false, all);
    // An established flow (one UDP tuple, answered under allow-all) is evaluated again when
    // the policy changes: cut by the deny, back after the deletion.
    let flow = m.udp_socket(("y", "a"));
    let xa = SocketAddr::new(m.ip(("x", "a")), 80);
    assert!(udp_answered(&flow, xa), "y/a → x/a UDP under allow-all");
    m.set_policies(&policy(
        "x",
        "allow-all",
        "  podSelector: {}\n  ingress: []\n",
    ));
    m.expect("updated to deny", 80, false, |_, t| t.0 != "x");
    assert!(
        !udp_answered(&flow, xa),
        "the established y/a → x/a flow must be cut by the deny"
    );
    m.set_policies("");
    m.expect("policy deleted", 80, false, all);
    assert!(
        udp_answered(&flow, xa),
        "the y/a → x/a flow passes again once the policy is gone"
    );
}
