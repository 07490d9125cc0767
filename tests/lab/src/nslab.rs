//! [`NsLab`]: a LAN with nodes, pods and outside clients, for north-south load balancing.
//!
//! ```text
//!   client-1 (192.168.50.N+1)   client-2 (…N+2)          one netns each, eth0 on the LAN;
//!        \                        /                       routes: 10.244.K.0/24 via nodeK,
//!         +------- lan: br0 -----+                        LB range 172.30.0.0/24 via node1
//!        /                        \
//!   node1 (192.168.50.1, eth0)   node2 (192.168.50.2, eth0)   forwarding on; routes to the
//!    |-- node1-pod-1 10.244.1.2                               other nodes' pod subnets via
//!    `-- node1-pod-2 10.244.1.3                               their LAN addresses
//! ```
//!
//! Every pod runs `ferrite-lab serve --echo-peer` (TCP 8080, UDP 5353, HTTP 8081; and
//! `iperf3 -s` on 5201 when asked), so clients learn which backend answered and which client
//! address it saw. [`NodeAgent`] runs a real `ferrite agent` inside a node's netns on the
//! lab's shared `dir:` folder, with its own BPF root, cgroup, API socket and state dir.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::addr::Cidr;
use crate::cgroup::{Cgroup, CgroupError};
use crate::child::Child;
use crate::cmd::{self, CommandError};
use crate::http::{self, HttpResponse};
use crate::lab::{LabError, Lan, LanPort, Pod, PodNet, PodNetConfig};
use crate::netns::{Netns, NetnsError, Ns};
use crate::probe::{Limit, ProbeConfig, Proto, probe};
use crate::raw::Mac;
use crate::report::ClientReport;
use crate::veth::Route;
use crate::wait::wait_until;

pub const LAN_V4: &str = "192.168.50.0/24";
pub const LAN_V6: &str = "fd00:50::/64";
/// `LoadBalancer` IPs the clients route via one node (`NsLabConfig::lb_via`).
pub const LB_V4: &str = "172.30.0.0/24";
/// All pod subnets (kube-proxy's `--cluster-cidr`).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The LAN interface in every node and client.
pub const LAN_IFNAME: &str = "eth0";
pub const POD_TCP: u16 = 8080;
pub const POD_UDP: u16 = 5353;
pub const POD_HTTP: u16 = 8081;
pub const POD_IPERF: u16 = 5201;
/// Where BPF roots go (on bpffs).
pub const BPFFS: &str = "/sys/fs/bpf";

/// Failure to build or drive the lab.
#[derive(Debug, thiserror::Error)]
pub enum NsLabError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NsLabError {
    let what = what.into();
    move |source| NsLabError::Io { what, source }
}

/// Shape of an [`NsLab`].
#[derive(Clone, Debug)]
pub struct NsLabConfig {
    /// Name prefix of every netns and cgroup (1–4 of `a-z0-9`).
    pub prefix: String,
    pub nodes: usize,
    pub pods_per_node: usize,
    pub clients: usize,
    pub lan_v4: Cidr,
    pub lan_v6: Cidr,
    /// Routed by every client via node `lb_via` (0-based).
    pub lb_v4: Cidr,
    pub lb_via: usize,
    /// Also run `iperf3 -s -p 5201` in every pod.
    pub iperf3: bool,
}

impl Default for NsLabConfig {
    fn default() -> Self {
        Self {
            prefix: "ns".into(),
            nodes: 2,
            pods_per_node: 2,
            clients: 2,
            lan_v4: LAN_V4.parse().expect("valid"),
            lan_v6: LAN_V6.parse().expect("valid"),
            lb_v4: LB_V4.parse().expect("valid"),
            lb_via: 0,
            iperf3: false,
        }
    }
}

fn v4_of(c: &Cidr) -> Ipv4Addr {
    match c.addr() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("an IPv4 LAN address"),
    }
}

fn v6_of(c: &Cidr) -> Ipv6Addr {
    match c.addr() {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(_) => unreachable!("an IPv6 LAN address"),
    }
}

/// A machine on the LAN that is not a node (a client outside the cluster).
#[derive(Debug)]
pub struct LanHost {
    pub name: String,
    pub port: LanPort,
    pub netns: Netns,
}

