//! Shared fixtures of the privileged integration tests: a node netns with pods running
//! `ferrite-lab serve`, a test cgroup for client processes, and the real `ferrite agent` on a
//! `dir:` source with its own bpf root and API socket. Everything is removed on drop.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrite_lab::report::ClientReport;
use ferrite_lab::{Cgroup, Child, Netns, PodNet, PodNetConfig, wait_until};

pub mod pki;

pub const FERRITE: &str = env!("CARGO_BIN_EXE_ferrite");

/// `curl ARGS URL`: (exit code, HTTP status, body). The status is 0 when no HTTP answer came.
pub fn curl(args: &[&str], url: &str) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (make setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

/// `ferrite manifests rbac --namespace kube-system`: the addon's RBAC as YAML.
pub fn generated_rbac() -> String {
    let out = Command::new(FERRITE)
        .args(["manifests", "rbac", "--namespace", "kube-system"])
        .output()
        .expect("run ferrite manifests rbac");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Fails (never skips) with what to install when the machine cannot run privileged tests.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged tests must run as root (sudo make test)"
    );
    require_tools(&["ip", "bpftool"], "apt-get install iproute2 bpftool");
}

/// Fails (never skips) naming what to install when one of `tools` is not on PATH.
pub fn require_tools(tools: &[&str], install: &str) {
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{tool} not found: run `make setup` ({install})");
    }
}

pub fn lab_bin() -> PathBuf {
    ferrite_lab::lab_bin().expect(
        "ferrite-lab binary not found next to the test binary: run `cargo build --workspace` \
         (make test does)",
    )
}

/// A unique scratch directory under /tmp, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent under test and everything it needs.
pub struct AgentLab {
    pub agent: Option<Child>,
    pub manifests: PathBuf,
    pub socket: PathBuf,
    pub bpf_root: PathBuf,
    pub cgroup: Cgroup,
    pub work: TempDir,
}

impl AgentLab {
    pub fn new(prefix: &str) -> Self {
        let work = TempDir::new(prefix);
        let manifests = work.path().join("manifests");
        std::fs::create_dir_all(&manifests).expect("manifest dir");
        let cgroup = Cgroup::new(prefix).expect("test cgroup");
        let name = cgroup.path().file_name().expect("cgroup name").to_owned();
        let bpf_root = Path::new("/sys/fs/bpf").join(name);
        Self {
            agent: None,
            socket: work.path().join("ferrite.sock"),
            manifests,
            bpf_root,
            cgroup,
            work,
        }
    }

