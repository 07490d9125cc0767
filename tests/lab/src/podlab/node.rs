//! One [`PodLab`](super::PodLab) node: its netns, LAN port, agent and pods.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::cni::CniPod;
use super::containerd::{Containerd, agent_wrapper};
use crate::cgroup::Cgroup;
use crate::child::Child;
use crate::cmd::{self, AgentPaths};
use crate::lab::LanPort;
use crate::netns::Netns;
use crate::nslab::{BPFFS, NsLabError, ensure_bpffs, io_err};
use crate::shipped::{LabRewrite, agent_command};
use crate::wait::wait_until;

/// A node (see the module docs of [`super`]). Pods drop first, then the agent (stopped, then
/// `ferrite agent --cleanup`), then the netns.
pub struct PodNode {
    pub pods: Vec<CniPod>,
    agent: Option<Child>,
    /// The node's containerd (labs driven over CRI; see [`super::containerd`]).
    pub containerd: Option<Containerd>,
    /// `--l2-key-file` for the agent (the DaemonSet's Secret, as a lab file), when set.
    pub l2_key: Option<PathBuf>,
    pub name: String,
    /// 1-based: the `N` of its PodCIDRs.
    pub index: usize,
    pub port: LanPort,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub bpf_root: PathBuf,
    pub log: PathBuf,
    cgroup: Cgroup,
    ferrite: PathBuf,
    pub ns: Netns,
}

impl PodNode {
    pub(super) fn new(
        name: String,
        index: usize,
        ns: Netns,
        port: LanPort,
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
        let dir = work.join(&name);
        let conf_dir = dir.join("cni-conf");
        let bin_dir = dir.join("cni-bin");
        let state_dir = dir.join("state");
        for d in [&conf_dir, &bin_dir, &state_dir] {
            fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
        }
        Ok(Self {
            pods: Vec::new(),
            agent: None,
            containerd: None,
            l2_key: None,
            name,
            index,
            port,
            socket: dir.join("ferrite.sock"),
            log: dir.join("agent.log"),
            dir,
            state_dir,
            conf_dir,
            bin_dir,
            bpf_root,
            cgroup,
            ferrite: PathBuf::new(),
            ns,
        })
    }

    #[must_use]
    pub fn v4(&self) -> Ipv4Addr {
        match self.port.v4.addr() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("IPv4 port address"),
        }
    }

    #[must_use]
    pub fn v6(&self) -> Ipv6Addr {
        match self.port.v6.addr() {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => unreachable!("IPv6 port address"),
        }
    }

    /// The cgroup the agent's socket LB is attached to: clients that should see ClusterIPs
    /// run in it.
    #[must_use]
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// The conflist the agent wrote.
    #[must_use]
    pub fn conflist(&self) -> PathBuf {
        self.conf_dir.join("05-ferrite.conflist")
    }

    /// Starts the shipped agent; waits for a first apply and the conflist.
    pub(super) fn start_agent(
        &mut self,
        ferrite: &Path,
        source: &str,
        extra: &[String],
        log_level: &str,
    ) -> Result<(), NsLabError> {
        if let Some(mut c) = self.agent.take() {
            let _ = c.stop(Duration::from_secs(3));
        }
        ferrite.clone_into(&mut self.ferrite);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_err(format!("open {}", self.log.display())))?;
        let err = out.try_clone().map_err(io_err("dup log"))?;
        let _ = fs::remove_file(&self.socket);
        let mut command = agent_command(
            ferrite,
            &LabRewrite {
                source,
                node_name: &self.name,
                host_ip: Some(IpAddr::V4(self.v4())),
                paths: AgentPaths {
                    bpf_root: &self.bpf_root,
                    cgroup: self.cgroup.path(),
                    api_socket: &self.socket,
                    state_dir: &self.state_dir,
                },
                // With containerd, the agent reads the dirs from its config.toml.
                cni_dirs: self
                    .containerd
                    .is_none()
                    .then_some((&self.conf_dir, &self.bin_dir)),
            },
        )
        .map_err(|e| NsLabError::Other(e.to_string()))?;
        if let Some(key) = &self.l2_key {
            command.arg("--l2-key-file").arg(key);
        }
        if let Some(c) = &self.containerd {
            command = agent_wrapper(&command, &c.etc)?;
        }
        command
            .args(extra)
            .env("FERRITE_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.agent = Some(self.ns.spawn(&mut command)?);
        let mut exited = None;
        let ready = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            if let Some(c) = self.agent.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                exited = Some(status);
                return true;
            }
            self.conflist().exists()
                && self
                    .status()
                    .is_ok_and(|s| s["last_apply"]["generation"].as_u64().unwrap_or(0) >= 1)
        });
        if let Some(status) = exited {
            return Err(NsLabError::Other(format!(
                "ferrite agent on {} exited ({status}); log:\n{}",
                self.name,
                self.log_tail(40)
            )));
        }
        if ready.is_err() {
            return Err(NsLabError::Other(format!(
                "ferrite agent on {} not ready (first apply + conflist) within 20 s; log:\n{}",
                self.name,
                self.log_tail(40)
            )));
        }
        Ok(())
    }

    /// The running agent's process id.
    #[must_use]
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// `kill -9` of the agent (the pinned datapath, routes and devices stay).
    pub fn kill_agent(&mut self) -> Result<(), NsLabError> {
        if let Some(c) = self.agent.take() {
            c.signal(libc::SIGKILL)
                .map_err(|e| NsLabError::Other(format!("agent on {}: {e}", self.name)))?;
            let mut c = c;
            let _ = c.stop(Duration::from_secs(2));
        }
        Ok(())
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

    fn json(&self, args: &[&str]) -> Result<Value, NsLabError> {
        let out = self.cli(args)?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| NsLabError::Other(format!("{args:?} is not JSON: {e}")))
    }

    /// `ferrite status -o json`.
    pub fn status(&self) -> Result<Value, NsLabError> {
        self.json(&["status", "-o", "json"])
    }

    /// `ferrite routes -o json`.
    pub fn routes(&self) -> Result<Value, NsLabError> {
        self.json(&["routes", "-o", "json"])
    }

    /// The route this agent reports for `cidr` as `mode/state` (e.g. `vxlan/ok`), `absent`
    /// when `ferrite routes` has none.
    #[must_use]
    pub fn route_mode(&self, cidr: &str) -> String {
        self.routes()
            .ok()
            .and_then(|v| {
                let r = v["routes"].as_array()?.iter().find(|r| r["cidr"] == cidr)?;
                Some(format!(
                    "{}/{}",
                    r["mode"].as_str().unwrap_or("?"),
                    r["state"].as_str().unwrap_or("?")
                ))
            })
            .unwrap_or_else(|| "absent".into())
    }

    /// The last `lines` lines of the agent's log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `ip ARGS` in the node, stdout as text.
    pub fn ip(&self, args: &[&str]) -> Result<String, NsLabError> {
        let out = self.ns.ip_run(args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for PodNode {
    fn drop(&mut self) {
        self.pods.clear();
        if let Some(mut c) = self.agent.take() {
            let _ = c.stop(Duration::from_secs(3));
        }
        self.containerd = None;
        if !self.ferrite.as_os_str().is_empty()
            && let Ok(mut c) = self.ns.command(&self.ferrite)
        {
            let _ = cmd::run(
                c.args(["agent", "--cleanup", "--bpf-root"])
                    .arg(&self.bpf_root),
            );
        }
        let _ = fs::remove_dir_all(&self.bpf_root);
    }
}
