//! A real runtime driven the way k3s drives it, as root: two node netns on a LAN, each running
//! Debian's containerd with its CRI plugin (own root, state and socket) from a `config.toml`
//! shaped like k3s's, and the shipped agent (the DaemonSet's args, paths rewritten, no CNI dir
//! flags: it reads them from that `config.toml`, mounted where k3s keeps it). The sandbox image
//! is busybox-static packed here with umoci and imported with `ctr` (no registry). Over CRI gRPC,
//! as the kubelet: RunPodSandbox on both nodes → each pod has an address from its node's
//! PodCIDR, reaches the pod on the other node (unmasqueraded) and a ClusterIP whose backend is
//! there; StopPodSandbox + RemovePodSandbox → the address is released in the IPAM store and the
//! pod's veth is gone. Netns prefix `cr`.
//!
//! Run: `flock /tmp/ferrite-privtest.lock cargo test --test cri_containerd -- --test-threads=1`.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{FERRITE, lab_bin, require_root};
use ferrite_lab::cri::{CriClient, netns_path, sandbox_config};
use ferrite_lab::netns::Ns;
use ferrite_lab::podlab::{PodLab, PodLabConfig, PodNode};
use ferrite_lab::report::ClientReport;
use ferrite_lab::{Child, Cidr, NsService, SvcEndpoint, wait_until};
use serde_json::Value;

const PORT: u16 = 8080;

fn start() -> PodLab {
    require_root();
    let _ = ferrite_lab::cleanup_stale("cr");
    PodLab::start(
        Path::new(FERRITE),
        PodLabConfig {
            prefix: "cr".into(),
            lan_nodes: 2,
            far_nodes: 0,
            containerd: true,
            ..PodLabConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting the containerd lab: {e}"))
}

fn cri(node: &PodNode) -> CriClient {
    node.containerd
        .as_ref()
        .expect("containerd lab")
        .client()
        .expect("CRI client")
}

fn containerd_log(node: &PodNode) -> String {
    node.containerd
        .as_ref()
        .map(|c| c.log_tail(20))
        .unwrap_or_default()
}

/// A sandbox the kubelet would run for `test/NAME`: its id, address and netns.
struct Sandbox {
    id: String,
    ip: IpAddr,
    netns: Ns,
}

fn run_sandbox(lab: &PodLab, node: usize, name: &str) -> Sandbox {
    let n = &lab.nodes[node];
    let client = cri(n);
    // containerd reports NetworkReady once it loaded the conflist the agent wrote.
    let mut conditions = Vec::new();
    let ready = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        conditions = client.conditions().unwrap_or_default();
        conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status)
    });
    assert!(
        ready.is_ok(),
        "{}: containerd's network never ready: {conditions:?}\n{}",
        n.name,
        containerd_log(n)
    );
    let logs = n.dir.join("pod-logs").join(name);
    std::fs::create_dir_all(&logs).unwrap();
    let config = sandbox_config("test", name, &format!("uid-{name}"), &logs);
    let id = client
        .run_pod_sandbox(config)
        .unwrap_or_else(|e| panic!("{}: RunPodSandbox: {e}\n{}", n.name, containerd_log(n)));
    let status = client.pod_sandbox_status(&id).expect("PodSandboxStatus");
    let s = status.status.clone().expect("a status");
    assert_eq!(s.state, 0, "SANDBOX_READY: {s:?}");
    let ip: IpAddr = s
        .network
        .as_ref()
        .map(|n| n.ip.as_str())
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("sandbox address {s:?}: {e}"));
    let path = netns_path(&status).unwrap_or_else(|| panic!("no netns in {:?}", status.info));
    let name = path
        .file_name()
        .and_then(|f| f.to_str())
        .expect("netns file name")
        .to_owned();
    assert!(
        Path::new("/run/netns").join(&name).exists(),
        "{} is not under /run/netns",
        path.display()
    );
    Sandbox {
        id,
        ip,
        netns: Ns::Named(name),
    }
}

/// `ferrite-lab client` inside `sandbox`, in the node's cgroup (the socket LB applies to it as
/// to a pod's processes under the kubelet).
fn client(node: &PodNode, sandbox: &Sandbox, target: SocketAddr, count: u64) -> ClientReport {
    let mut cmd = node
        .cgroup()
        .command(lab_bin(), Some(&sandbox.netns))
        .expect("client command");
    cmd.args(["client", "--json", "--target", &target.to_string()])
        .args(["--proto", "tcp"])
        .args(["--count", &count.to_string(), "--timeout-ms", "1000"]);
    let out = ferrite_lab::cmd::run(&mut cmd).expect("run client");
    serde_json::from_slice(&out.stdout).expect("client report")
}

