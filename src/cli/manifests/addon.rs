//! The k3s addon: RBAC and the DaemonSet that runs the agent on every node, as JSON values (the
//! CLI prints them as YAML).
//!
//! The RBAC rules are exactly the requests the agent makes (see [`CLUSTER_RULES`] and
//! [`NAMESPACED_RULES`]); `tests/kube_rbac.rs` runs the real agent against a fake API server that
//! enforces them and checks that nothing is denied and that every granted verb is used.

use serde_json::{Value, json};

use crate::source::kube::STATUS_LEASE;
use crate::source::kube::api_ca::SECRET_NAME as API_CA_SECRET;
use crate::source::kube::l2key::SECRET_NAME as L2_KEY_SECRET;

/// The name of every object of the addon (ServiceAccount, roles, bindings, DaemonSet).
pub const NAME: &str = "ferrite";
/// The namespace the agent runs in (and keeps its Lease in) unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// The image repository; the default tag is the crate version.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/ferrite-net/ferrite";

/// k3s's paths on every node (see `src/cni/install.rs`): the agent reads the CNI dirs from
/// k3s's containerd config (mounted read-only), and they are under these two mounts.
const K3S_CNI_CONF_DIR: &str = crate::cni::install::K3S_CONF_DIR;
/// Both bin dirs k3s has used, `data/cni` and `data/current/bin` (`current` is a symlink into
/// `data/`), are under it: the whole directory is mounted so they resolve.
const K3S_DATA_DIR: &str = "/var/lib/rancher/k3s/data";
/// The directory of k3s's generated containerd `config.toml`.
const K3S_CONTAINERD_DIR: &str = "/var/lib/rancher/k3s/agent/etc/containerd";
/// What reaches the API server on every k3s node before ferrite programs the `kubernetes`
/// ClusterIP: on agents the client load balancer k3s runs on `127.0.0.1:<--lb-server-port>`
/// (default 6444; `pkg/agent/loadbalancer`), on servers kube-apiserver itself, which k3s binds
/// to `127.0.0.1` on the supervisor port + 1 (6444).
pub const DEFAULT_API_SERVER: (&str, &str) = ("127.0.0.1", "6444");
/// Where the host's cgroup2 root is mounted in the container (the container's own
/// `/sys/fs/cgroup` is its cgroup namespace, not the root the socket load balancer needs).
const HOST_CGROUP: &str = "/host/sys/fs/cgroup";
const RUN_DIR: &str = "/run/ferrite";
const STATE_DIR: &str = "/var/lib/ferrite";
const BPF_ROOT: &str = "/sys/fs/bpf";
/// The agent's Prometheus port on every node (Cilium's agent uses the same one).
pub const METRICS_PORT: u16 = 9962;
/// The port's name in the pod and in the metrics Service (what the ServiceMonitor selects).
const METRICS_PORT_NAME: &str = "prometheus";

