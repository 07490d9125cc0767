//! The real agent with `--source kube` against the fake API server (tests/fakeapi): objects reach
//! the datapath (real TCP through the ClusterIP from a client in the test cgroup), server restarts
//! and expired watches are survived, the datapath keeps serving while the server is gone, and
//! invalid objects get conditions.

mod common;

use std::time::Duration;

use common::{AgentLab, PodLab, curl, require_root, service_yaml, slice_yaml};
use ferrite_fakeapi::FakeApi;
use ferrite_lab::wait_until;
use serde_json::Value;

const CRDS: &str = include_str!("../k3s-addon/crds.yaml");

struct KubeLab {
    pods: PodLab,
    agent: AgentLab,
    api: FakeApi,
}

fn lab(prefix: &str, pods: usize) -> KubeLab {
    require_root();
    let pods = PodLab::new(prefix, pods);
    let agent = AgentLab::new(prefix);
    let dir = agent.work.path().join("apiserver");
    std::fs::create_dir_all(&dir).expect("fake API dir");
    let api = FakeApi::start(&dir).expect("fake API server");
    api.load_yaml(CRDS).expect("CRDs");
    KubeLab { pods, agent, api }
}

impl KubeLab {
    fn start(&mut self, wait_for_apply: bool) {
        self.start_args(wait_for_apply, &[]);
    }

    fn start_args(&mut self, wait_for_apply: bool, extra: &[&str]) {
        let kubeconfig = self.api.kubeconfig().as_os_str().to_owned();
        let mut args = vec![
            "--cni-conf-dir",
            "none",
            "--k8s-qps",
            "200",
            "--k8s-burst",
            "400",
        ];
        args.extend_from_slice(extra);
        self.agent.start_with(
            "kube",
            &args,
            &[("KUBECONFIG", kubeconfig.as_os_str())],
            wait_for_apply,
        );
    }

    fn web(&self, ready: &[usize]) {
        let endpoints: Vec<(String, bool)> = (0..2)
            .map(|i| (self.pods.pod_v4(i), ready.contains(&i)))
            .collect();
        let refs: Vec<(&str, bool)> = endpoints.iter().map(|(a, r)| (a.as_str(), *r)).collect();
        let yaml = service_yaml("web", &["10.96.0.10"], None)
            + &slice_yaml("web-v4", "web", "IPv4", &refs);
        self.api.load_yaml(&yaml).expect("web");
    }

    /// Waits (up to 20 s: watches restart with backoff) for `frontend` to have `backends`.
    fn wait_for_backends(&self, frontend: &str, backends: usize) {
        let ok = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
            self.agent.services().as_array().is_some_and(|l| {
                l.iter().any(|s| {
                    s["frontend"] == frontend
                        && s["backends"]
                            .as_array()
                            .is_some_and(|b| b.len() == backends)
                })
            })
        });
        assert!(
            ok.is_ok(),
            "{frontend} never had {backends} backends: {}\n{}",
            self.agent.services(),
            self.agent.log()
        );
    }

    fn tcp(&self, count: usize) -> ferrite_lab::report::ClientReport {
        let count = count.to_string();
        self.agent.client(
            &self.pods.node,
            &[
                "--target",
                "10.96.0.10:80",
                "--proto",
                "tcp",
                "--count",
                &count,
                "--timeout-ms",
                "2000",
            ],
        )
    }

    fn condition(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let object = self.api.get(api_version, kind, ns, name)?;
        object
            .pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c["type"] == "ferrite.dev/Valid")
            .cloned()
    }
}

#[test]
fn kube_objects_created_changed_and_deleted_reach_the_datapath() {
    let mut lab = lab("kb1", 2);
    lab.start(true);
    lab.web(&[0]);
    lab.wait_for_backends("10.96.0.10:80", 1);
    let one = lab.tcp(20);
    assert_eq!(one.ok, 20, "{one:?}");
    assert_eq!(one.names.keys().collect::<Vec<_>>(), ["pod-1"], "{one:?}");

    lab.web(&[0, 1]);
    lab.wait_for_backends("10.96.0.10:80", 2);
    let both = lab.tcp(40);
    assert_eq!(both.ok, 40, "{both:?}");
    assert_eq!(both.names.len(), 2, "{both:?}");

    lab.api
        .delete("v1", "Service", "test", "web")
        .expect("delete");
    let gone = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        lab.agent.services().as_array().is_some_and(Vec::is_empty)
    });
    assert!(gone.is_ok(), "{}", lab.agent.services());
    let after = lab.agent.client(
        &lab.pods.node,
        &[
            "--target",
            "10.96.0.10:80",
            "--proto",
            "tcp",
            "--count",
            "3",
            "--timeout-ms",
            "300",
        ],
    );
    assert_eq!(after.ok, 0, "no longer translated: {after:?}");
    let status = lab.agent.status().expect("status");
    assert_eq!(status["source"], "kube", "{status}");
}

