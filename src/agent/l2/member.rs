//! Starting the L2 membership when this node's address is known: the bind address (flag,
//! Node InternalIP, `HOST_IP`), the cluster key, and what `ferrite l2` shows about it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::api::L2MembershipView;
use crate::l2::membership::{
    BindFrom, DEFAULT_PORT, Key, KeyError, Membership, MembershipConfig, MembershipHandle,
    MembershipView, choose_bind, seeds_from_nodes,
};
use crate::model::Snapshot;
use crate::source::kube::l2key::{self, KeyState};

/// Default `--l2-key-file`.
pub const DEFAULT_KEY_FILE: &str = "/etc/ferrite/l2.key";
/// A failed start (no address yet, bind error, no key) is retried this often.
const RETRY: Duration = Duration::from_secs(1);

/// Where the cluster key comes from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// `--l2-key-file` (the default in `dir:` mode: [`DEFAULT_KEY_FILE`]).
    File(PathBuf),
    /// kube mode without `--l2-key-file`: the Secret the kube source gets or creates
    /// ([`l2key`]); `None` until the source has started.
    Secret(Option<watch::Receiver<KeyState>>),
}

impl KeySource {
    /// Where the key is (for messages).
    fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("file {}", path.display()),
            Self::Secret(_) => format!("Secret {}", l2key::SECRET_NAME),
        }
    }
}

/// Membership settings from the command line and the environment.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// `--l2-bind`.
    pub bind: Option<SocketAddr>,
    /// `HOST_IP` (the DaemonSet's `status.hostIP`).
    pub host_ip: Option<IpAddr>,
    /// `--l2-peers` (default: the other Nodes' InternalIPs).
    pub peers: Vec<SocketAddr>,
    /// `--l2-standalone`: no membership, this node decides alone.
    pub standalone: bool,
    /// `--l2-key-file`, or the kube source's Secret.
    pub key: KeySource,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            bind: None,
            host_ip: None,
            peers: Vec::new(),
            standalone: false,
            key: KeySource::File(PathBuf::from(DEFAULT_KEY_FILE)),
        }
    }
}

pub type Running = (MembershipHandle, watch::Receiver<MembershipView>);

/// The membership of this agent: running, not (yet) running and why, or not wanted.
pub struct Member {
    cfg: MemberConfig,
    node: String,
    pub running: Option<Running>,
    bind_from: Option<BindFrom>,
    /// The key was made up at start: no key file and no other node to share one with.
    ephemeral: bool,
    /// Where the running membership's key came from.
    key_from: Option<String>,
    error: Option<String>,
    last_try: Option<Instant>,
    /// Every view of the running service is copied here, so the agent loop can wait on one
    /// receiver from the start.
    notify: watch::Sender<MembershipView>,
}

/// The seeds: `--l2-peers`, else the other Nodes' InternalIPs of the bind address's family.
fn seeds(cfg: &MemberConfig, snapshot: &Snapshot, node: &str, bind: SocketAddr) -> Vec<SocketAddr> {
    if cfg.peers.is_empty() {
        seeds_from_nodes(&snapshot.nodes, node, bind.ip(), bind.port())
    } else {
        cfg.peers.clone()
    }
}

impl Member {
    pub fn new(cfg: MemberConfig, node: &str) -> Self {
        let error = (!cfg.standalone).then(|| "not bound yet: no snapshot".to_string());
        Self {
            cfg,
            node: node.to_string(),
            running: None,
            bind_from: None,
            ephemeral: false,
            key_from: None,
            error,
            last_try: None,
            notify: watch::channel(MembershipView::default()).0,
        }
    }

    pub fn standalone(&self) -> bool {
        self.cfg.standalone
    }

    /// A receiver that changes with every membership view (never before the start).
    pub fn receiver(&self) -> watch::Receiver<MembershipView> {
        self.notify.subscribe()
    }

    /// Starts the membership when it is wanted, not running and the last attempt is a
    /// second old; keeps the seeds current when it runs. Returns whether it started now.
    pub fn ensure(&mut self, snapshot: &Snapshot) -> bool {
        if self.cfg.standalone {
            return false;
        }
        if let Some((handle, _)) = &self.running {
            let seeds = seeds(&self.cfg, snapshot, &self.node, handle.local_addr());
            self.error = match &self.cfg.key {
                KeySource::File(path) if self.ephemeral && !seeds.is_empty() => Some(
                    KeyError::Missing {
                        path: path.display().to_string(),
                    }
                    .to_string(),
                ),
                _ => None,
            };
            if self.cfg.peers.is_empty()
                && !seeds.is_empty()
                && let Err(e) = handle.set_seeds(seeds)
            {
                warn!(error = %e, "L2 membership seeds");
            }
            return false;
        }
        if self.last_try.is_some_and(|t| t.elapsed() < RETRY) {
            return false;
        }
        self.last_try = Some(Instant::now());
        match self.start(snapshot) {
            Ok(()) => {
                self.error = None;
                true
            }
            Err(e) => {
                if self.error.as_deref() != Some(e.as_str()) {
                    error!(error = %e, "L2 membership not running; announcing nothing");
                }
                self.error = Some(e);
                false
            }
        }
    }

