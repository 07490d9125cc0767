use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::ServiceAccount,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{AddonOptions, addon, all_yaml, options};

fn parse(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("every document parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Through the typed k8s-openapi struct and back: any field the API does not know (a typo) is
/// dropped on the way, so the round trip changes the value.
fn round_trips<T: DeserializeOwned + Serialize>(value: &Value) {
    let typed: T = serde_json::from_value(value.clone()).expect("typed");
    let back = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(&back, value, "fields the API does not know");
}

/// The container's args.
fn args_of(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn every_document_parses_and_is_a_known_kubernetes_object() {
    let docs = parse(&all_yaml(&AddonOptions::default()).expect("all"));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "DaemonSet"
        ]
    );
    for doc in &docs {
        assert!(
            doc["apiVersion"].as_str().is_some_and(|s| !s.is_empty()),
            "{doc}"
        );
        assert!(
            doc.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "{doc}"
        );
        match doc["kind"].as_str().unwrap_or_default() {
            "CustomResourceDefinition" => round_trips::<CustomResourceDefinition>(doc),
            "ServiceAccount" => round_trips::<ServiceAccount>(doc),
            "ClusterRole" => round_trips::<ClusterRole>(doc),
            "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(doc),
            "Role" => round_trips::<Role>(doc),
            "RoleBinding" => round_trips::<RoleBinding>(doc),
            "DaemonSet" => round_trips::<DaemonSet>(doc),
            other => panic!("unexpected kind {other}"),
        }
    }
}

#[test]
fn the_daemonset_runs_the_kube_agent_on_every_node_with_k3s_paths() {
    let opts = options("net", "example/ferrite:dev", Some("10.0.0.1:6443")).expect("options");
    let ds = addon::daemonset(&opts);
    assert_eq!(ds["metadata"]["namespace"], "net");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    assert_eq!(pod["serviceAccountName"], addon::NAME);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "example/ferrite:dev");
    let args = args_of(container);
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert_eq!(args[0], "agent");
    assert_eq!(after("--source"), Some("kube"));
    assert_eq!(after("--node-name"), Some("$(NODE_NAME)"));
    // The CNI dirs come from k3s's containerd config, not from flags.
    assert_eq!(after("--cni-conf-dir"), None);
    assert_eq!(after("--cni-bin-dir"), None);
    // Every path the agent is given is on a host mount.
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    let read_only: Vec<&str> = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["readOnly"] == true)
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    let config = std::path::Path::new(crate::cni::containerd::K3S_CONTAINERD_CONFIG);
    assert!(
        read_only.iter().any(|m| config.starts_with(m)),
        "containerd's config is not mounted read-only: {mounts:?}"
    );
    for dir in [
        crate::cni::install::K3S_CONF_DIR,
        crate::cni::install::K3S_STATIC_BIN_DIR,
        crate::cni::install::K3S_BIN_DIR,
    ] {
        assert!(
            mounts
                .iter()
                .any(|m| std::path::Path::new(dir).starts_with(m) && !read_only.contains(m)),
            "{dir} is not under a writable host mount: {mounts:?}"
        );
    }
    for flag in ["--bpf-root", "--cgroup", "--api-socket", "--state-dir"] {
        let path = after(flag).expect(flag);
        assert!(
            mounts
                .iter()
                .any(|m| std::path::Path::new(path).starts_with(m)),
            "{flag} {path} is not under a host mount: {mounts:?}"
        );
    }
    let env = container["env"].as_array().expect("env");
    assert!(
        env.iter().any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName")
    );
    assert!(
        env.iter()
            .any(|e| e["name"] == "KUBERNETES_SERVICE_HOST" && e["value"] == "10.0.0.1")
    );
    assert!(
        env.iter()
            .any(|e| e["name"] == "KUBERNETES_SERVICE_PORT" && e["value"] == "6443")
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    );
}

