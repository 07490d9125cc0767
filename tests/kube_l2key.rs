//! The L2 membership key in kube mode, as root: two real agents (`--source kube`, no
//! `--l2-key-file`) start against one fake API server that enforces the addon's generated RBAC.
//! The first creates the Secret `kube-system/ferrite-l2-key` (32 random bytes, hex), the other
//! reads it (or loses the create race and reads the winner's): both end with the same key,
//! one create succeeded, and nothing was denied. The create race itself is pinned down
//! deterministically by the unit tests of `src/source/kube/l2key.rs`.

mod common;

use std::time::Duration;

use common::{AgentLab, generated_rbac, require_root};
use ferrite_fakeapi::{FakeApi, Options, Rules};
use ferrite_lab::wait_until;
use serde_json::Value;

const CRDS: &str = include_str!("../k3s-addon/crds.yaml");

fn membership(agent: &AgentLab) -> Value {
    let out = agent.ferrite(&["l2", "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default()["membership"].clone()
}

#[test]
fn two_kube_agents_share_the_key_the_first_one_created_in_a_secret() {
    require_root();
    let rules = Rules::from_manifest(&generated_rbac()).expect("RBAC of the manifest");
    let mut agents = [AgentLab::new("kla"), AgentLab::new("klb")];
    let dir = agents[0].work.path().join("apiserver");
    std::fs::create_dir_all(&dir).expect("fake API dir");
    let api = FakeApi::start_with(
        &dir,
        &Options {
            rbac: Some(rules),
            ..Options::default()
        },
    )
    .expect("fake API server");
    api.load_yaml(CRDS).expect("CRDs");
    for (i, agent) in agents.iter_mut().enumerate() {
        let kubeconfig = api
            .client_kubeconfig(&format!("agent{i}"))
            .expect("kubeconfig");
        agent.start_with(
            "kube",
            &["--cni-conf-dir", "none"],
            &[("KUBECONFIG", kubeconfig.as_os_str())],
            false,
        );
    }
    let mut seen = Vec::new();
    let both = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        seen = agents.iter().map(membership).collect();
        seen.iter().all(|m| m["key"].is_string())
    });
    assert!(
        both.is_ok(),
        "the agents never had the key: {seen:?}\n{}",
        agents[1].log()
    );
    assert_eq!(seen[0]["key"], seen[1]["key"], "one key: {seen:?}");
    for m in &seen {
        let from = m["key_from"].as_str().unwrap_or_default();
        assert!(from.starts_with("Secret kube-system/ferrite-l2-key"), "{m}");
    }
    let secret = api
        .get("v1", "Secret", "kube-system", "ferrite-l2-key")
        .expect("the Secret exists");
    let data = secret["data"]["l2.key"].as_str().unwrap_or_default();
    // Base64 of 64 hex digits: 88 characters with padding.
    assert_eq!(data.len(), 88, "{secret}");
    let requests = api.requests();
    let creates: Vec<u16> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/secrets"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        creates.iter().filter(|s| **s == 201).count(),
        1,
        "exactly one agent created it: {creates:?}"
    );
    let denied: Vec<_> = api
        .rbac_decisions()
        .into_iter()
        .filter(|d| !d.allowed)
        .collect();
    assert!(denied.is_empty(), "RBAC denied: {denied:#?}");
    assert!(
        requests.iter().all(|r| !(r.path.contains("/secrets")
            && r.method == "GET"
            && !r.path.ends_with("/secrets/ferrite-l2-key"))),
        "only the one Secret is read"
    );
}
