//! STATUS: ready when the node has a pod CIDR with a free address and the agent reports its
//! datapath ready on `GET /healthz`.
//!
//! Why ask the agent's API rather than a ready-file: a file outlives the agent that wrote it,
//! so a crashed or stopped agent would still look ready; the API answers only while the agent
//! runs, and its `/healthz` says whether the datapath (pinned programs and maps) is in place.
//! New pods need a live agent (their Services, policies and routes are programmed by it), so
//! "agent down" is exactly "cannot service ADD well" — Cilium's plugin reasons the same way.

use std::path::Path;
use std::time::Duration;

use crate::cni::config::NetConf;
use crate::cni::error::CniError;
use crate::cni::ipam::{IpamError, Store};
use crate::cni::node_state;

const AGENT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let cidrs = node_state::pod_cidrs(conf).map_err(|e| CniError::NotAvailable(e.to_string()))?;
    let store = Store::new(&conf.state_dir, &conf.name);
    match store.lock(Duration::from_secs(2)) {
        Ok(locked) => {
            let state = locked.load()?;
            if let Some(full) = cidrs.iter().find(|c| state.free_in(c) == 0) {
                return Err(CniError::NotAvailable(format!(
                    "every pod address of {full} is in use"
                )));
            }
        }
        // Busy with ADDs: that says nothing about readiness.
        Err(IpamError::Busy { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    agent_ready(&conf.api_socket).map_err(CniError::NotAvailable)
}

fn agent_ready(socket: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))?;
    let answer = rt.block_on(async {
        tokio::time::timeout(
            AGENT_TIMEOUT,
            crate::api::client::get::<serde_json::Value>(socket, "/healthz"),
        )
        .await
    });
    match answer {
        Ok(Ok(v)) if v["ready"] == true => Ok(()),
        Ok(Ok(v)) => Err(format!("the agent is not ready: {v}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the agent at {} did not answer within {AGENT_TIMEOUT:?}",
            socket.display()
        )),
    }
}
