//! Shared fixtures of the CNI tests: run the real `ferrite` binary (or any reference plugin) as
//! a CNI plugin inside a "node" netns, a small libcni-like runner for conflists (prevResult
//! threading, reverse-order DEL), and readers for what a netns holds.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ferrite_lab::{Netns, Ns};
use serde_json::{Value, json};

pub const FERRITE: &str = env!("CARGO_BIN_EXE_ferrite");
/// Debian's containernetworking-plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// Fails (never skips) unless running as root with the named tools; each tool names the Debian
/// package that provides it.
pub fn require(tools: &[(&str, &str)]) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "CNI tests must run as root (sudo make test)"
    );
    for (tool, package) in tools {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            found,
            "{tool} not found: run `make setup` (apt-get install {package})"
        );
    }
}

/// The reference plugins the chain and bench tests run.
pub fn require_reference_plugins() {
    require(&[
        ("ip", "iproute2"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/usr/lib/cni/portmap", "containernetworking-plugins"),
        ("/usr/lib/cni/bandwidth", "containernetworking-plugins"),
        ("/usr/lib/cni/tuning", "containernetworking-plugins"),
        ("iptables", "iptables"),
        ("tc", "iproute2"),
    ]);
}

/// What one plugin run printed and returned.
#[derive(Debug)]
pub struct Reply {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// The JSON on stdout (`Null` when there was none).
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.stdout)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
        }
    }

    /// Asserts success and returns stdout's JSON.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "plugin failed: {self:#?}");
        self.json()
    }

    /// Asserts a failure with `code` and a spec-shaped error object; returns it.
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(
            self.status, 0,
            "expected error {code}, got success: {self:#?}"
        );
        let j = self.json();
        assert_eq!(j["code"], code, "wrong error code: {self:#?}");
        assert!(j["cniVersion"].is_string(), "{j}");
        assert!(j["msg"].is_string(), "{j}");
        j
    }
}

/// One invocation's environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    pub fn new(command: &str) -> Self {
        Self {
            command: command.into(),
            path: Some(REFERENCE_PLUGINS.into()),
            ..Self::default()
        }
    }

    pub fn attach(command: &str, container_id: &str, netns: &Path, ifname: &str) -> Self {
        Self {
            container_id: Some(container_id.into()),
            netns: Some(netns.to_owned()),
            ifname: Some(ifname.into()),
            ..Self::new(command)
        }
    }
}

/// Runs plugin `bin` in network namespace `node` with `env` and `stdin`.
pub fn exec(bin: &Path, node: &Ns, env: &Env, stdin: &str) -> Reply {
    let mut cmd = node.command(bin).expect("plugin command");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", &env.command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let pairs = [
        ("CNI_CONTAINERID", env.container_id.clone()),
        (
            "CNI_NETNS",
            env.netns.as_ref().map(|p| p.display().to_string()),
        ),
        ("CNI_IFNAME", env.ifname.clone()),
        ("CNI_ARGS", env.args.clone()),
        ("CNI_PATH", env.path.clone()),
    ];
    for (k, v) in pairs {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for plugin");
    Reply {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the ferrite plugin.
pub fn ferrite(node: &Ns, env: &Env, conf: &Value) -> Reply {
    exec(Path::new(FERRITE), node, env, &conf.to_string())
}

/// A ferrite network config for tests: its own state dir, pod CIDRs, no agent.
pub fn conf(version: &str, name: &str, state: &Path, cidrs: &[&str]) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "ferrite",
        "podCIDRs": cidrs,
        "stateDir": state.join("ipam"),
        "nodeState": state.join("node.json"),
        "apiSocket": state.join("no-agent.sock"),
        "mtu": 1400,
    })
}

/// A conflist runner doing what libcni does: `name`/`cniVersion` copied into every plugin,
/// `runtimeConfig` for declared capabilities, `prevResult` threaded through ADD, the final
/// result given to CHECK and DEL (reverse order).
pub struct Chain {
    pub conflist: Value,
    pub plugin_dirs: Vec<PathBuf>,
}

