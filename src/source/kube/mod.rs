//! The `kube` source: watchers on the Kubernetes API server feeding the same model as the `dir:`
//! source (objects are decoded by the same code), plus the status-writing side: a server-side
//! apply [`StatusWriter`], Lease-based leader election ([`lease`]) and validity conditions on
//! rejected objects.
//!
//! The first snapshot is published once every kind has been listed, so a restarted agent never
//! programs a half-known cluster; after that, every change is published as it arrives. When the
//! API server is unreachable the last snapshot stays in force and the failing watches are listed
//! as source errors until they recover (watches restart with backoff and list again after `410
//! Gone`).

pub mod api_ca;
mod backoff;
mod cache;
mod conditions;
pub mod config;
pub mod crd;
pub mod l2key;
pub mod lease;
pub mod owner;
mod ratelimit;
pub mod status;
mod watch;

#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use kube::Client;
use tokio::{
    sync::{mpsc, watch as channel},
    task::JoinSet,
};
use tracing::{debug, info};

pub use config::{ClientOptions, ConfigOrigin};
pub use status::{FIELD_MANAGER, StatusWriter};

use crate::{
    model::Snapshot,
    source::dir::{ErrorHandle, FileError},
};

/// The Lease that decides which node writes status.
pub const STATUS_LEASE: &str = "ferrite-status-writer";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "no Kubernetes API configuration found: set $KUBECONFIG, run in a pod, or install k3s \
         ({}, {})",
        config::K3S_SERVER_KUBECONFIG,
        config::K3S_AGENT_KUBECONFIG
    )]
    NoConfig,
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },
}

/// Settings of the kube source.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// This node: its pods are watched, and it is its identity in the Lease.
    pub node_name: String,
    pub client: ClientOptions,
    /// Where the status Lease lives (default: the pod's namespace, else `kube-system`).
    pub lease_namespace: Option<String>,
    pub lease_timing: lease::LeaseTiming,
}

/// A started kube source: its errors, and the status-writing side for the agent's reporters.
pub struct Running {
    pub errors: ErrorHandle,
    /// Status writes under ferrite's field manager.
    pub status_writer: StatusWriter,
    /// Whether this node holds the status Lease (only the holder should write status).
    pub leading: channel::Receiver<bool>,
    /// The L2 membership key from the Secret (when asked for; see [`l2key`]).
    pub l2_key: Option<channel::Receiver<l2key::KeyState>>,
    /// The connected client and the agent's namespace, for the other Secrets it keeps.
    pub client: kube::Client,
    pub namespace: String,
}

/// Connects and runs the source on the current runtime, feeding `tx` until every receiver is
/// gone. `lease_timing` is [`lease::LeaseTiming::default`] unless a test shortens it. With
/// `l2_key`, the L2 membership key Secret is got (or created) too.
pub async fn spawn(
    node_name: &str,
    client: ClientOptions,
    lease_timing: lease::LeaseTiming,
    l2_key: bool,
    tx: channel::Sender<Arc<Snapshot>>,
) -> Result<Running, KubeError> {
    let source = KubeSource::connect(KubeOptions {
        node_name: node_name.to_owned(),
        client,
        lease_namespace: None,
        lease_timing,
    })
    .await?;
    info!(origin = %source.origin(), "kube source connected");
    let running = Running {
        errors: source.error_handle(),
        status_writer: source.status_writer(),
        leading: source.leadership(),
        l2_key: l2_key.then(|| l2key::spawn(source.client.clone(), source.namespace())),
        client: source.client.clone(),
        namespace: source.namespace(),
    };
    tokio::spawn(source.run(tx));
    Ok(running)
}

/// The `kube` source, connected but not yet watching (see [`run`](Self::run)).
pub struct KubeSource {
    client: Client,
    origin: ConfigOrigin,
    options: KubeOptions,
    errors_tx: channel::Sender<Vec<FileError>>,
    leading_tx: channel::Sender<bool>,
}

impl KubeSource {
    /// Finds the API configuration and builds the client (no request is made yet).
    pub async fn connect(options: KubeOptions) -> Result<Self, KubeError> {
        let (client, origin) = config::client(options.client).await?;
        Ok(Self::with_client(client, origin, options))
    }

