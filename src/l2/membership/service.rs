//! The membership service: the SWIM state machine driven over a tokio UDP socket, publishing
//! its view on a watch channel and logging every membership change.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::auth::{AuthError, Key, ReplayGuard, open, seal};
use super::swim::{Event, Identity, Swim};
use super::view::{MemberState, MembershipView};
use super::wire::{cluster_tag, decode, encode};
use super::{MembershipConfig, MembershipError};

/// Repeated IO and protocol complaints about one peer are logged at most this often.
const COMPLAINT_EVERY: Duration = Duration::from_secs(10);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Entry point of the service.
pub struct Membership;

/// Datagrams refused since the start, by reason (the service drops them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// Not authenticated at all (an old agent, or not a ferrite datagram).
    pub unauthenticated: u64,
    /// The MAC did not verify: another key, an altered datagram, or one meant for another
    /// member.
    pub bad_mac: u64,
    /// Authenticated but seen before (or from an earlier run of the sender).
    pub replayed: u64,
    /// Authenticated but malformed.
    pub malformed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    unauthenticated: AtomicU64,
    bad_mac: AtomicU64,
    replayed: AtomicU64,
    malformed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Rejected {
        Rejected {
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            bad_mac: self.bad_mac.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }
}

/// The sealing side and the opening side of one service.
struct Auth {
    key: Key,
    local: SocketAddr,
    epoch: u64,
    seq: u64,
    replay: ReplayGuard,
    counters: Arc<Counters>,
}

impl Auth {
    fn seal(&mut self, dest: SocketAddr, packet: &[u8]) -> Vec<u8> {
        self.seq += 1;
        seal(&self.key, dest, self.epoch, self.seq, packet)
    }
}

enum Command {
    Seeds(Vec<SocketAddr>),
    Resync,
    Leave(oneshot::Sender<()>),
}

/// Controls a running membership service. Dropping it stops the service without a goodbye
/// (the others then detect the silence as a failure); [`MembershipHandle::leave`] says goodbye.
#[derive(Debug)]
pub struct MembershipHandle {
    eligibility: watch::Sender<BTreeSet<IpAddr>>,
    commands: mpsc::UnboundedSender<Command>,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    key_fingerprint: String,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seeds(s) => f.debug_tuple("Seeds").field(s).finish(),
            Self::Resync => f.write_str("Resync"),
            Self::Leave(_) => f.write_str("Leave"),
        }
    }
}

impl Membership {
    /// Binds `cfg.bind` and runs the protocol on the current tokio runtime. The view starts
    /// with this node alone and fills in as seeds answer.
    pub fn start(
        cfg: MembershipConfig,
    ) -> Result<(MembershipHandle, watch::Receiver<MembershipView>), MembershipError> {
        cfg.validate()?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| MembershipError::NoRuntime)?;
        let bind_err = |source| MembershipError::Bind {
            addr: cfg.bind,
            source,
        };
        let std_socket = std::net::UdpSocket::bind(cfg.bind).map_err(bind_err)?;
        std_socket.set_nonblocking(true).map_err(bind_err)?;
        let socket = {
            let _entered = runtime.enter();
            UdpSocket::from_std(std_socket).map_err(bind_err)?
        };
        let local_addr = socket.local_addr().map_err(bind_err)?;
        let now = Instant::now();
        let started_ms = unix_ms();
        let seed = started_ms
            ^ u64::from(std::process::id()).rotate_left(32)
            ^ crate::l2::ownership::score(local_addr.ip(), &cfg.node_name);
        let swim = Swim::new(
            Identity {
                name: cfg.node_name.clone(),
                addr: local_addr,
                cluster: cluster_tag(&cfg.cluster),
                incarnation: started_ms,
                eligible: cfg.eligible.clone(),
            },
            cfg.seeds.clone(),
            cfg.timing.clone(),
            now,
            started_ms,
            seed,
        );
        info!(
            node = %cfg.node_name,
            addr = %local_addr,
            seeds = ?cfg.seeds,
            cluster = %cfg.cluster,
            probe_interval_ms = cfg.timing.probe_interval.as_millis(),
            suspicion_ms = cfg.timing.suspicion_min.as_millis(),
            "L2 membership started"
        );
        let (view_tx, view_rx) = watch::channel(swim.view());
        let (eligibility, eligibility_rx) = watch::channel(cfg.eligible);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let key_fingerprint = cfg.key.fingerprint().to_owned();
        let auth = Auth {
            key: cfg.key,
            local: local_addr,
            epoch: started_ms,
            seq: 0,
            replay: ReplayGuard::default(),
            counters: counters.clone(),
        };
        let task = runtime.spawn(run(
            swim,
            socket,
            auth,
            view_tx,
            eligibility_rx,
            commands_rx,
        ));
        Ok((
            MembershipHandle {
                eligibility,
                commands,
                local_addr,
                counters,
                key_fingerprint,
                task,
            },
            view_rx,
        ))
    }
}

