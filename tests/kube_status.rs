//! LB IPAM status with the real agent (`--source kube`) against the fake API server
//! (tests/fakeapi): ingress and `ferrite.dev/IPAMRequestSatisfied` on services, counts and
//! conflicts on pools, removal when a service is no longer handled, one writer per cluster (the
//! Lease holder; a new holder keeps every address), and restarts that reshuffle nothing.

mod common;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use common::{AgentLab, FERRITE, require_root};
use ferrite_fakeapi::{RequestRecord, Sandbox};
use ferrite_lab::{Child, wait_until};
use serde_json::Value;

const CRDS: &str = include_str!("../k3s-addon/crds.yaml");
const CONDITION: &str = "ferrite.dev/IPAMRequestSatisfied";
const LEASE: &str = "ferrite-status-writer";

/// `lan` (2 addresses, services labelled tier=web) and `small` (1 address, tier=small).
const POOLS: &str = r"
apiVersion: ferrite.dev/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: lan}
spec:
  blocks: [{cidr: 192.168.50.0/30}]
  serviceSelector: {matchLabels: {tier: web}}
---
apiVersion: ferrite.dev/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: small}
spec:
  blocks: [{start: 192.168.60.10, stop: 192.168.60.10}]
  serviceSelector: {matchLabels: {tier: small}}
";

fn lb_service(name: &str, tier: &str, cluster_ip: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: test\n  \
         labels: {{tier: {tier}}}\n{extra}spec:\n  type: LoadBalancer\n  clusterIP: {cluster_ip}\n  \
         ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
    )
}

/// One agent of the "cluster": its own bpf root, cgroup, API socket, state dir and API token.
struct Node {
    name: &'static str,
    lab: AgentLab,
    kubeconfig: PathBuf,
}

impl Node {
    fn new(api: &Sandbox, name: &'static str, prefix: &str) -> Self {
        Self {
            name,
            lab: AgentLab::new(prefix),
            kubeconfig: api.client_kubeconfig(name).expect("client kubeconfig"),
        }
    }

    /// Starts `ferrite agent --source kube` with a 2 s status Lease; waits for its API.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.lab.work.path().join("agent.log"))
            .expect("log file");
        let mut cmd = Command::new(FERRITE);
        cmd.arg("agent")
            .args(["--source", "kube"])
            .arg("--bpf-root")
            .arg(&self.lab.bpf_root)
            .arg("--cgroup")
            .arg(self.lab.cgroup.path())
            .arg("--api-socket")
            .arg(&self.lab.socket)
            .arg("--state-dir")
            .arg(self.lab.work.path().join("state"))
            .args(["--node-name", self.name])
            .args(["--cni-conf-dir", "none", "--status-lease-seconds", "2"])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("FERRITE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log);
        self.lab.agent = Some(Child::spawn(&mut cmd).expect("spawn ferrite agent"));
        let ok = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            self.lab.status().is_some()
        });
        assert!(
            ok.is_ok(),
            "{} did not start:\n{}",
            self.name,
            self.lab.log()
        );
    }
}

fn lab(prefix: &str) -> Sandbox {
    require_root();
    let api = Sandbox::start(prefix).expect("fake API server");
    api.load_yaml(CRDS).expect("CRDs");
    api.load_yaml(POOLS).expect("pools");
    api
}

fn service(api: &Sandbox, name: &str) -> Value {
    api.get("v1", "Service", "test", name)
        .unwrap_or_else(|| panic!("service {name} exists"))
}

fn ingress(api: &Sandbox, name: &str) -> Vec<String> {
    service(api, name)["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            assert_eq!(i["ipMode"], "VIP", "{i}");
            i["ip"].as_str().expect("ip").to_owned()
        })
        .collect()
}

fn condition(object: &Value, kind: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// `(status, reason)` of the service's IPAM condition.
fn ipam(api: &Sandbox, name: &str) -> Option<(String, String)> {
    let c = condition(&service(api, name), CONDITION)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
    ))
}

