//! `ferrite-lab bench`: ferrite against direct-to-pod and kube-proxy-style iptables, side by
//! side in one run, written to `results.md` and `results.json`.

mod agent;
mod cni;
mod flows;
mod kube;
mod l2;
mod masq;
mod northsouth;
mod pods;
mod policy;
mod results;
mod services;
mod sizes;
mod topology;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use argh::FromArgs;
use ferrite_lab::report::ConnectRateReport;

use agent::{Agent, ApplyTiming, Memory};
use results::{Cell, ConnectRow, MemoryRow, Meta, ProgrammeRow, Rate, Results, median, ratio};
use topology::{BACKENDS, Lab, check_reaches_backends};

/// Measure ferrite against direct-to-pod and kube-proxy iptables rules; write results.md/json.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
pub struct BenchArgs {
    /// output folder (default target/bench)
    #[argh(option, default = "PathBuf::from(\"target/bench\")")]
    out: PathBuf,
    /// the ferrite binary to benchmark; without it the ferrite columns are "not run"
    #[argh(option)]
    ferrite: Option<PathBuf>,
    /// smoke run: 0.5 s per measurement, one run each
    #[argh(switch)]
    quick: bool,
    /// service counts to measure, comma-separated (default 1,1000,10000)
    #[argh(option, default = "String::from(\"1,1000,10000\")")]
    scales: String,
    /// connecting threads per client (default 1)
    #[argh(option, default = "1")]
    threads: u32,
    /// iptables-restore program for the baseline (default iptables-restore)
    #[argh(option, default = "String::from(\"iptables-restore\")")]
    iptables_restore: String,
    /// sections to run, comma-separated: clusterip, northsouth, l2, cni, kube, pods, policy,
    /// flows, sizes (default all)
    #[argh(
        option,
        default = "String::from(\"clusterip,northsouth,l2,cni,kube,pods,policy,flows,sizes\")"
    )]
    sections: String,
    /// sizes: the cargo target folder holding `make cross` and `make package` output
    /// (default target)
    #[argh(option, default = "PathBuf::from(\"target\")")]
    target_dir: PathBuf,
    /// north-south: wrk connections (default 16)
    #[argh(option, default = "16")]
    wrk_connections: u32,
    /// l2: failover trials per fault kind (kill -9, SIGSTOP, link down; default 10, --quick 2)
    #[argh(option)]
    l2_trials: Option<usize>,
    /// cni: ADD+DEL cycles per plugin set and row (default 200, --quick 20)
    #[argh(option)]
    cni_cycles: Option<usize>,
    /// pods and policy: interleaved rounds per path or row (default 5, --quick 1)
    #[argh(option)]
    pods_runs: Option<usize>,
    /// policy: samples per kind of change for the time to enforcement (default 20, --quick 3)
    #[argh(option)]
    policy_changes: Option<usize>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

pub fn main(args: &BenchArgs) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferrite-lab bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    run: Duration,
    runs: usize,
    threads: u32,
    iptables_restore: String,
}

/// Pod ↔ pod traffic runs (`pods` and `policy` sections).
fn pods_settings(args: &BenchArgs) -> pods::PodsSettings {
    pods::PodsSettings {
        runs: args
            .pods_runs
            .unwrap_or(if args.quick { 1 } else { 5 })
            .max(1),
        seconds: if args.quick { 1 } else { 3 },
        rate_run: Duration::from_millis(if args.quick { 300 } else { 1000 }),
    }
}

fn parse_scales(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=60_000).contains(n))
                .ok_or_else(|| format!("bad --scales entry {s:?} (1 to 60000)"))
        })
        .collect()
}

/// Which parts of the benchmark to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "one switch per section")]
struct Sections {
    clusterip: bool,
    northsouth: bool,
    l2: bool,
    cni: bool,
    kube: bool,
    pods: bool,
    policy: bool,
    flows: bool,
    sizes: bool,
}

