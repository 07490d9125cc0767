//! Pinned maps shared by the programs. Names and sizes come from `ferrite_abi` so userspace and
//! kernel agree; the names carry a layout version.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap},
};
use ferrite_abi::{
    AffinityKey, AffinityValue, Backend, RevNatKey, RevNatValue, SlotKey, SvcKey, SvcValue,
    map_sizes,
};

#[map(name = "fe_svc_v1")]
pub static SERVICES: HashMap<SvcKey, SvcValue> = HashMap::pinned(map_sizes::SERVICES, 0);

#[map(name = "fe_slot_v1")]
pub static SLOTS: HashMap<SlotKey, u32> = HashMap::pinned(map_sizes::SLOTS, 0);

#[map(name = "fe_backend_v1")]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(map_sizes::BACKENDS, 0);

#[map(name = "fe_affin_v1")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::pinned(map_sizes::AFFINITY, 0);

#[map(name = "fe_revnat_v1")]
pub static REVNAT: LruHashMap<RevNatKey, RevNatValue> = LruHashMap::pinned(map_sizes::REVNAT, 0);
