//! Installing the plugin: once its datapath is ready the agent writes the node state file,
//! copies itself into the CNI bin dir as `ferrite`, writes `05-ferrite.conflist` into the CNI
//! conf dir (k3s's paths when k3s is there, else `/etc/cni/net.d` + `/opt/cni/bin`), and
//! reclaims addresses leaked while it was down.

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{error, info};

use super::cidr::IpNet;
use super::config::{ConfigError, PodDeviceKind, parse_cidrs};
use super::containerd::{self, CniDirs, ContainerdError};
use super::node_state::{self, NodeState, NodeStateError};
use super::reclaim::{self, ReclaimError};
use crate::model::Snapshot;

pub const CONFLIST_NAME: &str = "05-ferrite.conflist";
pub const NETWORK_NAME: &str = "ferrite";
pub const PLUGIN_NAME: &str = "ferrite";
pub const K3S_AGENT_DIR: &str = "/var/lib/rancher/k3s/agent";
pub const K3S_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";
pub const K3S_DATA_DIR: &str = "/var/lib/rancher/k3s/data/current";
pub const K3S_BIN_DIR: &str = "/var/lib/rancher/k3s/data/current/bin";
/// The bin dir k3s's containerd config names since k3s PR #10868.
pub const K3S_STATIC_BIN_DIR: &str = "/var/lib/rancher/k3s/data/cni";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";

/// Reference plugins chained after ferrite when the bin dir has them (k3s ships both).
const CHAINED: [&str; 2] = ["portmap", "bandwidth"];

/// Everything `install` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallConfig {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The agent's `--state-dir`: `node.json` and the IPAM stores (`cni/`) live there.
    pub state_dir: PathBuf,
    pub api_socket: PathBuf,
    pub node_name: String,
    /// From `--pod-cidr`; empty when the Node object will say.
    pub pod_cidrs: Vec<IpNet>,
    pub mtu: Option<u32>,
    /// The device pair ADD builds (`podDevice`).
    pub pod_device: PodDeviceKind,
    /// The binary to install (the running agent's).
    pub exe: PathBuf,
}