fn parse_sections(text: &str) -> Result<Sections, String> {
    let mut s = Sections {
        clusterip: false,
        northsouth: false,
        l2: false,
        cni: false,
        kube: false,
        pods: false,
        policy: false,
        flows: false,
        sizes: false,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "clusterip" => s.clusterip = true,
            "northsouth" => s.northsouth = true,
            "l2" => s.l2 = true,
            "cni" => s.cni = true,
            "kube" => s.kube = true,
            "pods" => s.pods = true,
            "policy" => s.policy = true,
            "flows" => s.flows = true,
            "sizes" => s.sizes = true,
            other => {
                return Err(format!(
                    "unknown section {other:?} (clusterip, northsouth, l2, cni, kube, pods, policy, flows, sizes)"
                ));
            }
        }
    }
    if s.clusterip
        || s.northsouth
        || s.l2
        || s.cni
        || s.kube
        || s.pods
        || s.policy
        || s.flows
        || s.sizes
    {
        Ok(s)
    } else {
        Err("no section to run".into())
    }
}

#[expect(clippy::too_many_lines, reason = "one block per section, in order")]
fn run(args: &BenchArgs) -> Result<ExitCode, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, cgroups, iptables, BPF)".into());
    }
    let scales = parse_scales(&args.scales)?;
    let sections = parse_sections(&args.sections)?;
    install_signal_handlers();
    if let Ok(removed) = ferrite_lab::cleanup_stale("flb") {
        for r in removed {
            progress(&format!("removed leftover {r}"));
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("create {}: {e}", args.out.display()))?;
    let work = args.out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("create {}: {e}", work.display()))?;
    let settings = Settings {
        run: Duration::from_millis(if args.quick { 500 } else { 3000 }),
        runs: if args.quick { 1 } else { 3 },
        threads: args.threads.max(1),
        iptables_restore: args.iptables_restore.clone(),
    };
    let ferrite = match &args.ferrite {
        None => Err("no --ferrite given".to_owned()),
        Some(p) if !p.is_file() => Err(format!("{} does not exist", p.display())),
        Some(p) => std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display())),
    };

    let mut results = Results {
        meta: meta(&settings, args.quick, ferrite.as_ref().ok()),
        connect: Vec::new(),
        programme: Vec::new(),
        memory: Vec::new(),
        northsouth: None,
        l2: None,
        cni: None,
        kube: None,
        pods: None,
        policy: None,
        flows: None,
        sizes: None,
        notes: Vec::new(),
    };
    if sections.clusterip {
        results.notes = notes(&settings);
        clusterip(
            &exe,
            &scales,
            &settings,
            ferrite.as_deref(),
            &work,
            &mut results,
        )?;
    }
    if sections.northsouth {
        check_interrupted()?;
        let ns_settings = northsouth::NsSettings {
            seconds: if args.quick { 1 } else { 3 },
            runs: settings.runs,
            wrk_connections: args.wrk_connections.max(1),
            wrk_threads: 1,
            iptables_restore: settings.iptables_restore.clone(),
        };
        let measured = match northsouth::tools_missing() {
            Some(hint) => Err(format!("iperf3/wrk missing: {hint}")),
            None => northsouth::measure(&exe, ferrite.as_deref(), &ns_settings),
        };
        if let Err(e) = &measured {
            progress(&format!("north-south: {e}"));
        }
        results.notes.extend(northsouth_notes());
        results.northsouth = Some(measured.into());
    }
    if sections.l2 {
        check_interrupted()?;
        l2_section(args, &exe, ferrite.as_deref(), &mut results);
    }
    if sections.cni {
        check_interrupted()?;
        cni::section(args, ferrite.as_deref(), &mut results)?;
    }
    if sections.kube {
        check_interrupted()?;
        results.kube = Some(kube::section(args.quick, ferrite.as_deref(), &work));
    }
    if sections.pods {
        check_interrupted()?;
        results.pods = Some(Cell::Value(pods::measure(
            &exe,
            ferrite.as_deref(),
            &pods_settings(args),
        )));
        results.notes.extend(pods::notes());
    }
    if sections.policy {
        check_interrupted()?;
        let settings = policy::PolicySettings {
            traffic: pods_settings(args),
            changes: args
                .policy_changes
                .unwrap_or(if args.quick { 3 } else { 20 })
                .max(1),
            watch_pods: if args.quick {
                vec![0, 1000]
            } else {
                vec![0, 1000, 10_000]
            },
            work: work.join("policy"),
        };
        results.policy = Some(Cell::Value(policy::measure(
            &exe,
            ferrite.as_deref(),
            &settings,
        )));
        results.notes.extend(policy::notes());
    }
    if sections.flows {
        check_interrupted()?;
        let settings = flows::FlowsSettings {
            runs: settings.runs,
            run: settings.run,
            seconds: if args.quick { 1 } else { 3 },
            threads: settings.threads,
            flood: Duration::from_millis(if args.quick { 1000 } else { 3000 }),
        };
        results.flows = Some(flows::measure(&exe, ferrite.as_deref(), &work, &settings));
        results.notes.extend(flows::notes());
    }
    if sections.sizes {
        results.sizes = Some(sizes::measure(&args.target_dir, &work));
    }

    let md = results::markdown(&results);
    let json = serde_json::to_string_pretty(&results).expect("results serialize");
    for (name, text) in [("results.md", &md), ("results.json", &json)] {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    println!("{md}");
    progress(&format!("wrote {}", args.out.join("results.md").display()));
    let incomplete = results
        .connect
        .iter()
        .any(|r| r.direct.is_not_run() || r.iptables.is_not_run() || r.ferrite.is_not_run())
        || results
            .programme
            .iter()
            .any(|r| r.ferrite_wall_ms.is_not_run() || r.iptables_restore_ms.is_not_run())
        || results
            .northsouth
            .as_ref()
            .is_some_and(|ns| ns.value().is_none_or(northsouth::NorthSouth::incomplete))
        || results
            .l2
            .as_ref()
            .is_some_and(|l2| l2.value().is_none_or(l2::L2Bench::incomplete))
        || results
            .cni
            .as_ref()
            .is_some_and(|c| c.value().is_none_or(cni::CniBench::incomplete))
        || results
            .kube
            .as_ref()
            .is_some_and(|k| k.value().is_none_or(kube::KubeBench::incomplete))
        || results
            .pods
            .as_ref()
            .is_some_and(|p| p.value().is_none_or(pods::PodsBench::incomplete))
        || results
            .policy
            .as_ref()
            .is_some_and(|p| p.value().is_none_or(policy::PolicyBench::incomplete))
        || results
            .flows
            .as_ref()
            .is_some_and(|f| f.value().is_none_or(flows::FlowsBench::incomplete))
        || results
            .sizes
            .as_ref()
            .is_some_and(sizes::SizesBench::incomplete);
    Ok(if incomplete {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The L2 announcement section: failover trials and answers per second.
fn l2_section(
    args: &BenchArgs,
    exe: &Path,
    ferrite: Result<&Path, &String>,
    results: &mut Results,
) {
    let settings = l2::L2Settings {
        trials_per_fault: args
            .l2_trials
            .unwrap_or(if args.quick { 2 } else { 10 })
            .max(1),
        rate_run: Duration::from_millis(if args.quick { 500 } else { 2000 }),
    };
    let measured = l2::measure(exe, ferrite, &settings);
    if let Err(e) = &measured {
        progress(&format!("l2: {e}"));
    }
    results.notes.extend(l2::notes());
    results.l2 = Some(measured.into());
}

fn northsouth_notes() -> Vec<String> {
    vec![
        "North-south lab: a LAN bridge with four node netns (eth0 on the LAN, one backend pod each running `ferrite-lab serve --http` and `iperf3 -s`) and a client netns; node1 runs `ferrite agent --devices eth0` (TC ingress), node2 holds kube-proxy's iptables rules (nat + filter, one `iptables-restore`), node3 is a plain router, node4 runs `ferrite agent --devices eth0 --xdp native`".into(),
        "North-south services: one LoadBalancer service per load balancer (80 → 8081 HTTP, 5201 → 5201 iperf3, NodePorts 30080 and 30201), externalTrafficPolicy Cluster, the pod on the same node as its only endpoint; the client routes 172.30.0.0/24 via node1, 172.30.1.0/24 via node2 and 172.30.2.0/24 via node4 (the LB IPs)".into(),
        "×direct compares with `direct to pod (plain node)`: the same pod one routed hop away through a node without any load balancer".into(),
    ]
}

/// The `ClusterIP` part: connect rates and programming times at each scale.
fn clusterip(
    exe: &Path,
    scales: &[usize],
    settings: &Settings,
    ferrite: Result<&Path, &String>,
    work: &Path,
    results: &mut Results,
) -> Result<(), String> {
    progress("building the lab");
    let mut lab = Lab::build(exe)?;
    // Warm caches, page in binaries and settle CPU frequency before the first measured run.
    let warmup = settings.run / 3;
    let _ = lab.connect_rate(
        lab.direct_client(),
        None,
        &lab.backend_targets(),
        warmup,
        settings.threads,
    );
    for &scale in scales {
        check_interrupted()?;
        measure_scale(&mut lab, scale, settings, ferrite, work, results)?;
    }
    drop(lab);
    Ok(())
}

fn meta(settings: &Settings, quick: bool, ferrite: Option<&PathBuf>) -> Meta {
    let first_line = |program: &str, args: &[&str]| {
        ferrite_lab::cmd::stdout_of(program, args).map_or_else(
            |e| e.to_string(),
            |s| s.lines().next().unwrap_or("").trim().to_owned(),
        )
    };
    Meta {
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        kernel: first_line("uname", &["-r"]),
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        iptables: first_line(&settings.iptables_restore, &["--version"]),
        quick,
        run_ms: u64::try_from(settings.run.as_millis()).unwrap_or(u64::MAX),
        runs: settings.runs,
        client_threads: settings.threads,
        ferrite: ferrite.map(|p| p.display().to_string()),
    }
}

fn notes(settings: &Settings) -> Vec<String> {
    vec![
        format!(
            "Lab: a host netns routes between {BACKENDS} backend pods (`ferrite-lab serve`) and client pods, each a netns with a veth; every client does connect + RST-close in a loop (`ferrite-lab connect-rate`, {} thread(s))",
            settings.threads
        ),
        format!("direct: connects rotate over the {BACKENDS} backend pod IPs, no service plumbing"),
        "iptables: a fresh client netns holding the nat table kube-proxy (iptables mode) writes for the same services, loaded with one iptables-restore; the target is the last service in KUBE-SERVICES, the worst case of the linear walk".into(),
        "ferrite: `ferrite agent --source dir:` in the root netns, the client in its own netns and in the agent's --cgroup; same target as iptables".into(),
        "ferrite (wall): from renaming the YAML into the watched folder until `ferrite status -o json` shows last_apply with every service (polled every 10 ms, so it includes status round trips); ferrite (agent's own): last_apply.duration_us".into(),
    ]
}

fn rate_cell(runs: &Runs) -> Cell<Rate> {
    match runs {
        Ok(runs) if !runs.is_empty() => {
            let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
            Cell::Value(Rate {
                median: median(&rates),
                runs: rates,
                errors: runs.iter().map(|r| r.errors).sum(),
            })
        }
        Ok(_) => Cell::not_run("no runs"),
        Err(e) => Cell::not_run(e.clone()),
    }
}

fn push_run(
    acc: &mut Result<Vec<ConnectRateReport>, String>,
    run: Result<ConnectRateReport, String>,
) {
    if let Ok(list) = acc {
        match run {
            Ok(r) => list.push(r),
            Err(e) => *acc = Err(e),
        }
    }
}

/// The iptables side of one scale: a client pod with the rules loaded.
struct IptablesPath {
    pod: usize,
    rules: usize,
    restore: Result<Duration, String>,
    ready: Result<(), String>,
}

fn prepare_iptables(
    lab: &mut Lab,
    services: &[services::Service],
    target: SocketAddr,
    program: &str,
) -> Result<IptablesPath, String> {
    let rules = services::nat_table(services);
    let pod = lab.add_client()?;
    let restore = topology::iptables_restore(lab.pod(pod), program, &rules);
    let ready = restore.clone().and_then(|_| {
        let report = lab.probe(lab.pod(pod), None, target, 6)?;
        check_reaches_backends(&report).map_err(|e| format!("through iptables: {e}"))
    });
    progress(&format!(
        "  iptables-restore: {restore:?}, probe: {ready:?}"
    ));
    Ok(IptablesPath {
        pod,
        rules: services::rule_count(&rules),
        restore,
        ready,
    })
}

/// The ferrite side of one scale: a fresh agent with the services applied.
struct FerritePath {
    agent: Result<Agent, String>,
    apply: Result<ApplyTiming, String>,
    memory: Result<Memory, String>,
    ready: Result<(), String>,
}

fn prepare_ferrite(
    lab: &Lab,
    services: &[services::Service],
    target: SocketAddr,
    ferrite: Result<&Path, &String>,
    work: &Path,
) -> FerritePath {
    let scale = services.len();
    let mut agent = ferrite
        .map_err(Clone::clone)
        .and_then(|path| Agent::start(path, work, &format!("s{scale}")));
    let apply = match &mut agent {
        Ok(a) => a.apply(&services::to_yaml(services), scale as u64),
        Err(e) => Err(e.clone()),
    };
    progress(&format!("  ferrite apply: {apply:?}"));
    let (memory, ready) = match (&agent, &apply) {
        (Ok(a), Ok(_)) => (
            a.memory(),
            lab.probe(lab.ferrite_client(), Some(a.cgroup()), target, 6)
                .and_then(|r| {
                    check_reaches_backends(&r).map_err(|e| format!("through ferrite: {e}"))
                }),
        ),
        (Err(e), _) | (_, Err(e)) => (Err(e.clone()), Err(e.clone())),
    };
    FerritePath {
        agent,
        apply,
        memory,
        ready,
    }
}

type Runs = Result<Vec<ConnectRateReport>, String>;

/// Connect-rate runs of the three paths, interleaved so drift hits them alike.
fn run_rounds(
    lab: &Lab,
    settings: &Settings,
    target: SocketAddr,
    ipt: &IptablesPath,
    fer: &mut FerritePath,
) -> Result<(Runs, Runs, Runs), String> {
    let mut direct: Runs = Ok(Vec::new());
    let mut ipt_runs: Runs = ipt.ready.clone().map(|()| Vec::new());
    let mut fer_runs: Runs = fer.ready.clone().map(|()| Vec::new());
    let backends = lab.backend_targets();
    let (run, threads) = (settings.run, settings.threads);
    for round in 0..settings.runs {
        check_interrupted()?;
        let r = lab.connect_rate(lab.direct_client(), None, &backends, run, threads);
        push_run(&mut direct, r);
        if ipt_runs.is_ok() {
            let r = lab.connect_rate(lab.pod(ipt.pod), None, &[target], run, threads);
            push_run(&mut ipt_runs, r);
        }
        if let (Ok(_), Ok(a)) = (&fer_runs, &fer.agent) {
            let r = lab.connect_rate(
                lab.ferrite_client(),
                Some(a.cgroup()),
                &[target],
                run,
                threads,
            );
            push_run(&mut fer_runs, r);
        }
        progress(&format!(
            "  round {}: direct {} iptables {} ferrite {}",
            round + 1,
            last_rate(&direct),
            last_rate(&ipt_runs),
            last_rate(&fer_runs)
        ));
    }
    if let Ok(a) = &mut fer.agent
        && !a.running()
    {
        fer_runs = Err(format!(
            "agent exited during the run; log {}",
            a.log().display()
        ));
    }
    Ok((direct, ipt_runs, fer_runs))
}

fn measure_scale(
    lab: &mut Lab,
    scale: usize,
    settings: &Settings,
    ferrite: Result<&Path, &String>,
    work: &Path,
    results: &mut Results,
) -> Result<(), String> {
    progress(&format!("{scale} services"));
    let services = services::generate(scale, &lab.backend_ips());
    let last = services.last().expect("scale ≥ 1");
    let target = SocketAddr::from((last.cluster_ip, last.port));

    let ipt = prepare_iptables(lab, &services, target, &settings.iptables_restore)?;
    check_interrupted()?;
    let mut fer = prepare_ferrite(lab, &services, target, ferrite, work);
    let rounds = run_rounds(lab, settings, target, &ipt, &mut fer);
    // Stop the agent and drop the iptables pod before reporting (or bailing out).
    drop(fer.agent);
    lab.remove_client(ipt.pod);
    let (direct, ipt_runs, fer_runs) = rounds?;

    let (direct, ipt_cell, fer_cell) = (
        rate_cell(&direct),
        rate_cell(&ipt_runs),
        rate_cell(&fer_runs),
    );
    let median_of = |c: &Cell<Rate>| c.value().map(|r| r.median);
    results.connect.push(ConnectRow {
        services: scale,
        ferrite_vs_direct: ratio(median_of(&fer_cell), median_of(&direct)),
        ferrite_vs_iptables: ratio(median_of(&fer_cell), median_of(&ipt_cell)),
        direct,
        iptables: ipt_cell,
        ferrite: fer_cell,
    });
    let restore_ms = ipt.restore.map(|d| d.as_secs_f64() * 1e3);
    let wall_ms = fer
        .apply
        .as_ref()
        .map(|t| t.wall.as_secs_f64() * 1e3)
        .map_err(Clone::clone);
    #[expect(
        clippy::cast_precision_loss,
        reason = "microsecond counts are far below 2^52"
    )]
    let agent_ms = fer.apply.map(|t| t.agent.duration_us as f64 / 1e3);
    results.programme.push(ProgrammeRow {
        services: scale,
        backends: BACKENDS,
        iptables_rules: ipt.rules,
        iptables_vs_ferrite: ratio(restore_ms.clone().ok(), wall_ms.clone().ok()),
        iptables_restore_ms: restore_ms.into(),
        ferrite_wall_ms: wall_ms.into(),
        ferrite_agent_ms: agent_ms.into(),
    });
    results.memory.push(MemoryRow {
        services: scale,
        rss_kb: fer.memory.clone().map(|m| m.rss_kb).into(),
        hwm_kb: fer.memory.map(|m| m.hwm_kb).into(),
    });
    Ok(())
}

fn last_rate(runs: &Runs) -> String {
    match runs {
        Ok(list) => list
            .last()
            .map_or_else(|| "-".into(), |r| format!("{:.0}/s", r.rate)),
        Err(e) => format!("not run ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_parse() {
        assert_eq!(
            parse_scales("1,1000,10_000").unwrap(),
            vec![1, 1000, 10_000]
        );
        assert!(parse_scales("0").is_err());
        assert!(parse_scales("1,x").is_err());
        assert!(parse_scales("70000").is_err());
    }

    #[test]
    fn sections_parse() {
        assert_eq!(
            parse_sections("clusterip,northsouth").unwrap(),
            Sections {
                clusterip: true,
                northsouth: true,
                l2: false,
                cni: false,
                kube: false,
                pods: false,
                policy: false,
                flows: false,
                sizes: false,
            }
        );
        assert!(parse_sections("flows").unwrap().flows);
        assert!(!parse_sections("flows").unwrap().clusterip);
        assert!(parse_sections("sizes").unwrap().sizes);
        assert!(parse_sections("kube").unwrap().kube);
        assert!(parse_sections("pods").unwrap().pods);
        assert!(parse_sections("policy").unwrap().policy);
        assert!(parse_sections("l2").unwrap().l2);
        assert!(parse_sections("cni").unwrap().cni);
        assert!(!parse_sections("cni").unwrap().clusterip);
        assert!(!parse_sections("northsouth").unwrap().clusterip);
        assert!(parse_sections("").is_err());
        assert!(parse_sections("eastwest").is_err());
    }
}
