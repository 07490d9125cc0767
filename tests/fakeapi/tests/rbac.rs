//! The fake server's optional RBAC: requests outside the granted rules get the real server's
//! `403 Forbidden`, everything inside them is served.

use ferrite_fakeapi::{Options, Rules, Sandbox};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Service};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

const MANIFEST: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: agent}
rules:
- {apiGroups: [''], resources: [services], verbs: [list, watch]}
- {apiGroups: [''], resources: [services/status], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agent}
subjects: [{kind: ServiceAccount, name: agent, namespace: sys}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: agent, namespace: sys}
rules:
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [create]}
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get], resourceNames: [mine]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: agent, namespace: sys}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: agent}
subjects: [{kind: ServiceAccount, name: agent, namespace: sys}]
";

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: test}\n\
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n";

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert_eq!(status.reason, "Forbidden", "{status:?}");
            status.message
        }
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

fn lease(name: &str) -> Lease {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"holderIdentity": "n"}}))
        .expect("lease")
}

#[test]
fn requests_outside_the_rules_get_403_and_inside_them_are_served() {
    let options = Options {
        rbac: Some(Rules::from_manifest(MANIFEST).expect("rules")),
        ..Options::default()
    };
    let api = Sandbox::start_with("rbac", &options).expect("start");
    api.load_yaml(SERVICE).expect("service");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let kubeconfig = Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
        let client = Client::try_from(config).expect("client");
        let services: Api<Service> = Api::namespaced(client.clone(), "test");
        assert_eq!(
            services
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .len(),
            1
        );
        let message = forbidden(services.get("web").await);
        assert!(
            message.contains("cannot get resource \"services\" in API group \"\""),
            "{message}"
        );
        let status = json!({"apiVersion": "v1", "kind": "Service",
                            "metadata": {"name": "web", "namespace": "test"},
                            "status": {"conditions": []}});
        let params = PatchParams::apply("test").force();
        services
            .patch_status("web", &params, &Patch::Apply(&status))
            .await
            .expect("status patch is granted");
        forbidden(services.patch("web", &params, &Patch::Apply(&status)).await);
        forbidden(services.delete("web", &DeleteParams::default()).await);

        let sys: Api<Lease> = Api::namespaced(client.clone(), "sys");
        sys.create(&PostParams::default(), &lease("mine"))
            .await
            .expect("create in the Role's namespace");
        sys.get("mine").await.expect("get of the named lease");
        sys.create(&PostParams::default(), &lease("theirs"))
            .await
            .expect("create is not limited by name");
        forbidden(sys.get("theirs").await);
        forbidden(sys.list(&ListParams::default()).await);
        let other: Api<Lease> = Api::namespaced(client, "other");
        let message = forbidden(other.create(&PostParams::default(), &lease("mine")).await);
        assert!(message.contains("in the namespace \"other\""), "{message}");
    });
    let denied: Vec<_> = api
        .rbac_decisions()
        .into_iter()
        .filter(|d| !d.allowed)
        .map(|d| format!("{} {}", d.verb, d.resource))
        .collect();
    assert_eq!(
        denied,
        [
            "get services",
            "patch services",
            "delete services",
            "get leases",
            "list leases",
            "create leases"
        ]
    );
    let forbidden_requests = api.requests().iter().filter(|r| r.status == 403).count();
    assert_eq!(forbidden_requests, denied.len());
}
