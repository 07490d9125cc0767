//! L2 membership over real UDP: three `ferrite l2-member` processes in three network
//! namespaces on one LAN bridge. One member is killed (SIGKILL), frozen (SIGSTOP) or cut off
//! (`ip link set eth0 down`), many times; the other two must agree that it is dead and on the
//! new owner of every address, then take it back when it returns. Detection times (from the
//! fault to the moment every survivor printed the member dead) are printed and written to
//! `$CARGO_TARGET_TMPDIR/l2_membership_failover.json`; only a generous bound is asserted.
//!
//! Run as root: `cargo test --test l2_membership -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrite_lab::{Child, Cidr, Lan, LanPort, Netns};
use serde_json::Value;

const ADDRESSES: &str = "192.168.77.240,192.168.77.241,192.168.77.242,fd00:77::240";
/// Faults per kind (kill, stop, link down); 3 × 10 = 30 trials.
const TRIALS_PER_KIND: usize = 10;
/// What the test asserts: far above the design target (≤1.5 s), so slow CI does not flake.
const GENEROUS: Duration = Duration::from_secs(5);

fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    u64::try_from(since.as_millis()).expect("ms fit u64")
}

/// One node: its netns, LAN port and the running member (fields drop in this order).
struct NodeLab {
    child: Option<Child>,
    /// The member's stdin: `eligible ADDR,...` and `leave` commands.
    stdin: Option<std::process::ChildStdin>,
    port: LanPort,
    netns: Netns,
    ip: IpAddr,
    generation: u32,
}

/// A line printed by a member: (node index, process generation, JSON view).
type Line = (usize, u32, Value);

struct Cluster {
    nodes: Vec<NodeLab>,
    /// The bridge the nodes plug into (dropped after them).
    _lan: Lan,
    peers: String,
    /// The shared key file (`--key-file`); the directory goes with the cluster.
    key: common::TempDir,
    lines: mpsc::Receiver<Line>,
    sender: mpsc::Sender<Line>,
    latest: Vec<Option<Value>>,
    /// Every line each node printed, in order.
    history: Vec<Vec<Value>>,
}

fn state_of<'v>(view: &'v Value, member: &str) -> Option<&'v str> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == member)?["state"]
        .as_str()
}

fn name(i: usize) -> String {
    format!("n{i}")
}

impl Cluster {
    fn new(v6: bool) -> Self {
        common::require_root();
        let _ = ferrite_lab::cleanup_stale("l2m");
        let _ = ferrite_lab::cleanup_stale("l2l");
        let v4_net: Cidr = "10.77.0.0/24".parse().expect("cidr");
        let v6_net: Cidr = "fd00:77:1::/64".parse().expect("cidr");
        let mut lan = Lan::new("l2l", v4_net, v6_net).expect("LAN bridge");
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let netns = Netns::new("l2m").expect("node netns");
            let port = lan.attach(netns.ns(), "eth0").expect("attach to the LAN");
            let ip = if v6 { port.v6.addr() } else { port.v4.addr() };
            nodes.push(NodeLab {
                child: None,
                stdin: None,
                port,
                netns,
                ip,
                generation: 0,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| std::net::SocketAddr::new(n.ip, 7946).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (sender, lines) = mpsc::channel();
        let key = common::TempDir::new("l2m-key");
        ferrite_lab::l2lab::write_key(&key.path().join("l2.key")).expect("writing the key");
        let mut cluster = Self {
            nodes,
            _lan: lan,
            peers,
            key,
            lines,
            sender,
            latest: vec![None; 3],
            history: vec![Vec::new(); 3],
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.generation += 1;
        let bind = std::net::SocketAddr::new(node.ip, 7946).to_string();
        let mut cmd = node
            .netns
            .command(common::FERRITE)
            .expect("command in netns");
        cmd.args(["l2-member", "--bind", &bind, "--name", &name(i)])
            .args(["--peers", &self.peers, "--eligible", ADDRESSES])
            .arg("--key-file")
            .arg(self.key.path().join("l2.key"))
            .env("FERRITE_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = Child::spawn(&mut cmd).expect("spawn ferrite l2-member");
        let stdout = child.inner_mut().stdout.take().expect("piped stdout");
        node.stdin = child.inner_mut().stdin.take();
        let (tx, generation) = (self.sender.clone(), node.generation);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let view: Value = serde_json::from_str(&line).expect("l2-member prints JSON lines");
                if tx.send((i, generation, view)).is_err() {
                    break;
                }
            }
        });
        node.child = Some(child);
        self.latest[i] = None;
    }

    /// Takes in printed lines until `done` holds or `timeout` passes.
    fn wait(&mut self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok((i, generation, view)) if generation == self.nodes[i].generation => {
                    self.history[i].push(view.clone());
                    self.latest[i] = Some(view);
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
            }
        }
    }

