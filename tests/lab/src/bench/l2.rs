//! L2 announcement rows of `ferrite-lab bench`: failover time over many trials of three fault
//! kinds (`kill -9` of the owner's agent, `SIGSTOP` of it, `ip link set eth0 down` in the
//! owner node), and how many ARP / Neighbor Solicitation answers per second the eBPF responder
//! gives next to the kernel answering for the node's own address. Published failover figures of
//! other L2 announcers go in the same table as anchors.
//!
//! The lab is [`L2Lab`]: three nodes, each running the shipped DaemonSet's agent args (membership
//! from the Node objects, one shared key file), one pod each, a `LoadBalancer` service with address
//! 192.168.50.200 / `fd00:50::200` on the LAN, two clients on the LAN resolving it on-link.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ferrite_lab::l2lab::{
    Distribution, Fault, L2Lab, LB_V4, LB_V6, POLICY_INTERFACES, Trial, TrialTiming,
};
use ferrite_lab::l2raw::{AnswerRate, answer_rate};
use ferrite_lab::manifest::l2_policy_yaml;
use ferrite_lab::nslab::LAN_IFNAME;
use ferrite_lab::{AgentConfig, NsService, SvcEndpoint};
use serde::Serialize;

use super::results::{Cell, cell, thousands_f};
use super::{check_interrupted, progress};

const PREFIX: &str = "flb";

/// How much to measure.
#[derive(Clone, Debug)]
pub struct L2Settings {
    /// Trials of each fault kind.
    pub trials_per_fault: usize,
    /// Length of each answers-per-second run.
    pub rate_run: Duration,
}

/// Failover statistics of one fault kind (or all of them).
#[derive(Clone, Debug, Serialize)]
pub struct FailoverRow {
    pub fault: String,
    pub trials: usize,
    /// Fault → first ARP reply from the new owner (ms).
    pub reply_ms: Option<Distribution>,
    /// Fault → first gratuitous ARP or reply from the new owner (ms).
    pub announce_ms: Option<Distribution>,
    /// Fault → the old owner's last ARP reply (ms).
    pub old_last_reply_ms: Option<Distribution>,
    /// Longest time without a successful request (ms).
    pub outage_ms: Option<Distribution>,
    /// Longest time without a successful request while the fault heals and after (ms): the
    /// returning node holds its claims until membership synced, the interim owner serves.
    pub heal_outage_ms: Option<Distribution>,
    pub failed_requests: usize,
    /// Polls answered by two MACs before healing / while healing, summed over the trials.
    pub double_answers: usize,
    pub heal_double_answers: usize,
    /// Trials with any double-answered poll while healing.
    pub trials_with_heal_double_answers: usize,
}

/// Answers per second of one responder.
#[derive(Clone, Debug, Serialize)]
pub struct RateRow {
    pub responder: String,
    pub request: String,
    pub target: String,
    pub rate: Cell<AnswerRate>,
}

