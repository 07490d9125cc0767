//! Typed handles on the north-south maps: read back, write plans, publish device addresses.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{
    Array, HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use ferrite_abi::{
    DEV_HAS_V4, DEV_HAS_V6, DevInfo, ExtSvcValue, NodeAddrKey, SRC_RANGE_PREFIX_BITS, SrcRangeData,
    SvcKey, map_names,
};

use super::DatapathError;
use super::devices::Device;
use super::maputil::{ignore_missing, lpm_key_parts, map_err, take};
use crate::lb::addr::ip_words;
use crate::lb::ext_plan::{ExtPlan, ExtState, RangeKey, RowKey};

pub struct ExtMaps {
    external: HashMap<MapData, SvcKey, ExtSvcValue>,
    maglev: Array<MapData, u32>,
    devices: HashMap<MapData, u32, DevInfo>,
    node_addrs: HashMap<MapData, NodeAddrKey, u32>,
    ranges: LpmTrie<MapData, SrcRangeData, u8>,
    table_size: u32,
}

fn range_key(r: &RangeKey) -> Key<SrcRangeData> {
    let (row, family, addr, len) = *r;
    Key::new(
        SRC_RANGE_PREFIX_BITS + u32::from(len),
        SrcRangeData {
            ext_id: row,
            family: u32::from(family),
            addr,
        },
    )
}

impl ExtMaps {
    pub fn take(ebpf: &mut aya::Ebpf, table_size: u32) -> Result<Self, DatapathError> {
        Ok(Self {
            external: take(ebpf, map_names::EXTERNAL)?,
            maglev: take(ebpf, map_names::MAGLEV)?,
            devices: take(ebpf, map_names::DEVICES)?,
            node_addrs: take(ebpf, map_names::NODE_ADDRS)?,
            ranges: take(ebpf, map_names::SOURCE_RANGES)?,
            table_size,
        })
    }

    /// Publishes exactly `devices`: each one's SNAT source addresses and every address NodePort
    /// answers on; entries of devices no longer listed are removed.
    pub fn set_devices(&mut self, devices: &[Device]) -> Result<(), DatapathError> {
        let mut wanted: std::collections::HashMap<NodeAddrKey, u32> =
            std::collections::HashMap::new();
        for d in devices {
            let mut info = DevInfo::default();
            if let Some(v4) = d.v4 {
                info.v4 = ip_words(v4.into()).0[0];
                info.flags |= DEV_HAS_V4;
            }
            if let Some(v6) = d.v6 {
                info.v6 = ip_words(v6.into()).0;
                info.flags |= DEV_HAS_V6;
            }
            if self.devices.get(&d.ifindex, 0).ok() != Some(info) {
                self.devices
                    .insert(d.ifindex, info, 0)
                    .map_err(map_err(map_names::DEVICES))?;
            }
            for ip in &d.addrs {
                let (addr, family) = ip_words(*ip);
                let key = NodeAddrKey {
                    family: u32::from(family),
                    addr,
                };
                wanted.insert(key, d.ifindex);
            }
        }
        let stale: Vec<u32> = self
            .devices
            .keys()
            .filter_map(Result::ok)
            .filter(|i| !devices.iter().any(|d| d.ifindex == *i))
            .collect();
        for i in stale {
            ignore_missing(self.devices.remove(&i)).map_err(map_err(map_names::DEVICES))?;
        }
        let present: Vec<(NodeAddrKey, u32)> =
            self.node_addrs.iter().filter_map(Result::ok).collect();
        for (k, v) in &present {
            if wanted.get(k) != Some(v) {
                ignore_missing(self.node_addrs.remove(k))
                    .map_err(map_err(map_names::NODE_ADDRS))?;
            }
        }
        for (k, v) in &wanted {
            if !present.contains(&(*k, *v)) {
                self.node_addrs
                    .insert(k, v, 0)
                    .map_err(map_err(map_names::NODE_ADDRS))?;
            }
        }
        Ok(())
    }

    /// What the maps hold: frontends, and for every row in use its backend set and ranges.
    pub fn read_state(&self) -> Result<ExtState, DatapathError> {
        let mut st = ExtState::default();
        for kv in &self.external {
            let (k, v) = kv.map_err(map_err(map_names::EXTERNAL))?;
            st.frontends.insert(k, v);
        }
        let mut ranges: BTreeMap<u32, BTreeSet<(u8, [u32; 4], u8)>> = BTreeMap::new();
        for k in self.ranges.keys() {
            let (prefix_len, data) = lpm_key_parts(&k.map_err(map_err(map_names::SOURCE_RANGES))?);
            let len = u8::try_from(prefix_len.saturating_sub(SRC_RANGE_PREFIX_BITS)).unwrap_or(0);
            ranges.entry(data.ext_id).or_default().insert((
                u8::try_from(data.family).unwrap_or(0),
                data.addr,
                len,
            ));
        }
        let rows: BTreeSet<u32> = st
            .frontends
            .values()
            .filter(|v| v.count > 0)
            .map(|v| v.ext_id)
            .collect();
        for row in rows {
            let mut backends = BTreeSet::new();
            for i in 0..self.table_size {
                let id = self
                    .maglev
                    .get(&(row * self.table_size + i), 0)
                    .map_err(map_err(map_names::MAGLEV))?;
                backends.insert(id);
            }
            let key = RowKey {
                backends: backends.into_iter().collect(),
                ranges: ranges
                    .remove(&row)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            };
            st.rows.insert(row, key);
        }
        Ok(st)
    }

    /// Writes `plan` in order: rows and their ranges, frontends, then removals.
    pub fn apply(&mut self, plan: &ExtPlan, state: &mut ExtState) -> Result<(), DatapathError> {
        for (row, table) in &plan.write_rows {
            for (i, id) in table.iter().enumerate() {
                let idx = row * self.table_size + u32::try_from(i).unwrap_or(u32::MAX);
                self.maglev
                    .set(idx, id, 0)
                    .map_err(map_err(map_names::MAGLEV))?;
            }
        }
        for r in &plan.add_ranges {
            self.ranges
                .insert(&range_key(r), 1, 0)
                .map_err(map_err(map_names::SOURCE_RANGES))?;
        }
        for (k, v) in &plan.upsert_frontends {
            self.external
                .insert(k, v, 0)
                .map_err(map_err(map_names::EXTERNAL))?;
        }
        for k in &plan.delete_frontends {
            ignore_missing(self.external.remove(k)).map_err(map_err(map_names::EXTERNAL))?;
        }
        for r in &plan.delete_ranges {
            ignore_missing(self.ranges.remove(&range_key(r)))
                .map_err(map_err(map_names::SOURCE_RANGES))?;
        }
        state.apply(plan);
        Ok(())
    }
}
