//! The `flows` section of `ferrite-lab bench`: what flow export costs. An agent with flows on
//! (the default `--flow-rate`) next to one with flows off (`--flow-rate 0`), in the same lab
//! and run, measured in interleaved rounds (the order alternating):
//!
//! - ClusterIP connects/s through the socket LB (one flow event per connect);
//! - north-south through each agent's LoadBalancer IP: iperf3 Gbit/s (one TCP stream) and new
//!   connections/s (one event each);
//!
//! and how many events per second one agent reads with the cap lifted (`--flow-rate` 10⁹), fed
//! by a flood of refused connects (one event each), before its ring fills.

mod report;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ferrite_lab::nslab::POD_IPERF;
use ferrite_lab::report::ConnectRateReport;
use ferrite_lab::{AgentConfig, Child, Cidr, NsLab, NsLabConfig, Route, SvcEndpoint};

pub use report::{FlowsBench, markdown};
use report::{Intake, OnOff};

use super::agent::Agent;
use super::northsouth::tools::{check_path, iperf3_from, tools_missing};
use super::northsouth::{bench_service, with_node_ports};
use super::results::Cell;
use super::topology::{Lab, check_reaches_backends};
use super::{check_interrupted, progress, services};

/// The cap lifted: far above what a CPU can send.
const NO_CAP: &str = "1000000000";
const ON_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
const OFF_LB: Ipv4Addr = Ipv4Addr::new(172, 30, 1, 10);

/// How long and how often.
#[derive(Clone, Debug)]
pub struct FlowsSettings {
    pub runs: usize,
    /// One connect-rate run.
    pub run: Duration,
    /// One iperf3 run (whole seconds).
    pub seconds: u32,
    pub threads: u32,
    /// The flood of the intake measurement.
    pub flood: Duration,
}

pub fn notes() -> Vec<String> {
    vec![
        "Flow export cost: two agents in one lab, flows on (default `--flow-rate`, events per second and CPU; beyond it events are only counted) and off (`--flow-rate 0`), measured in alternating order each round; ClusterIP through each agent's cgroup (the clusterip lab), north-south through each agent's node and LoadBalancer IP (a two-node LAN lab)".into(),
        "Flow intake: an agent with `--flow-rate 1000000000` (no cap), `ferrite-lab connect-rate` to a ClusterIP without endpoints from one thread per CPU (every connect refused: one event each); `/v1/flows` stats after a 500 ms drain; the agent's CPU time (utime + stime, all threads) over the flood and the drain".into(),
    ]
}

/// Runs the section; a part that cannot run is "not run" with the reason.
pub fn measure(
    exe: &Path,
    ferrite: Result<&Path, &String>,
    work: &Path,
    settings: &FlowsSettings,
) -> Cell<FlowsBench> {
    let ferrite = match ferrite {
        Ok(p) => p,
        Err(e) => return Cell::not_run(e.clone()),
    };
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (connects, intake, rate) = match clusterip(exe, ferrite, work, settings) {
        Ok(v) => v,
        Err(e) => {
            progress(&format!("flows: ClusterIP: {e}"));
            (Cell::not_run(e.clone()), Cell::not_run(e), None)
        }
    };
    let (gbps, ns_connects) = match northsouth(exe, ferrite, settings) {
        Ok((g, c)) => (g, c),
        Err(e) => {
            progress(&format!("flows: north-south: {e}"));
            (Cell::not_run(e.clone()), Cell::not_run(e))
        }
    };
    let Some(rate) = rate else {
        return Cell::not_run("the flows-on agent did not report its rate");
    };
    Cell::Value(FlowsBench {
        clusterip_connects: connects,
        northsouth_gbps: gbps,
        northsouth_connects: ns_connects,
        intake,
        default_rate_per_cpu: rate,
        sampling_from_per_sec: u64::from(rate) * u64::try_from(cpus).unwrap_or(1),
        runs: settings.runs,
    })
}

type ClusterIpParts = (Cell<OnOff>, Cell<Intake>, Option<u32>);