/// One RBAC rule: API group, resources (`plural` or `plural/subresource`), verbs.
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// What the agent does cluster-wide:
/// - list/watch of every watched kind (`source/kube/watch.rs::kinds`; pods only with the
///   `spec.nodeName` field selector, which RBAC cannot express, so pods are list/watch
///   cluster-wide as for every CNI agent);
/// - `get` of services and pools and server-side apply (`patch`) of their `/status` (the LB IPAM
///   status writer, `agent/status.rs`), and apply of `/status` of L2 policies and services
///   (validity conditions, `source/kube/conditions.rs`).
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        group: "",
        resources: &["services"],
        verbs: &["get", "list", "watch"],
    },
    Rule {
        group: "",
        resources: &["services/status"],
        verbs: &["patch"],
    },
    Rule {
        group: "",
        resources: &["nodes", "namespaces", "pods"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "discovery.k8s.io",
        resources: &["endpointslices"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "ferrite.dev",
        resources: &["loadbalancerippools"],
        verbs: &["get", "list", "watch"],
    },
    Rule {
        group: "ferrite.dev",
        resources: &["l2announcementpolicies"],
        verbs: &["list", "watch"],
    },
    Rule {
        group: "ferrite.dev",
        resources: &[
            "loadbalancerippools/status",
            "l2announcementpolicies/status",
        ],
        verbs: &["patch"],
    },
];

/// What the agent does in its own namespace (`config::own_namespace`), a namespaced Role:
/// - the status-writer Lease (`source/kube/lease.rs`);
/// - the L2 membership key Secret (`source/kube/l2key.rs`): `get` of that one Secret, and
///   `create` for the first agent to make it;
/// - `get` of its own DaemonSet when the agent stops (`source/kube/owner.rs`: uninstall only
///   when the addon was deleted).
///
/// `create` cannot be limited to a name (the name is not known to the authorizer before the
/// object exists), so `create` of secrets and leases is namespace-wide; `get`/`update` are
/// limited to the names in the second field. The agent never lists, watches, updates or
/// deletes Secrets: it cannot read any Secret but its own.
pub const NAMESPACED_RULES: &[(Rule, &[&str])] = &[
    (
        Rule {
            group: "coordination.k8s.io",
            resources: &["leases"],
            verbs: &["create"],
        },
        &[],
    ),
    (
        Rule {
            group: "coordination.k8s.io",
            resources: &["leases"],
            verbs: &["get", "update"],
        },
        &[STATUS_LEASE],
    ),
    (
        Rule {
            group: "",
            resources: &["secrets"],
            verbs: &["create"],
        },
        &[],
    ),
    (
        Rule {
            group: "",
            resources: &["secrets"],
            verbs: &["get"],
        },
        &[L2_KEY_SECRET, API_CA_SECRET],
    ),
    (
        Rule {
            group: "apps",
            resources: &["daemonsets"],
            verbs: &["get"],
        },
        &[NAME],
    ),
];

/// What the generators take from the command line.
#[derive(Clone, Debug)]
pub struct AddonOptions {
    pub namespace: String,
    pub image: String,
    /// `host:port` of the API server for the agent, instead of the `kubernetes` ClusterIP (needed
    /// when k3s runs without kube-proxy: the ClusterIP only works once ferrite programs it);
    /// [`DEFAULT_API_SERVER`] unless `--api-server` says otherwise.
    pub api_server: (String, String),
}

impl Default for AddonOptions {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            image: default_image(),
            api_server: default_api_server(),
        }
    }
}

/// [`DEFAULT_API_SERVER`], owned.
pub fn default_api_server() -> (String, String) {
    (
        DEFAULT_API_SERVER.0.to_owned(),
        DEFAULT_API_SERVER.1.to_owned(),
    )
}

/// `ghcr.io/ferrite-net/ferrite:<crate version>`.
pub fn default_image() -> String {
    format!("{IMAGE_REPOSITORY}:{}", crate::VERSION)
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": NAME})
}

fn rule_value(rule: &Rule, names: &[&str]) -> Value {
    let mut value = json!({
        "apiGroups": [rule.group],
        "resources": rule.resources,
        "verbs": rule.verbs,
    });
    if !names.is_empty() {
        value["resourceNames"] = json!(names);
    }
    value
}

/// ServiceAccount, ClusterRole + ClusterRoleBinding, Role + RoleBinding (Lease, own DaemonSet).
pub fn rbac(namespace: &str) -> Vec<Value> {
    let subject = json!([{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]);
    let cluster_rules: Vec<Value> = CLUSTER_RULES.iter().map(|r| rule_value(r, &[])).collect();
    let namespaced_rules: Vec<Value> = NAMESPACED_RULES
        .iter()
        .map(|(r, names)| rule_value(r, names))
        .collect();
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels()},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels()},
            "rules": cluster_rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels()},
            "rules": namespaced_rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": subject,
        }),
    ]
}

fn host_path(name: &str, path: &str, kind: &str) -> Value {
    json!({"name": name, "hostPath": {"path": path, "type": kind}})
}

/// The agent's command line in the pod.
fn agent_args() -> Vec<String> {
    [
        "agent",
        "--source",
        "kube",
        "--node-name",
        "$(NODE_NAME)",
        "--bpf-root",
        "/sys/fs/bpf/ferrite",
        "--cgroup",
        HOST_CGROUP,
        "--api-socket",
        crate::api::DEFAULT_SOCKET,
        "--state-dir",
        STATE_DIR,
        "--daemonset",
        NAME,
    ]
    .map(str::to_owned)
    .into_iter()
    // `/metrics` only, plain HTTP, on the node's addresses (host network) for Prometheus.
    .chain([
        "--metrics-listen".to_owned(),
        format!("0.0.0.0:{METRICS_PORT}"),
    ])
    .collect()
}

/// The agent's API is a unix socket (the pod has no HTTP port to probe): liveness = `ferrite
/// status` answers; readiness adds `--check` (datapath in place, first snapshot applied).
fn probe(period: u32, failures: u32, check: bool) -> Value {
    let mut command = vec![
        "ferrite",
        "status",
        "--api-socket",
        crate::api::DEFAULT_SOCKET,
    ];
    if check {
        command.push("--check");
    }
    json!({
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    })
}

