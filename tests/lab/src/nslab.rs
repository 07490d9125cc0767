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

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::addr::Cidr;
use crate::cgroup::CgroupError;
use crate::cmd::{self, CommandError};
use crate::http::{self, HttpResponse};
use crate::lab::{LabError, Lan, PodNet, PodNetConfig};
use crate::netns::{Netns, NetnsError};
use crate::probe::{Limit, ProbeConfig, Proto, probe};
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

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NsLabError {
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

mod agent;
mod hosts;
mod inspect;
mod servers;

pub use agent::{AgentConfig, NodeAgent, ensure_bpffs};
pub use hosts::{LanHost, Node};
pub use inspect::{local_endpoints, map_entries};

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

    /// Restarts node `i`'s agent with `config`, keeping its pinned datapath (see
    /// [`NodeAgent::restart`]).
    pub fn restart_agent_keeping_datapath(
        &mut self,
        i: usize,
        config: &AgentConfig,
    ) -> Result<(), NsLabError> {
        self.agent_mut(i).restart(config)
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
                agent.node(),
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

    /// Deletes node `i`'s LAN interface and creates it again (same name and addresses, a new
    /// ifindex and MAC), with its routes; see [`Lan::replug`].
    pub fn replug_node(&mut self, i: usize) -> Result<(), NsLabError> {
        self.lan.replug(&mut self.nodes[i].port)?;
        self.add_node_routes(i)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_shape() {
        let c = NsLabConfig::default();
        assert_eq!((c.nodes, c.pods_per_node, c.clients), (2, 2, 2));
        assert_eq!(c.lb_v4.to_string(), "172.30.0.0/24");
        assert!(c.lan_v4.contains("192.168.50.1".parse().unwrap()));
    }
}
