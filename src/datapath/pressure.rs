//! How full each pinned hash map is (`ferrite_bpf_map_pressure`, Cilium's `bpf_map_pressure`):
//! the kernel's `max_entries` and the entries counted with `BPF_MAP_GET_NEXT_KEY`, read-only.
//! Arrays are always full by construction and are not reported.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{MapInfo, MapType};
use ferrite_abi::map_names;

use super::DatapathError;

/// Every map the datapath pins (arrays are skipped when read).
const PINNED: [&str; 16] = [
    map_names::SERVICES,
    map_names::SLOTS,
    map_names::BACKENDS,
    map_names::AFFINITY,
    map_names::REVNAT,
    map_names::EXTERNAL,
    map_names::CONNTRACK,
    map_names::DEVICES,
    map_names::NODE_ADDRS,
    map_names::SOURCE_RANGES,
    map_names::XDP_DEVS,
    map_names::TUNNELS,
    map_names::L2_ADDRS,
    map_names::SNAT,
    map_names::MASQ_PODS,
    map_names::MASQ_EXCLUDE,
];

/// Entries and capacity of one pinned map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: u64,
    pub max_entries: u32,
}

/// The fill of every pinned hash-like map present under `maps_dir` (a map not pinned, e.g.
/// north-south maps with `--devices none`, is left out).
pub fn map_fill(maps_dir: &Path) -> Result<Vec<MapFill>, DatapathError> {
    let mut out = Vec::new();
    for name in PINNED {
        let pin = maps_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let err = |e| DatapathError::Map {
            name,
            source: Box::new(e),
        };
        let info = MapInfo::from_pin(&pin).map_err(err)?;
        if matches!(
            info.map_type(),
            Ok(MapType::Array | MapType::PerCpuArray | MapType::ProgramArray)
        ) {
            continue;
        }
        let fd = info.fd().map_err(err)?;
        let entries = count_keys(fd.as_fd().as_raw_fd(), info.key_size())
            .map_err(|e| DatapathError::io("counting the keys of", &pin, e))?;
        out.push(MapFill {
            name,
            entries,
            max_entries: info.max_entries(),
        });
    }
    Ok(out)
}

/// `union bpf_attr` for `BPF_MAP_GET_NEXT_KEY`.
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// Walks the keys of the map behind `fd` (keys of `key_size` bytes) and counts them.
fn count_keys(fd: i32, key_size: u32) -> std::io::Result<u64> {
    let size = key_size as usize;
    let mut key = vec![0u8; size.max(1)];
    let mut next = vec![0u8; size.max(1)];
    let mut n = 0u64;
    let mut first = true;
    loop {
        let attr = NextKeyAttr {
            map_fd: u32::try_from(fd)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?,
            _pad: 0,
            // A null key asks for the first key.
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: attr is a valid bpf_attr prefix for this command; both buffers hold key_size
        // bytes and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                std::ptr::from_ref(&attr),
                size_of::<NextKeyAttr>(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENOENT) {
                Ok(n)
            } else {
                Err(e)
            };
        }
        n += 1;
        first = false;
        std::mem::swap(&mut key, &mut next);
    }
}
