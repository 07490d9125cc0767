//! Pods the way containerd makes them: a network namespace, then every plugin of the conflist
//! the agent wrote, in order, with libcni's request shape (`name` and `cniVersion` copied in,
//! `prevResult` threaded through), from the bin dir the agent installed itself into.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::node::PodNode;
use crate::netns::Netns;
use crate::nslab::{NsLabError, io_err};

/// A pod: its netns, container id and the addresses the plugin gave it.
pub struct CniPod {
    pub netns: Netns,
    pub cid: String,
    pub v4: IpAddr,
    pub v6: Option<IpAddr>,
    pub result: Value,
}

impl CniPod {
    /// Runs `program` inside the pod.
    pub fn command(&self, program: &str) -> Result<Command, NsLabError> {
        Ok(self.netns.command(program)?)
    }

    /// The pod's host-side device (the CNI result's interface without a sandbox).
    #[must_use]
    pub fn host_device(&self) -> Option<&str> {
        self.result["interfaces"]
            .as_array()?
            .iter()
            .find(|i| i.get("sandbox").is_none())?["name"]
            .as_str()
    }
}

/// One plugin invocation inside the node netns.
fn exec(
    node: &PodNode,
    plugin: &Value,
    verb: &str,
    cid: &str,
    netns: &Netns,
) -> Result<Value, NsLabError> {
    let kind = plugin["type"].as_str().unwrap_or_default();
    let bin = node.bin_dir.join(kind);
    let mut cmd = node.ns.command(&bin)?;
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns.ns().path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &node.bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("spawn {}", bin.display())))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(plugin.to_string().as_bytes())
        .map_err(io_err("write the CNI request"))?;
    let out = child
        .wait_with_output()
        .map_err(io_err("wait for the CNI plugin"))?;
    if !out.status.success() {
        return Err(NsLabError::Other(format!(
            "CNI {verb} of {kind} on {} failed ({}): {}{}",
            node.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    if out.stdout.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| NsLabError::Other(format!("CNI {verb} of {kind}: not JSON: {e}")))
}

/// The plugins of the node's conflist, each as libcni would send it.
fn requests(node: &PodNode) -> Result<Vec<Value>, NsLabError> {
    let text = std::fs::read_to_string(node.conflist())
        .map_err(io_err(format!("read {}", node.conflist().display())))?;
    let list: Value = serde_json::from_str(&text)
        .map_err(|e| NsLabError::Other(format!("conflist is not JSON: {e}")))?;
    let mut out = Vec::new();
    for p in list["plugins"].as_array().into_iter().flatten() {
        let mut p = p.clone();
        if let Some(o) = p.as_object_mut() {
            o.insert("name".into(), list["name"].clone());
            o.insert("cniVersion".into(), list["cniVersion"].clone());
            o.remove("capabilities");
        }
        out.push(p);
    }
    Ok(out)
}

impl PodNode {
    /// ADD a new pod through the conflist; returns its index in `pods`.
    pub fn add_pod(&mut self, prefix: &str) -> Result<usize, NsLabError> {
        let netns = Netns::new(prefix)?;
        let cid = format!("{}-{}", netns.name(), self.pods.len());
        let mut prev: Option<Value> = None;
        for mut req in requests(self)? {
            if let Some(prev) = &prev {
                req["prevResult"] = prev.clone();
            }
            prev = Some(exec(self, &req, "ADD", &cid, &netns)?);
        }
        let result = prev.unwrap_or(Value::Null);
        let ips: Vec<IpAddr> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect();
        let v4 = ips
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| NsLabError::Other(format!("no IPv4 address in {result}")))?;
        let v6 = ips.iter().copied().find(IpAddr::is_ipv6);
        self.pods.push(CniPod {
            netns,
            cid,
            v4,
            v6,
            result,
        });
        Ok(self.pods.len() - 1)
    }

    /// DEL pod `i` through the conflist (reverse order) and drop its netns.
    pub fn del_pod(&mut self, i: usize) -> Result<(), NsLabError> {
        let pod = self.pods.remove(i);
        for mut req in requests(self)?.into_iter().rev() {
            req["prevResult"] = pod.result.clone();
            exec(self, &req, "DEL", &pod.cid, &pod.netns)?;
        }
        Ok(())
    }
}
