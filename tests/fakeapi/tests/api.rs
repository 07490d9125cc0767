//! The fake API server behaves like a real one where ferrite depends on it: checked with the same
//! client ferrite uses (kube-rs).

use std::time::Duration;

use ferrite_fakeapi::{FakeApi, Fault, Sandbox};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Pod, Service},
};
use kube::{
    Api, Client, Config,
    api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn client_for(api: &FakeApi, token: Option<&str>) -> Client {
    let mut text = std::fs::read_to_string(api.kubeconfig()).expect("kubeconfig");
    if let Some(token) = token {
        text = text.replace(api.token(), token);
    }
    let kubeconfig = Kubeconfig::from_yaml(&text).expect("parse kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: test\n\
spec:\n  clusterIP: 10.96.0.10\n  ports:\n  - port: 80\n";

fn service(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "test"},
           "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
}

#[test]
fn requests_need_the_token_and_lists_omit_type_meta_for_built_in_kinds() {
    let api = Sandbox::start("auth").expect("start");
    api.load_yaml(SERVICE).expect("load");
    runtime().block_on(async {
        let bad = client_for(&api, Some("wrong")).await;
        let err = Api::<Service>::all(bad)
            .list(&ListParams::default())
            .await
            .expect_err("401");
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 401),
            "{err:?}"
        );

        let client = client_for(&api, None).await;
        let list = Api::<Service>::all(client.clone())
            .list(&ListParams::default())
            .await
            .expect("list");
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].metadata.namespace.as_deref(), Some("test"));
        // kube's typed list fills TypeMeta itself; check the raw response.
        let raw: Value = client
            .request(http_get("/api/v1/services"))
            .await
            .expect("raw list");
        assert!(raw["items"][0].get("kind").is_none(), "{raw}");
        assert_eq!(raw["kind"], "ServiceList");
    });
}

/// The next event that is not a bookmark (bookmarks may come at any time).
async fn next_change<K>(
    stream: &mut (impl futures_util::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin),
) -> WatchEvent<K> {
    loop {
        match stream.try_next().await.expect("event").expect("some") {
            WatchEvent::Bookmark(_) => {}
            event => return event,
        }
    }
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(Vec::new()).expect("request")
}

#[test]
fn watch_resumes_from_a_version_and_stale_versions_get_410_as_an_error_event() {
    let api = Sandbox::start("watch").expect("start");
    api.put(service("a", "10.96.0.1")).expect("a");
    runtime().block_on(async {
        let services: Api<Service> = Api::namespaced(client_for(&api, None).await, "test");
        let listed = services.list(&ListParams::default()).await.expect("list");
        let rv = listed.metadata.resource_version.clone().expect("list rv");
        api.put(service("b", "10.96.0.2")).expect("b");
        api.delete("v1", "Service", "test", "a").expect("delete a");

        let mut stream = services
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("watch")
            .boxed();
        let first = next_change(&mut stream).await;
        assert!(
            matches!(first, WatchEvent::Added(ref s) if s.metadata.name.as_deref() == Some("b"))
        );
        let second = next_change(&mut stream).await;
        assert!(
            matches!(second, WatchEvent::Deleted(ref s) if s.metadata.name.as_deref() == Some("a"))
        );

        api.compact();
        let mut stale = services
            .watch(&WatchParams::default(), &rv)
            .await
            .expect("200")
            .boxed();
        match stale.try_next().await.expect("event") {
            Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410, "{status:?}"),
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        assert!(
            stale.try_next().await.expect("end").is_none(),
            "the stream ends after 410"
        );
    });
}

#[test]
fn bookmarks_carry_the_current_version_and_expiry_sends_410() {
    let options = ferrite_fakeapi::Options {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let api = Sandbox::start_with("bookmark", &options).expect("start");
    api.put(service("a", "10.96.0.1")).expect("a");
    runtime().block_on(async {
        let services: Api<Service> = Api::all(client_for(&api, None).await);
        let params = WatchParams {
            bookmarks: true,
            ..WatchParams::default()
        };
        let now = api.resource_version().to_string();
        let mut stream = services.watch(&params, &now).await.expect("watch").boxed();
        match stream.try_next().await.expect("event") {
            Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, now),
            other => panic!("expected a bookmark, got {other:?}"),
        }
        api.expire_watches();
        let mut saw_gone = false;
        while let Some(event) = stream.try_next().await.expect("event") {
            if let WatchEvent::Error(status) = event {
                saw_gone = status.code == 410;
            }
        }
        assert!(saw_gone);
        assert_eq!(api.open_watches(), 0);
    });
}