/// The agent's CNI options, before deciding whether to install at all.
#[derive(Clone, Debug, Default)]
pub struct AgentCniOptions {
    pub kube_mode: bool,
    /// `--cni-conf-dir`; `none` turns installation off.
    pub conf_dir: Option<PathBuf>,
    pub bin_dir: Option<PathBuf>,
    /// `--pod-cidr`, comma separated.
    pub pod_cidr: Option<String>,
    pub state_dir: PathBuf,
    pub api_socket: PathBuf,
    pub node_name: String,
    /// `--pod-device`, resolved against `--host-routing`.
    pub pod_device: PodDeviceKind,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("--pod-cidr: {0}")]
    PodCidr(#[source] ConfigError),
    #[error("finding the running binary: {0}")]
    Exe(#[source] io::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error(transparent)]
    NodeState(#[from] NodeStateError),
    #[error("reclaiming leaked addresses: {0}")]
    Reclaim(#[from] ReclaimError),
}

/// What `install` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallReport {
    pub conflist: PathBuf,
    pub binary: PathBuf,
    pub node_state: Option<PathBuf>,
    pub chained: Vec<String>,
    pub reclaimed: usize,
}

impl InstallConfig {
    #[must_use]
    pub fn node_state_path(&self) -> PathBuf {
        self.state_dir.join(node_state::FILE_NAME)
    }

    #[must_use]
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("cni")
    }

    /// Decides from the agent's flags: `None` with `--cni-conf-dir none`, and in `dir:` mode
    /// unless `--pod-cidr` or `--cni-conf-dir` asks for a pod network or the node is a k3s node
    /// (k3s's containerd config exists: its runtime needs the plugin); standalone routers and
    /// demos have no containers to network.
    pub fn for_agent(opts: AgentCniOptions) -> Result<Option<Self>, InstallError> {
        if opts.conf_dir.as_deref() == Some(Path::new("none")) {
            return Ok(None);
        }
        let containerd = if opts.conf_dir.is_some() && opts.bin_dir.is_some() {
            None
        } else {
            containerd::read(Path::new(containerd::K3S_CONTAINERD_CONFIG))?
        };
        if !opts.kube_mode
            && opts.conf_dir.is_none()
            && opts.pod_cidr.is_none()
            && containerd.is_none()
        {
            return Ok(None);
        }
        let pod_cidrs = match &opts.pod_cidr {
            Some(list) => parse_cidrs(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
            .map_err(InstallError::PodCidr)?,
            None => Vec::new(),
        };
        let (conf_dir, bin_dir) =
            detect_dirs(opts.conf_dir, opts.bin_dir, containerd, Path::is_dir);
        Ok(Some(Self {
            conf_dir,
            bin_dir,
            state_dir: opts.state_dir,
            api_socket: opts.api_socket,
            node_name: opts.node_name,
            pod_cidrs,
            mtu: None,
            pod_device: opts.pod_device,
            exe: std::env::current_exe().map_err(InstallError::Exe)?,
        }))
    }
}

/// The CNI conf and bin dirs, each from the first that says: the flag, k3s's containerd config
/// (`containerd`, see [`super::containerd`]), then — when `is_dir` finds k3s — k3s's static
/// `data/cni` (k3s PR #10868: plugins survive upgrades there), else `data/current/bin`, and
/// the standard `/etc/cni/net.d` + `/opt/cni/bin` last.
pub fn detect_dirs(
    conf: Option<PathBuf>,
    bin: Option<PathBuf>,
    containerd: Option<CniDirs>,
    is_dir: impl Fn(&Path) -> bool,
) -> (PathBuf, PathBuf) {
    let containerd = containerd.unwrap_or_default();
    let conf = conf.or(containerd.conf_dir).unwrap_or_else(|| {
        PathBuf::from(if is_dir(Path::new(K3S_AGENT_DIR)) {
            K3S_CONF_DIR
        } else {
            DEFAULT_CONF_DIR
        })
    });
    let bin = bin.or(containerd.bin_dir).unwrap_or_else(|| {
        PathBuf::from(if is_dir(Path::new(K3S_STATIC_BIN_DIR)) {
            K3S_STATIC_BIN_DIR
        } else if is_dir(Path::new(K3S_DATA_DIR)) {
            K3S_BIN_DIR
        } else {
            DEFAULT_BIN_DIR
        })
    });
    (conf, bin)
}

/// The conflist: ferrite, then the chained plugins. `cniVersion` 1.0.0 for runtimes whose
/// libcni predates 1.1 (podman 4, containerd 1.7), `cniVersions` lets newer ones pick 1.1.0.
#[must_use]
pub fn render_conflist(cfg: &InstallConfig, chained: &[&str]) -> Value {
    let mut ferrite = json!({
        "type": PLUGIN_NAME,
        "stateDir": cfg.ipam_dir(),
        "nodeState": cfg.node_state_path(),
        "apiSocket": cfg.api_socket,
        "capabilities": {"ips": true, "mac": true},
    });
    if let Some(mtu) = cfg.mtu {
        ferrite["mtu"] = json!(mtu);
    }
    if cfg.pod_device != PodDeviceKind::Veth {
        ferrite["podDevice"] = json!(cfg.pod_device.as_str());
    }
    let mut plugins = vec![ferrite];
    for name in chained {
        plugins.push(match *name {
            "portmap" => {
                json!({"type": "portmap", "snat": true, "capabilities": {"portMappings": true}})
            }
            "bandwidth" => json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            other => json!({"type": other}),
        });
    }
    json!({
        "cniVersion": "1.0.0",
        "cniVersions": ["0.4.0", "1.0.0", "1.1.0"],
        "name": NETWORK_NAME,
        "plugins": plugins,
    })
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { what, path, source }
}

/// Writes `bytes` to `path` through a hidden temp file in the same directory (runtimes watch
/// the conf dir and must never see half a file).
fn write_atomic(path: &Path, mut bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    write_atomic_from(path, &mut bytes, mode)
}

/// Writes what `src` reads into `path` through a temporary file renamed over it (streamed: the
/// agent's binary is never held in memory whole).
fn write_atomic_from(
    path: &Path,
    src: &mut impl std::io::Read,
    mode: u32,
) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    std::io::copy(src, &mut f).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err("rename to", path))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Writes `node.json` (when the pod CIDRs are known), the binary, the conflist, and reclaims
/// leaked addresses.
pub fn install(cfg: &InstallConfig) -> Result<InstallReport, InstallError> {
    let node_state = if cfg.pod_cidrs.is_empty() {
        None
    } else {
        let path = cfg.node_state_path();
        write_node_cidrs(&path, &cfg.node_name, &cfg.pod_cidrs, "flag")?;
        Some(path)
    };
    let binary = cfg.bin_dir.join(PLUGIN_NAME);
    if !same_file(&cfg.exe, &binary) {
        let mut exe = std::fs::File::open(&cfg.exe).map_err(io_err("open", &cfg.exe))?;
        write_atomic_from(&binary, &mut exe, 0o755)?;
    }
    let (conflist, chained) = write_conflist(cfg)?;
    let reclaimed = reclaim::reclaim_all(&cfg.ipam_dir())?.released;
    Ok(InstallReport {
        conflist,
        binary,
        node_state,
        chained: chained.into_iter().map(str::to_owned).collect(),
        reclaimed,
    })
}

/// Writes the conflist (ferrite, then the reference plugins the bin dir holds); returns its path
/// and the chained plugins.
fn write_conflist(cfg: &InstallConfig) -> Result<(PathBuf, Vec<&'static str>), InstallError> {
    let chained: Vec<&'static str> = CHAINED
        .into_iter()
        .filter(|p| cfg.bin_dir.join(p).is_file())
        .collect();
    let conflist = cfg.conf_dir.join(CONFLIST_NAME);
    let text = serde_json::to_vec_pretty(&render_conflist(cfg, &chained))
        .map_err(|e| io_err("encode", &conflist)(io::Error::other(e)))?;
    write_atomic(&conflist, &text, 0o644)?;
    Ok((conflist, chained))
}

/// Rewrites the conflist with the pod MTU the routing plan chose (the underlay MTU less the
/// VXLAN overhead once any node is reached over VXLAN); pods created from then on get it.
pub fn set_pod_mtu(cfg: &mut InstallConfig, mtu: Option<u32>) -> Result<bool, InstallError> {
    if cfg.mtu == mtu {
        return Ok(false);
    }
    cfg.mtu = mtu;
    write_conflist(cfg)?;
    Ok(true)
}

/// Writes the node state file; the agent calls this with `source = "node"` whenever the Node
/// object's `spec.podCIDRs` change, and `install` with `"flag"` for `--pod-cidr`.
pub fn write_node_cidrs(
    path: &Path,
    node_name: &str,
    cidrs: &[IpNet],
    source: &str,
) -> Result<(), NodeStateError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    node_state::write(
        path,
        &NodeState {
            node_name: node_name.to_owned(),
            pod_cidrs: cidrs.to_vec(),
            source: source.to_owned(),
            updated_unix_ms: now,
        },
    )
}

