//! North-south rows of `ferrite-lab bench`: iperf3 throughput (one TCP stream) and wrk
//! requests/s (HTTP/1.1 keep-alive) from a client outside the cluster, side by side in one run:
//!
//! - direct to a pod behind a plain Linux node (no agent, no rules): the reference;
//! - direct to a pod behind ferrite's node (ferrite's TC programs see the packets but no
//!   service matches): what the datapath costs unrelated traffic;
//! - through ferrite's `LoadBalancer` IP and `NodePort` on node1 (`ferrite agent --devices eth0`);
//! - the same through node4, whose agent runs the ingress translation in native XDP
//!   (`--xdp native` on the lab's veth), its own service and pod: XDP next to TC, same run;
//! - the same through node5, whose agent attaches its TC programs the legacy way
//!   (`--tc-attach legacy`: clsact + cls_bpf, what kernels before 6.6 get): legacy next to TCX;
//! - through the same `LoadBalancer` IP and `NodePort` shapes on node2, served by the iptables
//!   rules kube-proxy writes (`KUBE-SERVICES`/`KUBE-NODEPORTS` → `KUBE-EXT` → `KUBE-SVC` →
//!   `KUBE-SEP`, masquerade, conntrack).
//!
//! Every node has one backend pod (`ferrite-lab serve --http` and `iperf3 -s`); each service
//! has that node's pod as its only endpoint, so every path ends at an identical pod one hop
//! behind the node the client sends to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use ferrite_lab::nslab::{CLUSTER_CIDR, POD_HTTP, POD_IPERF};
use ferrite_lab::{
    AgentConfig, Cidr, NsLab, NsLabConfig, NsService, Protocol, Route, SvcEndpoint, SvcPort,
    kubeproxy,
};
use serde::Serialize;

use super::results::{Cell, Rate, median, ratio};
use super::{check_interrupted, progress};

mod paths;
mod report;
pub(super) mod tools;

use paths::paths;
pub use report::markdown;
pub use tools::tools_missing;
use tools::{iperf3, wrk};

const PREFIX: &str = "flb";
const FERRITE_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const IPTABLES_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 10);
const NODE_PORT_HTTP: u16 = 30080;
const NODE_PORT_IPERF: u16 = 30201;
const XDP_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 2, 10);
const XDP_NODE_PORT_HTTP: u16 = 30081;
const XDP_NODE_PORT_IPERF: u16 = 30202;
const LEGACY_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 3, 10);
const LEGACY_NODE_PORT_HTTP: u16 = 30082;
const LEGACY_NODE_PORT_IPERF: u16 = 30203;
/// Node indexes in the lab.
const FERRITE_NODE: usize = 0;
const IPTABLES_NODE: usize = 1;
const PLAIN_NODE: usize = 2;
const XDP_NODE: usize = 3;
const LEGACY_NODE: usize = 4;

/// How long and how hard to measure.
#[derive(Clone, Debug)]
pub struct NsSettings {
    /// Seconds per iperf3 and wrk run (whole seconds: both tools take integers).
    pub seconds: u32,
    pub runs: usize,
    pub wrk_connections: u32,
    pub wrk_threads: u32,
    pub iptables_restore: String,
}

/// One row: a path from the client to a backend pod.
#[derive(Clone, Debug, Serialize)]
pub struct NsRow {
    pub path: String,
    /// What the client connects to.
    pub http_target: String,
    pub iperf_target: String,
    /// iperf3, one TCP stream, receiver side (Gbit/s).
    pub gbps: Cell<Rate>,
    /// wrk requests per second.
    pub rps: Cell<Rate>,
    /// wrk 99th percentile latency of the median run (µs).
    pub p99_us: Cell<f64>,
    pub gbps_vs_direct: Option<f64>,
    pub rps_vs_direct: Option<f64>,
}

