//! JSON reports printed by `ferrite-lab client` and `ferrite-lab connect-rate`; tests
//! deserialize them with these types.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Result of `ferrite-lab client`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientReport {
    /// The address the client connected or sent to.
    pub target: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// `connected`, or `unconnected` for UDP `sendto`/`recvfrom`.
    pub mode: String,
    pub attempts: u64,
    /// Attempts that read a server name.
    pub ok: u64,
    /// Server name → how many replies carried it.
    pub names: BTreeMap<String, u64>,
    /// Error kind (`ECONNREFUSED`, `timeout`, `eof`, ...) → count.
    pub failures: BTreeMap<String, u64>,
    /// How long attempts that ended in `ECONNREFUSED` took, from socket creation to the error.
    pub refused_us: Option<LatencySummary>,
    /// Distinct `getpeername()` results after connect (TCP, and connected UDP).
    pub peers: BTreeSet<String>,
    /// Distinct source addresses of replies (unconnected UDP).
    pub reply_sources: BTreeSet<String>,
    /// Server name → the client addresses (IP only) that server reported seeing, from replies
    /// of `ferrite-lab serve --echo-peer` (`NAME PEER`). Empty for plain `NAME` replies.
    #[serde(default)]
    pub peers_seen_by_server: BTreeMap<String, BTreeSet<String>>,
    pub elapsed_ms: u64,
}

impl ClientReport {
    /// Every client address any server reported, across servers.
    #[must_use]
    pub fn all_peers_seen(&self) -> BTreeSet<&str> {
        self.peers_seen_by_server
            .values()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// Names of the servers that answered whose name starts with `prefix`.
    #[must_use]
    pub fn names_starting_with(&self, prefix: &str) -> BTreeSet<&str> {
        self.names
            .keys()
            .filter(|n| n.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }
}

/// Percentiles of a set of durations in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub median_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    /// Summarises `samples` (sorted in place); `None` when empty.
    #[must_use]
    pub fn from_samples(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest-rank percentile; sample counts are far below 2^52.
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "rank is within 0..len, and len is small"
            )]
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Some(Self {
            count: samples.len() as u64,
            min_us: samples[0],
            median_us: at(0.5),
            p99_us: at(0.99),
            max_us: samples[samples.len() - 1],
        })
    }
}

/// Result of `ferrite-lab connect-rate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectRateReport {
    pub target: String,
    pub threads: u32,
    /// Successful connects.
    pub connects: u64,
    /// Failed connects (see `failures`).
    pub errors: u64,
    pub seconds: f64,
    /// Successful connects per second.
    pub rate: f64,
    pub failures: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        assert_eq!(LatencySummary::from_samples(&mut []), None);
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let s = LatencySummary::from_samples(&mut samples).unwrap();
        assert_eq!(
            (s.count, s.min_us, s.median_us, s.p99_us, s.max_us),
            (100, 1, 50, 99, 100)
        );
        let s = LatencySummary::from_samples(&mut [7]).unwrap();
        assert_eq!((s.median_us, s.p99_us), (7, 7));
    }

    #[test]
    fn client_report_round_trips() {
        let mut r = ClientReport {
            target: "10.96.0.10:80".into(),
            proto: "tcp".into(),
            mode: "connected".into(),
            attempts: 3,
            ok: 2,
            ..ClientReport::default()
        };
        r.names.insert("pod-a".into(), 2);
        r.failures.insert("ECONNREFUSED".into(), 1);
        r.peers.insert("10.96.0.10:80".into());
        r.peers_seen_by_server
            .entry("pod-a".into())
            .or_default()
            .insert("192.168.50.3".into());
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""names":{"pod-a":2}"#), "{text}");
        assert!(
            text.contains(r#""peers_seen_by_server":{"pod-a":["192.168.50.3"]}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ClientReport>(&text).unwrap(), r);
        assert_eq!(
            r.all_peers_seen().into_iter().collect::<Vec<_>>(),
            ["192.168.50.3"]
        );
        assert_eq!(r.names_starting_with("pod").len(), 1);
        // Reports written before the field existed still parse.
        let old = text.replace(r#","peers_seen_by_server":{"pod-a":["192.168.50.3"]}"#, "");
        assert!(
            serde_json::from_str::<ClientReport>(&old)
                .unwrap()
                .peers_seen_by_server
                .is_empty()
        );
    }
}
