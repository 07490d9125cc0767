//! The `pods` section: pod ↔ pod TCP throughput and connect rate across two nodes over
//! ferrite's native routes and over its VXLAN, each against node ↔ node on the same LAN in the
//! same lab (runs interleaved so drift hits both alike), and masqueraded pod → WAN against
//! node → WAN ([`super::masq`]).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrite_lab::podlab::{PodLab, PodLabConfig};
use ferrite_lab::report::ConnectRateReport;
use ferrite_lab::{Child, Ns};
use serde::Serialize;

use super::masq::{MasqBench, masquerade};
use super::northsouth::tools::iperf3_from;
use super::results::{Cell, Spread, cell, ratio, thousands_f, times};
use super::{check_interrupted, progress};

const IPERF_PORT: u16 = 5201;
const SERVE_PORT: u16 = 8080;
/// The PodCIDR of lab node 2 (see [`ferrite_lab::podlab::node_yaml`]).
const NODE2_PODS: &str = "10.246.2.0/24";

/// How much to measure.
#[derive(Clone, Debug)]
pub struct PodsSettings {
    /// Interleaved rounds per path (≥ 5 for the table).
    pub runs: usize,
    /// `iperf3 -t` seconds.
    pub seconds: u32,
    /// One connect-rate run.
    pub rate_run: Duration,
}

/// One path's measurements, and how it compares with its baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathRow {
    pub path: String,
    /// The row the ratios compare with (`None`: this row is a baseline).
    pub baseline: Option<String>,
    /// Receiver-side TCP throughput, bits per second.
    pub throughput: Spread,
    /// TCP connects per second (connect + RST-close, one thread), where measured.
    pub connects: Option<Spread>,
    pub throughput_vs_baseline: Option<f64>,
    pub connects_vs_baseline: Option<f64>,
    /// The target for the throughput ratio.
    pub target: Option<f64>,
}

/// Native (BPF host routing, and the stack's with `--host-routing legacy`), VXLAN and
/// masquerade, each with its baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodsBench {
    pub native: Cell<Vec<PathRow>>,
    /// Native routes with `--host-routing legacy`: the stack forwards pod traffic.
    pub native_legacy: Cell<Vec<PathRow>>,
    pub vxlan: Cell<Vec<PathRow>>,
    pub masquerade: Cell<MasqBench>,
    pub runs: usize,
    pub seconds: u32,
}

impl PodsBench {
    pub fn incomplete(&self) -> bool {
        self.native.is_not_run()
            || self.native_legacy.is_not_run()
            || self.vxlan.is_not_run()
            || self.masquerade.is_not_run()
    }
}

/// Runs the section; a part that cannot run says why in its cell.
pub fn measure(exe: &Path, ferrite: Result<&Path, &String>, settings: &PodsSettings) -> PodsBench {
    let runs = settings.runs.max(1);
    let (native, native_legacy, vxlan, masq) = match ferrite {
        Err(e) => (
            Cell::not_run(e.clone()),
            Cell::not_run(e.clone()),
            Cell::not_run(e.clone()),
            Cell::not_run(e.clone()),
        ),
        Ok(ferrite) => {
            let part = |name: &str,
                        prefix: &str,
                        extra: &[&str],
                        mode: &str,
                        target: f64|
             -> Cell<Vec<PathRow>> {
                if let Err(e) = check_interrupted() {
                    return Cell::not_run(e);
                }
                progress(&format!("pods: {name} lab"));
                let r = across_nodes(exe, ferrite, settings, prefix, extra, mode, name, target);
                if let Err(e) = &r {
                    progress(&format!("pods: {name}: {e}"));
                }
                r.into()
            };
            let native = part("native routes", "pbn", &[], "native", 0.95);
            let native_legacy = part(
                "native routes, --host-routing legacy",
                "pbl",
                &["--host-routing", "legacy"],
                "native",
                0.95,
            );
            let vxlan = part("VXLAN", "pbv", &["--routing", "vxlan"], "vxlan", 0.8);
            progress("pods: masquerade lab");
            let masq = check_interrupted()
                .and_then(|()| masquerade(ferrite, runs, settings.seconds))
                .inspect_err(|e| progress(&format!("pods: masquerade: {e}")));
            (native, native_legacy, vxlan, masq.into())
        }
    };
    PodsBench {
        native,
        native_legacy,
        vxlan,
        masquerade: masq,
        runs,
        seconds: settings.seconds,
    }
}

