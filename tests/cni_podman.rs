//! A real container runtime: the agent installs ferrite (binary, conflist, node state) into
//! the test's own CNI dirs, podman 4 (CNI backend, runc) starts two busybox containers on that
//! network inside a node netns; they reach each other (v4 and v6), the host, and a ClusterIP
//! Service served by the real agent's socket LB; `podman rm` releases their addresses.
//!
//! Isolation: podman's config, storage, tmp and CNI dirs are the test's own (CONTAINERS_CONF,
//! CONTAINERS_STORAGE_CONF, --root/--runroot); containers run under the agent's test cgroup
//! (`--cgroup-parent`), so the socket LB sees their connects.

mod cni_common;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cni_common::{links, require};
use common::{AgentLab, FERRITE, TempDir, service_yaml, slice_yaml};
use ferrite_lab::{Child, Netns, wait_until};
use serde_json::Value;

const IMAGE: &str = "localhost/ferrite-cni-busybox:test";

/// podman with the test's own configuration, run inside the node netns.
struct Podman {
    dir: PathBuf,
    node: ferrite_lab::Ns,
    cgroup_parent: String,
}

impl Podman {
    fn new(dir: &Path, node: &Netns, net_d: &Path, bin: &Path, cgroup_parent: String) -> Self {
        for d in ["root", "runroot", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nevents_logfile_path = \"{}\"\nruntime = \"runc\"\n\
                 tmp_dir = \"{}\"\n",
                bin.display(),
                net_d.display(),
                dir.join("events.log").display(),
                dir.join("tmp").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                dir.join("runroot").display(),
                dir.join("root").display()
            ),
        )
        .unwrap();
        Self {
            dir: dir.to_owned(),
            node: node.ns().clone(),
            cgroup_parent,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.node.command("podman").unwrap();
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().expect("run podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout)
            .trim()
            .to_owned()
    }

    /// Starts a container serving its name over HTTP on 8080.
    fn start(&self, name: &str) {
        let script = format!("echo {name} > /tmp/index.html; exec httpd -f -p 8080 -h /tmp");
        self.run(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "ferrite",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            "--cgroup-parent",
            &self.cgroup_parent,
            IMAGE,
            "sh",
            "-c",
            &script,
        ]);
    }

    /// `wget -O- URL` inside container `name` (busybox 1.35's `wget -T` crashes: `timeout`).
    fn fetch(&self, name: &str, url: &str) -> Option<String> {
        let out = self
            .cmd(&["exec", name, "timeout", "5", "wget", "-q", "-O-", url])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn addresses(&self, name: &str) -> (String, String) {
        let v: Value = serde_json::from_str(&self.stdout(&["inspect", name])).unwrap();
        let net = &v[0]["NetworkSettings"]["Networks"]["ferrite"];
        (
            net["IPAddress"].as_str().unwrap_or_default().to_owned(),
            net["GlobalIPv6Address"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]).output();
        // cgroupfs leaves the parent directories in the v1 hierarchies.
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let p = e.path().join(self.cgroup_parent.trim_start_matches('/'));
                if p.is_dir() && !p.starts_with("/sys/fs/cgroup/unified") {
                    remove_cgroup_tree(&p);
                }
            }
        }
    }
}

fn remove_cgroup_tree(p: &Path) {
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(p);
}