    pub fn write(&self, file: &str, yaml: &str) {
        let tmp = self.work.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(file)).expect("move manifest in place");
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).expect("remove manifest");
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.work.path().join("agent.log")).expect("log file");
        let source = format!("dir:{}", self.manifests.display());
        self.spawn(&source, &[], &[], log);
        let ok = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            self.status()
                .is_some_and(|s| s["last_apply"]["generation"].as_u64().unwrap_or(0) >= 1)
        });
        assert!(
            ok.is_ok(),
            "agent did not apply its first snapshot; log:\n{}",
            self.log()
        );
    }

    /// Starts the agent with `--source SOURCE`, extra arguments and environment (e.g. the kube
    /// source with `KUBECONFIG`); with `wait_for_apply`, waits for its first applied snapshot
    /// (else only for its API to answer).
    pub fn start_with(
        &mut self,
        source: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        wait_for_apply: bool,
    ) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.path().join("agent.log"))
            .expect("log file");
        self.spawn(source, args, env, log);
        let ok = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            self.status().is_some_and(|s| {
                !wait_for_apply || s["last_apply"]["generation"].as_u64().unwrap_or(0) >= 1
            })
        });
        assert!(
            ok.is_ok(),
            "agent did not start (wait_for_apply={wait_for_apply}); log:\n{}",
            self.log()
        );
    }

    /// Spawns `ferrite agent --source SOURCE` on this lab's paths, logging to `log`.
    fn spawn(
        &mut self,
        source: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        log: std::fs::File,
    ) {
        let state_dir = self.work.path().join("state");
        let mut cmd = ferrite_lab::cmd::agent_command(
            FERRITE.as_ref(),
            source.as_ref(),
            ferrite_lab::cmd::AgentPaths {
                bpf_root: &self.bpf_root,
                cgroup: self.cgroup.path(),
                api_socket: &self.socket,
                state_dir: &state_dir,
            },
        );
        // The root netns: never attach north-south to the host's own NICs.
        cmd.args(["--node-name", "test-node", "--devices", "none"])
            .args(args)
            .env("FERRITE_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        self.agent = Some(Child::spawn(&mut cmd).expect("spawn ferrite agent"));
    }

    /// SIGTERM, as the kubelet stops a pod; waits up to 20 s for the agent to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut a = self.agent.take().expect("agent running");
        a.stop(Duration::from_secs(20)).expect("stop the agent")
    }

    pub fn kill9(&mut self) {
        if let Some(mut a) = self.agent.take() {
            a.kill().expect("kill -9 agent");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("agent.log")).unwrap_or_default()
    }

    pub fn ferrite(&self, args: &[&str]) -> std::process::Output {
        Command::new(FERRITE)
            .args(args)
            .arg("--api-socket")
            .arg(&self.socket)
            .output()
            .expect("run ferrite CLI")
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let out = self.ferrite(&["status", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    pub fn services(&self) -> serde_json::Value {
        let out = self.ferrite(&["services", "-o", "json"]);
        assert!(out.status.success(), "ferrite services: {out:?}");
        serde_json::from_slice(&out.stdout).expect("services JSON")
    }

    /// Waits until the agent reports a generation newer than `after` whose services include
    /// `frontend` with exactly `backends` backends.
    pub fn wait_for_backends(&self, frontend: &str, backends: usize) {
        let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            self.services().as_array().is_some_and(|l| {
                l.iter().any(|s| {
                    s["frontend"] == frontend
                        && s["backends"]
                            .as_array()
                            .is_some_and(|b| b.len() == backends)
                })
            })
        });
        assert!(
            ok.is_ok(),
            "{frontend} never had {backends} backends: {}\n{}",
            self.services(),
            self.log()
        );
    }

    /// Runs `ferrite-lab client ARGS --json` inside the test cgroup, in `netns`.
    pub fn client(&self, netns: &Netns, args: &[&str]) -> ClientReport {
        let mut cmd = self
            .cgroup
            .command(lab_bin(), Some(netns.ns()))
            .expect("client command");
        cmd.arg("client").args(args).arg("--json");
        let out = cmd.output().expect("run ferrite-lab client");
        assert!(out.status.success(), "client failed: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("client JSON: {e}: {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Starts a client in the background (for loops that run while the agent is disturbed).
    pub fn spawn_client(&self, netns: &Netns, args: &[&str]) -> Child {
        let mut cmd = self
            .cgroup
            .command(lab_bin(), Some(netns.ns()))
            .expect("client command");
        cmd.arg("client")
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Child::spawn(&mut cmd).expect("spawn client")
    }
}

impl Drop for AgentLab {
    fn drop(&mut self) {
        self.kill9();
        let out = Command::new(FERRITE)
            .args(["agent", "--cleanup", "--bpf-root"])
            .arg(&self.bpf_root)
            .arg("--cgroup")
            .arg(self.cgroup.path())
            .output();
        if let Ok(o) = out
            && !o.status.success()
        {
            eprintln!(
                "ferrite agent --cleanup: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// A node netns with `pods` pod namespaces (10.244.0.2.., fd00:10:244::2..), each running
/// `ferrite-lab serve --name pod-N` on TCP 8080 and UDP 5353, v4 and v6.
pub struct PodLab {
    pub node: Netns,
    pub net: PodNet,
    pub servers: Vec<Child>,
}

impl PodLab {
    pub fn new(prefix: &str, pods: usize) -> Self {
        let node = Netns::new(prefix).expect("node netns");
        let net = PodNet::build(
            node.ns(),
            PodNetConfig {
                prefix: format!("{prefix}p"),
                pods,
                ..Default::default()
            },
        )
        .expect("pod network");
        let mut servers = Vec::new();
        for (i, pod) in net.pods().iter().enumerate() {
            let mut cmd = pod.netns.command(lab_bin()).expect("server command");
            cmd.args(["serve", "--name", &format!("pod-{}", i + 1)])
                .args(["--tcp", "0.0.0.0:8080", "--tcp", "[::]:8080"])
                .args(["--udp", "0.0.0.0:5353", "--udp", "[::]:5353"])
                .stdout(Stdio::null());
            servers.push(Child::spawn(&mut cmd).expect("spawn server"));
        }
        let lab = Self { node, net, servers };
        for pod in lab.net.pods() {
            let target = format!("{}:8080", pod.v4);
            let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                lab.node
                    .command("bash")
                    .expect("bash")
                    .args(["-c", &format!("exec 3<>/dev/tcp/{}/8080", pod.v4)])
                    .status()
                    .is_ok_and(|s| s.success())
            });
            assert!(ok.is_ok(), "server {target} never came up");
        }
        lab
    }

    pub fn pod_v4(&self, i: usize) -> String {
        self.net.pods()[i].v4.to_string()
    }

    pub fn pod_v6(&self, i: usize) -> String {
        self.net.pods()[i].v6.to_string()
    }
}

/// A ClusterIP Service (v4 and optionally v6 cluster IPs) with one TCP and one UDP port.
pub fn service_yaml(name: &str, ips: &[&str], affinity_seconds: Option<u32>) -> String {
    let affinity = affinity_seconds.map_or(String::new(), |t| {
        format!("  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: {t}\n")
    });
    let families = if ips.iter().any(|i| i.contains(':')) && ips.iter().any(|i| !i.contains(':')) {
        "  ipFamilyPolicy: PreferDualStack\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: test\nspec:\n  type: ClusterIP\n  clusterIP: {first}\n  clusterIPs: [{all}]\n{families}{affinity}  ports:\n  - name: http\n    port: 80\n    targetPort: web\n    protocol: TCP\n  - name: dns\n    port: 53\n    targetPort: 5353\n    protocol: UDP\n",
        first = ips[0],
        all = ips
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// An EndpointSlice for `service` with `(address, ready)` endpoints; `family` is IPv4 or IPv6.
pub fn slice_yaml(name: &str, service: &str, family: &str, endpoints: &[(&str, bool)]) -> String {
    let mut eps = String::new();
    for (addr, ready) in endpoints {
        let _ = writeln!(
            eps,
            "- addresses: [\"{addr}\"]\n  conditions:\n    ready: {ready}"
        );
    }
    if endpoints.is_empty() {
        eps.push_str("[]\n");
    }
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: test\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: {family}\nports:\n- name: http\n  port: 8080\n  protocol: TCP\n- name: dns\n  port: 5353\n  protocol: UDP\nendpoints:\n{}",
        if endpoints.is_empty() { eps.trim_start().to_string() } else { eps }
    )
    .replace("endpoints:\n[]", "endpoints: []")
}
