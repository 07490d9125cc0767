//! Where the API server is and how to reach it: the kubeconfig search order and the client with
//! its rate limit.

use std::path::{Path, PathBuf};

use kube::{
    Client, Config,
    client::ClientBuilder,
    config::{KubeConfigOptions, Kubeconfig},
};
use tracing::info;

use super::{KubeError, ratelimit::RateLimitLayer};

/// k3s's admin kubeconfig on a server node.
pub const K3S_SERVER_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// The kubelet's kubeconfig on a k3s agent node.
pub const K3S_AGENT_KUBECONFIG: &str = "/var/lib/rancher/k3s/agent/kubelet.kubeconfig";
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Where the client configuration came from (logged and shown as the source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// A kubeconfig file (`$KUBECONFIG`, k3s's files, `~/.kube/config`).
    File(PathBuf),
    /// The pod's service account.
    InCluster,
}

impl std::fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "kubeconfig {}", path.display()),
            Self::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// The first usable configuration, in this order: `$KUBECONFIG` (first existing file of the
/// list), the pod's service account, k3s's server kubeconfig, the k3s agent's kubelet kubeconfig,
/// `~/.kube/config`.
pub fn find() -> Option<ConfigOrigin> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(path) = std::env::split_paths(&list).find(|p| p.is_file())
    {
        return Some(ConfigOrigin::File(path));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && Path::new(SERVICE_ACCOUNT_TOKEN).is_file()
    {
        return Some(ConfigOrigin::InCluster);
    }
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    [
        Some(PathBuf::from(K3S_SERVER_KUBECONFIG)),
        Some(PathBuf::from(K3S_AGENT_KUBECONFIG)),
        home,
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .map(ConfigOrigin::File)
}

/// The namespace ferrite keeps its Lease in: the pod's own namespace when in a pod, else
/// `kube-system`.
pub fn own_namespace() -> String {
    std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "kube-system".to_owned())
}

/// Client settings from the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientOptions {
    /// Sustained requests per second (`--k8s-qps`); 0 disables the limit.
    pub qps: f32,
    /// Requests allowed at once above the rate (`--k8s-burst`).
    pub burst: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            qps: 50.0,
            burst: 100,
        }
    }
}

/// Loads the configuration found by [`find`] and builds a rate-limited client.
pub async fn client(options: ClientOptions) -> Result<(Client, ConfigOrigin), KubeError> {
    let origin = find().ok_or(KubeError::NoConfig)?;
    let client = client_from(&origin, options).await?;
    Ok((client, origin))
}

/// A rate-limited client from one configuration.
pub async fn client_from(
    origin: &ConfigOrigin,
    options: ClientOptions,
) -> Result<Client, KubeError> {
    let config = match origin {
        ConfigOrigin::InCluster => Config::incluster().map_err(|e| KubeError::Config {
            origin: origin.to_string(),
            message: e.to_string(),
        })?,
        ConfigOrigin::File(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| KubeError::Config {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| KubeError::Config {
                    origin: origin.to_string(),
                    message: e.to_string(),
                })?
        }
    };
    info!(%origin, server = %config.cluster_url, qps = options.qps, burst = options.burst,
          "Kubernetes API client");
    let client = ClientBuilder::try_from(config)
        .map_err(|e| KubeError::Config {
            origin: origin.to_string(),
            message: e.to_string(),
        })?
        .with_layer(&RateLimitLayer::new(options.qps, options.burst))
        .build();
    Ok(client)
}
