//! [`MasqLab`]: nodes with pods on a LAN, a router between the LAN and a "WAN" host on
//! another subnet, for the masquerade.
//!
//! ```text
//!   node1 (192.168.50.1)  node2 (…50.2)     pods 10.244.K.N, fd00:10:244:K::N behind node K;
//!        \                 /                 default routes via the router; routes to the
//!         +--- lan: br0 --+                  other node's pod subnets via its LAN address
//!                 |
//!         router (192.168.50.N, eth0)        forwarding; NO route to any pod subnet, so a
//!                 |  wan0, MTU 1280          packet that leaves a node unmasqueraded cannot
//!         wan (198.51.100.10, 2001:db8:100::10)   be answered
//! ```
//!
//! The router's WAN side has a smaller MTU (1280) than everything else, with the WAN host's end
//! at 1500: a TCP upload from a pod needs path-MTU discovery (the router's "fragmentation
//! needed" / "packet too big" must reach the pod) while the WAN host's MSS does not hide it.
//! The WAN host runs an echo-peer server (TCP and UDP [`WAN_ECHO`]), a byte sink
//! ([`WAN_SINK`]: reads to EOF, answers the count) and a UDP recorder ([`WAN_RECORD`]) that
//! keeps every source address it saw and answers nothing else.

mod traffic;

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::addr::Cidr;
use crate::lab::{Lan, PodNet, PodNetConfig, enable_forwarding};
use crate::netns::{Netns, Ns};
use crate::nslab::{AgentConfig, LAN_IFNAME, LanHost, Node, NodeAgent, NsLabError, WorkDir};
use crate::serve::{Server, ServerConfig, TcpMode};
use crate::veth::{Iface, Route, Veth};

pub use traffic::{Recorder, Sink, bulk_upload, ping, tcp_ask, tcp_many, udp_many};

pub const WAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const WAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const ROUTER_WAN_V4: &str = "198.51.100.1/24";
const ROUTER_WAN_V6: &str = "2001:db8:100::1/64";
/// The router's WAN-side MTU (the WAN host's own interface stays at 1500).
pub const WAN_MTU: u32 = 1280;
pub const WAN_ECHO: u16 = 8080;
pub const WAN_SINK: u16 = 9000;
pub const WAN_RECORD: u16 = 6000;
/// Every pod answers `NAME PEER` on this TCP port.
pub const POD_ECHO: u16 = 8080;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NsLabError {
    let what = what.into();
    move |source| NsLabError::Io { what, source }
}

/// The WAN host: its netns and the servers running there.
#[derive(Debug)]
pub struct Wan {
    pub servers: Vec<Server>,
    pub sink: Option<Sink>,
    pub recorder: Option<Recorder>,
    pub netns: Netns,
}

impl Wan {
    #[must_use]
    pub fn ns(&self) -> &Ns {
        self.netns.ns()
    }

    /// Source addresses the UDP recorder saw so far.
    #[must_use]
    pub fn recorded(&self) -> Vec<SocketAddr> {
        self.recorder
            .as_ref()
            .map(Recorder::seen)
            .unwrap_or_default()
    }
}

/// The lab. Fields drop in order: agents, pod servers, nodes, the WAN host, router, LAN.
#[derive(Debug)]
pub struct MasqLab {
    agents: Vec<Option<NodeAgent>>,
    pod_servers: Vec<Server>,
    nodes: Vec<Node>,
    wan: Wan,
    _wan_link: Veth,
    router: LanHost,
    _lan: Lan,
    manifests: PathBuf,
    prefix: String,
    work: WorkDir,
}

/// `10.244.K.0/24,fd00:10:244:K::/64`: node K's pod CIDRs (the `--pod-cidr` value).
#[must_use]
pub fn pod_cidrs(node: &Node) -> String {
    format!(
        "{},{}",
        node.pods.config().v4.network(),
        node.pods.config().v6.network()
    )
}