fn pool_count(api: &Sandbox, pool: &str, kind: &str) -> Option<String> {
    let object = api.get("ferrite.dev/v1alpha1", "LoadBalancerIPPool", "", pool)?;
    condition(&object, &format!("ferrite.dev/{kind}"))?["message"]
        .as_str()
        .map(str::to_owned)
}

/// Every service's ingress.
fn addresses(api: &Sandbox, names: &[&str]) -> BTreeMap<String, Vec<String>> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), ingress(api, n)))
        .collect()
}

/// Status applies under ferrite's LB IPAM field manager (not the validity conditions').
fn status_patches(api: &Sandbox) -> Vec<RequestRecord> {
    api.requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.path.ends_with("/status")
                && r.query.split('&').any(|p| p == "fieldManager=ferrite")
        })
        .collect()
}

fn holder(api: &Sandbox) -> Option<String> {
    api.get("coordination.k8s.io/v1", "Lease", "kube-system", LEASE)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

fn wait_for(what: &str, nodes: &[&Node], mut cond: impl FnMut() -> bool) {
    let ok = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        &mut cond,
    );
    if ok.is_err() {
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| format!("--- {}:\n{}", n.name, n.lab.log()))
            .collect();
        panic!("timed out waiting for {what}\n{}", logs.join("\n"));
    }
}

/// Changes a service the way `kubectl apply` would: the spec, never the status.
fn edit_spec(api: &Sandbox, name: &str, edit: impl FnOnce(&mut Value)) {
    let mut object = service(api, name);
    edit(&mut object["spec"]);
    api.put(object).expect("update service");
}

fn ipam_is(api: &Sandbox, name: &str, status: &str, reason: &str) -> bool {
    ipam(api, name) == Some((status.to_owned(), reason.to_owned()))
}

/// Each pool's (name, total, used, available) counts, and no conflict.
fn assert_pool_status(api: &Sandbox, expected: &[(&str, &str, &str, &str)]) {
    for &(pool, total, used, available) in expected {
        assert_eq!(pool_count(api, pool, "IPsTotal").as_deref(), Some(total));
        assert_eq!(pool_count(api, pool, "IPsUsed").as_deref(), Some(used));
        assert_eq!(
            pool_count(api, pool, "IPsAvailable").as_deref(),
            Some(available)
        );
        let object = api
            .get("ferrite.dev/v1alpha1", "LoadBalancerIPPool", "", pool)
            .expect("pool");
        assert_eq!(
            condition(&object, "ferrite.dev/PoolConflict").expect("conflict")["status"],
            "False"
        );
    }
}

