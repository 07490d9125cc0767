//! LB IPAM with the real agent on a `dir:` source, as root: pools and LoadBalancer services as
//! YAML, addresses checked through `ferrite pools|services -o json` and reached with real TCP and
//! UDP from a client in the test cgroup (socket LB). Pool addresses are documentation ranges
//! (198.51.100.0/24, 2001:db8::/32): the socket LB translates them to pod addresses inside the
//! lab's namespaces, so nothing leaves the machine.
//!
//! Status written to a Kubernetes API server (the same values, through the kube source's writer)
//! is tested with the fake API server in the kube source's tests.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{AgentLab, PodLab, require_root, slice_yaml};
use ferrite_lab::wait_until;
use serde_json::Value;

fn lab(prefix: &str, pods: usize) -> (PodLab, AgentLab) {
    require_root();
    (PodLab::new(prefix, pods), AgentLab::new(prefix))
}

/// Starts the agent with its own `--state-dir` (under the lab's work dir).
fn start(agent: &mut AgentLab) {
    let source = format!("dir:{}", agent.manifests.display());
    agent.start_with(&source, &[], &[], true);
}

fn pool_yaml(name: &str, blocks: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata:\n  name: {name}\n\
         spec:\n  blocks:\n"
    );
    for block in blocks {
        let _ = match block.split_once('-') {
            Some((start, stop)) => writeln!(yaml, "  - start: \"{start}\"\n    stop: \"{stop}\""),
            None => writeln!(yaml, "  - cidr: \"{block}\""),
        };
    }
    yaml
}

/// A LoadBalancer service in namespace `test` with the given `(name, port, protocol)` ports
/// (names `http` → pod port 8080/TCP, `dns` → 5353/UDP), extra spec lines and annotations.
fn lb_yaml(
    name: &str,
    ports: &[(&str, u16, &str)],
    spec: &str,
    annotations: &[(&str, &str)],
) -> String {
    let mut yaml =
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: test\n");
    if !annotations.is_empty() {
        yaml.push_str("  annotations:\n");
        for (key, value) in annotations {
            let _ = writeln!(yaml, "    {key}: \"{value}\"");
        }
    }
    yaml.push_str("spec:\n  type: LoadBalancer\n");
    yaml.push_str(spec);
    yaml.push_str("  ports:\n");
    for (port_name, port, protocol) in ports {
        let target = if *port_name == "http" { "8080" } else { "5353" };
        let _ = writeln!(
            yaml,
            "  - name: {port_name}\n    port: {port}\n    targetPort: {target}\n    protocol: {protocol}"
        );
    }
    yaml
}

/// A service's EndpointSlices (v4 and v6) pointing at the first `count` pods.
fn endpoints(pods: &PodLab, service: &str, count: usize) -> String {
    fn ready(addresses: &[String]) -> Vec<(&str, bool)> {
        addresses.iter().map(|a| (a.as_str(), true)).collect()
    }
    let v4: Vec<String> = (0..count).map(|i| pods.pod_v4(i)).collect();
    let v6: Vec<String> = (0..count).map(|i| pods.pod_v6(i)).collect();
    slice_yaml(&format!("{service}-v4"), service, "IPv4", &ready(&v4))
        + &slice_yaml(&format!("{service}-v6"), service, "IPv6", &ready(&v6))
}

fn pools(agent: &AgentLab) -> Value {
    let out = agent.ferrite(&["pools", "-o", "json"]);
    assert!(out.status.success(), "ferrite pools: {out:?}");
    serde_json::from_slice(&out.stdout).expect("pools JSON")
}

fn service_entry<'a>(view: &'a Value, service: &str) -> Option<&'a Value> {
    view["services"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == service)
}

fn pool_entry<'a>(view: &'a Value, pool: &str) -> Option<&'a Value> {
    view["pools"].as_array()?.iter().find(|p| p["name"] == pool)
}