impl MasqLab {
    /// Builds `nodes` nodes with `pods` pods each, the router and the WAN host, starts the
    /// servers, and writes a `Node` manifest (pod CIDRs, `InternalIP`) for every node.
    pub fn build(prefix: &str, nodes: usize, pods: usize) -> Result<Self, NsLabError> {
        let work = WorkDir::new(prefix)?;
        let manifests = work.path().join("manifests");
        fs::create_dir_all(&manifests).map_err(io_err("create manifest dir"))?;
        let mut lan = Lan::new(
            prefix,
            crate::nslab::LAN_V4.parse().expect("valid"),
            crate::nslab::LAN_V6.parse().expect("valid"),
        )?;
        let mut built = Vec::with_capacity(nodes);
        for k in 1..=nodes {
            let netns = Netns::new(prefix)?;
            let port = lan.attach(netns.ns(), LAN_IFNAME)?;
            netns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            let pods = PodNet::build(
                netns.ns(),
                PodNetConfig {
                    prefix: prefix.into(),
                    pods,
                    v4: format!("10.244.{k}.0/24").parse().expect("valid"),
                    v6: format!("fd00:10:244:{k:x}::/64").parse().expect("valid"),
                    pod_ifname: "eth0".into(),
                },
            )?;
            built.push(Node {
                name: format!("node{k}"),
                servers: Vec::new(),
                pods,
                port,
                netns,
            });
        }
        let router_ns = Netns::new(prefix)?;
        let router_port = lan.attach(router_ns.ns(), LAN_IFNAME)?;
        let router = LanHost {
            name: "router".into(),
            port: router_port,
            netns: router_ns,
        };
        enable_forwarding(router.ns())?;
        let wan_ns = Netns::new(prefix)?;
        let wan_link = Veth::create(
            Iface::new(router.ns(), "wan0"),
            Iface::new(wan_ns.ns(), "eth0"),
        )
        .map_err(crate::lab::LabError::from)?;
        wan_link
            .a()
            .add_addr(ROUTER_WAN_V4.parse().expect("valid"))?;
        wan_link
            .a()
            .add_addr(ROUTER_WAN_V6.parse().expect("valid"))?;
        wan_link
            .b()
            .add_addr(Cidr::new(IpAddr::V4(WAN_V4), 24).expect("valid"))?;
        wan_link
            .b()
            .add_addr(Cidr::new(IpAddr::V6(WAN_V6), 64).expect("valid"))?;
        router
            .ns()
            .ip_run(["link", "set", "wan0", "mtu", &WAN_MTU.to_string()])?;
        for (gw, dev) in [
            ("198.51.100.1".parse().expect("valid"), "eth0"),
            ("2001:db8:100::1".parse().expect("valid"), "eth0"),
        ] {
            Route::default_via(gw, dev).add(wan_ns.ns())?;
        }
        for node in &built {
            Route::default_via(IpAddr::V4(router.v4()), LAN_IFNAME).add(node.ns())?;
            Route::default_via(IpAddr::V6(router.v6()), LAN_IFNAME).add(node.ns())?;
            for other in built.iter().filter(|o| o.name != node.name) {
                Route::via(other.pod_cidr_v4(), IpAddr::V4(other.v4())).add(node.ns())?;
                Route::via(other.pods.config().v6.network(), IpAddr::V6(other.v6()))
                    .add(node.ns())?;
            }
        }
        let wan = Wan {
            servers: Vec::new(),
            sink: None,
            recorder: None,
            netns: wan_ns,
        };
        let mut lab = Self {
            agents: (0..nodes).map(|_| None).collect(),
            pod_servers: Vec::new(),
            nodes: built,
            wan,
            _wan_link: wan_link,
            router,
            _lan: lan,
            manifests,
            prefix: prefix.into(),
            work,
        };
        lab.start_servers()?;
        lab.write_node_manifests()?;
        Ok(lab)
    }