impl MembershipHandle {
    /// Advertises a new set of addresses this node may announce (no-op when unchanged). The
    /// other members hear it within a round trip.
    pub fn set_local_eligibility(&self, eligible: BTreeSet<IpAddr>) {
        self.eligibility.send_if_modified(|current| {
            let changed = *current != eligible;
            if changed {
                *current = eligible;
            }
            changed
        });
    }

    /// Replaces the seed list (e.g. when Node objects change).
    pub fn set_seeds(&self, seeds: Vec<SocketAddr>) -> Result<(), MembershipError> {
        self.commands
            .send(Command::Seeds(seeds))
            .map_err(|_| MembershipError::Stopped)
    }

    /// A full-state exchange with every seed and known member now (after a link-up): the
    /// view's `syncs` grows as they answer.
    pub fn resync(&self) -> Result<(), MembershipError> {
        self.commands
            .send(Command::Resync)
            .map_err(|_| MembershipError::Stopped)
    }

    /// Datagrams refused so far.
    #[must_use]
    pub fn rejected(&self) -> Rejected {
        self.counters.snapshot()
    }

    /// Which key this member uses (a hash prefix, safe to show).
    #[must_use]
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fingerprint
    }

    /// The bound address (with the port the kernel chose for port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Tells every live member this node is leaving (they move its addresses at once), then
    /// stops the service.
    pub async fn leave(self) -> Result<(), MembershipError> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Leave(done))
            .map_err(|_| MembershipError::Stopped)?;
        wait.await.map_err(|_| MembershipError::Stopped)?;
        self.task.await.map_err(|_| MembershipError::Stopped)
    }
}

