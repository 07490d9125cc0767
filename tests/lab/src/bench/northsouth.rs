//! North-south rows of `ferrite-lab bench`: iperf3 throughput (one TCP stream) and wrk
//! requests/s (HTTP/1.1 keep-alive) from a client outside the cluster, side by side in one run:
//!
//! - direct to a pod behind a plain Linux node (no agent, no rules): the reference;
//! - direct to a pod behind ferrite's node (ferrite's TC programs see the packets but no
//!   service matches): what the datapath costs unrelated traffic;
//! - through ferrite's `LoadBalancer` IP and `NodePort` on node1 (`ferrite agent --devices eth0`);
//! - through the same `LoadBalancer` IP and `NodePort` shapes on node2, served by the iptables
//!   rules kube-proxy writes (`KUBE-SERVICES`/`KUBE-NODEPORTS` → `KUBE-EXT` → `KUBE-SVC` →
//!   `KUBE-SEP`, masquerade, conntrack).
//!
//! Every node has one backend pod (`ferrite-lab serve --http` and `iperf3 -s`); each service
//! has that node's pod as its only endpoint, so every path ends at an identical pod one hop
//! behind the node the client sends to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_lab::nslab::{CLUSTER_CIDR, POD_HTTP, POD_IPERF};
use ferrite_lab::{
    AgentConfig, Child, Cidr, NsLab, NsLabConfig, NsService, Protocol, Route, SvcEndpoint, SvcPort,
    kubeproxy,
};
use serde::Serialize;

use super::results::{Cell, Rate, cell, median, ratio, thousands, thousands_f, times};
use super::{check_interrupted, progress};

const PREFIX: &str = "flb";
const FERRITE_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const IPTABLES_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 10);
const NODE_PORT_HTTP: u16 = 30080;
const NODE_PORT_IPERF: u16 = 30201;
/// Node indexes in the lab.
const FERRITE_NODE: usize = 0;
const IPTABLES_NODE: usize = 1;
const PLAIN_NODE: usize = 2;

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

fn bench_service(
    name: &str,
    cluster_ip: Ipv4Addr,
    lb: Ipv4Addr,
    endpoint: SvcEndpoint,
) -> NsService {
    let mut s = NsService::load_balancer(name, cluster_ip, IpAddr::V4(lb), NODE_PORT_HTTP);
    s.namespace = "default".into();
    s.ports = vec![
        SvcPort::new("http", Protocol::Tcp, 80, POD_HTTP).node_port(NODE_PORT_HTTP),
        SvcPort::new("iperf", Protocol::Tcp, POD_IPERF, POD_IPERF).node_port(NODE_PORT_IPERF),
    ];
    s.endpoints = vec![endpoint];
    s
}

/// `iperf3 -c` from the client: receiver-side bits per second.
fn iperf3(lab: &NsLab, target: SocketAddr, seconds: u32) -> Result<f64, String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let mut cmd = lab
            .client(0)
            .ns()
            .command("iperf3")
            .map_err(|e| e.to_string())?;
        cmd.args([
            "-c",
            &target.ip().to_string(),
            "-p",
            &target.port().to_string(),
        ])
        .args(["-t", &seconds.to_string(), "-J"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let child = Child::spawn(&mut cmd).map_err(|e| e.to_string())?;
        let out = child
            .output_within(Duration::from_secs(u64::from(seconds) + 20))
            .map_err(|e| e.to_string())?;
        match parse_iperf3(&out.stdout) {
            Ok(bps) => return Ok(bps),
            // "the server is busy running a test": the previous run is still closing.
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn parse_iperf3(json: &[u8]) -> Result<f64, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("iperf3 -J output: {e}"))?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        return Err(format!("iperf3: {err}"));
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| "iperf3 -J output has no end.sum_received.bits_per_second".to_owned())
}