#[test]
fn kube_server_restart_and_expired_watches_are_survived() {
    let mut lab = lab("kb2", 2);
    lab.web(&[0]);
    lab.start(true);
    lab.wait_for_backends("10.96.0.10:80", 1);

    lab.api.restart().expect("restart");
    lab.web(&[0, 1]);
    lab.wait_for_backends("10.96.0.10:80", 2);

    let lists_before = list_requests(&lab.api);
    lab.api.expire_watches();
    lab.web(&[1]);
    lab.wait_for_backends("10.96.0.10:80", 1);
    let only_two = lab.tcp(20);
    assert_eq!(
        only_two.names.keys().collect::<Vec<_>>(),
        ["pod-2"],
        "{only_two:?}"
    );
    assert!(
        list_requests(&lab.api) > lists_before,
        "410 Gone made the watchers list again"
    );
}

/// Lists (not watches) of EndpointSlices served so far.
fn list_requests(api: &FakeApi) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.ends_with("/endpointslices")
                && !r.query.contains("watch=true")
        })
        .count()
}

#[test]
fn kube_datapath_keeps_serving_while_the_server_is_gone() {
    let mut lab = lab("kb3", 2);
    lab.web(&[0, 1]);
    lab.start(true);
    lab.wait_for_backends("10.96.0.10:80", 2);

    lab.api.stop();
    let reported = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        lab.agent.status().is_some_and(|s| {
            s["source_errors"].as_array().is_some_and(|e| {
                e.iter().any(|e| {
                    e["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("kube: watch"))
                })
            })
        })
    });
    assert!(
        reported.is_ok(),
        "watch failures are reported: {:?}\n{}",
        lab.agent.status(),
        lab.agent.log()
    );
    let during = lab.tcp(30);
    assert_eq!(during.ok, 30, "still serving: {during:?}");
    assert_eq!(during.names.len(), 2, "{during:?}");

    // A restarted agent that cannot reach the server leaves the pinned datapath alone.
    lab.agent.kill9();
    lab.start(false);
    let status = lab.agent.status().expect("status");
    assert!(
        status["last_apply"].is_null(),
        "nothing applied without a complete list: {status}"
    );
    let restarted = lab.tcp(30);
    assert_eq!(restarted.ok, 30, "{restarted:?}");

    lab.api.resume().expect("resume");
    lab.web(&[0]);
    lab.wait_for_backends("10.96.0.10:80", 1);
    let after = lab.tcp(20);
    assert_eq!(
        after.names.keys().collect::<Vec<_>>(),
        ["pod-1"],
        "{after:?}"
    );
}

#[test]
fn kube_invalid_objects_get_conditions_and_valid_ones_keep_working() {
    let mut lab = lab("kb4", 2);
    lab.web(&[0]);
    lab.api
        .load_yaml(concat!(
            "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: test}\n",
            "spec:\n  clusterIP: 10.96.0.11\n  ports: [{port: 80, protocol: QUIC}]\n---\n",
            "apiVersion: ferrite.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: lan}\n",
            "spec: {interfaces: [7], loadBalancerIPs: true}\n",
        ))
        .expect("invalid objects");
    lab.start(true);
    lab.wait_for_backends("10.96.0.10:80", 1);
    assert_eq!(lab.tcp(10).ok, 10);

    let marked = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        lab.condition("v1", "Service", "test", "bad")
            .is_some_and(|c| c["status"] == "False")
            && lab
                .condition("ferrite.dev/v1alpha1", "L2AnnouncementPolicy", "", "lan")
                .is_some_and(|c| c["status"] == "False")
    });
    assert!(
        marked.is_ok(),
        "conditions written: {:?}\n{}",
        lab.api.get("v1", "Service", "test", "bad"),
        lab.agent.log()
    );
    let service = lab
        .condition("v1", "Service", "test", "bad")
        .expect("condition");
    assert!(
        service["message"]
            .as_str()
            .is_some_and(|m| m.contains("QUIC")),
        "{service}"
    );
    let status = lab.agent.status().expect("status");
    let paths: Vec<&str> = status["source_errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"Service test/bad") && paths.contains(&"L2AnnouncementPolicy lan"),
        "{status}"
    );

    lab.api
        .load_yaml("apiVersion: ferrite.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: lan}\nspec: {interfaces: [eth0]}\n")
        .expect("fixed policy");
    let valid = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        lab.condition("ferrite.dev/v1alpha1", "L2AnnouncementPolicy", "", "lan")
            .is_some_and(|c| c["status"] == "True")
    });
    assert!(
        valid.is_ok(),
        "{:?}",
        lab.api
            .get("ferrite.dev/v1alpha1", "L2AnnouncementPolicy", "", "lan")
    );
    let lease = lab
        .api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "kube-system",
            "ferrite-status-writer",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "test-node");
}

