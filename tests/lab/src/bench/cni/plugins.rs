//! The two plugin sets under test, installed in a throw-away CNI bin dir with their own state,
//! and one plugin call timed from spawn to exit, made the way a runtime makes it.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrite_lab::Ns;
use serde::Serialize;
use serde_json::{Value, json};

/// Where Debian's containernetworking-plugins live.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
/// The reference plugins: `bridge` calls `host-local` (found through `CNI_PATH`) for IPAM.
const REFERENCE_PLUGINS: [&str; 2] = ["bridge", "host-local"];
/// The newest version both sets speak (the Debian plugins stop at 1.0.0).
const CNI_VERSION: &str = "1.0.0";
/// Both sets get a /24, like a k3s node's `PodCIDR`.
pub const FERRITE_SUBNET: &str = "10.61.0.0/24";
pub const REFERENCE_SUBNET: &str = "10.62.0.0/24";
const FERRITE_NETWORK: &str = "bench-ferrite";
const REFERENCE_NETWORK: &str = "bench-reference";
const BRIDGE: &str = "cnibench0";
const IFNAME: &str = "eth0";
/// A call still running after this long is killed and counted as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A plugin set under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Set {
    Ferrite,
    Reference,
}

impl Set {
    pub const BOTH: [Self; 2] = [Self::Ferrite, Self::Reference];

    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Ferrite => "ferrite",
            Self::Reference => "bridge + host-local",
        }
    }

    /// Position in [`Set::BOTH`].
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            Self::Ferrite => 0,
            Self::Reference => 1,
        }
    }
}

/// `Err` naming the package to install when a reference plugin is missing.
pub fn check_reference_plugins() -> Result<(), String> {
    let missing: Vec<String> = REFERENCE_PLUGINS
        .iter()
        .map(|p| Path::new(REFERENCE_DIR).join(p))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "reference CNI plugins missing ({}): apt-get install containernetworking-plugins",
            missing.join(", ")
        ))
    }
}

/// A folder removed with everything in it on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            crate::bench::progress(&format!("cni: removing {}: {e}", self.0.display()));
        }
    }
}

/// A CNI bin dir holding `ferrite` and the reference plugins, the state folders of both sets
/// and their network configurations, all under one temporary folder.
pub struct Install {
    dir: TempDir,
    confs: [Value; 2],
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> String {
    let what = format!("{what} {}", path.display());
    move |e| format!("{what}: {e}")
}

/// Hard-links `from` to `to` (same file system), else copies it.
fn place(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::hard_link(from, to)
        .or_else(|_| std::fs::copy(from, to).map(drop))
        .map_err(io(&format!("copy {} to", from.display()), to))
}

impl Install {
    pub fn new(ferrite: &Path) -> Result<Self, String> {
        let root = std::env::temp_dir().join(format!("ferrite-bench-cni-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(io("create", &root))?;
        let dir = TempDir(root);
        let bin = dir.0.join("bin");
        std::fs::create_dir(&bin).map_err(io("create", &bin))?;
        place(ferrite, &bin.join("ferrite"))?;
        for p in REFERENCE_PLUGINS {
            place(&Path::new(REFERENCE_DIR).join(p), &bin.join(p))?;
        }
        // What the agent writes: the node's PodCIDR for the plugin to read on every ADD.
        let node_state = dir.0.join("ferrite/node.json");
        std::fs::create_dir_all(dir.0.join("ferrite")).map_err(io("create", &dir.0))?;
        let state = json!({"nodeName": "bench", "podCIDRs": [FERRITE_SUBNET], "source": "flag",
                           "updatedUnixMs": 0});
        std::fs::write(&node_state, state.to_string()).map_err(io("write", &node_state))?;
        // One plugin of a conflist as libcni hands it over: name and cniVersion copied in,
        // `capabilities` replaced by (here empty) runtimeConfig.
        let ferrite_conf = json!({
            "cniVersion": CNI_VERSION,
            "name": FERRITE_NETWORK,
            "type": "ferrite",
            "stateDir": dir.0.join("ferrite/cni"),
            "nodeState": node_state,
            "apiSocket": dir.0.join("ferrite/no-agent.sock"),
        });
        let reference_conf = json!({
            "cniVersion": CNI_VERSION,
            "name": REFERENCE_NETWORK,
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": REFERENCE_SUBNET}]],
                "dataDir": dir.0.join("host-local"),
            },
        });
        Ok(Self {
            dir,
            confs: [ferrite_conf, reference_conf],
        })
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.0.join("bin")
    }

    /// The binary the runtime executes for `set` (`bridge` runs `host-local` itself).
    fn plugin(&self, set: Set) -> PathBuf {
        self.bin_dir().join(match set {
            Set::Ferrite => "ferrite",
            Set::Reference => "bridge",
        })
    }

    /// Addresses still allocated in `set`'s IPAM store (0 once every DEL did its job).
    pub fn allocated(&self, set: Set) -> Result<usize, String> {
        match set {
            Set::Ferrite => {
                let path = self
                    .dir
                    .0
                    .join("ferrite/cni")
                    .join(FERRITE_NETWORK)
                    .join("state.json");
                let text = match std::fs::read(&path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => return Err(io("read", &path)(e)),
                };
                let v: Value = serde_json::from_slice(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                v["allocations"]
                    .as_array()
                    .map(Vec::len)
                    .ok_or_else(|| format!("{}: no allocations list", path.display()))
            }
            Set::Reference => {
                let path = self.dir.0.join("host-local").join(REFERENCE_NETWORK);
                let entries = match std::fs::read_dir(&path) {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => return Err(io("read", &path)(e)),
                };
                // host-local keeps one file per allocated address, named after it.
                Ok(entries
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.parse::<IpAddr>().is_ok())
                    })
                    .count())
            }
        }
    }
}