#[test]
fn field_selector_watches_see_objects_enter_and_leave() {
    let api = Sandbox::start("fields").expect("start");
    let pod = |node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "test"},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
    };
    api.put(pod("other")).expect("pod");
    runtime().block_on(async {
        let pods: Api<Pod> = Api::all(client_for(&api, None).await);
        let lp = ListParams::default().fields("spec.nodeName=node-1");
        let list = pods.list(&lp).await.expect("list");
        assert!(list.items.is_empty());
        let wp = WatchParams::default().fields("spec.nodeName=node-1");
        let rv = list.metadata.resource_version.expect("rv");
        let mut stream = pods.watch(&wp, &rv).await.expect("watch").boxed();
        api.put(pod("node-1")).expect("move in");
        api.put(pod("other")).expect("move out");
        let added = next_change(&mut stream).await;
        assert!(matches!(added, WatchEvent::Added(_)), "{added:?}");
        let deleted = next_change(&mut stream).await;
        assert!(matches!(deleted, WatchEvent::Deleted(_)), "{deleted:?}");
    });
}

#[test]
fn lists_page_with_limit_and_continue() {
    let api = Sandbox::start("pages").expect("start");
    for i in 0..5 {
        api.put(service(&format!("s{i}"), &format!("10.96.0.{}", i + 1)))
            .expect("put");
    }
    runtime().block_on(async {
        let services: Api<Service> = Api::all(client_for(&api, None).await);
        let mut names = Vec::new();
        let mut lp = ListParams::default().limit(2);
        loop {
            let page = services.list(&lp).await.expect("page");
            assert!(page.items.len() <= 2);
            names.extend(page.items.into_iter().filter_map(|s| s.metadata.name));
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
                _ => break,
            }
        }
        assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
    });
}

#[test]
fn leases_use_optimistic_concurrency() {
    let api = Sandbox::start("lease").expect("start");
    runtime().block_on(async {
        let leases: Api<Lease> = Api::namespaced(client_for(&api, None).await, "kube-system");
        let mut lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "l", "namespace": "kube-system"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
        }))
        .expect("lease");
        let created = leases
            .create(&PostParams::default(), &lease)
            .await
            .expect("create");
        let again = leases
            .create(&PostParams::default(), &lease)
            .await
            .expect_err("exists");
        assert!(
            matches!(again, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists")
        );
        lease.metadata.resource_version = created.metadata.resource_version.clone();
        lease.spec.as_mut().expect("spec").holder_identity = Some("b".into());
        let updated = leases
            .replace("l", &PostParams::default(), &lease)
            .await
            .expect("update");
        assert_eq!(
            updated.spec.expect("spec").holder_identity.as_deref(),
            Some("b")
        );
        // The same stale version again: someone else won.
        let stale = leases
            .replace("l", &PostParams::default(), &lease)
            .await
            .expect_err("stale");
        assert!(
            matches!(stale, kube::Error::Api(ref s) if s.code == 409),
            "{stale:?}"
        );
    });
}

fn pool_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("ferrite.dev", "v1alpha1", "LoadBalancerIPPool"),
        "loadbalancerippools",
    )
}

const POOL_CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
metadata:\n  name: loadbalancerippools.ferrite.dev\nspec:\n  group: ferrite.dev\n  scope: Cluster\n";

#[test]
fn custom_resources_are_served_only_with_their_crd() {
    let api = Sandbox::start("crd").expect("start");
    runtime().block_on(async {
        let pools: Api<DynamicObject> =
            Api::all_with(client_for(&api, None).await, &pool_resource());
        let err = pools.list(&ListParams::default()).await.expect_err("404");
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 404),
            "{err:?}"
        );
        api.load_yaml(POOL_CRD).expect("crd");
        assert!(
            pools
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .is_empty()
        );
    });
}

