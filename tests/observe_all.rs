//! `ferrite observe --all-nodes` end to end, as root: two node netns on a LAN, each agent with
//! its TLS listener (`--api-listen`, a server certificate naming both node addresses, client
//! certificates required), north-south traffic through both nodes' NodePorts, and the command
//! run on node 1 with a client certificate: it asks both agents (nodes from `/v1/nodes`) and
//! prints both nodes' flows in time order. Without a certificate it refuses to start; a node
//! whose listener is gone is named on stderr while the other's flows still show.
//!
//! Run as root: `cargo test --test observe_all`.

mod common;
mod northsouth_common;

use std::net::IpAddr;
use std::time::Duration;

use common::pki::Pki;
use ferrite_lab::manifest::node_yaml;
use ferrite_lab::{NsLab, wait_until};
use northsouth_common::nodeport_and_lb_ip_scenario;
use serde_json::Value;

const PORT: u16 = 9443;

fn pki(lab_v4: &[String]) -> Pki {
    let pki = Pki::new("oba-pki");
    pki.ca("ca");
    let sans: Vec<String> = lab_v4.iter().map(|ip| format!("IP:{ip}")).collect();
    pki.leaf(
        "server",
        "ca",
        &format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth",
            sans.join(",")
        ),
    );
    pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
    pki
}

/// `ferrite observe --all-nodes ARGS` in node 1's netns against its agent.
fn observe_all(lab: &NsLab, pki: Option<&Pki>, args: &[&str]) -> std::process::Output {
    let agent = lab.agent(0);
    let mut cmd = lab
        .node(0)
        .ns()
        .command(common::FERRITE)
        .expect("command in node1's netns");
    cmd.args(["observe", "--all-nodes", "--api-port", &PORT.to_string()])
        .args(args)
        .arg("--api-socket")
        .arg(&agent.socket);
    if let Some(p) = pki {
        cmd.arg("--tls-cert")
            .arg(p.path("client.pem"))
            .arg("--tls-key")
            .arg(p.path("client.key"))
            .arg("--tls-ca")
            .arg(p.path("ca.pem"));
    }
    cmd.output().expect("run ferrite observe")
}

/// How many nodes node1's agent lists in `/v1/nodes`.
fn nodes_known(lab: &NsLab) -> usize {
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&lab.agent(0).socket)
        .arg("http://ferrite/v1/nodes")
        .output()
        .expect("curl (apt-get install curl)");
    serde_json::from_slice::<Vec<Value>>(&out.stdout).map_or(0, |v| v.len())
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn observe_all_nodes_merges_every_agents_flows_over_mutual_tls() {
    // The certificates are made before the agents start: their addresses are the lab's.
    let v4 = ["192.168.50.1".to_owned(), "192.168.50.2".to_owned()];
    let pki = pki(&v4);
    let (cert, key, ca) = (pki.s("server.pem"), pki.s("server.key"), pki.s("ca.pem"));
    let listen = format!("0.0.0.0:{PORT}");
    let args = [
        "--api-listen",
        listen.as_str(),
        "--api-tls-cert",
        cert.as_str(),
        "--api-tls-key",
        key.as_str(),
        "--api-client-ca",
        ca.as_str(),
    ];
    // Traffic through both nodes' NodePorts and the LB IP (node 1) happens in the scenario.
    let mut lab = nodeport_and_lb_ip_scenario("oba", &args);
    for (i, ip) in v4.iter().enumerate() {
        assert_eq!(
            lab.node(i).v4().to_string(),
            *ip,
            "the lab's node addresses changed: the certificate names {v4:?}"
        );
    }

    // The nodes to ask come from the agents' source: both Node objects.
    let nodes: String = (0..2)
        .map(|i| node_yaml(&lab.node(i).name, IpAddr::V4(lab.node(i).v4()), &[]))
        .collect();
    lab.write_manifest("nodes.yaml", &nodes).unwrap();
    let known = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        nodes_known(&lab) == 2
    });
    assert!(known.is_ok(), "/v1/nodes of node1: {}", nodes_known(&lab));
    let out = observe_all(
        &lab,
        Some(&pki),
        &["-o", "json", "--type", "north-south", "--last", "500"],
    );
    assert!(out.status.success(), "{out:?}");
    let flows = json_lines(&out);
    for node in ["node1", "node2"] {
        assert!(
            flows
                .iter()
                .any(|f| f["node"] == node && f["verdict"] == "FORWARDED"),
            "no flow of {node} in the merged answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let times: Vec<u64> = flows
        .iter()
        .map(|f| f["time_unix_ms"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {times:?}"
    );

    // Without a client certificate: refused before any request.
    let out = observe_all(&lab, None, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert"),
        "{out:?}"
    );

    // node2's agent gone: named on stderr, node1's flows still shown.
    lab.stop_agent(1);
    let out = observe_all(&lab, Some(&pki), &["-o", "json", "--type", "north-south"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("node node2"), "{stderr}");
    let flows = json_lines(&out);
    assert!(
        !flows.is_empty() && flows.iter().all(|f| f["node"] == "node1"),
        "{flows:?}"
    );
}
