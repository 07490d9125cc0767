//! A fake Kubernetes API server for ferrite's tests.
//!
//! It speaks HTTPS (rustls, a CA of its own) with bearer-token auth and serves the kinds ferrite
//! reads and writes with the semantics ferrite depends on: list (with `limit`/`continue`), watch
//! (`resourceVersion` resume, BOOKMARK events, `410 Gone` as an ERROR event for compacted
//! versions, label and field selectors with ADDED/DELETED on selector transitions), get, create,
//! update with optimistic concurrency (409), merge patch, server-side apply (field ownership,
//! conflicts, `force`), the status subresource, and custom resources served only while their
//! CRD exists. Leases are ordinary objects, so their updates are optimistic too.
//!
//! Tests drive it by hand: put and delete objects, stop and start it on the same port, end or
//! expire every watch, make the next requests fail, and read the request log. [`FakeApi::kubeconfig`]
//! is a kubeconfig that trusts its CA, for `$KUBECONFIG`.

mod error;
mod fields;
mod ownership;
mod rbac;
mod resources;
mod rules;
mod sandbox;
mod selector;
mod server;
mod store;
mod time;
mod tls;
mod watchers;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::Deserialize;
use serde_json::Value;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

pub use error::ApiError;
pub use rbac::{Decision, Grant, PolicyRule, RbacError, Rules};
pub use sandbox::Sandbox;
pub use server::{Fault, RequestRecord};