#[test]
fn the_default_image_is_the_crate_version_and_api_server_needs_a_port() {
    assert_eq!(
        AddonOptions::default().image,
        format!("ghcr.io/ferrite-net/ferrite:{}", crate::VERSION)
    );
    assert!(options("ns", "i", Some("10.0.0.1")).is_err());
    assert!(options("ns", "i", Some(":6443")).is_err());
    let v6 = options("ns", "i", Some("[fd00::1]:6443")).expect("IPv6");
    assert_eq!(v6.api_server, ("fd00::1".into(), "6443".into()));
    // Without --api-server: k3s's node-local API server address.
    let default = options("ns", "i", None).expect("default");
    assert_eq!(default.api_server, ("127.0.0.1".into(), "6444".into()));
    let ds = addon::daemonset(&default);
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert!(
        env.as_array()
            .expect("env")
            .iter()
            .any(|e| { e["name"] == "KUBERNETES_SERVICE_HOST" && e["value"] == "127.0.0.1" }),
        "{env}"
    );
}

#[test]
fn the_lease_is_granted_only_in_the_agents_namespace() {
    let docs = addon::rbac("net");
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("Role");
    assert_eq!(role["metadata"]["namespace"], "net");
    let cluster = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    let groups: Vec<&str> = cluster["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| r["apiGroups"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(!groups.contains(&"coordination.k8s.io"), "{groups:?}");
    for binding in docs
        .iter()
        .filter(|d| d["kind"].as_str().is_some_and(|k| k.ends_with("Binding")))
    {
        assert_eq!(binding["subjects"][0]["namespace"], "net");
        assert_eq!(binding["subjects"][0]["name"], addon::NAME);
    }
}

#[test]
fn secrets_are_granted_only_in_the_agents_namespace_and_get_only_the_l2_key() {
    let docs = addon::rbac("net");
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("Role");
    let secret_rules: Vec<&Value> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("secrets")))
        })
        .collect();
    let verbs = |r: &Value| -> Vec<String> {
        r["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(secret_rules.len(), 2, "{secret_rules:?}");
    for r in &secret_rules {
        match verbs(r).as_slice() {
            [v] if v == "get" => assert_eq!(
                r["resourceNames"],
                json!(["ferrite-l2-key", "ferrite-api-ca"]),
                "{r}"
            ),
            // A create cannot be limited by name (the object does not exist yet).
            [v] if v == "create" => assert!(r["resourceNames"].is_null(), "{r}"),
            other => panic!("unexpected secret verbs {other:?}: {r}"),
        }
    }
    let cluster = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("ClusterRole");
    assert!(
        !cluster.to_string().contains("secrets"),
        "no cluster-wide secret access: {cluster}"
    );
    // The key is read over the API: no Secret volume in the DaemonSet.
    let ds = addon::daemonset(&AddonOptions::default());
    assert!(!ds.to_string().contains("secretName"), "{ds}");
}

#[test]
fn the_agents_expose_metrics_with_prometheus_annotations_and_a_service_monitor() {
    let ds = addon::daemonset(&AddonOptions::default());
    let template = &ds["spec"]["template"];
    let port = addon::METRICS_PORT.to_string();
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/port"],
        port.as_str()
    );
    let container = &template["spec"]["containers"][0];
    let args = args_of(container);
    let listen = args
        .iter()
        .position(|a| *a == "--metrics-listen")
        .map(|i| args[i + 1])
        .expect("--metrics-listen");
    assert!(listen.ends_with(&format!(":{port}")), "{listen}");
    assert_eq!(container["ports"][0]["containerPort"], addon::METRICS_PORT);
    let docs = addon::service_monitor("net");
    round_trips::<k8s_openapi::api::core::v1::Service>(&docs[0]);
    assert_eq!(
        docs[0]["spec"]["ports"][0]["targetPort"],
        container["ports"][0]["name"]
    );
    assert_eq!(docs[1]["kind"], "ServiceMonitor");
    assert_eq!(
        docs[1]["spec"]["endpoints"][0]["port"],
        container["ports"][0]["name"]
    );
    let selector = &docs[1]["spec"]["selector"]["matchLabels"];
    assert_eq!(
        selector,
        &serde_json::json!({"app.kubernetes.io/name": addon::NAME})
    );
    assert_eq!(
        docs[0]["metadata"]["labels"]["app.kubernetes.io/name"],
        addon::NAME
    );
}
