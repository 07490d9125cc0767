//! The benchmark's cluster and agent: generated `Service`s and `EndpointSlice`s, a `ferrite agent`
//! process on its own BPF root and cgroup, and direct reads of its pinned frontend map.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use ferrite_abi::{FAMILY_V4, PROTO_TCP, SvcKey, SvcValue, map_names};
use ferrite_lab::{Cgroup, Child};
use serde_json::{Value, json};

pub const NAMESPACE: &str = "bench";
const BPFFS: &str = "/sys/fs/bpf";

/// Service `i`'s cluster IP: 10.100.0.0 + i + 1.
pub fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + n)
}

fn endpoint_ip(i: usize, j: usize, per_service: usize) -> Ipv4Addr {
    let n = u32::try_from(i * (per_service + 1) + j + 1).unwrap_or(u32::MAX);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + n)
}

pub fn service(i: usize) -> Value {
    let ip = cluster_ip(i).to_string();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": NAMESPACE},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

/// Service `i`'s slice with `endpoints` ready endpoints (at most `per_service + 1`).
pub fn slice(i: usize, endpoints: usize, per_service: usize) -> Value {
    let eps: Vec<Value> = (0..endpoints)
        .map(|j| {
            json!({"addresses": [endpoint_ip(i, j, per_service).to_string()],
                   "conditions": {"ready": true}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-a"), "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    })
}

/// Objects as multi-document YAML (for the `dir:` source).
pub fn yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string(o).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// A running agent; stopped and its BPF root removed on drop.
pub struct AgentProc {
    child: Child,
    bpf_root: PathBuf,
    pub log: PathBuf,
    _cgroup: Cgroup,
}

impl AgentProc {
    /// `ferrite agent --source SOURCE` with its own BPF root, cgroup, socket and state under
    /// `work`, and `env` added.
    pub fn start(
        ferrite: &Path,
        work: &Path,
        label: &str,
        source: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Self, String> {
        let state = work.join(format!("{label}-state"));
        let _ = fs::remove_dir_all(&state);
        fs::create_dir_all(&state).map_err(|e| format!("create {}: {e}", state.display()))?;
        let bpf_root = Path::new(BPFFS).join(format!("ferrite-lab-{}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&bpf_root);
        let cgroup = Cgroup::new("flb").map_err(|e| format!("cgroup: {e}"))?;
        let log = work.join(format!("{label}-agent.log"));
        let out = fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("log: {e}"))?;
        let socket = work.join(format!("{label}.sock"));
        let mut command = ferrite_lab::cmd::agent_command(
            ferrite.as_os_str(),
            source.as_ref(),
            ferrite_lab::cmd::AgentPaths {
                bpf_root: &bpf_root,
                cgroup: cgroup.path(),
                api_socket: &socket,
                state_dir: &state,
            },
        );
        command
            // The root netns: never attach north-south to the host's own NICs.
            .args(["--node-name", "bench-node", "--cni-conf-dir", "none"])
            .args(["--devices", "none"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = Child::spawn(&mut command).map_err(|e| e.to_string())?;
        Ok(Self {
            child,
            bpf_root,
            log,
            _cgroup: cgroup,
        })
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the agent's log (for errors).
    pub fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// `VmRSS` and `VmHWM` in KiB.
    pub fn memory(&self) -> Result<(u64, u64), String> {
        let m = super::super::agent::Memory::of(self.child.id())?;
        Ok((m.rss_kb, m.hwm_kb))
    }

    /// Waits for the pinned frontend map to appear and opens it.
    pub fn frontends(&mut self, timeout: Duration) -> Result<Frontends, String> {
        let pin = self.bpf_root.join("maps").join(map_names::SERVICES);
        let start = Instant::now();
        loop {
            if let Ok(data) = MapData::from_pin(&pin) {
                let map = HashMap::try_from(Map::HashMap(data))
                    .map_err(|e| format!("{}: {e}", pin.display()))?;
                return Ok(Frontends { map });
            }
            if !self.running() {
                return Err(format!("agent exited: {}", self.tail()));
            }
            if start.elapsed() > timeout {
                return Err(format!("{} did not appear in {timeout:?}", pin.display()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.stop(Duration::from_secs(5));
        let _ = fs::remove_dir_all(&self.bpf_root);
    }
}

/// The agent's pinned `SvcKey → SvcValue` map.
pub struct Frontends {
    map: HashMap<MapData, SvcKey, SvcValue>,
}

impl Frontends {
    /// The slot count of service `i`'s TCP/80 frontend, `None` when it is not in the map.
    pub fn count(&self, i: usize) -> Option<u16> {
        let key = SvcKey {
            addr: [u32::from_ne_bytes(cluster_ip(i).octets()), 0, 0, 0],
            port: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
        };
        self.map.get(&key, 0).ok().map(|v| v.count)
    }
}
