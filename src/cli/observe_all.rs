//! `ferrite observe --all-nodes`: every node's agent asked over its TLS listener, the answers
//! merged by time — what hubble-relay does, without another pod. The nodes and their
//! addresses come from this node's agent (`/v1/nodes`); a node that does not answer is named
//! on stderr and the others are still shown.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::observe::{ObserveCmd, show};
use crate::api::tls::{ClientFiles, client_config};
use crate::api::{FlowsView, NodeView, client};
use crate::flows::Flow;
use crate::flows::filter::{FlowQuery, MAX_LAST};

/// One node to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub addr: SocketAddr,
}

/// The nodes to ask: the first InternalIP of each (IPv4 first, as the Node lists them).
#[must_use]
pub fn targets(nodes: &[NodeView], port: u16) -> (Vec<Target>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for n in nodes {
        match n
            .internal_ips
            .iter()
            .find_map(|ip| ip.parse::<IpAddr>().ok())
        {
            Some(ip) => out.push(Target {
                node: n.name.clone(),
                addr: SocketAddr::new(ip, port),
            }),
            None => skipped.push(format!("{}: no InternalIP", n.name)),
        }
    }
    (out, skipped)
}

/// The flows of every node in time order; with `last`, the newest `last` of them.
#[must_use]
pub fn merge(per_node: Vec<Vec<Flow>>, last: Option<usize>) -> Vec<Flow> {
    let mut all: Vec<Flow> = per_node.into_iter().flatten().collect();
    all.sort_by(|a, b| (a.time_unix_ms, &a.node, a.seq).cmp(&(b.time_unix_ms, &b.node, b.seq)));
    if let Some(n) = last
        && all.len() > n
    {
        all.drain(..all.len() - n);
    }
    all
}

fn files(cmd: &ObserveCmd) -> Result<ClientFiles, String> {
    match (&cmd.tls_cert, &cmd.tls_key, &cmd.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(ClientFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => Err(
            "--all-nodes needs --tls-cert, --tls-key and --tls-ca (the agents' TLS listener \
             accepts only clients with a certificate)"
                .into(),
        ),
    }
}

async fn ask(
    target: &Target,
    config: Arc<rustls::ClientConfig>,
    query: &FlowQuery,
) -> Result<FlowsView, String> {
    let route = format!("/v1/flows?{}", query.to_query());
    let reply = client::get_tls(target.addr, config, &route)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!(
            "HTTP {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("not a flows answer: {e}"))
}

pub fn run(cmd: &ObserveCmd, query: FlowQuery, cutoff: Option<u64>) -> i32 {
    let setup = files(cmd).and_then(|f| client_config(&f).map_err(|e| e.to_string()));
    let config = match setup {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let nodes: Vec<NodeView> = match super::query::fetch(&cmd.api_socket, "/v1/nodes") {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let (targets, skipped) = targets(&nodes, cmd.api_port);
    for s in &skipped {
        eprintln!("warning: not asking node {s}");
    }
    if targets.is_empty() {
        eprintln!(
            "error: the agent at {} knows no node with an InternalIP (/v1/nodes): nothing to ask",
            cmd.api_socket.display()
        );
        return 1;
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    rt.block_on(follow(cmd, &targets, config, query, cutoff))
}

async fn follow(
    cmd: &ObserveCmd,
    targets: &[Target],
    config: Arc<rustls::ClientConfig>,
    query: FlowQuery,
    cutoff: Option<u64>,
) -> i32 {
    let mut queries: BTreeMap<String, FlowQuery> = targets
        .iter()
        .map(|t| (t.node.clone(), query.clone()))
        .collect();
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    let mut first = true;
    loop {
        let mut tasks = tokio::task::JoinSet::new();
        for t in targets {
            let (t, config, q) = (t.clone(), config.clone(), queries[&t.node].clone());
            tasks.spawn(async move {
                let answer = tokio::time::timeout(Duration::from_secs(5), ask(&t, config, &q))
                    .await
                    .unwrap_or_else(|_| Err("no answer within 5 s".into()));
                (t, answer)
            });
        }
        let mut per_node = Vec::new();
        let mut answered = 0;
        while let Some(Ok((t, answer))) = tasks.join_next().await {
            match answer {
                Ok(v) => {
                    answered += 1;
                    if failing.remove(&t.node).is_some() {
                        eprintln!("node {} ({}) answers again", t.node, t.addr);
                    }
                    if let Some(q) = queries.get_mut(&t.node) {
                        q.after = Some(v.stats.latest_seq.max(q.after.unwrap_or(0)));
                        q.last = Some(MAX_LAST);
                    }
                    per_node.push(v.flows);
                }
                Err(e) => {
                    if failing.get(&t.node) != Some(&e) {
                        eprintln!("warning: node {} ({}): {e}", t.node, t.addr);
                    }
                    failing.insert(t.node.clone(), e);
                }
            }
        }
        if first && answered == 0 {
            eprintln!("error: no node answered");
            return 1;
        }
        let last = (first && !cmd.follow).then_some(query.last).flatten();
        if let Some(code) = show(cmd, merge(per_node, last), first, cutoff) {
            return code;
        }
        first = false;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ips: &[&str]) -> NodeView {
        NodeView {
            name: name.into(),
            internal_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
            pod_cidrs: Vec::new(),
            ready: true,
        }
    }

    fn flow(node: &str, seq: u64, t: u64) -> Flow {
        crate::flows::test_flow(node, seq, t)
    }

    #[test]
    fn each_node_is_asked_on_its_first_internal_ip() {
        let (t, skipped) = targets(
            &[
                node("a", &["10.0.0.1", "fd00::1"]),
                node("b", &["fd00::2"]),
                node("c", &[]),
            ],
            9443,
        );
        assert_eq!(t[0].addr, "10.0.0.1:9443".parse().unwrap());
        assert_eq!(t[1].addr, "[fd00::2]:9443".parse().unwrap());
        assert_eq!(t.len(), 2);
        assert_eq!(skipped, ["c: no InternalIP"]);
    }

    #[test]
    fn flows_merge_by_time_and_last_keeps_the_newest() {
        let a = vec![flow("a", 1, 100), flow("a", 2, 300)];
        let b = vec![flow("b", 7, 200), flow("b", 8, 400)];
        let all = merge(vec![a.clone(), b.clone()], None);
        let order: Vec<(String, u64)> = all.iter().map(|f| (f.node.clone(), f.seq)).collect();
        assert_eq!(
            order,
            [
                ("a".into(), 1),
                ("b".into(), 7),
                ("a".into(), 2),
                ("b".into(), 8)
            ]
        );
        let newest = merge(vec![a, b], Some(2));
        assert_eq!(newest.iter().map(|f| f.seq).collect::<Vec<_>>(), [2, 8]);
    }
}
