//! Tells the north-south datapath which device is the overlay (`fe_tunnel_v1`): a backend the
//! FIB reaches through it lives on another node, so LoadBalancer/NodePort flows to it are
//! SNATed to the node and their replies come back through this node's translation.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use ferrite_abi::map_names;

/// Makes the map hold exactly `ifindex` (or nothing); `Ok(false)` when the map is not pinned
/// (no north-south datapath on this node). Idempotent: nothing is written when already right.
pub fn sync(maps_dir: &Path, ifindex: Option<u32>) -> Result<bool, String> {
    let pin = maps_dir.join(map_names::TUNNELS);
    if !pin.exists() {
        return Ok(false);
    }
    let data = MapData::from_pin(&pin).map_err(|e| format!("opening {}: {e}", pin.display()))?;
    let mut map: HashMap<MapData, u32, u32> =
        HashMap::try_from(Map::HashMap(data)).map_err(|e| format!("{}: {e}", pin.display()))?;
    let keys: Vec<u32> = map.keys().filter_map(Result::ok).collect();
    for k in keys.iter().filter(|k| Some(**k) != ifindex) {
        map.remove(k)
            .map_err(|e| format!("removing {k} from {}: {e}", pin.display()))?;
    }
    if let Some(i) = ifindex
        && !keys.contains(&i)
    {
        map.insert(i, 1, 0)
            .map_err(|e| format!("writing {i} to {}: {e}", pin.display()))?;
    }
    Ok(true)
}
