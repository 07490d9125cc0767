//! Driving a real `ferrite agent` for the benchmark: start it on a fresh `dir:` source, BPF
//! root and cgroup, write services into the watched folder, wait for `ferrite status -o json`
//! to report them applied, read its memory, and stop it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrite_lab::{Cgroup, Child, cmd, wait_until};
use serde_json::Value;

/// Where BPF roots for benchmark agents go (on bpffs).
const BPFFS: &str = "/sys/fs/bpf";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const APPLY_TIMEOUT: Duration = Duration::from_mins(2);
const POLL: Duration = Duration::from_millis(10);

/// `last_apply` from the agent's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastApply {
    pub duration_us: u64,
    pub services: u64,
    pub frontends: u64,
    pub backends: u64,
    pub generation: u64,
}

impl LastApply {
    /// Finds a `last_apply` object anywhere in a status document.
    #[must_use]
    pub fn find(status: &Value) -> Option<Self> {
        match status {
            Value::Object(map) => {
                if let Some(Value::Object(la)) = map.get("last_apply") {
                    let field = |k: &str| la.get(k).and_then(Value::as_u64).unwrap_or(0);
                    return Some(Self {
                        duration_us: field("duration_us"),
                        services: field("services"),
                        frontends: field("frontends"),
                        backends: field("backends"),
                        generation: field("generation"),
                    });
                }
                map.values().find_map(Self::find)
            }
            Value::Array(items) => items.iter().find_map(Self::find),
            _ => None,
        }
    }
}

/// What applying a service set took.
#[derive(Clone, Copy, Debug)]
pub struct ApplyTiming {
    /// From the rename into the watched folder to the first status showing it applied.
    pub wall: Duration,
    pub agent: LastApply,
}

/// Memory of the agent process, from /proc/PID/status.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

impl Memory {
    /// `VmRSS` and `VmHWM` of process `pid`.
    pub fn of(pid: u32) -> Result<Self, String> {
        let path = format!("/proc/{pid}/status");
        let text = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
        let kb = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {key} in {path}"))
        };
        Ok(Self {
            rss_kb: kb("VmRSS:")?,
            hwm_kb: kb("VmHWM:")?,
        })
    }
}

/// A running agent; stopped (SIGTERM, then SIGKILL) and its BPF root removed on drop.
pub struct Agent {
    ferrite: PathBuf,
    child: Child,
    work: PathBuf,
    source_dir: PathBuf,
    socket: PathBuf,
    bpf_root: PathBuf,
    log: PathBuf,
    cgroup: Cgroup,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

fn ensure_bpffs() -> Result<(), String> {
    let mounts =
        fs::read_to_string("/proc/mounts").map_err(|e| format!("read /proc/mounts: {e}"))?;
    let mounted = mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some(BPFFS) && l.split_whitespace().nth(2) == Some("bpf")
    });
    if !mounted {
        cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
            .map_err(|e| format!("mount bpffs at {BPFFS}: {e}"))?;
    }
    Ok(())
}

impl Agent {
    /// Starts `ferrite agent` with an empty watched folder under `work` and waits until its
    /// status answers. `label` names the log file.
    pub fn start(ferrite: &Path, work: &Path, label: &str) -> Result<Self, String> {
        Self::start_with(ferrite, work, label, &[])
    }

    /// [`Agent::start`] with `extra` appended to the agent's arguments.
    pub fn start_with(
        ferrite: &Path,
        work: &Path,
        label: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        ensure_bpffs()?;
        let source_dir = work.join(format!("{label}-services"));
        let state_dir = work.join(format!("{label}-state"));
        for dir in [&source_dir, &state_dir] {
            let _ = fs::remove_dir_all(dir);
            fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let socket = work.join(format!("{label}.sock"));
        let _ = fs::remove_file(&socket);
        let bpf_root = Path::new(BPFFS).join(format!("ferrite-lab-{}-{label}", std::process::id()));
        let _ = fs::remove_dir_all(&bpf_root);
        let cgroup = Cgroup::new("flb").map_err(|e| format!("cgroup: {e}"))?;
        let log = work.join(format!("{label}-agent.log"));
        let log_file =
            fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| format!("log: {e}"))?;
        let source = format!("dir:{}", source_dir.display());
        let mut command = ferrite_lab::cmd::agent_command(
            ferrite.as_os_str(),
            source.as_ref(),
            ferrite_lab::cmd::AgentPaths {
                bpf_root: &bpf_root,
                cgroup: cgroup.path(),
                api_socket: &socket,
                state_dir: &state_dir,
            },
        );
        // The root netns: never attach north-south to the host's own NICs.
        command
            .args(["--devices", "none"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = Child::spawn(&mut command).map_err(|e| e.to_string())?;
        let mut agent = Self {
            ferrite: ferrite.to_owned(),
            child,
            work: work.to_owned(),
            source_dir,
            socket,
            bpf_root,
            log,
            cgroup,
        };
        let mut last_err = String::new();
        let ready = wait_until(READY_TIMEOUT, Duration::from_millis(50), || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                last_err = format!("agent exited ({status}): {}", tail(&agent.log, 3));
                return true;
            }
            match agent.status() {
                Ok(_) => {
                    last_err.clear();
                    true
                }
                Err(e) => {
                    last_err = e;
                    false
                }
            }
        });
        if ready.is_err() || !last_err.is_empty() {
            return Err(format!(
                "agent not ready after {READY_TIMEOUT:?}: {last_err}; log: {}",
                tail(&agent.log, 3)
            ));
        }
        Ok(agent)
    }

