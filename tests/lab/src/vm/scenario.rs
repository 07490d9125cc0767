//! The scenario `/init` runs in the VM ([`INIT`]) and the files it reads, all written here so
//! the addresses, the manifests and the agent's command line have one source: the shipped
//! DaemonSet's args with the source and the host paths rewritten ([`crate::shipped`]), a `dir:`
//! folder holding the VM's own `Node` (InternalIP + PodCIDR), a `LoadBalancerIPPool` and an
//! `L2AnnouncementPolicy`; the `LoadBalancer` service is written into the folder by `/init`
//! once the pod exists (its EndpointSlice names the pod's address).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::initramfs::{self, GuestFile};
use super::qemu::{self, CLIENT_MAC, NODE_MAC};
use super::{Arch, Kernel, Line, VmError};
use crate::cmd::AgentPaths;
use crate::manifest::{
    NsService, SvcEndpoint, ip_pool_yaml, l2_policy_yaml, node_with_pod_cidrs_yaml,
};
use crate::nslab::WorkDir;
use crate::shipped::{LabRewrite, daemonset_args, dir_source_env};

/// The `/init` script.
pub const INIT: &str = include_str!("init.sh");

/// Every step `/init` must report `OK`, in order.
pub const STEPS: [&str; 12] = [
    "boot",
    "modules",
    "network",
    "agent",
    "pod",
    "clusterip",
    "nodeport",
    "l2-arp",
    "lb-ip",
    "pod-hooks",
    "restart",
    "doctor",
];

/// Modules loaded (with their dependencies) before anything else: the virtio NICs, pod veths,
/// and clsact + cls_bpf for TC attach without TCX.
pub const MODULES: [&str; 5] = ["virtio_pci", "virtio_net", "veth", "sch_ingress", "cls_bpf"];

const NODE_NAME: &str = "vm-node1";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 10);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 254);
const LAN_PREFIX: u8 = 24;
const POD_CIDR: &str = "10.244.0.0/24";
/// The one address of the pool: the service's LoadBalancer IP.
const LB_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 200);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NODE_PORT: u16 = 30080;
/// Stands for the pod's address in `services.yaml.in` until `/init` knows it.
const POD_IP_PLACEHOLDER: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 254);

/// Guest paths: the DaemonSet's where a node has them, the standalone CNI dirs (no k3s here),
/// and the agent's socket LB on the node's cgroup (the client runs outside it).
const MANIFESTS: &str = "/etc/ferrite-vm/manifests";
const BPF_ROOT: &str = "/sys/fs/bpf/ferrite";
const NODE_CGROUP: &str = "/sys/fs/cgroup/node";
const OUTSIDE_CGROUP: &str = "/sys/fs/cgroup/outside";
const API_SOCKET: &str = "/run/ferrite/ferrite.sock";
const STATE_DIR: &str = "/var/lib/ferrite";
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
const CNI_BIN_DIR: &str = "/opt/cni/bin";

/// The pod's server: who answered, then an echo of everything sent.
const SERVE: &str = "#!/bin/sh\necho \"pod=$POD\"\nexec cat\n";

/// A scenario run to prepare.
#[derive(Clone, Debug)]
pub struct VmScenario {
    pub kernel: Kernel,
    /// The static binary for the guest.
    pub ferrite: PathBuf,
    /// A binary the host can run, for `ferrite manifests daemonset`.
    pub host_ferrite: PathBuf,
    /// In-guest watchdog; the host kills qemu a minute later.
    pub timeout: Duration,
    pub memory_mb: u32,
}

/// What a passing run measured.
#[derive(Debug)]
pub struct VmRun {
    pub console: String,
    /// The `OK` lines, step → detail (with the guest uptime `t=`).
    pub steps: Vec<(String, String)>,
    /// qemu start to exit.
    pub elapsed: Duration,
    pub initramfs_bytes: u64,
    pub build: Duration,
    pub modules: Vec<String>,
}

impl VmScenario {
    /// Builds the initramfs, boots it and checks the console: every step `OK`, `DONE pass`.
    pub fn run(&self) -> Result<VmRun, VmError> {
        let arch = self.kernel.arch;
        let work = WorkDir::new(&format!("vm{arch}")).map_err(|e| VmError::Other(e.to_string()))?;
        let started = Instant::now();
        let initrd = work.path().join("initramfs.cpio");
        let contents = initramfs::write(
            &self.kernel,
            &self.ferrite,
            &MODULES,
            &self.files()?,
            &initrd,
        )?;
        let build = started.elapsed();
        let deadline = self.timeout + Duration::from_mins(1);
        let boot = qemu::boot(&self.kernel, &initrd, work.path(), self.memory_mb, deadline)?;
        let markers = Markers::parse(&boot.console);
        markers.verdict().map_err(|reason| VmError::Scenario {
            arch,
            reason,
            console: boot.console.clone(),
        })?;
        Ok(VmRun {
            console: boot.console,
            steps: markers.ok,
            elapsed: boot.elapsed,
            initramfs_bytes: contents.bytes,
            build,
            modules: contents.modules,
        })
    }