/// One wrk run: (requests/s, p99 µs, errors).
fn wrk(lab: &NsLab, target: SocketAddr, s: &NsSettings) -> Result<(f64, f64, u64), String> {
    let mut cmd = lab
        .client(0)
        .ns()
        .command("wrk")
        .map_err(|e| e.to_string())?;
    cmd.args([
        "-t",
        &s.wrk_threads.to_string(),
        "-c",
        &s.wrk_connections.to_string(),
    ])
    .args(["-d", &format!("{}s", s.seconds), "--latency"])
    .arg(format!("http://{target}/"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = Child::spawn(&mut cmd).map_err(|e| e.to_string())?;
    let out = child
        .output_within(Duration::from_secs(u64::from(s.seconds) + 20))
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_wrk(&text)
}

/// `123.45us` / `1.20ms` / `2.00s` → µs.
fn duration_us(text: &str) -> Option<f64> {
    let (num, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    match unit {
        "us" => Some(n),
        "ms" => Some(n * 1e3),
        "s" => Some(n * 1e6),
        "m" => Some(n * 60e6),
        _ => None,
    }
}

fn parse_wrk(text: &str) -> Result<(f64, f64, u64), String> {
    let mut rps = None;
    let mut p99 = None;
    let mut errors = 0u64;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => rps = n.parse::<f64>().ok(),
            ["99%", d] => p99 = duration_us(d),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                errors += n.parse::<u64>().unwrap_or(0);
            }
            _ => {}
        }
    }
    match (rps, p99) {
        (Some(r), Some(p)) => Ok((r, p, errors)),
        _ => Err(format!("unexpected wrk output: {}", text.trim())),
    }
}

/// Checks a path with one HTTP request: 200 from the expected backend.
fn check_path(lab: &NsLab, target: SocketAddr, backend: &str) -> Result<(), String> {
    let mut last = String::new();
    let ok =
        ferrite_lab::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || match lab.http_get(0, target, "/") {
                Ok(Ok(r)) if r.status == 200 && r.body.starts_with(backend) => true,
                Ok(Ok(r)) => {
                    last = format!("HTTP {} {:?}", r.status, r.body.trim());
                    false
                }
                Ok(Err(e)) => {
                    last = e.to_string();
                    false
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            },
        );
    ok.map(drop)
        .map_err(|_| format!("{target} did not answer from {backend}: {last}"))
}

fn lab_config() -> NsLabConfig {
    NsLabConfig {
        prefix: PREFIX.into(),
        nodes: 3,
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
    progress("north-south: building the LAN lab (3 nodes, a client)");
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
    let fer_ready = ferrite.map_err(Clone::clone).and_then(|path| {
        lab.write_manifest("bench.yaml", &fer_service.to_yaml())
            .map_err(|e| e.to_string())?;
        let mut config = AgentConfig::new(path);
        config.log_level = "info".into();
        lab.start_agent(FERRITE_NODE, &config)
            .map_err(|e| format!("agent: {e}"))
    });

    let mut paths = paths(&lab, &fer_ready, &ipt_ready);
    let load_before = loadavg();
    run_rounds(&lab, &mut paths, settings)?;
    let load_after = loadavg();
    if let Some(agent) = lab_agent_exited(&mut lab, &fer_ready) {
        for p in paths.iter_mut().filter(|p| p.label.contains("ferrite")) {
            p.failed = Some(agent.clone());
        }
    }
    drop(lab);
    let mut ns = summarise(paths, settings, kubeproxy::rule_count(&rules));
    ns.loadavg = [load_before, load_after];
    Ok(ns)
}

/// The paths to measure, each checked with one HTTP request through it.
fn paths(
    lab: &NsLab,
    fer_ready: &Result<(), String>,
    ipt_ready: &Result<(), String>,
) -> Vec<Path_> {
    let pod = |node: usize| lab.node(node).pod_name(0);
    let (fer_pod, ipt_pod, plain_pod) = (pod(FERRITE_NODE), pod(IPTABLES_NODE), pod(PLAIN_NODE));
    let n = |i: usize| lab.node(i);
    let at = |ip: Ipv4Addr, port: u16| SocketAddr::from((ip, port));
    vec![
        (
            "direct to pod (plain node)",
            at(n(PLAIN_NODE).pod_v4(0), POD_HTTP),
            at(n(PLAIN_NODE).pod_v4(0), POD_IPERF),
            Ok(()),
            &plain_pod,
        ),
        (
            "direct to pod (through ferrite's node)",
            at(n(FERRITE_NODE).pod_v4(0), POD_HTTP),
            at(n(FERRITE_NODE).pod_v4(0), POD_IPERF),
            fer_ready.clone(),
            &fer_pod,
        ),
        (
            "ferrite LoadBalancer IP",
            at(FERRITE_LB, 80),
            at(FERRITE_LB, POD_IPERF),
            fer_ready.clone(),
            &fer_pod,
        ),
        (
            "ferrite NodePort",
            at(n(FERRITE_NODE).v4(), NODE_PORT_HTTP),
            at(n(FERRITE_NODE).v4(), NODE_PORT_IPERF),
            fer_ready.clone(),
            &fer_pod,
        ),
        (
            "iptables LoadBalancer IP (kube-proxy rules)",
            at(IPTABLES_LB, 80),
            at(IPTABLES_LB, POD_IPERF),
            ipt_ready.clone(),
            &ipt_pod,
        ),
        (
            "iptables NodePort (kube-proxy rules)",
            at(n(IPTABLES_NODE).v4(), NODE_PORT_HTTP),
            at(n(IPTABLES_NODE).v4(), NODE_PORT_IPERF),
            ipt_ready.clone(),
            &ipt_pod,
        ),
    ]
    .into_iter()
    .map(|(label, http, iperf, ready, backend)| {
        let ready = ready.and_then(|()| check_path(lab, http, backend));
        progress(&format!("  {label}: {http}: {ready:?}"));
        Path_ {
            label,
            http,
            iperf,
            ready,
            gbps: Vec::new(),
            rps: Vec::new(),
            errors_gbps: 0,
            errors_rps: 0,
            failed: None,
        }
    })
    .collect()
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

fn lab_agent_exited(lab: &mut NsLab, ready: &Result<(), String>) -> Option<String> {
    if ready.is_err() {
        return None;
    }
    let agent = lab.agent_mut(FERRITE_NODE);
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
    NorthSouth {
        rows,
        ferrite_vs_iptables,
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

/// Renders the section as markdown.
pub fn markdown(ns: &Cell<NorthSouth>, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n## North-south: client outside the cluster → backend pod\n"
    );
    let ns = match ns {
        Cell::Value(ns) => ns,
        Cell::NotRun { not_run } => {
            let _ = writeln!(out, "not run: {not_run}");
            return;
        }
    };
    let _ = writeln!(
        out,
        "iperf3 (one TCP stream, {} s) and wrk (HTTP/1.1 keep-alive, {} thread(s), {} connections, {} s); median of {} run(s); load average {} before, {} after.\n",
        ns.seconds,
        ns.wrk_threads,
        ns.wrk_connections,
        ns.seconds,
        ns.runs,
        ns.loadavg[0],
        ns.loadavg[1]
    );
    let _ = writeln!(
        out,
        "| path | Gbit/s | ×direct | requests/s | ×direct | p99 latency (µs) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let gbps = |r: &Rate| {
        let mut s = format!("{:.2}", r.median);
        if r.errors > 0 {
            let _ = write!(s, " ({} errors)", r.errors);
        }
        s
    };
    let rps = |r: &Rate| {
        let mut s = thousands_f(r.median);
        if r.errors > 0 {
            let _ = write!(s, " ({} errors)", thousands(&r.errors));
        }
        s
    };
    for row in &ns.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.path,
            cell(&row.gbps, gbps),
            times(row.gbps_vs_direct),
            cell(&row.rps, rps),
            times(row.rps_vs_direct),
            cell(&row.p99_us, |v| format!("{v:.0}")),
        );
    }
    let _ = writeln!(
        out,
        "\nferrite over iptables ({} kube-proxy rules on the iptables node):\n",
        ns.iptables_rules
    );
    let _ = writeln!(out, "| frontend | Gbit/s | requests/s |");
    let _ = writeln!(out, "|---|---:|---:|");
    for v in &ns.ferrite_vs_iptables {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            v.frontend,
            times(v.gbps),
            times(v.rps)
        );
    }
}