/// The agent's side, once its datapath is ready and the first snapshot is applied: installs
/// now and — unless `--pod-cidr` fixed the CIDRs — keeps `node.json` in step with this node's
/// Node object (`spec.podCIDRs`). Returns what the install did (the agent retries a failure
/// with [`install`]).
pub fn run_in_agent(
    cfg: InstallConfig,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
) -> Result<InstallReport, InstallError> {
    let result = install(&cfg);
    match &result {
        Ok(r) => info!(
            conflist = %r.conflist.display(),
            binary = %r.binary.display(),
            chained = ?r.chained,
            reclaimed = r.reclaimed,
            "CNI plugin installed"
        ),
        Err(e) => error!(error = %e, "installing the CNI plugin"),
    }
    if !cfg.pod_cidrs.is_empty() {
        return result;
    }
    tokio::spawn(async move {
        let path = cfg.node_state_path();
        let mut written: Option<Vec<IpNet>> = None;
        loop {
            let cidrs = node_cidrs(&snapshots.borrow_and_update(), &cfg.node_name);
            if let Some(c) = cidrs.filter(|c| written.as_ref() != Some(c)) {
                match write_node_cidrs(&path, &cfg.node_name, &c, "node") {
                    Ok(()) => {
                        info!(node = %cfg.node_name, cidrs = ?c.iter().map(ToString::to_string).collect::<Vec<_>>(), "pod CIDRs from the Node object");
                        written = Some(c);
                    }
                    Err(e) => error!(error = %e, "writing the node state file"),
                }
            }
            if snapshots.changed().await.is_err() {
                break;
            }
        }
    });
    result
}