/// The DaemonSet: one agent per node, host network, before the node is Ready.
pub fn daemonset(options: &AddonOptions) -> Value {
    let mut env = vec![
        json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}),
        json!({"name": "FERRITE_LOG", "value": "info"}),
        // The L2 membership binds to this address until the Node object is read.
        json!({"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}),
    ];
    let (host, port) = &options.api_server;
    env.push(json!({"name": "KUBERNETES_SERVICE_HOST", "value": host}));
    env.push(json!({"name": "KUBERNETES_SERVICE_PORT", "value": port}));
    let mut liveness = probe(10, 6, false);
    liveness["initialDelaySeconds"] = json!(10);
    let container = json!({
        "name": NAME,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["ferrite"],
        "args": agent_args(),
        "env": env,
        // Capabilities instead of `privileged`: BPF + PERFMON load and pin programs and maps,
        // NET_ADMIN attaches them (cgroup, tc, XDP) and configures links, NET_RAW sends ARP/NDP,
        // SYS_ADMIN covers kernels older than 5.8 (no CAP_BPF) and bpffs pinning, SYS_RESOURCE
        // lifts RLIMIT_MEMLOCK on kernels before 5.11. The runtime's default seccomp profile
        // refuses bpf() without CAP_SYS_ADMIN on older containerd, hence Unconfined.
        // allowPrivilegeEscalation must be true: the API server rejects `false` together with
        // an added SYS_ADMIN.
        "securityContext": {
            "privileged": false,
            "runAsUser": 0,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": true,
            "capabilities": {
                "add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "BPF", "PERFMON", "SYS_RESOURCE"],
                "drop": ["ALL"],
            },
            "seccompProfile": {"type": "Unconfined"},
        },
        "readinessProbe": probe(5, 3, true),
        "livenessProbe": liveness,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "hostPort": METRICS_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": "bpf", "mountPath": BPF_ROOT, "mountPropagation": "HostToContainer"},
            {"name": "cgroup", "mountPath": HOST_CGROUP},
            {"name": "cni-conf", "mountPath": K3S_CNI_CONF_DIR},
            {"name": "k3s-data", "mountPath": K3S_DATA_DIR},
            {"name": "containerd-config", "mountPath": K3S_CONTAINERD_DIR, "readOnly": true},
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "state", "mountPath": STATE_DIR},
        ],
    });
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": options.namespace, "labels": labels()},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": labels(),
                    // Prometheus' kubernetes_sd pod role scrapes what these name.
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": METRICS_PORT.to_string(),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "hostNetwork": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    // The CNI: nodes stay NotReady (and tainted) until it runs.
                    "tolerations": [{"operator": "Exists"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        host_path("bpf", BPF_ROOT, "DirectoryOrCreate"),
                        host_path("cgroup", "/sys/fs/cgroup", "Directory"),
                        host_path("cni-conf", K3S_CNI_CONF_DIR, "DirectoryOrCreate"),
                        host_path("k3s-data", K3S_DATA_DIR, "DirectoryOrCreate"),
                        host_path("containerd-config", K3S_CONTAINERD_DIR, "DirectoryOrCreate"),
                        host_path("run", RUN_DIR, "DirectoryOrCreate"),
                        host_path("state", STATE_DIR, "DirectoryOrCreate"),
                    ],
                },
            },
        },
    })
}

/// For the Prometheus Operator: a headless Service in front of every agent's metrics port and
/// a ServiceMonitor scraping it (`k3s-addon/servicemonitor.yaml`; needs the operator's CRDs,
/// hence not part of the addon file).
pub fn service_monitor(namespace: &str) -> Vec<Value> {
    let service = format!("{NAME}-metrics");
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": namespace, "labels": labels()},
            "spec": {
                "clusterIP": "None",
                "selector": {"app.kubernetes.io/name": NAME},
                "ports": [{"name": METRICS_PORT_NAME, "port": METRICS_PORT,
                           "targetPort": METRICS_PORT_NAME, "protocol": "TCP"}],
            },
        }),
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels()},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "namespaceSelector": {"matchNames": [namespace]},
                "endpoints": [{"port": METRICS_PORT_NAME, "path": "/metrics", "interval": "30s",
                               "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                "targetLabel": "node"}]}],
            },
        }),
    ]
}
