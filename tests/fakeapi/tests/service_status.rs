//! What the LB IPAM status writer relies on, checked with kube-rs: server-side apply on the
//! status subresource of a Service (an apply without status removes exactly the fields that
//! manager applied, other managers' conditions stay, the spec is untouched), and requests told
//! apart per client.

use ferrite_fakeapi::Sandbox;
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};

async fn client(kubeconfig: &std::path::Path) -> Client {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let kubeconfig = Kubeconfig::from_yaml(&text).expect("parse kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn services() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services")
}

fn body(status: Option<Value>) -> Value {
    let mut body = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "test"}});
    if let Some(status) = status {
        body["status"] = status;
    }
    body
}

fn condition_types(object: &Value) -> Vec<String> {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["type"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn an_empty_status_apply_removes_only_what_that_manager_wrote() {
    let api = Sandbox::start("svcstatus").expect("start");
    api.load_yaml(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: test}\n\
         spec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.10\n  ports: [{port: 80}]\n",
    )
    .expect("service");
    let leader = api.client_kubeconfig("node-a").expect("kubeconfig a");
    let other = api.client_kubeconfig("node-b").expect("kubeconfig b");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let a: Api<DynamicObject> =
                Api::namespaced_with(client(&leader).await, "test", &services());
            let b: Api<DynamicObject> =
                Api::namespaced_with(client(&other).await, "test", &services());
            let ferrite = PatchParams::apply("ferrite").force();
            let written = a
                .patch_status("web", &ferrite, &Patch::Apply(body(Some(json!({
                    "loadBalancer": {"ingress": [{"ip": "192.168.1.240", "ipMode": "VIP"}]},
                    "conditions": [{"type": "ferrite.dev/IPAMRequestSatisfied", "status": "True",
                        "reason": "satisfied", "message": "m",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                })))))
                .await
                .expect("ferrite's status");
            let written = serde_json::to_value(written).expect("json");
            assert_eq!(
                written["status"]["loadBalancer"]["ingress"][0]["ipMode"],
                "VIP"
            );
            let owned = written["metadata"]["managedFields"]
                .as_array()
                .expect("managedFields")
                .iter()
                .find(|m| m["manager"] == "ferrite")
                .expect("ferrite's entry")
                .clone();
            assert_eq!(owned["operation"], "Apply");
            assert_eq!(owned["subresource"], "status");
            assert!(owned["fieldsV1"]["f:status"]["f:loadBalancer"]["f:ingress"].is_object());

            b.patch_status(
                "web",
                &PatchParams::apply("ferrite-validation").force(),
                &Patch::Apply(body(Some(
                    json!({"conditions": [{"type": "ferrite.dev/Valid",
                    "status": "False", "reason": "Invalid", "message": "x",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
                ))),
            )
            .await
            .expect("another manager's condition");

            // The same manager from another client (a new Lease holder) applies no status.
            let cleared = b
                .patch_status("web", &ferrite, &Patch::Apply(body(None)))
                .await
                .expect("empty apply");
            let cleared = serde_json::to_value(cleared).expect("json");
            assert!(
                cleared["status"]["loadBalancer"]["ingress"].is_null(),
                "ingress removed: {cleared}"
            );
            assert_eq!(condition_types(&cleared), ["ferrite.dev/Valid"]);
            assert_eq!(cleared["spec"]["type"], "LoadBalancer", "spec untouched");
            assert!(
                cleared["metadata"]["managedFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|m| m["manager"] != "ferrite"),
                "ferrite owns nothing any more: {}",
                cleared["metadata"]["managedFields"]
            );
        });
    let patches: Vec<(String, u16)> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| (r.client, r.status))
        .collect();
    assert_eq!(
        patches,
        [
            ("node-a".to_owned(), 200),
            ("node-b".to_owned(), 200),
            ("node-b".to_owned(), 200)
        ]
    );
}
