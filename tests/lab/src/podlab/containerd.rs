//! A node's container runtime the way k3s runs it: Debian's containerd with its CRI plugin,
//! one per node netns (own root, state and socket), configured by a `config.toml` shaped like
//! the one k3s generates in `/var/lib/rancher/k3s/agent/etc/containerd/`: the CRI plugin's `cni`
//! table names the node's CNI conf and bin dirs, and `sandbox_image` a pause image built here
//! from busybox-static with umoci (no registry) and imported with `ctr -n k8s.io images import`.
//!
//! The agent finds its CNI dirs in that very file: it runs with the file's directory
//! bind-mounted at k3s's path in a mount namespace of its own (as the DaemonSet mounts the
//! host's), see [`agent_wrapper`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::child::Child;
use crate::cmd;
use crate::cri::CriClient;
use crate::netns::Netns;
use crate::nslab::{NsLabError, io_err};
use crate::wait::wait_until;

/// k3s's containerd config dir, where the agent looks for `config.toml`.
pub const K3S_CONTAINERD_DIR: &str = "/var/lib/rancher/k3s/agent/etc/containerd";
/// The reference loopback plugin (Debian's containernetworking-plugins).
pub const LOOPBACK_PLUGIN: &str = "/usr/lib/cni/loopback";
/// The sandbox ("pause") image of the lab.
pub const SANDBOX_IMAGE: &str = "ferrite.test/pause:3.9";
const IMAGE_BASE: &str = "ferrite.test/pause";
const IMAGE_TAG: &str = "3.9";

fn other(e: impl std::fmt::Display) -> NsLabError {
    NsLabError::Other(e.to_string())
}

/// Fails naming the Debian package when a tool is missing (`make setup` installs them).
pub fn require_tools() -> Result<(), NsLabError> {
    for (tool, package) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("runc", "runc"),
        ("umoci", "umoci"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            return Err(NsLabError::Other(format!(
                "{tool} not found: install Debian's {package} (make setup does)"
            )));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err(NsLabError::Other(
            "/bin/busybox not found: install Debian's busybox-static (make setup does)".into(),
        ));
    }
    Ok(())
}

/// Builds the pause image as an OCI layout tarball at `dir/pause.tar`: busybox-static as
/// `/bin/busybox`, entrypoint `busybox sleep` (the sandbox container only holds the netns).
pub fn build_sandbox_image(dir: &Path) -> Result<PathBuf, NsLabError> {
    let layout = dir.join("pause-oci");
    let bundle = dir.join("pause-bundle");
    let image = format!("{}:{IMAGE_TAG}", layout.display());
    let umoci = |args: &[&str]| cmd::run(Command::new("umoci").args(args)).map_err(other);
    umoci(&["init", "--layout", &layout.display().to_string()])?;
    umoci(&["new", "--image", &image])?;
    umoci(&["unpack", "--image", &image, &bundle.display().to_string()])?;
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin).map_err(io_err("create the image's /bin"))?;
    fs::copy("/bin/busybox", bin.join("busybox")).map_err(io_err("copy busybox"))?;
    umoci(&["repack", "--image", &image, &bundle.display().to_string()])?;
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/bin/busybox",
        "--config.cmd",
        "sleep",
        "--config.cmd",
        "2147483647",
    ])?;
    let tar = dir.join("pause.tar");
    cmd::run(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )
    .map_err(other)?;
    Ok(tar)
}

/// The `config.toml` of a node's containerd (k3s's shape, version 2, CRI plugin
/// `io.containerd.grpc.v1.cri`).
///
/// `restrict_oom_score_adj`: the CRI plugin gives sandboxes `oom_score_adj` -998, which needs
/// `CAP_SYS_RESOURCE`; these test machines run without it (CapEff bit 24 clear), so runc's
/// init died writing it ("can't get final child's PID from pipe: EOF"; crun names the write).
/// k3s sets the same option when it runs without that capability (rootless).
#[must_use]
pub fn config_toml(dir: &Path, cni_conf: &Path, cni_bin: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{}"
  conf_dir = "{}"
"#,
        cni_bin.display(),
        cni_conf.display()
    )
}