    /// `/init` and everything it reads.
    fn files(&self) -> Result<Vec<GuestFile>, VmError> {
        let (args, env) = daemonset_args(
            &self.host_ferrite,
            &LabRewrite {
                source: &format!("dir:{MANIFESTS}"),
                node_name: NODE_NAME,
                host_ip: Some(IpAddr::V4(NODE_IP)),
                paths: AgentPaths {
                    bpf_root: Path::new(BPF_ROOT),
                    cgroup: Path::new(NODE_CGROUP),
                    api_socket: Path::new(API_SOCKET),
                    state_dir: Path::new(STATE_DIR),
                },
                cni_dirs: Some((Path::new(CNI_CONF_DIR), Path::new(CNI_BIN_DIR))),
            },
        )?;
        let mut agent_env = String::new();
        for (k, v) in dir_source_env(env) {
            let _ = writeln!(agent_env, "export {k}={}", shell_quote(&v));
        }
        let pool = format!("{LB_IP}/32")
            .parse()
            .map_err(|e| VmError::Other(format!("pool: {e}")))?;
        let pod_cidr = POD_CIDR
            .parse()
            .map_err(|e| VmError::Other(format!("pod CIDR: {e}")))?;
        let mut web = NsService::load_balancer("web", CLUSTER_IP, IpAddr::V4(LB_IP), NODE_PORT);
        web.lb_ips.clear();
        web.endpoints = vec![SvcEndpoint::new(POD_IP_PLACEHOLDER, NODE_NAME)];
        let svc_port = web.port("http").port;
        let pod_port = web.port("http").target_port;
        let ready_tries = self.timeout.as_secs().max(10);
        let pod_device = if self.kernel.netkit { "netkit" } else { "veth" };
        let vars: [(&str, String); 22] = [
            ("POD_DEVICE", pod_device.into()),
            ("VM_TIMEOUT", self.timeout.as_secs().to_string()),
            ("READY_TRIES", ready_tries.to_string()),
            ("NODE_MAC", NODE_MAC.into()),
            ("CLIENT_MAC", CLIENT_MAC.into()),
            ("NODE_IP", NODE_IP.to_string()),
            ("CLIENT_IP", CLIENT_IP.to_string()),
            ("GATEWAY", GATEWAY.to_string()),
            ("LAN_PREFIX", LAN_PREFIX.to_string()),
            ("LB_IP", LB_IP.to_string()),
            ("CLUSTER_IP", CLUSTER_IP.to_string()),
            ("SVC_PORT", svc_port.to_string()),
            ("NODE_PORT", NODE_PORT.to_string()),
            ("POD_PORT", pod_port.to_string()),
            ("POD_IP_PLACEHOLDER", POD_IP_PLACEHOLDER.to_string()),
            ("MANIFESTS", MANIFESTS.into()),
            ("NODE_CGROUP", NODE_CGROUP.into()),
            ("OUTSIDE_CGROUP", OUTSIDE_CGROUP.into()),
            ("API_SOCKET", API_SOCKET.into()),
            ("CNI_CONF_DIR", CNI_CONF_DIR.into()),
            ("CNI_BIN_DIR", CNI_BIN_DIR.into()),
            ("BPF_ROOT", BPF_ROOT.into()),
        ];
        let mut env = String::new();
        for (k, v) in vars {
            let _ = writeln!(env, "export {k}={}", shell_quote(&v));
        }
        let text = |path: &str, mode: u32, s: String| (path.to_owned(), mode, s.into_bytes());
        Ok(vec![
            text("init", 0o755, INIT.to_owned()),
            text("etc/ferrite-vm/scenario.env", 0o644, env),
            text("etc/ferrite-vm/agent.env", 0o644, agent_env),
            text("etc/ferrite-vm/agent.args", 0o644, args.join("\n") + "\n"),
            text("etc/ferrite-vm/serve.sh", 0o755, SERVE.to_owned()),
            text("etc/ferrite-vm/services.yaml.in", 0o644, web.to_yaml()),
            text(
                &format!("{}/node.yaml", MANIFESTS.trim_start_matches('/')),
                0o644,
                node_with_pod_cidrs_yaml(NODE_NAME, IpAddr::V4(NODE_IP), &[pod_cidr]),
            ),
            text(
                &format!("{}/lan.yaml", MANIFESTS.trim_start_matches('/')),
                0o644,
                ip_pool_yaml("vm-lan", &pool) + &l2_policy_yaml("vm-lan", &["^eth[0-9]+"]),
            ),
        ])
    }
}