    /// A source on an existing client (tests, or a caller with its own configuration).
    pub fn with_client(client: Client, origin: ConfigOrigin, options: KubeOptions) -> Self {
        Self {
            client,
            origin,
            options,
            errors_tx: channel::Sender::new(Vec::new()),
            leading_tx: channel::Sender::new(false),
        }
    }

    /// Where the configuration came from.
    pub fn origin(&self) -> &ConfigOrigin {
        &self.origin
    }

    /// Rejected objects and failing watches, as the `dir:` source reports its files.
    pub fn error_handle(&self) -> ErrorHandle {
        ErrorHandle::from_receiver(self.errors_tx.subscribe())
    }

    /// A status writer with ferrite's field manager, for the agent's status reports.
    pub fn status_writer(&self) -> StatusWriter {
        StatusWriter::new(self.client.clone(), FIELD_MANAGER)
    }

    /// Whether this node holds the status Lease (only the holder should write status).
    pub fn leadership(&self) -> channel::Receiver<bool> {
        self.leading_tx.subscribe()
    }

    /// The namespace of the Lease and the L2 key Secret: the pod's, else `kube-system`.
    pub fn namespace(&self) -> String {
        self.options
            .lease_namespace
            .clone()
            .unwrap_or_else(config::own_namespace)
    }

    /// Watches until every receiver of `tx` is gone.
    pub async fn run(self, tx: channel::Sender<Arc<Snapshot>>) {
        let kinds = watch::kinds();
        let mut tasks = JoinSet::new();
        let (updates_tx, mut updates) = mpsc::unbounded_channel();
        for (index, kind) in kinds.iter().enumerate() {
            tasks.spawn(watch::run(
                self.client.clone(),
                index,
                kind.clone(),
                updates_tx.clone(),
            ));
        }
        drop(updates_tx);
        let namespace = self.namespace();
        let elector = lease::LeaderElector::new(
            self.client.clone(),
            &namespace,
            STATUS_LEASE,
            &self.options.node_name,
            self.options.lease_timing,
        );
        tasks.spawn(elector.run(self.leading_tx.clone()));
        let (validity_tx, validity_rx) = channel::channel(Arc::new(Vec::new()));
        tasks.spawn(conditions::run(
            StatusWriter::new(self.client.clone(), conditions::FIELD_MANAGER),
            kinds.clone(),
            validity_rx,
            self.leading_tx.subscribe(),
        ));

        let mut cache = cache::Cache::new(kinds);
        // Whether the first snapshot (and the validity of every object) went out.
        let mut published = false;
        let mut waiting_logged = false;
        loop {
            let update = tokio::select! {
                biased;
                () = tx.closed() => break,
                update = updates.recv() => update,
                () = tokio::time::sleep(Duration::from_secs(10)), if !cache.synced() && !waiting_logged => {
                    info!(waiting_for = ?cache.waiting_for(), "still waiting for the first list of some kinds");
                    waiting_logged = true;
                    continue;
                }
            };
            let Some(update) = update else { break };
            let started = std::time::Instant::now();
            let mut changes = cache.apply(update);
            // Take everything already queued (a burst) before publishing one snapshot.
            let mut batch = 1_usize;
            while let Ok(update) = updates.try_recv() {
                changes |= cache.apply(update);
                batch += 1;
            }
            self.publish_errors(&cache);
            if !cache.synced() {
                continue;
            }
            if changes.validity || !published {
                validity_tx.send_if_modified(|current| {
                    let next = cache.validity();
                    if **current == next {
                        return false;
                    }
                    *current = Arc::new(next);
                    true
                });
            }
            if !changes.snapshot && published {
                continue;
            }
            let snapshot = Arc::new(cache.snapshot().clone());
            if published {
                debug!(
                    services = snapshot.services.len(),
                    batch,
                    duration_us = started.elapsed().as_micros(),
                    "publishing snapshot"
                );
            } else {
                info!(
                    services = snapshot.services.len(),
                    endpoint_slices = snapshot.endpoint_slices.len(),
                    nodes = snapshot.nodes.len(),
                    pools = snapshot.pools.len(),
                    "initial list complete; publishing the first snapshot"
                );
            }
            published = true;
            tx.send_replace(snapshot);
        }
        tasks.shutdown().await;
        debug!("the kube source stops");
    }

    fn publish_errors(&self, cache: &cache::Cache) {
        let errors = cache.errors();
        self.errors_tx.send_if_modified(|current| {
            if *current == errors {
                return false;
            }
            *current = errors;
            true
        });
    }
}