impl LanHost {
    #[must_use]
    pub fn v4(&self) -> Ipv4Addr {
        v4_of(&self.port.v4)
    }

    #[must_use]
    pub fn v6(&self) -> Ipv6Addr {
        v6_of(&self.port.v6)
    }

    #[must_use]
    pub fn ns(&self) -> &Ns {
        self.netns.ns()
    }

    /// MAC of its LAN interface.
    pub fn mac(&self) -> Result<Mac, NsLabError> {
        mac_of(&self.port)
    }
}

fn mac_of(port: &LanPort) -> Result<Mac, NsLabError> {
    port.iface().mac()?.parse().map_err(NsLabError::Other)
}

/// A node: its netns with `eth0` on the LAN, its pods, and the servers running in them.
/// Fields drop in order: servers, then pods, then the LAN port and the netns.
#[derive(Debug)]
pub struct Node {
    /// `node1`, `node2`, ... (what `EndpointSlice`s name in `nodeName`).
    pub name: String,
    pub servers: Vec<Child>,
    pub pods: PodNet,
    pub port: LanPort,
    pub netns: Netns,
}

impl Node {
    #[must_use]
    pub fn v4(&self) -> Ipv4Addr {
        v4_of(&self.port.v4)
    }

    #[must_use]
    pub fn v6(&self) -> Ipv6Addr {
        v6_of(&self.port.v6)
    }

    #[must_use]
    pub fn ns(&self) -> &Ns {
        self.netns.ns()
    }

    /// MAC of its LAN interface.
    pub fn mac(&self) -> Result<Mac, NsLabError> {
        mac_of(&self.port)
    }

    /// Its pod IPv4 subnet (`10.244.K.0/24` for node K).
    #[must_use]
    pub fn pod_cidr_v4(&self) -> Cidr {
        self.pods.config().v4.network()
    }

    #[must_use]
    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods.pods()[i]
    }

    #[must_use]
    pub fn pod_v4(&self, i: usize) -> Ipv4Addr {
        self.pod(i).v4
    }

    /// `node1-pod-1` for the first pod of node1: the name its servers answer with.
    #[must_use]
    pub fn pod_name(&self, i: usize) -> String {
        format!("{}-pod-{}", self.name, i + 1)
    }

    /// `NODE_IP:port` on the LAN.
    #[must_use]
    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.v4(), port))
    }
}

/// A unique scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new(prefix: &str) -> Result<Self, NsLabError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ferrite-{prefix}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).map_err(io_err(format!("create {}", p.display())))?;
        Ok(Self(p))
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("FERRITE_KEEP_WORK").is_some() {
            crate::report_drop_failure(
                &format!("work dir {} (kept: FERRITE_KEEP_WORK)", self.0.display()),
                &"not removed",
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Mounts bpffs at [`BPFFS`] unless it is there.
pub fn ensure_bpffs() -> Result<(), NsLabError> {
    let mounts = fs::read_to_string("/proc/mounts").map_err(io_err("read /proc/mounts"))?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some(BPFFS) && f.next() == Some("bpf")
    });
    if !mounted {
        cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    }
    Ok(())
}

/// How to run agents.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub ferrite: PathBuf,
    /// Appended to the command line (e.g. `--maglev-table-size 251`).
    pub extra_args: Vec<String>,
    /// `FERRITE_LOG`.
    pub log_level: String,
    /// How long the first apply may take.
    pub ready_timeout: Duration,
}

impl AgentConfig {
    #[must_use]
    pub fn new(ferrite: &Path) -> Self {
        Self {
            ferrite: ferrite.to_owned(),
            extra_args: Vec::new(),
            log_level: "debug".into(),
            ready_timeout: Duration::from_secs(20),
        }
    }
}

/// `ferrite agent` running inside a node's netns. On drop: SIGTERM (SIGKILL after 3 s),
/// `ferrite agent --cleanup` in the same netns, and the BPF root removed.
#[derive(Debug)]
pub struct NodeAgent {
    child: Option<Child>,
    node: String,
    ns: Ns,
    ferrite: PathBuf,
    pub socket: PathBuf,
    pub bpf_root: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    cgroup: Cgroup,
}