use server::Shared;
use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum FakeApiError {
    #[error("certificates: {0}")]
    Certificate(String),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing the kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("YAML document {document}: {message}")]
    Yaml { document: usize, message: String },
    #[error("{api_version} {kind} is not served by the fake API server")]
    UnknownKind { api_version: String, kind: String },
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Options of [`FakeApi::start_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// The bearer token clients must send.
    pub token: String,
    /// How often open watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Objects present from the start (multi-document YAML).
    pub objects_yaml: String,
    /// Enforce RBAC with these grants (every client gets them); `None` allows everything.
    pub rbac: Option<Rules>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: "fakeapi-token".into(),
            bookmark_interval: Duration::from_secs(1),
            objects_yaml: String::new(),
            rbac: None,
        }
    }
}

struct Running {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A running (or stopped) fake API server. Dropping it stops it.
pub struct FakeApi {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    ca_pem: String,
    bookmark_interval: Duration,
    running: Option<Running>,
}

impl FakeApi {
    /// Starts a server on a free 127.0.0.1 port and writes `dir/kubeconfig` for it.
    pub fn start(dir: &Path) -> Result<Self, FakeApiError> {
        Self::start_with(dir, &Options::default())
    }

    pub fn start_with(dir: &Path, options: &Options) -> Result<Self, FakeApiError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fakeapi")
            .build()
            .map_err(FakeApiError::Runtime)?;
        let certs = tls::Certs::generate()?;
        let acceptor = TlsAcceptor::from(certs.server_config()?);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            token: options.token.clone(),
            clients: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            rbac: options.rbac.clone().map(rbac::Rbac::new),
        });
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = runtime
            .block_on(TcpListener::bind(any))
            .map_err(|source| FakeApiError::Listen { addr: any, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| FakeApiError::Listen { addr: any, source })?;
        let kubeconfig = dir.join("kubeconfig");
        tls::write_kubeconfig(
            &kubeconfig,
            &format!("https://{addr}"),
            &certs.ca_pem,
            &options.token,
        )
        .map_err(|source| FakeApiError::Kubeconfig {
            path: kubeconfig.clone(),
            source,
        })?;
        let mut api = Self {
            runtime,
            shared,
            acceptor,
            addr,
            kubeconfig,
            ca_pem: certs.ca_pem,
            bookmark_interval: options.bookmark_interval,
            running: None,
        };
        api.load_yaml(&options.objects_yaml)?;
        api.serve(listener);
        Ok(api)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (shutdown, rx) = watch::channel(false);
        let _guard = self.runtime.enter();
        let server = tokio::spawn(server::serve(
            listener,
            self.acceptor.clone(),
            self.shared.clone(),
            rx,
        ));
        let shared = self.shared.clone();
        let interval = self.bookmark_interval;
        let bookmarks = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                shared.store().bookmark();
            }
        });
        self.running = Some(Running {
            shutdown,
            tasks: vec![server, bookmarks],
        });
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig file for this server (its CA inline, its token).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Writes `kubeconfig-NAME` next to [`kubeconfig`](Self::kubeconfig) with a token of its
    /// own, so that the requests of each client (e.g. of several agents) can be told apart in
    /// [`requests`](Self::requests) by [`RequestRecord::client`].
    pub fn client_kubeconfig(&self, name: &str) -> Result<PathBuf, FakeApiError> {
        let token = format!("{}-{name}", self.shared.token);
        let path = self.kubeconfig.with_file_name(format!("kubeconfig-{name}"));
        tls::write_kubeconfig(&path, &self.url(), &self.ca_pem, &token).map_err(|source| {
            FakeApiError::Kubeconfig {
                path: path.clone(),
                source,
            }
        })?;
        let mut clients = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !clients.iter().any(|(t, _)| *t == token) {
            clients.push((token, name.to_owned()));
        }
        Ok(path)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops listening and drops every connection (and so every watch) at once. Objects stay.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(true);
            for task in running.tasks {
                task.abort();
            }
            self.shared.store().close_watches();
        }
    }

    /// Listens again on the same address (after [`stop`](Self::stop)).
    pub fn resume(&mut self) -> Result<(), FakeApiError> {
        if self.running.is_some() {
            return Ok(());
        }
        let addr = self.addr;
        let listener = self
            .runtime
            .block_on(async {
                // The old socket may take a moment to go away.
                let mut last = None;
                for _ in 0..50 {
                    match TcpListener::bind(addr).await {
                        Ok(l) => return Ok(l),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
            })
            .map_err(|source| FakeApiError::Listen { addr, source })?;
        self.serve(listener);
        Ok(())
    }

    /// [`stop`](Self::stop) then [`resume`](Self::resume), like a restarted server process:
    /// objects and their resourceVersions are kept (as etcd keeps them).
    pub fn restart(&mut self) -> Result<(), FakeApiError> {
        self.stop();
        self.resume()
    }

    /// Ends every open watch normally (as their timeout would); clients resume from their last
    /// resourceVersion.
    pub fn close_watches(&self) {
        self.shared.store().close_watches();
    }

    /// Forgets the event history and sends `410 Gone` to every open watch: clients must list
    /// again.
    pub fn expire_watches(&self) {
        self.shared.store().expire_watches();
    }

    /// Forgets the event history only: the next watch resumed from an old version gets `410`.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    pub fn open_watches(&self) -> usize {
        self.shared.store().open_watches()
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Makes the next `fault.count` matching requests fail with `fault.code`.
    pub fn fail_next(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fault);
    }

    /// Every RBAC decision so far (empty unless [`Options::rbac`] was given).
    pub fn rbac_decisions(&self) -> Vec<Decision> {
        self.shared
            .rbac
            .as_ref()
            .map(rbac::Rbac::decisions)
            .unwrap_or_default()
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Creates or replaces each object of a multi-document YAML text, status included.
    pub fn load_yaml(&self, text: &str) -> Result<Vec<Value>, FakeApiError> {
        let mut out = Vec::new();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let value = Value::deserialize(document).map_err(|e| FakeApiError::Yaml {
                document: index + 1,
                message: e.to_string(),
            })?;
            if value.is_null() {
                continue;
            }
            out.push(self.put(value)?);
        }
        Ok(out)
    }

    /// Creates or replaces one object, status included (a change made "by someone else").
    pub fn put(&self, value: Value) -> Result<Value, FakeApiError> {
        let resource = resource_of(&value)?;
        Ok(self.shared.store().put(resource, value)?)
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped kinds).
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, FakeApiError> {
        let resource = lookup(api_version, kind)?;
        let ns = if resource.namespaced { namespace } else { "" };
        Ok(self.shared.store().delete(resource, ns, name)?)
    }

    /// The object as a client would get it, if it exists.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = lookup(api_version, kind).ok()?;
        let ns = if resource.namespaced { namespace } else { "" };
        self.shared.store().get(resource, ns, name).ok()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lookup(api_version: &str, kind: &str) -> Result<&'static resources::Resource, FakeApiError> {
    resources::by_kind(api_version, kind).ok_or_else(|| FakeApiError::UnknownKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    })
}

fn resource_of(value: &Value) -> Result<&'static resources::Resource, FakeApiError> {
    let text = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    lookup(&text("apiVersion"), &text("kind"))
}
