//! The `policy` section: pod ↔ pod TCP throughput and connect rate across two nodes with 0, 10
//! and 1,000 NetworkPolicies in force (and 1,000 other pods' identities) against the same pods
//! with no policy and no other pod (no enforcement), rows interleaved in one lab so drift hits
//! all alike; and the time from a change written to the source to the datapath enforcing it
//! (a policy allowing the client removed / restored, the client's label changed / restored),
//! p50 / p99 with 1,000 policies in force. Every agent is the shipped one on a `dir:` source.
//! Then the memory of watching every Pod ([`watch`]: kube source, fake API server).

mod manifests;
mod watch;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use ferrite_lab::podlab::{PodLab, PodLabConfig, PodNode};
use serde::Serialize;
use serde_json::Value;

use super::northsouth::tools::iperf3_from;
use super::pods::{gbits, per_second, rate_of, serve, wait_reachable};
use super::results::{Cell, Spread, cell, ratio, thousands, times};
use super::{check_interrupted, progress};
use manifests::{Cluster, PORTS, render, split};

const IPERF_PORT: u16 = 5201;
const SERVE_PORT: u16 = 8080;
/// The bulk and the changing objects ([`manifests`]).
const FILES: [&str; 2] = ["bench.yaml", "bench-change.yaml"];
/// The target for the 1,000-policy row.
const TARGET: f64 = 0.95;
/// A denied connect attempt gives up after this (the detection resolution while denied).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(20);
/// Pause after an allowed attempt (keeps the client's ephemeral ports from running out).
const ALLOWED_PAUSE: Duration = Duration::from_millis(2);
/// A change not enforced within this is an error.
const ENFORCE_TIMEOUT: Duration = Duration::from_secs(10);

/// How much to measure.
pub struct PolicySettings {
    /// Rounds, iperf3 seconds and connect-rate runs, as the `pods` section has them.
    pub traffic: super::pods::PodsSettings,
    /// Samples per kind of change.
    pub changes: usize,
    /// Pod counts of the kube-source memory rows.
    pub watch_pods: Vec<usize>,
    /// Scratch folder (the fake API servers' state).
    pub work: std::path::PathBuf,
}

/// One row: what is in force, and its measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyRow {
    pub policies: usize,
    pub identities: usize,
    pub enforced: bool,
    pub throughput: Spread,
    pub connects: Spread,
    pub throughput_vs_none: Option<f64>,
    pub connects_vs_none: Option<f64>,
    /// Node 1's agent `VmRSS` once the row was in force in the first round, KiB.
    pub agent_rss_kb: Option<u64>,
}

/// Time from a change written to the source to the datapath enforcing it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Enforcement {
    pub change: String,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyBench {
    pub rows: Cell<Vec<PolicyRow>>,
    pub enforcement: Cell<Vec<Enforcement>>,
    pub watch: Cell<Vec<watch::WatchRow>>,
    pub runs: usize,
    pub seconds: u32,
}

impl PolicyBench {
    pub fn incomplete(&self) -> bool {
        self.rows.is_not_run() || self.enforcement.is_not_run() || self.watch.is_not_run()
    }
}

/// (policies, identities, enforced): the rows, the baseline first.
const ROWS: [(usize, usize, bool); 4] = [
    (0, 0, false),
    (0, 1000, true),
    (10, 1000, true),
    (1000, 1000, true),
];

/// Runs the section; a part that cannot run says why in its cell.
pub fn measure(
    exe: &Path,
    ferrite: Result<&Path, &String>,
    settings: &PolicySettings,
) -> PolicyBench {
    let runs = settings.traffic.runs.max(1);
    let watch = match ferrite {
        Err(e) => Err(e.clone()),
        Ok(ferrite) => watch::measure(ferrite, &settings.work, &settings.watch_pods),
    };
    if let Err(e) = &watch {
        progress(&format!("policy: {e}"));
    }
    let (rows, enforcement) = match ferrite {
        Err(e) => (Cell::not_run(e.clone()), Cell::not_run(e.clone())),
        Ok(ferrite) => match PolicyLab::start(exe, ferrite) {
            Err(e) => {
                progress(&format!("policy: {e}"));
                (Cell::not_run(e.clone()), Cell::not_run(e))
            }
            Ok(mut lab) => {
                let rows = lab.rows(exe, settings);
                if let Err(e) = &rows {
                    progress(&format!("policy: {e}"));
                }
                let enforcement = check_interrupted().and_then(|()| lab.enforcement(settings));
                if let Err(e) = &enforcement {
                    progress(&format!("policy: {e}"));
                }
                (rows.into(), enforcement.into())
            }
        },
    };
    PolicyBench {
        rows,
        enforcement,
        watch: watch.into(),
        runs,
        seconds: settings.traffic.seconds,
    }
}