/// Another L2 announcer's failover, as documented (not measured here).
#[derive(Clone, Debug, Serialize)]
pub struct Anchor {
    pub system: String,
    pub failover: String,
    pub basis: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct L2Bench {
    pub trials_per_fault: usize,
    pub failover: Vec<FailoverRow>,
    pub rates: Vec<RateRow>,
    pub anchors: Vec<Anchor>,
    /// Trials that could not be completed.
    pub errors: Vec<String>,
    pub trials: Vec<Trial>,
}

impl L2Bench {
    /// Whether any measurement is missing.
    pub fn incomplete(&self) -> bool {
        !self.errors.is_empty() || self.rates.iter().any(|r| r.rate.is_not_run())
    }
}

fn samples(trials: &[&Trial], f: impl Fn(&Trial) -> Option<f64>) -> Option<Distribution> {
    let v: Vec<f64> = trials.iter().filter_map(|t| f(t)).collect();
    Distribution::of(&v)
}

fn row(label: &str, trials: &[&Trial]) -> FailoverRow {
    FailoverRow {
        fault: label.to_owned(),
        trials: trials.len(),
        reply_ms: samples(trials, |t| t.reply_ms),
        announce_ms: samples(trials, |t| t.announce_ms),
        old_last_reply_ms: samples(trials, |t| t.old_last_reply_ms),
        outage_ms: samples(trials, |t| t.outage_ms),
        heal_outage_ms: samples(trials, |t| t.heal_outage_ms),
        failed_requests: trials.iter().map(|t| t.failed_requests).sum(),
        double_answers: trials.iter().map(|t| t.double_answers).sum(),
        heal_double_answers: trials.iter().map(|t| t.heal_double_answers).sum(),
        trials_with_heal_double_answers: trials
            .iter()
            .filter(|t| t.heal_double_answers > 0)
            .count(),
    }
}

fn anchors() -> Vec<Anchor> {
    vec![
        Anchor {
            system: "Cilium L2 announcements".into(),
            failover: "10–20 s".into(),
            basis: "a Kubernetes Lease per service: leaseDuration 15 s, renewDeadline 5 s, retryPeriod 2 s (defaults); a new node takes over once the lease expires".into(),
        },
        Anchor {
            system: "MetalLB (L2 mode), kube-vip (ARP)".into(),
            failover: "~3 s".into(),
            basis: "memberlist failure detection (MetalLB) / leader-election leases (kube-vip), typical figures".into(),
        },
    ]
}

/// Builds the lab, runs the trials (faults interleaved) and the answer-rate runs.
pub fn measure(
    exe: &Path,
    ferrite: Result<&Path, &String>,
    settings: &L2Settings,
) -> Result<L2Bench, String> {
    let ferrite = ferrite.map_err(Clone::clone)?;
    progress("l2: building the LAN lab (3 nodes with agents, 2 clients)");
    let mut base = AgentConfig::new(ferrite);
    "info".clone_into(&mut base.log_level);
    let mut lab = L2Lab::build(PREFIX, 3, 1, base, exe).map_err(|e| format!("L2 lab: {e}"))?;
    let mut web = NsService::load_balancer(
        "web",
        "10.96.0.10".parse().expect("valid"),
        IpAddr::V4(LB_V4),
        30080,
    );
    web.namespace = "default".into();
    web.lb_ips.push(IpAddr::V6(LB_V6));
    web.endpoints = lab
        .lab()
        .nodes()
        .iter()
        .map(|n| SvcEndpoint::new(n.pod_v4(0), &n.name))
        .collect();
    lab.lab()
        .write_manifest("web.yaml", &web.to_yaml())
        .map_err(|e| e.to_string())?;
    lab.lab()
        .write_manifest(
            "l2-policy.yaml",
            &l2_policy_yaml("lan", &[POLICY_INTERFACES]),
        )
        .map_err(|e| e.to_string())?;
    lab.start_agents()
        .map_err(|e| format!("starting agents: {e}"))?;
    let first = lab.wait_owner(IpAddr::V4(LB_V4), Duration::from_secs(20))?;
    // Breaking the owner must not also take endpoints away (which would fail requests for
    // reasons unrelated to the announcement): serve from the other nodes' pods.
    lab.serve_without("web.yaml", &web, first, 80)?;

    let (trials, errors) = run_trials(&mut lab, settings)?;
    let mut failover: Vec<FailoverRow> = Fault::ALL
        .iter()
        .map(|f| {
            row(
                &f.to_string(),
                &trials.iter().filter(|t| t.fault == *f).collect::<Vec<_>>(),
            )
        })
        .collect();
    failover.push(row("all", &trials.iter().collect::<Vec<_>>()));
    let rates = answer_rates(&lab, settings)?;
    Ok(L2Bench {
        trials_per_fault: settings.trials_per_fault,
        failover,
        rates,
        anchors: anchors(),
        errors,
        trials,
    })
}

/// The failover trials, fault kinds interleaved; failed trials come back as errors.
fn run_trials(lab: &mut L2Lab, settings: &L2Settings) -> Result<(Vec<Trial>, Vec<String>), String> {
    let timing = TrialTiming::default();
    let mut trials = Vec::new();
    let mut errors = Vec::new();
    for round in 0..settings.trials_per_fault {
        for fault in Fault::ALL {
            check_interrupted()?;
            match lab.trial(LB_V4, 80, fault, &timing) {
                Ok(t) => {
                    progress(&format!(
                        "l2: trial {} {fault}: {} → {}: reply {} ms, outage {} ms, double answers {}/{}",
                        round + 1,
                        t.old_owner,
                        t.new_owner.as_deref().unwrap_or("-"),
                        t.reply_ms.map_or_else(|| "-".into(), |v| format!("{v:.0}")),
                        t.outage_ms
                            .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
                        t.double_answers,
                        t.heal_double_answers
                    ));
                    trials.push(t);
                }
                Err(e) => {
                    progress(&format!("l2: trial {} {fault} failed: {e}", round + 1));
                    errors.push(format!("{fault}: {e}"));
                    // Put the lab back together before the next trial.
                    for i in 0..3 {
                        let _ = lab.heal(i);
                    }
                }
            }
        }
    }
    Ok((trials, errors))
}

/// ARP and NS answers per second: ferrite's responder for the LB IPs, the kernel of another
/// node for that node's own addresses.
fn answer_rates(lab: &L2Lab, settings: &L2Settings) -> Result<Vec<RateRow>, String> {
    progress("l2: answers per second");
    let owner4 = lab.wait_owner(IpAddr::V4(LB_V4), Duration::from_secs(20))?;
    let owner6 = lab.wait_owner(IpAddr::V6(LB_V6), Duration::from_secs(20))?;
    let client = lab.lab().client(0);
    let plain = |owner: usize| (owner + 1) % 3;
    let cases: [(&str, &str, IpAddr, IpAddr); 4] = [
        (
            "ferrite eBPF responder",
            "ARP",
            IpAddr::V4(client.v4()),
            IpAddr::V4(LB_V4),
        ),
        (
            "kernel (the node's own address)",
            "ARP",
            IpAddr::V4(client.v4()),
            IpAddr::V4(lab.lab().node(plain(owner4)).v4()),
        ),
        (
            "ferrite eBPF responder",
            "NS",
            IpAddr::V6(client.v6()),
            IpAddr::V6(LB_V6),
        ),
        (
            "kernel (the node's own address)",
            "NS",
            IpAddr::V6(client.v6()),
            IpAddr::V6(lab.lab().node(plain(owner6)).v6()),
        ),
    ];
    let mut rates = Vec::new();
    for (responder, request, src, target) in cases {
        check_interrupted()?;
        let r = answer_rate(client.ns(), LAN_IFNAME, src, target, settings.rate_run)
            .map_err(|e| e.to_string());
        progress(&format!("l2: {responder} {request} {target}: {r:?}"));
        rates.push(RateRow {
            responder: responder.into(),
            request: request.into(),
            target: target.to_string(),
            rate: r.into(),
        });
    }
    Ok(rates)
}

fn dist(d: Option<&Distribution>) -> String {
    d.map_or_else(
        || "–".into(),
        |d| format!("{:.0} / {:.0} / {:.0}", d.min, d.median, d.max),
    )
}

/// The project's failover target: the new owner answers within 1 s, median over the trials.
const TARGET_MEDIAN_MS: f64 = 1000.0;

/// `median 0.45 s (min 0.40, max 0.50)`.
fn seconds(d: Option<&Distribution>) -> String {
    d.map_or_else(
        || "–".into(),
        |d| {
            format!(
                "median {:.2} s (min {:.2} s, max {:.2} s)",
                d.median / 1e3,
                d.min / 1e3,
                d.max / 1e3
            )
        },
    )
}

/// Every trial's failover time of `fault`, in trial order (`–` for a trial without one).
fn trial_times(trials: &[Trial], fault: &str) -> String {
    let times: Vec<String> = trials
        .iter()
        .filter(|t| t.fault.to_string() == fault)
        .map(|t| t.reply_ms.map_or_else(|| "–".into(), |v| format!("{v:.0}")))
        .collect();
    times.join(", ")
}

/// ferrite's failover per fault next to the documented figures of other L2 announcers, with
/// the project's target.
fn comparison(l2: &L2Bench, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\nThe same figure next to other L2 announcers (theirs are documented defaults, not measured here):\n"
    );
    let _ = writeln!(out, "| system | failover | basis |");
    let _ = writeln!(out, "|---|---:|---|");
    for r in &l2.failover {
        let target = r.reply_ms.map_or("no failover measured", |d| {
            if d.median <= TARGET_MEDIAN_MS {
                "≤1 s median: met"
            } else {
                "≤1 s median: NOT met"
            }
        });
        let _ = writeln!(
            out,
            "| ferrite, {} (this run, {} trials) | {} — {target} | SWIM membership over UDP (probe 100 ms, suspicion ≥ 300 ms), rendezvous hashing, eBPF ARP/NDP responder |",
            r.fault,
            r.trials,
            seconds(r.reply_ms.as_ref()),
        );
    }
    for a in &l2.anchors {
        let _ = writeln!(out, "| {} | {} | {} |", a.system, a.failover, a.basis);
    }
}

