//! The CNI plugin (spec 1.1; also 1.0.0 and 0.4.0) and the node IPAM store. The `ferrite`
//! binary runs this instead of its CLI whenever `CNI_COMMAND` is set.
//!
//! Layout: [`env`] and [`config`] parse the invocation, [`plan`] computes the attachment,
//! [`ipam`] reserves addresses (pure model + locked crash-safe store), [`netlink`] and
//! [`netns`] apply it, [`cmd`] has one module per command, [`result`] renders results per
//! version, [`install`] is how the agent installs the plugin and its conflist (in the dirs
//! [`containerd`] reads from k3s's containerd config), and
//! [`node_state`] is the file through which the agent hands over the node's pod CIDRs.

pub mod cidr;
pub mod cmd;
pub mod config;
pub mod containerd;
pub mod env;
pub mod error;
pub mod install;
pub mod ipam;
mod log;
pub mod netlink;
pub mod netns;
pub mod node_state;
pub mod plan;
pub mod reclaim;
pub mod result;
pub mod version;

use std::io::{IsTerminal, Read, Write};

use serde_json::Value;
use tracing::error;

use env::{CniEnv, Command};
use error::{CniError, reply_version};

/// Runs one plugin invocation from the process environment and stdin; returns the exit code.
pub fn main() -> i32 {
    let mut stdin = Vec::new();
    let read = if std::io::stdin().is_terminal() {
        Ok(0)
    } else {
        std::io::stdin().read_to_end(&mut stdin)
    };
    let requested = config::requested_version(&stdin);
    let outcome = read
        .map_err(CniError::Stdin)
        .and_then(|_| run(&stdin, requested.as_deref()));
    let (code, out) = match outcome {
        Ok(out) => (0, out),
        Err(e) => {
            error!(code = e.code(), error = %e, "CNI {} failed", std::env::var("CNI_COMMAND").unwrap_or_default());
            (1, Some(e.to_json(&reply_version(requested.as_deref()))))
        }
    };
    if let Some(v) = out {
        let mut stdout = std::io::stdout().lock();
        let written = serde_json::to_writer(&mut stdout, &v)
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if written.is_err() {
            return 1;
        }
    }
    code
}

fn run(stdin: &[u8], requested: Option<&str>) -> Result<Option<Value>, CniError> {
    let env = match CniEnv::from_lookup(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => {
            log::init(None);
            return Err(e.into());
        }
    };
    if env.command == Command::Version {
        log::init(None);
        return Ok(Some(cmd::version(requested)));
    }
    let conf = match config::parse(stdin, env.command) {
        Ok(c) => c,
        Err(e) => {
            log::init(None);
            return Err(e.into());
        }
    };
    log::init(Some(&conf));
    let started = std::time::Instant::now();
    let report = |command: &str, ok: bool| {
        crate::metrics::cni::report(
            &conf.api_socket,
            &crate::metrics::cni::CniEvent {
                command: command.into(),
                ok,
                duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            },
        );
    };
    match env.command {
        Command::Add => {
            let out = cmd::add::run(&env, &conf).map(Some);
            report(crate::metrics::cni::ADD, out.is_ok());
            out
        }
        Command::Del => {
            let out = cmd::del::run(&env, &conf).map(|()| None);
            report(crate::metrics::cni::DEL, out.is_ok());
            out
        }
        Command::Check => cmd::check::run(&env, &conf).map(|()| None),
        Command::Gc => cmd::gc::run(&conf).map(|()| None),
        Command::Status => cmd::status::run(&conf).map(|()| None),
        Command::Version => Ok(Some(cmd::version(requested))),
    }
}