/// A busybox-static rootfs imported as an image.
fn import_image(podman: &Podman, work: &Path) {
    let root = work.join("rootfs");
    for d in ["bin", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "httpd", "wget", "sleep", "cat", "ip", "echo", "timeout",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = work.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the rootfs");
    podman.run(&["import", tar.to_str().unwrap(), IMAGE]);
}

fn stored_ips(state: &Path) -> Vec<String> {
    cni_common::stored(&state.join("cni"), "ferrite")
        .iter()
        .map(|a| a["ip"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn podman_containers_on_a_ferrite_network() {
    require(&[
        ("podman", "podman"),
        ("runc", "runc"),
        ("conmon", "conmon"),
        ("/bin/busybox", "busybox-static"),
        ("tar", "tar"),
        ("/usr/lib/cni/portmap", "containernetworking-plugins"),
    ]);
    let node = Netns::new("cnip").unwrap();
    let work = TempDir::new("cni-podman");
    let (net_d, bin, state) = (
        work.path().join("net.d"),
        work.path().join("bin"),
        work.path().join("state"),
    );
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/portmap", bin.join("portmap")).unwrap();

    // The real agent, with CNI installation into the test's dirs and a standalone pod CIDR.
    let mut agent = AgentLab::new("cnip");
    let log = std::fs::File::create(agent.work.path().join("agent.log")).unwrap();
    let mut cmd = Command::new(FERRITE);
    cmd.arg("agent")
        .arg("--source")
        .arg(format!("dir:{}", agent.manifests.display()))
        .arg("--bpf-root")
        .arg(&agent.bpf_root)
        .arg("--cgroup")
        .arg(agent.cgroup.path())
        .arg("--api-socket")
        .arg(&agent.socket)
        .args([
            "--node-name",
            "test-node",
            "--pod-cidr",
            "10.67.0.0/24,fd00:67::/64",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--cni-conf-dir")
        .arg(&net_d)
        .arg("--cni-bin-dir")
        .arg(&bin)
        .env("FERRITE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log);
    agent.agent = Some(Child::spawn(&mut cmd).unwrap());
    let up = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        agent
            .status()
            .is_some_and(|s| s["last_apply"]["generation"].as_u64().unwrap_or(0) >= 1)
            && net_d.join("05-ferrite.conflist").is_file()
    });
    assert!(
        up.is_ok(),
        "agent did not come up and install:\n{}",
        agent.log()
    );

    // What the agent installed.
    let conflist: Value =
        serde_json::from_slice(&std::fs::read(net_d.join("05-ferrite.conflist")).unwrap()).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "ferrite");
    assert_eq!(conflist["plugins"][1]["type"], "portmap", "{conflist}");
    let installed = bin.join("ferrite");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(FERRITE).unwrap()
    );
    let node_state: Value =
        serde_json::from_slice(&std::fs::read(state.join("node.json")).unwrap()).unwrap();
    assert_eq!(node_state["podCIDRs"][0], "10.67.0.0/24");
    assert_eq!(node_state["nodeName"], "test-node");

    let cg_name = agent
        .cgroup
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let podman = Podman::new(
        &work.path().join("podman"),
        &node,
        &net_d,
        &bin,
        format!("/{cg_name}"),
    );
    import_image(&podman, work.path());
    podman.start("c1");
    podman.start("c2");
    let (c1_v4, c1_v6) = podman.addresses("c1");
    let (c2_v4, c2_v6) = podman.addresses("c2");
    assert!(
        c1_v4.starts_with("10.67.0.") && c2_v4.starts_with("10.67.0."),
        "{c1_v4} {c2_v4}"
    );
    assert!(
        c1_v6.starts_with("fd00:67::") && c2_v6.starts_with("fd00:67::"),
        "{c1_v6} {c2_v6}"
    );
    let mut held = stored_ips(&state);
    held.sort();
    let mut expect = vec![c1_v4.clone(), c1_v6, c2_v4.clone(), c2_v6.clone()];
    expect.sort();
    assert_eq!(held, expect);

    // Container to container, v4 and v6 (httpd may take a moment to listen).
    let reach = |from: &str, url: &str, want: &str| {
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            podman.fetch(from, url).as_deref() == Some(want)
        });
        assert!(ok.is_ok(), "{from} could not fetch {url} (want {want})");
    };
    reach("c1", &format!("http://{c2_v4}:8080/index.html"), "c2");
    reach("c2", &format!("http://{c1_v4}:8080/index.html"), "c1");
    reach("c1", &format!("http://[{c2_v6}]:8080/index.html"), "c2");

    // Container to host: busybox httpd in the node netns on the gateway address.
    let host_root = work.path().join("host-www");
    std::fs::create_dir_all(&host_root).unwrap();
    std::fs::write(host_root.join("index.html"), "host\n").unwrap();
    let mut host_httpd = node.command("/bin/busybox").unwrap();
    host_httpd
        .args(["httpd", "-f", "-p", "9090", "-h"])
        .arg(&host_root);
    let _host = Child::spawn(&mut host_httpd).unwrap();
    reach("c1", "http://10.67.0.1:9090/index.html", "host");

    // ClusterIP through the agent's socket LB: both containers serve it.
    agent.write("web.yaml", &service_yaml("web", &["10.96.67.10"], None));
    agent.write(
        "web-slice.yaml",
        &slice_yaml("web-1", "web", "IPv4", &[(&c1_v4, true), (&c2_v4, true)]),
    );
    agent.wait_for_backends("10.96.67.10:80", 2);
    let mut answers = std::collections::BTreeSet::new();
    let both = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        if let Some(a) = podman.fetch("c1", "http://10.96.67.10/index.html") {
            answers.insert(a);
        }
        answers.len() == 2
    });
    assert!(
        both.is_ok(),
        "ClusterIP answered only by {answers:?}\n{}",
        agent.log()
    );

    // podman rm releases the addresses and removes the host ends.
    podman.run(&["rm", "-f", "-t", "0", "c1", "c2"]);
    assert!(
        stored_ips(&state).is_empty(),
        "addresses left: {:?}",
        stored_ips(&state)
    );
    assert!(
        !links(node.ns()).iter().any(|l| l.starts_with("fer")),
        "{:?}",
        links(node.ns())
    );
}
