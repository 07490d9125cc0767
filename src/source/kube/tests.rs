//! The kube source against the fake API server (`tests/fakeapi`), without root: watchers →
//! snapshot, errors, validity conditions, status writes and leader election.

use std::{sync::Arc, time::Duration};

use ferrite_fakeapi::{FakeApi, Fault, Sandbox};
use kube::Client;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    ClientOptions, ConfigOrigin, FIELD_MANAGER, KubeOptions, KubeSource, StatusWriter, config,
    lease::{Attempt, LeaderElector, LeaseTiming},
};
use crate::model::Snapshot;

const CRDS: &str = include_str!("../../../k3s-addon/crds.yaml");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn client(api: &FakeApi) -> Client {
    let origin = ConfigOrigin::File(api.kubeconfig().to_owned());
    config::client_from(&origin, ClientOptions::default())
        .await
        .expect("client")
}

fn fast_lease() -> LeaseTiming {
    LeaseTiming {
        duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(800),
        retry: Duration::from_millis(100),
    }
}

fn options() -> KubeOptions {
    KubeOptions {
        node_name: "node-1".into(),
        client: ClientOptions::default(),
        lease_namespace: Some("kube-system".into()),
        lease_timing: fast_lease(),
    }
}

const CLUSTER: &str = r"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: test, labels: {app: web}}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: test, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.0.2]}]
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {kubernetes.io/hostname: node-1}}
spec: {podCIDRs: [10.244.0.0/24, 'fd00:10:244::/64']}
status:
  addresses: [{type: InternalIP, address: 192.168.1.10}, {type: Hostname, address: node-1}]
  conditions: [{type: Ready, status: 'True'}]
---
apiVersion: v1
kind: Namespace
metadata: {name: test, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: here, namespace: test, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
status: {phase: Running, podIPs: [{ip: 10.244.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: test}
spec: {nodeName: node-2, containers: [{name: c, image: x}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: test}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: a}}}], ports: [{port: 8080}]}]
---
apiVersion: ferrite.dev/v1alpha1
kind: LoadBalancerIPPool
metadata: {name: lan}
spec:
  blocks: [{cidr: 192.168.1.240/28}]
---
apiVersion: ferrite.dev/v1alpha1
kind: L2AnnouncementPolicy
metadata: {name: lan}
spec:
  interfaces: ['^eth[0-9]+']
  loadBalancerIPs: true
";

