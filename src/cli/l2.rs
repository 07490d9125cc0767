//! `ferrite l2`: announced addresses, owners and eligibility.

use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use crate::api::{L2AddressView, L2View, client};

/// Show L2 announcements: each address, its owner, the interface, since when, and why this
/// node is or is not eligible.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "l2")]
pub struct L2Cmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
    #[argh(subcommand)]
    pub sub: Option<L2Sub>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum L2Sub {
    Keygen(KeygenCmd),
}

/// Print a new random L2 membership key (hex); every node needs the same one, e.g.
/// `ferrite l2 keygen > /etc/ferrite/l2.key` then copy the file to every node.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "keygen")]
pub struct KeygenCmd {}

fn keygen() -> i32 {
    match crate::l2::membership::Key::generate_text() {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The membership line of the table: bound where, key, refused datagrams; or why not.
fn membership_line(view: &L2View) -> String {
    let m = &view.membership;
    let r = &m.rejected;
    let mut line = match m.mode.as_str() {
        "bound" => format!(
            "membership: bound to {} ({}), key {}{}; refused datagrams: {} bad key/MAC, {} \
             replayed, {} unauthenticated, {} malformed",
            m.bind.as_deref().unwrap_or("?"),
            m.bind_from.as_deref().unwrap_or("?"),
            m.key.as_deref().unwrap_or("?"),
            m.key_from
                .as_deref()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default(),
            r.bad_mac,
            r.replayed,
            r.unauthenticated,
            r.malformed
        ),
        "standalone" => "membership: off (--l2-standalone: this node decides alone)".to_string(),
        other => format!("membership: {other}"),
    };
    if let Some(e) = &m.error {
        line.push_str("\nERROR: ");
        line.push_str(e);
    }
    line
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `1.2s` for 1234 ms.
fn secs(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

fn since(ms: Option<u64>, now: u64) -> String {
    let Some(ms) = ms else { return "-".into() };
    format!("{} ago", secs(now.saturating_sub(ms)))
}

/// The claim hold line of the table (none without a hold): why, since when, until what.
fn hold_line(view: &L2View, now: u64) -> Option<String> {
    let h = view.claim_hold.as_ref()?;
    let why = match h.reason.as_str() {
        "link-up" => format!("link-up on {}", h.interfaces.join(", ")),
        "freeze" => "resumed after a freeze".into(),
        other => other.to_string(),
    };
    let until = match (h.synced_unix_ms, h.settled_unix_ms) {
        (Some(synced), Some(settled)) => format!(
            "synced with a peer {} ago, claiming in {}",
            secs(now.saturating_sub(synced)),
            secs(settled.saturating_sub(now))
        ),
        _ => format!(
            "until a membership sync with a peer, or the hold-down in {}",
            secs(h.deadline_unix_ms.saturating_sub(now))
        ),
    };
    let what = if h.drop_existing {
        "no addresses claimed"
    } else {
        "new claims held"
    };
    Some(format!(
        "{what} ({why}, {} ago): {until}",
        secs(now.saturating_sub(h.since_unix_ms))
    ))
}

/// The THIS NODE column of an address.
fn this_node(a: &L2AddressView) -> String {
    let eligible = if a.eligible {
        "eligible"
    } else {
        "not eligible"
    };
    if a.claim_held {
        format!("{eligible}: {}; owner, claim held", a.reason)
    } else {
        format!("{eligible}: {}", a.reason)
    }
}

pub fn run(cmd: &L2Cmd) -> i32 {
    if let Some(L2Sub::Keygen(_)) = cmd.sub {
        return keygen();
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let view: L2View = match rt.block_on(client::get(&cmd.api_socket, "/v1/l2")) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if cmd.output == OutputFormat::Json {
        match serde_json::to_string_pretty(&view) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
        return 0;
    }
    let now = now_unix_ms();
    println!("node {}; members: {}", view.node, view.members.join(", "));
    println!("{}", membership_line(&view));
    if let Some(line) = hold_line(&view, now) {
        println!("{line}");
    }
    let rows: Vec<Vec<String>> = view
        .addresses
        .iter()
        .map(|a| {
            vec![
                a.address.clone(),
                a.service.clone(),
                a.owner.clone().unwrap_or_else(|| "(none)".into()),
                a.interface.clone().unwrap_or_else(|| "-".into()),
                since(a.since_unix_ms, now),
                this_node(a),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ADDRESS",
                "SERVICE",
                "OWNER",
                "INTERFACE",
                "SINCE",
                "THIS NODE"
            ],
            &rows
        )
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(json: serde_json::Value) -> L2View {
        serde_json::from_value(json).unwrap()
    }

    fn address(claim_held: bool) -> serde_json::Value {
        let mut a = serde_json::json!({
            "address": "192.0.2.200", "service": "test/web", "owner": "node1",
            "interface": null, "since_unix_ms": null, "eligible": true,
            "reason": "policy lan on eth0"
        });
        if claim_held {
            a["claim_held"] = true.into();
        }
        a
    }

    #[test]
    fn a_view_without_the_new_fields_still_reads_and_shows_no_hold() {
        let v = view(serde_json::json!({
            "node": "node1", "members": ["node1"], "addresses": [address(false)]
        }));
        assert_eq!(hold_line(&v, 5_000), None);
        assert!(!v.addresses[0].claim_held);
        assert_eq!(this_node(&v.addresses[0]), "eligible: policy lan on eth0");
    }

    #[test]
    fn the_hold_says_why_since_when_and_until_what() {
        let mut json = serde_json::json!({
            "node": "node1", "members": ["node1"], "addresses": [address(true)],
            "claim_hold": {
                "reason": "link-up", "interfaces": ["eth0", "eth1"],
                "since_unix_ms": 10_000, "deadline_unix_ms": 11_000, "drop_existing": false
            }
        });
        assert_eq!(
            hold_line(&view(json.clone()), 10_300).as_deref(),
            Some(
                "new claims held (link-up on eth0, eth1, 0.3s ago): until a membership sync \
                 with a peer, or the hold-down in 0.7s"
            )
        );
        assert_eq!(
            this_node(&view(json.clone()).addresses[0]),
            "eligible: policy lan on eth0; owner, claim held"
        );
        json["claim_hold"]["reason"] = "freeze".into();
        json["claim_hold"]["drop_existing"] = true.into();
        json["claim_hold"]["synced_unix_ms"] = 10_400.into();
        json["claim_hold"]["settled_unix_ms"] = 10_450.into();
        assert_eq!(
            hold_line(&view(json.clone()), 10_420).as_deref(),
            Some(
                "no addresses claimed (resumed after a freeze, 0.4s ago): synced with a peer \
                 0.0s ago, claiming in 0.0s"
            )
        );
        json["claim_hold"]["reason"] = "start".into();
        assert!(
            hold_line(&view(json), 10_420)
                .unwrap()
                .starts_with("no addresses claimed (start, 0.4s ago)")
        );
    }
}
