//! `ferrite-lab demo` (behind `make demo`): the whole north-south story in a netns lab, in well
//! under a minute. Three nodes on a LAN bridge run `ferrite agent`; a folder of plain YAML holds
//! a `LoadBalancerIPPool`, an `L2AnnouncementPolicy` and a `LoadBalancer` service; the agents
//! allocate the same address from the pool, elect one node to answer ARP for it, and a client
//! on the LAN (no route, it just ARPs) reaches the pods on every node. Then the owner's agent
//! is killed (`kill -9`): another node takes the address over and the client's request loop
//! goes on. Everything is torn down at the end, also on failure or Ctrl-C.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use argh::FromArgs;
use ferrite_lab::l2lab::{Fault, L2Lab, POLICY_INTERFACES, address_entry};
use ferrite_lab::l2raw::{AnswerKind, Watch};
use ferrite_lab::manifest::{ip_pool_yaml, l2_policy_yaml};
use ferrite_lab::nslab::{BPFFS, LAN_IFNAME};
use ferrite_lab::timeline::{RequestLoop, failures, longest_outage};
use ferrite_lab::{AgentConfig, Cidr, NsService, SvcEndpoint, wait_until};

const PREFIX: &str = "dm";
const POOL: &str = "192.168.50.208/28";

/// The L2 announcement demo behind `make demo` (as root; tears everything down).
#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// the ferrite binary
    #[argh(option)]
    ferrite: PathBuf,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn step(text: &str) {
    println!("\n\x1b[1m==> {text}\x1b[0m");
}

fn indent(text: &str) {
    for line in text.lines() {
        if line.trim().is_empty() {
            println!();
        } else {
            println!("  {line}");
        }
    }
}