async fn next_snapshot(rx: &mut watch::Receiver<Arc<Snapshot>>) -> Arc<Snapshot> {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("a snapshot within 10 s")
        .expect("source alive");
    rx.borrow_and_update().clone()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn the_first_snapshot_holds_every_kind_and_changes_follow() {
    let api = Sandbox::start("kube-snapshot").expect("fake API");
    api.load_yaml(CRDS).expect("CRDs");
    api.load_yaml(CLUSTER).expect("objects");
    runtime().block_on(async {
        let source =
            KubeSource::with_client(client(&api).await, ConfigOrigin::InCluster, options());
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        let task = tokio::spawn(source.run(tx));
        let first = next_snapshot(&mut rx).await;
        assert_eq!(first.services.len(), 1);
        assert_eq!(first.endpoint_slices.len(), 1);
        let node = first.nodes.get("node-1").expect("node");
        assert_eq!(node.pod_cidrs.len(), 2);
        assert_eq!(
            node.internal_ips,
            ["192.168.1.10".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert!(node.ready);
        assert_eq!(first.namespaces["test"].labels["team"], "a");
        let pods: Vec<_> = first.pods.keys().map(ToString::to_string).collect();
        assert_eq!(
            pods,
            ["test/elsewhere", "test/here"],
            "every node's pods (NetworkPolicy identities)"
        );
        assert_eq!(first.network_policies.len(), 1);
        assert_eq!(first.pools["lan"].blocks.len(), 1);
        assert!(first.l2_policies["lan"].load_balancer_ips);

        api.delete("v1", "Service", "test", "web").expect("delete");
        let second = next_snapshot(&mut rx).await;
        assert!(second.services.is_empty());
        assert_eq!(second.endpoint_slices.len(), 1);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the source stops when nobody listens")
            .expect("no panic");
    });
}

#[test]
fn missing_crds_do_not_hold_back_the_snapshot_and_are_reported() {
    let api = Sandbox::start("kube-nocrd").expect("fake API");
    runtime().block_on(async {
        let source = KubeSource::with_client(client(&api).await, ConfigOrigin::InCluster, options());
        let errors = source.error_handle();
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(source.run(tx));
        let first = next_snapshot(&mut rx).await;
        assert!(first.services.is_empty() && first.pools.is_empty());
        let paths: Vec<String> = errors.current().iter().map(|e| e.path.display().to_string()).collect();
        assert!(paths.contains(&"kube: watch loadbalancerippools".to_owned()), "{paths:?}");

        // Installing the CRD later brings its objects in (the watch retries with backoff).
        api.load_yaml(CRDS).expect("CRDs");
        api.load_yaml("apiVersion: ferrite.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: p}\nspec: {blocks: [{cidr: 10.0.0.0/30}]}\n")
            .expect("pool");
        let with_pool = loop {
            let s = next_snapshot(&mut rx).await;
            if !s.pools.is_empty() {
                break s;
            }
        };
        assert_eq!(with_pool.pools["p"].blocks.len(), 1);
    });
}

#[test]
fn a_failing_required_kind_holds_back_the_first_snapshot() {
    let api = Sandbox::start("kube-required").expect("fake API");
    api.load_yaml(CLUSTER).expect("objects");
    api.fail_next(Fault {
        method: Some("GET".into()),
        path_contains: "/services".into(),
        code: 500,
        count: 2,
    });
    runtime().block_on(async {
        let source =
            KubeSource::with_client(client(&api).await, ConfigOrigin::InCluster, options());
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(source.run(tx));
        let first = next_snapshot(&mut rx).await;
        assert_eq!(first.services.len(), 1, "never published without services");
    });
}

#[test]
fn invalid_objects_are_reported_and_marked_by_the_lease_holder() {
    let api = Sandbox::start("kube-invalid").expect("fake API");
    api.load_yaml(CRDS).expect("CRDs");
    api.load_yaml(CLUSTER).expect("objects");
    api.load_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: test}\nspec:\n  clusterIP: 10.96.0.11\n  ports: [{port: 80, protocol: QUIC}]\n",
    )
    .expect("bad service");
    runtime().block_on(async {
        let source = KubeSource::with_client(client(&api).await, ConfigOrigin::InCluster, options());
        let errors = source.error_handle();
        let leading = source.leadership();
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(source.run(tx));
        let first = next_snapshot(&mut rx).await;
        assert!(first.services.keys().all(|k| k.name != "bad"));
        assert!(errors.current().iter().any(|e| e.path.display().to_string() == "Service test/bad"
            && e.message.contains("QUIC")), "{:?}", errors.current());
        let condition = |kind: &str, api_version: &str, ns: &str, name: &str| -> Option<Value> {
            let object = api.get(api_version, kind, ns, name)?;
            object.pointer("/status/conditions")?.as_array()?.iter()
                .find(|c| c["type"] == "ferrite.dev/Valid").cloned()
        };
        eventually("the bad service's condition", || {
            condition("Service", "v1", "test", "bad").is_some_and(|c| c["status"] == "False")
        })
        .await;
        assert!(*leading.borrow(), "node-1 holds the lease");
        let lease = api.get("coordination.k8s.io/v1", "Lease", "kube-system", "ferrite-status-writer").expect("lease");
        assert_eq!(lease["spec"]["holderIdentity"], "node-1");
        eventually("the policy's condition", || {
            condition("L2AnnouncementPolicy", "ferrite.dev/v1alpha1", "", "lan").is_some_and(|c| c["status"] == "True")
        })
        .await;
        assert!(condition("Service", "v1", "test", "web").is_none(), "valid services get no condition");

        // Invalid policy → False; fixed → True again.
        api.load_yaml("apiVersion: ferrite.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: lan}\nspec: {interfaces: [7]}\n")
            .expect("break policy");
        eventually("the policy marked invalid", || {
            condition("L2AnnouncementPolicy", "ferrite.dev/v1alpha1", "", "lan")
                .is_some_and(|c| c["status"] == "False" && c["message"].as_str().is_some_and(|m| m.contains("interfaces[0]")))
        })
        .await;
        // The fixed service loses its condition.
        api.load_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: test}\nspec:\n  clusterIP: 10.96.0.11\n  ports: [{port: 80}]\n")
            .expect("fix service");
        eventually("the fixed service's condition removed", || condition("Service", "v1", "test", "bad").is_none()).await;
        let managers: Vec<String> = api.requests().iter()
            .filter(|r| r.method == "PATCH")
            .map(|r| r.query.clone())
            .collect();
        assert!(managers.iter().all(|q| q.contains("fieldManager=ferrite-validation") && q.contains("force=true")), "{managers:?}");
    });
}

