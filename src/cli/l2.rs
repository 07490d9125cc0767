//! `ferrite l2`: announced addresses, owners and eligibility.

use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use crate::api::{L2View, client};

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
}

fn since(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ago = now.saturating_sub(ms);
    format!("{}.{}s ago", ago / 1000, (ago % 1000) / 100)
}

pub fn run(cmd: &L2Cmd) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
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
    println!("node {}; members: {}", view.node, view.members.join(", "));
    let rows: Vec<Vec<String>> = view
        .addresses
        .iter()
        .map(|a| {
            vec![
                a.address.clone(),
                a.service.clone(),
                a.owner.clone().unwrap_or_else(|| "(none)".into()),
                a.interface.clone().unwrap_or_else(|| "-".into()),
                since(a.since_unix_ms),
                format!(
                    "{}: {}",
                    if a.eligible {
                        "eligible"
                    } else {
                        "not eligible"
                    },
                    a.reason
                ),
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
