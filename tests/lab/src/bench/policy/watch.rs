//! What watching every Pod costs (kube mode keeps every node's pods for NetworkPolicy's
//! identities): the agent's `VmRSS` on the Kubernetes source against the fake API server with
//! 0, 1,000 and 10,000 pods of other nodes, each with its own labels, after the initial sync.

use std::path::Path;
use std::time::Duration;

use ferrite_fakeapi::FakeApi;
use serde::Serialize;
use serde_json::{Value, json};

use super::super::kube::CRDS;
use super::super::kube::cluster::{AgentProc, service, slice};
use super::manifests::synthetic_ip;

/// One row: pods in the API server, the agent's memory after the sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WatchRow {
    pub pods: usize,
    pub rss_kb: u64,
}

fn pod(i: usize) -> Value {
    let ip = synthetic_ip(i).to_string();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{i}"), "namespace": format!("bench-id-{}", i % 10),
                     "labels": {"pod": format!("p{i}"), "group": format!("g{}", i % 50),
                                "app.kubernetes.io/name": "bench"}},
        "spec": {"nodeName": format!("other-{}", i % 3),
                 "containers": [{"name": "c", "image": "registry.example/bench:1",
                                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// Every row, each with a fresh API server and agent.
pub fn measure(ferrite: &Path, work: &Path, counts: &[usize]) -> Result<Vec<WatchRow>, String> {
    let api_err = |e: ferrite_fakeapi::FakeApiError| format!("fake API server: {e}");
    let mut rows = Vec::new();
    for &pods in counts {
        super::progress(&format!("policy: kube source with {pods} pods"));
        let dir = work.join(format!("watch-{pods}"));
        let _ = std::fs::remove_dir_all(&dir);
        let api_dir = dir.join("apiserver");
        std::fs::create_dir_all(&api_dir)
            .map_err(|e| format!("create {}: {e}", api_dir.display()))?;
        let api = FakeApi::start(&api_dir).map_err(api_err)?;
        api.load_yaml(CRDS).map_err(api_err)?;
        for k in 0..10 {
            api.put(json!({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": format!("bench-id-{k}")}}))
                .map_err(api_err)?;
        }
        for i in 0..pods {
            api.put(pod(i)).map_err(api_err)?;
        }
        // One service: its frontend in the map means the initial lists (pods too) are in.
        api.put(service(0)).map_err(api_err)?;
        api.put(slice(0, 1, 1)).map_err(api_err)?;
        let kubeconfig = api.kubeconfig().as_os_str().to_owned();
        let mut agent = AgentProc::start(
            ferrite,
            &dir,
            "watch",
            "kube",
            &[("KUBECONFIG", kubeconfig.as_os_str())],
        )?;
        let map = agent.frontends(Duration::from_mins(2))?;
        let start = std::time::Instant::now();
        while map.count(0).is_none_or(|c| c == 0) {
            if !agent.running() || start.elapsed() > Duration::from_mins(2) {
                return Err(format!("{pods} pods: not synced: {}", agent.tail()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_secs(1));
        rows.push(WatchRow {
            pods,
            rss_kb: agent.memory()?.0,
        });
    }
    Ok(rows)
}
