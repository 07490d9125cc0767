//! Chaining: ferrite first in a conflist followed by the reference `portmap`, `bandwidth` and
//! `tuning` plugins (Debian's containernetworking-plugins), run the way libcni runs a list.

mod cni_common;
mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cni_common::{Chain, NodeLab, REFERENCE_PLUGINS, links, require_reference_plugins, stored};
use ferrite_lab::{Child, wait_until};
use serde_json::{Value, json};

fn plugin_dirs(work: &std::path::Path) -> Vec<PathBuf> {
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(cni_common::FERRITE, bin.join("ferrite")).unwrap();
    vec![bin, PathBuf::from(REFERENCE_PLUGINS)]
}

#[test]
fn ferrite_then_portmap_bandwidth_tuning() {
    require_reference_plugins();
    let lab = NodeLab::new("cnic", 1);
    let work = common::TempDir::new("cni-chain");
    let node = lab.node.ns();
    let pod = lab.pods[0].ns();
    let mut ferrite = cni_common::conf(
        "1.0.0",
        "chain",
        work.path(),
        &["10.65.0.0/24", "fd00:65::/64"],
    );
    ferrite["capabilities"] = json!({"ips": true});
    let chain = Chain {
        conflist: json!({
            "cniVersion": "1.0.0",
            "name": "chain",
            "plugins": [
                ferrite,
                {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}},
                {"type": "tuning", "sysctl": {"net.core.somaxconn": "777"}},
            ],
        }),
        plugin_dirs: plugin_dirs(work.path()),
    };
    let caps = json!({
        "portMappings": [{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 1_000_000},
        "ips": ["10.65.0.9/24"],
    });
    let netns = lab.pod_path(0);
    let result = chain
        .add(node, "chained", &netns, &caps)
        .unwrap_or_else(|r| panic!("chain ADD failed: {r:#?}"));

    // Dual stack on purpose: portmap 1.1.1's CHECK insists on its IPv6 chain even for an
    // IPv4-only attachment (containernetworking/plugins#819).
    // Every plugin passed ferrite's result through.
    assert_eq!(result["ips"][0]["address"], "10.65.0.9/32", "{result}");
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    let host = result["interfaces"][0]["name"].as_str().unwrap().to_owned();

    // tuning: the sysctl landed in the pod.
    assert_eq!(
        pod.run(|| std::fs::read_to_string("/proc/sys/net/core/somaxconn"))
            .unwrap()
            .unwrap()
            .trim(),
        "777"
    );
    // bandwidth: a token bucket on the host end.
    let qdisc = std::process::Command::new("tc")
        .args(["qdisc", "show", "dev", &host])
        .pipe_in(node);
    assert!(qdisc.contains("tbf"), "no tbf on {host}: {qdisc}");
    // portmap: the host port reaches the pod's server.
    let lab_bin = common::lab_bin();
    let mut server_cmd = pod.command(&lab_bin).unwrap();
    server_cmd
        .args(["serve", "--name", "pod0", "--tcp", "0.0.0.0:8080"])
        .stdout(Stdio::null());
    let _server = Child::spawn(&mut server_cmd).unwrap();
    let reached = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let out = node
            .command(&lab_bin)
            .unwrap()
            .args([
                "client",
                "--target",
                "10.65.0.1:18080",
                "--count",
                "3",
                "--json",
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["names"]["pod0"] == 3
    });
    assert!(reached.is_ok(), "hostPort 18080 did not reach the pod");

    // CHECK through the chain. portmap 1.1.1 (Debian) cannot CHECK its own rules: it looks
    // for the IPv4 rules in its IPv6 chain (containernetworking/plugins#819), so it sits out.
    chain
        .check(node, "chained", &netns, &caps, &result, &["portmap"])
        .unwrap_or_else(|r| panic!("chain CHECK failed: {r:#?}"));

    // DEL in reverse order removes everything.
    chain
        .del(node, "chained", &netns, &caps, Some(&result))
        .unwrap_or_else(|r| panic!("chain DEL failed: {r:#?}"));
    assert!(!links(node).contains(&host));
    assert!(stored(&work.path().join("ipam"), "chain").is_empty());
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .pipe_in(node);
    assert!(!nat.contains("18080"), "portmap rules left behind:\n{nat}");
}

trait PipeIn {
    /// Runs the command inside `ns` and returns its stdout (panics on failure).
    fn pipe_in(&mut self, ns: &ferrite_lab::Ns) -> String;
}

impl PipeIn for std::process::Command {
    fn pipe_in(&mut self, ns: &ferrite_lab::Ns) -> String {
        let out = ns.exec(self).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