struct PolicyLab {
    lab: PodLab,
    /// What [`PolicyLab::write`] last wrote (writing it again changes nothing to wait for).
    written: std::cell::RefCell<[String; 2]>,
    _servers: Vec<ferrite_lab::Child>,
}

impl PolicyLab {
    fn start(exe: &Path, ferrite: &Path) -> Result<Self, String> {
        let prefix = "pbp";
        let _ = ferrite_lab::cleanup_stale(prefix);
        progress("policy: building the lab (2 nodes, a pod on each)");
        let mut lab = PodLab::start(
            ferrite,
            PodLabConfig {
                prefix: prefix.into(),
                lan_nodes: 2,
                far_nodes: 0,
                log_level: "warn".into(),
                ..PodLabConfig::default()
            },
        )
        .map_err(|e| format!("pod lab: {e}"))?;
        for node in &mut lab.nodes {
            node.add_pod(prefix).map_err(|e| format!("CNI ADD: {e}"))?;
        }
        let server = &lab.nodes[1].pods[0];
        let servers = serve(exe, server.netns.ns(), "server")?;
        let this = Self {
            lab,
            written: std::cell::RefCell::default(),
            _servers: servers,
        };
        this.write(&this.cluster(0, 0))?;
        let target = this.target(SERVE_PORT);
        wait_reachable(exe, this.lab.nodes[0].pods[0].netns.ns(), target)?;
        Ok(this)
    }