/// Rate limiter for complaints, per peer address.
#[derive(Default)]
struct Complaints(HashMap<(SocketAddr, &'static str), Instant>);

impl Complaints {
    fn should_log(&mut self, addr: SocketAddr, what: &'static str) -> bool {
        let now = Instant::now();
        let due = self
            .0
            .get(&(addr, what))
            .is_none_or(|last| now.duration_since(*last) >= COMPLAINT_EVERY);
        if due {
            self.0.insert((addr, what), now);
        }
        due
    }
}

async fn run(
    mut swim: Swim,
    socket: UdpSocket,
    mut auth: Auth,
    view_tx: watch::Sender<MembershipView>,
    mut eligibility: watch::Receiver<BTreeSet<IpAddr>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut buf = vec![0_u8; 65_536];
    let mut complaints = Complaints::default();
    let mut leaving: Option<oneshot::Sender<()>> = None;
    loop {
        let deadline = tokio::time::Instant::from_std(swim.poll_timeout());
        tokio::select! {
            biased;
            received = socket.recv_from(&mut buf) => {
                let mut next = Some(received);
                // Drain what is already queued before looking at timers: a node that was
                // frozen must see the acks it got before judging its peers.
                while let Some(result) = next.take() {
                    match result {
                        Ok((len, src)) => {
                            receive(&mut swim, &mut auth, &buf[..len], src, &mut complaints);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            warn!(error = %e, "receiving membership datagram");
                            break;
                        }
                    }
                    next = Some(socket.try_recv_from(&mut buf));
                }
            }
            changed = eligibility.changed() => {
                if changed.is_err() {
                    debug!("membership handle dropped; stopping");
                    break;
                }
                let set = eligibility.borrow_and_update().clone();
                swim.set_eligible(Instant::now(), set);
            }
            command = commands.recv() => match command {
                Some(Command::Seeds(seeds)) => swim.set_seeds(seeds),
                Some(Command::Resync) => {
                    // The eligibility sent with the link-up goes out with the sync.
                    if eligibility.has_changed().unwrap_or(false) {
                        let set = eligibility.borrow_and_update().clone();
                        swim.set_eligible(Instant::now(), set);
                    }
                    swim.resync();
                }
                Some(Command::Leave(done)) => {
                    swim.leave(Instant::now());
                    leaving = Some(done);
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {}
        }
        let now = Instant::now();
        if leaving.is_none() && now >= swim.poll_timeout() {
            swim.handle_timeout(now);
        }
        for (to, packet) in swim.take_outbox() {
            if let Err(e) = socket.send_to(&auth.seal(to, &encode(&packet)), to).await
                && complaints.should_log(to, "send")
            {
                warn!(peer = %to, error = %e, "sending membership datagram (repeats muted for 10 s)");
            }
        }
        for event in swim.take_events() {
            log_event(&event, &mut complaints);
        }
        if swim.take_changed() {
            let view = swim.view();
            view_tx.send_if_modified(|current| {
                let modified = *current != view;
                if modified {
                    *current = view;
                }
                modified
            });
        }
        if let Some(done) = leaving.take() {
            info!(node = %swim.name(), incarnation = swim.incarnation(), "left the L2 membership");
            let _ = done.send(());
            break;
        }
    }
}

fn receive(
    swim: &mut Swim,
    auth: &mut Auth,
    bytes: &[u8],
    src: SocketAddr,
    complaints: &mut Complaints,
) {
    let refused = |complaints: &mut Complaints, what: &'static str, e: &dyn std::fmt::Display| {
        if complaints.should_log(src, what) {
            warn!(peer = %src, error = %e, "dropping membership datagram (repeats muted for 10 s)");
        }
    };
    let opened = match open(&auth.key, auth.local, bytes) {
        Ok(o) => o,
        Err(e) => {
            let counter = match e {
                AuthError::BadMac => &auth.counters.bad_mac,
                _ => &auth.counters.unauthenticated,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            refused(complaints, "auth", &e);
            return;
        }
    };
    match decode(opened.packet) {
        Ok(packet) => {
            if let Err(e) = auth.replay.check(&packet.from, opened.epoch, opened.seq) {
                auth.counters.replayed.fetch_add(1, Ordering::Relaxed);
                refused(complaints, "replay", &e);
                return;
            }
            swim.handle_packet(Instant::now(), src, packet);
        }
        Err(e) => {
            auth.counters.malformed.fetch_add(1, Ordering::Relaxed);
            refused(complaints, "decode", &e);
        }
    }
}

fn log_event(event: &Event, complaints: &mut Complaints) {
    let at = unix_ms();
    match event {
        Event::Member {
            name,
            addr,
            from,
            to,
            incarnation,
            reported_by,
        } => {
            let from = from.map_or("unknown", MemberState::as_str);
            let what = match to {
                MemberState::Alive => "member up",
                MemberState::Suspect => "member suspect",
                MemberState::Dead => "member down",
                MemberState::Left => "member left",
            };
            if *to == MemberState::Dead {
                warn!(member = %name, %addr, from, incarnation, %reported_by, unix_ms = at, "{what}");
            } else {
                info!(member = %name, %addr, from, incarnation, %reported_by, unix_ms = at, "{what}");
            }
        }
        Event::Eligibility {
            name,
            incarnation,
            addresses,
        } => {
            info!(member = %name, incarnation, addresses, unix_ms = at, "member eligibility");
        }
        Event::Refuted {
            claim,
            accused_by,
            incarnation,
        } => {
            warn!(%claim, %accused_by, incarnation, unix_ms = at, "refuted a claim about this node");
        }
        Event::NameConflict { addr } => {
            if complaints.should_log(*addr, "name") {
                error!(peer = %addr, "another agent uses this node's member name; give every node a unique name");
            }
        }
        Event::ForeignCluster { addr } => {
            if complaints.should_log(*addr, "cluster") {
                debug!(peer = %addr, "ignoring a member of another cluster name");
            }
        }
    }
}
