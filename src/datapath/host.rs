//! The north-south load balancer: TC (TCX) programs on the node's external devices.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, Xdp};
use aya::{Ebpf, EbpfLoader};
use ferrite_abi::map_names;
use tracing::{info, warn};

use super::devices::Device;
use super::ladder::PinName;
use super::tcnl::Direction;
use super::xdp::{IngressHook, XdpMode};
use super::{
    DatapathConfig, DatapathError, ExtMaps, HOST_OBJECT, TcBackend, XDP_OBJECT, ensure_bpffs,
    legacy, link,
};

/// North-south settings from the command line.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// `--devices`; `None`: detected (see [`super::detect`]).
    pub devices: Option<Vec<String>>,
    /// Maglev table size (prime).
    pub table_size: u32,
    /// Maglev rows: distinct backend sets of external frontends.
    pub rows: u32,
    /// Where the ingress translation runs (`--xdp`).
    pub xdp: XdpMode,
    /// BPF host routing on pods' veths (`--host-routing bpf`; see [`super::pods`]).
    pub host_routing: bool,
}

/// The loaded north-south programs and the devices they are attached to; [`HostLb::sync`] moves
/// them to another set of devices (detected devices change at runtime).
pub struct HostLb {
    pub maps: ExtMaps,
    /// The masquerade's maps (its programs are these same TC/XDP programs).
    pub masq: super::MasqMaps,
    /// BPF host routing on pods' veths; `None` when off or when its program did not load.
    pub pods: Option<super::PodRouting>,
    /// `--host-routing bpf` was asked for.
    pub host_routing: bool,
    /// The hook each attached device's ingress translation runs in, by device name.
    pub ingress: Vec<(String, IngressHook)>,
    /// The devices attached now, with the addresses last published.
    devices: Vec<Device>,
    links_dir: PathBuf,
    mode: XdpMode,
    tc: TcBackend,
    ebpf: Ebpf,
    xdp: Option<XdpPart>,
}

/// What one [`HostLb::sync`] changed, and what failed (retried on the next sync).
#[derive(Debug, Default)]
pub struct SyncReport {
    pub attached: Vec<String>,
    pub detached: Vec<String>,
    /// Devices whose pinned link had disappeared (e.g. its pin was removed) and was re-attached.
    pub repaired: Vec<String>,
    pub readdressed: Vec<String>,
    pub errors: Vec<(String, DatapathError)>,
}

impl SyncReport {
    #[must_use]
    pub fn changed(&self) -> bool {
        !(self.attached.is_empty()
            && self.detached.is_empty()
            && self.repaired.is_empty()
            && self.readdressed.is_empty())
    }
}

const INGRESS: &str = "fe_host_ingress";
const EGRESS: &str = "fe_host_egress";
const XDP_INGRESS: &str = "fe_xdp_ingress";

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

fn loader<'a>(maps_dir: &'a Path, entries: u32, table_size: &'a u32) -> EbpfLoader<'a> {
    let mut l = EbpfLoader::new();
    l.default_map_pin_directory(maps_dir)
        .map_max_entries(map_names::MAGLEV, entries)
        .override_global("MAGLEV_M", table_size, true);
    l
}

/// `--host-routing legacy`: a previous agent's pod-device map goes before the host programs
/// load (they then create it empty, so nothing is sent into a pod past the stack).
fn forget_pod_devices(maps_dir: &Path) {
    let map = maps_dir.join(map_names::POD_DEVS);
    if map.exists() {
        match std::fs::remove_file(&map) {
            Ok(()) => info!(pin = %map.display(), "--host-routing legacy: pod-device map removed"),
            Err(e) => warn!(pin = %map.display(), error = %e, "cannot remove the pod-device map"),
        }
    }
}

/// The TC classifier `name` of `ebpf`.
pub(super) fn tc_prog<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?
        .try_into()
        .map_err(|source| DatapathError::Program {
            name,
            source: Box::new(source),
        })
}