    fn sees(&self, observer: usize, member: usize, states: &[&str]) -> bool {
        self.latest[observer]
            .as_ref()
            .and_then(|v| state_of(v, &name(member)))
            .is_some_and(|s| states.contains(&s))
    }

    fn owners(&self, observer: usize) -> Option<&Value> {
        self.latest[observer].as_ref().map(|v| &v["owners"])
    }

    /// All of `observers` see all of `members` alive and agree on the owners.
    fn converged(&self, observers: &[usize], members: &[usize]) -> bool {
        observers
            .iter()
            .all(|&o| members.iter().all(|&m| self.sees(o, m, &["alive"])))
            && observers
                .windows(2)
                .all(|w| self.owners(w[0]) == self.owners(w[1]))
    }

    /// When `observer` first printed `member` dead (or gone) at or after `since` (Unix ms).
    fn first_dead(&self, observer: usize, member: usize, since: u64) -> Option<u64> {
        self.history[observer].iter().find_map(|v| {
            let at = v["unix_ms"].as_u64()?;
            let gone = matches!(state_of(v, &name(member)), Some("dead" | "left"));
            (at >= since && gone).then_some(at)
        })
    }

    fn tell(&mut self, i: usize, command: &str) {
        use std::io::Write;
        let stdin = self.nodes[i].stdin.as_mut().expect("member stdin");
        writeln!(stdin, "{command}").expect("write to the member's stdin");
    }

    fn child(&mut self, i: usize) -> &mut Child {
        self.nodes[i].child.as_mut().expect("running member")
    }

    fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        self.nodes[i]
            .netns
            .ip_run(["link", "set", &self.nodes[i].port.iface().name, state])
            .expect("ip link set");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Stop,
    LinkDown,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Self::Kill => "kill -9",
            Self::Stop => "SIGSTOP",
            Self::LinkDown => "link down",
        }
    }
}

fn stats(label: &str, ms: &mut [u64]) -> Value {
    ms.sort_unstable();
    let pick = |p: usize| ms[(ms.len() * p / 100).min(ms.len() - 1)];
    println!(
        "{label:<10} n={:<3} min={:>5} p50={:>5} p90={:>5} max={:>5} ms",
        ms.len(),
        ms[0],
        pick(50),
        pick(90),
        ms[ms.len() - 1]
    );
    serde_json::json!({"n": ms.len(), "min_ms": ms[0], "p50_ms": pick(50), "p90_ms": pick(90),
        "max_ms": ms[ms.len() - 1], "all_ms": ms})
}

/// Injects `fault` into `victim`; returns (detection ms, rejoin ms).
fn trial(c: &mut Cluster, fault: Fault, victim: usize, jitter: Duration) -> (u64, u64) {
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let all = [0, 1, 2];
    assert!(
        c.wait(Duration::from_secs(10), |c| c.converged(&all, &all)),
        "no convergence before {fault:?} of n{victim}: {:?}",
        c.latest
    );
    let before = c.owners(survivors[0]).cloned().expect("owners");
    std::thread::sleep(jitter);
    let t0 = unix_ms();
    match fault {
        Fault::Kill => {
            c.child(victim).kill().expect("kill -9");
        }
        Fault::Stop => c.child(victim).signal(libc::SIGSTOP).expect("SIGSTOP"),
        Fault::LinkDown => c.link(victim, false),
    }
    let dead = |c: &Cluster| {
        survivors
            .iter()
            .all(|&o| c.sees(o, victim, &["dead", "left"]))
    };
    assert!(
        c.wait(GENEROUS, dead),
        "{fault:?}: n{victim} not declared dead within {GENEROUS:?}: {:?}",
        c.latest
    );
    let detected = survivors
        .iter()
        .map(|&o| c.first_dead(o, victim, t0).expect("seen dead") - t0)
        .max()
        .expect("two survivors");
    // The survivors agree on one live owner for every address, and it is never the victim.
    assert!(c.wait(Duration::from_secs(2), |c| c.owners(survivors[0])
        == c.owners(survivors[1])));
    let after = c.owners(survivors[0]).cloned().expect("owners");
    let after = after.as_object().expect("owners map");
    assert_eq!(after.len(), before.as_object().expect("owners map").len());
    assert!(
        after.values().all(|o| *o != name(victim)),
        "{fault:?}: {after:?}"
    );
    for (addr, owner) in before.as_object().expect("owners map") {
        if *owner != name(victim) {
            assert_eq!(
                after.get(addr),
                Some(owner),
                "{addr} moved although its owner lives"
            );
        }
    }
    let t1 = Instant::now();
    match fault {
        Fault::Kill => c.spawn(victim),
        Fault::Stop => c.child(victim).signal(libc::SIGCONT).expect("SIGCONT"),
        Fault::LinkDown => c.link(victim, true),
    }
    assert!(
        c.wait(Duration::from_secs(10), |c| c.converged(&all, &all)),
        "n{victim} did not rejoin after {fault:?}: {:?}",
        c.latest
    );
    let rejoin = u64::try_from(t1.elapsed().as_millis()).expect("ms");
    (detected, rejoin)
}