    fn cluster(&self, policies: usize, identities: usize) -> Cluster<'_> {
        let (c, s) = (&self.lab.nodes[0].pods[0], &self.lab.nodes[1].pods[0]);
        Cluster {
            nodes: [&self.lab.nodes[0].name, &self.lab.nodes[1].name],
            client: (c.v4, c.v6),
            server: (s.v4, s.v6),
            identities,
            policies,
            client_role: "client",
            drop_allow: false,
        }
    }

    fn target(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.lab.nodes[1].pods[0].v4, port)
    }

    /// Writes `c` as the one manifest file (atomically) and waits until both agents applied
    /// it: a new generation, and the server / client selected by as many policies as `c` has.
    fn write(&self, c: &Cluster<'_>) -> Result<(), String> {
        let text = render(c);
        if *self.written.borrow() == text {
            return Ok(());
        }
        let before: Vec<u64> = self.lab.nodes.iter().map(generation).collect();
        for (i, (file, t)) in FILES.iter().zip(&text).enumerate() {
            if self.written.borrow()[i] != *t {
                self.lab
                    .write_manifest(file, t)
                    .map_err(|e| e.to_string())?;
            }
        }
        self.written.replace(text);
        let (ingress, egress) = split(c.policies);
        let want = [
            (&self.lab.nodes[0], "bench-cli/client", egress),
            (&self.lab.nodes[1], "bench-srv/server", ingress),
        ];
        let start = Instant::now();
        loop {
            let done = want.iter().zip(&before).all(|((node, pod, n), g)| {
                generation(node) > *g && selected_by(node, pod) == Some(*n)
            });
            if done {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                let seen: Vec<String> = want
                    .iter()
                    .zip(&before)
                    .map(|((node, pod, n), g)| {
                        format!(
                            "{}: generation {g} → {}, {pod} selected by {:?} (want {n})",
                            node.name,
                            generation(node),
                            selected_by(node, pod)
                        )
                    })
                    .collect();
                return Err(format!(
                    "{} policies and {} identities not applied within 30 s: {}",
                    c.policies,
                    c.identities,
                    seen.join("; ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rows(&mut self, exe: &Path, settings: &PolicySettings) -> Result<Vec<PolicyRow>, String> {
        let mut tput = vec![Vec::new(); ROWS.len()];
        let mut rate = vec![Vec::new(); ROWS.len()];
        let mut rss = vec![None; ROWS.len()];
        let client = self.lab.nodes[0].pods[0].netns.ns();
        for round in 0..settings.traffic.runs.max(1) {
            for (i, (policies, identities, _)) in ROWS.iter().enumerate() {
                check_interrupted()?;
                self.write(&self.cluster(*policies, *identities))?;
                wait_reachable(exe, client, self.target(SERVE_PORT))?;
                let bps = iperf3_from(client, self.target(IPERF_PORT), settings.traffic.seconds)
                    .map_err(|e| format!("iperf3 with {policies} policies: {e}"))?;
                tput[i].push(bps);
                rate[i].push(rate_of(
                    exe,
                    client,
                    self.target(SERVE_PORT),
                    settings.traffic.rate_run,
                )?);
                if round == 0 {
                    // The first round goes from the smallest cluster to the largest, so each
                    // row's figure is its own (later rounds keep the largest one's pages).
                    rss[i] = self.lab.nodes[0]
                        .agent_pid()
                        .and_then(|pid| super::agent::Memory::of(pid).ok())
                        .map(|m| m.rss_kb);
                }
                progress(&format!(
                    "policy:   round {}: {policies} policies, {identities} identities: {:.2} Gbit/s {:.0}/s",
                    round + 1,
                    bps / 1e9,
                    rate[i][round]
                ));
            }
        }
        Ok(rows(&tput, &rate, &rss))
    }

    /// Time to enforcement with 1,000 policies in force, `settings.changes` samples per kind.
    fn enforcement(&mut self, settings: &PolicySettings) -> Result<Vec<Enforcement>, String> {
        let (policies, identities) = (1000, 1000);
        self.write(&self.cluster(policies, identities))?;
        let kinds = [
            ("allowing policy removed (→ denied)", false, true, "client"),
            (
                "allowing policy restored (→ allowed)",
                true,
                false,
                "client",
            ),
            ("client pod relabelled (→ denied)", false, false, "other"),
            (
                "client pod label restored (→ allowed)",
                true,
                false,
                "client",
            ),
        ];
        let mut samples = vec![Vec::new(); kinds.len()];
        for _ in 0..settings.changes.max(1) {
            for (k, (_, allowed, drop_allow, role)) in kinds.iter().enumerate() {
                check_interrupted()?;
                let mut c = self.cluster(policies, identities);
                c.drop_allow = *drop_allow;
                c.client_role = role;
                samples[k].push(self.time_to(&c, *allowed)?);
            }
        }
        Ok(kinds
            .iter()
            .zip(samples)
            .map(|((name, ..), s)| summary(name, s))
            .collect())
    }

    /// Writes `c`, then connects from the client until the outcome is `allowed`: the time from
    /// the write to the start of the first attempt that saw it.
    fn time_to(&self, c: &Cluster<'_>, allowed: bool) -> Result<f64, String> {
        let text = render(c);
        if text[0] != self.written.borrow()[0] {
            return Err("a timed change must leave the bulk as it is".into());
        }
        let target = self.target(SERVE_PORT);
        let lab = &self.lab;
        let client = lab.nodes[0].pods[0].netns.ns();
        let seen = client
            .run(|| {
                lab.write_manifest(FILES[1], &text[1])
                    .map_err(|e| e.to_string())?;
                let written = Instant::now();
                loop {
                    let at = written.elapsed();
                    if TcpStream::connect_timeout(&target, ATTEMPT_TIMEOUT).is_ok() == allowed {
                        return Ok(at.as_secs_f64() * 1e3);
                    }
                    if at > ENFORCE_TIMEOUT {
                        return Err(format!(
                            "not {} within {ENFORCE_TIMEOUT:?}",
                            if allowed { "allowed" } else { "denied" }
                        ));
                    }
                    if !allowed {
                        // That attempt connected: wait a little before the next.
                        std::thread::sleep(ALLOWED_PAUSE);
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        self.written.replace(text);
        seen
    }
}

fn generation(node: &PodNode) -> u64 {
    node.status()
        .ok()
        .and_then(|s| s["last_apply"]["generation"].as_u64())
        .unwrap_or(0)
}

/// How many policies `ferrite policy` says select local pod `pod` (`ns/name`).
fn selected_by(node: &PodNode, pod: &str) -> Option<usize> {
    let out = node.cli(&["policy", "-o", "json"]).ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let e = v.as_array()?.iter().find(|e| e["pod"] == pod)?;
    Some(e["policies"].as_array()?.len())
}

fn rows(tput: &[Vec<f64>], rate: &[Vec<f64>], rss: &[Option<u64>]) -> Vec<PolicyRow> {
    let (bt, bc) = (Spread::of(&tput[0]).median, Spread::of(&rate[0]).median);
    ROWS.iter()
        .enumerate()
        .map(|(i, (policies, identities, enforced))| {
            let (t, c) = (Spread::of(&tput[i]), Spread::of(&rate[i]));
            PolicyRow {
                policies: *policies,
                identities: *identities,
                enforced: *enforced,
                throughput_vs_none: (i > 0).then(|| ratio(Some(t.median), Some(bt))).flatten(),
                connects_vs_none: (i > 0).then(|| ratio(Some(c.median), Some(bc))).flatten(),
                throughput: t,
                connects: c,
                agent_rss_kb: rss[i],
            }
        })
        .collect()
}

fn summary(change: &str, mut s: Vec<f64>) -> Enforcement {
    s.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within a few hundred samples"
        )]
        let index = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1)) - 1;
        s.get(index).copied().unwrap_or_default()
    };
    Enforcement {
        change: change.to_owned(),
        samples: s.len(),
        p50_ms: rank(0.5),
        p99_ms: rank(0.99),
        max_ms: s.last().copied().unwrap_or_default(),
    }
}

fn verdict(row: &PolicyRow) -> String {
    match (row.policies, row.throughput_vs_none, row.connects_vs_none) {
        (1000, Some(t), Some(c)) => format!(
            "≥{TARGET:.2}× {}",
            if t >= TARGET && c >= TARGET {
                "met"
            } else {
                "MISSED"
            }
        ),
        (_, None, _) => "baseline".into(),
        _ => String::new(),
    }
}

/// The section as markdown: both tables, every row, min / median / max.
pub fn markdown(b: &Cell<PolicyBench>, out: &mut String) {
    let _ = writeln!(out, "\n## NetworkPolicy\n");
    let Some(b) = b.value() else {
        let _ = writeln!(out, "{}", cell(b, |_| String::new()));
        return;
    };
    let _ = writeln!(
        out,
        "Pod ↔ pod across two nodes, {} interleaved rounds per row, iperf3 -t {} (Gbit/s) and connect rate (connects/s), min / median / max.\n",
        b.runs, b.seconds
    );
    match b.rows.value() {
        Some(rows) => {
            let _ = writeln!(
                out,
                "| in force | TCP Gbit/s | ×none | connects/s | ×none | agent RSS | target |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
            for r in rows {
                let what = if r.enforced {
                    format!(
                        "{} policies, {} identities",
                        thousands(&r.policies),
                        thousands(&r.identities)
                    )
                } else {
                    "no enforcement (no policy, no other pod)".into()
                };
                let _ = writeln!(
                    out,
                    "| {what} | {} | {} | {} | {} | {} | {} |",
                    gbits(&r.throughput),
                    times(r.throughput_vs_none),
                    per_second(&r.connects),
                    times(r.connects_vs_none),
                    r.agent_rss_kb.map_or_else(
                        || "–".into(),
                        |kb| format!("{}.{} MiB", kb / 1024, kb % 1024 * 10 / 1024)
                    ),
                    verdict(r),
                );
            }
        }
        None => {
            let _ = writeln!(out, "{}", cell(&b.rows, |_| String::new()));
        }
    }
    let _ = writeln!(
        out,
        "\nTime from the change written to the `dir:` source (polled every 200 ms) to the first connect attempt that saw it enforced, 1,000 policies in force (ms):\n"
    );
    match b.enforcement.value() {
        Some(es) => {
            let _ = writeln!(out, "| change | samples | p50 | p99 | max |");
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            for e in es {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {:.0} | {:.0} |",
                    e.change, e.samples, e.p50_ms, e.p99_ms, e.max_ms
                );
            }
        }
        None => {
            let _ = writeln!(out, "{}", cell(&b.enforcement, |_| String::new()));
        }
    }
    let _ = writeln!(
        out,
        "\nMemory of watching every Pod (kube source against the fake API server, pods of other nodes with their own labels; agent VmRSS after the initial sync):\n"
    );
    match b.watch.value() {
        Some(rows) => {
            let _ = writeln!(out, "| pods | agent RSS | per pod over 0 pods |");
            let _ = writeln!(out, "|---:|---:|---:|");
            let base = rows.first().map_or(0, |r| r.rss_kb);
            for r in rows {
                // Tenths of a KiB per pod, in integers.
                let per_pod = match u64::try_from(r.pods) {
                    Ok(n) if n > 0 => {
                        let tenths = r.rss_kb.saturating_sub(base) * 10 / n;
                        format!("{}.{} KiB", tenths / 10, tenths % 10)
                    }
                    _ => "–".into(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {}.{} MiB | {per_pod} |",
                    thousands(&r.pods),
                    r.rss_kb / 1024,
                    r.rss_kb % 1024 * 10 / 1024
                );
            }
        }
        None => {
            let _ = writeln!(out, "{}", cell(&b.watch, |_| String::new()));
        }
    }
}

pub fn notes() -> Vec<String> {
    vec![format!(
        "Policy lab: two node netns on one LAN running the shipped agent on a `dir:` source, a client pod on node 1 and a server pod on node 2 made through the CNI plugin. With policies, the server is isolated for ingress and the client for egress, each by half of them; two allow the bench ports {PORTS:?}, the rest allow synthetic pods, port ranges and ipBlocks. Identities: synthetic pods with distinct labels on no lab node. A denied attempt times out after {ATTEMPT_TIMEOUT:?}, which bounds the resolution of the \"→ allowed\" rows"
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_compare_with_no_enforcement_and_judge_the_biggest() {
        let tput = vec![vec![10e9, 11e9], vec![10e9], vec![9e9], vec![9.6e9]];
        let rate = vec![vec![1000.0], vec![990.0], vec![980.0], vec![940.0]];
        let r = rows(&tput, &rate, &[Some(2048), None, None, Some(4096)]);
        assert_eq!(verdict(&r[0]), "baseline");
        assert!((r[3].throughput_vs_none.unwrap() - 9.6 / 10.5).abs() < 1e-9);
        assert_eq!(verdict(&r[3]), "≥0.95× MISSED", "connects 0.94×");
        assert_eq!(verdict(&r[2]), "");
        let mut md = String::new();
        markdown(
            &Cell::Value(PolicyBench {
                rows: Cell::Value(r),
                enforcement: Cell::Value(vec![summary("x", vec![30.0, 10.0, 20.0])]),
                watch: Cell::Value(vec![
                    watch::WatchRow {
                        pods: 0,
                        rss_kb: 10240,
                    },
                    watch::WatchRow {
                        pods: 1000,
                        rss_kb: 14336,
                    },
                ]),
                runs: 2,
                seconds: 1,
            }),
            &mut md,
        );
        assert!(
            md.contains("| no enforcement (no policy, no other pod) | 10.00 / 10.50 / 11.00 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| 1,000 policies, 1,000 identities | 9.60 / 9.60 / 9.60 | 0.91× |"),
            "{md}"
        );
        assert!(md.contains("| x | 3 | 20 | 30 | 30 |"), "{md}");
        assert!(md.contains("| 1,000 | 14.0 MiB | 4.0 KiB |"), "{md}");
    }
}
