//! `Node`, `Namespace`, `Pod`, `NetworkPolicy` and `L2AnnouncementPolicy` manifests.

use super::{parse_err, parse_ok};
use crate::{
    model::{PodPhase, PolicyPeer, PolicyPortNumber, Snapshot},
    source::objects::Object,
};

fn snapshot(text: &str) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for object in parse_ok(text) {
        object.insert_into(&mut snapshot);
    }
    snapshot
}

#[test]
fn node_reads_pod_cidrs_addresses_labels_and_readiness() {
    let s = snapshot(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {zone: a, rack: 7}}\n\
         spec: {podCIDR: 10.244.1.0/24}\nstatus:\n  addresses:\n  - {type: InternalIP, address: 192.168.1.2}\n\
         \x20 - {type: ExternalIP, address: 203.0.113.2}\n  - {type: Hostname, address: n1}\n\
         \x20 conditions: [{type: Ready, status: 'False'}]\n",
    );
    let node = &s.nodes["n1"];
    assert_eq!(
        node.pod_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.244.1.0/24"]
    );
    assert_eq!(node.internal_ips[0].to_string(), "192.168.1.2");
    assert_eq!(node.external_ips[0].to_string(), "203.0.113.2");
    assert_eq!(node.hostname.as_deref(), Some("n1"));
    assert_eq!(node.labels["rack"], "7", "unquoted numbers are label text");
    assert!(!node.ready);
    let bare = snapshot("apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n");
    assert!(
        bare.nodes["n2"].ready,
        "no conditions: a hand-written node counts as ready"
    );
}

#[test]
fn node_rejects_bad_cidrs_and_two_of_a_family() {
    let bad =
        parse_err("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDRs: [nope]}\n");
    assert!(
        bad.contains("spec.podCIDRs[0]") && bad.contains("not a CIDR"),
        "{bad}"
    );
    let two = parse_err(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {podCIDRs: [10.0.0.0/24, 10.1.0.0/24]}\n",
    );
    assert!(two.contains("one CIDR per IP family"), "{two}");
}

#[test]
fn pods_and_namespaces_are_read() {
    let s = snapshot(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {env: prod}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod, labels: {app: web}}\n\
         spec: {nodeName: n1, hostNetwork: false}\nstatus: {phase: Running, podIP: 10.244.1.5, \
         podIPs: [{ip: 10.244.1.5}, {ip: 'fd00::5'}]}\n",
    );
    assert_eq!(s.namespaces["prod"].labels["env"], "prod");
    let pod = s.pods.values().next().expect("pod");
    assert_eq!(pod.name.to_string(), "prod/p");
    assert_eq!(pod.ips.len(), 2);
    assert_eq!(pod.phase, PodPhase::Running);
    assert_eq!(pod.node_name.as_deref(), Some("n1"));
}

#[test]
fn network_policy_rules_peers_and_ports() {
    let s = snapshot(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: prod}\n\
         spec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {env: prod}}\n\
         \x20     podSelector: {matchExpressions: [{key: tier, operator: In, values: [front]}]}\n\
         \x20   - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports: [{port: 8000, endPort: 8080}, {protocol: UDP, port: dns}, {protocol: SCTP, port: 9}]\n\
         \x20 egress: []\n  policyTypes: [Ingress, Egress]\n",
    );
    let np = s.network_policies.values().next().expect("policy");
    assert_eq!(np.pod_selector.match_labels["app"], "web");
    let ingress = np.ingress.as_ref().expect("ingress");
    assert_eq!(ingress[0].peers.len(), 2);
    assert!(
        matches!(&ingress[0].peers[1], PolicyPeer::IpBlock { except, .. } if except.len() == 1)
    );
    assert_eq!(ingress[0].ports[0].end_port, Some(8080));
    assert_eq!(
        ingress[0].ports[1].port,
        Some(PolicyPortNumber::Name("dns".into()))
    );
    assert_eq!(
        ingress[0].ports[2].protocol,
        crate::model::Protocol::Sctp,
        "SCTP ports are enforced by policy (not served by the LB)"
    );
    assert_eq!(
        np.egress.as_deref(),
        Some(&[][..]),
        "egress isolated with no rule: deny all"
    );

    let defaults = snapshot(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d}\nspec: {podSelector: {}}\n",
    );
    let d = defaults.network_policies.values().next().expect("policy");
    assert!(
        d.ingress.as_ref().is_some_and(Vec::is_empty) && d.egress.is_none(),
        "{d:?}"
    );
}

#[test]
fn network_policy_errors_name_the_field() {
    for (spec, expected) in [
        (
            "{podSelector: {}, ingress: [{from: [{}]}]}",
            "spec.ingress[0].from[0]",
        ),
        (
            "{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 70}]}]}",
            "endPort",
        ),
        (
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.1.0.0/24]}}]}]}",
            "is not inside",
        ),
        (
            "{podSelector: {matchExpressions: [{key: a, operator: Maybe}]}}",
            "spec.podSelector.matchExpressions[0]",
        ),
        (
            "{podSelector: {}, policyTypes: [Sideways]}",
            "spec.policyTypes[0]",
        ),
    ] {
        let text = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: x}}\nspec: {spec}\n"
        );
        let error = parse_err(&text);
        assert!(error.contains(expected), "{spec}: {error}");
    }
}

#[test]
fn l2_policies_in_ferrite_and_cilium_form() {
    let s = snapshot(
        "apiVersion: ferrite.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: lan}\n\
         spec: {interfaces: ['^eth[0-9]+'], externalIPs: true, loadBalancerIPs: true, \
         nodeSelector: {matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]}}\n---\n\
         apiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: {name: moved}\n\
         spec: {serviceSelector: {matchLabels: {color: blue}}, loadBalancerIPs: true}\n",
    );
    let lan = &s.l2_policies["lan"];
    assert!(lan.external_ips && lan.load_balancer_ips);
    assert_eq!(lan.interfaces, ["^eth[0-9]+"]);
    assert_eq!(
        lan.node_selector
            .as_ref()
            .expect("nodes")
            .match_expressions
            .len(),
        1
    );
    let moved = &s.l2_policies["moved"];
    assert!(!moved.external_ips && moved.load_balancer_ips);
    assert!(moved.service_selector.is_some());
    let objects = parse_ok(
        "apiVersion: ferrite.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: e}\n",
    );
    assert!(
        matches!(&objects[..], [Object::L2Policy(..)]),
        "an empty spec announces nothing special"
    );

    let bad = parse_err(
        "apiVersion: ferrite.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: b}\nspec: {externalIPs: yes please}\n",
    );
    assert!(bad.contains("spec.externalIPs"), "{bad}");
    let version =
        parse_err("apiVersion: ferrite.dev/v1\nkind: L2AnnouncementPolicy\nmetadata: {name: b}\n");
    assert!(version.contains("ferrite.dev/v1alpha1"), "{version}");
}