#[test]
fn three_members_detect_kill_stop_and_link_down_and_rejoin() {
    let mut c = Cluster::new(false);
    let mut detection: BTreeMap<Fault, Vec<u64>> = BTreeMap::new();
    let mut rejoin: BTreeMap<Fault, Vec<u64>> = BTreeMap::new();
    let faults = [Fault::Kill, Fault::Stop, Fault::LinkDown];
    for n in 0..3 * TRIALS_PER_KIND {
        let fault = faults[n % 3];
        let victim = (n / 3) % 3;
        // Fault at varying phases of the probe schedule.
        let jitter = Duration::from_millis(u64::try_from(n * 37 % 200).expect("small"));
        let (d, r) = trial(&mut c, fault, victim, jitter);
        detection.entry(fault).or_default().push(d);
        rejoin.entry(fault).or_default().push(r);
    }
    println!("L2 membership failure detection (fault → every survivor shows it dead):");
    let mut report = serde_json::Map::new();
    let mut all: Vec<u64> = detection.values().flatten().copied().collect();
    for (fault, ms) in &mut detection {
        report.insert(fault.label().into(), stats(fault.label(), ms));
    }
    report.insert("all".into(), stats("all", &mut all));
    println!("rejoin (repair → all three alive everywhere):");
    for (fault, ms) in &mut rejoin {
        report.insert(
            format!("{} rejoin", fault.label()),
            stats(fault.label(), ms),
        );
    }
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("l2_membership_failover.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("json"))
        .expect("write report");
    println!("written to {}", out.display());
    assert!(
        all.iter()
            .all(|ms| *ms < u64::try_from(GENEROUS.as_millis()).expect("ms"))
    );
}

#[test]
fn ipv6_members_detect_a_crash() {
    let mut c = Cluster::new(true);
    for victim in 0..3 {
        let (d, _) = trial(&mut c, Fault::Kill, victim, Duration::from_millis(50));
        println!("IPv6 kill -9 of n{victim}: detected by every survivor after {d} ms");
    }
}

/// The paths that need no failure detection: a member that withdraws an address (its last local
/// endpoint went away under externalTrafficPolicy Local) and a member that says goodbye are
/// heard by every other member within a round trip.
#[test]
fn withdrawn_eligibility_and_goodbyes_move_ownership_at_once() {
    let mut c = Cluster::new(false);
    let all = [0, 1, 2];
    assert!(c.wait(Duration::from_secs(10), |c| c.converged(&all, &all)));
    let addr = "192.168.77.240";
    let owner_of =
        |c: &Cluster, o: usize| c.owners(o).and_then(|v| v[addr].as_str()).map(String::from);
    let owner = owner_of(&c, 0).expect("an owner");
    let owner_index: usize = owner[1..].parse().expect("nN");
    let keep: Vec<&str> = ADDRESSES.split(',').filter(|a| *a != addr).collect();
    let t0 = Instant::now();
    c.tell(owner_index, &format!("eligible {}", keep.join(",")));
    let moved = |c: &Cluster| {
        all.iter()
            .all(|&o| owner_of(c, o).is_some_and(|n| n != owner))
    };
    assert!(
        c.wait(GENEROUS, moved),
        "{addr} stayed with {owner}: {:?}",
        c.latest
    );
    println!(
        "withdrawn eligibility: {addr} moved off {owner} everywhere after {:?}",
        t0.elapsed()
    );
    assert!(c.wait(Duration::from_secs(2), |c| {
        all.windows(2).all(|w| c.owners(w[0]) == c.owners(w[1]))
    }));

    let leaver = (owner_index + 1) % 3;
    let others: Vec<usize> = all.iter().copied().filter(|i| *i != leaver).collect();
    let t1 = Instant::now();
    c.tell(leaver, "leave");
    let gone = |c: &Cluster| others.iter().all(|&o| c.sees(o, leaver, &["left"]));
    assert!(
        c.wait(GENEROUS, gone),
        "goodbye of n{leaver} not heard: {:?}",
        c.latest
    );
    println!(
        "goodbye: n{leaver} seen as left everywhere after {:?}",
        t1.elapsed()
    );
    let exited = c
        .child(leaver)
        .wait_timeout(Duration::from_secs(5))
        .expect("wait");
    assert!(
        exited.is_some_and(|s| s.success()),
        "l2-member exits 0 after leave: {exited:?}"
    );
}
