//! `ferrite uninstall`: detach and remove everything ferrite put on this node (see
//! [`crate::uninstall`]). The OS package's prerm and the DaemonSet's cleanup run it.

use std::fmt::Write as _;
use std::path::PathBuf;

use argh::FromArgs;
use tracing::{error, warn};

use super::OutputFormat;
use crate::datapath::cgroup2_root;
use crate::uninstall::{Report, UninstallOptions, apply, plan};

/// Detach every ferrite program and remove its pins, CNI conflist and plugin (keeps going past
/// errors; exit 1 if any). Stop the agent first: a restarted agent attaches again.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "uninstall")]
pub struct UninstallCmd {
    /// bpffs directory of the pinned maps and links (the agent's --bpf-root)
    #[argh(option, default = "super::default_bpf_root()")]
    pub bpf_root: PathBuf,
    /// cgroup v2 directory the socket load balancer was attached to (default: the cgroup2 root)
    #[argh(option)]
    pub cgroup: Option<PathBuf>,
    /// path of the agent's API unix socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
    /// CNI conf dir holding 05-ferrite.conflist (repeatable; default: k3s's and /etc/cni/net.d)
    #[argh(option)]
    pub cni_conf_dir: Vec<PathBuf>,
    /// CNI bin dir holding the ferrite plugin (repeatable; default: k3s's and /opt/cni/bin)
    #[argh(option)]
    pub cni_bin_dir: Vec<PathBuf>,
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
}

pub fn run(cmd: UninstallCmd) -> i32 {
    let cgroup = match cmd.cgroup.map_or_else(cgroup2_root, Ok) {
        Ok(c) => Some(c),
        Err(e) => {
            // Nothing can be attached to a cgroup2 that is not mounted (e.g. in a chroot).
            warn!(error = %e, "no cgroup v2 found; skipping the cgroup");
            None
        }
    };
    if std::os::unix::net::UnixStream::connect(&cmd.api_socket).is_ok() {
        warn!(socket = %cmd.api_socket.display(),
              "an agent is still running: stop it first (systemctl stop ferrite), or it attaches again when it restarts");
    }
    let opts = UninstallOptions {
        bpf_root: cmd.bpf_root,
        cgroup,
        api_socket: cmd.api_socket,
        cni_conf_dirs: cmd.cni_conf_dir,
        cni_bin_dirs: cmd.cni_bin_dir,
    };
    let report = apply(&plan(&opts));
    match cmd.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => error!(error = %e, "encoding the report"),
        },
        OutputFormat::Table => print!("{}", render(&report)),
    }
    i32::from(!report.errors.is_empty())
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    if !report.done.is_empty() {
        let rows: Vec<Vec<String>> = report
            .done
            .iter()
            .map(|o| {
                vec![
                    o.action.to_owned(),
                    o.what.clone(),
                    o.target.clone(),
                    o.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&super::output::table(
            &["ACTION", "WHAT", "TARGET", "DETAIL"],
            &rows,
        ));
    }
    for f in &report.errors {
        let _ = writeln!(out, "error: {} {}: {}", f.step, f.target, f.error);
    }
    let _ = match (report.done.len(), report.errors.len()) {
        (0, 0) => writeln!(out, "nothing of ferrite left on this node"),
        (n, 0) => writeln!(
            out,
            "{n} removed or detached; nothing of ferrite left on this node"
        ),
        (n, e) => writeln!(out, "{n} removed or detached, {e} errors"),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uninstall::{Failure, Outcome};

    #[test]
    fn a_clean_node_says_so_and_errors_are_listed() {
        assert_eq!(
            render(&Report::default()),
            "nothing of ferrite left on this node\n"
        );
        let report = Report {
            done: vec![Outcome {
                action: "removed",
                what: "pin".into(),
                target: "/sys/fs/bpf/ferrite/maps/x".into(),
                detail: None,
            }],
            errors: vec![Failure {
                step: "removing CNI plugin".into(),
                target: "/opt/cni/bin/ferrite".into(),
                error: "Permission denied".into(),
            }],
        };
        let text = render(&report);
        assert!(
            text.contains("removed  pin   /sys/fs/bpf/ferrite/maps/x"),
            "{text}"
        );
        assert!(
            text.contains("error: removing CNI plugin /opt/cni/bin/ferrite: Permission denied"),
            "{text}"
        );
        assert!(
            text.ends_with("1 removed or detached, 1 errors\n"),
            "{text}"
        );
    }
}
