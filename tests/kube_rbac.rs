//! The RBAC of the k3s addon is exactly what the agent needs: the real agent (`--source kube`,
//! watches, status writes, validity conditions, the Lease, the look at its own DaemonSet when it
//! stops) runs against the fake API server
//! enforcing the rules `ferrite manifests rbac` prints. Nothing may be denied (the rules are
//! enough) and every granted verb must be used (the rules are not wider than needed).

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{AgentLab, generated_rbac, require_root, service_yaml, slice_yaml};
use ferrite_fakeapi::{Decision, FakeApi, Options, Rules};
use ferrite_lab::wait_until;
use serde_json::Value;

const CRDS: &str = include_str!("../k3s-addon/crds.yaml");

/// Every kind the agent watches, plus what makes it write each kind of status: an invalid
/// service and an L2 policy (conditions), a pool and a LoadBalancer service (LB IPAM status).
const CLUSTER: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: test}
---
apiVersion: v1
kind: Node
metadata: {name: test-node}
spec: {podCIDRs: [10.244.0.0/24]}
status: {addresses: [{type: InternalIP, address: 192.0.2.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pod-1, namespace: test}
spec: {nodeName: test-node, containers: [{name: c, image: x}]}
status: {podIP: 10.244.0.2, podIPs: [{ip: 10.244.0.2}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: test}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: v1
kind: Service
metadata: {name: bad, namespace: test}
spec: {clusterIP: 10.96.0.11, ports: [{port: 80, protocol: QUIC}]}
---
apiVersion: ferrite.dev/v1alpha1
kind: L2AnnouncementPolicy
metadata: {name: lan}
spec: {interfaces: [eth0], loadBalancerIPs: true}
---
apiVersion: ferrite.dev/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: pool}
spec: {blocks: [{cidr: 198.51.100.0/28}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ferrite, namespace: kube-system}
spec: {selector: {matchLabels: {app: ferrite}}, template: {metadata: {labels: {app: ferrite}}, spec: {containers: [{name: ferrite, image: x}]}}}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: test}
spec: {type: LoadBalancer, clusterIP: 10.96.0.12, ports: [{name: http, port: 80, protocol: TCP}]}
";

/// `(verb, group, resource)` of every rule.
fn granted(rules: &Rules) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for grant in &rules.grants {
        for verb in &grant.rule.verbs {
            for group in &grant.rule.api_groups {
                for resource in &grant.rule.resources {
                    out.insert((verb.clone(), group.clone(), resource.clone()));
                }
            }
        }
    }
    out
}

/// What only a stopping agent asks: `get` of its own DaemonSet.
fn stop_lookup() -> (String, String, String) {
    ("get".into(), "apps".into(), "daemonsets".into())
}

fn used(decisions: &[Decision]) -> BTreeSet<(String, String, String)> {
    decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| (d.verb.clone(), d.group.clone(), d.resource.clone()))
        .collect()
}

fn condition(api: &FakeApi, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
    api.get(api_version, kind, ns, name)?
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "ferrite.dev/Valid")
        .cloned()
}

#[test]
fn kube_agent_needs_exactly_the_generated_rbac() {
    require_root();
    let rules = Rules::from_manifest(&generated_rbac()).expect("RBAC of the manifest");
    let mut agent = AgentLab::new("krb");
    let dir = agent.work.path().join("apiserver");
    std::fs::create_dir_all(&dir).expect("fake API dir");
    let options = Options {
        rbac: Some(rules.clone()),
        ..Options::default()
    };
    let api = FakeApi::start_with(&dir, &options).expect("fake API server");
    api.load_yaml(CRDS).expect("CRDs");
    let web = service_yaml("web", &["10.96.0.10"], None)
        + &slice_yaml("web-v4", "web", "IPv4", &[("10.244.0.2", true)]);
    api.load_yaml(&web).expect("web");
    api.load_yaml(CLUSTER).expect("cluster");

    let kubeconfig = api.kubeconfig().as_os_str().to_owned();
    agent.start_with(
        "kube",
        &[
            "--cni-conf-dir",
            "none",
            "--status-lease-seconds",
            "3",
            "--daemonset",
            "ferrite",
        ],
        &[("KUBECONFIG", kubeconfig.as_os_str())],
        true,
    );
    agent.wait_for_backends("10.96.0.10:80", 1);

    let all_used = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        condition(&api, "v1", "Service", "test", "bad").is_some()
            && condition(
                &api,
                "ferrite.dev/v1alpha1",
                "L2AnnouncementPolicy",
                "",
                "lan",
            )
            .is_some()
            && api
                .get("v1", "Service", "test", "lb")
                .and_then(|s| s.pointer("/status/loadBalancer/ingress/0/ip").cloned())
                .is_some()
            && api
                .get("ferrite.dev/v1alpha1", "LoadBalancerIPPool", "", "pool")
                .and_then(|p| p.pointer("/status/conditions/0").cloned())
                .is_some()
            && granted(&rules)
                .difference(&used(&api.rbac_decisions()))
                .all(|g| *g == stop_lookup())
    });
    // The last request: whether its DaemonSet is gone, when the agent is stopped.
    let exit = agent.terminate();
    assert!(exit.success(), "agent exit {exit}; log:\n{}", agent.log());
    let decisions = api.rbac_decisions();
    let denied: Vec<&Decision> = decisions.iter().filter(|d| !d.allowed).collect();
    assert!(
        denied.is_empty(),
        "the generated RBAC is not enough; denied: {denied:#?}\nagent log:\n{}",
        agent.log()
    );
    let forbidden = api.requests().iter().filter(|r| r.status == 403).count();
    assert_eq!(forbidden, 0, "403s without a recorded RBAC decision");
    let unused: Vec<_> = granted(&rules)
        .difference(&used(&decisions))
        .cloned()
        .collect();
    assert!(
        all_used.is_ok() && unused.is_empty(),
        "granted but never used (wider than needed, or the agent did not get to it): \
         {unused:?}\nservice lb: {:?}\npool: {:?}\nagent log:\n{}",
        api.get("v1", "Service", "test", "lb"),
        api.get("ferrite.dev/v1alpha1", "LoadBalancerIPPool", "", "pool"),
        agent.log()
    );
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-system",
            "ferrite-status-writer",
        )
        .expect("the agent took the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "test-node");
}