/// Whether the tools are installed (a missing one turns the section into "not run").
pub fn tools_missing() -> Option<String> {
    let missing: Vec<&str> = ["iperf3", "wrk"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    (!missing.is_empty()).then(|| format!("apt-get install {}", missing.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parses() {
        let text = "Running 3s test @ http://172.30.0.10:80/\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   312.00us  100.00us   2.10ms   90.00%\n    Req/Sec    45.10k     2.00k   50.00k    70.00%\n  Latency Distribution\n     50%  300.00us\n     75%  350.00us\n     90%  400.00us\n     99%    1.20ms\n  135300 requests in 3.00s, 10.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  45100.50\nTransfer/sec:      3.33MB\n";
        let (rps, p99, errors) = parse_wrk(text).unwrap();
        assert!((rps - 45100.5).abs() < 1e-9);
        assert!((p99 - 1200.0).abs() < 1e-9);
        assert_eq!(errors, 7);
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(duration_us("2.00s"), Some(2e6));
        assert_eq!(duration_us("12us"), Some(12.0));
    }

    #[test]
    fn iperf3_json_parses() {
        let ok = br#"{"start":{},"end":{"sum_sent":{"bits_per_second":9.5e9},"sum_received":{"bits_per_second":9.4e9}}}"#;
        assert!((parse_iperf3(ok).unwrap() - 9.4e9).abs() < 1.0);
        let busy = br#"{"start":{},"error":"the server is busy running a test. try again later"}"#;
        assert!(parse_iperf3(busy).unwrap_err().contains("busy"));
    }

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
    }
}
