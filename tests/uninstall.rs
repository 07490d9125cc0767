//! `ferrite uninstall` as root: an agent with a ClusterIP Service and the CNI installed, killed
//! with its datapath left in place (it keeps rewriting the ClusterIP, as it should for an agent
//! restart); then `ferrite uninstall` leaves nothing of ferrite attached to the cgroup, no pins,
//! no conflist or plugin, and the ClusterIP fails exactly like an address nobody serves. Also:
//! the agent tells systemd it is ready (sd_notify `READY=1` on `$NOTIFY_SOCKET`).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{AgentLab, FERRITE, PodLab, require_root, service_yaml, slice_yaml};

/// ferrite's program names on the cgroup, as bpftool lists them.
fn ferrite_programs_on(cgroup: &Path) -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("run bpftool cgroup show");
    assert!(out.status.success(), "bpftool cgroup show: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let list: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Array(Vec::new())
    } else {
        serde_json::from_str(&text).expect("bpftool JSON")
    };
    list.as_array()
        .expect("bpftool list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with("fe_"))
        .map(str::to_owned)
        .collect()
}

fn uninstall(lab: &AgentLab, bpf_root: &Path, cni: &Path) -> (bool, serde_json::Value) {
    let out = Command::new(FERRITE)
        .arg("uninstall")
        .arg("--bpf-root")
        .arg(bpf_root)
        .arg("--cgroup")
        .arg(lab.cgroup.path())
        .arg("--api-socket")
        .arg(&lab.socket)
        .arg("--cni-conf-dir")
        .arg(cni.join("net.d"))
        .arg("--cni-bin-dir")
        .arg(cni.join("bin"))
        .args(["-o", "json"])
        .output()
        .expect("run ferrite uninstall");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "uninstall JSON: {e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Until the agent has written its conflist and installed the plugin.
fn wait_installed(lab: &AgentLab, conflist: &Path, plugin: &Path) {
    let installed =
        ferrite_lab::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            conflist.is_file() && plugin.is_file()
        });
    assert!(
        installed.is_ok(),
        "CNI never installed; log:\n{}",
        lab.log()
    );
}

fn count(report: &serde_json::Value, what: &str) -> usize {
    report["done"]
        .as_array()
        .expect("done list")
        .iter()
        .filter(|o| o["what"] == what)
        .count()
}

#[test]
fn uninstall_detaches_everything_and_the_cluster_ip_stops_translating() {
    require_root();
    let pods = PodLab::new("un1", 1);
    let mut lab = AgentLab::new("un1");
    let yaml = service_yaml("web", &["10.96.0.10"], None)
        + &slice_yaml("web-v4", "web", "IPv4", &[(&pods.pod_v4(0), true)]);
    lab.write("web.yaml", &yaml);
    let cni = lab.work.path().join("cni");
    let notify_path = lab.work.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let source = format!("dir:{}", lab.manifests.display());
    let conf_dir = cni.join("net.d");
    let bin_dir = cni.join("bin");
    lab.start_with(
        &source,
        &[
            "--pod-cidr",
            "10.244.0.0/24",
            "--cni-conf-dir",
            conf_dir.to_str().expect("utf8"),
            "--cni-bin-dir",
            bin_dir.to_str().expect("utf8"),
        ],
        &[("NOTIFY_SOCKET", notify_path.as_os_str())],
        true,
    );

    // sd_notify: READY=1 once the first snapshot is applied.
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 from the agent");
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");

    lab.wait_for_backends("10.96.0.10:80", 1);
    let conflist = conf_dir.join("05-ferrite.conflist");
    let plugin = bin_dir.join("ferrite");
    wait_installed(&lab, &conflist, &plugin);
    let args = [
        "--target",
        "10.96.0.10:80",
        "--count",
        "5",
        "--timeout-ms",
        "300",
    ];
    assert_eq!(lab.client(&pods.node, &args).ok, 5);

    // A killed agent leaves its datapath: the ClusterIP is still rewritten (upgrade path).
    lab.kill9();
    assert_eq!(
        lab.client(&pods.node, &args).ok,
        5,
        "datapath outlives the agent"
    );
    assert_eq!(ferrite_programs_on(lab.cgroup.path()).len(), 8);

    // With a bpf root that holds nothing, the cgroup sweep alone detaches every fe_ link.
    let elsewhere = lab.work.path().join("no-bpf-root");
    let (ok, report) = uninstall(&lab, &elsewhere, &cni);
    assert!(ok, "{report}");
    assert_eq!(count(&report, "cgroup link"), 8, "{report}");
    assert_eq!(ferrite_programs_on(lab.cgroup.path()), Vec::<String>::new());
    assert!(!conflist.exists() && !plugin.exists(), "{report}");

    // Now the real paths: the pins go, then nothing is left to do.
    assert!(lab.bpf_root.join("maps").is_dir());
    let (ok, report) = uninstall(&lab, &lab.bpf_root, &cni);
    assert!(ok, "{report}");
    assert!(count(&report, "pin") >= 8, "{report}");
    assert!(
        !lab.bpf_root.exists(),
        "{} left behind",
        lab.bpf_root.display()
    );

    let (ok, report) = uninstall(&lab, &lab.bpf_root, &cni);
    assert!(ok, "{report}");
    assert_eq!(
        report["done"],
        serde_json::json!([]),
        "a second run is a no-op"
    );
    assert_eq!(report["errors"], serde_json::json!([]));

    // The ClusterIP now fails exactly like an address no Service has.
    let after = lab.client(&pods.node, &args);
    let unknown = lab.client(
        &pods.node,
        &[
            "--target",
            "10.96.0.99:80",
            "--count",
            "5",
            "--timeout-ms",
            "300",
        ],
    );
    assert_eq!(after.ok, 0, "{after:?}");
    assert!(after.names.is_empty(), "{after:?}");
    assert_eq!(after.failures, unknown.failures, "{after:?} vs {unknown:?}");
}

