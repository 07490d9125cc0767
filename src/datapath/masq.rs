//! The masquerade's maps: the two LPM tries the reconciler writes (cluster pod CIDRs,
//! `--masquerade-exclude`), and the SNAT table the programs fill (counted for `ferrite status`
//! through its pin, so the API needs no handle of the reconciler's).

use aya::maps::{
    HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use ferrite_abi::{CtKey, MASQ_CIDR_PREFIX_BITS, MasqCidr, SNAT_FLAG_EGRESS, SnatValue, map_names};
use ipnet::IpNet;

use super::DatapathError;
use super::maputil::{ignore_missing, lpm_key_parts, map_err, take};
use crate::lb::addr::{ip_words, words_ip};
use crate::masq::{MasqPlan, MasqSets};

type Trie = LpmTrie<MapData, MasqCidr, u8>;

pub struct MasqMaps {
    pods: Trie,
    exclude: Trie,
}

/// The LPM key of `net` in a trie keyed by [`MasqCidr`] (also NetworkPolicy's prefixes).
pub(super) fn key(net: &IpNet) -> Key<MasqCidr> {
    let (addr, family) = ip_words(net.network());
    Key::new(
        MASQ_CIDR_PREFIX_BITS + u32::from(net.prefix_len()),
        MasqCidr {
            family: u32::from(family),
            addr,
        },
    )
}

fn read(
    trie: &Trie,
    name: &'static str,
) -> Result<std::collections::BTreeSet<IpNet>, DatapathError> {
    let mut out = std::collections::BTreeSet::new();
    for k in trie.keys() {
        let (prefix_len, data) = lpm_key_parts(&k.map_err(map_err(name))?);
        let len = u8::try_from(prefix_len.saturating_sub(MASQ_CIDR_PREFIX_BITS)).unwrap_or(0);
        // A key this agent cannot have written (foreign family or length) is left alone.
        if let Some(ip) = u8::try_from(data.family)
            .ok()
            .and_then(|f| words_ip(data.addr, f))
            && let Ok(net) = IpNet::new(ip, len)
        {
            out.insert(net);
        }
    }
    Ok(out)
}

fn write(trie: &mut Trie, name: &'static str, add: &[IpNet]) -> Result<(), DatapathError> {
    for n in add {
        trie.insert(&key(n), 1, 0).map_err(map_err(name))?;
    }
    Ok(())
}

fn delete(trie: &mut Trie, name: &'static str, del: &[IpNet]) -> Result<(), DatapathError> {
    for n in del {
        ignore_missing(trie.remove(&key(n))).map_err(map_err(name))?;
    }
    Ok(())
}

impl MasqMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, DatapathError> {
        Ok(Self {
            pods: take(ebpf, map_names::MASQ_PODS)?,
            exclude: take(ebpf, map_names::MASQ_EXCLUDE)?,
        })
    }

    /// What the tries hold (a restarted agent starts from the pinned content).
    pub fn read_state(&self) -> Result<MasqSets, DatapathError> {
        Ok(MasqSets {
            pods: read(&self.pods, map_names::MASQ_PODS)?,
            exclude: read(&self.exclude, map_names::MASQ_EXCLUDE)?,
        })
    }

    /// Writes `plan`: additions, then removals.
    pub fn apply(&mut self, plan: &MasqPlan, state: &mut MasqSets) -> Result<(), DatapathError> {
        write(&mut self.pods, map_names::MASQ_PODS, &plan.add_pods)?;
        write(
            &mut self.exclude,
            map_names::MASQ_EXCLUDE,
            &plan.add_exclude,
        )?;
        delete(&mut self.pods, map_names::MASQ_PODS, &plan.delete_pods)?;
        delete(
            &mut self.exclude,
            map_names::MASQ_EXCLUDE,
            &plan.delete_exclude,
        )?;
        state.apply(plan);
        Ok(())
    }
}

/// Masqueraded flows in the pinned SNAT table under `maps_dir` (its egress entries; each has a
/// reply twin).
pub fn snat_flows(maps_dir: &std::path::Path) -> Result<u64, DatapathError> {
    let pin = maps_dir.join(map_names::SNAT);
    let data = MapData::from_pin(&pin).map_err(|e| DatapathError::Map {
        name: map_names::SNAT,
        source: Box::new(e),
    })?;
    let snat: HashMap<MapData, CtKey, SnatValue> =
        HashMap::try_from(aya::maps::Map::LruHashMap(data)).map_err(map_err(map_names::SNAT))?;
    let mut n = 0;
    for entry in &snat {
        let (_, v) = entry.map_err(map_err(map_names::SNAT))?;
        if v.flags & SNAT_FLAG_EGRESS != 0 {
            n += 1;
        }
    }
    Ok(n)
}