    fn start(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let (bind, from) = choose_bind(
            self.cfg.bind,
            self.cfg.host_ip,
            &snapshot.nodes,
            &self.node,
            DEFAULT_PORT,
            !self.cfg.peers.is_empty(),
        )
        .map_err(|e| e.to_string())?;
        let seeds = seeds(&self.cfg, snapshot, &self.node, bind);
        let (key, ephemeral, key_from) = self.key(seeds.is_empty())?;
        let mut m = MembershipConfig::new(self.node.as_str(), bind, key);
        m.seeds = seeds;
        let (handle, rx) = Membership::start(m).map_err(|e| e.to_string())?;
        info!(
            addr = %handle.local_addr(),
            from = from.as_str(),
            key = handle.key_fingerprint(),
            ephemeral,
            "L2 membership bound"
        );
        let mut forward = rx.clone();
        let notify = self.notify.clone();
        tokio::spawn(async move {
            while forward.changed().await.is_ok() {
                let view = forward.borrow_and_update().clone();
                if notify.send(view).is_err() {
                    break;
                }
            }
        });
        self.running = Some((handle, rx));
        self.bind_from = Some(from);
        self.ephemeral = ephemeral;
        self.key_from = Some(key_from);
        Ok(())
    }

    /// The key, whether it was made up here, and where it came from. `alone`: no other node
    /// to share a key with.
    fn key(&self, alone: bool) -> Result<(Key, bool, String), String> {
        match &self.cfg.key {
            KeySource::File(path) => match Key::read(path) {
                Ok(k) => Ok((k, false, self.cfg.key.describe())),
                // A lone node has nobody to share a key with: a random one keeps strangers out.
                Err(KeyError::Missing { .. }) if alone => {
                    let text = Key::generate_text().map_err(|e| e.to_string())?;
                    let key = Key::parse(&text, "generated").map_err(|e| e.to_string())?;
                    Ok((key, true, "generated at start".into()))
                }
                Err(e) => Err(e.to_string()),
            },
            KeySource::Secret(Some(rx)) => match &*rx.borrow() {
                KeyState::Ready { text, from } => Key::parse(text, from)
                    .map(|k| (k, false, from.clone()))
                    .map_err(|e| e.to_string()),
                KeyState::Pending { error } => Err(format!(
                    "waiting for the L2 membership key in Secret {}: {}",
                    l2key::SECRET_NAME,
                    error.as_deref().unwrap_or("not read yet")
                )),
            },
            KeySource::Secret(None) => Err(format!(
                "the L2 membership key Secret {} is not being read (the kube source did not start)",
                l2key::SECRET_NAME
            )),
        }
    }

    /// The fingerprint and origin of the Secret's key while membership does not run.
    fn pending_key(&self) -> (Option<String>, Option<String>) {
        match &self.cfg.key {
            KeySource::Secret(Some(rx)) => match &*rx.borrow() {
                KeyState::Ready { text, from } => (
                    Key::parse(text, from)
                        .ok()
                        .map(|k| k.fingerprint().to_owned()),
                    Some(from.clone()),
                ),
                KeyState::Pending { .. } => (None, None),
            },
            _ => (None, None),
        }
    }

    /// What `ferrite l2` shows.
    pub fn view(&self) -> L2MembershipView {
        let Some((handle, _)) = &self.running else {
            let (key, key_from) = self.pending_key();
            return L2MembershipView {
                mode: if self.cfg.standalone {
                    "standalone"
                } else {
                    "unbound"
                }
                .into(),
                error: self.error.clone(),
                key,
                key_from,
                ..L2MembershipView::default()
            };
        };
        L2MembershipView {
            mode: "bound".into(),
            bind: Some(handle.local_addr().to_string()),
            bind_from: self.bind_from.map(|f| f.as_str().to_string()),
            key: Some(if self.ephemeral {
                "ephemeral".to_string()
            } else {
                handle.key_fingerprint().to_string()
            }),
            key_from: self.key_from.clone(),
            error: self.error.clone(),
            rejected: handle.rejected().into(),
        }
    }
}