/// In kube mode the flows name a backend that runs on another node with its Pod's labels: the
/// kube source watches every Pod, not only this node's, and the EndpointSlice carries no
/// `targetRef`, so the name and labels can only come from that watch. A label edit through the
/// API shows in the next flows.
#[test]
fn kube_flows_name_a_backend_on_another_node_with_its_labels() {
    let mut lab = lab("kb5", 1);
    lab.start(true);
    let ip = lab.pods.pod_v4(0);
    let pod = |tier: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-far, namespace: test, labels: \
             {{app: web, tier: {tier}}}}}\nspec: {{nodeName: other-node, containers: [{{name: c, \
             image: x}}]}}\nstatus: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
        )
    };
    lab.api.load_yaml(&pod("back")).expect("pod");
    let yaml = service_yaml("web", &["10.96.0.10"], None)
        + &slice_yaml("web-v4", "web", "IPv4", &[(ip.as_str(), true)]);
    lab.api.load_yaml(&yaml).expect("web");
    lab.wait_for_backends("10.96.0.10:80", 1);

    let named = |labels: &[&str]| {
        let want = serde_json::json!(labels);
        let mut last = Vec::new();
        let ok = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            assert_eq!(lab.tcp(2).ok, 2);
            let out = lab
                .agent
                .ferrite(&["observe", "-o", "json", "--type", "sock-lb", "--last", "50"]);
            last = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|f| f["translated_ip"] == ip.as_str())
                .collect();
            last.last().is_some_and(|f| {
                f["destination_pod"] == "test/web-far" && f["destination_labels"] == want
            })
        });
        assert!(
            ok.is_ok(),
            "no flow to {ip} named test/web-far with {want}: {last:?}\n{}",
            lab.agent.log()
        );
    };
    named(&["app=web", "tier=back"]);
    lab.api.load_yaml(&pod("db")).expect("relabel");
    named(&["app=web", "tier=db"]);
}

/// Kube mode keeps the TCP API's CA in a Secret: an agent with `--api-listen` and no
/// certificate files creates `ferrite-api-ca` and serves with a certificate it issued itself
/// from it (naming 127.0.0.1); `ferrite api client-cert` issues a client certificate from the
/// same Secret; with it the API answers, without one or with another CA's it does not.
#[test]
fn kube_mode_keeps_the_api_ca_in_a_secret_and_issues_certificates_from_it() {
    let mut lab = lab("kb6", 1);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    lab.start_args(true, &["--api-listen", &listen]);
    let secret = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        lab.api
            .get("v1", "Secret", "kube-system", "ferrite-api-ca")
            .is_some()
    });
    assert!(
        secret.is_ok(),
        "no Secret ferrite-api-ca\n{}",
        lab.agent.log()
    );

    let out_dir = lab.agent.work.path().join("client");
    let out = std::process::Command::new(common::FERRITE)
        .args(["api", "client-cert", "--out"])
        .arg(&out_dir)
        .env("KUBECONFIG", lab.api.kubeconfig())
        .output()
        .expect("ferrite api client-cert");
    assert!(out.status.success(), "{out:?}");
    let file = |n: &str| out_dir.join(n).display().to_string();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(out_dir.join("client.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let url = format!("https://{listen}/v1/status");
    let (ca, cert, key) = (file("ca.crt"), file("client.crt"), file("client.key"));
    let mut served = (0, 0, String::new());
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        served = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key], &url);
        served.0 == 0 && served.1 == 200
    });
    assert!(ok.is_ok(), "{served:?}\n{}", lab.agent.log());
    // The agent's own key, issued from the same CA, is written 0600 too (it serves by now).
    let server_key = lab.agent.work.path().join("state/api-tls/tls.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&server_key)
            .unwrap_or_else(|e| panic!("{}: {e}", server_key.display()))
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", server_key.display());
    let status: Value = serde_json::from_str(&served.2).expect("status JSON");
    assert_eq!(status["node_name"], "test-node", "{status}");
    assert_eq!(status["api"]["tls"], listen.as_str(), "{status}");
    // No client certificate: refused.
    let (rc, _, _) = curl(&["--cacert", &ca], &url);
    assert_ne!(rc, 0, "served without a client certificate");
    // The server's certificate does not chain to another CA: the client refuses it.
    let (rc, _, _) = curl(&["--cert", &cert, "--key", &key], &url);
    assert_ne!(rc, 0, "trusted without the cluster CA");
}
