//! `ferrite services`, and the API fetch helpers the other views share.

use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use crate::api::{ServiceView, client};

/// List service frontends and their backends as programmed in the datapath.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "services")]
pub struct ServicesCmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
}

pub(super) fn fetch<T: serde::de::DeserializeOwned>(
    socket: &std::path::Path,
    route: &str,
) -> Result<T, String> {
    let rt = super::runtime()?;
    rt.block_on(client::get(socket, route))
        .map_err(|e| e.to_string())
}

/// Fetches `route` and prints it as JSON or through `render`; the exit code.
pub(super) fn show<T: serde::de::DeserializeOwned + serde::Serialize>(
    socket: &std::path::Path,
    route: &str,
    output: OutputFormat,
    render: impl Fn(&T) -> String,
) -> i32 {
    let v: T = match fetch(socket, route) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if output == OutputFormat::Json {
        return print_json(&v);
    }
    print!("{}", render(&v));
    0
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) -> i32 {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub fn services(cmd: &ServicesCmd) -> i32 {
    let list: Vec<ServiceView> = match fetch(&cmd.api_socket, "/v1/services") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if cmd.output == OutputFormat::Json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.service.clone(),
                if s.port_name.is_empty() {
                    "-".into()
                } else {
                    s.port_name.clone()
                },
                s.frontend.clone(),
                s.protocol.clone(),
                if s.backends.is_empty() {
                    "(none: refused)".into()
                } else {
                    s.backends.join(",")
                },
                s.affinity_timeout_seconds
                    .map_or_else(|| "-".into(), |t| format!("ClientIP {t}s")),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "SERVICE", "PORT", "FRONTEND", "PROTO", "BACKENDS", "AFFINITY"
            ],
            &rows
        )
    );
    0
}
