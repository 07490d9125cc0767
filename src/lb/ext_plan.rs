//! Diff of external frontends against the north-south maps. Maglev rows are immutable once
//! written: a new backend set gets a fresh row, the frontends switch to it in one map update
//! each, and the old row is freed afterwards (make before break).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use ferrite_abi::{
    Backend, EXT_FLAG_CLIENT_AFFINITY, EXT_FLAG_LOCAL, EXT_FLAG_RANDOM, EXT_FLAG_SOURCE_RANGES,
    ExtSvcValue, FAMILY_V4, FAMILY_V6, SvcKey,
};
use tracing::warn;

use super::addr::{backend_of, ip_words};
use super::external::ExtFrontend;
use super::maglev;

/// A source range as stored in the LPM trie: (row, family, address words, prefix length).
pub type RangeKey = (u32, u8, [u32; 4], u8);

/// What a Maglev row holds: its backend ids (sorted) and the source ranges tied to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub backends: Vec<u32>,
    pub ranges: Vec<(u8, [u32; 4], u8)>,
}

/// Mirror of the north-south maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtState {
    pub frontends: HashMap<SvcKey, ExtSvcValue>,
    pub rows: BTreeMap<u32, RowKey>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtPlan {
    /// Rows to fill (row, table of backend ids), then their source ranges.
    pub write_rows: Vec<(u32, Vec<u32>)>,
    pub add_ranges: Vec<RangeKey>,
    pub upsert_frontends: Vec<(SvcKey, ExtSvcValue)>,
    pub delete_frontends: Vec<SvcKey>,
    /// Rows no frontend uses any more, with their ranges to delete.
    pub free_rows: Vec<u32>,
    pub delete_ranges: Vec<RangeKey>,
}

impl ExtPlan {
    pub fn op_count(&self) -> usize {
        self.write_rows.len()
            + self.add_ranges.len()
            + self.upsert_frontends.len()
            + self.delete_frontends.len()
            + self.free_rows.len()
            + self.delete_ranges.len()
    }
}

pub fn ext_key(fe: &ExtFrontend) -> SvcKey {
    let (addr, family) = match fe.addr {
        Some(ip) => ip_words(ip),
        None => ([0; 4], if fe.family_v4 { FAMILY_V4 } else { FAMILY_V6 }),
    };
    SvcKey {
        addr,
        port: fe.port.to_be(),
        proto: fe.protocol.number(),
        family,
    }
}

fn range_words(ranges: &[(IpAddr, u8)]) -> Vec<(u8, [u32; 4], u8)> {
    let mut v: Vec<_> = ranges
        .iter()
        .map(|(ip, len)| {
            let (w, fam) = ip_words(*ip);
            (fam, w, *len)
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `backend_ids` maps every backend address of `desired` to its id in the backends map.
pub fn ext_plan(
    desired: &[ExtFrontend],
    backend_ids: &HashMap<Backend, u32>,
    current: &ExtState,
    table_size: u32,
    max_rows: u32,
) -> ExtPlan {
    let mut out = ExtPlan::default();
    let mut row_of: BTreeMap<RowKey, u32> =
        current.rows.iter().map(|(r, k)| (k.clone(), *r)).collect();
    let mut used_rows = BTreeSet::new();
    let mut wanted = BTreeSet::new();
    let mut free = (0..max_rows).filter(|r| !current.rows.contains_key(r));

    for fe in desired {
        let key = ext_key(fe);
        if !wanted.insert(key) {
            continue;
        }
        let backends: Vec<SocketAddr> = fe
            .backends
            .iter()
            .copied()
            .filter(|b| backend_ids.contains_key(&backend_of(*b)))
            .collect();
        let mut flags = 0;
        if fe.local_only {
            flags |= EXT_FLAG_LOCAL;
        }
        if fe.random {
            flags |= EXT_FLAG_RANDOM;
        }
        if fe.client_affinity {
            flags |= EXT_FLAG_CLIENT_AFFINITY;
        }
        if !fe.source_ranges.is_empty() {
            flags |= EXT_FLAG_SOURCE_RANGES;
        }
        let mut value = ExtSvcValue {
            ext_id: 0,
            count: 0,
            flags,
            _pad: 0,
        };
        if !backends.is_empty() && backends.len() < table_size as usize {
            let ids: Vec<u32> = backends
                .iter()
                .map(|b| backend_ids[&backend_of(*b)])
                .collect();
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            let row_key = RowKey {
                backends: sorted,
                ranges: range_words(&fe.source_ranges),
            };
            let row = if let Some(r) = row_of.get(&row_key) {
                *r
            } else if let Some(r) = free.next() {
                let table = maglev::table(&backends, table_size, maglev::SEED);
                out.write_rows
                    .push((r, table.iter().map(|i| ids[*i as usize]).collect()));
                for (fam, w, len) in &row_key.ranges {
                    out.add_ranges.push((r, *fam, *w, *len));
                }
                row_of.insert(row_key, r);
                r
            } else {
                warn!(service = %fe.service, "no free Maglev row (raise --max-external-tables); frontend has no backends");
                continue;
            };
            used_rows.insert(row);
            value.ext_id = row;
            value.count = u16::try_from(backends.len()).unwrap_or(u16::MAX);
        }
        if current.frontends.get(&key) != Some(&value) {
            out.upsert_frontends.push((key, value));
        }
    }
    out.delete_frontends = current
        .frontends
        .keys()
        .filter(|k| !wanted.contains(k))
        .copied()
        .collect();
    out.delete_frontends.sort_unstable();
    for (key, row) in &row_of {
        if !used_rows.contains(row) && current.rows.contains_key(row) {
            out.free_rows.push(*row);
            for (fam, w, len) in &key.ranges {
                out.delete_ranges.push((*row, *fam, *w, *len));
            }
        }
    }
    out.upsert_frontends.sort_unstable_by_key(|(k, _)| *k);
    out
}

impl ExtState {
    /// The state after `plan` was written in full.
    pub fn apply(&mut self, plan: &ExtPlan) {
        for (row, table) in &plan.write_rows {
            let mut backends: Vec<u32> = table.clone();
            backends.sort_unstable();
            backends.dedup();
            let ranges = plan
                .add_ranges
                .iter()
                .filter(|r| r.0 == *row)
                .map(|r| (r.1, r.2, r.3))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            self.rows.insert(*row, RowKey { backends, ranges });
        }
        for (k, v) in &plan.upsert_frontends {
            self.frontends.insert(*k, *v);
        }
        for k in &plan.delete_frontends {
            self.frontends.remove(k);
        }
        for r in &plan.free_rows {
            self.rows.remove(r);
        }
    }
}

#[cfg(test)]
#[path = "ext_plan_tests.rs"]
mod tests;