    fn start_servers(&mut self) -> Result<(), NsLabError> {
        let echo = |name: &str, port: u16| ServerConfig {
            name: name.into(),
            tcp: vec![
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            ],
            udp: vec![
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            ],
            http: Vec::new(),
            mode: TcpMode::Request,
            echo_peer: true,
        };
        let server = |ns: &Ns, config: ServerConfig| -> Result<Server, NsLabError> {
            ns.run(|| Server::start(&config))?
                .map_err(|e| NsLabError::Other(e.to_string()))
        };
        let wan_echo = server(self.wan.ns(), echo("wan", WAN_ECHO))?;
        self.wan.servers.push(wan_echo);
        self.wan.sink = Some(self.wan.ns().run(|| Sink::start(WAN_SINK))??);
        self.wan.recorder = Some(self.wan.ns().run(|| Recorder::start(WAN_RECORD))??);
        for node in &self.nodes {
            for (i, pod) in node.pods.pods().iter().enumerate() {
                let name = format!("{}-pod-{}", node.name, i + 1);
                self.pod_servers
                    .push(server(pod.netns.ns(), echo(&name, POD_ECHO))?);
            }
        }
        Ok(())
    }

    fn write_node_manifests(&self) -> Result<(), NsLabError> {
        for node in &self.nodes {
            let yaml = format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  podCIDRs:\n  \
                 - {v4}\n  - {v6}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: \
                 {ip}\n",
                name = node.name,
                v4 = node.pods.config().v4.network(),
                v6 = node.pods.config().v6.network(),
                ip = node.v4(),
            );
            let path = self.manifests.join(format!("node-{}.yaml", node.name));
            fs::write(&path, yaml).map_err(io_err(format!("write {}", path.display())))?;
        }
        Ok(())
    }

    #[must_use]
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    #[must_use]
    pub fn wan(&self) -> &Wan {
        &self.wan
    }

    #[must_use]
    pub fn router(&self) -> &LanHost {
        &self.router
    }

    #[must_use]
    pub fn manifests(&self) -> &Path {
        &self.manifests
    }

    /// Starts (or replaces) the agent of node `i` with `--pod-cidr` and `extra` arguments.
    pub fn start_agent(
        &mut self,
        i: usize,
        ferrite: &Path,
        extra: &[&str],
    ) -> Result<&NodeAgent, NsLabError> {
        self.agents[i] = None;
        let config = self.agent_config(i, ferrite, extra);
        let agent = NodeAgent::start(
            &config,
            &self.nodes[i],
            &self.manifests,
            self.work.path(),
            &self.prefix,
        )?;
        Ok(self.agents[i].insert(agent))
    }

    fn agent_config(&self, i: usize, ferrite: &Path, extra: &[&str]) -> AgentConfig {
        let mut config = AgentConfig::new(ferrite);
        config.log_level = "info".into();
        config.extra_args = ["--pod-cidr".to_owned(), pod_cidrs(&self.nodes[i])]
            .into_iter()
            .chain(extra.iter().map(|s| (*s).to_owned()))
            .collect();
        config
    }

    /// `kill -9` of node `i`'s agent, then a new one on the same pinned datapath.
    pub fn kill_and_restart_agent(
        &mut self,
        i: usize,
        ferrite: &Path,
        extra: &[&str],
    ) -> Result<(), NsLabError> {
        let config = self.agent_config(i, ferrite, extra);
        let agent = self.agents[i]
            .as_mut()
            .ok_or_else(|| NsLabError::Other(format!("no agent on node{}", i + 1)))?;
        agent.signal(libc::SIGKILL)?;
        agent.restart(&config)
    }

    #[must_use]
    pub fn agent(&self, i: usize) -> Option<&NodeAgent> {
        self.agents[i].as_ref()
    }

    /// Stops every agent (and cleans its datapath).
    pub fn stop_agents(&mut self) {
        for a in &mut self.agents {
            *a = None;
        }
    }

    /// `ip -N route get DST` in `ns` (for the path MTU a pod learned).
    pub fn route_get(ns: &Ns, dst: IpAddr) -> Result<String, NsLabError> {
        let out = ns.ip_run(["route", "get", &dst.to_string()])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