/// ClusterIP connects/s on vs off, then the intake of an uncapped agent.
fn clusterip(
    exe: &Path,
    ferrite: &Path,
    work: &Path,
    s: &FlowsSettings,
) -> Result<ClusterIpParts, String> {
    progress("flows: building the ClusterIP lab");
    let lab = Lab::build(exe)?;
    let mut svcs = services::generate(2, &lab.backend_ips());
    svcs[1].endpoints.clear();
    let yaml = services::to_yaml(&svcs);
    // The last service has no endpoints: an empty list, not a null.
    let yaml = yaml
        .strip_suffix("endpoints:\n")
        .map_or_else(|| yaml.clone(), |y| format!("{y}endpoints: []\n"));
    let target = SocketAddr::from((svcs[0].cluster_ip, svcs[0].port));
    let empty = SocketAddr::from((svcs[1].cluster_ip, svcs[1].port));
    let client = lab.ferrite_client();

    let start = |label: &str, args: &[&str]| -> Result<Agent, String> {
        let mut a = Agent::start_with(ferrite, work, label, args)?;
        a.apply(&yaml, 2)?;
        let r = lab.probe(client, Some(a.cgroup()), target, 6)?;
        check_reaches_backends(&r).map_err(|e| format!("{label}: {e}"))?;
        Ok(a)
    };
    let on = start("flows-on", &[])?;
    let off = start("flows-off", &["--flow-rate", "0"])?;
    let rate = on
        .flow_stats()?
        .get("rate_per_cpu")
        .and_then(serde_json::Value::as_u64)
        .and_then(|r| u32::try_from(r).ok());
    let _ = lab.connect_rate(client, Some(on.cgroup()), &[target], s.run / 3, s.threads);
    let (mut on_runs, mut off_runs) = (Vec::new(), Vec::new());
    for round in 0..s.runs {
        check_interrupted()?;
        for flows_on in [round % 2 == 0, round % 2 == 1] {
            let agent = if flows_on { &on } else { &off };
            let r = lab.connect_rate(client, Some(agent.cgroup()), &[target], s.run, s.threads)?;
            (if flows_on {
                &mut on_runs
            } else {
                &mut off_runs
            })
            .push(r.rate);
        }
        progress(&format!(
            "  flows round {}: ClusterIP on {:.0}/s off {:.0}/s",
            round + 1,
            on_runs.last().copied().unwrap_or(0.0),
            off_runs.last().copied().unwrap_or(0.0)
        ));
    }
    drop((on, off));
    let connects = OnOff::of(&on_runs, &off_runs).into();

    let intake = (|| {
        let uncapped = start("flows-max", &["--flow-rate", NO_CAP])?;
        let threads =
            u32::try_from(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
                .unwrap_or(1);
        let cpu_before = uncapped.cpu_seconds()?;
        let flood =
            lab.connect_rate(client, Some(uncapped.cgroup()), &[empty], s.flood, threads)?;
        std::thread::sleep(Duration::from_millis(500));
        let cpu = uncapped.cpu_seconds()? - cpu_before;
        let stats = uncapped.flow_stats()?;
        progress(&format!(
            "  flows intake: {} refused, agent CPU {cpu:.2} s, {stats}",
            flood.errors
        ));
        Intake::of(flood.seconds, flood.errors, cpu, &stats)
    })()
    .into();
    Ok((connects, intake, rate))
}

/// `ferrite-lab connect-rate` from `ns` to `target`.
fn connect_rate_from(
    exe: &Path,
    ns: &ferrite_lab::Ns,
    target: SocketAddr,
    run: Duration,
    threads: u32,
) -> Result<ConnectRateReport, String> {
    let mut cmd = ns.command(exe).map_err(|e| e.to_string())?;
    cmd.args(["connect-rate", "--target", &target.to_string()])
        .args(["--duration-ms", &run.as_millis().to_string()])
        .args(["--threads", &threads.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = Child::spawn(&mut cmd).map_err(|e| e.to_string())?;
    let out = child
        .output_within(run + Duration::from_secs(15))
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "connect-rate to {target}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("connect-rate output: {e}"))
}

/// North-south Gbit/s and connects/s through node0 (flows on) and node1 (flows off).
fn northsouth(
    exe: &Path,
    ferrite: &Path,
    s: &FlowsSettings,
) -> Result<(Cell<OnOff>, Cell<OnOff>), String> {
    if let Some(hint) = tools_missing() {
        return Err(format!("iperf3/wrk missing: {hint}"));
    }
    progress("flows: building the north-south lab (2 nodes, a client)");
    let config = NsLabConfig {
        prefix: "flb".into(),
        nodes: 2,
        pods_per_node: 1,
        clients: 1,
        iperf3: true,
        lb_via: 0,
        ..NsLabConfig::default()
    };
    let mut lab = NsLab::build(config, exe).map_err(|e| format!("north-south lab: {e}"))?;
    let off_range: Cidr = "172.30.1.0/24".parse().expect("valid");
    Route::via(off_range, IpAddr::V4(lab.node(1).v4()))
        .add(lab.client(0).ns())
        .map_err(|e| e.to_string())?;
    let endpoint = |i: usize| SvcEndpoint::new(lab.node(i).pod_v4(0), &lab.node(i).name);
    let on_svc = bench_service("flows-on", Ipv4Addr::new(10, 96, 0, 10), ON_LB, endpoint(0));
    let off_svc = with_node_ports(
        "flows-off",
        Ipv4Addr::new(10, 96, 0, 11),
        OFF_LB,
        endpoint(1),
        (30081, 30202),
    );
    lab.write_manifest("bench.yaml", &(on_svc.to_yaml() + &off_svc.to_yaml()))
        .map_err(|e| e.to_string())?;
    for (node, args) in [
        (0, vec![]),
        (1, vec!["--flow-rate".to_owned(), "0".to_owned()]),
    ] {
        let mut config = AgentConfig::new(ferrite);
        config.log_level = "info".into();
        config.extra_args = args;
        lab.start_agent(node, &config)
            .map_err(|e| format!("agent on node{}: {e}", node + 1))?;
    }
    for (lb, node) in [(ON_LB, 0), (OFF_LB, 1)] {
        check_path(
            &lab,
            SocketAddr::from((lb, 80)),
            &lab.node(node).pod_name(0),
        )?;
    }
    let client = lab.client(0).ns();
    let (mut gbps, mut conns) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..s.runs {
        check_interrupted()?;
        for side in [round % 2, 1 - round % 2] {
            let lb = if side == 0 { ON_LB } else { OFF_LB };
            let bps = iperf3_from(client, SocketAddr::from((lb, POD_IPERF)), s.seconds)?;
            gbps[side].push(bps / 1e9);
            let r = connect_rate_from(exe, client, SocketAddr::from((lb, 80)), s.run, s.threads)?;
            conns[side].push(r.rate);
        }
        progress(&format!(
            "  flows round {}: north-south on {:.2} Gbit/s {:.0}/s, off {:.2} Gbit/s {:.0}/s",
            round + 1,
            gbps[0].last().copied().unwrap_or(0.0),
            conns[0].last().copied().unwrap_or(0.0),
            gbps[1].last().copied().unwrap_or(0.0),
            conns[1].last().copied().unwrap_or(0.0),
        ));
    }
    Ok((
        OnOff::of(&gbps[0], &gbps[1]).into(),
        OnOff::of(&conns[0], &conns[1]).into(),
    ))
}
