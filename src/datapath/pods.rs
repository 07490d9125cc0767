//! BPF host routing on pods' veths (`--host-routing bpf`, the default; Cilium's "BPF host
//! routing"): `fe_pod_ingress` on the TC ingress of every local pod's host-side veth sends what
//! the pod routes straight out of the device the FIB picks, and the pod-device map tells the
//! north-south ingress which devices lead into a pod (`bpf_redirect_peer`). The veths come from
//! the agent's netlink dump each maintenance round, so a pod created by the CNI plugin gets the
//! program within a second; until then, and whenever the program cannot decide, the node's IP
//! stack routes as before.
//!
//! With `--host-routing legacy` the veths still carry NetworkPolicy: `fe_pod_policy` (the
//! pod's egress policy alone, then the stack routes) on their TC ingress and `fe_pod_egress` on
//! their TC egress, with no pod-device map entry and no overlay hook, so nothing bypasses the
//! stack. Each mode's start removes the other's hooks ([`remove_other_mode_pins`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{LinkOrder, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use ferrite_abi::{FWD_STAT_NEIGH, FWD_STAT_PEER, FWD_STAT_REDIRECT, FWD_STAT_STACK, map_names};
use tracing::info;

use super::detect::PodDevice;
use super::devices::Device;
use super::ladder::PinName;
use super::maputil::{ignore_missing, map_err, take};
use super::{
    DatapathConfig, DatapathError, POD_EGRESS_OBJECT, POD_NETKIT_OBJECT, POD_OBJECT, PolicyMaps,
    TUNNEL_OBJECT, TcBackend, legacy, link,
};

const PROGRAM: &str = "fe_pod_ingress";
/// The same for a pod's netkit device, run in the pod's transmit (`BPF_NETKIT_PEER`).
const NETKIT_PROGRAM: &str = "fe_pod_netkit";
/// `--host-routing legacy`: the egress policy alone on the veth's TC ingress.
const POLICY_PROGRAM: &str = "fe_pod_policy";
const TUNNEL_PROGRAM: &str = "fe_tunnel_ingress";
/// On each pod veth's TC egress: the pod's ingress NetworkPolicy for what the stack delivers.
const EGRESS_PROGRAM: &str = "fe_pod_egress";

/// Packets BPF host routing handled since the maps were created (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdCounters {
    /// Into a local pod's netns (`bpf_redirect_peer`).
    pub to_pod: u64,
    /// Out of a device (`bpf_redirect`).
    pub redirected: u64,
    /// Out of a device whose neighbour was not resolved yet (`bpf_redirect_neigh`).
    pub neigh: u64,
    /// Left to the stack (local delivery, no route, TTL, unresolved pod neighbour).
    pub stack: u64,
}

/// What one [`PodRouting::sync`] must do: veths to attach, and (name, ifindex) to forget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPlan {
    pub attach: Vec<(String, u32)>,
    pub detach: Vec<(String, u32)>,
}

/// The difference between the veths attached and the veths there are. A veth re-created under
/// the same name (a new ifindex) is detached and attached again: its old link is dead.
#[must_use]
pub fn plan(attached: &BTreeMap<String, u32>, wanted: &[(String, u32)]) -> PodPlan {
    let mut p = PodPlan::default();
    for (name, index) in wanted {
        match attached.get(name) {
            Some(i) if i == index => {}
            Some(i) => {
                p.detach.push((name.clone(), *i));
                p.attach.push((name.clone(), *index));
            }
            None => p.attach.push((name.clone(), *index)),
        }
    }
    for (name, index) in attached {
        if !wanted.iter().any(|(n, _)| n == name) {
            p.detach.push((name.clone(), *index));
        }
    }
    p
}

/// The loaded pod program, its maps and the veths it is attached to.
pub struct PodRouting {
    ebpf: Ebpf,
    /// The overlay device's program (its own object: another attach point).
    tunnel_ebpf: Ebpf,
    /// The overlay device it is attached to.
    tunnel: Option<(String, u32)>,
    /// The veths' egress program (its own object: another attach point).
    egress_ebpf: Ebpf,
    /// The netkit devices' host-routing program (its own object: another attach point).
    netkit_ebpf: Ebpf,
    /// The attached devices that are netkit primaries (the rest are veths).
    netkit: BTreeSet<String>,
    /// NetworkPolicy's maps (declared by the pod programs).
    pub policy: PolicyMaps,
    devs: HashMap<MapData, u32, u32>,
    stats: PerCpuArray<MapData, u64>,
    attached: BTreeMap<String, u32>,
    links_dir: PathBuf,
    tc: TcBackend,
    /// BPF host routing (`false`: `--host-routing legacy`, policy only).
    routing: bool,
}

