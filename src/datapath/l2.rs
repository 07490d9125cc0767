//! The L2 responder: a TC (TCX, first in line) program on each announcing interface, and the
//! map of addresses it answers ARP/NDP for.

use std::collections::BTreeSet;
use std::net::IpAddr;

use aya::maps::{HashMap, MapData};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use ferrite_abi::{L2Key, L2Value, map_names};
use tracing::info;

use super::devices::{Device, device, mac_address};
use super::maputil::{ignore_missing, map_err, take};
use super::{DatapathConfig, DatapathError, L2_OBJECT, ensure_bpffs, link};
use crate::lb::addr::ip_words;

const PROGRAM: &str = "fe_l2_ingress";

/// The responder's heartbeat map, written by its own thread (see [`crate::l2::heartbeat`]).
pub struct LiveBeat(aya::maps::Array<MapData, u64>);

impl LiveBeat {
    /// Records `now_ns` (CLOCK_MONOTONIC, `bpf_ktime_get_ns`'s clock) as the agent's last sign
    /// of life.
    pub fn write(&mut self, now_ns: u64) -> Result<(), DatapathError> {
        self.0
            .set(0, now_ns, 0)
            .map_err(map_err(map_names::L2_LIVE))
    }
}

pub struct L2Responder {
    addrs: HashMap<MapData, L2Key, L2Value>,
    live: Option<LiveBeat>,
    /// What the map holds: (address, ifindex).
    current: BTreeSet<(IpAddr, u32)>,
    interfaces: Vec<(Device, [u8; 6])>,
    ebpf: Ebpf,
    links_dir: std::path::PathBuf,
    tc: super::TcBackend,
}

impl L2Responder {
    pub fn open(cfg: &DatapathConfig) -> Result<Self, DatapathError> {
        ensure_bpffs(&cfg.bpf_root)?;
        let (maps_dir, links_dir) = (cfg.maps_dir(), cfg.links_dir());
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(|e| DatapathError::io("creating", d, e))?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(map_names::MAGLEV, cfg.maglev_entries)
            .load(L2_OBJECT)
            .map_err(|e| DatapathError::Load {
                pin_dir: maps_dir.clone(),
                source: Box::new(e),
            })?;
        let addrs: HashMap<MapData, L2Key, L2Value> = take(&mut ebpf, map_names::L2_ADDRS)?;
        let live: aya::maps::Array<MapData, u64> = take(&mut ebpf, map_names::L2_LIVE)?;
        let program_err = |source| DatapathError::Program {
            name: PROGRAM,
            source: Box::new(source),
        };
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or(DatapathError::MissingProgram { name: PROGRAM })?
            .try_into()
            .map_err(program_err)?;
        prog.load().map_err(program_err)?;
        let mut current = BTreeSet::new();
        for kv in &addrs {
            let (k, _) = kv.map_err(map_err(map_names::L2_ADDRS))?;
            if let Some(ip) = crate::lb::addr::words_ip(k.addr, k.family) {
                current.insert((ip, k.ifindex));
            }
        }
        Ok(Self {
            addrs,
            live: Some(LiveBeat(live)),
            current,
            interfaces: Vec::new(),
            ebpf,
            links_dir,
            tc: cfg.tc,
        })
    }

    /// Attaches the responder to `names` (adopting pinned links), first in the TCX chain (or
    /// at the legacy priority that runs before the north-south filter) so it answers before
    /// anything else looks at the frame. An interface that fails is returned with its error
    /// and left out (the next call retries it); the others are attached.
    ///
    /// An interface deleted and created again under the same name (a VLAN or bridge rebuilt
    /// by ifupdown, a USB NIC replugged) has a new ifindex and nothing attached: the old entry
    /// is dropped and the new device attached, so the responder answers there again.
    pub fn attach(&mut self, names: &[String]) -> Vec<(String, DatapathError)> {
        let mut failed = Vec::new();
        self.interfaces.retain(|(d, _)| {
            let now = ifindex_now(&d.name);
            if now != Some(d.ifindex) {
                info!(interface = %d.name, old = d.ifindex, new = ?now,
                      "interface re-created or gone; the L2 responder attaches again");
            }
            now == Some(d.ifindex)
        });
        for name in names {
            if self.interfaces.iter().any(|(d, _)| &d.name == name) {
                continue;
            }
            if let Err(e) = self.attach_one(name) {
                failed.push((name.clone(), e));
            }
        }
        failed
    }