#[test]
fn kube_status_reports_allocations_reasons_and_pool_counts() {
    let api = lab("kst1");
    let services = lb_service("web", "web", "10.96.0.10", "")
        + &lb_service("first", "small", "10.96.0.11", "")
        + &lb_service("waiting", "small", "10.96.0.12", "")
        + &lb_service("nomatch", "none", "10.96.0.13", "")
        + &lb_service(
            "bad",
            "web",
            "10.96.0.14",
            "  annotations: {ferrite.dev/ips: not-an-ip}\n",
        )
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: v6, namespace: test, labels: \
           {tier: web}}\nspec:\n  type: LoadBalancer\n  clusterIP: fd00:96::20\n  \
           ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack\n  ports: [{port: 80}]\n"
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: test, labels: \
           {tier: web}}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: example.com/other\n  \
           clusterIP: 10.96.0.15\n  ports: [{port: 80}]\n";
    api.load_yaml(&services).expect("services");
    // Overlaps `lan` and is newer (or, created in the same second, later by name): not used.
    api.load_yaml(
        "apiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: zdup}\n\
         spec:\n  blocks: [{cidr: 192.168.50.0/31}]\n",
    )
    .expect("overlapping pool");
    let mut node = Node::new(&api, "node-a", "kst1");
    node.start();
    let nodes = [&node];

    wait_for("every IPAM condition", &nodes, || {
        ipam_is(&api, "web", "True", "satisfied")
            && ipam_is(&api, "first", "True", "satisfied")
            && ipam_is(&api, "waiting", "False", "out_of_ips")
            && ipam_is(&api, "nomatch", "False", "pool_selector_mismatch")
            && ipam_is(&api, "bad", "False", "invalid_request")
            && ipam_is(&api, "v6", "False", "no_pool")
    });
    assert_eq!(ingress(&api, "web"), ["192.168.50.1"]);
    assert_eq!(ingress(&api, "first"), ["192.168.60.10"]);
    for name in ["waiting", "nomatch", "bad", "v6", "other"] {
        assert!(ingress(&api, name).is_empty(), "{name}");
    }
    assert_eq!(ipam(&api, "other"), None, "a foreign class is left alone");
    let web = condition(&service(&api, "web"), CONDITION).expect("condition");
    assert_eq!(web["observedGeneration"], 1);
    assert!(
        web["message"]
            .as_str()
            .is_some_and(|m| m.contains("192.168.50.1")),
        "{web}"
    );
    wait_for("both pools' counts", &nodes, || {
        pool_count(&api, "lan", "IPsUsed").as_deref() == Some("1")
            && pool_count(&api, "small", "IPsUsed").as_deref() == Some("1")
    });
    assert_pool_status(&api, &[("lan", "2", "1", "1"), ("small", "1", "1", "0")]);
    wait_for("the conflict on zdup", &nodes, || {
        api.get("ferrite.dev/v1alpha1", "LoadBalancerIPPool", "", "zdup")
            .and_then(|p| condition(&p, "ferrite.dev/PoolConflict"))
            .is_some_and(|c| {
                c["status"] == "True" && c["message"].as_str().is_some_and(|m| m.contains("lan"))
            })
    });
    assert_eq!(
        pool_count(&api, "zdup", "IPsAvailable").as_deref(),
        Some("0")
    );
    let waiting_since =
        condition(&service(&api, "waiting"), CONDITION).expect("c")["lastTransitionTime"].clone();

    // `first` stops being a LoadBalancer: what ferrite wrote goes, `waiting` gets the address.
    // (A second later: lastTransitionTime has a resolution of one second.)
    std::thread::sleep(Duration::from_millis(1100));
    edit_spec(&api, "first", |spec| spec["type"] = "ClusterIP".into());
    wait_for("the freed address to move", &nodes, || {
        ingress(&api, "waiting") == ["192.168.60.10"] && ingress(&api, "first").is_empty()
    });
    wait_for("first's condition removed", &nodes, || {
        ipam(&api, "first").is_none()
    });
    let first = service(&api, "first");
    assert!(
        first["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|m| m["manager"] != "ferrite"),
        "ferrite owns nothing on first: {first}"
    );
    let waiting = condition(&service(&api, "waiting"), CONDITION).expect("c");
    assert_eq!(waiting["status"], "True");
    assert_ne!(
        waiting["lastTransitionTime"], waiting_since,
        "the reason changed"
    );

    restart_adopts_every_address(&api, &mut node);
}

/// Restart with `first` back as a LoadBalancer (older than `waiting` by name order): the
/// restarted agent adopts `waiting`'s address from its status instead of reshuffling.
fn restart_adopts_every_address(api: &Sandbox, node: &mut Node) {
    node.lab.kill9();
    edit_spec(api, "first", |spec| spec["type"] = "LoadBalancer".into());
    let before = addresses(api, &["web", "waiting"]);
    let patches_before = status_patches(api).len();
    node.start();
    wait_for("first's condition after the restart", &[node], || {
        ipam_is(api, "first", "False", "out_of_ips")
    });
    assert_eq!(addresses(api, &["web", "waiting"]), before);
    assert!(ingress(api, "first").is_empty());
    let rewritten: Vec<String> = status_patches(api)[patches_before..]
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.contains("/services/web/") || p.contains("/services/waiting/"))
        .collect();
    assert!(
        rewritten.is_empty(),
        "nothing rewritten on unchanged services: {rewritten:?}"
    );
}

