//! [`NodeAgent`]: a real `ferrite agent` inside a lab node's netns, with its own BPF root,
//! cgroup, API socket and state dir; stopped and cleaned up on drop.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{BPFFS, LAN_IFNAME, Node, NsLabError, io_err};
use crate::cgroup::Cgroup;
use crate::child::Child;
use crate::cmd;
use crate::netns::Ns;
use crate::wait::wait_until;

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
    /// `--devices` (the LAN device by default); `None` passes no `--devices`: the agent detects
    /// its devices, as the `DaemonSet`'s agent does.
    pub devices: Option<String>,
    /// `FERRITE_LOG`.
    pub log_level: String,
    /// How long the first apply may take.
    pub ready_timeout: Duration,
    /// Start the agent with the args and env of `ferrite manifests daemonset` ([`crate::shipped`]:
    /// only the source and host paths rewritten, the CNI dirs inside the node's work dir), then
    /// `--devices` when set and `extra_args`. Off: the lab's own minimal command line (tests of
    /// one flag or one subsystem).
    pub shipped: bool,
}

impl AgentConfig {
    #[must_use]
    pub fn new(ferrite: &Path) -> Self {
        Self {
            ferrite: ferrite.to_owned(),
            extra_args: Vec::new(),
            devices: Some(LAN_IFNAME.to_owned()),
            log_level: "debug".into(),
            ready_timeout: Duration::from_secs(20),
            shipped: false,
        }
    }

    /// The agent as the DaemonSet runs it: shipped args, devices detected, nothing appended.
    #[must_use]
    pub fn shipped(ferrite: &Path) -> Self {
        Self {
            devices: None,
            shipped: true,
            ..Self::new(ferrite)
        }
    }
}

/// `ferrite agent` running inside a node's netns. On drop: SIGTERM (SIGKILL after 3 s),
/// `ferrite agent --cleanup` in the same netns, and the BPF root removed.
#[derive(Debug)]
pub struct NodeAgent {
    child: Option<Child>,
    node: String,
    /// The node's LAN address (`status.hostIP` of the downward API).
    host_ip: IpAddr,
    ns: Ns,
    ferrite: PathBuf,
    pub socket: PathBuf,
    pub bpf_root: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    cgroup: Cgroup,
    manifests: PathBuf,
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
        let mut agent = Self {
            child: None,
            node: node.name.clone(),
            host_ip: IpAddr::V4(node.v4()),
            ns: node.ns().clone(),
            ferrite: config.ferrite.clone(),
            socket,
            bpf_root,
            state_dir,
            log,
            cgroup,
            manifests: manifests.to_owned(),
        };
        agent.spawn(config)?;
        Ok(agent)
    }

    /// Stops the agent process (SIGTERM) *without* cleaning its pinned datapath, then starts
    /// a new one with `config` on the same BPF root, socket and state: what a node's service
    /// manager does on an upgrade or a crash. Waits for the first apply.
    pub fn restart(&mut self, config: &AgentConfig) -> Result<(), NsLabError> {
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(3));
        }
        self.ferrite.clone_from(&config.ferrite);
        self.spawn(config)
    }

    fn spawn(&mut self, config: &AgentConfig) -> Result<(), NsLabError> {
        let log = &self.log;
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("open {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("dup log"))?;
        let _ = fs::remove_file(&self.socket);
        let source = format!("dir:{}", self.manifests.display());
        let mut command = self.command(config, &source)?;
        command
            .args(&config.extra_args)
            .env("FERRITE_LOG", &config.log_level)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.child = Some(self.ns.spawn(&mut command)?);
        let agent = self;
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
        Ok(())
    }

    /// The agent's command line before `extra_args`: the shipped DaemonSet's (paths rewritten)
    /// or the lab's minimal one. Never installs a CNI plugin into the host's directories.
    fn command(&self, config: &AgentConfig, source: &str) -> Result<Command, NsLabError> {
        let paths = crate::cmd::AgentPaths {
            bpf_root: &self.bpf_root,
            cgroup: self.cgroup.path(),
            api_socket: &self.socket,
            state_dir: &self.state_dir,
        };
        let mut command = if config.shipped {
            let conf = self.state_dir.with_file_name("cni-conf");
            let bin = self.state_dir.with_file_name("cni-bin");
            for dir in [&conf, &bin] {
                fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
            }
            let rewrite = crate::shipped::LabRewrite {
                source,
                node_name: &self.node,
                host_ip: Some(self.host_ip),
                paths,
                cni_dirs: Some((&conf, &bin)),
            };
            crate::shipped::agent_command(&config.ferrite, &rewrite)
                .map_err(|e| NsLabError::Other(e.to_string()))?
        } else {
            let mut c =
                crate::cmd::agent_command(config.ferrite.as_os_str(), source.as_ref(), paths);
            c.args(["--node-name", &self.node])
                .args(["--cni-conf-dir", "none"]);
            c
        };
        if let Some(devices) = &config.devices {
            command.args(["--devices", devices]);
        }
        Ok(command)
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