/// What one call did.
#[derive(Debug)]
pub struct Call {
    /// From `spawn` until the process exited and its output was read.
    pub elapsed: Duration,
    /// The ADD result (`Null` for DEL), or why the call failed.
    pub outcome: Result<Value, String>,
}

/// One attachment: a container in `pod` attached by a plugin running in `node`.
pub struct Attachment<'a> {
    pub install: &'a Install,
    pub set: Set,
    pub node: &'a Ns,
    pub pod: &'a Ns,
    pub container_id: String,
}

impl Attachment<'_> {
    /// ADD, then (also after a failed ADD, as runtimes do) DEL with the ADD result as
    /// `prevResult`.
    pub fn cycle(&self) -> (Call, Call) {
        let add = self.call("ADD", None);
        let prev = add.outcome.as_ref().ok().cloned();
        let del = self.call("DEL", prev);
        (add, del)
    }

    fn call(&self, verb: &str, prev: Option<Value>) -> Call {
        let mut conf = self.install.confs[self.set.index()].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev;
        }
        let stdin = conf.to_string();
        let mut cmd = match self.node.command(self.install.plugin(self.set)) {
            Ok(c) => c,
            Err(e) => return not_started(format!("enter the node netns: {e}")),
        };
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", self.pod.path())
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", self.install.bin_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (elapsed, output) = timed_run(&mut cmd, stdin.as_bytes());
        let outcome = output.and_then(|out| {
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(failure(verb, &out.status.to_string(), &stdout, &out.stderr));
            }
            if verb != "ADD" {
                return Ok(Value::Null);
            }
            let result: Value = serde_json::from_str(&stdout)
                .map_err(|e| format!("ADD printed no JSON result ({e}): {stdout}"))?;
            if result["ips"].as_array().is_none_or(Vec::is_empty) {
                return Err(format!("ADD result without ips: {result}"));
            }
            Ok(result)
        });
        Call { elapsed, outcome }
    }
}

fn not_started(why: String) -> Call {
    Call {
        elapsed: Duration::ZERO,
        outcome: Err(why),
    }
}

/// The plugin's own error message (`msg` of the CNI error object), else its stderr.
fn failure(verb: &str, status: &str, stdout: &str, stderr: &[u8]) -> String {
    let msg = serde_json::from_str::<Value>(stdout)
        .ok()
        .and_then(|v| {
            let msg = v["msg"].as_str()?.to_owned();
            Some(match v["details"].as_str() {
                Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                _ => msg,
            })
        })
        .unwrap_or_else(|| String::from_utf8_lossy(stderr).trim().to_owned());
    format!("{verb} {status}: {msg}")
}

/// Spawns `cmd`, feeds it `stdin`, waits for it to exit; the time covers exactly that. A
/// watchdog (started before the clock) kills it after [`CALL_TIMEOUT`].
fn timed_run(cmd: &mut Command, stdin: &[u8]) -> (Duration, Result<std::process::Output, String>) {
    let (pid_tx, pid_rx) = mpsc::channel::<u32>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let Ok(pid) = pid_rx.recv() else { return false };
        if done_rx.recv_timeout(CALL_TIMEOUT) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
            unsafe { libc::kill(i32::try_from(pid).unwrap_or(i32::MAX), libc::SIGKILL) };
            return true;
        }
        false
    });
    let start = Instant::now();
    let output = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", ferrite_lab::cmd::describe(cmd)))
        .and_then(|mut child| {
            let _ = pid_tx.send(child.id());
            if let Some(mut pipe) = child.stdin.take() {
                // A plugin that exits without reading its config shows in its status.
                let _ = pipe.write_all(stdin);
            }
            child
                .wait_with_output()
                .map_err(|e| format!("wait for the plugin: {e}"))
        });
    let elapsed = start.elapsed();
    let _ = done_tx.send(());
    drop(pid_tx);
    let killed = watchdog.join().unwrap_or(false);
    if killed {
        return (elapsed, Err(format!("killed after {CALL_TIMEOUT:?}")));
    }
    (elapsed, output)
}