/// `spec.podCIDRs` of Node `name` in the snapshot (`None` when absent or empty).
#[must_use]
pub fn node_cidrs(snapshot: &Snapshot, name: &str) -> Option<Vec<IpNet>> {
    let node = snapshot.nodes.get(name)?;
    let cidrs: Vec<IpNet> = node
        .pod_cidrs
        .iter()
        .filter_map(|n| IpNet::new(n.addr(), n.prefix_len()).map(|c| c.network()))
        .collect();
    (!cidrs.is_empty()).then_some(cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> AgentCniOptions {
        AgentCniOptions {
            state_dir: "/var/lib/ferrite".into(),
            api_socket: "/run/ferrite/ferrite.sock".into(),
            node_name: "n1".into(),
            ..AgentCniOptions::default()
        }
    }

    #[test]
    fn detects_k3s_or_standard_dirs_and_honours_flags() {
        let strs = |(c, b): (PathBuf, PathBuf)| (c.display().to_string(), b.display().to_string());
        let own = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            strs(detect_dirs(None, None, None, |_| false)),
            own(DEFAULT_CONF_DIR, DEFAULT_BIN_DIR)
        );
        assert_eq!(
            strs(detect_dirs(None, None, None, |_| true)),
            own(K3S_CONF_DIR, K3S_STATIC_BIN_DIR)
        );
        // An older k3s: no static data/cni yet.
        let old = |p: &Path| p != Path::new(K3S_STATIC_BIN_DIR);
        assert_eq!(
            strs(detect_dirs(None, None, None, old)),
            own(K3S_CONF_DIR, K3S_BIN_DIR)
        );
        let from_config = CniDirs {
            conf_dir: Some("/c".into()),
            bin_dir: Some("/b".into()),
        };
        assert_eq!(
            strs(detect_dirs(None, None, Some(from_config.clone()), |_| true)),
            own("/c", "/b")
        );
        let half = CniDirs {
            conf_dir: None,
            bin_dir: Some("/b".into()),
        };
        assert_eq!(
            strs(detect_dirs(None, None, Some(half), |_| true)),
            own(K3S_CONF_DIR, "/b")
        );
        assert_eq!(
            strs(detect_dirs(
                Some("/x".into()),
                Some("/y".into()),
                Some(from_config),
                |_| true
            )),
            own("/x", "/y")
        );
    }

    #[test]
    fn agent_installs_in_kube_mode_or_when_asked() {
        assert!(
            InstallConfig::for_agent(opts()).unwrap().is_none(),
            "dir mode, nothing asked"
        );
        let kube = InstallConfig::for_agent(AgentCniOptions {
            kube_mode: true,
            ..opts()
        })
        .unwrap();
        assert!(kube.is_some_and(|c| c.pod_cidrs.is_empty()));
        let off = AgentCniOptions {
            kube_mode: true,
            conf_dir: Some("none".into()),
            ..opts()
        };
        assert!(InstallConfig::for_agent(off).unwrap().is_none());
        let standalone = AgentCniOptions {
            pod_cidr: Some("10.42.0.0/24, fd00:42::/64".into()),
            ..opts()
        };
        let c = InstallConfig::for_agent(standalone).unwrap().unwrap();
        assert_eq!(c.pod_cidrs.len(), 2);
        assert_eq!(
            c.node_state_path(),
            PathBuf::from("/var/lib/ferrite/node.json")
        );
        let bad = AgentCniOptions {
            pod_cidr: Some("10.42.0.0".into()),
            ..opts()
        };
        assert!(matches!(
            InstallConfig::for_agent(bad),
            Err(InstallError::PodCidr(_))
        ));
    }

    #[test]
    fn pod_cidrs_come_from_this_nodes_object() {
        let mut snap = Snapshot::default();
        assert_eq!(node_cidrs(&snap, "n1"), None);
        snap.nodes.insert(
            "n1".into(),
            crate::model::Node {
                name: "n1".into(),
                pod_cidrs: vec![
                    "10.42.3.0/24".parse().unwrap(),
                    "fd00:42:3::/64".parse().unwrap(),
                ],
                ..crate::model::Node::default()
            },
        );
        snap.nodes
            .insert("n2".into(), crate::model::Node::default());
        let got: Vec<String> = node_cidrs(&snap, "n1")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.42.3.0/24", "fd00:42:3::/64"]);
        assert_eq!(node_cidrs(&snap, "n2"), None);
    }

    #[test]
    fn conflist_points_at_the_agent_and_chains_what_is_there() {
        let cfg = InstallConfig::for_agent(AgentCniOptions {
            pod_cidr: Some("10.42.0.0/24".into()),
            ..opts()
        })
        .unwrap()
        .unwrap();
        let v = render_conflist(&cfg, &["portmap"]);
        assert_eq!(v["name"], NETWORK_NAME);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"][0]["type"], "ferrite");
        assert_eq!(v["plugins"][0]["stateDir"], "/var/lib/ferrite/cni");
        assert_eq!(v["plugins"][0]["nodeState"], "/var/lib/ferrite/node.json");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        assert!(v["plugins"].get(2).is_none());
        // veth (the plugin's own default) is left out; any other pair is written.
        assert!(v["plugins"][0].get("podDevice").is_none(), "{v}");
        let auto = InstallConfig {
            pod_device: PodDeviceKind::Auto,
            ..cfg
        };
        assert_eq!(
            render_conflist(&auto, &[])["plugins"][0]["podDevice"],
            "auto"
        );
    }
}
