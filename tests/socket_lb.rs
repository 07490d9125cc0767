//! The eBPF socket load balancer end to end, as root: a node netns with pod netns running real
//! TCP/UDP servers, client processes in a test cgroup, and the real agent on a `dir:` source.

mod common;

use std::time::Duration;

use common::{AgentLab, PodLab, require_root, service_yaml, slice_yaml};

fn lab(prefix: &str, pods: usize) -> (PodLab, AgentLab) {
    require_root();
    (PodLab::new(prefix, pods), AgentLab::new(prefix))
}

fn two_pod_service(pods: &PodLab, agent: &AgentLab, affinity: Option<u32>) {
    let yaml = service_yaml("web", &["10.96.0.10", "fd00:96::10"], affinity)
        + &slice_yaml(
            "web-v4",
            "web",
            "IPv4",
            &[(&pods.pod_v4(0), true), (&pods.pod_v4(1), true)],
        )
        + &slice_yaml(
            "web-v6",
            "web",
            "IPv6",
            &[(&pods.pod_v6(0), true), (&pods.pod_v6(1), true)],
        );
    agent.write("web.yaml", &yaml);
}

#[test]
fn tcp_and_udp_to_a_cluster_ip_reach_every_backend() {
    let (pods, mut agent) = lab("lb1", 2);
    two_pod_service(&pods, &agent, None);
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 2);

    let tcp = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "60",
        ],
    );
    assert_eq!(tcp.ok, 60, "{tcp:?}");
    assert!(
        tcp.names.contains_key("pod-1") && tcp.names.contains_key("pod-2"),
        "{tcp:?}"
    );
    assert_eq!(
        tcp.peers.iter().collect::<Vec<_>>(),
        ["10.96.0.10:80"],
        "getpeername shows the service"
    );

    let udp = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:53",
            "--proto",
            "udp",
            "--count",
            "60",
        ],
    );
    assert_eq!(udp.ok, 60, "{udp:?}");
    assert_eq!(udp.names.len(), 2, "{udp:?}");

    let unconnected = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:53",
            "--proto",
            "udp",
            "--udp-unconnected",
            "--count",
            "40",
        ],
    );
    assert_eq!(unconnected.ok, 40, "{unconnected:?}");
    assert_eq!(
        unconnected.reply_sources.iter().collect::<Vec<_>>(),
        ["10.96.0.10:53"],
        "recvmsg hook shows replies coming from the service address"
    );
}

#[test]
fn ipv6_cluster_ip_works_for_tcp_and_udp() {
    let (pods, mut agent) = lab("lb2", 2);
    two_pod_service(&pods, &agent, None);
    agent.start();
    agent.wait_for_backends("[fd00:96::10]:80", 2);

    let tcp = agent.client(
        &pods.node,
        &[
            "--target",
            "[fd00:96::10]:80",
            "--proto",
            "tcp",
            "--count",
            "40",
        ],
    );
    assert_eq!(tcp.ok, 40, "{tcp:?}");
    assert_eq!(tcp.names.len(), 2, "{tcp:?}");
    assert_eq!(tcp.peers.iter().collect::<Vec<_>>(), ["[fd00:96::10]:80"]);

    let udp = agent.client(
        &pods.node,
        &[
            "--target",
            "[fd00:96::10]:53",
            "--proto",
            "udp",
            "--udp-unconnected",
            "--count",
            "40",
        ],
    );
    assert_eq!(udp.ok, 40, "{udp:?}");
    assert_eq!(udp.names.len(), 2, "{udp:?}");
    assert_eq!(
        udp.reply_sources.iter().collect::<Vec<_>>(),
        ["[fd00:96::10]:53"]
    );
}

#[test]
fn client_ip_affinity_sticks_to_one_backend() {
    let (pods, mut agent) = lab("lb3", 3);
    let yaml = service_yaml("web", &["10.96.0.10"], Some(300))
        + &slice_yaml(
            "web-v4",
            "web",
            "IPv4",
            &[
                (&pods.pod_v4(0), true),
                (&pods.pod_v4(1), true),
                (&pods.pod_v4(2), true),
            ],
        );
    agent.write("web.yaml", &yaml);
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 3);
    let first = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "50",
        ],
    );
    assert_eq!(first.ok, 50, "{first:?}");
    assert_eq!(
        first.names.len(),
        1,
        "all connections of one client go to one backend: {first:?}"
    );
    let again = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "20",
        ],
    );
    assert_eq!(
        again.names.keys().collect::<Vec<_>>(),
        first.names.keys().collect::<Vec<_>>()
    );

    // The sticky backend leaves: the client moves, and sticks to its new choice.
    let sticky = first.names.keys().next().expect("one name").clone();
    let idx: usize = sticky
        .trim_start_matches("pod-")
        .parse::<usize>()
        .expect("pod-N")
        - 1;
    let remaining: Vec<(String, bool)> = (0..3)
        .filter(|i| *i != idx)
        .map(|i| (pods.pod_v4(i), true))
        .collect();
    let refs: Vec<(&str, bool)> = remaining.iter().map(|(a, r)| (a.as_str(), *r)).collect();
    agent.write(
        "web.yaml",
        &(service_yaml("web", &["10.96.0.10"], Some(300))
            + &slice_yaml("web-v4", "web", "IPv4", &refs)),
    );
    agent.wait_for_backends("10.96.0.10:80", 2);
    let moved = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "30",
        ],
    );
    assert_eq!(moved.ok, 30, "{moved:?}");
    assert_eq!(moved.names.len(), 1, "{moved:?}");
    assert!(
        !moved.names.contains_key(&sticky),
        "removed backend got traffic: {moved:?}"
    );
}

