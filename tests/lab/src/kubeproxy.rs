//! The rules kube-proxy's iptables mode writes on one node for [`NsService`]s, in
//! `iptables-restore` format: the nat table (`KUBE-SERVICES` → `KUBE-EXT-*` for LB IPs and
//! external IPs, `KUBE-NODEPORTS` → `KUBE-EXT-*`, `KUBE-SVC-*` / `KUBE-SVL-*` with
//! random-probability jumps and `recent` affinity, `KUBE-SEP-*` with DNAT, `KUBE-MARK-MASQ`
//! and the `KUBE-POSTROUTING` masquerade) and the filter table (`KUBE-FORWARD` conntrack
//! rules, `KUBE-PROXY-FIREWALL` with `KUBE-FW-*` for `loadBalancerSourceRanges`,
//! `KUBE-EXTERNAL-SERVICES` drops for `Local` services without local endpoints and rejects
//! for services without endpoints). It is the baseline the north-south benchmark and tests
//! compare ferrite with.

use std::fmt::Write;

use crate::addr::Cidr;
use crate::manifest::{NsService, SvcEndpoint, SvcPort};

/// A kube-proxy style chain name: `PREFIX` + 16 base32 characters of a hash of `key`
/// (kube-proxy uses SHA-256; the length and shape are what matter to the kernel).
#[must_use]
pub fn chain_name(prefix: &str, key: &str) -> String {
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

#[derive(Default)]
struct Tables {
    nat_chains: Vec<String>,
    nat: Vec<String>,
    filter: Vec<String>,
}

struct PortChains<'a> {
    svc: &'a NsService,
    port: &'a SvcPort,
    /// `namespace/name:port`.
    port_name: String,
    proto: &'static str,
}

impl PortChains<'_> {
    fn chain(&self, prefix: &str) -> String {
        chain_name(prefix, &format!("{}{}", self.port_name, self.proto))
    }

    fn sep(&self, ep: &SvcEndpoint) -> String {
        chain_name(
            "KUBE-SEP-",
            &format!(
                "{}{}{}:{}",
                self.port_name, self.proto, ep.ip, self.port.target_port
            ),
        )
    }

    fn match_dst(&self, ip: impl std::fmt::Display) -> String {
        format!(
            "-d {ip}/32 -p {p} -m {p} --dport {}",
            self.port.port,
            p = self.proto
        )
    }

    fn match_node_port(&self, node_port: u16) -> String {
        format!("-p {p} -m {p} --dport {node_port}", p = self.proto)
    }
}