impl NodeAgent {
    /// Starts the agent for `node` on the `dir:` folder `manifests`, files under `work`, and
    /// waits until it answers `status` with a first apply.
    pub fn start(
        config: &AgentConfig,
        node: &Node,
        manifests: &Path,
        work: &Path,
        prefix: &str,
    ) -> Result<Self, NsLabError> {
        ensure_bpffs()?;
        let cgroup = Cgroup::new(prefix)?;
        let label = cgroup
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("agent")
            .to_owned();
        let bpf_root = Path::new(BPFFS).join(&label);
        let _ = fs::remove_dir_all(&bpf_root);
        let dir = work.join(&node.name);
        let state_dir = dir.join("state");
        fs::create_dir_all(&state_dir)
            .map_err(io_err(format!("create {}", state_dir.display())))?;
        let socket = dir.join("ferrite.sock");
        let log = dir.join("agent.log");
        let out = fs::File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("dup log"))?;
        let mut command = Command::new(&config.ferrite);
        command
            .arg("agent")
            .arg("--source")
            .arg(format!("dir:{}", manifests.display()))
            .args(["--node-name", &node.name, "--devices", LAN_IFNAME])
            .arg("--bpf-root")
            .arg(&bpf_root)
            .arg("--cgroup")
            .arg(cgroup.path())
            .arg("--api-socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            // Never install a CNI plugin into the host's directories from a lab.
            .args(["--cni-conf-dir", "none"])
            .args(&config.extra_args)
            .env("FERRITE_LOG", &config.log_level)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = node.ns().spawn(&mut command)?;
        let mut agent = Self {
            child: Some(child),
            node: node.name.clone(),
            ns: node.ns().clone(),
            ferrite: config.ferrite.clone(),
            socket,
            bpf_root,
            state_dir,
            log,
            cgroup,
        };
        let mut exited = None;
        let ready = wait_until(config.ready_timeout, Duration::from_millis(50), || {
            if let Some(c) = agent.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                exited = Some(status);
                return true;
            }
            agent
                .status()
                .is_ok_and(|s| s["last_apply"]["generation"].as_u64().unwrap_or(0) >= 1)
        });
        if let Some(status) = exited {
            return Err(NsLabError::Other(format!(
                "ferrite agent on {} exited ({status}); log:\n{}",
                agent.node,
                agent.log_tail(40)
            )));
        }
        if ready.is_err() {
            return Err(NsLabError::Other(format!(
                "ferrite agent on {} did not report a first apply within {:?}; log:\n{}",
                agent.node,
                config.ready_timeout,
                agent.log_tail(40)
            )));
        }
        Ok(agent)
    }

    #[must_use]
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`libc::SIGSTOP`, `libc::SIGKILL`, ...) to the agent process.
    pub fn signal(&self, signal: i32) -> Result<(), NsLabError> {
        match &self.child {
            Some(c) => c
                .signal(signal)
                .map_err(|e| NsLabError::Other(format!("agent on {}: {e}", self.node))),
            None => Err(NsLabError::Other(format!(
                "no agent process on {}",
                self.node
            ))),
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `ferrite ARGS --api-socket SOCK`.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output, NsLabError> {
        Ok(cmd::run(
            Command::new(&self.ferrite)
                .args(args)
                .arg("--api-socket")
                .arg(&self.socket),
        )?)
    }

    /// `ferrite status -o json`.
    pub fn status(&self) -> Result<Value, NsLabError> {
        let out = self.cli(&["status", "-o", "json"])?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| NsLabError::Other(format!("status is not JSON: {e}")))
    }

    /// `ferrite services -o json`.
    pub fn services(&self) -> Result<Value, NsLabError> {
        let out = self.cli(&["services", "-o", "json"])?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| NsLabError::Other(format!("services is not JSON: {e}")))
    }

    /// A pinned map of this agent: `<bpf-root>/maps/NAME`.
    #[must_use]
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.bpf_root.join("maps").join(name)
    }

    /// The last `lines` lines of its log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The cgroup handed to `--cgroup` (nothing runs in it).
    #[must_use]
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A test may have frozen it (SIGSTOP): SIGTERM would wait for a SIGCONT.
            let _ = c.signal(libc::SIGCONT);
            let _ = c.stop(Duration::from_secs(3));
        }
        let mut cleanup = Command::new(&self.ferrite);
        cleanup
            .args(["agent", "--cleanup", "--node-name", &self.node])
            .args(["--devices", LAN_IFNAME])
            .arg("--bpf-root")
            .arg(&self.bpf_root)
            .arg("--cgroup")
            .arg(self.cgroup.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Err(e) = self.ns.exec(&mut cleanup) {
            crate::report_drop_failure(&format!("agent on {}", self.node), &e);
        }
        let _ = fs::remove_dir_all(&self.bpf_root);
        let _ = fs::remove_file(&self.socket);
    }
}

