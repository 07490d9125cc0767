//! [`PodLab`]: the pod network between nodes, as a k3s cluster with `--flannel-backend=none`
//! has it once ferrite runs.
//!
//! ```text
//!   node1 192.168.70.1  node2 .2  node3 .3          LAN 192.168.70.0/24, fd00:70::/64
//!        \               |        /                  (one bridge); default via the router
//!         +------- lan: br0 -----+------ router .254/.N ---- far: br0 ---- node4 192.168.71.1
//!                                         |                                (another subnet)
//!                                        wan: br0 ---- wan host 203.0.113.2
//! ```
//!
//! Every node runs the shipped agent ([`crate::shipped`]: the DaemonSet's args, paths
//! rewritten) on one `dir:` folder holding the four `Node` objects (PodCIDRs
//! `10.246.N.0/24` + `fd00:246:N::/64`, InternalIPs). The router forwards between its three
//! subnets and has no route to any PodCIDR: pod traffic between node4 and the others only
//! works through ferrite's VXLAN, and pod traffic to the WAN host only comes back when
//! masqueraded. Pods are network namespaces added through the CNI plugin the agent installed,
//! with the conflist the agent wrote, as containerd would ([`cni`]).

pub mod cni;
pub mod containerd;
mod node;

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

pub use cni::CniPod;
pub use node::PodNode;

use crate::addr::Cidr;
use crate::lab::{Lan, enable_forwarding};
use crate::netns::Netns;
use crate::nslab::{NsLabError, WorkDir, io_err};

pub const LAN_V4: &str = "192.168.70.0/24";
pub const LAN_V6: &str = "fd00:70::/64";
pub const FAR_V4: &str = "192.168.71.0/24";
pub const FAR_V6: &str = "fd00:71::/64";
pub const WAN_V4: &str = "203.0.113.0/24";
pub const WAN_V6: &str = "fd00:203::/64";
/// Every node's PodCIDR is inside these.
pub const CLUSTER_V4: &str = "10.246.0.0/16";
pub const CLUSTER_V6: &str = "fd00:246::/48";

/// Shape of a [`PodLab`].
#[derive(Clone, Debug)]
pub struct PodLabConfig {
    /// Name prefix of every netns and cgroup (1–4 of `a-z0-9`).
    pub prefix: String,
    /// Nodes on the LAN with the router.
    pub lan_nodes: usize,
    /// Nodes behind the router on another subnet.
    pub far_nodes: usize,
    /// Appended to every agent's command line (only where a flag is the point of a test).
    pub extra_args: Vec<String>,
    /// `FERRITE_LOG`.
    pub log_level: String,
    /// Run Debian's containerd on every node, as k3s does, with the CNI dirs in its
    /// `config.toml` (the agent detects them there) and a shared L2 key file; pods are then
    /// made over CRI ([`containerd`]).
    pub containerd: bool,
}

impl Default for PodLabConfig {
    fn default() -> Self {
        Self {
            prefix: "pn".into(),
            lan_nodes: 3,
            far_nodes: 1,
            extra_args: Vec::new(),
            log_level: "info".into(),
            containerd: false,
        }
    }
}

/// The lab (see the module docs). Drops pods, then agents, then namespaces.
pub struct PodLab {
    pub nodes: Vec<PodNode>,
    pub wan: Netns,
    pub wan_v4: Ipv4Addr,
    pub wan_v6: Ipv6Addr,
    pub router: Netns,
    pub manifests: PathBuf,
    pub config: PodLabConfig,
    pub ferrite: PathBuf,
    /// The router's and the WAN host's ports (dropping a port deletes its veth).
    _ports: Vec<crate::lab::LanPort>,
    _lans: Vec<Lan>,
    _work: WorkDir,
}

fn v4(c: Cidr) -> Ipv4Addr {
    match c.addr() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("an IPv4 subnet"),
    }
}

fn v6(c: Cidr) -> Ipv6Addr {
    match c.addr() {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => unreachable!("an IPv6 subnet"),
    }
}

fn parse(s: &str) -> Cidr {
    s.parse().expect("valid lab subnet")
}

/// A plain default route via a gateway on the connected subnet (as DHCP would install it).
fn default_route(ns: &Netns, gw: IpAddr) -> Result<(), NsLabError> {
    let family = if gw.is_ipv4() { "-4" } else { "-6" };
    ns.ip_run([
        family,
        "route",
        "replace",
        "default",
        "via",
        &gw.to_string(),
        "dev",
        "eth0",
    ])?;
    Ok(())
}

/// The `Node` object of lab node `index` (1-based), as Kubernetes YAML.
#[must_use]
pub fn node_yaml(name: &str, index: usize, v4: Ipv4Addr, v6: Ipv6Addr) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    \
         kubernetes.io/hostname: {name}\nspec:\n  podCIDR: 10.246.{index}.0/24\n  podCIDRs:\n  \
         - 10.246.{index}.0/24\n  - fd00:246:{index}::/64\nstatus:\n  addresses:\n  - type: \
         InternalIP\n    address: {v4}\n  - type: InternalIP\n    address: {v6}\n  - type: \
         Hostname\n    address: {name}\n"
    );
    y
}