pub(super) fn load_tc(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DatapathError> {
    tc_prog(ebpf, name)?
        .load()
        .map_err(|source| DatapathError::Program {
            name,
            source: Box::new(source),
        })
}

fn egress_pin(tc: TcBackend, dev: &str) -> PinName {
    PinName::host(tc, dev, Direction::Egress)
}

impl HostLb {
    /// Loads the programs and their pinned maps; attaches nothing ([`Self::sync`] does).
    pub fn open(cfg: &DatapathConfig, host: &HostConfig) -> Result<Self, DatapathError> {
        ensure_bpffs(&cfg.bpf_root)?;
        let (maps_dir, links_dir) = (cfg.maps_dir(), cfg.links_dir());
        for d in [&maps_dir, &links_dir] {
            std::fs::create_dir_all(d).map_err(|e| DatapathError::io("creating", d, e))?;
        }
        let entries = cfg.maglev_entries;
        drop_mismatched_maglev(&maps_dir, entries);
        super::pods::remove_other_mode_pins(&links_dir, host.host_routing);
        if !host.host_routing {
            forget_pod_devices(&maps_dir);
        }
        let mut ebpf = loader(&maps_dir, entries, &host.table_size)
            .load(HOST_OBJECT)
            .map_err(|e| DatapathError::Load {
                pin_dir: maps_dir.clone(),
                source: Box::new(e),
            })?;
        let maps = ExtMaps::take(&mut ebpf, host.table_size)?;
        let masq = super::MasqMaps::take(&mut ebpf)?;
        load_tc(&mut ebpf, EGRESS)?;
        load_tc(&mut ebpf, INGRESS)?;
        let xdp = if host.xdp == XdpMode::Off {
            None
        } else if !cfg.features.xdp {
            warn!(mode = %host.xdp, "this kernel lacks {} (Linux {}+): {}",
                  super::probe::Feature::XdpLoadBytes.name(),
                  super::probe::Feature::XdpLoadBytes.since(),
                  super::probe::Feature::XdpLoadBytes.without());
            None
        } else {
            match XdpPart::load(&maps_dir, entries, host.table_size) {
                Ok(part) => Some(part),
                Err(e) => {
                    warn!(error = %e, mode = %host.xdp, "XDP program unavailable; ingress stays on TC");
                    None
                }
            }
        };
        let pods = super::PodRouting::open(cfg, host.host_routing)
            .inspect_err(|e| {
                warn!(error = %e, host_routing = host.host_routing,
                      "pod veth programs unavailable: the stack routes pod traffic and NetworkPolicy is not enforced");
            })
            .ok();
        Ok(Self {
            maps,
            masq,
            pods,
            host_routing: host.host_routing,
            ingress: Vec::new(),
            devices: Vec::new(),
            links_dir,
            mode: host.xdp,
            tc: cfg.tc,
            ebpf,
            xdp,
        })
    }

    /// The devices attached now.
    #[must_use]
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The pins that should exist for `dev` (egress, and its ingress hook once chosen).
    fn pins_of(&self, dev: &str) -> Vec<PathBuf> {
        let mut pins = vec![self.links_dir.join(egress_pin(self.tc, dev).file_name())];
        if let Some((_, hook)) = self.ingress.iter().find(|(d, _)| d == dev) {
            pins.push(self.links_dir.join(hook.pin_name(dev, self.tc)));
        }
        pins
    }

    /// Pins of the attached devices whose hook is gone (a removed link pin detaches its link;
    /// a legacy filter or XDP program taken off the device leaves its program pin behind).
    #[must_use]
    pub fn missing_pins(&self) -> Vec<PathBuf> {
        self.devices
            .iter()
            .flat_map(|d| self.pins_of(&d.name))
            .filter(|p| !legacy::attached(p))
            .collect()
    }

    fn attach(&mut self, dev: &Device) -> Result<IngressHook, DatapathError> {
        link::attach_tc_hook(
            self.tc,
            EGRESS,
            tc_prog(&mut self.ebpf, EGRESS)?,
            dev,
            TcAttachType::Egress,
            LinkOrder::default(),
            &self.links_dir,
            &egress_pin(self.tc, &dev.name),
        )?;
        attach_ingress(
            &mut self.ebpf,
            self.xdp.as_mut(),
            self.mode,
            dev,
            &self.links_dir,
            self.tc,
        )
    }

    /// Attaches to `wanted` (adopting pinned links, re-attaching any whose pin is gone),
    /// detaches from devices no longer wanted, and publishes the devices' addresses. A device
    /// that fails is reported and left out (the next sync retries it).
    pub fn sync(&mut self, wanted: &[Device]) -> SyncReport {
        let mut report = SyncReport::default();
        let mut now = Vec::new();
        for dev in wanted {
            let before = self
                .devices
                .iter()
                .find(|d| d.name == dev.name && d.ifindex == dev.ifindex)
                .cloned();
            let intact =
                before.is_some() && self.pins_of(&dev.name).iter().all(|p| legacy::attached(p));
            if !intact {
                // A device re-created under the same name: its old pins hold dead links.
                if before.is_none()
                    && let Some(old) = self.devices.iter().find(|d| d.name == dev.name)
                    && old.ifindex != dev.ifindex
                {
                    for pin in self.pins_of(&old.name) {
                        legacy::remove_logged(&pin, "device re-created");
                    }
                }
                match self.attach(dev) {
                    Ok(hook) => {
                        self.ingress.retain(|(d, _)| d != &dev.name);
                        self.ingress.push((dev.name.clone(), hook));
                        if before.is_some() {
                            report.repaired.push(dev.name.clone());
                        } else {
                            report.attached.push(dev.name.clone());
                        }
                    }
                    Err(e) => {
                        report.errors.push((dev.name.clone(), e));
                        continue;
                    }
                }
            } else if before.as_ref().is_some_and(|b| b.addrs != dev.addrs) {
                report.readdressed.push(dev.name.clone());
            }
            now.push(dev.clone());
        }
        for old in &self.devices {
            if !now.iter().any(|d| d.name == old.name) {
                report.detached.push(old.name.clone());
            }
        }
        self.ingress
            .retain(|(d, _)| now.iter().any(|dev| &dev.name == d));
        self.devices = now;
        if let Err(e) = self.maps.set_devices(&self.devices) {
            report.errors.push(("device maps".into(), e));
        }
        let keep: Vec<PathBuf> = self
            .devices
            .iter()
            .flat_map(|d| self.pins_of(&d.name))
            .collect();
        remove_stale(&self.links_dir, &keep);
        if report.changed() {
            info!(devices = ?self.devices.iter().map(|d| &d.name).collect::<Vec<_>>(),
                  attached = ?report.attached, detached = ?report.detached,
                  repaired = ?report.repaired, readdressed = ?report.readdressed,
                  ingress = ?self.ingress.iter().map(|(d, h)| format!("{d}:{h}")).collect::<Vec<_>>(),
                  "north-south devices");
        }
        report
    }
}

/// The XDP object: its program loaded, its device map.
struct XdpPart {
    ebpf: Ebpf,
    devs: aya::maps::HashMap<aya::maps::MapData, u32, ferrite_abi::XdpDev>,
}

impl XdpPart {
    fn load(maps_dir: &Path, entries: u32, table_size: u32) -> Result<Self, DatapathError> {
        let mut ebpf = loader(maps_dir, entries, &table_size)
            .load(XDP_OBJECT)
            .map_err(|e| DatapathError::Load {
                pin_dir: maps_dir.to_owned(),
                source: Box::new(e),
            })?;
        let name = XDP_INGRESS;
        let program_err = |source| DatapathError::Program {
            name,
            source: Box::new(source),
        };
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(program_err)?;
        prog.load().map_err(program_err)?;
        let map_err = |source| DatapathError::Map {
            name: map_names::XDP_DEVS,
            source: Box::new(source),
        };
        let devs = ebpf
            .take_map(map_names::XDP_DEVS)
            .ok_or(DatapathError::MissingMap {
                name: map_names::XDP_DEVS,
            })?
            .try_into()
            .map_err(map_err)?;
        Ok(Self { ebpf, devs })
    }

    /// Describes `dev` to the program, then attaches (or adopts) the XDP link in `hook`'s mode.
    fn attach(
        &mut self,
        dev: &Device,
        hook: IngressHook,
        pin: &Path,
        tc: TcBackend,
    ) -> Result<(), String> {
        let mac = super::devices::mac_address(&dev.name).map_err(|e| e.to_string())?;
        let mut flags = 0;
        if hook == IngressHook::XdpGeneric {
            flags |= ferrite_abi::XDP_DEV_GENERIC;
        } else if super::xdp::driver(&dev.name).is_ok_and(|d| super::xdp::native_tx_capable(&d)) {
            flags |= ferrite_abi::XDP_DEV_TX;
        }
        self.devs
            .insert(dev.ifindex, ferrite_abi::XdpDev { mac, flags }, 0)
            .map_err(|e| format!("writing {}: {e}", map_names::XDP_DEVS))?;
        // Translated packets XDP cannot send itself go up the stack, SNATed ones with this
        // node's address as their source: IPv4 drops those as martians unless accept_local.
        let sysctl = format!("/proc/sys/net/ipv4/conf/{}/accept_local", dev.name);
        if !std::fs::read_to_string(&sysctl).is_ok_and(|v| v.trim() == "1") {
            std::fs::write(&sysctl, "1").map_err(|e| format!("setting {sysctl}: {e}"))?;
            info!(device = %dev.name, "accept_local=1: XDP hands SNATed packets to the stack");
        }
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(XDP_INGRESS)
            .and_then(|p| p.try_into().ok())
            .ok_or("XDP program missing")?;
        let fd = prog
            .fd()
            .map_err(|e| e.to_string())?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?;
        if tc == TcBackend::Legacy {
            legacy::attach_xdp(fd.as_fd(), dev.ifindex, pin)
                .map_err(|e| format!("attaching in {hook} mode over netlink: {e}"))?;
            info!(program = XDP_INGRESS, device = %dev.name, mode = %hook, pin = %pin.display(),
                  "attached over netlink (legacy)");
            return Ok(());
        }
        if link::adopt(XDP_INGRESS, fd.as_fd(), pin).map_err(|e| e.to_string())? {
            return Ok(());
        }
        let link = super::xdp::link_create(fd.as_fd(), dev.ifindex, hook)
            .map_err(|e| format!("attaching in {hook} mode: {e}"))?;
        super::link::obj_pin(link.as_fd(), pin)
            .map_err(|e| format!("pinning {}: {e}", pin.display()))?;
        info!(program = XDP_INGRESS, device = %dev.name, mode = %hook, pin = %pin.display(), "attached and pinned");
        Ok(())
    }
}

/// Adopts or attaches the TC ingress translator of `dev`.
fn attach_tc_ingress(
    ebpf: &mut Ebpf,
    dev: &Device,
    links_dir: &Path,
    tc: TcBackend,
) -> Result<(), DatapathError> {
    link::attach_tc_hook(
        tc,
        INGRESS,
        tc_prog(ebpf, INGRESS)?,
        dev,
        TcAttachType::Ingress,
        LinkOrder::default(),
        links_dir,
        &IngressHook::Tc.pin(&dev.name, tc),
    )?;
    Ok(())
}

/// Puts `dev`'s ingress translation on the first hook of the `mode` plan that works; TC is the
/// last resort (one warn line says why XDP was not used). The other hooks' pins are removed only
/// once the chosen one is in place, so there is always exactly one translator, never none.
fn attach_ingress(
    ebpf: &mut Ebpf,
    mut xdp: Option<&mut XdpPart>,
    mode: XdpMode,
    dev: &Device,
    links_dir: &Path,
    tc: TcBackend,
) -> Result<IngressHook, DatapathError> {
    let mut failures = Vec::new();
    let mut chosen = IngressHook::Tc;
    for &hook in super::xdp::plan(mode) {
        if hook == IngressHook::Tc {
            break;
        }
        let Some(part) = xdp.as_deref_mut() else {
            failures.push(format!("{hook}: the XDP program did not load"));
            continue;
        };
        // Native and generic XDP cannot share a device: bridge a mode switch with TC.
        let other = if hook == IngressHook::XdpNative {
            IngressHook::XdpGeneric
        } else {
            IngressHook::XdpNative
        };
        let other_pin = links_dir.join(other.pin_name(&dev.name, tc));
        let switched = other_pin.exists();
        if switched {
            attach_tc_ingress(ebpf, dev, links_dir, tc)?;
            legacy::remove(&other_pin)?;
            info!(device = %dev.name, from = %other, to = %hook, "switching XDP mode through TC");
        }
        match attach_xdp(part, dev, hook, links_dir, switched, tc) {
            Ok(()) => {
                chosen = hook;
                break;
            }
            Err(e) => failures.push(e),
        }
    }
    if chosen == IngressHook::Tc {
        if !failures.is_empty() {
            warn!(device = %dev.name, requested = %mode, reasons = %failures.join("; "),
                  "XDP attach failed; ingress translation stays on TC");
        }
        attach_tc_ingress(ebpf, dev, links_dir, tc)?;
    }
    for name in super::xdp::other_pins(&dev.name, chosen, tc) {
        let pin = links_dir.join(name);
        if legacy::remove(&pin)? {
            info!(pin = %pin.display(), device = %dev.name, now = %chosen,
                  "detached the previous ingress hook");
        }
    }
    Ok(chosen)
}

/// Attaches `hook`. Right after the other XDP mode's pin was removed its link may still hold
/// the device's XDP slot for a moment (the kernel releases a link from a workqueue once its
/// last reference goes), so `EEXIST` is retried for up to 200 ms then.
fn attach_xdp(
    part: &mut XdpPart,
    dev: &Device,
    hook: IngressHook,
    links_dir: &Path,
    switched: bool,
    tc: TcBackend,
) -> Result<(), String> {
    let pin = links_dir.join(hook.pin_name(&dev.name, tc));
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        match part.attach(dev, hook, &pin, tc) {
            Err(e)
                if switched
                    && e.contains("File exists")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// TC and XDP links pinned for devices no longer configured are detached.
fn remove_stale(dir: &Path, wanted: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(PinName::parse)
            .is_some_and(|p| {
                !p.is_pod()
                    && !p.is_tunnel()
                    && !matches!(p, PinName::TcxL2 { .. } | PinName::LegacyL2 { .. })
            });
        if ours && !wanted.contains(&path) {
            legacy::remove_logged(&path, "stale north-south hook");
        }
    }
}