/// The lab. Fields drop in order: agents first, then nodes (servers, pods), clients, the LAN.
#[derive(Debug)]
pub struct NsLab {
    agents: Vec<Option<NodeAgent>>,
    nodes: Vec<Node>,
    clients: Vec<LanHost>,
    lan: Lan,
    work: WorkDir,
    manifests: PathBuf,
    config: NsLabConfig,
    lab_bin: PathBuf,
}

impl NsLab {
    /// Builds the topology, starts the pod servers (`lab_bin` is the `ferrite-lab` binary)
    /// and waits until every pod answers its node.
    pub fn build(config: NsLabConfig, lab_bin: &Path) -> Result<Self, NsLabError> {
        if config.nodes == 0 || config.nodes > 200 || config.lb_via >= config.nodes {
            return Err(NsLabError::Other(format!(
                "bad lab shape: {} nodes, LB route via node index {}",
                config.nodes, config.lb_via
            )));
        }
        let work = WorkDir::new(&config.prefix)?;
        let manifests = work.path().join("manifests");
        fs::create_dir_all(&manifests).map_err(io_err("create manifest dir"))?;
        let mut lan = Lan::new(&config.prefix, config.lan_v4, config.lan_v6)?;
        let mut nodes = Vec::with_capacity(config.nodes);
        for k in 1..=config.nodes {
            let netns = Netns::new(&config.prefix)?;
            let port = lan.attach(netns.ns(), LAN_IFNAME)?;
            for key in [
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.default.rp_filter",
            ] {
                netns.sysctl(key, "0")?;
            }
            let pods = PodNet::build(
                netns.ns(),
                PodNetConfig {
                    prefix: config.prefix.clone(),
                    pods: config.pods_per_node,
                    v4: format!("10.244.{k}.0/24").parse().expect("valid"),
                    v6: format!("fd00:10:244:{k:x}::/64").parse().expect("valid"),
                    pod_ifname: "eth0".into(),
                },
            )?;
            nodes.push(Node {
                name: format!("node{k}"),
                servers: Vec::new(),
                pods,
                port,
                netns,
            });
        }
        // Pod subnets of the other nodes via their LAN addresses.
        for node in &nodes {
            for other in nodes.iter().filter(|o| o.name != node.name) {
                Route::via(other.pod_cidr_v4(), IpAddr::V4(other.v4())).add(node.ns())?;
                Route::via(other.pods.config().v6.network(), IpAddr::V6(other.v6()))
                    .add(node.ns())?;
            }
        }
        let mut clients = Vec::with_capacity(config.clients);
        for k in 1..=config.clients {
            let netns = Netns::new(&config.prefix)?;
            let port = lan.attach(netns.ns(), LAN_IFNAME)?;
            netns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            let host = LanHost {
                name: format!("client{k}"),
                port,
                netns,
            };
            for node in &nodes {
                Route::via(node.pod_cidr_v4(), IpAddr::V4(node.v4())).add(host.ns())?;
                Route::via(node.pods.config().v6.network(), IpAddr::V6(node.v6()))
                    .add(host.ns())?;
            }
            Route::via(config.lb_v4, IpAddr::V4(nodes[config.lb_via].v4())).add(host.ns())?;
            clients.push(host);
        }
        let mut lab = Self {
            agents: (0..config.nodes).map(|_| None).collect(),
            nodes,
            clients,
            lan,
            work,
            manifests,
            config,
            lab_bin: lab_bin.to_owned(),
        };
        lab.start_servers()?;
        Ok(lab)
    }

