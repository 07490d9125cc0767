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

/// Default `--l2-key-file`.
pub const DEFAULT_KEY_FILE: &str = "/etc/ferrite/l2.key";
/// A failed start (no address yet, bind error, no key) is retried this often.
const RETRY: Duration = Duration::from_secs(1);

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
    /// `--l2-key-file`.
    pub key_file: PathBuf,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            bind: None,
            host_ip: None,
            peers: Vec::new(),
            standalone: false,
            key_file: PathBuf::from(DEFAULT_KEY_FILE),
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
            self.error = (self.ephemeral && !seeds.is_empty()).then(|| {
                KeyError::Missing {
                    path: self.cfg.key_file.display().to_string(),
                }
                .to_string()
            });
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
        let (key, ephemeral) = match Key::read(&self.cfg.key_file) {
            Ok(k) => (k, false),
            // A lone node has nobody to share a key with: a random one keeps strangers out.
            Err(KeyError::Missing { .. }) if seeds.is_empty() => {
                let text = Key::generate_text().map_err(|e| e.to_string())?;
                (
                    Key::parse(&text, "generated").map_err(|e| e.to_string())?,
                    true,
                )
            }
            Err(e) => return Err(e.to_string()),
        };
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
        Ok(())
    }

    /// What `ferrite l2` shows.
    pub fn view(&self) -> L2MembershipView {
        let Some((handle, _)) = &self.running else {
            return L2MembershipView {
                mode: if self.cfg.standalone {
                    "standalone"
                } else {
                    "unbound"
                }
                .into(),
                error: self.error.clone(),
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
            error: self.error.clone(),
            rejected: handle.rejected().into(),
        }
    }
}