impl PodLab {
    /// Builds the networks, writes the Node objects, starts every agent and waits until each
    /// has applied a snapshot and written its conflist.
    pub fn start(ferrite: &Path, config: PodLabConfig) -> Result<Self, NsLabError> {
        let p = config.prefix.as_str();
        let work = WorkDir::new(p)?;
        let manifests = work.path().join("manifests");
        fs::create_dir_all(&manifests).map_err(io_err("create manifests dir"))?;
        let mut lan = Lan::new(p, parse(LAN_V4), parse(LAN_V6))?;
        let mut far = Lan::new(p, parse(FAR_V4), parse(FAR_V6))?;
        let mut wan_lan = Lan::new(p, parse(WAN_V4), parse(WAN_V6))?;

        let mut nodes = Vec::new();
        let total = config.lan_nodes + config.far_nodes;
        for i in 0..total {
            let ns = Netns::new(p)?;
            let port = if i < config.lan_nodes {
                lan.attach(ns.ns(), crate::nslab::LAN_IFNAME)?
            } else {
                far.attach(ns.ns(), crate::nslab::LAN_IFNAME)?
            };
            port.iface()
                .prepare_ipv6()
                .map_err(crate::lab::LabError::from)?;
            port.iface().up()?;
            nodes.push((ns, port));
        }
        let router = Netns::new(p)?;
        enable_forwarding(router.ns())?;
        let lan_gw = lan.attach(router.ns(), "eth0")?;
        let far_gw = far.attach(router.ns(), "eth1")?;
        let uplink = wan_lan.attach(router.ns(), "eth2")?;
        for port in [&lan_gw, &far_gw, &uplink] {
            port.iface()
                .prepare_ipv6()
                .map_err(crate::lab::LabError::from)?;
            port.iface().up()?;
        }
        let wan = Netns::new(p)?;
        let w = wan_lan.attach(wan.ns(), "eth0")?;
        w.iface()
            .prepare_ipv6()
            .map_err(crate::lab::LabError::from)?;
        w.iface().up()?;
        default_route(&wan, uplink.v4.addr())?;
        default_route(&wan, uplink.v6.addr())?;

        let mut lab_nodes = Vec::new();
        for (i, (ns, port)) in nodes.into_iter().enumerate() {
            let (gw4, gw6) = if i < config.lan_nodes {
                (lan_gw.v4.addr(), lan_gw.v6.addr())
            } else {
                (far_gw.v4.addr(), far_gw.v6.addr())
            };
            default_route(&ns, gw4)?;
            default_route(&ns, gw6)?;
            let name = format!("{p}-node{}", i + 1);
            let yaml = node_yaml(&name, i + 1, v4(port.v4), v6(port.v6));
            fs::write(manifests.join(format!("node-{}.yaml", i + 1)), yaml)
                .map_err(io_err("write a Node manifest"))?;
            lab_nodes.push(PodNode::new(name, i + 1, ns, port, work.path(), p)?);
        }
        let work_dir = work.path().to_owned();
        let mut lab = Self {
            nodes: lab_nodes,
            wan,
            wan_v4: v4(w.v4),
            wan_v6: v6(w.v6),
            router,
            manifests,
            ferrite: ferrite.to_owned(),
            config,
            _ports: vec![lan_gw, far_gw, uplink, w],
            _lans: vec![lan, far, wan_lan],
            _work: work,
        };
        if lab.config.containerd {
            containerd::require_tools()?;
            let image = containerd::build_sandbox_image(&work_dir)?;
            let key = work_dir.join("l2.key");
            crate::l2lab::write_key(&key)?;
            for node in &mut lab.nodes {
                // containerd runs the `loopback` plugin for every sandbox; k3s ships it in its
                // CNI bin dir next to where ferrite installs itself.
                fs::copy(containerd::LOOPBACK_PLUGIN, node.bin_dir.join("loopback")).map_err(
                    io_err(format!(
                        "copy {} (Debian's containernetworking-plugins)",
                        containerd::LOOPBACK_PLUGIN
                    )),
                )?;
                node.containerd = Some(containerd::Containerd::start(
                    &node.ns,
                    &node.dir,
                    &node.conf_dir,
                    &node.bin_dir,
                    &image,
                )?);
                node.l2_key = Some(key.clone());
            }
        }
        for i in 0..lab.nodes.len() {
            lab.start_agent(i)?;
        }
        Ok(lab)
    }

    /// Starts (or restarts onto its pinned state) node `i`'s agent and waits until it is ready.
    pub fn start_agent(&mut self, i: usize) -> Result<(), NsLabError> {
        let source = format!("dir:{}", self.manifests.display());
        let (ferrite, extra, level) = (
            self.ferrite.clone(),
            self.config.extra_args.clone(),
            self.config.log_level.clone(),
        );
        self.nodes[i].start_agent(&ferrite, &source, &extra, &level)
    }

    /// Removes node `i`'s `Node` object from the folder (its agent keeps running).
    pub fn remove_node_object(&self, i: usize) -> Result<(), NsLabError> {
        fs::remove_file(self.manifests.join(format!("node-{}.yaml", i + 1)))
            .map_err(io_err("remove a Node manifest"))
    }

    /// Writes node `i`'s `Node` object (back) into the folder.
    pub fn write_node_object(&self, i: usize) -> Result<(), NsLabError> {
        let n = &self.nodes[i];
        fs::write(
            self.manifests.join(format!("node-{}.yaml", i + 1)),
            node_yaml(&n.name, n.index, n.v4(), n.v6()),
        )
        .map_err(io_err("write a Node manifest"))
    }

    /// Writes a manifest file into the shared folder, atomically (a hidden temporary file
    /// renamed over it), so the agents never read half of it.
    pub fn write_manifest(&self, file: &str, yaml: &str) -> Result<(), NsLabError> {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        fs::write(&tmp, yaml).map_err(io_err(format!("write {}", tmp.display())))?;
        fs::rename(&tmp, self.manifests.join(file)).map_err(io_err(format!("rename to {file}")))
    }
}
