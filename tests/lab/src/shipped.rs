//! The agent exactly as the shipped DaemonSet runs it: args and env from
//! `ferrite manifests daemonset`, with only the source and the host paths rewritten for a lab
//! (its own bpffs root, cgroup, API socket, state and CNI dirs). Labs built on this cannot
//! drift from the manifest: a flag a lab would need is a flag the manifest needs.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::cmd::{self, AgentPaths, CommandError};

/// Failure to read the shipped DaemonSet.
#[derive(Debug, thiserror::Error)]
pub enum ShippedError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("`ferrite manifests daemonset`: {0}")]
    Manifest(String),
}

/// Where a lab agent's paths and identity come from.
#[derive(Clone, Copy, Debug)]
pub struct LabRewrite<'a> {
    /// `dir:PATH` (the DaemonSet's `--source kube` is replaced).
    pub source: &'a str,
    pub node_name: &'a str,
    /// `status.hostIP` for the downward API.
    pub host_ip: Option<IpAddr>,
    pub paths: AgentPaths<'a>,
    /// The CNI conf and bin dirs; `None` leaves them to the agent's detection (k3s's containerd
    /// `config.toml`, as on a real node).
    pub cni_dirs: Option<(&'a Path, &'a Path)>,
}

/// Flags whose value is a host path (or the source): replaced, or added when the manifest
/// leaves them to defaults, so a lab never touches the host's own.
const REWRITTEN: [&str; 7] = [
    "--source",
    "--bpf-root",
    "--cgroup",
    "--api-socket",
    "--state-dir",
    "--cni-conf-dir",
    "--cni-bin-dir",
];

/// Environment variables as (name, value).
pub type Env = Vec<(String, String)>;

/// The DaemonSet's container args and literal env, with `$(VAR)` references resolved.
pub fn daemonset_args(
    ferrite: &Path,
    rw: &LabRewrite<'_>,
) -> Result<(Vec<String>, Env), ShippedError> {
    let out = cmd::run(Command::new(ferrite).args(["manifests", "daemonset"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_yaml_ng::from_str(text.trim_start_matches(|c| c != '-'))
        .map_err(|e| ShippedError::Manifest(e.to_string()))?;
    let container = &doc["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .ok_or_else(|| ShippedError::Manifest("no container args".into()))?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let mut env = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let Some(name) = e["name"].as_str() else {
            continue;
        };
        let value = if let Some(v) = e["value"].as_str() {
            Some(v.to_owned())
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => Some(rw.node_name.to_owned()),
                Some("status.hostIP") => rw.host_ip.map(|ip| ip.to_string()),
                _ => None,
            }
        };
        if let Some(v) = value {
            env.push((name.to_owned(), v));
        }
    }
    let lab_value = |flag: &str| -> String {
        match flag {
            "--source" => rw.source.to_owned(),
            "--bpf-root" => rw.paths.bpf_root.display().to_string(),
            "--cgroup" => rw.paths.cgroup.display().to_string(),
            "--api-socket" => rw.paths.api_socket.display().to_string(),
            "--state-dir" => rw.paths.state_dir.display().to_string(),
            "--cni-conf-dir" => rw
                .cni_dirs
                .map(|d| d.0.display().to_string())
                .unwrap_or_default(),
            _ => rw
                .cni_dirs
                .map(|d| d.1.display().to_string())
                .unwrap_or_default(),
        }
    };
    let detected =
        |flag: &str| rw.cni_dirs.is_none() && (flag == "--cni-conf-dir" || flag == "--cni-bin-dir");
    let mut out_args = Vec::new();
    let mut seen = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if detected(&a) {
            let _ = it.next();
            seen.push(a);
        } else if REWRITTEN.contains(&a.as_str()) {
            let _ = it.next();
            out_args.push(a.clone());
            out_args.push(lab_value(&a));
            seen.push(a);
        } else {
            out_args.push(resolve(&a, &env));
        }
    }
    for flag in REWRITTEN {
        if !detected(flag) && !seen.iter().any(|s| s == flag) {
            out_args.push(flag.to_owned());
            out_args.push(lab_value(flag));
        }
    }
    Ok((out_args, env))
}

/// `$(NAME)` → the env value, as the kubelet expands container args.
fn resolve(arg: &str, env: &[(String, String)]) -> String {
    let mut s = arg.to_owned();
    for (k, v) in env {
        s = s.replace(&format!("$({k})"), v);
    }
    s
}

/// A `Command` running the shipped agent for a lab node (the caller adds stdio and netns).
pub fn agent_command(ferrite: &Path, rw: &LabRewrite<'_>) -> Result<Command, ShippedError> {
    let (args, env) = daemonset_args(ferrite, rw)?;
    let mut c = Command::new(ferrite);
    c.args(&args);
    c.envs(dir_source_env(env));
    Ok(c)
}

/// The DaemonSet's env for a `dir:` agent: without the API-server address, which means nothing
/// to it.
#[must_use]
pub fn dir_source_env(env: Env) -> Env {
    env.into_iter()
        .filter(|(k, _)| !k.starts_with("KUBERNETES_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn references_expand_like_the_kubelet() {
        let env = vec![("NODE_NAME".to_owned(), "n1".to_owned())];
        assert_eq!(resolve("$(NODE_NAME)", &env), "n1");
        assert_eq!(resolve("--x=$(NODE_NAME)-a", &env), "--x=n1-a");
        assert_eq!(resolve("$(OTHER)", &env), "$(OTHER)");
    }
}