pub fn main(args: &DemoArgs) -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("ferrite-lab demo: run as root (network namespaces, BPF)");
        return ExitCode::FAILURE;
    }
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
    remove_leftovers();
    let start = Instant::now();
    let result = std::path::absolute(&args.ferrite)
        .map_err(|e| format!("{}: {e}", args.ferrite.display()))
        .and_then(|f| run(&f));
    match result {
        Ok(()) => {
            println!("\ndone in {:.1} s", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nferrite-lab demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Namespaces, cgroups and BPF pins of demo runs that died without cleaning up.
fn remove_leftovers() {
    let _ = ferrite_lab::cleanup_stale(PREFIX);
    if let Ok(entries) = std::fs::read_dir(BPFFS) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ferrite_lab::name::owner_pid(&name, PREFIX)
                .is_some_and(|pid| !ferrite_lab::name::pid_alive(pid))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[expect(clippy::too_many_lines, reason = "the demo's script, step after step")]
fn run(ferrite: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    step("a LAN (a bridge) with three nodes, one pod behind each, and a client");
    let mut base = AgentConfig::new(ferrite);
    "info".clone_into(&mut base.log_level);
    let mut lab = L2Lab::build(PREFIX, 3, 1, base, &exe).map_err(|e| e.to_string())?;
    let mut names = BTreeMap::new();
    for (i, n) in lab.lab().nodes().iter().enumerate() {
        let mac = lab.mac(i).map_err(|e| e.to_string())?;
        names.insert(mac, n.name.clone());
        println!(
            "  {}  {}  eth0 {mac}   pod {} {}:8080",
            n.name,
            n.v4(),
            n.pod_name(0),
            n.pod_v4(0)
        );
    }
    let client = lab.lab().client(0);
    println!(
        "  client {} on the same LAN, with no route for {POOL}: it must ask the LAN (ARP)",
        client.v4()
    );
    interrupted()?;

    step("desired state: plain Kubernetes YAML in one folder");
    let pool = ip_pool_yaml("lan", &POOL.parse::<Cidr>().map_err(|e| e.to_string())?);
    let policy = l2_policy_yaml("lan", &[POLICY_INTERFACES]);
    let mut web = NsService::load_balancer(
        "web",
        "10.96.0.10".parse().expect("valid"),
        "0.0.0.0".parse().expect("valid"),
        30080,
    );
    web.namespace = "demo".into();
    web.lb_ips.clear();
    web.endpoints = lab
        .lab()
        .nodes()
        .iter()
        .map(|n| SvcEndpoint::new(n.pod_v4(0), &n.name))
        .collect();
    for (file, text) in [
        ("pool.yaml", &pool),
        ("l2.yaml", &policy),
        ("web.yaml", &web.to_yaml()),
    ] {
        lab.lab()
            .write_manifest(file, text)
            .map_err(|e| e.to_string())?;
    }
    indent(pool.trim_start_matches("---\n").trim_end());
    println!("  ---");
    indent(policy.trim_start_matches("---\n").trim_end());
    println!(
        "  --- (and a Service web, type LoadBalancer, port 80 → 8080, with an EndpointSlice of the three pods)"
    );
    interrupted()?;

    step(
        "ferrite agent on every node with the DaemonSet's args (devices detected; L2 membership binds to the Node's InternalIP, peers are the other Nodes, one shared key file)",
    );
    let started = Instant::now();
    lab.start_agents().map_err(|e| e.to_string())?;
    let ip = allocated(&lab)?;
    let owner = lab.wait_owner(ip, Duration::from_secs(20))?;
    println!(
        "  agents up, {ip} allocated from the pool and announced by {} after {:.1} s",
        lab.lab().node(owner).name,
        started.elapsed().as_secs_f64()
    );
    println!("\n  $ ferrite pools          (on node1)");
    indent(&cli(&lab, 0, &["pools"])?);
    println!("\n  $ ferrite l2             (on node1)");
    indent(&lab.view_table(0).map_err(|e| e.to_string())?);
    interrupted()?;

    step(&format!(
        "the client resolves {ip} on the LAN: one node answers"
    ));
    let mut arping = lab
        .lab()
        .client(0)
        .ns()
        .command("arping")
        .map_err(|e| e.to_string())?;
    arping.args(["-c", "2", "-W", "0.2", "-i", LAN_IFNAME, &ip.to_string()]);
    match arping.output() {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" bytes from "))
            {
                let owner_name = names
                    .iter()
                    .find(|(mac, _)| line.contains(&mac.to_string()))
                    .map_or("?", |(_, n)| n.as_str());
                println!("  arping: {line}   ← {owner_name}");
            }
        }
        Err(e) => println!("  (arping not available: {e})"),
    }
    interrupted()?;

    step("a request loop from the client: a new TCP connection to port 80 every 20 ms");
    let target = SocketAddr::new(ip, 80);
    let poller = lab.lab().client(1);
    let watch = Watch::start(
        poller.ns(),
        LAN_IFNAME,
        IpAddr::V4(poller.v4()),
        ip,
        Duration::from_millis(20),
    )
    .map_err(|e| e.to_string())?;
    let requests = RequestLoop::start(
        lab.lab().client(0).ns(),
        target,
        Duration::from_millis(20),
        Duration::from_millis(250),
    )
    .map_err(|e| e.to_string())?;
    let loop_start = Instant::now();
    println!("  (running in the background from here on)");
    std::thread::sleep(Duration::from_secs(2));
    interrupted()?;

    let old = lab.lab().node(owner).name.clone();
    let old_mac = lab.mac(owner).map_err(|e| e.to_string())?;
    step(&format!("kill -9 the agent of the owner, {old}"));
    let t0 = Instant::now();
    lab.fault(owner, Fault::Kill).map_err(|e| e.to_string())?;
    let moved = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        lab.agreed_owner(ip).is_ok_and(|o| o != owner)
    });
    std::thread::sleep(Duration::from_secs(2));
    let attempts = requests.stop()?;
    let log = watch.stop().map_err(|e| e.to_string())?;
    let end = Instant::now();
    let mut answered: BTreeMap<String, u64> = BTreeMap::new();
    for a in &attempts {
        if let Ok(name) = &a.outcome {
            *answered.entry(name.clone()).or_default() += 1;
        }
    }
    let ok: u64 = answered.values().sum();
    let mut by_pod = String::new();
    for (name, n) in &answered {
        let _ = write!(
            by_pod,
            "{}{name} {n}",
            if by_pod.is_empty() { "" } else { ", " }
        );
    }
    println!(
        "  {} requests in {:.1} s, {ok} answered ({by_pod}), {} failed",
        attempts.len(),
        (end - loop_start).as_secs_f64(),
        failures(&attempts, loop_start, end)
    );
    let gap = longest_outage(&attempts, t0, end).map_or_else(
        || "none after the kill".to_owned(),
        |d| format!("{:.0} ms", d.as_secs_f64() * 1e3),
    );
    println!(
        "  longest gap between two answers after the kill: {gap} (the pinned datapath outlives its agent)"
    );
    if moved.is_err() {
        return Err(format!("no node took {ip} over within 10 s"));
    }
    let new_owner = lab.agreed_owner(ip)?;
    let new = lab.lab().node(new_owner).name.clone();
    if let Some(s) = log.last(t0, end, |a| a.kind == AnswerKind::Reply && a.mac == old_mac) {
        println!(
            "  {old}'s responder answered ARP until {:.0} ms after the kill (its heartbeat went stale)",
            (s.at - t0).as_secs_f64() * 1e3
        );
    }
    if let Some(s) = log.first(t0, |a| a.mac != old_mac) {
        println!(
            "  {new} announced {ip} (gratuitous ARP) {:.0} ms after the kill",
            (s.at - t0).as_secs_f64() * 1e3
        );
    }
    if let Some(n) = lab.client_neighbor(0, ip).map_err(|e| e.to_string())? {
        let mac = n.split_whitespace().next().unwrap_or("");
        let who = names
            .iter()
            .find(|(m, _)| m.to_string() == mac)
            .map_or("?", |(_, n)| n.as_str());
        println!("  the client's ARP entry for {ip}: {mac} ({who})");
    }
    println!("\n  $ ferrite l2             (on {new})");
    indent(&lab.view_table(new_owner).map_err(|e| e.to_string())?);
    interrupted()?;

    step(&format!(
        "{old}'s agent starts again: it rejoins and takes {ip} back (highest rendezvous score)"
    ));
    let requests = RequestLoop::start(
        lab.lab().client(0).ns(),
        target,
        Duration::from_millis(20),
        Duration::from_millis(250),
    )
    .map_err(|e| e.to_string())?;
    let t1 = Instant::now();
    lab.heal(owner).map_err(|e| e.to_string())?;
    let back = lab.wait_owner(ip, Duration::from_secs(10))?;
    let took = t1.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let attempts = requests.stop()?;
    let end = Instant::now();
    let ok = attempts.iter().filter(|a| a.ok()).count();
    println!(
        "  {} back as the owner {:.1} s after the restart; {ok} of {} requests answered meanwhile, longest gap {}",
        lab.lab().node(back).name,
        took.as_secs_f64(),
        attempts.len(),
        longest_outage(&attempts, t1, end).map_or_else(
            || "-".into(),
            |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)
        )
    );
    println!(
        "\n  $ ferrite l2             (on {})",
        lab.lab().node(back).name
    );
    indent(&lab.view_table(back).map_err(|e| e.to_string())?);

    step("tearing the lab down (agents, pinned BPF objects, namespaces)");
    drop(lab);
    Ok(())
}

/// The `LoadBalancer` IP the agents allocated (the one address their L2 view lists).
fn allocated(lab: &L2Lab) -> Result<IpAddr, String> {
    let mut found = None;
    let _ = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        found = lab.view(0).ok().and_then(|v| {
            v["addresses"].as_array()?.first()?["address"]
                .as_str()?
                .parse::<IpAddr>()
                .ok()
        });
        found.is_some()
    });
    let ip = found.ok_or("no LoadBalancer IP was allocated within 20 s")?;
    // Every agent allocates on its own from the same pool: they must agree.
    for i in 1..lab.lab().nodes().len() {
        let v = lab.view(i).map_err(|e| e.to_string())?;
        if address_entry(&v, ip).is_none() {
            return Err(format!(
                "node{} allocated another address than {ip}: {v}",
                i + 1
            ));
        }
    }
    Ok(ip)
}

/// `ferrite ARGS` against node `i`'s agent, stdout as text.
fn cli(lab: &L2Lab, i: usize, args: &[&str]) -> Result<String, String> {
    let out = lab.lab().agent(i).cli(args).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