/// `'…'` with embedded quotes escaped, for `export K=V` lines.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `FERRITE-VM:` lines of a console.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Markers {
    pub ok: Vec<(String, String)>,
    pub failures: Vec<String>,
    /// `DONE pass` → true, `DONE fail` → false, none → `None`.
    pub done: Option<bool>,
}

impl Markers {
    #[must_use]
    pub fn parse(console: &str) -> Self {
        let mut m = Self::default();
        for line in console.lines() {
            // Kernel messages can share a line with a marker: take it from where it starts.
            let Some(at) = line.find("FERRITE-VM: ") else {
                continue;
            };
            let rest = line[at + "FERRITE-VM: ".len()..].trim_end();
            if let Some(ok) = rest.strip_prefix("OK ") {
                let (step, detail) = ok.split_once(' ').unwrap_or((ok, ""));
                m.ok.push((step.to_owned(), detail.to_owned()));
            } else if let Some(fail) = rest.strip_prefix("FAIL ") {
                m.failures.push(fail.to_owned());
            } else if let Some(done) = rest.strip_prefix("DONE ") {
                m.done = Some(done == "pass");
            }
        }
        m
    }

    /// `Ok` when every step passed in order and the run said `DONE pass`; else why not.
    pub fn verdict(&self) -> Result<(), String> {
        if !self.failures.is_empty() {
            return Err(self.failures.join("; "));
        }
        let seen: Vec<&str> = self.ok.iter().map(|(s, _)| s.as_str()).collect();
        if seen != STEPS {
            let missing: Vec<&str> = STEPS.into_iter().filter(|s| !seen.contains(s)).collect();
            return Err(format!(
                "steps reported: [{}], missing: [{}]",
                seen.join(" "),
                missing.join(" ")
            ));
        }
        match self.done {
            Some(true) => Ok(()),
            Some(false) => Err("DONE fail".into()),
            None => Err("no DONE marker (the guest stopped early)".into()),
        }
    }
}

/// `arch`'s scenario on the cached kernel of `line`, with the workspace's static binaries and
/// the defaults the tests use.
pub fn for_workspace(workspace: &Path, arch: Arch, line: Line) -> Result<VmScenario, VmError> {
    let kernel = Kernel::cached(arch, line)?;
    Ok(VmScenario {
        ferrite: super::static_ferrite(workspace, arch)?,
        host_ferrite: super::static_ferrite(workspace, Arch::X86_64)?,
        kernel,
        timeout: Duration::from_secs(match arch {
            Arch::X86_64 => 150,
            Arch::Aarch64 => 240,
        }),
        memory_mb: 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(steps: &[&str], done: &str) -> String {
        let mut c = String::from("[    0.000000] Linux version 6.1.0\n");
        for s in steps {
            let _ = writeln!(c, "FERRITE-VM: OK {s} t=1.00s detail");
        }
        c + &format!("FERRITE-VM: DONE {done}\r\n")
    }

    #[test]
    fn a_run_passes_only_with_every_step_and_done_pass() {
        let all = Markers::parse(&console(&STEPS, "pass"));
        assert_eq!(all.verdict(), Ok(()));
        assert_eq!(all.ok[0], ("boot".to_owned(), "t=1.00s detail".to_owned()));
        let last = STEPS.len() - 1;
        let missing = Markers::parse(&console(&STEPS[..last], "pass"));
        let want = format!("missing: [{}]", STEPS[last]);
        assert!(missing.verdict().unwrap_err().contains(&want));
        let no_done = Markers::parse(&console(&STEPS, "pass").replace("FERRITE-VM: DONE pass", ""));
        assert!(no_done.verdict().unwrap_err().contains("no DONE"));
        let mut failed = console(&STEPS[..4], "fail");
        failed.push_str("[   3.1] random: crng init done FERRITE-VM: FAIL pod: CNI ADD: boom\n");
        let failed = Markers::parse(&failed);
        assert_eq!(failed.failures, ["pod: CNI ADD: boom"]);
        assert_eq!(failed.verdict(), Err("pod: CNI ADD: boom".to_owned()));
    }

    #[test]
    fn env_values_are_quoted_for_sh() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