    /// Whether an attached interface is gone or was re-created since (a new ifindex): the next
    /// [`Self::attach`] attaches again. Cheap (one `if_nametoindex` per interface), for the
    /// agent's 100 ms interface poll, which a fast delete + create would otherwise not notice.
    #[must_use]
    pub fn has_stale_interfaces(&self) -> bool {
        self.interfaces
            .iter()
            .any(|(d, _)| ifindex_now(&d.name) != Some(d.ifindex))
    }

    fn attach_one(&mut self, name: &str) -> Result<(), DatapathError> {
        let program_err = |source| DatapathError::Program {
            name: PROGRAM,
            source: Box::new(source),
        };
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(DatapathError::MissingProgram { name: PROGRAM })?
            .try_into()
            .map_err(program_err)?;
        let dev = device(name)?;
        let mac = mac_address(name)?;
        link::attach_tc_hook(
            self.tc,
            PROGRAM,
            prog,
            &dev,
            TcAttachType::Ingress,
            LinkOrder::first(),
            &self.links_dir,
            &super::ladder::PinName::l2(self.tc, name),
        )?;
        info!(interface = %name, attach = %self.tc, "L2 responder attached");
        self.interfaces.push((dev, mac));
        Ok(())
    }

    /// The heartbeat map, for the heartbeat thread (once). The responder answers nothing
    /// until it is written.
    pub fn take_heartbeat(&mut self) -> Option<LiveBeat> {
        self.live.take()
    }

    /// The MAC of an attached interface.
    pub fn mac_of(&self, name: &str) -> Option<[u8; 6]> {
        self.interfaces
            .iter()
            .find(|(d, _)| d.name == name)
            .map(|(_, m)| *m)
    }

    pub fn ifindex_of(&self, name: &str) -> Option<u32> {
        self.interfaces
            .iter()
            .find(|(d, _)| d.name == name)
            .map(|(d, _)| d.ifindex)
    }

    /// Makes the map answer exactly for `owned` (address, interface name): removals first, so a
    /// lost address stops being answered immediately.
    pub fn set_owned(&mut self, owned: &BTreeSet<(IpAddr, String)>) -> Result<(), DatapathError> {
        let mut wanted = BTreeSet::new();
        for (ip, ifname) in owned {
            if let Some(ifindex) = self.ifindex_of(ifname) {
                wanted.insert((*ip, ifindex));
            }
        }
        let key = |ip: IpAddr, ifindex: u32| {
            let (addr, family) = ip_words(ip);
            L2Key {
                addr,
                ifindex,
                family,
                _pad: [0; 3],
            }
        };
        for (ip, ifindex) in self
            .current
            .difference(&wanted)
            .copied()
            .collect::<Vec<_>>()
        {
            ignore_missing(self.addrs.remove(&key(ip, ifindex)))
                .map_err(map_err(map_names::L2_ADDRS))?;
            self.current.remove(&(ip, ifindex));
        }
        for (ip, ifindex) in wanted
            .difference(&self.current.clone())
            .copied()
            .collect::<Vec<_>>()
        {
            let mac = self
                .interfaces
                .iter()
                .find(|(d, _)| d.ifindex == ifindex)
                .map(|(_, m)| *m)
                .unwrap_or_default();
            self.addrs
                .insert(key(ip, ifindex), L2Value { mac, _pad: [0; 2] }, 0)
                .map_err(map_err(map_names::L2_ADDRS))?;
            self.current.insert((ip, ifindex));
        }
        Ok(())
    }
}

/// The current ifindex of `name` (`None`: no such device now).
fn ifindex_now(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
