//! [`L2Lab`]: the north-south lab ([`NsLab`]) with L2 announcements: the `dir:` folder holds a
//! `Node` per node with its LAN address as `InternalIP`, every node runs the agent exactly as the
//! shipped DaemonSet does ([`crate::shipped`]: its args and env, devices detected, only the source
//! and host paths rewritten, the lab's shared key file `--l2-key-file` among them) — membership binds to the Node's `InternalIP` on UDP 7946 and finds its peers
//! from the other Nodes, as in a real cluster — and `LoadBalancer` IPs come from the LAN subnet
//! itself, so clients (which have no route for them) resolve them
//! on-link with ARP / neighbor discovery and the elected node answers. [`L2Lab::trial`] breaks
//! the owner (`kill -9`, `SIGSTOP`, link down) while a client polls the address with ARP and
//! another keeps making requests, and measures the failover.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::l2raw::Watch;
use crate::manifest::{NsService, SvcEndpoint};
use crate::nslab::{AgentConfig, LAN_IFNAME, NsLab, NsLabConfig, NsLabError};
use crate::raw::Mac;
use crate::timeline::RequestLoop;
use crate::wait::wait_until;

/// The `LoadBalancer` addresses of the lab's services, on the LAN subnet (192.168.50.0/24,
/// `fd00:50::/64`) so clients resolve them on-link.
pub const LB_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 200);
pub const LB_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 0x200);
/// On the LAN, announced by nobody.
pub const UNOWNED_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 201);
pub const UNOWNED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 0x201);
/// UDP port of the membership protocol.
pub const MEMBER_PORT: u16 = 7946;
/// The interface regex of the lab's `L2AnnouncementPolicy`.
pub const POLICY_INTERFACES: &str = "^eth[0-9]+";
/// The manifest with the lab's `Node` objects.
pub const NODES_FILE: &str = "nodes.yaml";
/// The shared membership key, in the lab's work directory.
pub const KEY_FILE: &str = "l2.key";

mod trial;

use trial::measure;
pub use trial::{Distribution, Fault, Trial, TrialTiming};

/// The lab with agents that announce `LoadBalancer` IPs.
#[derive(Debug)]
pub struct L2Lab {
    lab: NsLab,
    base: AgentConfig,
    /// Faults in force, by node.
    impaired: Vec<Option<Fault>>,
}

impl L2Lab {
    /// Builds `nodes` nodes with `pods_per_node` pods each and two clients on the LAN; agents
    /// are started by [`L2Lab::start_agents`], always with the shipped args (`base` gives the
    /// binary, log level, timeout and `extra_args`; its `devices` is dropped: detected).
    pub fn build(
        prefix: &str,
        nodes: usize,
        pods_per_node: usize,
        base: AgentConfig,
        lab_bin: &Path,
    ) -> Result<Self, NsLabError> {
        let lab = NsLab::build(
            NsLabConfig {
                prefix: prefix.into(),
                nodes,
                pods_per_node,
                clients: 2,
                ..NsLabConfig::default()
            },
            lab_bin,
        )?;
        for node in lab.nodes() {
            // Keep the node's IPv6 address when a test pulls its cable.
            node.port.iface().conf(6, "keep_addr_on_down", "1")?;
        }
        lab.write_manifest(NODES_FILE, &nodes_yaml(&lab))?;
        write_key(&lab.work().join(KEY_FILE))?;
        Ok(Self {
            impaired: vec![None; nodes],
            lab,
            base: AgentConfig {
                shipped: true,
                devices: None,
                ..base
            },
        })
    }

    #[must_use]
    pub fn lab(&self) -> &NsLab {
        &self.lab
    }

    pub fn lab_mut(&mut self) -> &mut NsLab {
        &mut self.lab
    }

    /// The L2 arguments of node `i`: only the lab's key file path.
    #[must_use]
    pub fn l2_args(&self, i: usize) -> Vec<String> {
        l2_args(&self.lab, i)
    }

    /// The shared membership key file.
    #[must_use]
    pub fn key_file(&self) -> std::path::PathBuf {
        self.lab.work().join(KEY_FILE)
    }

    /// The agent configuration of node `i`: the base one plus its L2 flags.
    #[must_use]
    pub fn agent_config(&self, i: usize) -> AgentConfig {
        let mut c = self.base.clone();
        c.extra_args.extend(self.l2_args(i));
        c
    }

