//! Service semantics Kubernetes' e2e suite checks, end to end with the real agent on a `dir:`
//! source: services left to another proxy by their labels, `internalTrafficPolicy: Local`,
//! Services mixing SCTP with TCP ports, and manifests built to stall a YAML parser.

mod common;

use std::time::Duration;

use common::{AgentLab, PodLab, require_root, service_yaml, slice_yaml};
use ferrite_lab::report::ClientReport;

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