/// Jumps from `chain` to the endpoint chains, kube-proxy's way (affinity checks first).
fn endpoint_jumps(t: &mut Tables, pc: &PortChains<'_>, chain: &str, eps: &[&SvcEndpoint]) {
    if let Some(seconds) = pc.svc.affinity_seconds {
        for ep in eps {
            let sep = pc.sep(ep);
            t.nat.push(format!(
                "-A {chain} -m comment --comment \"{} -> {}:{}\" -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {seconds} --reap -j {sep}",
                pc.port_name, ep.ip, pc.port.target_port
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let comment = format!(
            "-m comment --comment \"{} -> {}:{}\"",
            pc.port_name, ep.ip, pc.port.target_port
        );
        if i + 1 < n {
            t.nat.push(format!(
                "-A {chain} {comment} -m statistic --mode random --probability {} -j {}",
                probability(i, n),
                pc.sep(ep)
            ));
        } else {
            t.nat
                .push(format!("-A {chain} {comment} -j {}", pc.sep(ep)));
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one service port's rules in kube-proxy's order, easiest to compare in one piece"
)]
fn port_rules(t: &mut Tables, pc: &PortChains<'_>, node: &str, cluster_cidr: Cidr) {
    let s = pc.svc;
    let ready: Vec<&SvcEndpoint> = s.endpoints.iter().filter(|e| e.ready).collect();
    let local: Vec<&SvcEndpoint> = ready.iter().copied().filter(|e| e.node == node).collect();
    let lb_ips: Vec<String> = s.lb_ips.iter().map(|ip| pc.match_dst(ip)).collect();
    let external_ips: Vec<String> = s.external_ips.iter().map(|ip| pc.match_dst(ip)).collect();
    let external: Vec<String> = lb_ips.iter().chain(&external_ips).cloned().collect();
    let name = &pc.port_name;

    if ready.is_empty() {
        // No endpoints: reject everywhere (filter table), no nat chains.
        t.filter.push(format!(
            "-A KUBE-SERVICES -m comment --comment \"{name} has no endpoints\" {} -j REJECT --reject-with icmp-port-unreachable",
            pc.match_dst(s.cluster_ip)
        ));
        for m in &external {
            t.filter.push(format!(
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{name} has no endpoints\" {m} -j REJECT --reject-with icmp-port-unreachable"
            ));
        }
        if let Some(np) = pc.port.node_port {
            t.filter.push(format!(
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{name} has no endpoints\" -m addrtype --dst-type LOCAL {} -j REJECT --reject-with icmp-port-unreachable",
                pc.match_node_port(np)
            ));
        }
        return;
    }

    let svc = pc.chain("KUBE-SVC-");
    let ext = pc.chain("KUBE-EXT-");
    let svl = pc.chain("KUBE-SVL-");
    let fw = pc.chain("KUBE-FW-");
    let has_external = !external.is_empty() || pc.port.node_port.is_some();
    let local_without_endpoints = s.local && local.is_empty();
    t.nat_chains.push(svc.clone());
    t.nat.push(format!(
        "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" {} -j {svc}",
        pc.match_dst(s.cluster_ip)
    ));
    let firewalled = !s.source_ranges.is_empty() && !lb_ips.is_empty();
    if has_external && !local_without_endpoints {
        t.nat_chains.push(ext.clone());
        // With source ranges, LB IPs go through KUBE-FW-*, which only lets the ranges on to
        // KUBE-EXT-*; what falls through is not DNATed and meets KUBE-PROXY-FIREWALL's drop.
        let lb_target = if firewalled { &fw } else { &ext };
        for m in &lb_ips {
            t.nat.push(format!(
                "-A KUBE-SERVICES -m comment --comment \"{name} loadbalancer IP\" {m} -j {lb_target}"
            ));
        }
        for m in &external_ips {
            t.nat.push(format!(
                "-A KUBE-SERVICES -m comment --comment \"{name} external IP\" {m} -j {ext}"
            ));
        }
        if firewalled {
            t.nat_chains.push(fw.clone());
            for range in &s.source_ranges {
                t.nat.push(format!(
                    "-A {fw} -m comment --comment \"{name} loadbalancer IP\" -s {} -j {ext}",
                    range.network()
                ));
            }
            t.nat.push(format!(
                "-A {fw} -m comment --comment \"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL\""
            ));
        }
        if let Some(np) = pc.port.node_port {
            t.nat.push(format!(
                "-A KUBE-NODEPORTS -m comment --comment {name} {} -j {ext}",
                pc.match_node_port(np)
            ));
        }
        if s.local {
            t.nat_chains.push(svl.clone());
            t.nat.push(format!(
                "-A {ext} -s {cluster_cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}"
            ));
            t.nat.push(format!(
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            ));
            t.nat.push(format!(
                "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
            ));
            t.nat.push(format!("-A {ext} -j {svl}"));
            endpoint_jumps(t, pc, &svl, &local);
        } else {
            t.nat.push(format!(
                "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"
            ));
            t.nat.push(format!("-A {ext} -j {svc}"));
        }
    }
    if local_without_endpoints {
        for m in &external {
            t.filter.push(format!(
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{name} has no local endpoints\" {m} -j DROP"
            ));
        }
        if let Some(np) = pc.port.node_port {
            t.filter.push(format!(
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"{name} has no local endpoints\" -m addrtype --dst-type LOCAL {} -j DROP",
                pc.match_node_port(np)
            ));
        }
    }
    if firewalled {
        for m in &lb_ips {
            t.filter.push(format!(
                "-A KUBE-PROXY-FIREWALL -m comment --comment \"{name} traffic not accepted by {fw}\" {m} -j DROP"
            ));
        }
    }

    t.nat.push(format!(
        "-A {svc} ! -s {cluster_cidr} -m comment --comment \"{name} cluster IP\" {} -j KUBE-MARK-MASQ",
        pc.match_dst(s.cluster_ip)
    ));
    endpoint_jumps(t, pc, &svc, &ready);
    for ep in &ready {
        let sep = pc.sep(ep);
        t.nat_chains.push(sep.clone());
        t.nat.push(format!(
            "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ",
            ep.ip
        ));
        let recent = if s.affinity_seconds.is_some() {
            format!(" -m recent --set --name {sep} --mask 255.255.255.255 --rsource")
        } else {
            String::new()
        };
        t.nat.push(format!(
            "-A {sep} -m comment --comment {name} -p {p}{recent} -m {p} -j DNAT --to-destination {}:{}",
            ep.ip,
            pc.port.target_port,
            p = pc.proto
        ));
    }
}

/// The rules of every service port, in kube-proxy's order.
fn tables(services: &[NsService], node: &str, cluster_cidr: Cidr) -> Tables {
    let mut t = Tables::default();
    for s in services {
        for port in &s.ports {
            let pc = PortChains {
                svc: s,
                port,
                port_name: format!("{}/{}:{}", s.namespace, s.name, port.name),
                proto: port.protocol.lower(),
            };
            port_rules(&mut t, &pc, node, cluster_cidr);
        }
    }
    t
}

/// The nat and filter tables kube-proxy (iptables mode, `--cluster-cidr cluster_cidr`,
/// masquerade bit 0x4000) writes on node `node` for `services`.
#[must_use]
pub fn iptables_rules(services: &[NsService], node: &str, cluster_cidr: Cidr) -> String {
    debug_assert!(!cluster_cidr.is_ipv6());
    let t = tables(services, node, cluster_cidr);
    let mut out = String::with_capacity(4096 + t.nat.len() * 160);
    write_filter(&t, &mut out);
    write_nat(&t, &mut out);
    out
}

/// Only the nat table of [`iptables_rules`]: what `ClusterIP` traffic from a pod meets (the
/// filter table's rules only act on `NodePort`/`LoadBalancer` and endpoint-less services).
#[must_use]
pub fn nat_rules(services: &[NsService], node: &str, cluster_cidr: Cidr) -> String {
    let t = tables(services, node, cluster_cidr);
    let mut out = String::with_capacity(1024 + t.nat.len() * 160);
    write_nat(&t, &mut out);
    out
}

fn write_filter(t: &Tables, out: &mut String) {
    out.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for chain in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FIREWALL",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    out.push_str(
        "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A INPUT -j KUBE-FIREWALL\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -j KUBE-FIREWALL\n\
         -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n\
         -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    for rule in &t.filter {
        out.push_str(rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
}

fn write_nat(t: &Tables, out: &mut String) {
    out.push_str("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n");
    for chain in [
        "KUBE-MARK-MASQ",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-SERVICES",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let mut declared = std::collections::BTreeSet::new();
    for chain in &t.nat_chains {
        if declared.insert(chain) {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
    }
    let _ = write!(
        out,
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n"
    );
    // KUBE-SERVICES rules come first in service order, the nodeports jump last.
    let (services_rules, other): (Vec<&String>, Vec<&String>) = t
        .nat
        .iter()
        .partition(|r| r.starts_with("-A KUBE-SERVICES "));
    for rule in services_rules.into_iter().chain(other) {
        out.push_str(rule);
        out.push('\n');
    }
    let _ = write!(
        out,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n"
    );
}

/// Number of rules (`-A` lines) in an `iptables-restore` text.
#[must_use]
pub fn rule_count(tables: &str) -> usize {
    tables.lines().filter(|l| l.starts_with("-A ")).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SvcEndpoint;
    use std::net::Ipv4Addr;

    fn service() -> NsService {
        let mut s = NsService::load_balancer(
            "web",
            "10.96.0.10".parse().unwrap(),
            "172.30.0.10".parse().unwrap(),
            30080,
        );
        s.endpoints = vec![
            SvcEndpoint::new("10.244.1.2".parse::<Ipv4Addr>().unwrap(), "node1"),
            SvcEndpoint::new("10.244.2.2".parse::<Ipv4Addr>().unwrap(), "node2"),
        ];
        s
    }

    fn cidr() -> Cidr {
        "10.244.0.0/16".parse().unwrap()
    }

    #[test]
    fn cluster_policy_masquerades_external_traffic() {
        let rules = iptables_rules(&[service()], "node1", cidr());
        let ext = chain_name("KUBE-EXT-", "test/web:httptcp");
        let svc = chain_name("KUBE-SVC-", "test/web:httptcp");
        for needle in [
            format!(
                "-A KUBE-SERVICES -m comment --comment \"test/web:http loadbalancer IP\" -d 172.30.0.10/32 -p tcp -m tcp --dport 80 -j {ext}\n"
            ),
            format!(
                "-A KUBE-NODEPORTS -m comment --comment test/web:http -p tcp -m tcp --dport 30080 -j {ext}\n"
            ),
            format!(
                "-A {ext} -m comment --comment \"masquerade traffic for test/web:http external destinations\" -j KUBE-MARK-MASQ\n-A {ext} -j {svc}\n"
            ),
            "--probability 0.5000000000 -j KUBE-SEP-".to_owned(),
            "-j DNAT --to-destination 10.244.2.2:8080\n".to_owned(),
            "-p udp -m udp --dport 30053 -j KUBE-EXT-".to_owned(),
            "-j DNAT --to-destination 10.244.1.2:5353\n".to_owned(),
            "-j MASQUERADE --random-fully\n".to_owned(),
        ] {
            assert!(rules.contains(&needle), "{needle:?} missing from\n{rules}");
        }
        // The nodeports jump is the last KUBE-SERVICES rule; both tables commit.
        assert!(rules.ends_with("-j KUBE-NODEPORTS\nCOMMIT\n"));
        assert_eq!(rules.matches("COMMIT\n").count(), 2);
        let last_services_rule = rules
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap();
        assert!(last_services_rule.ends_with("-j KUBE-NODEPORTS"));
        // Every chain that is jumped to is declared.
        for line in rules.lines().filter(|l| l.starts_with("-A ")) {
            if let Some(target) = line.split(" -j ").nth(1) {
                let target = target.split(' ').next().unwrap();
                if target.starts_with("KUBE-") {
                    assert!(rules.contains(&format!(":{target} - [0:0]")), "{target}");
                }
            }
        }
    }

    #[test]
    fn nat_rules_are_the_nat_half() {
        let mut s = service();
        s.ports.truncate(1);
        s.ports[0].node_port = None;
        s.lb_ips.clear();
        "ClusterIP".clone_into(&mut s.service_type);
        let all = iptables_rules(&[s.clone()], "node1", cidr());
        let nat = nat_rules(&[s], "node1", cidr());
        assert!(nat.starts_with("*nat\n"), "{nat}");
        assert_eq!(nat.matches("COMMIT\n").count(), 1);
        assert!(all.ends_with(&format!("COMMIT\n{nat}")), "{all}");
        // A ClusterIP-only port: 7 fixed + nodeports jump + 1 portal + 1 masq + 2 jumps + 2×2 SEP.
        assert_eq!(rule_count(&nat), 8 + 8);
        assert!(!nat.contains("KUBE-EXT-"));
    }

    #[test]
    fn local_policy_ranges_and_affinity() {
        let mut s = service();
        s.local = true;
        s.source_ranges = vec!["192.168.50.3/32".parse().unwrap()];
        s.affinity_seconds = Some(300);
        let rules = iptables_rules(&[s.clone()], "node1", cidr());
        let svl = chain_name("KUBE-SVL-", "test/web:httptcp");
        let fw = chain_name("KUBE-FW-", "test/web:httptcp");
        assert!(rules.contains(&format!("-j {svl}\n")), "{rules}");
        // Only node1's endpoint in the local chain: one unconditional jump.
        let svl_jumps: Vec<&str> = rules
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svl} ")) && !l.contains("recent"))
            .collect();
        assert_eq!(svl_jumps.len(), 1, "{svl_jumps:?}");
        assert!(svl_jumps[0].contains("10.244.1.2:8080"));
        let ext = chain_name("KUBE-EXT-", "test/web:httptcp");
        for needle in [
            format!(
                "--comment \"test/web:http loadbalancer IP\" -d 172.30.0.10/32 -p tcp -m tcp --dport 80 -j {fw}\n"
            ),
            format!(
                "-A {fw} -m comment --comment \"test/web:http loadbalancer IP\" -s 192.168.50.3/32 -j {ext}\n"
            ),
            format!(
                "-A KUBE-PROXY-FIREWALL -m comment --comment \"test/web:http traffic not accepted by {fw}\" -d 172.30.0.10/32 -p tcp -m tcp --dport 80 -j DROP\n"
            ),
        ] {
            assert!(rules.contains(&needle), "{needle:?} missing from\n{rules}");
        }
        // The NodePort is not firewalled.
        assert!(rules.contains(&format!("--dport 30080 -j {ext}\n")));
        assert!(rules.contains("--rcheck --seconds 300 --reap -j KUBE-SEP-"));
        assert!(rules.contains("-m recent --set --name KUBE-SEP-"));

        // node3 has no local endpoint: drops in the filter table, no EXT chain.
        let rules = iptables_rules(&[s], "node3", cidr());
        assert!(rules.contains(
            "has no local endpoints\" -d 172.30.0.10/32 -p tcp -m tcp --dport 80 -j DROP"
        ));
        assert!(rules.contains("has no local endpoints\" -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j DROP"));
        assert!(!rules.contains("KUBE-EXT-"));

        let mut empty = service();
        empty.endpoints.clear();
        let rules = iptables_rules(&[empty], "node1", cidr());
        assert!(
            rules
                .contains("has no endpoints\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j REJECT")
        );
        assert!(!rules.contains("KUBE-SVC-"));
        assert_eq!(rule_count("-A X\n:Y\n-A Z\n"), 2);
    }
}
