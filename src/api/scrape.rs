//! `/metrics`: the agent's event counters plus the state as of the scrape.

use std::path::PathBuf;

use tracing::warn;

use super::SharedState;
use crate::metrics::{FlowCount, MapFill, PolicyCount, ProcessStats, Scrape};

/// The exposition for `GET /metrics`. The lock is held only to copy the views; the pinned
/// maps are walked after it is released.
pub fn render(state: &SharedState) -> String {
    let (mut scrape, metrics, maps_dir, slots) = {
        let guard = state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            from_views(&guard),
            guard.metrics.clone(),
            guard.maps_dir.clone(),
            guard.policy_slots.clone(),
        )
    };
    scrape.flows = flows(maps_dir.as_deref());
    scrape.policy = policy(maps_dir.as_deref(), &slots);
    scrape.maps = maps(maps_dir);
    scrape.process = ProcessStats::read();
    metrics.encode(&scrape)
}

fn flows(maps_dir: Option<&std::path::Path>) -> Vec<FlowCount> {
    let Some(dir) = maps_dir else {
        return Vec::new();
    };
    match crate::flows::reader::verdict_counts(dir) {
        Ok(counts) => counts
            .into_iter()
            .map(|c| FlowCount {
                kind: c.kind.to_owned(),
                drop_reason: c.drop_reason,
                flows: c.flows,
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "reading the flow verdict counters for /metrics");
            Vec::new()
        }
    }
}

fn policy(maps_dir: Option<&std::path::Path>, slots: &[String]) -> Vec<PolicyCount> {
    let Some(dir) = maps_dir else {
        return Vec::new();
    };
    if slots.is_empty() {
        return Vec::new();
    }
    match crate::flows::reader::policy_verdicts(dir, slots.len()) {
        Ok(counts) => counts
            .into_iter()
            .flat_map(|(slot, ingress, egress)| {
                let (policy, verdict) = if slot == 0 {
                    (String::new(), "denied")
                } else {
                    (slots[slot].clone(), "allowed")
                };
                [("ingress", ingress), ("egress", egress)]
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(move |(direction, packets)| PolicyCount {
                        policy: policy.clone(),
                        direction: direction.to_owned(),
                        verdict: verdict.to_owned(),
                        packets,
                    })
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "reading NetworkPolicy's verdict counters for /metrics");
            Vec::new()
        }
    }
}

fn maps(maps_dir: Option<PathBuf>) -> Vec<MapFill> {
    let Some(dir) = maps_dir else {
        return Vec::new();
    };
    match crate::datapath::map_fill(&dir) {
        Ok(fill) => fill
            .into_iter()
            .map(|f| MapFill {
                name: f.name.to_owned(),
                entries: f.entries,
                max_entries: u64::from(f.max_entries),
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "reading the fill of the pinned maps for /metrics");
            Vec::new()
        }
    }
}

/// What the published views say (no IO but the source's and SNAT counters' callbacks).
fn from_views(st: &super::ApiState) -> Scrape {
    let status = st.current_status();
    let apply = status.last_apply.clone().unwrap_or_default();
    let l2 = &st.l2;
    let rejected = l2.membership.rejected;
    Scrape {
        services: apply.services as u64,
        frontends: apply.frontends as u64,
        backends: apply.backends as u64,
        generation: apply.generation,
        maps: Vec::new(),
        flows: Vec::new(),
        policy: Vec::new(),
        snat_flows: status.masquerade.as_ref().map(|m| m.snat_flows),
        l2_members: l2.members.len() as u64,
        l2_owned: l2
            .addresses
            .iter()
            .filter(|a| a.owner.as_deref() == Some(l2.node.as_str()) && a.interface.is_some())
            .count() as u64,
        l2_rejected: vec![
            ("unauthenticated".into(), rejected.unauthenticated),
            ("bad_mac".into(), rejected.bad_mac),
            ("replayed".into(), rejected.replayed),
            ("malformed".into(), rejected.malformed),
        ],
        subsystems: status
            .subsystems
            .iter()
            .map(|s| (s.name.clone(), s.ready))
            .collect(),
        source_errors: status.source_errors.len() as u64,
        process: ProcessStats::default(),
    }
}
