//! Masquerade throughput: `iperf3` from a pod to the WAN host (masqueraded by ferrite's eBPF
//! SNAT on the node's egress) against `iperf3` from the node itself to the same host, in the
//! masquerade lab (`ferrite_lab::masqlab`), runs interleaved so drift hits both alike.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use ferrite_lab::Child;
use ferrite_lab::masqlab::{MasqLab, WAN_V4};

use serde::Serialize;

use super::northsouth::tools::iperf3_from;
use super::results::Spread;

const IPERF_PORT: u16 = 5201;

/// Masqueraded pod → WAN against node → WAN TCP throughput.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MasqBench {
    pub masqueraded: Spread,
    pub node: Spread,
    /// Median masqueraded over median node (target ≥ 0.95).
    pub ratio: f64,
    pub runs: usize,
    pub seconds: u32,
}

/// Builds the lab (prefix `mqb`), starts `ferrite` on node1, and runs `runs` (≥ 5 for the
/// table) interleaved `iperf3 -t seconds` pairs.
pub fn masquerade(ferrite: &Path, runs: usize, seconds: u32) -> Result<MasqBench, String> {
    let mut lab = MasqLab::build("mqb", 1, 1).map_err(|e| format!("masquerade lab: {e}"))?;
    lab.start_agent(0, ferrite, &[])
        .map_err(|e| format!("ferrite agent: {e}"))?;
    let mut server = lab
        .wan()
        .ns()
        .command("iperf3")
        .map_err(|e| e.to_string())?;
    server
        .args(["-s", "-p", &IPERF_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Child::spawn(&mut server).map_err(|e| format!("iperf3 -s: {e}"))?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let target = SocketAddr::from((WAN_V4, IPERF_PORT));
    let pod = lab.node(0).pods.pods()[0].netns.ns().clone();
    let node = lab.node(0).ns().clone();
    let (mut masq, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        masq.push(iperf3_from(&pod, target, seconds).map_err(|e| format!("pod → WAN: {e}"))?);
        direct.push(iperf3_from(&node, target, seconds).map_err(|e| format!("node → WAN: {e}"))?);
    }
    let (masqueraded, node) = (Spread::of(&masq), Spread::of(&direct));
    Ok(MasqBench {
        ratio: masqueraded.median / node.median,
        masqueraded,
        node,
        runs: runs.max(1),
        seconds,
    })
}
