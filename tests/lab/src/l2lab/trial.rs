//! What a failover trial is and measures: the [`Fault`], the pacing ([`TrialTiming`]), the
//! record ([`Trial`]) computed from the ARP poller's log and the request loop's attempts, and
//! millisecond [`Distribution`]s.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::l2raw::{AnswerKind, WatchLog};
use crate::raw::Mac;
use crate::timeline::{Attempt, failures, first_ok_after, longest_outage};

/// How a trial breaks the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` of the agent (its pinned datapath stays).
    Kill,
    /// `SIGSTOP` of the agent (frozen; `SIGCONT` heals it).
    Stop,
    /// `ip link set eth0 down` in the node.
    LinkDown,
}

impl Fault {
    pub const ALL: [Self; 3] = [Self::Kill, Self::Stop, Self::LinkDown];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kill => "kill -9",
            Self::Stop => "SIGSTOP",
            Self::LinkDown => "link down",
        })
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kill" => Ok(Self::Kill),
            "stop" => Ok(Self::Stop),
            "link-down" => Ok(Self::LinkDown),
            other => Err(format!("unknown fault {other:?} (kill, stop, link-down)")),
        }
    }
}

/// Pacing of a [`L2Lab::trial`].
#[derive(Clone, Debug)]
pub struct TrialTiming {
    /// ARP request interval of the poller (client2).
    pub poll: Duration,
    /// Pause between requests of the request loop (client1).
    pub request_interval: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Observation before the fault.
    pub before: Duration,
    /// Observation after a new owner is agreed (and after healing).
    pub settle: Duration,
    /// Longest wait for a new owner or for the healed steady state.
    pub limit: Duration,
}

impl Default for TrialTiming {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(20),
            request_interval: Duration::from_millis(20),
            request_timeout: Duration::from_millis(250),
            before: Duration::from_millis(500),
            settle: Duration::from_millis(1500),
            limit: Duration::from_secs(20),
        }
    }
}

/// What one failover trial measured. Times are milliseconds after the fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trial {
    pub fault: Fault,
    pub old_owner: String,
    /// The owner the surviving agents agreed on.
    pub new_owner: Option<String>,
    /// First announcement (gratuitous ARP) or reply from any other node's MAC.
    pub announce_ms: Option<f64>,
    /// First reply to the poller's ARP requests from another node's MAC: the failover time a
    /// client resolving the address sees.
    pub reply_ms: Option<f64>,
    /// Whether the MAC that took over is the agreed new owner's.
    pub takeover_by_new_owner: bool,
    /// The old owner's last ARP reply after the fault (how long its responder kept answering).
    pub old_last_reply_ms: Option<f64>,
    /// First successful request that started after the fault.
    pub first_ok_ms: Option<f64>,
    /// Longest time without a successful request between the fault and healing.
    pub outage_ms: Option<f64>,
    pub failed_requests: usize,
    /// Polls answered by more than one MAC, before healing (fault phase and the 0.5 s before).
    pub double_answers: usize,
    /// Polls nobody answered, before healing.
    pub unanswered_polls: usize,
    /// Polls answered by more than one MAC while healing and after.
    pub heal_double_answers: usize,
    /// From the first to the last of those polls (ms): how long two nodes answered.
    pub heal_double_answer_span_ms: Option<f64>,
    /// Longest time without a successful request while healing and after.
    pub heal_outage_ms: Option<f64>,
    /// The client's neighbor entry for the address just before healing.
    pub client_neighbor: Option<String>,
    /// At the start, the client's neighbor entry named another MAC than the owner's (a
    /// previous owner's): it was deleted so the trial starts clean.
    pub stale_client_entry_before: Option<String>,
    /// The owner after healing.
    pub healed_owner: Option<String>,
    /// The client's neighbor entry at the end, when it is not the healed owner's MAC (clients
    /// left talking to a node that no longer announces the address).
    pub client_not_following_after_heal: Option<String>,
}

fn ms_since(t0: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64() * 1e3
}