/// Renders the section as markdown.
pub fn markdown(l2: &Cell<L2Bench>, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\n## L2 announcements: failover of a LoadBalancer IP\n"
    );
    let l2 = match l2 {
        Cell::Value(v) => v,
        Cell::NotRun { not_run } => {
            let _ = writeln!(out, "not run: {not_run}");
            return;
        }
    };
    let _ = writeln!(
        out,
        "{} trial(s) per fault on the owner of 192.168.50.200; times in ms after the fault, min / median / max.\n",
        l2.trials_per_fault
    );
    let _ = writeln!(
        out,
        "| fault | trials | failover: first ARP reply from the new owner | first announcement (gratuitous ARP) | old owner's last reply | longest request gap | longest request gap while healing | double-answered polls (fault / healing) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &l2.failover {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            r.fault,
            r.trials,
            dist(r.reply_ms.as_ref()),
            dist(r.announce_ms.as_ref()),
            dist(r.old_last_reply_ms.as_ref()),
            dist(r.outage_ms.as_ref()),
            dist(r.heal_outage_ms.as_ref()),
            r.double_answers,
            r.heal_double_answers,
        );
    }
    comparison(l2, out);
    let _ = writeln!(
        out,
        "\nAnswers per second (one client thread sending requests as fast as it can):\n"
    );
    let _ = writeln!(
        out,
        "| responder | request | target | answers/s | answered |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|");
    for r in &l2.rates {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.responder,
            r.request,
            r.target,
            cell(&r.rate, |a| thousands_f(a.rate)),
            cell(&r.rate, |a| {
                #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
                let pct = if a.requests == 0 {
                    0.0
                } else {
                    100.0 * a.replies as f64 / a.requests as f64
                };
                format!("{pct:.1}%")
            }),
        );
    }
    let _ = writeln!(
        out,
        "\nEvery trial's failover (ms, fault → first ARP reply from the new owner, in trial order):\n"
    );
    for r in l2.failover.iter().filter(|r| r.fault != "all") {
        let _ = writeln!(out, "- {}: {}", r.fault, trial_times(&l2.trials, &r.fault));
    }
    if !l2.errors.is_empty() {
        let _ = writeln!(out, "\nTrials that failed:\n");
        for e in &l2.errors {
            let _ = writeln!(out, "- {}", e.replace('\n', " "));
        }
    }
}