/// Waits until `ferrite pools` shows `service` with `reason` and exactly `addresses`.
fn wait_for_service(agent: &AgentLab, service: &str, reason: &str, addresses: &[&str]) -> Value {
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let view = pools(agent);
        service_entry(&view, service).is_some_and(|s| {
            s["reason"] == reason
                && s["addresses"].as_array().is_some_and(|a| {
                    a.iter()
                        .map(|v| v.as_str().unwrap_or_default())
                        .eq(addresses.iter().copied())
                })
        })
    });
    let view = pools(agent);
    assert!(
        ok.is_ok(),
        "{service} never had {reason} {addresses:?}: {view:#}\n{}",
        agent.log()
    );
    view
}

fn tcp(
    agent: &AgentLab,
    pods: &PodLab,
    target: &str,
    count: u32,
) -> ferrite_lab::report::ClientReport {
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
            "2000",
        ],
    )
}

#[test]
fn an_allocated_address_serves_tcp_and_udp_to_clients_in_the_cgroup() {
    let (pods, mut agent) = lab("ip1", 2);
    agent.write(
        "pool.yaml",
        &pool_yaml("lan", &["198.51.100.0/29", "2001:db8::/125"]),
    );
    let web = lb_yaml(
        "web",
        &[("http", 80, "TCP"), ("dns", 53, "UDP")],
        "  ipFamilyPolicy: PreferDualStack\n",
        &[],
    );
    agent.write("web.yaml", &(web + &endpoints(&pods, "web", 2)));
    start(&mut agent);

    let view = wait_for_service(
        &agent,
        "test/web",
        "satisfied",
        &["198.51.100.1", "2001:db8::1"],
    );
    let lan = pool_entry(&view, "lan").expect("pool lan");
    assert_eq!(
        (
            lan["total"].as_u64(),
            lan["used"].as_u64(),
            lan["available"].as_u64()
        ),
        (Some(12), Some(2), Some(10)),
        "{lan}"
    );
    agent.wait_for_backends("198.51.100.1:80", 2);
    agent.wait_for_backends("[2001:db8::1]:80", 2);

    let v4 = tcp(&agent, &pods, "198.51.100.1:80", 30);
    assert_eq!(v4.ok, 30, "{v4:?}");
    assert_eq!(v4.names.len(), 2, "both pods answer: {v4:?}");
    assert_eq!(
        v4.peers.iter().collect::<Vec<_>>(),
        ["198.51.100.1:80"],
        "getpeername shows the LB IP"
    );
    let v6 = tcp(&agent, &pods, "[2001:db8::1]:80", 20);
    assert_eq!(v6.ok, 20, "{v6:?}");
    let udp = agent.client(
        &pods.node,
        &[
            "--target",
            "198.51.100.1:53",
            "--proto",
            "udp",
            "--count",
            "20",
        ],
    );
    assert_eq!(udp.ok, 20, "{udp:?}");

    let table = agent.ferrite(&["pools"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.starts_with("POOL"), "{text}");
    assert!(
        text.contains("198.51.100.0/29,2001:db8::/125") && text.contains("test/web"),
        "{text}"
    );
}

#[test]
fn services_share_an_address_by_key_unless_their_ports_collide() {
    let (pods, mut agent) = lab("ip2", 1);
    agent.write(
        "pool.yaml",
        &pool_yaml("lan", &["198.51.100.10-198.51.100.19"]),
    );
    let key = [("metallb.universe.tf/allow-shared-ip", "dns")];
    let yaml = [
        lb_yaml("dns-tcp", &[("http", 53, "TCP")], "", &key),
        lb_yaml(
            "dns-udp",
            &[("dns", 53, "UDP")],
            "",
            &[("lbipam.cilium.io/sharing-key", "dns")],
        ),
        lb_yaml(
            "web-tcp",
            &[("http", 53, "TCP")],
            "",
            &[("ferrite.dev/sharing-key", "dns")],
        ),
    ]
    .join("---\n");
    let slices = ["dns-tcp", "dns-udp", "web-tcp"]
        .map(|s| endpoints(&pods, s, 1))
        .join("");
    agent.write("dns.yaml", &(yaml + &slices));
    start(&mut agent);

    wait_for_service(&agent, "test/dns-tcp", "satisfied", &["198.51.100.10"]);
    wait_for_service(&agent, "test/dns-udp", "satisfied", &["198.51.100.10"]);
    let view = wait_for_service(&agent, "test/web-tcp", "satisfied", &["198.51.100.11"]);
    assert_eq!(
        pool_entry(&view, "lan").expect("lan")["used"],
        2,
        "{view:#}"
    );
    agent.wait_for_backends("198.51.100.10:53", 1);

    let tcp53 = tcp(&agent, &pods, "198.51.100.10:53", 10);
    assert_eq!(tcp53.ok, 10, "{tcp53:?}");
    let udp53 = agent.client(
        &pods.node,
        &[
            "--target",
            "198.51.100.10:53",
            "--proto",
            "udp",
            "--count",
            "10",
        ],
    );
    assert_eq!(udp53.ok, 10, "{udp53:?}");

    // A specific request for the shared address with a colliding port is refused precisely.
    let taker = lb_yaml(
        "taker",
        &[("dns", 53, "UDP")],
        "  loadBalancerIP: 198.51.100.10\n",
        &[("ferrite.dev/sharing-key", "dns")],
    );
    agent.write("taker.yaml", &taker);
    let view = wait_for_service(&agent, "test/taker", "sharing_conflict", &[]);
    let message = service_entry(&view, "test/taker").expect("taker")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("53/UDP"), "{message}");
}