    /// Starts every node's agent (in parallel).
    pub fn start_agents(&mut self) -> Result<(), NsLabError> {
        let base = self.base.clone();
        let lab = &mut self.lab;
        let args: Vec<Vec<String>> = (0..lab.nodes().len()).map(|i| l2_args(lab, i)).collect();
        lab.start_agents_each(|i, _| {
            let mut c = base.clone();
            c.extra_args.extend(args[i].iter().cloned());
            c
        })
    }

    /// Replaces node `i`'s agent by a fresh one (the old one is stopped and cleaned up).
    pub fn restart_agent(&mut self, i: usize) -> Result<(), NsLabError> {
        let config = self.agent_config(i);
        self.lab.start_agent(i, &config)
    }

    /// `ferrite l2 -o json` of node `i`'s agent.
    pub fn view(&self, i: usize) -> Result<Value, NsLabError> {
        let out = self.lab.agent(i).cli(&["l2", "-o", "json"])?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| NsLabError::Other(format!("`ferrite l2 -o json` is not JSON: {e}")))
    }

    /// `ferrite l2` (the table) of node `i`'s agent.
    pub fn view_table(&self, i: usize) -> Result<String, NsLabError> {
        let out = self.lab.agent(i).cli(&["l2"])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Index of the node called `name`.
    #[must_use]
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.lab.nodes().iter().position(|n| n.name == name)
    }

    /// MAC of node `i`'s LAN interface.
    pub fn mac(&self, i: usize) -> Result<Mac, NsLabError> {
        self.lab.node(i).mac()
    }

    /// Nodes with a healthy agent (no fault in force).
    #[must_use]
    pub fn healthy(&self) -> Vec<usize> {
        (0..self.lab.nodes().len())
            .filter(|i| self.impaired[*i].is_none())
            .collect()
    }

    /// The owner of `addr` if every healthy agent lists exactly the healthy nodes as members
    /// and names the same owner, which says it announces the address on an interface.
    pub fn agreed_owner(&self, addr: IpAddr) -> Result<usize, String> {
        let healthy = self.healthy();
        let names: BTreeSet<String> = healthy
            .iter()
            .map(|i| self.lab.node(*i).name.clone())
            .collect();
        let mut owner: Option<String> = None;
        for &i in &healthy {
            let v = self.view(i).map_err(|e| e.to_string())?;
            let members: BTreeSet<String> = v["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if members != names {
                return Err(format!(
                    "{} sees members {members:?}, not {names:?}",
                    self.lab.node(i).name
                ));
            }
            let Some(entry) = address_entry(&v, addr) else {
                return Err(format!("{} does not list {addr}", self.lab.node(i).name));
            };
            let this = entry["owner"].as_str().map(str::to_owned);
            match (&owner, this) {
                (_, None) => {
                    return Err(format!("{} sees no owner of {addr}", self.lab.node(i).name));
                }
                (None, Some(o)) => owner = Some(o),
                (Some(a), Some(b)) if *a != b => {
                    return Err(format!("owners disagree on {addr}: {a} vs {b}"));
                }
                _ => {}
            }
        }
        let owner = owner.ok_or_else(|| "no healthy agent".to_owned())?;
        let index = self
            .node_index(&owner)
            .ok_or_else(|| format!("owner {owner} is not a lab node"))?;
        if !healthy.contains(&index) {
            return Err(format!("owner {owner} is not healthy"));
        }
        let v = self.view(index).map_err(|e| e.to_string())?;
        if address_entry(&v, addr)
            .and_then(|e| e["interface"].as_str())
            .is_none()
        {
            return Err(format!(
                "{owner} owns {addr} but announces it on no interface"
            ));
        }
        Ok(index)
    }

    /// Waits until [`L2Lab::agreed_owner`] holds; `Err` has the last reason it did not.
    pub fn wait_owner(&self, addr: IpAddr, timeout: Duration) -> Result<usize, String> {
        let mut last = Err("not checked".to_owned());
        let _ = wait_until(timeout, Duration::from_millis(50), || {
            last = self.agreed_owner(addr);
            last.is_ok()
        });
        last.map_err(|e| format!("no agreed owner of {addr} within {timeout:?}: {e}"))
    }

    /// Breaks node `i` with `fault`.
    pub fn fault(&mut self, i: usize, fault: Fault) -> Result<(), NsLabError> {
        match fault {
            Fault::Kill => self.lab.agent(i).signal(libc::SIGKILL)?,
            Fault::Stop => self.lab.agent(i).signal(libc::SIGSTOP)?,
            Fault::LinkDown => {
                self.lab
                    .node(i)
                    .ns()
                    .ip_run(["link", "set", LAN_IFNAME, "down"])?;
            }
        }
        self.impaired[i] = Some(fault);
        Ok(())
    }

    /// Undoes the fault on node `i`: a fresh agent after `kill -9`, `SIGCONT`, link up.
    pub fn heal(&mut self, i: usize) -> Result<(), NsLabError> {
        match self.impaired[i] {
            None => return Ok(()),
            Some(Fault::Kill) => self.restart_agent(i)?,
            Some(Fault::Stop) => self.lab.agent(i).signal(libc::SIGCONT)?,
            Some(Fault::LinkDown) => {
                self.lab
                    .node(i)
                    .ns()
                    .ip_run(["link", "set", LAN_IFNAME, "up"])?;
                // Taking the link down administratively removed the routes through it.
                self.lab.add_node_routes(i)?;
            }
        }
        self.impaired[i] = None;
        Ok(())
    }

    /// Writes `svc` to `file` with the pods of every node but `exclude` as its endpoints and
    /// waits until requests from client1 to its first LB IP (TCP `port`) reach exactly those
    /// pods. Failover trials use this so that breaking the owner (`exclude`) leaves no dead
    /// endpoint behind: then every failed request is the announcement's fault.
    pub fn serve_without(
        &self,
        file: &str,
        svc: &NsService,
        exclude: usize,
        port: u16,
    ) -> Result<(), String> {
        let mut svc = svc.clone();
        svc.endpoints = self
            .lab
            .nodes()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != exclude)
            .flat_map(|(_, n)| {
                (0..n.pods.pods().len()).map(move |p| SvcEndpoint::new(n.pod_v4(p), &n.name))
            })
            .collect();
        let want: BTreeSet<String> = self
            .lab
            .nodes()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != exclude)
            .flat_map(|(_, n)| (0..n.pods.pods().len()).map(move |p| n.pod_name(p)))
            .collect();
        self.lab
            .write_manifest(file, &svc.to_yaml())
            .map_err(|e| e.to_string())?;
        let target = SocketAddr::new(*svc.lb_ips.first().ok_or("the service has no LB IP")?, port);
        let mut last = None;
        let reached = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            let got = self
                .lab
                .attempts(0, target, crate::probe::Proto::Tcp, 24, 500)
                .map(|r| r.names.keys().cloned().collect::<BTreeSet<String>>());
            let done = got.as_ref().is_ok_and(|g| *g == want);
            last = Some(got.map_err(|e| e.to_string()));
            done
        });
        reached
            .map(drop)
            .map_err(|_| format!("requests to {target} never reached exactly {want:?}: {last:?}"))
    }

    /// The MAC client `client`'s kernel has for `addr` (`ip neigh`), with its state.
    pub fn client_neighbor(
        &self,
        client: usize,
        addr: IpAddr,
    ) -> Result<Option<String>, NsLabError> {
        let out = self.lab.client(client).ns().ip_run([
            "neigh",
            "show",
            &addr.to_string(),
            "dev",
            LAN_IFNAME,
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().next().and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let mac = words
                .iter()
                .position(|w| *w == "lladdr")
                .and_then(|p| words.get(p + 1))?;
            Some(format!("{mac} {}", words.last().unwrap_or(&"")))
        }))
    }

    /// One failover trial on `addr` (IPv4) with TCP `port`: waits for an agreed owner, starts
    /// the ARP poller (client2) and the request loop (client1), breaks the owner, waits for
    /// the survivors to agree on a new owner, heals, waits for the steady state again.
    pub fn trial(
        &mut self,
        addr: Ipv4Addr,
        port: u16,
        fault: Fault,
        timing: &TrialTiming,
    ) -> Result<Trial, String> {
        let ip = IpAddr::V4(addr);
        let owner = self.wait_owner(ip, timing.limit)?;
        let old_mac = self.mac(owner).map_err(|e| e.to_string())?;
        let stale_client_entry_before = self
            .client_neighbor(0, ip)
            .ok()
            .flatten()
            .filter(|n| !n.starts_with(&old_mac.to_string()));
        if stale_client_entry_before.is_some() {
            for c in self.lab.clients() {
                let _ = c
                    .ns()
                    .ip_run(["neigh", "del", &ip.to_string(), "dev", LAN_IFNAME]);
            }
        }
        let old_owner = self.lab.node(owner).name.clone();
        let poller = self.lab.client(1);
        let watch = Watch::start(
            poller.ns(),
            LAN_IFNAME,
            IpAddr::V4(poller.v4()),
            ip,
            timing.poll,
        )
        .map_err(|e| format!("ARP poller: {e}"))?;
        let requests = RequestLoop::start(
            self.lab.client(0).ns(),
            SocketAddr::new(ip, port),
            timing.request_interval,
            timing.request_timeout,
        )
        .map_err(|e| format!("request loop: {e}"))?;
        let t_start = Instant::now();
        std::thread::sleep(timing.before);
        let t0 = Instant::now();
        self.fault(owner, fault).map_err(|e| e.to_string())?;
        let new_owner = wait_until(timing.limit, Duration::from_millis(20), || {
            self.agreed_owner(ip).is_ok_and(|o| o != owner)
        })
        .ok()
        .and_then(|_| self.agreed_owner(ip).ok());
        std::thread::sleep(timing.settle);
        let client_neighbor = self.client_neighbor(0, ip).ok().flatten();
        let t_heal = Instant::now();
        let healed = self.heal(owner).map_err(|e| e.to_string());
        let steady = healed.and_then(|()| self.wait_owner(ip, timing.limit));
        std::thread::sleep(timing.settle);
        let t_end = Instant::now();
        let attempts = requests.stop()?;
        let log = watch.stop().map_err(|e| format!("ARP poller: {e}"))?;
        // The first agreement can come before the healed node noticed its own link again (its
        // eligibility lags by an interface poll), so the owner that counts is the one agreed
        // after the settle period.
        let healed_owner = steady.and_then(|_| self.wait_owner(ip, timing.limit))?;
        let healed_mac = self.mac(healed_owner).map_err(|e| e.to_string())?;
        let client_not_following_after_heal = self
            .client_neighbor(0, ip)
            .ok()
            .flatten()
            .filter(|n| !n.starts_with(&healed_mac.to_string()));
        let new_mac = match new_owner {
            Some(i) => Some(self.mac(i).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut trial = measure(
            fault,
            &old_owner,
            new_owner.map(|i| self.lab.node(i).name.clone()),
            (old_mac, new_mac),
            &log,
            &attempts,
            (t_start, t0, t_heal, t_end),
            client_neighbor,
        );
        trial.stale_client_entry_before = stale_client_entry_before;
        trial.healed_owner = Some(self.lab.node(healed_owner).name.clone());
        trial.client_not_following_after_heal = client_not_following_after_heal;
        Ok(trial)
    }
}

/// The entry of `addr` in a `ferrite l2 -o json` view.
#[must_use]
pub fn address_entry(view: &Value, addr: IpAddr) -> Option<&Value> {
    view["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["address"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(addr))
}

/// The L2 arguments for node `i` of `lab`: `--l2-key-file` with the lab's key (the default
/// `/etc/ferrite/l2.key` rewritten into the lab, like every other path). Membership binds to the
/// Node's `InternalIP` and seeds from the other Nodes by default.
#[must_use]
pub fn l2_args(lab: &NsLab, _i: usize) -> Vec<String> {
    vec![
        "--l2-key-file".into(),
        lab.work().join(KEY_FILE).display().to_string(),
    ]
}

/// `--l2-bind NODE_IP:7946 --l2-peers OTHER_IP:7946,...` for node `i` (tests where the flags
/// are the point).
#[must_use]
pub fn explicit_l2_args(lab: &NsLab, i: usize) -> Vec<String> {
    let me = lab.node(i);
    let peers: Vec<String> = lab
        .nodes()
        .iter()
        .filter(|n| n.name != me.name)
        .map(|n| format!("{}:{MEMBER_PORT}", n.v4()))
        .collect();
    vec![
        "--l2-bind".into(),
        format!("{}:{MEMBER_PORT}", me.v4()),
        "--l2-peers".into(),
        peers.join(","),
    ]
}

/// A `Node` per lab node, its LAN IPv4 address as `InternalIP`.
#[must_use]
pub fn nodes_yaml(lab: &NsLab) -> String {
    lab.nodes()
        .iter()
        .map(|n| crate::manifest::node_yaml(&n.name, IpAddr::V4(n.v4()), &[]))
        .collect()
}

/// A random membership key (hex, what `ferrite l2 keygen` prints) at `path`, mode 0600.
pub fn write_key(path: &Path) -> Result<(), NsLabError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |what: &str, e: std::io::Error| NsLabError::Other(format!("{what}: {e}"));
    let mut bytes = [0_u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| err("reading /dev/urandom", e))?;
    let hex = bytes.iter().fold(String::new(), |mut s, b| {
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
        s
    });
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{hex}\n").as_bytes()))
        .map_err(|e| err(&format!("writing {}", path.display()), e))
}