#[expect(
    clippy::too_many_arguments,
    reason = "one pure computation over a trial's records"
)]
pub(crate) fn measure(
    fault: Fault,
    old_owner: &str,
    new_owner: Option<String>,
    (old_mac, new_mac): (Mac, Option<Mac>),
    log: &WatchLog,
    attempts: &[Attempt],
    (t_start, t0, t_heal, t_end): (Instant, Instant, Instant, Instant),
    client_neighbor: Option<String>,
) -> Trial {
    let takeover = log.first(t0, |a| a.mac != old_mac && a.ip.is_ipv4());
    let reply = log.first(t0, |a| {
        a.kind == AnswerKind::Reply && a.eth_dst == log.mac && a.mac != old_mac
    });
    Trial {
        fault,
        old_owner: old_owner.to_owned(),
        new_owner,
        announce_ms: takeover.map(|s| ms_since(t0, s.at)),
        reply_ms: reply.map(|s| ms_since(t0, s.at)),
        takeover_by_new_owner: takeover.is_some_and(|s| Some(s.answer.mac) == new_mac),
        old_last_reply_ms: log
            .last(t0, t_heal, |a| {
                a.kind == AnswerKind::Reply && a.mac == old_mac
            })
            .map(|s| ms_since(t0, s.at)),
        first_ok_ms: first_ok_after(attempts, t0).map(|a| ms_since(t0, a.end)),
        outage_ms: longest_outage(attempts, t0, t_heal).map(|d| d.as_secs_f64() * 1e3),
        failed_requests: failures(attempts, t0, t_heal),
        double_answers: log.double_answered(t_start, t_heal),
        unanswered_polls: log.unanswered(t_start, t_heal),
        heal_double_answers: log.double_answered(t_heal, t_end),
        heal_double_answer_span_ms: log
            .double_answered_span(t_heal, t_end)
            .map(|d| d.as_secs_f64() * 1e3),
        heal_outage_ms: longest_outage(attempts, t_heal, t_end).map(|d| d.as_secs_f64() * 1e3),
        client_neighbor,
        stale_client_entry_before: None,
        healed_owner: None,
        client_not_following_after_heal: None,
    }
}

/// Percentiles of a set of millisecond samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub n: usize,
    pub median: f64,
    pub p95: f64,
    pub max: f64,
    pub min: f64,
}

impl Distribution {
    /// Nearest-rank percentiles; `None` without samples.
    #[must_use]
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "small positive counts"
            )]
            let r = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[r - 1]
        };
        Some(Self {
            n: v.len(),
            median: rank(0.5),
            p95: rank(0.95),
            max: v[v.len() - 1],
            min: v[0],
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::l2lab::address_entry;

    #[test]
    fn percentiles() {
        let d = Distribution::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((d.n, d.min, d.median, d.max), (5, 1.0, 3.0, 5.0));
        assert!((d.p95 - 5.0).abs() < f64::EPSILON);
        let many: Vec<f64> = (1..=20).map(f64::from).collect();
        let d = Distribution::of(&many).unwrap();
        assert!((d.median - 10.0).abs() < f64::EPSILON);
        assert!((d.p95 - 19.0).abs() < f64::EPSILON);
        assert!(Distribution::of(&[]).is_none());
    }

    #[test]
    fn faults_parse_and_print() {
        assert_eq!("link-down".parse::<Fault>().unwrap(), Fault::LinkDown);
        assert!("reboot".parse::<Fault>().is_err());
        assert_eq!(Fault::Kill.to_string(), "kill -9");
        assert_eq!(
            serde_json::to_string(&Fault::LinkDown).unwrap(),
            "\"link-down\""
        );
    }

    #[test]
    fn views_are_searched_by_address() {
        let v: Value = serde_json::json!({
            "node": "node1", "members": ["node1"],
            "addresses": [{"address": "fd00:50::200", "owner": "node3"}]
        });
        assert!(address_entry(&v, "fd00:50:0::200".parse().unwrap()).is_some());
        assert!(address_entry(&v, "192.168.50.200".parse().unwrap()).is_none());
    }
}