#[test]
fn exhausting_the_pool_is_reported_and_a_deleted_service_frees_its_address() {
    let (pods, mut agent) = lab("ip3", 1);
    agent.write("pool.yaml", &pool_yaml("tiny", &["198.51.100.0/30"]));
    for name in ["a", "b", "c"] {
        let yaml = lb_yaml(name, &[("http", 80, "TCP")], "", &[]) + &endpoints(&pods, name, 1);
        agent.write(&format!("{name}.yaml"), &yaml);
    }
    start(&mut agent);
    wait_for_service(&agent, "test/a", "satisfied", &["198.51.100.1"]);
    wait_for_service(&agent, "test/b", "satisfied", &["198.51.100.2"]);
    let view = wait_for_service(&agent, "test/c", "out_of_ips", &[]);
    let tiny = pool_entry(&view, "tiny").expect("tiny");
    assert_eq!(
        (tiny["used"].as_u64(), tiny["available"].as_u64()),
        (Some(2), Some(0)),
        "{tiny}"
    );

    agent.remove("a.yaml");
    wait_for_service(&agent, "test/c", "satisfied", &["198.51.100.1"]);
    agent.wait_for_backends("198.51.100.1:80", 1);
    let r = tcp(&agent, &pods, "198.51.100.1:80", 5);
    assert_eq!(r.ok, 5, "c is served on a's old address: {r:?}");

    // Changing the type releases the address too.
    agent.write(
        "b.yaml",
        &(lb_yaml("b", &[("http", 80, "TCP")], "", &[]).replace("LoadBalancer", "ClusterIP")
            + &endpoints(&pods, "b", 1)),
    );
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let view = pools(&agent);
        service_entry(&view, "test/b").is_none()
            && pool_entry(&view, "tiny").is_some_and(|p| p["used"] == 1)
    });
    assert!(ok.is_ok(), "{:#}", pools(&agent));
}

