//! The north-south load balancer: TC (TCX) programs on the node's external devices.

use std::path::{Path, PathBuf};

use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use ferrite_abi::map_names;
use tracing::{info, warn};

use super::devices::device;
use super::{DatapathConfig, DatapathError, ExtMaps, HOST_OBJECT, ensure_bpffs, link};

/// North-south settings from the command line.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub devices: Vec<String>,
    /// Maglev table size (prime).
    pub table_size: u32,
    /// Maglev rows: distinct backend sets of external frontends.
    pub rows: u32,
}

pub struct HostLb {
    pub maps: ExtMaps,
    _ebpf: Ebpf,
}

const PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("fe_host_ingress", TcAttachType::Ingress, "ingress"),
    ("fe_host_egress", TcAttachType::Egress, "egress"),
];

/// A pinned Maglev array of another size (a changed `--maglev-table-size`) cannot be reused.
fn drop_mismatched_maglev(maps_dir: &Path, entries: u32) {
    let pin = maps_dir.join(map_names::MAGLEV);
    if let Ok(map) = aya::maps::MapData::from_pin(&pin)
        && let Ok(info) = map.info()
        && info.max_entries() != entries
    {
        warn!(pin = %pin.display(), old = info.max_entries(), new = entries,
              "Maglev table size changed; recreating the table map");
        let _ = std::fs::remove_file(&pin);
    }
}

impl HostLb {
    pub fn open(cfg: &DatapathConfig, host: &HostConfig) -> Result<Self, DatapathError> {
        ensure_bpffs(&cfg.bpf_root)?;
        let (maps_dir, links_dir) = (cfg.maps_dir(), cfg.links_dir());
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(|e| DatapathError::io("creating", d, e))?;
        }
        let entries = cfg.maglev_entries;
        drop_mismatched_maglev(&maps_dir, entries);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(map_names::MAGLEV, entries)
            .override_global("MAGLEV_M", &host.table_size, true)
            .load(HOST_OBJECT)
            .map_err(|e| DatapathError::Load {
                pin_dir: maps_dir.clone(),
                source: Box::new(e),
            })?;
        let mut maps = ExtMaps::take(&mut ebpf, host.table_size)?;
        let devices = host
            .devices
            .iter()
            .map(|d| device(d))
            .collect::<Result<Vec<_>, _>>()?;
        maps.set_devices(&devices)?;

        let mut wanted = Vec::new();
        for (name, attach, dir) in PROGRAMS {
            let program_err = |source| DatapathError::Program {
                name,
                source: Box::new(source),
            };
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram { name })?
                .try_into()
                .map_err(program_err)?;
            prog.load().map_err(program_err)?;
            for dev in &devices {
                let pin = links_dir.join(format!("tcx_{}_{dir}", dev.name));
                link::attach_tcx_pinned(name, prog, &dev.name, attach, LinkOrder::default(), &pin)?;
                wanted.push(pin);
            }
        }
        remove_stale_tcx(&links_dir, &wanted);
        info!(devices = ?host.devices, table_size = host.table_size, "north-south load balancer attached");
        Ok(Self { maps, _ebpf: ebpf })
    }
}

/// TCX links pinned for devices no longer configured are detached.
fn remove_stale_tcx(dir: &Path, wanted: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_tcx = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tcx_"));
        if is_tcx && !wanted.contains(&path) {
            match std::fs::remove_file(&path) {
                Ok(()) => info!(pin = %path.display(), "detached stale TC link"),
                Err(e) => warn!(pin = %path.display(), error = %e, "cannot remove stale TC link"),
            }
        }
    }
}