/// Servers in one netns: `iperf3 -s` and `ferrite-lab serve`.
pub(super) fn serve(exe: &Path, ns: &Ns, name: &str) -> Result<Vec<Child>, String> {
    let mut iperf = ns.command("iperf3").map_err(|e| e.to_string())?;
    iperf
        .args(["-s", "-p", &IPERF_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut serve = Command::new(exe);
    serve
        .args(["serve", "--name", name, "--tcp"])
        .arg(format!("0.0.0.0:{SERVE_PORT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ns.enter_on_spawn(&mut serve).map_err(|e| e.to_string())?;
    Ok(vec![
        Child::spawn(&mut iperf).map_err(|e| format!("iperf3 -s in {name}: {e}"))?,
        Child::spawn(&mut serve).map_err(|e| format!("serve in {name}: {e}"))?,
    ])
}

/// `ferrite-lab connect-rate` from `ns` to `target`: the report.
fn connect_rate(
    exe: &Path,
    ns: &Ns,
    target: SocketAddr,
    run: Duration,
) -> Result<ConnectRateReport, String> {
    let mut cmd = Command::new(exe);
    cmd.args(["connect-rate", "--target", &target.to_string()])
        .args(["--duration-ms", &run.as_millis().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ns.enter_on_spawn(&mut cmd).map_err(|e| e.to_string())?;
    let out = Child::spawn(&mut cmd)
        .map_err(|e| e.to_string())?
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

/// Connect rate that fails when the path is broken (no connect at all).
pub(super) fn rate_of(
    exe: &Path,
    ns: &Ns,
    target: SocketAddr,
    run: Duration,
) -> Result<f64, String> {
    let r = connect_rate(exe, ns, target, run)?;
    if r.connects == 0 {
        return Err(format!(
            "no connect to {target} succeeded: {:?}",
            r.failures
        ));
    }
    Ok(r.rate)
}

/// Until `target` accepts a connect from `ns` (servers just spawned, routes just applied).
pub(super) fn wait_reachable(exe: &Path, ns: &Ns, target: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match rate_of(exe, ns, target, Duration::from_millis(100)) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > Duration::from_secs(15) => {
                return Err(format!("{target} unreachable: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Two LAN nodes running the shipped agent (plus `extra`), a pod on each: node1 → node2
/// and pod1 → pod2, interleaved.
#[expect(clippy::too_many_arguments, reason = "one lab's whole shape")]
fn across_nodes(
    exe: &Path,
    ferrite: &Path,
    settings: &PodsSettings,
    prefix: &str,
    extra: &[&str],
    mode: &str,
    name: &str,
    target: f64,
) -> Result<Vec<PathRow>, String> {
    let _ = ferrite_lab::cleanup_stale(prefix);
    let mut lab = PodLab::start(
        ferrite,
        PodLabConfig {
            prefix: prefix.into(),
            lan_nodes: 2,
            far_nodes: 0,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            log_level: "warn".into(),
            containerd: false,
        },
    )
    .map_err(|e| format!("pod lab: {e}"))?;
    for node in &mut lab.nodes {
        node.add_pod(prefix).map_err(|e| format!("CNI ADD: {e}"))?;
    }
    let wanted = format!("{mode}/ok");
    let start = Instant::now();
    while lab.nodes[0].route_mode(NODE2_PODS) != wanted {
        if start.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "node1's route to {NODE2_PODS} is {}, not {wanted}",
                lab.nodes[0].route_mode(NODE2_PODS)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (node1, node2) = (&lab.nodes[0], &lab.nodes[1]);
    let (pod1, pod2) = (&node1.pods[0], &node2.pods[0]);
    // Which pair `--pod-device auto` built on this kernel (netkit or veth) names the row.
    let device = pod1
        .host_device()
        .ok_or_else(|| format!("no host device in {}", pod1.result))?;
    let kind = ferrite_lab::link_kind(node1.ns.ns(), device)
        .map_err(|e| format!("ip link show {device}: {e}"))?;
    let mut servers = serve(exe, node2.ns.ns(), &node2.name)?;
    servers.extend(serve(exe, pod2.netns.ns(), &format!("{}-pod", node2.name))?);
    let node_target = IpAddr::V4(node2.v4());
    let pod_target = pod2.v4;
    let paths = [(node1.ns.ns(), node_target), (pod1.netns.ns(), pod_target)];
    for (ns, ip) in paths {
        wait_reachable(exe, ns, SocketAddr::new(ip, SERVE_PORT))?;
    }
    let mut tput = [Vec::new(), Vec::new()];
    let mut rate = [Vec::new(), Vec::new()];
    for round in 0..settings.runs.max(1) {
        check_interrupted()?;
        for (i, (ns, ip)) in paths.iter().enumerate() {
            let bps = iperf3_from(ns, SocketAddr::new(*ip, IPERF_PORT), settings.seconds)
                .map_err(|e| format!("iperf3 to {ip}: {e}"))?;
            tput[i].push(bps);
            rate[i].push(rate_of(
                exe,
                ns,
                SocketAddr::new(*ip, SERVE_PORT),
                settings.rate_run,
            )?);
        }
        progress(&format!(
            "pods:   {name} round {}: node↔node {:.2} Gbit/s {:.0}/s, pod↔pod {:.2} Gbit/s {:.0}/s",
            round + 1,
            tput[0][round] / 1e9,
            rate[0][round],
            tput[1][round] / 1e9,
            rate[1][round]
        ));
    }
    drop(servers);
    Ok(rows(
        &format!("node ↔ node (LAN, {name} lab)"),
        &format!("pod ↔ pod over {name} ({kind} pods)"),
        [&tput[0], &tput[1]],
        [&rate[0], &rate[1]],
        target,
    ))
}

/// The baseline row and the measured row with its ratios.
fn rows(
    baseline: &str,
    path: &str,
    tput: [&[f64]; 2],
    rate: [&[f64]; 2],
    target: f64,
) -> Vec<PathRow> {
    let (bt, bc) = (Spread::of(tput[0]), Spread::of(rate[0]));
    let (pt, pc) = (Spread::of(tput[1]), Spread::of(rate[1]));
    vec![
        PathRow {
            throughput_vs_baseline: ratio(Some(pt.median), Some(bt.median)),
            connects_vs_baseline: ratio(Some(pc.median), Some(bc.median)),
            path: path.to_owned(),
            baseline: Some(baseline.to_owned()),
            throughput: pt,
            connects: Some(pc),
            target: Some(target),
        },
        PathRow {
            path: baseline.to_owned(),
            baseline: None,
            throughput: bt,
            connects: Some(bc),
            throughput_vs_baseline: None,
            connects_vs_baseline: None,
            target: None,
        },
    ]
}

fn masq_rows(m: &MasqBench) -> Vec<PathRow> {
    let baseline = "node → WAN (not masqueraded)";
    vec![
        PathRow {
            path: "pod → WAN, masqueraded by ferrite".into(),
            baseline: Some(baseline.into()),
            throughput: m.masqueraded.clone(),
            connects: None,
            throughput_vs_baseline: Some(m.ratio),
            connects_vs_baseline: None,
            target: Some(0.95),
        },
        PathRow {
            path: baseline.into(),
            baseline: None,
            throughput: m.node.clone(),
            connects: None,
            throughput_vs_baseline: None,
            connects_vs_baseline: None,
            target: None,
        },
    ]
}

pub(super) fn gbits(s: &Spread) -> String {
    format!(
        "{:.2} / {:.2} / {:.2}",
        s.min / 1e9,
        s.median / 1e9,
        s.max / 1e9
    )
}

pub(super) fn per_second(s: &Spread) -> String {
    format!(
        "{} / {} / {}",
        thousands_f(s.min),
        thousands_f(s.median),
        thousands_f(s.max)
    )
}

fn verdict(row: &PathRow) -> String {
    match (row.throughput_vs_baseline, row.target) {
        (Some(r), Some(t)) => format!("≥{t:.2}× {}", if r >= t { "met" } else { "MISSED" }),
        _ => "baseline".into(),
    }
}

/// The section as markdown: one table, every row (baselines included), min / median / max.
pub fn markdown(b: &Cell<PodsBench>, out: &mut String) {
    let _ = writeln!(out, "\n## Pod network across nodes\n");
    let Some(b) = b.value() else {
        let _ = writeln!(out, "{}", cell(b, |_| String::new()));
        return;
    };
    let _ = writeln!(
        out,
        "{} interleaved runs per path, iperf3 -t {} (Gbit/s, min / median / max) and connect rate (connects/s).\n",
        b.runs, b.seconds
    );
    let _ = writeln!(
        out,
        "| path | TCP Gbit/s | ×baseline | connects/s | ×baseline | target |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    let parts: [(&str, Result<Vec<PathRow>, String>); 4] = [
        ("native routes", rows_of(&b.native)),
        (
            "native routes, --host-routing legacy",
            rows_of(&b.native_legacy),
        ),
        ("VXLAN", rows_of(&b.vxlan)),
        (
            "masquerade",
            b.masquerade
                .value()
                .map(masq_rows)
                .ok_or_else(|| cell(&b.masquerade, |_| String::new())),
        ),
    ];
    for (name, rows) in parts {
        match rows {
            Ok(rows) => {
                for row in rows {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} |",
                        row.path,
                        gbits(&row.throughput),
                        times(row.throughput_vs_baseline),
                        row.connects.as_ref().map_or_else(|| "–".into(), per_second),
                        times(row.connects_vs_baseline),
                        verdict(&row),
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "| {name} | {e} | | | | |");
            }
        }
    }
}

fn rows_of(c: &Cell<Vec<PathRow>>) -> Result<Vec<PathRow>, String> {
    c.value().cloned().ok_or_else(|| cell(c, |_| String::new()))
}

pub fn notes() -> Vec<String> {
    vec![
        "Pods lab (`ferrite_lab::podlab`): two node netns on one LAN bridge, each running the shipped agent (DaemonSet args, paths rewritten) on a `dir:` source with both Node objects, one pod per node added through the CNI plugin with the conflist the agent wrote; the VXLAN lab adds `--routing vxlan`, the legacy lab `--host-routing legacy` (the stack forwards pod traffic: the row BPF host routing is measured against). A row names the pod device `--pod-device auto` built on the kernel of the run (netkit where it can make one, veth elsewhere). Baseline: node1 → node2's LAN address in the same lab, runs interleaved with the pod runs".into(),
        "Masquerade lab (`ferrite_lab::masqlab`): a pod on node1 → a WAN host behind a router without routes to the PodCIDRs (SNAT by ferrite's TC egress program) against node1 → the same host".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench() -> PodsBench {
        PodsBench {
            native: Cell::Value(rows(
                "node ↔ node",
                "pod ↔ pod over native routes",
                [&[10e9, 12e9, 11e9], &[9e9, 10.5e9, 10e9]],
                [&[1000.0, 1200.0, 1100.0], &[900.0, 1000.0, 950.0]],
                0.95,
            )),
            native_legacy: Cell::not_run("legacy lab: boom"),
            vxlan: Cell::not_run("vxlan lab: boom"),
            masquerade: Cell::not_run("no --ferrite given"),
            runs: 3,
            seconds: 2,
        }
    }

    #[test]
    fn rows_compare_medians_with_their_baseline() {
        let rows = rows_of(&bench().native).unwrap();
        assert_eq!(rows.len(), 2);
        let (pod, node) = (&rows[0], &rows[1]);
        assert_eq!(node.baseline, None);
        assert!((node.throughput.median - 11e9).abs() < 1.0);
        assert!((pod.throughput.min - 9e9).abs() < 1.0);
        assert!((pod.throughput.max - 10.5e9).abs() < 1.0);
        let r = pod.throughput_vs_baseline.unwrap();
        assert!((r - 10e9 / 11e9).abs() < 1e-9, "{r}");
        assert_eq!(verdict(pod), "≥0.95× MISSED");
        assert_eq!(verdict(node), "baseline");
    }

    #[test]
    fn markdown_shows_every_row_and_why_a_part_did_not_run() {
        let b = bench();
        assert!(b.incomplete());
        let mut md = String::new();
        markdown(&Cell::Value(b), &mut md);
        assert!(md.contains("| pod ↔ pod over native routes | 9.00 / 10.00 / 10.50 | 0.91× | 900 / 950 / 1,000 | 0.86× | ≥0.95× MISSED |"), "{md}");
        assert!(
            md.contains("| node ↔ node | 10.00 / 11.00 / 12.00 | – |"),
            "{md}"
        );
        assert!(md.contains("| VXLAN | not run: vxlan lab: boom |"), "{md}");
        assert!(
            md.contains("| native routes, --host-routing legacy | not run: legacy lab: boom |"),
            "{md}"
        );
        assert!(
            md.contains("| masquerade | not run: no --ferrite given |"),
            "{md}"
        );
    }
}
