//! `ferrite l2-member` (testing tool): runs only the L2 membership protocol over UDP and prints
//! every view change as one JSON line on stdout, so failover can be measured without the
//! datapath. Commands on stdin, one per line: `eligible ADDR,...` (empty list: none) and `leave`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argh::FromArgs;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::l2::membership::{
    DEFAULT_CLUSTER, Key, MemberView, Membership, MembershipConfig, MembershipView, Timing,
    parse_peers,
};
use crate::l2::ownership::{AddrReq, NodeName, assign, owned_by};
use crate::model::ServiceName;

/// (testing) run only the L2 membership over UDP; print each view change as a JSON line
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "l2-member")]
pub struct L2MemberCmd {
    /// address:port to bind: this node's address on the announcing network
    #[argh(option)]
    pub bind: SocketAddr,
    /// member name
    #[argh(option)]
    pub name: String,
    /// seed peers, comma separated ip[:port] (default port 7946)
    #[argh(option, default = "String::new()")]
    pub peers: String,
    /// addresses this member says it may announce, comma separated
    #[argh(option, default = "String::new()")]
    pub eligible: String,
    /// probe interval in milliseconds (default 100)
    #[argh(option)]
    pub probe_interval_ms: Option<u64>,
    /// minimum suspicion timeout in milliseconds (default 300; the maximum is 3×)
    #[argh(option)]
    pub suspicion_ms: Option<u64>,
    /// the cluster key file (hex, as `ferrite l2 keygen` prints; default /etc/ferrite/l2.key)
    #[argh(
        option,
        default = "std::path::PathBuf::from(crate::agent::DEFAULT_KEY_FILE)"
    )]
    pub key_file: std::path::PathBuf,
    /// cluster name (default ferrite)
    #[argh(option, default = "String::from(DEFAULT_CLUSTER)")]
    pub cluster: String,
}

/// One line of output.
#[derive(Serialize)]
struct Line<'a> {
    /// When this process saw the change (Unix ms).
    unix_ms: u64,
    local: &'a str,
    /// This member's incarnation (bumped by each refutation and eligibility change).
    incarnation: u64,
    members: &'a [MemberView],
    /// Owner of every address some live member advertises, as this member computes it.
    owners: BTreeMap<IpAddr, NodeName>,
    /// The addresses this member would announce.
    owned: BTreeSet<IpAddr>,
}

enum Input {
    Eligible(BTreeSet<IpAddr>),
    Leave,
}

fn parse_addrs(list: &str) -> Result<BTreeSet<IpAddr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("`{s}` is not an IP address")))
        .collect()
}

fn config(cmd: &L2MemberCmd) -> Result<MembershipConfig, String> {
    let key = Key::read(&cmd.key_file).map_err(|e| e.to_string())?;
    let mut cfg = MembershipConfig::new(cmd.name.as_str(), cmd.bind, key);
    cfg.seeds = parse_peers(&cmd.peers).map_err(|e| e.to_string())?;
    cfg.eligible = parse_addrs(&cmd.eligible)?;
    cfg.cluster = cmd.cluster.as_str().into();
    let defaults = Timing::default();
    cfg.timing = Timing::scaled(
        cmd.probe_interval_ms
            .map_or(defaults.probe_interval, Duration::from_millis),
        cmd.suspicion_ms
            .map_or(defaults.suspicion_min, Duration::from_millis),
    );
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn print(view: &MembershipView) {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let wanted: BTreeSet<IpAddr> = view
        .live()
        .flat_map(|m| m.eligible.iter().copied())
        .collect();
    let reqs: Vec<AddrReq> = wanted
        .into_iter()
        .map(|a| AddrReq::new(a, ServiceName::default()))
        .collect();
    let owners = assign(&reqs, &view.members);
    let line = Line {
        unix_ms,
        local: &view.local,
        incarnation: view.get(&view.local).map_or(0, |m| m.incarnation),
        members: &view.members,
        owned: owned_by(&owners, &view.local),
        owners,
    };
    match serde_json::to_string(&line) {
        Ok(json) => println!("{json}"),
        Err(e) => error!(error = %e, "encoding the view"),
    }
}

/// Reads stdin commands on a thread (the runtime has no async stdin); EOF just ends it.
fn read_stdin(tx: mpsc::UnboundedSender<Input>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let line = line.trim();
            let input = if line == "leave" {
                Input::Leave
            } else if let Some(list) = line.strip_prefix("eligible") {
                match parse_addrs(list) {
                    Ok(set) => Input::Eligible(set),
                    Err(e) => {
                        error!("stdin: {e}");
                        continue;
                    }
                }
            } else {
                error!(line, "stdin: expected `eligible ADDR,...` or `leave`");
                continue;
            };
            if tx.send(input).is_err() {
                break;
            }
        }
    });
}

pub fn run(cmd: &L2MemberCmd) -> i32 {
    let cfg = match config(cmd) {
        Ok(cfg) => cfg,
        Err(e) => {
            error!("l2-member: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "starting the runtime");
            return 1;
        }
    };
    rt.block_on(async move {
        let (handle, mut views) = match Membership::start(cfg) {
            Ok(started) => started,
            Err(e) => {
                error!(error = %e, "starting the membership");
                return 1;
            }
        };
        info!(node = %cmd.name, addr = %handle.local_addr(), "l2-member running");
        let (tx, mut input) = mpsc::unbounded_channel();
        read_stdin(tx);
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            error!("installing the SIGTERM handler");
            return 1;
        };
        print(&views.borrow_and_update());
        loop {
            tokio::select! {
                changed = views.changed() => {
                    if changed.is_err() {
                        error!("the membership service stopped");
                        return 1;
                    }
                    print(&views.borrow_and_update());
                }
                Some(cmd) = input.recv() => match cmd {
                    Input::Eligible(set) => handle.set_local_eligibility(set),
                    Input::Leave => break,
                },
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
            }
        }
        match handle.leave().await {
            Ok(()) => 0,
            Err(e) => {
                error!(error = %e, "leaving");
                1
            }
        }
    })
}