#[test]
fn server_side_apply_owns_fields_per_manager_and_status_is_a_subresource() {
    let api = Sandbox::start("apply").expect("start");
    api.load_yaml(POOL_CRD).expect("crd");
    api.put(
        json!({"apiVersion": "ferrite.dev/v1alpha1", "kind": "LoadBalancerIPPool",
                   "metadata": {"name": "p"}, "spec": {"blocks": [{"cidr": "10.0.0.0/24"}]}}),
    )
    .expect("pool");
    runtime().block_on(async {
        let pools: Api<DynamicObject> =
            Api::all_with(client_for(&api, None).await, &pool_resource());
        let condition =
            |t: &str, s: &str| json!({"type": t, "status": s, "reason": "R", "message": "m"});
        let body = |conds: Vec<Value>| {
            json!({"apiVersion": "ferrite.dev/v1alpha1",
            "kind": "LoadBalancerIPPool", "metadata": {"name": "p"},
            "spec": {"blocks": []}, "status": {"conditions": conds}})
        };
        let a = PatchParams::apply("manager-a");
        let b = PatchParams::apply("manager-b");
        pools
            .patch_status("p", &a, &Patch::Apply(body(vec![condition("A", "True")])))
            .await
            .expect("a");
        pools
            .patch_status("p", &b, &Patch::Apply(body(vec![condition("B", "True")])))
            .await
            .expect("b");
        let conflict = pools
            .patch_status("p", &b, &Patch::Apply(body(vec![condition("A", "False")])))
            .await
            .expect_err("B may not change A's condition without force");
        assert!(
            matches!(conflict, kube::Error::Api(ref s) if s.code == 409),
            "{conflict:?}"
        );
        // manager-a drops its condition: it goes; manager-b's stays.
        let after = pools
            .patch_status("p", &a, &Patch::Apply(body(vec![])))
            .await
            .expect("drop");
        let types: Vec<String> = after.data["status"]["conditions"]
            .as_array()
            .expect("conds")
            .iter()
            .map(|c| c["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(types, ["B"]);
        assert_eq!(
            after.data["spec"]["blocks"][0]["cidr"], "10.0.0.0/24",
            "status apply keeps spec"
        );
        assert!(
            after
                .metadata
                .managed_fields
                .as_ref()
                .is_some_and(|m| m.len() >= 2)
        );
        // A merge patch of the main resource cannot change status.
        let merged = pools
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": []},
                                                                     "spec": {"priority": 1}})),
            )
            .await
            .expect("merge");
        assert_eq!(merged.data["spec"]["priority"], 1);
        assert_eq!(
            merged.data["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
    });
}

#[test]
fn injected_faults_fail_the_next_matching_requests() {
    let mut api = Sandbox::start("faults").expect("start");
    api.fail_next(Fault {
        method: Some("GET".into()),
        path_contains: "/services".into(),
        code: 500,
        count: 1,
    });
    let rt = runtime();
    rt.block_on(async {
        let services: Api<Service> = Api::all(client_for(&api, None).await);
        assert!(services.list(&ListParams::default()).await.is_err());
        assert!(services.list(&ListParams::default()).await.is_ok());
    });
    api.stop();
    rt.block_on(async {
        let services: Api<Service> = Api::all(client_for(&api, None).await);
        assert!(
            services.list(&ListParams::default()).await.is_err(),
            "stopped"
        );
    });
    api.resume().expect("resume");
    api.put(service("after", "10.96.0.9")).expect("put");
    rt.block_on(async {
        let services: Api<Service> = Api::all(client_for(&api, None).await);
        let names: Vec<_> = services
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert_eq!(names, ["after"]);
    });
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200, 200]);
}

#[test]
fn runtime_watcher_relists_after_expiry_and_sees_every_change() {
    let api = Sandbox::start("watcher").expect("start");
    api.put(service("a", "10.96.0.1")).expect("a");
    runtime().block_on(async {
        let services: Api<Service> = Api::all(client_for(&api, None).await);
        let mut events =
            kube::runtime::watcher(services, kube::runtime::watcher::Config::default()).boxed();
        let mut seen = Vec::new();
        let mut step = 0;
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("watcher is not stuck")
        {
            use kube::runtime::watcher::Event;
            match event {
                Ok(Event::InitDone) => {
                    step += 1;
                    match step {
                        1 => {
                            api.expire_watches();
                            api.put(service("b", "10.96.0.2")).expect("b");
                        }
                        _ => break,
                    }
                }
                Ok(Event::InitApply(s) | Event::Apply(s)) => seen.extend(s.metadata.name),
                _ => {}
            }
        }
        assert_eq!(step, 2, "relisted after 410");
        assert!(seen.contains(&"b".to_owned()), "{seen:?}");
    });
}
