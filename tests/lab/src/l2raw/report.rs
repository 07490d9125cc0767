//! [`send_catalog`]: the catalog on the wire, one frame at a time, and how the announcer
//! treated each kind.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::netns::Ns;
use crate::raw::Mac;

use super::{
    ALL_NODES, ALL_NODES_MAC, AnswerKind, ETH_P_ALL, Expect, L2Aim, PacketSocket, catalog,
    parse_answer,
};

/// How the announcer treated each frame of a [`catalog`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogReport {
    /// Kind → expectation.
    pub expect: BTreeMap<String, Expect>,
    /// Kind → frames sent.
    pub sent: BTreeMap<String, u64>,
    /// Kind → the error of a failed send.
    pub failed: BTreeMap<String, String>,
    /// Kind → answers it drew (kinds that drew none are absent).
    pub answered: BTreeMap<String, u64>,
    /// Kind → answers that were not well formed (NA checksum, hop limit, option).
    pub ill_formed_answers: BTreeMap<String, u64>,
    /// Answers for the target that no frame of the catalog asked for.
    pub stray_answers: u64,
}

impl CatalogReport {
    /// Kinds expected to be answered that drew no answer.
    #[must_use]
    pub fn missing_answers(&self) -> Vec<&str> {
        self.expect
            .iter()
            .filter(|(k, e)| {
                matches!(**e, Expect::Answer | Expect::Defend) && !self.answered.contains_key(*k)
            })
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Kinds expected to stay silent that drew an answer.
    #[must_use]
    pub fn wrongly_answered(&self) -> Vec<&str> {
        self.expect
            .iter()
            .filter(|(k, e)| **e == Expect::Silent && self.answered.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Arguable kinds that drew an answer (for the record).
    #[must_use]
    pub fn either_answered(&self) -> Vec<&str> {
        self.expect
            .iter()
            .filter(|(k, e)| **e == Expect::Either && self.answered.contains_key(*k))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Sends `rounds` rounds of the catalog for `aim` one frame at a time from `ifname` in `ns`,
/// waiting `gap` after each for an answer; answers are matched to frames by their
/// destination MAC (each frame's own sender MAC) and, failing that, by time.
pub fn send_catalog(
    ns: &Ns,
    ifname: &str,
    aim: &L2Aim,
    rounds: u16,
    gap: Duration,
) -> io::Result<CatalogReport> {
    let sock = PacketSocket::open_in(ns, ifname, ETH_P_ALL)?;
    let mut report = CatalogReport::default();
    for seq in 0..rounds {
        for frame in catalog(aim, seq) {
            report.expect.insert(frame.kind.clone(), frame.expect);
            if let Err(e) = sock.send(&frame.bytes) {
                report.failed.insert(frame.kind.clone(), e.to_string());
                continue;
            }
            *report.sent.entry(frame.kind.clone()).or_default() += 1;
            let deadline = Instant::now() + gap;
            while let Some(r) = sock.recv_until(deadline)? {
                if r.outgoing {
                    continue;
                }
                let Some(a) = parse_answer(&r.bytes) else {
                    continue;
                };
                if a.ip != aim.target {
                    continue;
                }
                if frame.expect == Expect::Defend {
                    // Only the defence counts: Override, to all-nodes, with our address.
                    if a.kind == AnswerKind::Announcement
                        && a.eth_dst == ALL_NODES_MAC
                        && a.ip_dst == Some(IpAddr::V6(ALL_NODES))
                        && a.override_flag
                    {
                        *report.answered.entry(frame.kind.clone()).or_default() += 1;
                        if !a.well_formed {
                            *report
                                .ill_formed_answers
                                .entry(frame.kind.clone())
                                .or_default() += 1;
                        }
                    }
                    continue;
                }
                if a.kind != AnswerKind::Reply {
                    continue;
                }
                // Matched by destination; a reply to a broadcast or zero sender address can
                // only be matched by time (one frame is in flight at a time).
                if a.eth_dst == frame.reply_to
                    || a.eth_dst.0[0] & 1 == 1
                    || a.eth_dst == Mac::default()
                {
                    *report.answered.entry(frame.kind.clone()).or_default() += 1;
                    // A solicited NA goes back to the soliciting address (RFC 4861 7.2.4).
                    let misaddressed = a.ip_dst.is_some_and(|d| d != aim.src);
                    if !a.well_formed || misaddressed {
                        *report
                            .ill_formed_answers
                            .entry(frame.kind.clone())
                            .or_default() += 1;
                    }
                } else {
                    report.stray_answers += 1;
                }
            }
        }
    }
    Ok(report)
}