    /// The cgroup whose sockets the agent load-balances; benchmark clients run inside it.
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `ferrite status -o json --api-socket SOCK`, parsed.
    pub fn status(&self) -> Result<Value, String> {
        let out = cmd::run(
            Command::new(&self.ferrite)
                .args(["status", "-o", "json", "--api-socket"])
                .arg(&self.socket),
        )
        .map_err(|e| e.to_string())?;
        serde_json::from_slice(&out.stdout).map_err(|e| format!("status is not JSON: {e}"))
    }

    /// Writes `yaml` into the watched folder (atomically, by rename) and waits until the
    /// agent's `last_apply` shows `services` services with a newer generation.
    pub fn apply(&mut self, yaml: &str, services: u64) -> Result<ApplyTiming, String> {
        let before = self
            .status()
            .ok()
            .as_ref()
            .and_then(LastApply::find)
            .map(|la| la.generation);
        let staging = self.work.join("services.yaml.staging");
        fs::write(&staging, yaml).map_err(|e| format!("write {}: {e}", staging.display()))?;
        let target = self.source_dir.join("services.yaml");
        let start = Instant::now();
        fs::rename(&staging, &target)
            .map_err(|e| format!("rename into {}: {e}", target.display()))?;
        let mut seen = None;
        let mut exited = None;
        let done = wait_until(APPLY_TIMEOUT, POLL, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return true;
            }
            let Some(la) = self.status().ok().as_ref().and_then(LastApply::find) else {
                return false;
            };
            seen = Some(la);
            la.services == services && before.is_none_or(|g| la.generation > g)
        });
        let wall = start.elapsed();
        if let Some(status) = exited {
            return Err(format!("agent exited ({status}): {}", tail(&self.log, 3)));
        }
        match (done, seen) {
            (Ok(_), Some(agent)) => Ok(ApplyTiming { wall, agent }),
            (_, seen) => Err(format!(
                "agent did not report {services} services applied within {APPLY_TIMEOUT:?} (last_apply: {seen:?})"
            )),
        }
    }

    /// The `stats` of the agent's `/v1/flows` (curl over the API socket).
    pub fn flow_stats(&self) -> Result<Value, String> {
        let out = cmd::run(
            Command::new("curl")
                .args(["-sf", "--unix-socket"])
                .arg(&self.socket)
                .arg("http://ferrite/v1/flows?last=1"),
        )
        .map_err(|e| format!("curl /v1/flows: {e}"))?;
        let v: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("/v1/flows: {e}"))?;
        Ok(v["stats"].clone())
    }

    /// CPU time the agent used so far (user + system, all threads), from /proc/PID/stat.
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        let path = format!("/proc/{}/stat", self.child.id());
        let text = fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
        let ticks = cpu_ticks(&text).ok_or_else(|| format!("no utime/stime in {path}"))?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        #[expect(clippy::cast_precision_loss, reason = "clock ticks are far below 2^52")]
        Ok(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
    }

    /// `VmRSS` and `VmHWM` of the agent.
    pub fn memory(&self) -> Result<Memory, String> {
        Memory::of(self.child.id())
    }

    /// Whether the agent process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line; the command name in parentheses
/// may hold spaces, so fields count from its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.stop(Duration::from_secs(5));
        // Unpinning the links detaches the agent's programs from the cgroup.
        let _ = fs::remove_dir_all(&self.bpf_root);
        let _ = fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_after_the_command_name() {
        let stat = "4242 (ferrite agent) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn finds_last_apply_wherever_it_is() {
        let status: Value = serde_json::from_str(
            r#"{"agent":{"version":"0.1.0","lb":{"last_apply":{"duration_us":1234,"services":10000,"frontends":10000,"backends":30000,"generation":7}}}}"#,
        )
        .unwrap();
        let la = LastApply::find(&status).unwrap();
        assert_eq!(la.duration_us, 1234);
        assert_eq!(la.services, 10_000);
        assert_eq!(la.backends, 30_000);
        assert_eq!(la.generation, 7);
        assert_eq!(LastApply::find(&serde_json::json!({"ok": true})), None);
        let top: Value = serde_json::json!([{"last_apply": {"services": 1}}]);
        assert_eq!(LastApply::find(&top).unwrap().services, 1);
    }
}
