//! The benchmark lab: a host netns routing between three backend pods (each running
//! `ferrite-lab serve`) and client pods, plus helpers that run `ferrite-lab` clients inside a
//! client pod (and optionally inside the agent's cgroup).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrite_lab::report::{ClientReport, ConnectRateReport};
use ferrite_lab::{Cgroup, Child, Netns, Pod, PodNet, PodNetConfig, cmd, wait_until};

use super::services::TARGET_PORT;

pub const BACKENDS: usize = 3;
const PREFIX: &str = "flb";

/// Host netns + backends + a direct client + a ferrite client.
pub struct Lab {
    exe: PathBuf,
    // Servers go before the pods they run in.
    _servers: Vec<Child>,
    pods: PodNet,
    _host: Netns,
}

impl Lab {
    /// Builds the topology and starts the backend servers (`pod-0`, `pod-1`, `pod-2`).
    pub fn build(exe: &Path) -> Result<Self, String> {
        let host = Netns::new(PREFIX).map_err(|e| format!("host netns: {e}"))?;
        let pods = PodNet::build(
            host.ns(),
            PodNetConfig {
                prefix: PREFIX.into(),
                pods: BACKENDS + 2,
                ..PodNetConfig::default()
            },
        )
        .map_err(|e| format!("pods: {e}"))?;
        let mut servers = Vec::new();
        for (i, pod) in pods.pods().iter().take(BACKENDS).enumerate() {
            let mut command = pod.netns.command(exe).map_err(|e| e.to_string())?;
            command
                .args(["serve", "--name", &format!("pod-{i}")])
                .arg("--tcp")
                .arg(format!("0.0.0.0:{TARGET_PORT}"))
                .arg("--tcp")
                .arg(format!("[::]:{TARGET_PORT}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            servers.push(Child::spawn(&mut command).map_err(|e| e.to_string())?);
        }
        let lab = Self {
            exe: exe.to_owned(),
            _servers: servers,
            pods,
            _host: host,
        };
        // Ready when each backend answers a direct probe.
        for ip in lab.backend_ips() {
            let target = SocketAddr::from((ip, TARGET_PORT));
            let pod = lab.direct_client();
            let answered = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
                lab.probe(pod, None, target, 1).is_ok_and(|r| r.ok == 1)
            });
            if answered.is_err() {
                return Err(format!("backend {target} does not answer"));
            }
        }
        Ok(lab)
    }

    pub fn backend_ips(&self) -> Vec<Ipv4Addr> {
        self.pods.pods()[..BACKENDS].iter().map(|p| p.v4).collect()
    }

    pub fn backend_targets(&self) -> Vec<SocketAddr> {
        self.backend_ips()
            .into_iter()
            .map(|ip| SocketAddr::from((ip, TARGET_PORT)))
            .collect()
    }

    /// The client pod with no service plumbing at all.
    pub fn direct_client(&self) -> &Pod {
        &self.pods.pods()[BACKENDS]
    }

    /// The client pod used through ferrite (no iptables rules; clients join the agent's cgroup).
    pub fn ferrite_client(&self) -> &Pod {
        &self.pods.pods()[BACKENDS + 1]
    }

    /// A fresh client pod (for one scale's iptables rules); returns its index.
    pub fn add_client(&mut self) -> Result<usize, String> {
        self.pods
            .add_pod()
            .map_err(|e| format!("client pod: {e}"))?;
        Ok(self.pods.pods().len() - 1)
    }

    pub fn pod(&self, index: usize) -> &Pod {
        &self.pods.pods()[index]
    }

    /// Deletes a pod made by [`Lab::add_client`].
    pub fn remove_client(&mut self, index: usize) {
        drop(self.pods.remove_pod(index));
    }

    fn spawn_json(
        &self,
        pod: &Pod,
        cgroup: Option<&Cgroup>,
        args: &[String],
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        pod.netns
            .ns()
            .enter_on_spawn(&mut command)
            .map_err(|e| e.to_string())?;
        if let Some(cg) = cgroup {
            cg.join_on_spawn(&mut command).map_err(|e| e.to_string())?;
        }
        let child = Child::spawn(&mut command).map_err(|e| e.to_string())?;
        let out = child.output_within(timeout).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                cmd::describe(&command),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out.stdout)
    }

    /// `ferrite-lab client --json` from `pod` (in `cgroup` if given), `count` TCP attempts.
    pub fn probe(
        &self,
        pod: &Pod,
        cgroup: Option<&Cgroup>,
        target: SocketAddr,
        count: u64,
    ) -> Result<ClientReport, String> {
        let args = [
            "client".into(),
            "--target".into(),
            target.to_string(),
            "--count".into(),
            count.to_string(),
            "--timeout-ms".into(),
            "500".into(),
            "--json".into(),
        ];
        let out = self.spawn_json(pod, cgroup, &args, Duration::from_secs(30))?;
        serde_json::from_slice(&out).map_err(|e| format!("client output is not a report: {e}"))
    }

    /// `ferrite-lab connect-rate` from `pod` (in `cgroup` if given).
    pub fn connect_rate(
        &self,
        pod: &Pod,
        cgroup: Option<&Cgroup>,
        targets: &[SocketAddr],
        duration: Duration,
        threads: u32,
    ) -> Result<ConnectRateReport, String> {
        let mut args = vec!["connect-rate".to_owned()];
        for t in targets {
            args.extend(["--target".to_owned(), t.to_string()]);
        }
        args.extend([
            "--duration-ms".into(),
            duration.as_millis().to_string(),
            "--threads".into(),
            threads.to_string(),
        ]);
        let out = self.spawn_json(pod, cgroup, &args, duration + Duration::from_secs(15))?;
        serde_json::from_slice(&out)
            .map_err(|e| format!("connect-rate output is not a report: {e}"))
    }
}

/// Loads `rules` with one `iptables-restore` inside `pod`; returns its wall time.
pub fn iptables_restore(pod: &Pod, program: &str, rules: &str) -> Result<Duration, String> {
    let mut command = pod.netns.command(program).map_err(|e| e.to_string())?;
    command.arg("-w");
    let start = Instant::now();
    cmd::run_with_input(&mut command, rules.as_bytes()).map_err(|e| e.to_string())?;
    Ok(start.elapsed())
}

/// Checks that a probe through a service reached only backends, all attempts succeeding.
pub fn check_reaches_backends(report: &ClientReport) -> Result<(), String> {
    let foreign: Vec<&String> = report
        .names
        .keys()
        .filter(|n| !n.starts_with("pod-"))
        .collect();
    if report.ok == report.attempts && report.attempts > 0 && foreign.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} connects to {} reached a backend (names {:?}, failures {:?})",
            report.ok, report.attempts, report.target, report.names, report.failures
        ))
    }
}
