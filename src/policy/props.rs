//! Property test: for random policies over a small two-node cluster, the compiled maps — looked
//! up as the datapath looks them up — allow exactly what Kubernetes' rules, evaluated naively on
//! the model, allow.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrite_abi::{
    IDENTITY_ANY, POLICY_EGRESS, POLICY_INGRESS, POLICY_ISOLATED_EGRESS, POLICY_ISOLATED_INGRESS,
    POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO,
};
use proptest::prelude::*;
use proptest::sample::select;

use super::tests::{labels, name, namespaces, pod};
use super::{PolicyPlan, compile};
use crate::model::{
    LabelSelector, NetworkPolicy, Pod, PolicyPeer, PolicyPort, PolicyPortNumber, PolicyRule,
    Protocol, ServiceName, Snapshot,
};

const PODS: [(&str, &str, &str, &str); 4] = [
    ("x", "a", "n1", "10.0.1.1"),
    ("x", "b", "n2", "10.0.2.1"),
    ("y", "a", "n2", "10.0.2.2"),
    ("y", "b", "n1", "10.0.1.2"),
];

fn selector(pod: Option<&str>) -> LabelSelector {
    LabelSelector {
        match_labels: pod.map(|p| labels(&[("pod", p)])).unwrap_or_default(),
        match_expressions: Vec::new(),
    }
}

fn cluster() -> Snapshot {
    let mut s = namespaces();
    for (ns, p, node, ip) in PODS {
        let web = if p == "a" { 80 } else { 81 };
        s.pods.insert(name(ns, p), pod(ns, p, node, ip, web));
    }
    s
}

fn peer_strategy() -> impl Strategy<Value = PolicyPeer> {
    let pod = prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))];
    let ns = prop_oneof![Just(None), Just(Some("x")), Just(Some("y")), Just(Some(""))];
    let pods = (pod, ns).prop_filter_map("a peer needs a selector", |(p, n)| {
        let namespace_selector = n.map(|n| {
            if n.is_empty() {
                LabelSelector::default()
            } else {
                LabelSelector {
                    match_labels: labels(&[("ns", n)]),
                    match_expressions: Vec::new(),
                }
            }
        });
        let pod_selector = p.map(|p| selector(Some(p)));
        (pod_selector.is_some() || namespace_selector.is_some()).then_some(PolicyPeer::Pods {
            pod_selector,
            namespace_selector,
        })
    });
    let block = select(vec![
        ("10.0.0.0/16", vec![]),
        ("10.0.0.0/16", vec!["10.0.1.0/24"]),
        ("10.0.1.0/24", vec!["10.0.1.2/32"]),
        ("10.0.2.0/24", vec![]),
    ])
    .prop_map(|(c, e)| PolicyPeer::IpBlock {
        cidr: c.parse().expect("cidr"),
        except: e.iter().map(|e| e.parse().expect("cidr")).collect(),
    });
    prop_oneof![3 => pods, 1 => block]
}

fn port_strategy() -> impl Strategy<Value = PolicyPort> {
    select(vec![
        (Protocol::Tcp, Some(PolicyPortNumber::Number(80)), None),
        (Protocol::Tcp, Some(PolicyPortNumber::Number(80)), Some(81)),
        (Protocol::Udp, None, None),
        (
            Protocol::Tcp,
            Some(PolicyPortNumber::Name("web".into())),
            None,
        ),
    ])
    .prop_map(|(protocol, port, end_port)| PolicyPort {
        protocol,
        port,
        end_port,
    })
}

fn rule_strategy() -> impl Strategy<Value = PolicyRule> {
    (
        proptest::collection::vec(peer_strategy(), 0..3),
        proptest::collection::vec(port_strategy(), 0..3),
    )
        .prop_map(|(peers, ports)| PolicyRule { peers, ports })
}

fn policy_strategy() -> impl Strategy<Value = NetworkPolicy> {
    let rules = || proptest::option::of(proptest::collection::vec(rule_strategy(), 0..3));
    (
        select(vec!["x", "y"]),
        prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))],
        rules(),
        rules(),
        0..1000_u32,
    )
        .prop_map(|(ns, pod, ingress, egress, n)| NetworkPolicy {
            name: ServiceName {
                namespace: ns.into(),
                name: format!("p{n}").into(),
            },
            pod_selector: selector(pod),
            ingress,
            egress,
        })
}