    fn start_servers(&mut self) -> Result<(), NsLabError> {
        for node in &mut self.nodes {
            let mut servers = Vec::new();
            for (i, pod) in node.pods.pods().iter().enumerate() {
                let mut command = Command::new(&self.lab_bin);
                command
                    .args(["serve", "--echo-peer", "--name"])
                    .arg(format!("{}-pod-{}", node.name, i + 1))
                    .args(["--tcp", &format!("0.0.0.0:{POD_TCP}")])
                    .args(["--tcp", &format!("[::]:{POD_TCP}")])
                    .args(["--udp", &format!("0.0.0.0:{POD_UDP}")])
                    .args(["--udp", &format!("[::]:{POD_UDP}")])
                    .args(["--http", &format!("0.0.0.0:{POD_HTTP}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                servers.push(pod.netns.spawn(&mut command)?);
                if self.config.iperf3 {
                    let mut iperf = Command::new("iperf3");
                    iperf
                        .args(["-s", "-p", &POD_IPERF.to_string()])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    servers.push(pod.netns.spawn(&mut iperf)?);
                }
            }
            node.servers = servers;
        }
        for node in &self.nodes {
            for (i, pod) in node.pods.pods().iter().enumerate() {
                let target = SocketAddr::from((pod.v4, POD_TCP));
                let mut cfg = ProbeConfig::new(target, Proto::Tcp, Limit::Count(1));
                cfg.timeout = Duration::from_millis(300);
                let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                    node.ns().run(|| probe(&cfg)).is_ok_and(|r| r.ok == 1)
                });
                if up.is_err() {
                    return Err(NsLabError::Other(format!(
                        "{} ({target}) never answered its node",
                        node.pod_name(i)
                    )));
                }
                if self.config.iperf3 {
                    let iperf = SocketAddr::from((pod.v4, POD_IPERF));
                    let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                        node.ns()
                            .run(|| {
                                std::net::TcpStream::connect_timeout(
                                    &iperf,
                                    Duration::from_millis(300),
                                )
                            })
                            .is_ok_and(|r| r.is_ok())
                    });
                    if up.is_err() {
                        return Err(NsLabError::Other(format!(
                            "iperf3 in {} ({iperf}) never answered",
                            node.pod_name(i)
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    #[must_use]
    pub fn config(&self) -> &NsLabConfig {
        &self.config
    }

    #[must_use]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i` (0-based: `node(0)` is node1).
    #[must_use]
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    #[must_use]
    pub fn clients(&self) -> &[LanHost] {
        &self.clients
    }

    /// Client `i` (0-based: `client(0)` is client1).
    #[must_use]
    pub fn client(&self, i: usize) -> &LanHost {
        &self.clients[i]
    }

    #[must_use]
    pub fn lan(&self) -> &Lan {
        &self.lan
    }

    /// The `dir:` folder every agent watches.
    #[must_use]
    pub fn manifests(&self) -> &Path {
        &self.manifests
    }

    #[must_use]
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// Writes `yaml` to `file` in the manifest folder atomically (rename).
    pub fn write_manifest(&self, file: &str, yaml: &str) -> Result<(), NsLabError> {
        let tmp = self.work.path().join(format!(".{file}.tmp"));
        fs::write(&tmp, yaml).map_err(io_err(format!("write {}", tmp.display())))?;
        let target = self.manifests.join(file);
        fs::rename(&tmp, &target).map_err(io_err(format!("rename to {}", target.display())))
    }

    pub fn remove_manifest(&self, file: &str) -> Result<(), NsLabError> {
        fs::remove_file(self.manifests.join(file)).map_err(io_err(format!("remove {file}")))
    }

    /// Starts an agent on node `i` (replacing a running one).
    pub fn start_agent(&mut self, i: usize, config: &AgentConfig) -> Result<(), NsLabError> {
        self.agents[i] = None;
        let agent = NodeAgent::start(
            config,
            &self.nodes[i],
            &self.manifests,
            self.work.path(),
            &self.config.prefix,
        )?;
        self.agents[i] = Some(agent);
        Ok(())
    }

    /// Starts agents on every node, in parallel.
    pub fn start_agents(&mut self, config: &AgentConfig) -> Result<(), NsLabError> {
        self.start_agents_each(|_, _| config.clone())
    }

    /// Starts agents on every node, in parallel, each with the configuration `config` gives
    /// for (node index, node) — e.g. per-node `--l2-bind` addresses.
    pub fn start_agents_each(
        &mut self,
        config: impl Fn(usize, &Node) -> AgentConfig + Sync,
    ) -> Result<(), NsLabError> {
        let config = &config;
        let results: Vec<Result<NodeAgent, NsLabError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let (manifests, work, prefix) =
                        (&self.manifests, self.work.path(), &self.config.prefix);
                    scope.spawn(move || {
                        NodeAgent::start(&config(i, node), node, manifests, work, prefix)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(NsLabError::Other("agent start thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut errors = Vec::new();
        for (slot, result) in self.agents.iter_mut().zip(results) {
            match result {
                Ok(agent) => *slot = Some(agent),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NsLabError::Other(errors.join("\n")))
        }
    }

    /// The agent on node `i`.
    ///
    /// # Panics
    /// If none was started there.
    #[must_use]
    pub fn agent(&self, i: usize) -> &NodeAgent {
        self.agents[i]
            .as_ref()
            .unwrap_or_else(|| panic!("no agent on {}", self.nodes[i].name))
    }

    /// See [`NsLab::agent`].
    pub fn agent_mut(&mut self, i: usize) -> &mut NodeAgent {
        let name = self.nodes[i].name.clone();
        self.agents[i]
            .as_mut()
            .unwrap_or_else(|| panic!("no agent on {name}"))
    }

    /// Stops the agent on node `i` (and cleans up its datapath).
    pub fn stop_agent(&mut self, i: usize) {
        self.agents[i] = None;
    }

    /// Log tails of every running agent, for assertion messages.
    #[must_use]
    pub fn agent_logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for agent in self.agents.iter().flatten() {
            let _ = write!(
                out,
                "\n--- agent on {} ({}) ---\n{}\n",
                agent.node,
                agent.log.display(),
                agent.log_tail(lines)
            );
        }
        out
    }

    /// Runs `probe` for `cfg` inside client `client`'s netns.
    pub fn probe(&self, client: usize, cfg: &ProbeConfig) -> Result<ClientReport, NsLabError> {
        Ok(self.clients[client].ns().run(|| probe(cfg))?)
    }

    /// `count` attempts of `proto` from client `client` to `target`, each with `timeout_ms`.
    pub fn attempts(
        &self,
        client: usize,
        target: SocketAddr,
        proto: Proto,
        count: u64,
        timeout_ms: u64,
    ) -> Result<ClientReport, NsLabError> {
        let mut cfg = ProbeConfig::new(target, proto, Limit::Count(count));
        cfg.timeout = Duration::from_millis(timeout_ms);
        self.probe(client, &cfg)
    }

    /// Polls single attempts until one succeeds; `Err` holds the last report.
    pub fn wait_answers(
        &self,
        client: usize,
        target: SocketAddr,
        proto: Proto,
        timeout: Duration,
    ) -> Result<Duration, Box<ClientReport>> {
        let mut last = ClientReport::default();
        let ok = wait_until(timeout, Duration::from_millis(50), || {
            match self.attempts(client, target, proto, 1, 300) {
                Ok(r) => {
                    let done = r.ok == 1;
                    last = r;
                    done
                }
                Err(_) => false,
            }
        });
        ok.map_err(|_| Box::new(last))
    }

    /// `GET path` from client `client`.
    pub fn http_get(
        &self,
        client: usize,
        target: SocketAddr,
        path: &str,
    ) -> Result<io::Result<HttpResponse>, NsLabError> {
        Ok(self.clients[client]
            .ns()
            .run(|| http::get(target, path, Duration::from_secs(2)))?)
    }

    /// (Re)installs node `i`'s routes to the other nodes' pod subnets (a link going down
    /// administratively takes them away).
    pub fn add_node_routes(&self, i: usize) -> Result<(), NsLabError> {
        let node = &self.nodes[i];
        for other in self.nodes.iter().filter(|o| o.name != node.name) {
            Route::via(other.pod_cidr_v4(), IpAddr::V4(other.v4())).add(node.ns())?;
            Route::via(other.pods.config().v6.network(), IpAddr::V6(other.v6())).add(node.ns())?;
        }
        Ok(())
    }

    /// Re-routes client `client`'s LB range via node `node`.
    pub fn route_lb_via(&self, client: usize, node: usize) -> Result<(), NsLabError> {
        Route::via(self.config.lb_v4, IpAddr::V4(self.nodes[node].v4()))
            .add(self.clients[client].ns())?;
        Ok(())
    }

    /// Loads `rules` (both tables) with one `iptables-restore -w` in node `node`; returns
    /// how long it took.
    pub fn iptables_restore(
        &self,
        node: usize,
        program: &str,
        rules: &str,
    ) -> Result<Duration, NsLabError> {
        let mut command = self.nodes[node].ns().command(program)?;
        command.arg("-w");
        let start = Instant::now();
        cmd::run_with_input(&mut command, rules.as_bytes())?;
        Ok(start.elapsed())
    }
}

/// Entries of a pinned BPF map (`bpftool -j map dump pinned PATH`): the JSON of each key →
/// the JSON of its value (`formatted` when bpftool has BTF for it). Keys compare exactly, so
/// two dumps can be diffed whatever the map's layout.
pub fn map_entries(pinned: &Path) -> Result<BTreeMap<String, String>, NsLabError> {
    let out = cmd::run(
        Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(pinned),
    )?;
    let dump: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| NsLabError::Other(format!("bpftool output is not JSON: {e}")))?;
    let Value::Array(items) = dump else {
        return Err(NsLabError::Other(format!(
            "bpftool dump of {} is not a list",
            pinned.display()
        )));
    };
    let mut entries = BTreeMap::new();
    for item in items {
        let show = item.get("formatted").unwrap_or(&item);
        let value = show
            .get("value")
            .or_else(|| show.get("values"))
            .map(Value::to_string)
            .unwrap_or_default();
        let key = show
            .get("key")
            .or_else(|| item.get("key"))
            .map_or_else(|| item.to_string(), Value::to_string);
        entries.insert(key, value);
    }
    Ok(entries)
}

/// The local endpoint count a health-check node port reports: kube-proxy's JSON
/// (`{"service": {...}, "localEndpoints": N, ...}`, the key anywhere in the document), or a
/// body that is just a number.
#[must_use]
pub fn local_endpoints(body: &str) -> Option<u64> {
    fn find(v: &Value) -> Option<u64> {
        match v {
            Value::Object(map) => map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("localEndpoints") || *k == "local_endpoints")
                .and_then(|(_, v)| v.as_u64())
                .or_else(|| map.values().find_map(find)),
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    match serde_json::from_str::<Value>(body.trim()) {
        Ok(Value::Number(n)) => n.as_u64(),
        Ok(v) => find(&v),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_bodies() {
        assert_eq!(
            local_endpoints(
                r#"{"service": {"namespace": "test", "name": "local"}, "localEndpoints": 2, "serviceProxyHealthy": true}"#
            ),
            Some(2)
        );
        assert_eq!(local_endpoints(r#"{"local_endpoints": 0}"#), Some(0));
        assert_eq!(
            local_endpoints(r#"{"status": {"localEndpoints": 1}}"#),
            Some(1)
        );
        assert_eq!(local_endpoints("3\n"), Some(3));
        assert_eq!(local_endpoints("ok"), None);
        assert_eq!(local_endpoints(r#"{"healthy": true}"#), None);
    }

    #[test]
    fn default_shape() {
        let c = NsLabConfig::default();
        assert_eq!((c.nodes, c.pods_per_node, c.clients), (2, 2, 2));
        assert_eq!(c.lb_v4.to_string(), "172.30.0.0/24");
        assert!(c.lan_v4.contains("192.168.50.1".parse().unwrap()));
    }
}