#[test]
fn a_restarted_agent_keeps_every_address() {
    let (pods, mut agent) = lab("ip4", 1);
    agent.write("pool.yaml", &pool_yaml("lan", &["198.51.100.0/28"]));
    agent.write(
        "z.yaml",
        &(lb_yaml("z", &[("http", 80, "TCP")], "", &[]) + &endpoints(&pods, "z", 1)),
    );
    start(&mut agent);
    wait_for_service(&agent, "test/z", "satisfied", &["198.51.100.1"]);
    // `a` sorts before `z`: allocating from scratch would give it .1.
    agent.write(
        "a.yaml",
        &(lb_yaml("a", &[("http", 80, "TCP")], "", &[]) + &endpoints(&pods, "a", 1)),
    );
    wait_for_service(&agent, "test/a", "satisfied", &["198.51.100.2"]);
    agent.wait_for_backends("198.51.100.2:80", 1);
    let state = agent.work.path().join("state/lbipam.json");
    let saved = std::fs::read_to_string(&state).expect("allocations persisted");
    assert!(saved.contains("198.51.100.2"), "{saved}");

    agent.kill9();
    start(&mut agent);
    wait_for_service(&agent, "test/z", "satisfied", &["198.51.100.1"]);
    wait_for_service(&agent, "test/a", "satisfied", &["198.51.100.2"]);
    let status = agent.status().expect("status");
    assert_eq!(
        status["last_apply"]["ops"], 0,
        "same addresses, nothing rewritten: {status}"
    );
    let r = tcp(&agent, &pods, "198.51.100.2:80", 5);
    assert_eq!(r.ok, 5, "{r:?}");
}

#[test]
fn bad_or_overlapping_pools_are_reported_and_the_rest_keeps_working() {
    let (pods, mut agent) = lab("ip5", 1);
    let pools_yaml = [
        // Cilium's kind, moved as is.
        pool_yaml("cilium", &["198.51.100.32/30"])
            .replace("ferrite.dev/v1alpha1", "cilium.io/v2alpha1")
            .replace("kind: LoadBalancerIPPool", "kind: CiliumLoadBalancerIPPool"),
        pool_yaml("broken", &["198.51.100.64/33", "198.51.100.9-198.51.100.1"]),
        pool_yaml("overlap", &["198.51.100.34/32"]),
    ]
    .join("---\n");
    agent.write("pools.yaml", &pools_yaml);
    let requested = lb_yaml(
        "pinned",
        &[("http", 80, "TCP")],
        "",
        &[("metallb.io/loadBalancerIPs", "198.51.100.34")],
    );
    let other_class = lb_yaml(
        "other",
        &[("http", 80, "TCP")],
        "  loadBalancerClass: example.com/elsewhere\n",
        &[],
    );
    agent.write(
        "svc.yaml",
        &([requested, other_class].join("---\n") + &endpoints(&pods, "pinned", 1)),
    );
    start(&mut agent);

    let view = wait_for_service(&agent, "test/pinned", "satisfied", &["198.51.100.34"]);
    assert!(
        service_entry(&view, "test/other").is_none(),
        "another class is left alone: {view:#}"
    );
    let condition = |pool: &str, kind: &str| -> Value {
        pool_entry(&view, pool)
            .and_then(|p| {
                p["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == kind)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("{pool} has no {kind}: {view:#}"))
    };
    let invalid = condition("broken", "ferrite.dev/InvalidSpec");
    assert_eq!(invalid["status"], "True", "{invalid}");
    let message = invalid["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("198.51.100.64/33") && message.contains("is after stop"),
        "{message}"
    );
    let conflict = condition("overlap", "ferrite.dev/PoolConflict");
    assert_eq!(conflict["status"], "True", "{conflict}");
    assert!(
        conflict["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cilium"),
        "{conflict}"
    );
    assert_eq!(condition("cilium", "ferrite.dev/IPsUsed")["message"], "1");
    let status = agent.status().expect("status");
    assert_eq!(
        status["source_errors"],
        Value::Array(vec![]),
        "a bad pool rejects no file: {status}"
    );

    agent.wait_for_backends("198.51.100.34:80", 1);
    let r = tcp(&agent, &pods, "198.51.100.34:80", 5);
    assert_eq!(r.ok, 5, "{r:?}");
    let text = String::from_utf8_lossy(&agent.ferrite(&["pools"]).stdout).into_owned();
    assert!(
        text.contains("PoolConflict:") && text.contains("InvalidSpec:"),
        "{text}"
    );
}