pub fn notes() -> Vec<String> {
    vec![
        "L2 lab: a LAN bridge with three node netns, each running the agent with the shipped DaemonSet's args (paths rewritten; devices detected; L2 membership from the Node objects' InternalIPs, one shared key file; one pod each) and an L2AnnouncementPolicy for `^eth[0-9]+`; a LoadBalancer service with 192.168.50.200 / fd00:50::200 (on the LAN subnet, so clients resolve it on-link) and, during the trials, the pods of the nodes other than the first owner as endpoints (so breaking the owner leaves no dead endpoint)".into(),
        "L2 trials: client2 sends an ARP request for the address every 20 ms and records every reply and gratuitous ARP; client1 opens a TCP connection every 20 ms (250 ms timeout). The owner is broken, the survivors must agree on a new owner, then it is healed (a fresh agent after kill -9, SIGCONT, link up) and must get the address back. Failover = fault → first ARP reply from the new owner's MAC; the longest request gap is short after kill -9 and SIGSTOP because the dead agent's pinned datapath keeps forwarding for clients that still have its MAC".into(),
        "Answers per second: `ferrite-lab` sends ARP requests / Neighbor Solicitations from one thread through a packet socket and counts the replies addressed to it; the kernel rows ask a node for its own address".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(fault: Fault, reply: f64, heal_double: usize) -> Trial {
        Trial {
            fault,
            old_owner: "node3".into(),
            new_owner: Some("node2".into()),
            announce_ms: Some(reply - 5.0),
            reply_ms: Some(reply),
            takeover_by_new_owner: true,
            old_last_reply_ms: Some(300.0),
            first_ok_ms: Some(10.0),
            outage_ms: Some(20.0),
            failed_requests: 0,
            double_answers: 0,
            unanswered_polls: 1,
            heal_double_answers: heal_double,
            heal_double_answer_span_ms: None,
            heal_outage_ms: Some(20.0),
            client_neighbor: None,
            stale_client_entry_before: None,
            healed_owner: Some("node3".into()),
            client_not_following_after_heal: None,
        }
    }

    #[test]
    fn rows_and_markdown() {
        let trials = [
            trial(Fault::Kill, 400.0, 0),
            trial(Fault::Kill, 500.0, 2),
            trial(Fault::LinkDown, 450.0, 0),
        ];
        let all: Vec<&Trial> = trials.iter().collect();
        let r = row("all", &all);
        assert_eq!(r.trials, 3);
        assert_eq!(r.heal_double_answers, 2);
        assert_eq!(r.trials_with_heal_double_answers, 1);
        assert!((r.reply_ms.unwrap().median - 450.0).abs() < f64::EPSILON);
        let bench = L2Bench {
            trials_per_fault: 1,
            failover: vec![row("kill -9", &all[..2]), row("link down", &all[2..]), r],
            rates: vec![RateRow {
                responder: "ferrite eBPF responder".into(),
                request: "ARP".into(),
                target: "192.168.50.200".into(),
                rate: Cell::Value(AnswerRate {
                    requests: 100,
                    replies: 99,
                    seconds: 1.0,
                    rate: 99.0,
                }),
            }],
            anchors: anchors(),
            errors: Vec::new(),
            trials: trials.to_vec(),
        };
        assert!(!bench.incomplete());
        let mut md = String::new();
        markdown(&Cell::Value(bench), &mut md);
        assert!(md.contains("| all | 3 | 400 / 450 / 500 |"), "{md}");
        assert!(
            md.contains("| 20 / 20 / 20 | 20 / 20 / 20 | 0 / 2 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| ferrite, all (this run, 3 trials) | median 0.45 s (min 0.40 s, max 0.50 s) — ≤1 s median: met |"
            ),
            "{md}"
        );
        assert!(md.contains("- kill -9: 400, 500\n"), "{md}");
        assert!(md.contains("- link down: 450\n"), "{md}");
        assert!(md.contains("| Cilium L2 announcements | 10–20 s |"), "{md}");
        assert!(
            md.contains("| ferrite eBPF responder | ARP | 192.168.50.200 | 99 | 99.0% |"),
            "{md}"
        );
    }
}
