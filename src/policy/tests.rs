use std::collections::BTreeMap;

use ferrite_abi::{
    IDENTITY_ANY, IDENTITY_CIDR_BIT, POLICY_EGRESS, POLICY_INGRESS, POLICY_ISOLATED_EGRESS,
    POLICY_ISOLATED_INGRESS, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL,
};

use super::{compile, ports};
use crate::model::{
    LabelSelector, NamedPort, Namespace, NetworkPolicy, Pod, PodPhase, PolicyPeer, PolicyPort,
    PolicyPortNumber, PolicyRule, Protocol, ServiceName, Snapshot,
};

pub(super) fn name(ns: &str, n: &str) -> ServiceName {
    ServiceName {
        namespace: ns.into(),
        name: n.into(),
    }
}

pub(super) fn labels(l: &[(&str, &str)]) -> BTreeMap<smol_str::SmolStr, smol_str::SmolStr> {
    l.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

fn selector(l: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(l),
        match_expressions: Vec::new(),
    }
}

/// Namespaces x and y, labelled `ns: <name>`, and nothing else.
pub(super) fn namespaces() -> Snapshot {
    let mut s = Snapshot::default();
    for ns in ["x", "y"] {
        s.namespaces.insert(
            ns.into(),
            Namespace {
                name: ns.into(),
                labels: labels(&[("ns", ns)]),
            },
        );
    }
    s
}

fn snapshot() -> Snapshot {
    let mut s = namespaces();
    let pods = [
        ("x", "a", "n1", "10.0.1.1"),
        ("x", "b", "n2", "10.0.2.1"),
        ("y", "a", "n2", "10.0.2.2"),
    ];
    for (ns, p, node, ip) in pods {
        let web = if p == "a" { 8080 } else { 9090 };
        s.pods.insert(name(ns, p), pod(ns, p, node, ip, web));
    }
    s
}

/// Running pod `ns/p` on `node` at `ip`, labelled `pod: p`, its TCP port `web` named "web".
pub(super) fn pod(ns: &str, p: &str, node: &str, ip: &str, web: u16) -> Pod {
    Pod {
        name: name(ns, p),
        labels: labels(&[("pod", p)]),
        named_ports: vec![NamedPort {
            name: "web".into(),
            protocol: Protocol::Tcp,
            port: web,
        }],
        node_name: Some(node.into()),
        ips: vec![ip.parse().expect("ip")],
        host_network: false,
        phase: PodPhase::Running,
    }
}

fn add(
    s: &mut Snapshot,
    ns: &str,
    n: &str,
    ingress: Option<Vec<PolicyRule>>,
    egress: Option<Vec<PolicyRule>>,
) {
    s.network_policies.insert(
        name(ns, n),
        NetworkPolicy {
            name: name(ns, n),
            pod_selector: LabelSelector::default(),
            ingress,
            egress,
        },
    );
}

#[test]
fn port_ranges_become_the_fewest_aligned_blocks() {
    assert_eq!(ports::range(80, 80), vec![(80, 16)]);
    assert_eq!(ports::range(80, 81), vec![(80, 15)]);
    assert_eq!(ports::range(81, 84), vec![(81, 16), (82, 15), (84, 16)]);
    assert_eq!(ports::range(0, 65_535), vec![(0, 0)]);
    // Property: blocks cover exactly the range, without overlap.
    for (lo, hi) in [(1_u16, 1000_u16), (1024, 65_535), (32_768, 32_770), (7, 9)] {
        let mut covered = 0_u32;
        let mut next = u32::from(lo);
        for (start, bits) in ports::range(lo, hi) {
            let size = 1_u32 << (16 - bits);
            assert_eq!(u32::from(start), next, "contiguous");
            assert_eq!(u32::from(start) % size, 0, "aligned");
            next += size;
            covered += size;
        }
        assert_eq!(covered, u32::from(hi) - u32::from(lo) + 1);
    }
}

#[test]
fn no_policy_isolates_nothing_and_every_pod_has_an_identity() {
    let plan = compile(&snapshot(), "n1");
    assert_eq!(plan.addrs.len(), 3);
    assert!(plan.rules.is_empty());
    let xa = plan.addrs[&"10.0.1.1".parse().unwrap()];
    assert_ne!(xa.endpoint, 0, "x/a is on n1");
    assert_eq!(xa.flags, 0);
    assert_eq!(plan.addrs[&"10.0.2.1".parse().unwrap()].endpoint, 0);
    // Same labels in another namespace: another identity.
    assert_ne!(
        xa.identity,
        plan.addrs[&"10.0.2.2".parse().unwrap()].identity
    );
    // Stable: the same snapshot compiles to the same plan (another node, another restart).
    assert_eq!(compile(&snapshot(), "n1"), plan);
}