#[test]
fn status_writes_retry_conflicts_and_give_up_on_missing_objects() {
    let api = Sandbox::start("kube-status").expect("fake API");
    api.load_yaml(CRDS).expect("CRDs");
    api.load_yaml(CLUSTER).expect("objects");
    runtime().block_on(async {
        let writer = StatusWriter::new(client(&api).await, FIELD_MANAGER);
        api.fail_next(Fault {
            method: Some("PATCH".into()),
            path_contains: "/loadbalancerippools/lan".into(),
            code: 409,
            count: 2,
        });
        let status = json!({"conditions": [{"type": "ferrite.dev/IPsAvailable", "status": "True",
            "reason": "Counted", "message": "16", "lastTransitionTime": "2024-01-01T00:00:00Z"}]});
        writer
            .apply_pool_status("lan", Some(status))
            .await
            .expect("applied after retries");
        let pool = api
            .get("ferrite.dev/v1alpha1", "LoadBalancerIPPool", "", "lan")
            .expect("pool");
        assert_eq!(pool["status"]["conditions"][0]["message"], "16");
        let patches: Vec<_> = api
            .requests()
            .into_iter()
            .filter(|r| r.method == "PATCH")
            .collect();
        assert_eq!(
            patches.iter().map(|r| r.status).collect::<Vec<_>>(),
            [409, 409, 200]
        );
        assert!(
            patches
                .iter()
                .all(|r| r.content_type == "application/apply-patch+yaml"
                    && r.query.contains("fieldManager=ferrite")
                    && r.query.contains("force=true"))
        );

        writer
            .apply_service_status(
                "test",
                "web",
                Some(json!({"loadBalancer": {"ingress": [{"ip": "192.168.1.240"}]}})),
            )
            .await
            .expect("service status");
        let web = api.get("v1", "Service", "test", "web").expect("web");
        assert_eq!(
            web["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.168.1.240"
        );
        assert_eq!(
            web["spec"]["clusterIP"], "10.96.0.10",
            "status apply leaves the spec alone"
        );

        let before = api.requests().len();
        let missing = writer
            .apply_policy_status("nope", json!({"conditions": []}))
            .await;
        assert!(missing.is_err());
        assert_eq!(
            api.requests().len() - before,
            1,
            "a missing object is not retried"
        );
    });
}

#[test]
fn one_candidate_leads_and_another_takes_over_when_it_stops_renewing() {
    let api = Sandbox::start("kube-lease").expect("fake API");
    runtime().block_on(async {
        let c = client(&api).await;
        let mut a = LeaderElector::new(c.clone(), "kube-system", "l", "a", fast_lease());
        let mut b = LeaderElector::new(c.clone(), "kube-system", "l", "b", fast_lease());
        assert_eq!(a.try_acquire_or_renew().await.expect("a"), Attempt::Leading);
        assert_eq!(
            b.try_acquire_or_renew().await.expect("b"),
            Attempt::Following { holder: "a".into() }
        );
        assert_eq!(
            a.try_acquire_or_renew().await.expect("a renews"),
            Attempt::Leading
        );
        // a stops renewing; b waits a full lease duration from its own observation.
        assert!(matches!(
            b.try_acquire_or_renew().await.expect("b"),
            Attempt::Following { .. }
        ));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            b.try_acquire_or_renew().await.expect("b takes over"),
            Attempt::Leading
        );
        let lease = api
            .get("coordination.k8s.io/v1", "Lease", "kube-system", "l")
            .expect("lease");
        assert_eq!(lease["spec"]["holderIdentity"], "b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
        // a comes back: b's renewals are fresh, so a follows.
        assert!(matches!(
            a.try_acquire_or_renew().await.expect("a"),
            Attempt::Following { .. }
        ));

        // Two candidates racing for a free lease: exactly one wins (the other gets 409).
        let mut c1 = LeaderElector::new(c.clone(), "kube-system", "race", "c1", fast_lease());
        let mut c2 = LeaderElector::new(c.clone(), "kube-system", "race", "c2", fast_lease());
        let (r1, r2) = tokio::join!(c1.try_acquire_or_renew(), c2.try_acquire_or_renew());
        let leaders = [r1.expect("c1"), r2.expect("c2")]
            .into_iter()
            .filter(|r| *r == Attempt::Leading)
            .count();
        assert_eq!(leaders, 1);
    });
}

#[test]
fn lease_timing_keeps_client_go_proportions_and_the_defaults() {
    let default = LeaseTiming::default();
    let scaled = LeaseTiming::with_duration(Duration::from_secs(15));
    assert_eq!(
        (scaled.duration, scaled.renew_deadline, scaled.retry),
        (default.duration, default.renew_deadline, default.retry),
        "--status-lease-seconds 15 (the default) is the default timing"
    );
    let short = LeaseTiming::with_duration(Duration::from_secs(3));
    assert_eq!(short.renew_deadline, Duration::from_secs(2));
    assert_eq!(short.retry, Duration::from_millis(400));
    assert_eq!(
        LeaseTiming::with_duration(Duration::ZERO).duration,
        Duration::from_secs(1),
        "a Lease records whole seconds"
    );
}