/// ferrite over iptables for one frontend kind (`> 1` means ferrite is ahead).
#[derive(Clone, Debug, Serialize)]
pub struct NsVersus {
    pub frontend: String,
    pub gbps: Option<f64>,
    pub rps: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NorthSouth {
    pub rows: Vec<NsRow>,
    pub ferrite_vs_iptables: Vec<NsVersus>,
    /// ferrite with XDP over ferrite with TC, per frontend kind.
    pub xdp_vs_tc: Vec<NsVersus>,
    /// ferrite attached the legacy way (clsact + cls_bpf) over ferrite through TCX links.
    #[serde(default)]
    pub legacy_vs_tcx: Vec<NsVersus>,
    pub seconds: u32,
    pub runs: usize,
    pub wrk_connections: u32,
    pub wrk_threads: u32,
    pub iptables_rules: usize,
    /// `/proc/loadavg` before and after the measurements: other work on the machine shows
    /// up as noise in these rows.
    pub loadavg: [String; 2],
}

impl NorthSouth {
    /// Whether any measurement is missing.
    pub fn incomplete(&self) -> bool {
        self.rows
            .iter()
            .any(|r| r.gbps.is_not_run() || r.rps.is_not_run())
    }
}

/// A path to measure; `ready` says why it cannot be.
struct Path_ {
    label: &'static str,
    http: SocketAddr,
    iperf: SocketAddr,
    ready: Result<(), String>,
    gbps: Vec<f64>,
    rps: Vec<(f64, f64)>,
    errors_gbps: u64,
    errors_rps: u64,
    failed: Option<String>,
}

pub(super) fn bench_service(
    name: &str,
    cluster_ip: Ipv4Addr,
    lb: Ipv4Addr,
    endpoint: SvcEndpoint,
) -> NsService {
    with_node_ports(
        name,
        cluster_ip,
        lb,
        endpoint,
        (NODE_PORT_HTTP, NODE_PORT_IPERF),
    )
}

pub(super) fn with_node_ports(
    name: &str,
    cluster_ip: Ipv4Addr,
    lb: Ipv4Addr,
    endpoint: SvcEndpoint,
    (http, iperf): (u16, u16),
) -> NsService {
    let mut s = NsService::load_balancer(name, cluster_ip, IpAddr::V4(lb), http);
    s.namespace = "default".into();
    s.ports = vec![
        SvcPort::new("http", Protocol::Tcp, 80, POD_HTTP).node_port(http),
        SvcPort::new("iperf", Protocol::Tcp, POD_IPERF, POD_IPERF).node_port(iperf),
    ];
    s.endpoints = vec![endpoint];
    s
}

fn lab_config() -> NsLabConfig {
    NsLabConfig {
        prefix: PREFIX.into(),
        nodes: 5,
        pods_per_node: 1,
        clients: 1,
        iperf3: true,
        lb_via: FERRITE_NODE,
        ..NsLabConfig::default()
    }
}

/// Builds the lab, programs both load balancers, and measures every path.
pub fn measure(
    exe: &Path,
    ferrite: Result<&Path, &String>,
    settings: &NsSettings,
) -> Result<NorthSouth, String> {
    progress("north-south: building the LAN lab (4 nodes, a client)");
    let mut lab = NsLab::build(lab_config(), exe).map_err(|e| format!("north-south lab: {e}"))?;
    // LB IPs of the iptables node are routed via node2.
    let ipt_lb_range: Cidr = "172.30.1.0/24".parse().expect("valid");
    Route::via(ipt_lb_range, IpAddr::V4(lab.node(IPTABLES_NODE).v4()))
        .add(lab.client(0).ns())
        .map_err(|e| e.to_string())?;

    let ipt_service = bench_service(
        "bench",
        Ipv4Addr::new(10, 96, 0, 10),
        IPTABLES_LB,
        SvcEndpoint::new(
            lab.node(IPTABLES_NODE).pod_v4(0),
            &lab.node(IPTABLES_NODE).name,
        ),
    );
    let rules = kubeproxy::iptables_rules(
        std::slice::from_ref(&ipt_service),
        &lab.node(IPTABLES_NODE).name,
        CLUSTER_CIDR.parse().expect("valid"),
    );
    let ipt_ready = lab
        .iptables_restore(IPTABLES_NODE, &settings.iptables_restore, &rules)
        .map(drop)
        .map_err(|e| format!("iptables-restore: {e}"));

    let fer_service = bench_service(
        "bench",
        Ipv4Addr::new(10, 96, 0, 10),
        FERRITE_LB,
        SvcEndpoint::new(
            lab.node(FERRITE_NODE).pod_v4(0),
            &lab.node(FERRITE_NODE).name,
        ),
    );
    // node4's own service (other node ports: every agent reads the same folder).
    let xdp_service = with_node_ports(
        "bench-xdp",
        Ipv4Addr::new(10, 96, 0, 11),
        XDP_LB,
        SvcEndpoint::new(lab.node(XDP_NODE).pod_v4(0), &lab.node(XDP_NODE).name),
        (XDP_NODE_PORT_HTTP, XDP_NODE_PORT_IPERF),
    );
    let legacy_service = with_node_ports(
        "bench-legacy",
        Ipv4Addr::new(10, 96, 0, 12),
        LEGACY_LB,
        SvcEndpoint::new(lab.node(LEGACY_NODE).pod_v4(0), &lab.node(LEGACY_NODE).name),
        (LEGACY_NODE_PORT_HTTP, LEGACY_NODE_PORT_IPERF),
    );
    let legacy_lb_range: Cidr = "172.30.3.0/24".parse().expect("valid");
    Route::via(legacy_lb_range, IpAddr::V4(lab.node(LEGACY_NODE).v4()))
        .add(lab.client(0).ns())
        .map_err(|e| e.to_string())?;
    let xdp_lb_range: Cidr = "172.30.2.0/24".parse().expect("valid");
    Route::via(xdp_lb_range, IpAddr::V4(lab.node(XDP_NODE).v4()))
        .add(lab.client(0).ns())
        .map_err(|e| e.to_string())?;
    let fer_ready = ferrite.map_err(Clone::clone).and_then(|path| {
        lab.write_manifest(
            "bench.yaml",
            &(fer_service.to_yaml() + &xdp_service.to_yaml() + &legacy_service.to_yaml()),
        )
        .map_err(|e| e.to_string())?;
        let mut config = AgentConfig::new(path);
        config.log_level = "info".into();
        lab.start_agent(FERRITE_NODE, &config)
            .map_err(|e| format!("agent: {e}"))
    });
    let xdp_ready = ferrite
        .map_err(Clone::clone)
        .and_then(|path| start_xdp(&mut lab, path));

    let legacy_ready = ferrite
        .map_err(Clone::clone)
        .and_then(|path| start_legacy(&mut lab, path));

    let mut paths = paths(&lab, &fer_ready, &ipt_ready, &xdp_ready, &legacy_ready);
    let load_before = loadavg();
    run_rounds(&lab, &mut paths, settings)?;
    let load_after = loadavg();
    for (node, ready, tag) in [
        (FERRITE_NODE, &fer_ready, "ferrite "),
        (XDP_NODE, &xdp_ready, "ferrite+XDP"),
        (LEGACY_NODE, &legacy_ready, "ferrite legacy TC"),
    ] {
        if let Some(agent) = lab_agent_exited(&mut lab, node, ready) {
            for p in paths.iter_mut().filter(|p| p.label.starts_with(tag)) {
                p.failed = Some(agent.clone());
            }
        }
    }
    drop(lab);
    let mut ns = summarise(paths, settings, kubeproxy::rule_count(&rules));
    ns.loadavg = [load_before, load_after];
    Ok(ns)
}

/// node4's agent with `--xdp native`; an error unless its status says native XDP.
fn start_xdp(lab: &mut NsLab, ferrite: &Path) -> Result<(), String> {
    let mut config = AgentConfig::new(ferrite);
    config.log_level = "info".into();
    config.extra_args = vec!["--xdp".into(), "native".into()];
    lab.start_agent(XDP_NODE, &config)
        .map_err(|e| format!("agent: {e}"))?;
    let status = lab.agent(XDP_NODE).status().map_err(|e| e.to_string())?;
    let hook = &status["datapath"]["ingress"][0]["hook"];
    if hook == "xdp-native" {
        Ok(())
    } else {
        Err(format!(
            "--xdp native did not attach in native mode: {hook}"
        ))
    }
}

/// node5's agent with `--tc-attach legacy`; an error unless its status says legacy.
fn start_legacy(lab: &mut NsLab, ferrite: &Path) -> Result<(), String> {
    let mut config = AgentConfig::new(ferrite);
    config.log_level = "info".into();
    config.extra_args = vec!["--tc-attach".into(), "legacy".into()];
    lab.start_agent(LEGACY_NODE, &config)
        .map_err(|e| format!("agent: {e}"))?;
    let status = lab.agent(LEGACY_NODE).status().map_err(|e| e.to_string())?;
    let how = status["datapath"]["tc_attach"].as_str().unwrap_or_default();
    if how.starts_with("legacy") {
        Ok(())
    } else {
        Err(format!("--tc-attach legacy attached as {how:?}"))
    }
}

/// Measures every ready path `settings.runs` times, rotating the order each round so drift
/// hits every path alike.
fn run_rounds(lab: &NsLab, paths: &mut [Path_], settings: &NsSettings) -> Result<(), String> {
    // Warm up: page in the tools and settle the CPU clock.
    let _ = wrk(
        lab,
        paths[0].http,
        &NsSettings {
            seconds: 1,
            ..settings.clone()
        },
    );
    for round in 0..settings.runs {
        check_interrupted()?;
        // Rotate the order so drift hits every path alike.
        let count = paths.len();
        for k in 0..count {
            let path = &mut paths[(k + round) % count];
            if path.ready.is_err() || path.failed.is_some() {
                continue;
            }
            match iperf3(lab, path.iperf, settings.seconds) {
                Ok(bps) => path.gbps.push(bps / 1e9),
                Err(e) => {
                    path.errors_gbps += 1;
                    path.failed = Some(format!("iperf3 {}: {e}", path.iperf));
                }
            }
            match wrk(lab, path.http, settings) {
                Ok((rps, p99, errors)) => {
                    path.rps.push((rps, p99));
                    path.errors_rps += errors;
                }
                Err(e) => {
                    path.errors_rps += 1;
                    path.failed = Some(format!("wrk {}: {e}", path.http));
                }
            }
        }
        let summary: Vec<String> = paths
            .iter()
            .map(|p| {
                let g = p.gbps.last().map_or("-".into(), |g| format!("{g:.2}"));
                let r = p.rps.last().map_or("-".into(), |(r, _)| format!("{r:.0}"));
                format!("{}: {g} Gbit/s {r} req/s", p.label)
            })
            .collect();
        progress(&format!("  round {}: {}", round + 1, summary.join("; ")));
    }
    Ok(())
}

fn lab_agent_exited(lab: &mut NsLab, node: usize, ready: &Result<(), String>) -> Option<String> {
    if ready.is_err() {
        return None;
    }
    let agent = lab.agent_mut(node);
    (!agent.running()).then(|| {
        format!(
            "the agent exited during the run: {}",
            agent.log_tail(5).replace('\n', " | ")
        )
    })
}

fn summarise(paths: Vec<Path_>, settings: &NsSettings, rules: usize) -> NorthSouth {
    let cell = |values: Vec<f64>,
                errors: u64,
                ready: &Result<(), String>,
                failed: &Option<String>| {
        match (ready, failed) {
            (Err(e), _) | (_, Some(e)) => Cell::not_run(e.clone()),
            _ if values.is_empty() => Cell::not_run("no runs"),
            _ => Cell::Value(Rate {
                median: median(&values),
                runs: values,
                errors,
            }),
        }
    };
    let mut rows: Vec<NsRow> = paths
        .into_iter()
        .map(|p| {
            let rps_values: Vec<f64> = p.rps.iter().map(|(r, _)| *r).collect();
            let p99 = {
                let m = median(&rps_values);
                p.rps
                    .iter()
                    .min_by(|a, b| (a.0 - m).abs().total_cmp(&(b.0 - m).abs()))
                    .map(|(_, p99)| *p99)
            };
            NsRow {
                path: p.label.to_owned(),
                http_target: p.http.to_string(),
                iperf_target: p.iperf.to_string(),
                gbps: cell(p.gbps, p.errors_gbps, &p.ready, &p.failed),
                rps: cell(rps_values, p.errors_rps, &p.ready, &p.failed),
                p99_us: match (&p.ready, &p.failed, p99) {
                    (Ok(()), None, Some(v)) => Cell::Value(v),
                    _ => Cell::not_run("no runs"),
                },
                gbps_vs_direct: None,
                rps_vs_direct: None,
            }
        })
        .collect();
    let med = |c: &Cell<Rate>| c.value().map(|r| r.median);
    let (direct_gbps, direct_rps) = (med(&rows[0].gbps), med(&rows[0].rps));
    for row in &mut rows {
        row.gbps_vs_direct = ratio(med(&row.gbps), direct_gbps);
        row.rps_vs_direct = ratio(med(&row.rps), direct_rps);
    }
    let find = |label: &str| rows.iter().find(|r| r.path.starts_with(label));
    let versus = |frontend: &str, fer: &str, ipt: &str| {
        let (f, i) = (find(fer), find(ipt));
        NsVersus {
            frontend: frontend.to_owned(),
            gbps: ratio(f.and_then(|r| med(&r.gbps)), i.and_then(|r| med(&r.gbps))),
            rps: ratio(f.and_then(|r| med(&r.rps)), i.and_then(|r| med(&r.rps))),
        }
    };
    let ferrite_vs_iptables = vec![
        versus(
            "LoadBalancer IP",
            "ferrite LoadBalancer IP",
            "iptables LoadBalancer IP",
        ),
        versus("NodePort", "ferrite NodePort", "iptables NodePort"),
    ];
    let xdp_vs_tc = vec![
        versus(
            "LoadBalancer IP",
            "ferrite+XDP LoadBalancer IP",
            "ferrite LoadBalancer IP",
        ),
        versus("NodePort", "ferrite+XDP NodePort", "ferrite NodePort"),
    ];
    let legacy_vs_tcx = vec![
        versus(
            "LoadBalancer IP",
            "ferrite legacy TC LoadBalancer IP",
            "ferrite LoadBalancer IP",
        ),
        versus("NodePort", "ferrite legacy TC NodePort", "ferrite NodePort"),
    ];
    NorthSouth {
        rows,
        ferrite_vs_iptables,
        xdp_vs_tc,
        legacy_vs_tcx,
        seconds: settings.seconds,
        runs: settings.runs,
        wrk_connections: settings.wrk_connections,
        wrk_threads: settings.wrk_threads,
        iptables_rules: rules,
        loadavg: [String::new(), String::new()],
    }
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_against_direct_and_iptables() {
        let path = |label: &'static str, gbps: f64, rps: f64| Path_ {
            label,
            http: "1.2.3.4:80".parse().unwrap(),
            iperf: "1.2.3.4:5201".parse().unwrap(),
            ready: Ok(()),
            gbps: vec![gbps],
            rps: vec![(rps, 100.0)],
            errors_gbps: 0,
            errors_rps: 0,
            failed: None,
        };
        let mut broken = path("iptables NodePort (kube-proxy rules)", 0.0, 0.0);
        broken.ready = Err("iptables-restore: boom".into());
        let ns = summarise(
            vec![
                path("direct to pod (plain node)", 10.0, 40_000.0),
                path("ferrite LoadBalancer IP", 9.8, 39_000.0),
                path("iptables LoadBalancer IP (kube-proxy rules)", 7.0, 30_000.0),
                path("ferrite NodePort", 9.5, 38_000.0),
                broken,
                path("ferrite+XDP LoadBalancer IP (native, veth)", 9.8, 41_000.0),
            ],
            &NsSettings {
                seconds: 1,
                runs: 1,
                wrk_connections: 16,
                wrk_threads: 1,
                iptables_restore: "iptables-restore".into(),
            },
            42,
        );
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(ns.rows[1].gbps_vs_direct, 0.98), "{:?}", ns.rows[1]);
        assert!(close(ns.rows[1].rps_vs_direct, 0.975), "{:?}", ns.rows[1]);
        assert!(close(ns.ferrite_vs_iptables[0].gbps, 1.4));
        assert_eq!(ns.ferrite_vs_iptables[1].gbps, None);
        assert!(ns.rows[4].gbps.is_not_run());
        assert!(ns.incomplete());
        assert!(close(ns.xdp_vs_tc[0].gbps, 1.0));
        assert!(close(ns.xdp_vs_tc[0].rps, 41.0 / 39.0));
        assert_eq!(ns.xdp_vs_tc[1].gbps, None, "no XDP NodePort row");
    }
}