#[test]
fn deny_all_ingress_isolates_without_rules_and_egress_stays_open() {
    let mut s = snapshot();
    add(&mut s, "x", "deny", Some(Vec::new()), None);
    let plan = compile(&s, "n1");
    let xa = plan.addrs[&"10.0.1.1".parse().unwrap()];
    assert_eq!(xa.flags, POLICY_ISOLATED_INGRESS);
    assert!(plan.rules.is_empty());
    assert_eq!(plan.endpoints[0].policies, ["x/deny"]);
}

#[test]
fn namespace_selector_rules_name_the_identities_of_its_pods_and_ports() {
    let mut s = snapshot();
    let rule = PolicyRule {
        peers: vec![PolicyPeer::Pods {
            pod_selector: None,
            namespace_selector: Some(selector(&[("ns", "y")])),
        }],
        ports: vec![
            PolicyPort {
                protocol: Protocol::Tcp,
                port: Some(PolicyPortNumber::Name("web".into())),
                end_port: None,
            },
            PolicyPort {
                protocol: Protocol::Udp,
                port: None,
                end_port: None,
            },
        ],
    };
    add(&mut s, "x", "from-y", Some(vec![rule]), None);
    let plan = compile(&s, "n1");
    let ya = plan.addrs[&"10.0.2.2".parse().unwrap()].identity;
    let keys: Vec<_> = plan.rules.keys().collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.identity == ya && k.direction == POLICY_INGRESS)
    );
    // The named port resolves on the destination (x/a: 8080), UDP is every port.
    assert!(
        keys.iter()
            .any(|k| k.prefix == POLICY_PREFIX_FULL && k.proto == 6 && k.port == 8080)
    );
    assert!(
        keys.iter()
            .any(|k| k.prefix == POLICY_PREFIX_ANY_PORT && k.proto == 17)
    );
}

#[test]
fn egress_named_ports_resolve_on_the_peers_and_empty_rules_allow_any() {
    let mut s = snapshot();
    let to_b = PolicyRule {
        peers: vec![PolicyPeer::Pods {
            pod_selector: Some(selector(&[("pod", "b")])),
            namespace_selector: None,
        }],
        ports: vec![PolicyPort {
            protocol: Protocol::Tcp,
            port: Some(PolicyPortNumber::Name("web".into())),
            end_port: None,
        }],
    };
    add(
        &mut s,
        "x",
        "out",
        None,
        Some(vec![to_b, PolicyRule::default()]),
    );
    let plan = compile(&s, "n1");
    assert_eq!(
        plan.addrs[&"10.0.1.1".parse().unwrap()].flags,
        POLICY_ISOLATED_EGRESS
    );
    assert!(
        plan.rules
            .keys()
            .any(|k| k.direction == POLICY_EGRESS && k.port == 9090)
    );
    assert!(
        plan.rules
            .keys()
            .any(|k| k.identity == IDENTITY_ANY && k.prefix == POLICY_PREFIX_ANY_PROTO)
    );
}

#[test]
fn ip_blocks_allow_their_prefixes_but_not_the_exceptions() {
    let mut s = snapshot();
    let rule = PolicyRule {
        peers: vec![PolicyPeer::IpBlock {
            cidr: "10.0.0.0/16".parse().unwrap(),
            except: vec!["10.0.2.0/24".parse().unwrap()],
        }],
        ports: Vec::new(),
    };
    add(&mut s, "x", "cidr", Some(vec![rule]), None);
    let plan = compile(&s, "n1");
    assert_eq!(plan.cidrs.len(), 2);
    let wide = plan.cidrs[&"10.0.0.0/16".parse().unwrap()];
    let except = plan.cidrs[&"10.0.2.0/24".parse().unwrap()];
    assert!(wide & IDENTITY_CIDR_BIT != 0 && except & IDENTITY_CIDR_BIT != 0);
    let ids: Vec<u32> = plan.rules.keys().map(|k| k.identity).collect();
    assert_eq!(ids, [wide]);
}

#[test]
fn host_network_and_finished_pods_hold_no_identity() {
    let mut s = snapshot();
    s.pods.get_mut(&name("x", "b")).unwrap().host_network = true;
    s.pods.get_mut(&name("y", "a")).unwrap().phase = PodPhase::Succeeded;
    let plan = compile(&s, "n1");
    assert_eq!(plan.addrs.len(), 1);
}