/// Kubernetes' rules, read off the model.
fn reference(s: &Snapshot, src: &Pod, dst: &Pod, proto: Protocol, port: u16) -> bool {
    let peer_ok = |peer: &PolicyPeer, policy_ns: &str, other: &Pod| match peer {
        PolicyPeer::Pods {
            pod_selector,
            namespace_selector,
        } => {
            let ns_labels = &s.namespaces[other.name.namespace.as_str()].labels;
            let ns_ok = namespace_selector
                .as_ref()
                .map_or(other.name.namespace == policy_ns, |sel| {
                    sel.matches(|k| ns_labels.get(k).map(smol_str::SmolStr::as_str))
                });
            ns_ok
                && pod_selector.as_ref().is_none_or(|sel| {
                    sel.matches(|k| other.labels.get(k).map(smol_str::SmolStr::as_str))
                })
        }
        PolicyPeer::IpBlock { cidr, except } => {
            let ip = other.ips[0];
            cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
        }
    };
    let port_ok = |p: &PolicyPort| {
        p.protocol == proto
            && match &p.port {
                None => true,
                Some(PolicyPortNumber::Number(n)) => {
                    (*n..=p.end_port.unwrap_or(*n)).contains(&port)
                }
                Some(PolicyPortNumber::Name(name)) => dst
                    .named_ports
                    .iter()
                    .any(|np| np.name == *name && np.protocol == proto && np.port == port),
            }
    };
    let direction_ok = |me: &Pod, other: &Pod, ingress: bool| {
        let mut isolated = false;
        let mut allowed = false;
        for policy in s.network_policies.values() {
            let rules = if ingress {
                &policy.ingress
            } else {
                &policy.egress
            };
            let selects = policy.name.namespace == me.name.namespace
                && policy
                    .pod_selector
                    .matches(|k| me.labels.get(k).map(smol_str::SmolStr::as_str));
            let (true, Some(rules)) = (selects, rules) else {
                continue;
            };
            isolated = true;
            allowed |= rules.iter().any(|r| {
                (r.peers.is_empty()
                    || r.peers
                        .iter()
                        .any(|p| peer_ok(p, policy.name.namespace.as_str(), other)))
                    && (r.ports.is_empty() || r.ports.iter().any(port_ok))
            });
        }
        !isolated || allowed
    };
    direction_ok(src, dst, false) && direction_ok(dst, src, true)
}

/// The maps of `plan` looked up as `bpf/ebpf/src/policy.rs` does.
fn datapath(
    plan: &PolicyPlan,
    local: IpAddr,
    peer: IpAddr,
    direction: u8,
    proto: u8,
    port: u16,
) -> bool {
    let ep = plan.addrs[&local];
    let flag = if direction == POLICY_INGRESS {
        POLICY_ISOLATED_INGRESS
    } else {
        POLICY_ISOLATED_EGRESS
    };
    if ep.flags & flag == 0 {
        return true;
    }
    let cidr = plan
        .cidrs
        .iter()
        .filter(|(net, _)| net.contains(&peer))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, id)| *id);
    let ids = [
        plan.addrs.get(&peer).map(|e| e.identity),
        cidr,
        Some(IDENTITY_ANY),
    ];
    ids.into_iter().flatten().any(|id| {
        plan.rules.keys().any(|k| {
            k.endpoint == ep.endpoint
                && k.identity == id
                && k.direction == direction
                && (k.prefix == POLICY_PREFIX_ANY_PROTO
                    || (k.proto == proto
                        && (k.prefix == POLICY_PREFIX_ANY_PORT || {
                            let shift = 96 - k.prefix;
                            u32::from(k.port) >> shift == u32::from(port) >> shift
                        })))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn compiled_maps_allow_exactly_what_the_rules_allow(
        policies in proptest::collection::vec(policy_strategy(), 0..4)
    ) {
        let mut s = cluster();
        for p in policies {
            s.network_policies.insert(p.name.clone(), p);
        }
        let plans: BTreeMap<&str, PolicyPlan> =
            ["n1", "n2"].into_iter().map(|n| (n, compile(&s, n))).collect();
        for src in s.pods.values() {
            for dst in s.pods.values() {
                if src.name == dst.name {
                    continue;
                }
                for (proto, number) in [(Protocol::Tcp, 6), (Protocol::Udp, 17), (Protocol::Sctp, 132)] {
                    for port in [80, 81, 82] {
                        let want = reference(&s, src, dst, proto, port);
                        let out = &plans[src.node_name.as_deref().unwrap_or_default()];
                        let into = &plans[dst.node_name.as_deref().unwrap_or_default()];
                        let got = datapath(out, src.ips[0], dst.ips[0], POLICY_EGRESS, number, port)
                            && datapath(into, dst.ips[0], src.ips[0], POLICY_INGRESS, number, port);
                        prop_assert_eq!(
                            got, want,
                            "{} -> {} {:?}/{}\npolicies: {:#?}",
                            src.name, dst.name, proto, port, s.network_policies
                        );
                    }
                }
            }
        }
    }
}
