//! Service semantics Kubernetes' e2e suite checks, end to end with the real agent on a `dir:`
//! source: services left to another proxy by their labels, `internalTrafficPolicy: Local`,
//! Services mixing SCTP with TCP ports, and manifests built to stall a YAML parser.

mod common;
mod northsouth_common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{AgentLab, PodLab, lab_bin, require_root, service_yaml, slice_yaml};
use ferrite_lab::report::ClientReport;
use ferrite_lab::{NsLab, NsService, SvcEndpoint};
use northsouth_common::{all_endpoints, build, cluster_ip, endpoints_on, start_agents};

fn lab(prefix: &str, pods: usize) -> (PodLab, AgentLab) {
    require_root();
    (PodLab::new(prefix, pods), AgentLab::new(prefix))
}

/// `count` TCP connections from the node (in the test cgroup) to `target`.
fn tcp(agent: &AgentLab, pods: &PodLab, target: &str, count: u32, timeout_ms: u32) -> ClientReport {
    agent.client(
        &pods.node,
        &[
            "--target",
            target,
            "--proto",
            "tcp",
            "--count",
            &count.to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
        ],
    )
}

/// Waits until `ferrite services` lists no frontend `frontend`.
fn wait_gone(agent: &AgentLab, frontend: &str) {
    let gone = ferrite_lab::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        agent
            .services()
            .as_array()
            .is_some_and(|l| l.iter().all(|s| s["frontend"] != frontend))
    });
    assert!(
        gone.is_ok(),
        "{frontend} still served: {}\n{}",
        agent.services(),
        agent.log()
    );
}

/// The `web` Service (TCP 80 → pod 8080, UDP 53) with `labels` (YAML lines under `labels:`).
fn labelled_web(pods: &PodLab, labels: &[&str]) -> String {
    let mut service = service_yaml("web", &["10.96.0.10"], None);
    if !labels.is_empty() {
        let block = labels.join("\n    ");
        service = service.replacen(
            "  namespace: test\n",
            &format!("  namespace: test\n  labels:\n    {block}\n"),
            1,
        );
    }
    service + &slice_yaml("web-v4", "web", "IPv4", &[(&pods.pod_v4(0), true)])
}

#[test]
fn proxy_name_and_headless_labels_toggle_whether_a_cluster_ip_is_served() {
    let (pods, mut agent) = lab("ss1", 1);
    agent.write("web.yaml", &labelled_web(&pods, &[]));
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 1);
    assert_eq!(tcp(&agent, &pods, "10.96.0.10:80", 5, 1000).ok, 5);

    for label in [
        "service.kubernetes.io/service-proxy-name: other-proxy",
        "service.kubernetes.io/headless: \"\"",
    ] {
        agent.write("web.yaml", &labelled_web(&pods, &["app: web", label]));
        wait_gone(&agent, "10.96.0.10:80");
        let off = tcp(&agent, &pods, "10.96.0.10:80", 3, 300);
        assert_eq!(off.ok, 0, "{label}: still translated: {off:?}");

        // The label removed (another label kept): served again.
        agent.write("web.yaml", &labelled_web(&pods, &["app: web"]));
        agent.wait_for_backends("10.96.0.10:80", 1);
        let on = tcp(&agent, &pods, "10.96.0.10:80", 5, 1000);
        assert_eq!(on.ok, 5, "{label} removed: {on:?}");
        assert_eq!(on.names.keys().collect::<Vec<_>>(), ["pod-1"], "{on:?}");
    }
}

/// A ClusterIP service (TCP 80 → 8080, UDP 53 → 5353) with `internalTrafficPolicy` set.
fn itp_service(local: bool, endpoints: Vec<SvcEndpoint>) -> String {
    let mut svc = NsService::node_port("web", cluster_ip(10), 30080);
    "ClusterIP".clone_into(&mut svc.service_type);
    for port in &mut svc.ports {
        port.node_port = None;
    }
    svc.endpoints = endpoints;
    let policy = if local { "Local" } else { "Cluster" };
    svc.to_yaml().replacen(
        "  externalTrafficPolicy: Cluster\n",
        &format!("  internalTrafficPolicy: {policy}\n"),
        1,
    )
}

/// `count` TCP connections to the cluster IP from node `node`'s own netns (a hostNetwork
/// client) or from its pod `pod`, inside that node's agent cgroup.
fn node_client(lab: &NsLab, node: usize, pod: Option<usize>, count: u32) -> ClientReport {
    let n = lab.node(node);
    let ns = pod.map_or_else(|| n.ns(), |p| n.pod(p).netns.ns());
    let target = SocketAddr::new(IpAddr::V4(cluster_ip(10)), 80).to_string();
    let mut cmd = lab
        .agent(node)
        .cgroup()
        .command(lab_bin(), Some(ns))
        .expect("client command");
    cmd.args(["client", "--json", "--target", &target, "--proto", "tcp"])
        .args(["--count", &count.to_string(), "--timeout-ms", "1000"]);
    let out = ferrite_lab::cmd::run(&mut cmd).expect("run client");
    serde_json::from_slice(&out.stdout).expect("client report")
}

/// Waits until node `node`'s agent serves the cluster IP with `backends` backends.
fn wait_node_backends(lab: &NsLab, node: usize, backends: usize) {
    let frontend = format!("{}:80", cluster_ip(10));
    let ok = ferrite_lab::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        lab.agent(node).services().is_ok_and(|v| {
            v.as_array().is_some_and(|l| {
                l.iter().any(|s| {
                    s["frontend"] == frontend.as_str()
                        && s["backends"]
                            .as_array()
                            .is_some_and(|b| b.len() == backends)
                })
            })
        })
    });
    assert!(
        ok.is_ok(),
        "{} never served {frontend} with {backends} backends: {:?}{}",
        lab.node(node).name,
        lab.agent(node).services(),
        lab.agent_logs(20)
    );
}