/// A running containerd of one node.
pub struct Containerd {
    child: Option<Child>,
    /// Its root/state/socket directory.
    pub dir: PathBuf,
    /// The directory holding `config.toml` (mounted at [`K3S_CONTAINERD_DIR`] for the agent).
    pub etc: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Containerd {
    /// Writes the config, starts containerd inside `ns`, waits for its CRI service and imports
    /// the sandbox image from `image_tar`.
    pub fn start(
        ns: &Netns,
        node_dir: &Path,
        cni_conf: &Path,
        cni_bin: &Path,
        image_tar: &Path,
    ) -> Result<Self, NsLabError> {
        let dir = node_dir.join("containerd");
        let etc = node_dir.join("containerd-etc");
        for d in [&dir, &etc] {
            fs::create_dir_all(d).map_err(io_err(format!("create {}", d.display())))?;
        }
        let config = etc.join("config.toml");
        fs::write(&config, config_toml(&dir, cni_conf, cni_bin))
            .map_err(io_err("write containerd's config.toml"))?;
        let log = dir.join("containerd.log");
        let out = fs::File::create(&log).map_err(io_err("containerd log"))?;
        let err = out.try_clone().map_err(io_err("dup log"))?;
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = ns.spawn(&mut command)?;
        let me = Self {
            child: Some(child),
            socket: dir.join("containerd.sock"),
            dir,
            etc,
            log,
        };
        let client = CriClient::new(&me.socket).map_err(other)?;
        let mut last = String::new();
        let up = wait_until(
            Duration::from_secs(20),
            Duration::from_millis(100),
            || match client.version() {
                Ok(_) => true,
                Err(e) => {
                    last = e.to_string();
                    false
                }
            },
        );
        if up.is_err() {
            return Err(NsLabError::Other(format!(
                "containerd's CRI did not answer within 20 s ({last}); log:\n{}",
                me.log_tail(30)
            )));
        }
        cmd::run(
            Command::new("ctr")
                .arg("--address")
                .arg(&me.socket)
                .args([
                    "--namespace",
                    "k8s.io",
                    "images",
                    "import",
                    "--snapshotter",
                    "native",
                    "--base-name",
                    IMAGE_BASE,
                ])
                .arg(image_tar),
        )
        .map_err(|e| NsLabError::Other(format!("importing the sandbox image: {e}")))?;
        Ok(me)
    }

    /// A CRI client of this runtime.
    pub fn client(&self) -> Result<CriClient, NsLabError> {
        CriClient::new(&self.socket).map_err(other)
    }

    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Sandboxes a failed test left behind: their containers and shims outlive containerd.
        if let Ok(client) = CriClient::new(&self.socket) {
            for id in client.list_pod_sandboxes().unwrap_or_default() {
                let _ = client.stop_pod_sandbox(&id);
                let _ = client.remove_pod_sandbox(&id);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.stop(Duration::from_secs(5));
        }
    }
}

/// The agent command wrapped so that, in a mount namespace of its own, it sees `etc` (the
/// node's containerd config dir) at [`K3S_CONTAINERD_DIR`], where it reads the CNI dirs, as
/// the DaemonSet's agent sees the host's. Nothing outside that namespace changes except an
/// empty `/var/lib/rancher` mount point, created when missing.
pub fn agent_wrapper(agent: &Command, etc: &Path) -> Result<Command, NsLabError> {
    let mountpoint = Path::new("/var/lib/rancher");
    if !mountpoint.exists() {
        fs::create_dir_all(mountpoint).map_err(io_err("create /var/lib/rancher"))?;
    }
    let script = format!(
        "set -e; mount -t tmpfs ferrite-lab {root}; mkdir -p {K3S_CONTAINERD_DIR}; \
         mount --bind \"$0\" {K3S_CONTAINERD_DIR}; exec \"$@\"",
        root = mountpoint.display()
    );
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .arg(etc)
    .arg(agent.get_program())
    .args(agent.get_args());
    for (k, v) in agent.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    Ok(c)
}