#[test]
fn removed_endpoint_gets_no_new_connections_within_one_second() {
    let (pods, mut agent) = lab("lb4", 2);
    two_pod_service(&pods, &agent, None);
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 2);

    // Mark pod-2 not ready, then give the agent exactly the 1 s the contract allows.
    let yaml = service_yaml("web", &["10.96.0.10"], None)
        + &slice_yaml(
            "web-v4",
            "web",
            "IPv4",
            &[(&pods.pod_v4(0), true), (&pods.pod_v4(1), false)],
        );
    agent.write("web.yaml", &yaml);
    std::thread::sleep(Duration::from_secs(1));
    let after = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "60",
        ],
    );
    assert_eq!(after.ok, 60, "{after:?}");
    assert_eq!(
        after.names.keys().collect::<Vec<_>>(),
        ["pod-1"],
        "{after:?}"
    );
}

#[test]
fn service_without_ready_endpoints_refuses_at_once() {
    let (pods, mut agent) = lab("lb5", 1);
    let yaml = service_yaml("web", &["10.96.0.10", "fd00:96::10"], None)
        + &slice_yaml("web-v4", "web", "IPv4", &[(&pods.pod_v4(0), false)]);
    agent.write("web.yaml", &yaml);
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 0);
    for target in ["10.96.0.10:80", "[fd00:96::10]:80"] {
        let r = agent.client(
            &pods.node,
            &[
                "--target",
                target,
                "--proto",
                "tcp",
                "--count",
                "10",
                "--timeout-ms",
                "3000",
            ],
        );
        assert_eq!(r.ok, 0, "{r:?}");
        assert_eq!(
            r.failures.get("ECONNREFUSED"),
            Some(&10),
            "refused, never a hang: {r:?}"
        );
    }
    let udp = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:53",
            "--proto",
            "udp",
            "--count",
            "5",
            "--timeout-ms",
            "3000",
        ],
    );
    assert_eq!(udp.failures.get("ECONNREFUSED"), Some(&5), "{udp:?}");
}

#[test]
fn kill_9_and_restart_of_the_agent_drop_no_connection() {
    let (pods, mut agent) = lab("lb6", 2);
    two_pod_service(&pods, &agent, None);
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 2);

    let client = agent.spawn_client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--duration-ms",
            "4000",
            "--interval-ms",
            "2",
            "--timeout-ms",
            "2000",
        ],
    );
    std::thread::sleep(Duration::from_millis(800));
    agent.kill9();
    std::thread::sleep(Duration::from_millis(800));
    agent.start();
    let status = agent.status().expect("restarted agent answers");
    assert_eq!(status["datapath"]["adopted"], true, "{status}");
    assert_eq!(
        status["last_apply"]["ops"], 0,
        "a restart with the same model rewrites nothing: {status}"
    );
    let out = client
        .output_within(Duration::from_secs(15))
        .expect("client finishes");
    let report: ferrite_lab::report::ClientReport =
        serde_json::from_slice(&out.stdout).expect("client JSON");
    assert!(report.attempts > 200, "{report:?}");
    assert_eq!(
        report.ok, report.attempts,
        "no connection failed: {report:?}"
    );
    assert_eq!(report.names.len(), 2, "{report:?}");
}

#[test]
fn a_broken_file_keeps_its_last_good_content_and_others_keep_flowing() {
    let (pods, mut agent) = lab("lb7", 2);
    two_pod_service(&pods, &agent, None);
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 2);

    agent.write(
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web\nspec: [",
    );
    let other = service_yaml("api", &["10.96.0.20"], None)
        + &slice_yaml("api-v4", "api", "IPv4", &[(&pods.pod_v4(1), true)]);
    agent.write("api.yaml", &other);
    agent.wait_for_backends("10.96.0.20:80", 1);

    let status = agent.status().expect("status");
    let errors = status["source_errors"]
        .as_array()
        .expect("source_errors")
        .clone();
    assert!(
        errors
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.ends_with("web.yaml"))),
        "the broken file is named: {status}"
    );
    let web = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "20",
        ],
    );
    assert_eq!(web.ok, 20, "last good content still served: {web:?}");
    let api = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.20:80",
            "--proto",
            "tcp",
            "--count",
            "5",
        ],
    );
    assert_eq!(api.names.keys().collect::<Vec<_>>(), ["pod-2"], "{api:?}");
}

#[test]
fn deleting_the_manifest_removes_the_service_and_cleanup_removes_every_pin() {
    let (pods, mut agent) = lab("lb8", 2);
    two_pod_service(&pods, &agent, None);
    agent.start();
    agent.wait_for_backends("10.96.0.10:80", 2);
    agent.remove("web.yaml");
    let gone = ferrite_lab::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        agent.services().as_array().is_some_and(Vec::is_empty)
    });
    assert!(gone.is_ok(), "{}", agent.services());
    let r = agent.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "3",
            "--timeout-ms",
            "300",
        ],
    );
    assert_eq!(r.ok, 0, "no longer translated: {r:?}");

    agent.kill9();
    let out = std::process::Command::new(common::FERRITE)
        .args(["agent", "--cleanup", "--bpf-root"])
        .arg(&agent.bpf_root)
        .arg("--cgroup")
        .arg(agent.cgroup.path())
        .output()
        .expect("cleanup");
    assert!(out.status.success(), "{out:?}");
    assert!(!agent.bpf_root.exists(), "bpf root removed");
    let progs =
        ferrite_lab::cgroup::attached_programs(agent.cgroup.path()).expect("bpftool cgroup show");
    assert!(!progs.contains("fe_connect4"), "programs detached: {progs}");
}