const DAEMONSET: &str = "\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ferrite, namespace: kube-system}
spec: {selector: {matchLabels: {app: ferrite}}, template: {metadata: {labels: {app: ferrite}}, spec: {containers: [{name: ferrite, image: x}]}}}
";

/// The addon's cleanup path: a kube-mode agent (`--daemonset ferrite`, as the generated
/// DaemonSet runs it) stopped with SIGTERM while its DaemonSet exists keeps everything (a
/// rolling upgrade); once `kubectl delete` removed the DaemonSet, the same stop leaves nothing
/// attached, pinned or installed.
#[test]
fn sigterm_uninstalls_only_when_the_daemonset_was_deleted() {
    require_root();
    let pods = PodLab::new("un2", 1);
    let mut lab = AgentLab::new("un2");
    let dir = lab.work.path().join("apiserver");
    std::fs::create_dir_all(&dir).expect("fake API dir");
    let api = ferrite_fakeapi::FakeApi::start_with(&dir, &ferrite_fakeapi::Options::default())
        .expect("fake API server");
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: test-node}\n\
                spec: {podCIDRs: [10.244.0.0/24]}\n\
                status: {addresses: [{type: InternalIP, address: 192.0.2.10}]}\n---\n";
    let web = service_yaml("web", &["10.96.0.10"], None)
        + &slice_yaml("web-v4", "web", "IPv4", &[(&pods.pod_v4(0), true)]);
    api.load_yaml(&format!("{node}{DAEMONSET}---\n{web}"))
        .expect("cluster objects");
    let cni = lab.work.path().join("cni");
    let (conf_dir, bin_dir) = (cni.join("net.d"), cni.join("bin"));
    let kubeconfig = api.kubeconfig().as_os_str().to_owned();
    let args = [
        "--daemonset",
        "ferrite",
        "--cni-conf-dir",
        conf_dir.to_str().expect("utf8"),
        "--cni-bin-dir",
        bin_dir.to_str().expect("utf8"),
    ];
    let env = [("KUBECONFIG", kubeconfig.as_os_str())];
    let probe = [
        "--target",
        "10.96.0.10:80",
        "--count",
        "5",
        "--timeout-ms",
        "300",
    ];
    let (conflist, plugin) = (
        conf_dir.join("05-ferrite.conflist"),
        bin_dir.join("ferrite"),
    );
    let start = |lab: &mut AgentLab| {
        lab.start_with("kube", &args, &env, true);
        lab.wait_for_backends("10.96.0.10:80", 1);
        wait_installed(lab, &conflist, &plugin);
    };

    // DaemonSet present: SIGTERM is an upgrade; everything stays and keeps serving.
    start(&mut lab);
    let exit = lab.terminate();
    assert!(exit.success(), "exit {exit}; log:\n{}", lab.log());
    assert!(lab.log().contains("still exists"), "{}", lab.log());
    assert_eq!(ferrite_programs_on(lab.cgroup.path()).len(), 8);
    assert!(lab.bpf_root.join("maps").is_dir());
    assert!(conflist.is_file() && plugin.is_file());
    assert_eq!(
        lab.client(&pods.node, &probe).ok,
        5,
        "datapath outlives the agent"
    );

    // `kubectl delete` of the addon: the DaemonSet goes first, then its pods are stopped.
    start(&mut lab);
    api.delete("apps/v1", "DaemonSet", "kube-system", "ferrite")
        .expect("delete the DaemonSet");
    let exit = lab.terminate();
    assert!(exit.success(), "exit {exit}; log:\n{}", lab.log());
    assert!(lab.log().contains("uninstalling"), "{}", lab.log());
    assert_eq!(
        ferrite_programs_on(lab.cgroup.path()),
        Vec::<String>::new(),
        "log:\n{}",
        lab.log()
    );
    assert!(
        !lab.bpf_root.exists(),
        "{} left behind",
        lab.bpf_root.display()
    );
    assert!(!conflist.exists() && !plugin.exists());
    assert!(!lab.socket.exists(), "API socket left behind");
    let after = lab.client(&pods.node, &probe);
    assert_eq!(after.ok, 0, "{after:?}");
}
