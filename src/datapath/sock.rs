//! The socket-layer load balancer: eight cgroup sock_addr programs sharing the LB maps.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::{Ebpf, EbpfLoader, programs::CgroupSockAddr};
use tracing::{info, warn};

use super::{DatapathConfig, DatapathError, LbMaps, SOCK_OBJECT, ensure_bpffs, link};

/// Program names in the object, one per hook.
pub const PROGRAMS: [&str; 8] = [
    "fe_connect4",
    "fe_connect6",
    "fe_sendmsg4",
    "fe_sendmsg6",
    "fe_recvmsg4",
    "fe_recvmsg6",
    "fe_getpeername4",
    "fe_getpeername6",
];

/// The loaded socket LB. Dropping it leaves everything attached (links and maps are pinned).
pub struct SockLb {
    pub maps: LbMaps,
    /// Whether the links were adopted from a previous agent rather than created.
    pub adopted: bool,
    /// The link pins, one per program, in [`PROGRAMS`] order.
    pins: Vec<PathBuf>,
    cgroup: PathBuf,
    ebpf: Ebpf,
}

impl SockLb {
    /// Loads the programs with their maps pinned under `cfg.bpf_root`, and attaches them to
    /// `cfg.cgroup` (adopting and upgrading links a previous agent pinned).
    pub fn open(cfg: &DatapathConfig) -> Result<Self, DatapathError> {
        ensure_bpffs(&cfg.bpf_root)?;
        let (maps_dir, links_dir) = (cfg.maps_dir(), cfg.links_dir());
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(|e| DatapathError::io("creating", d, e))?;
        }
        let have_set_retval = u8::from(cfg.features.set_retval);
        if !cfg.features.set_retval {
            warn!("{}", super::probe::Feature::SetRetval.without());
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(ferrite_abi::map_names::MAGLEV, cfg.maglev_entries)
            .override_global("HAVE_SET_RETVAL", &have_set_retval, true)
            .load(SOCK_OBJECT)
            .map_err(|e| DatapathError::Load {
                pin_dir: maps_dir.clone(),
                source: Box::new(e),
            })?;
        let maps = LbMaps::take(&mut ebpf)?;

        let cgroup = std::fs::File::open(&cfg.cgroup)
            .map_err(|e| DatapathError::io("opening cgroup", &cfg.cgroup, e))?;
        let cg_ino = cgroup
            .metadata()
            .map_err(|e| DatapathError::io("stat of cgroup", &cfg.cgroup, e))?
            .ino();
        let mut adopted = 0;
        let mut wanted = Vec::new();
        for name in PROGRAMS {
            let program_err = |source| DatapathError::Program {
                name,
                source: Box::new(source),
            };
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram { name })?
                .try_into()
                .map_err(program_err)?;
            prog.load().map_err(program_err)?;
            let pin = links_dir.join(link_pin_name(cg_ino, name));
            if link::attach_pinned(name, prog, cgroup.as_fd(), &pin)? {
                adopted += 1;
            }
            wanted.push(pin);
        }
        remove_stale_links(&links_dir, &wanted);
        info!(cgroup = %cfg.cgroup.display(), bpf_root = %cfg.bpf_root.display(), adopted,
              "socket load balancer attached");
        Ok(Self {
            maps,
            adopted: adopted == PROGRAMS.len(),
            pins: wanted,
            cgroup: cfg.cgroup.clone(),
            ebpf,
        })
    }

    /// Link pins that are gone (removing a pin detaches its link).
    #[must_use]
    pub fn missing_pins(&self) -> Vec<PathBuf> {
        self.pins.iter().filter(|p| !p.exists()).cloned().collect()
    }

    /// Re-attaches every program whose link pin is gone; returns the pins re-created.
    pub fn repair(&mut self) -> Result<Vec<PathBuf>, DatapathError> {
        let missing = self.missing_pins();
        if missing.is_empty() {
            return Ok(missing);
        }
        let cgroup = std::fs::File::open(&self.cgroup)
            .map_err(|e| DatapathError::io("opening cgroup", &self.cgroup, e))?;
        for (name, pin) in PROGRAMS.iter().zip(&self.pins) {
            if pin.exists() {
                continue;
            }
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram { name })?
                .try_into()
                .map_err(|source| DatapathError::Program {
                    name,
                    source: Box::new(source),
                })?;
            link::attach_pinned(name, prog, cgroup.as_fd(), pin)?;
            warn!(program = name, pin = %pin.display(), "link pin was gone; re-attached");
        }
        Ok(missing)
    }
}

/// Link pins carry the cgroup's inode so a changed `--cgroup` never adopts a foreign attachment.
fn link_pin_name(cgroup_ino: u64, program: &str) -> String {
    format!("cg{cgroup_ino}_{program}")
}

/// Links pinned for another cgroup or a program that no longer exists are detached.
fn remove_stale_links(dir: &Path, wanted: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_sock = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("cg"));
        if is_sock && !wanted.contains(&path) {
            match std::fs::remove_file(&path) {
                Ok(()) => info!(pin = %path.display(), "detached stale link"),
                Err(e) => warn!(pin = %path.display(), error = %e, "cannot remove stale link"),
            }
        }
    }
}

/// Removes every link and map ferrite pinned under `cfg.bpf_root`: links first (detaching the
/// programs), then maps, then the directories. Keeps going past errors and reports them all.
pub fn cleanup(cfg: &DatapathConfig) -> (Vec<PathBuf>, Vec<DatapathError>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for dir in [cfg.links_dir(), cfg.maps_dir()] {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(DatapathError::io("listing", &dir, e));
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // A legacy filter or netlink XDP program stays on its device without its pin.
            let result = if super::is_netlink_pin(&path) {
                super::legacy::remove(&path).map(|_| ())
            } else {
                std::fs::remove_file(&path).map_err(|e| DatapathError::io("removing", &path, e))
            };
            match result {
                Ok(()) => removed.push(path),
                Err(e) => errors.push(e),
            }
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            errors.push(DatapathError::io("removing", &dir, e));
        }
    }
    match std::fs::remove_dir(&cfg.bpf_root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(DatapathError::io("removing", &cfg.bpf_root, e)),
    }
    (removed, errors)
}