/// `ferrite-lab serve --echo-peer` in `sandbox`, named `name`.
fn serve(node: &PodNode, sandbox: &Sandbox, name: &str) -> Child {
    let mut cmd = node
        .cgroup()
        .command(lab_bin(), Some(&sandbox.netns))
        .expect("serve command");
    cmd.args(["serve", "--echo-peer", "--name", name])
        .args(["--tcp", &format!("0.0.0.0:{PORT}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Child::spawn(&mut cmd).expect("spawn serve")
}

/// The node's IPAM allocations (`ferrite cni allocations -o json`).
fn allocations(node: &PodNode) -> Vec<Value> {
    let out = ferrite_lab::cmd::run(
        std::process::Command::new(FERRITE)
            .args(["cni", "allocations", "-o", "json", "--state-dir"])
            .arg(node.state_dir.join("cni")),
    )
    .expect("ferrite cni allocations");
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn veths(node: &PodNode) -> BTreeSet<String> {
    let text = node
        .ip(&["-j", "link", "show", "type", "veth"])
        .unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

fn pod_cidr(node: &PodNode) -> Cidr {
    format!("10.246.{}.0/24", node.index).parse().unwrap()
}

/// The agent found the CNI dirs in containerd's config.toml (it was given none).
fn assert_installed_where_config_toml_says(lab: &PodLab) {
    for n in &lab.nodes {
        let st = n.status().expect("status");
        let cni = st["subsystems"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "cni"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(cni["ready"], true, "{st}");
        let detail = cni["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&n.conf_dir.display().to_string())
                && detail.contains(&n.bin_dir.display().to_string()),
            "{}: the conflist and plugin went where config.toml says: {detail}",
            n.name
        );
    }
}

/// The addresses the node's IPAM store holds.
fn held_ips(node: &PodNode) -> Vec<String> {
    allocations(node)
        .iter()
        .filter_map(|a| a["ip"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn cri_sandboxes_get_pod_addresses_reach_other_nodes_and_cluster_ips_and_release_them() {
    let lab = start();
    assert_installed_where_config_toml_says(&lab);

    let server = run_sandbox(&lab, 1, "server");
    let _serving = serve(&lab.nodes[1], &server, "server");
    let veths_before = veths(&lab.nodes[0]);
    let pod = run_sandbox(&lab, 0, "client");
    for (n, s) in [(&lab.nodes[0], &pod), (&lab.nodes[1], &server)] {
        assert!(
            pod_cidr(n).contains(s.ip),
            "{}: {} not in {}",
            n.name,
            s.ip,
            pod_cidr(n)
        );
    }
    let held = held_ips(&lab.nodes[0]);
    assert!(
        held.contains(&pod.ip.to_string()),
        "the IPAM store holds {}: {held:?}",
        pod.ip
    );
    let pod_veths: Vec<String> = veths(&lab.nodes[0])
        .difference(&veths_before)
        .cloned()
        .collect();
    assert_eq!(
        pod_veths.len(),
        1,
        "one veth for the sandbox: {pod_veths:?}"
    );

    // Pod to pod across nodes, not masqueraded.
    let target = SocketAddr::new(server.ip, PORT);
    let _ = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        client(&lab.nodes[0], &pod, target, 1).ok == 1
    });
    let r = client(&lab.nodes[0], &pod, target, 3);
    assert_eq!(
        r.ok,
        3,
        "{} → {target}: {r:?}\nroutes: {}\n{}",
        pod.ip,
        lab.nodes[0].ip(&["route"]).unwrap_or_default(),
        lab.nodes[0].log_tail(20)
    );
    assert_eq!(
        r.all_peers_seen(),
        BTreeSet::from([pod.ip.to_string().as_str()]),
        "pod→pod traffic keeps the pod's address"
    );

    // A ClusterIP (80 → 8080) whose only backend is the pod on the other node.
    let mut svc = NsService::node_port("remote", "10.96.8.8".parse().unwrap(), 30888);
    svc.endpoints = vec![SvcEndpoint::new(server.ip, &lab.nodes[1].name)];
    lab.write_manifest("svc.yaml", &svc.to_yaml()).unwrap();
    let vip = SocketAddr::new("10.96.8.8".parse().unwrap(), 80);
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        client(&lab.nodes[0], &pod, vip, 1)
            .names
            .contains_key("server")
    });
    assert!(
        ok.is_ok(),
        "ClusterIP {vip} from the sandbox never reached the server pod"
    );
    let r = client(&lab.nodes[0], &pod, vip, 5);
    assert_eq!(r.names.get("server"), Some(&5), "{r:?}");

    // The kubelet deletes the pod: the address and the veth go.
    let c = cri(&lab.nodes[0]);
    c.stop_pod_sandbox(&pod.id).expect("StopPodSandbox");
    c.remove_pod_sandbox(&pod.id).expect("RemovePodSandbox");
    let held = held_ips(&lab.nodes[0]);
    assert!(
        !held.contains(&pod.ip.to_string()),
        "{} still allocated after RemovePodSandbox: {held:?}",
        pod.ip
    );
    let left = veths(&lab.nodes[0]);
    assert!(
        pod_veths.iter().all(|v| !left.contains(v)),
        "the sandbox's veth {pod_veths:?} is still there: {left:?}"
    );
    assert!(
        !pod.netns.path().exists(),
        "the sandbox netns {} is still there",
        pod.netns.path().display()
    );
    let c = cri(&lab.nodes[1]);
    c.stop_pod_sandbox(&server.id).expect("StopPodSandbox");
    c.remove_pod_sandbox(&server.id).expect("RemovePodSandbox");
}