/// One sync's outcome: veths attached and detached, and failures (retried next round).
#[derive(Debug, Default)]
pub struct PodSyncReport {
    pub attached: Vec<String>,
    pub detached: Vec<String>,
    pub errors: Vec<(String, DatapathError)>,
}

impl PodRouting {
    /// Loads the programs with the shared pinned maps and removes the other mode's veth
    /// hooks; attaches nothing ([`Self::sync`] does). `routing`: BPF host routing, else
    /// NetworkPolicy alone.
    pub fn open(cfg: &DatapathConfig, routing: bool) -> Result<Self, DatapathError> {
        let (maps_dir, links_dir) = (cfg.maps_dir(), cfg.links_dir());
        let load = |object: &[u8], program: &'static str| -> Result<Ebpf, DatapathError> {
            let mut ebpf = EbpfLoader::new()
                .default_map_pin_directory(&maps_dir)
                .load(object)
                .map_err(|e| DatapathError::Load {
                    pin_dir: maps_dir.clone(),
                    source: Box::new(e),
                })?;
            super::host::load_tc(&mut ebpf, program)?;
            Ok(ebpf)
        };
        let mut ebpf = load(POD_OBJECT, if routing { PROGRAM } else { POLICY_PROGRAM })?;
        let tunnel_ebpf = load(TUNNEL_OBJECT, TUNNEL_PROGRAM)?;
        let egress_ebpf = load(POD_EGRESS_OBJECT, EGRESS_PROGRAM)?;
        let netkit_ebpf = load(POD_NETKIT_OBJECT, NETKIT_PROGRAM)?;
        let policy = PolicyMaps::take(&mut ebpf)?;
        let devs = take(&mut ebpf, map_names::POD_DEVS)?;
        let stats = take(&mut ebpf, map_names::FWD_STATS)?;
        Ok(Self {
            ebpf,
            tunnel_ebpf,
            tunnel: None,
            egress_ebpf,
            netkit_ebpf,
            netkit: BTreeSet::new(),
            policy,
            devs,
            stats,
            attached: BTreeMap::new(),
            links_dir,
            tc: cfg.tc,
            routing,
        })
    }

    /// The overlay device host routing is attached to.
    #[must_use]
    pub fn tunnel(&self) -> Option<&str> {
        self.tunnel.as_ref().map(|(n, _)| n.as_str())
    }

    /// The veths attached now, by name.
    #[must_use]
    pub fn attached(&self) -> &BTreeMap<String, u32> {
        &self.attached
    }

    /// The attached devices that are netkit primaries.
    pub fn netkit_devices(&self) -> impl Iterator<Item = &String> {
        self.netkit
            .iter()
            .filter(|n| self.attached.contains_key(*n))
    }

    fn pin_path(&self, pin: &PinName) -> PathBuf {
        self.links_dir.join(pin.file_name())
    }

    /// The pod-egress program of this mode and its pin for device `name`: on a veth's TC
    /// ingress, or in a netkit device's pod-side transmit.
    fn ingress_hook(&self, name: &str) -> (&'static str, PinName) {
        if self.routing && self.netkit.contains(name) {
            (NETKIT_PROGRAM, PinName::pod_netkit(name))
        } else if self.routing {
            (PROGRAM, PinName::pod(self.tc, name))
        } else {
            (POLICY_PROGRAM, PinName::pod_policy(self.tc, name))
        }
    }

    fn attach(&mut self, name: &str, ifindex: u32) -> Result<(), DatapathError> {
        let (program, pin) = self.ingress_hook(name);
        if program == NETKIT_PROGRAM {
            let prog = super::host::tc_prog(&mut self.netkit_ebpf, program)?;
            link::attach_netkit_peer_pinned(program, prog, (name, ifindex), &self.links_dir, &pin)?;
        } else {
            let prog = super::host::tc_prog(&mut self.ebpf, program)?;
            attach_hook(
                self.tc,
                program,
                prog,
                (name, ifindex),
                TcAttachType::Ingress,
                &self.links_dir,
                &pin,
            )?;
        }
        let prog = super::host::tc_prog(&mut self.egress_ebpf, EGRESS_PROGRAM)?;
        let pin = PinName::pod_egress(self.tc, name);
        attach_hook(
            self.tc,
            EGRESS_PROGRAM,
            prog,
            (name, ifindex),
            TcAttachType::Egress,
            &self.links_dir,
            &pin,
        )?;
        if !self.routing {
            return Ok(());
        }
        self.devs
            .insert(ifindex, 0, 0)
            .map_err(map_err(map_names::POD_DEVS))
    }

    /// Follows ferrite's overlay device (`tunnels`: it, when it exists): attached when it
    /// appears, re-attached when re-created or its hook is gone, detached when it goes.
    fn sync_tunnel(&mut self, tunnels: &[(String, u32)], report: &mut PodSyncReport) {
        let want = tunnels.first().cloned();
        let intact = self.tunnel == want
            && want.as_ref().is_none_or(|(name, _)| {
                legacy::attached(&self.pin_path(&PinName::tunnel(self.tc, name)))
            });
        if intact {
            return;
        }
        if let Some((old, _)) = self.tunnel.take() {
            let pin = self
                .links_dir
                .join(PinName::tunnel(self.tc, &old).file_name());
            legacy::remove_logged(&pin, "overlay device changed");
        }
        let Some((name, ifindex)) = want else {
            return;
        };
        let result = super::host::tc_prog(&mut self.tunnel_ebpf, TUNNEL_PROGRAM).and_then(|prog| {
            let pin = PinName::tunnel(self.tc, &name);
            attach_hook(
                self.tc,
                TUNNEL_PROGRAM,
                prog,
                (&name, ifindex),
                TcAttachType::Ingress,
                &self.links_dir,
                &pin,
            )
        });
        match result {
            Ok(()) => {
                report.attached.push(name.clone());
                self.tunnel = Some((name, ifindex));
            }
            Err(e) => report.errors.push((name, e)),
        }
    }

    /// Both hooks of veth `name` are in place (their pins, and for legacy TC their filters).
    fn hooks_intact(&self, name: &str) -> bool {
        [
            self.ingress_hook(name).1,
            PinName::pod_egress(self.tc, name),
        ]
        .iter()
        .all(|p| legacy::attached(&self.pin_path(p)))
    }

    fn detach(&mut self, name: &str, ifindex: u32) -> Result<(), DatapathError> {
        ignore_missing(self.devs.remove(&ifindex)).map_err(map_err(map_names::POD_DEVS))?;
        legacy::remove(&self.pin_path(&PinName::pod_egress(self.tc, name)))?;
        legacy::remove(&self.pin_path(&self.ingress_hook(name).1)).map(|_| ())
    }

    /// Attaches to every veth of `wanted` (adopting pinned links of a previous agent), detaches
    /// from veths that are gone, and drops pins and map entries nothing accounts for.
    pub fn sync(&mut self, devices: &[PodDevice], tunnels: &[(String, u32)]) -> PodSyncReport {
        let mut report = PodSyncReport::default();
        let wanted: Vec<(String, u32)> = devices
            .iter()
            .map(|d| (d.name.clone(), d.ifindex))
            .collect();
        if self.routing {
            self.sync_tunnel(tunnels, &mut report);
        }
        // A veth whose hook went (its pin removed by hand, its filter deleted) is attached
        // again below, like a new one: until then its pod's policy is not enforced.
        let broken: Vec<String> = self
            .attached
            .keys()
            .filter(|name| !self.hooks_intact(name))
            .cloned()
            .collect();
        for name in broken {
            tracing::warn!(device = %name, "a pod veth's hook had disappeared; re-attaching");
            self.attached.remove(&name);
        }
        let todo = plan(&self.attached, &wanted);
        for (name, index) in todo.detach {
            self.attached.remove(&name);
            let result = self.detach(&name, index);
            self.netkit.remove(&name);
            match result {
                Ok(()) => report.detached.push(name),
                Err(e) => report.errors.push((name, e)),
            }
        }
        for d in devices.iter().filter(|d| d.netkit) {
            self.netkit.insert(d.name.clone());
        }
        for (name, index) in todo.attach {
            match self.attach(&name, index) {
                Ok(()) => {
                    self.attached.insert(name.clone(), index);
                    report.attached.push(name);
                }
                Err(e) => report.errors.push((name, e)),
            }
        }
        self.remove_strays();
        if !(report.attached.is_empty() && report.detached.is_empty()) {
            info!(attached = ?report.attached, detached = ?report.detached,
                  pods = self.attached.len(), routing = self.routing,
                  "pod veth hooks (host routing and policy)");
        }
        report
    }

    /// Pins of pod veths not attached now (the pod went while no agent ran) and map entries of
    /// devices that are gone.
    fn remove_strays(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.links_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let stray = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(PinName::parse)
                    .is_some_and(|p| {
                        (p.is_pod() && !self.attached.contains_key(p.device()))
                            || (p.is_tunnel()
                                && self.tunnel.as_ref().is_none_or(|(t, _)| t != p.device()))
                    });
                if stray {
                    legacy::remove_logged(&path, "pod veth gone");
                }
            }
        }
        let known: Vec<u32> = self.attached.values().copied().collect();
        let stale: Vec<u32> = self
            .devs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !known.contains(k))
            .collect();
        for k in stale {
            let _ = ignore_missing(self.devs.remove(&k));
        }
    }

    /// The counters, summed over CPUs.
    #[must_use]
    pub fn counters(&self) -> FwdCounters {
        let sum = |slot: u32| -> u64 {
            self.stats
                .get(&slot, 0)
                .map_or(0, |per_cpu| per_cpu.iter().sum())
        };
        FwdCounters {
            to_pod: sum(FWD_STAT_PEER),
            redirected: sum(FWD_STAT_REDIRECT),
            neigh: sum(FWD_STAT_NEIGH),
            stack: sum(FWD_STAT_STACK),
        }
    }
}