impl Chain {
    fn plugin_bin(&self, kind: &str) -> PathBuf {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("plugin {kind} not in {:?}", self.plugin_dirs))
    }

    fn request(&self, plugin: &Value, capability_args: &Value, prev: Option<&Value>) -> Value {
        let mut p = plugin.clone();
        let obj = p.as_object_mut().expect("plugin object");
        obj.insert("name".into(), self.conflist["name"].clone());
        obj.insert("cniVersion".into(), self.conflist["cniVersion"].clone());
        let mut rc = serde_json::Map::new();
        if let Some(caps) = obj
            .remove("capabilities")
            .and_then(|c| c.as_object().cloned())
        {
            for (k, on) in caps {
                if on == true
                    && let Some(v) = capability_args.get(&k)
                {
                    rc.insert(k, v.clone());
                }
            }
        }
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(rc));
        }
        if let Some(prev) = prev {
            obj.insert("prevResult".into(), prev.clone());
        }
        p
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"]
            .as_array()
            .expect("plugins")
            .clone()
    }

    fn env(&self, command: &str, cid: &str, netns: &Path, ifname: &str) -> Env {
        let mut env = Env::attach(command, cid, netns, ifname);
        env.path = Some(
            std::env::join_paths(&self.plugin_dirs)
                .expect("CNI_PATH")
                .to_string_lossy()
                .into_owned(),
        );
        env
    }

    /// ADD through the chain; the final result, or the failing plugin's reply.
    pub fn add(&self, node: &Ns, cid: &str, netns: &Path, caps: &Value) -> Result<Value, Reply> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let bin = self.plugin_bin(plugin["type"].as_str().expect("type"));
            let req = self.request(&plugin, caps, prev.as_ref());
            let reply = exec(
                &bin,
                node,
                &self.env("ADD", cid, netns, "eth0"),
                &req.to_string(),
            );
            if reply.status != 0 {
                return Err(reply);
            }
            prev = Some(reply.json());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// CHECK every plugin (but those named in `skip`) with the ADD result.
    pub fn check(
        &self,
        node: &Ns,
        cid: &str,
        netns: &Path,
        caps: &Value,
        result: &Value,
        skip: &[&str],
    ) -> Result<(), Reply> {
        for plugin in self.plugins() {
            if skip.iter().any(|s| plugin["type"] == *s) {
                continue;
            }
            let bin = self.plugin_bin(plugin["type"].as_str().expect("type"));
            let req = self.request(&plugin, caps, Some(result));
            let reply = exec(
                &bin,
                node,
                &self.env("CHECK", cid, netns, "eth0"),
                &req.to_string(),
            );
            if reply.status != 0 {
                return Err(reply);
            }
        }
        Ok(())
    }

    /// DEL in reverse order with the ADD result.
    pub fn del(
        &self,
        node: &Ns,
        cid: &str,
        netns: &Path,
        caps: &Value,
        result: Option<&Value>,
    ) -> Result<(), Reply> {
        for plugin in self.plugins().iter().rev() {
            let bin = self.plugin_bin(plugin["type"].as_str().expect("type"));
            let req = self.request(plugin, caps, result);
            let reply = exec(
                &bin,
                node,
                &self.env("DEL", cid, netns, "eth0"),
                &req.to_string(),
            );
            if reply.status != 0 {
                return Err(reply);
            }
        }
        Ok(())
    }
}

/// Link names in a netns.
pub fn links(ns: &Ns) -> BTreeSet<String> {
    let out = ns.ip_run(["-j", "link", "show"]).expect("ip link");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    v.as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

/// `ADDRESS/PREFIX` of every global address on `dev` in a netns.
pub fn addresses(ns: &Ns, dev: &str) -> Vec<String> {
    let Ok(out) = ns.ip_run(["-j", "addr", "show", "dev", dev]) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j addr");
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// The addresses in the IPAM store of network `name` under `state_dir`.
pub fn stored(state_dir: &Path, name: &str) -> Vec<Value> {
    let path = state_dir.join(name).join("state.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<Value>(&b).expect("state.json")["allocations"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// A node netns with `pods` pod netns beside it.
pub struct NodeLab {
    pub node: Netns,
    pub pods: Vec<Netns>,
}

impl NodeLab {
    pub fn new(prefix: &str, pods: usize) -> Self {
        let node = Netns::new(prefix).expect("node netns");
        let pods = (0..pods)
            .map(|_| Netns::new(prefix).expect("pod netns"))
            .collect();
        Self { node, pods }
    }

    pub fn pod_path(&self, i: usize) -> PathBuf {
        self.pods[i].ns().path()
    }
}