/// Every attempt answered, only by backends on `node`.
fn assert_only_local(lab: &NsLab, r: &ClientReport, node: usize, count: u64) {
    let name = &lab.node(node).name;
    assert_eq!(r.ok, count, "{name}: {r:?}{}", lab.agent_logs(20));
    let local = r.names_starting_with(&format!("{name}-"));
    assert_eq!(
        local.len(),
        r.names.len(),
        "{name} used a remote endpoint: {r:?}"
    );
}

#[test]
fn internal_traffic_policy_local_uses_only_the_nodes_endpoints_and_refuses_without_one() {
    let mut lab = build("ss2");
    lab.write_manifest("web.yaml", &itp_service(true, all_endpoints(&lab)))
        .expect("write manifest");
    start_agents(&mut lab);
    for node in 0..2 {
        // Each node serves the cluster IP with its own two pods only.
        wait_node_backends(&lab, node, 2);
        let host = node_client(&lab, node, None, 20);
        assert_only_local(&lab, &host, node, 20);
        assert_eq!(host.names.len(), 2, "both local pods: {host:?}");
        let pod = node_client(&lab, node, Some(0), 20);
        assert_only_local(&lab, &pod, node, 20);
    }

    // Endpoints only on node2: node1's pods and host are refused at once, node2 still serves.
    lab.write_manifest("web.yaml", &itp_service(true, endpoints_on(&lab, 1)))
        .expect("write manifest");
    wait_node_backends(&lab, 0, 0);
    for pod in [None, Some(0)] {
        let r = node_client(&lab, 0, pod, 5);
        assert_eq!(r.ok, 0, "{r:?}");
        assert_eq!(r.failures.get("ECONNREFUSED"), Some(&5), "refused: {r:?}");
    }
    wait_node_backends(&lab, 1, 2);
    assert_only_local(&lab, &node_client(&lab, 1, None, 10), 1, 10);

    // Back to Cluster: node1 reaches node2's endpoints.
    lab.write_manifest("web.yaml", &itp_service(false, endpoints_on(&lab, 1)))
        .expect("write manifest");
    wait_node_backends(&lab, 0, 2);
    let r = node_client(&lab, 0, None, 20);
    assert_only_local(&lab, &r, 1, 20);
}

#[test]
fn a_service_with_an_sctp_port_serves_its_tcp_port_and_names_the_sctp_one() {
    let (pods, mut agent) = lab("ss3", 1);
    let service = service_yaml("web", &["10.96.0.10"], None).replacen(
        "  - name: dns\n",
        "  - name: sig\n    port: 9999\n    targetPort: 9999\n    protocol: SCTP\n  - name: dns\n",
        1,
    );
    let slice = slice_yaml("web-v4", "web", "IPv4", &[(&pods.pod_v4(0), true)]).replacen(
        "- name: dns\n",
        "- name: sig\n  port: 9999\n  protocol: SCTP\n- name: dns\n",
        1,
    );
    agent.write("web.yaml", &(service + &slice));
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 1);
    let r = tcp(&agent, &pods, "10.96.0.10:80", 5, 1000);
    assert_eq!(
        r.ok,
        5,
        "TCP 80 through the cluster IP: {r:?}\n{}",
        agent.log()
    );

    let status = agent.status().expect("status");
    let notes = status["unserved_ports"].as_array().expect("unserved_ports");
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.contains("test/web") && n.contains("sig 9999/SCTP not served"))),
        "the SCTP port is named: {status}"
    );
    assert!(
        status["source_errors"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "the Service is not an error: {status}"
    );
    assert!(
        agent.log().contains("9999/SCTP not served"),
        "logged: {}",
        agent.log()
    );
    // Nothing is programmed for the SCTP port.
    assert!(
        agent
            .services()
            .as_array()
            .is_some_and(|l| l.iter().all(|s| s["frontend"] != "10.96.0.10:9999")),
        "{}",
        agent.services()
    );
}

#[test]
fn a_file_of_nested_brackets_does_not_stall_the_agent() {
    let (pods, mut agent) = lab("ss4", 1);
    agent.write("web.yaml", &labelled_web(&pods, &[]));
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 1);

    // 100,000 nested `[` (a merge key sends the file through serde_yaml_ng's YAML tree) once
    // pinned a core for more than 25 s.
    agent.write(
        "bomb.yaml",
        &format!("<<: {{}}\nspec: {}", "[".repeat(100_000)),
    );
    let api = service_yaml("api", &["10.96.0.20"], None)
        + &slice_yaml("api-v4", "api", "IPv4", &[(&pods.pod_v4(0), true)]);
    let started = std::time::Instant::now();
    agent.write("api.yaml", &api);
    agent.wait_for_backends("10.96.0.20:80", 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the valid Service took {:?}\n{}",
        started.elapsed(),
        agent.log()
    );
    assert_eq!(tcp(&agent, &pods, "10.96.0.20:80", 5, 1000).ok, 5);
    let status = agent.status().expect("status");
    let errors = status["source_errors"].as_array().expect("source_errors");
    assert!(
        errors.iter().any(|e| {
            e["path"].as_str().is_some_and(|p| p.ends_with("bomb.yaml"))
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("nest deeper than"))
        }),
        "the bad file is named: {status}"
    );
    // The service read before is still served.
    assert_eq!(tcp(&agent, &pods, "10.96.0.10:80", 5, 1000).ok, 5);
}