/// Attaches (or adopts) `prog` on the TC hook `at` of device `(name, ifindex)`.
fn attach_hook(
    tc: TcBackend,
    program: &'static str,
    prog: &mut aya::programs::SchedClassifier,
    (name, ifindex): (&str, u32),
    at: TcAttachType,
    links_dir: &Path,
    pin: &PinName,
) -> Result<(), DatapathError> {
    let dev = Device {
        name: name.to_owned(),
        ifindex,
        v4: None,
        v6: None,
        addrs: Vec::new(),
    };
    link::attach_tc_hook(
        tc,
        program,
        prog,
        &dev,
        at,
        LinkOrder::default(),
        links_dir,
        pin,
    )
    .map(|_| ())
}

/// Removes the hooks under `links_dir` that belong to the other `--host-routing` mode: with
/// `routing` (bpf) the policy-only veth hooks, without it host routing's veth and overlay
/// hooks. Run before anything loads, so a switched mode never runs both.
pub fn remove_other_mode_pins(links_dir: &Path, routing: bool) {
    for entry in std::fs::read_dir(links_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let other = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(PinName::parse)
            .is_some_and(|p| {
                if routing {
                    p.is_pod_policy()
                } else {
                    p.is_pod_routing() || p.is_tunnel()
                }
            });
        if other {
            legacy::remove_logged(&path, "--host-routing changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
        v.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect()
    }

    fn wanted(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect()
    }

    #[test]
    fn new_veths_attach_gone_ones_detach_and_the_rest_stay() {
        let p = plan(
            &attached(&[("fer1", 10), ("fer2", 11)]),
            &wanted(&[("fer2", 11), ("fer3", 12)]),
        );
        assert_eq!(p.attach, wanted(&[("fer3", 12)]));
        assert_eq!(p.detach, wanted(&[("fer1", 10)]));
        assert_eq!(
            plan(&attached(&[("fer1", 10)]), &wanted(&[("fer1", 10)])),
            PodPlan::default()
        );
    }

    #[test]
    fn a_veth_recreated_under_its_name_is_attached_again() {
        let p = plan(&attached(&[("fer1", 10)]), &wanted(&[("fer1", 20)]));
        assert_eq!(p.detach, wanted(&[("fer1", 10)]));
        assert_eq!(p.attach, wanted(&[("fer1", 20)]));
    }

    #[test]
    fn an_agent_restart_attaches_everything_it_finds() {
        let p = plan(&BTreeMap::new(), &wanted(&[("fer1", 10), ("fer2", 11)]));
        assert_eq!(p.attach.len(), 2);
        assert!(p.detach.is_empty());
    }
}