#[test]
fn kube_status_only_the_lease_holder_writes_and_a_new_holder_keeps_addresses() {
    let api = lab("kst2");
    // Enough services that a new holder lists them instead of reading each one.
    let mut objects = String::from(
        "---\napiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: bulk}\n\
         spec:\n  blocks: [{cidr: 192.168.70.0/27}]\n  serviceSelector: {matchLabels: {tier: bulk}}\n",
    );
    objects += &lb_service("one", "web", "10.96.0.21", "");
    objects += &lb_service("two", "small", "10.96.0.22", "");
    let bulk: Vec<String> = (0..20).map(|i| format!("bulk{i}")).collect();
    for (i, name) in bulk.iter().enumerate() {
        objects += &lb_service(name, "bulk", &format!("10.96.1.{}", i + 1), "");
    }
    api.load_yaml(&objects).expect("services");
    let mut all: Vec<&str> = vec!["one", "two", "three"];
    all.extend(bulk.iter().map(String::as_str));
    let mut a = Node::new(&api, "node-a", "kst2");
    let mut b = Node::new(&api, "node-b", "kst3");
    a.start();
    wait_for("node-a to hold the Lease and write", &[&a], || {
        holder(&api).as_deref() == Some("node-a")
            && ingress(&api, "one") == ["192.168.50.1"]
            && bulk.iter().all(|n| ingress(&api, n).len() == 1)
    });
    b.start();
    // node-b serves the same addresses (adopted from status) without writing any.
    wait_for("node-b to allocate", &[&a, &b], || {
        b.lab
            .services()
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["frontend"] == "192.168.60.10:80"))
    });
    api.load_yaml(&lb_service("three", "web", "10.96.0.23", ""))
        .expect("three");
    wait_for("three's status and lan's counts", &[&a, &b], || {
        ingress(&api, "three") == ["192.168.50.2"]
            && pool_count(&api, "lan", "IPsUsed").as_deref() == Some("2")
    });
    let writers = |records: &[RequestRecord]| -> Vec<String> {
        let mut w: Vec<String> = records.iter().map(|r| r.client.clone()).collect();
        w.dedup();
        w
    };
    assert_eq!(writers(&status_patches(&api)), ["node-a"]);
    let before = addresses(&api, &all);

    // The holder dies: node-b takes the Lease over and keeps every address.
    let requests_before = api.requests().len();
    let patches_before = status_patches(&api).len();
    a.lab.kill9();
    wait_for("node-b to hold the Lease", &[&b], || {
        holder(&api).as_deref() == Some("node-b")
    });
    api.load_yaml(&lb_service("four", "web", "10.96.0.24", ""))
        .expect("four");
    wait_for("four's status written by node-b", &[&b], || {
        ipam_is(&api, "four", "False", "out_of_ips")
    });
    assert_eq!(addresses(&api, &all), before);
    let reads: Vec<String> = api
        .requests()
        .into_iter()
        .skip(requests_before)
        .filter(|r| {
            r.client == "node-b"
                && r.method == "GET"
                && r.path.starts_with("/api/v1/namespaces/test/services/")
        })
        .map(|r| r.path)
        .collect();
    assert!(
        reads.iter().all(|p| p.ends_with("/four")),
        "the new holder learnt the services from one list, not one read each: {reads:?}"
    );
    let after: Vec<RequestRecord> = status_patches(&api)[patches_before..].to_vec();
    assert_eq!(writers(&after), ["node-b"], "{after:?}");
    assert!(
        after.iter().all(|r| r.path.contains("/services/four/")
            || r.path.contains("/loadbalancerippools/")),
        "the new holder rewrote nothing that was already right: {after:?}"
    );
}
