//! `ferrite status`: every subsystem's health like `cilium status` (`--verbose` for details,
//! `-o json`), and `--check`, the readiness probe of the DaemonSet.

use std::path::PathBuf;

use argh::FromArgs;

use super::output::OutputFormat;
use super::query::{fetch, print_json};
use super::status_report;
use crate::api::{L2View, Status};
use crate::routing::task::RoutesView;

/// Show the agent's status.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "status")]
pub struct StatusCmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
    /// exit 1 unless every subsystem is ready (datapath pins and links, source synced and
    /// applied, north-south on every device, CNI installed, …): a readiness probe; prints one
    /// line saying why
    #[argh(switch)]
    pub check: bool,
    /// show every subsystem's details (devices, routes, addresses, last errors)
    #[argh(switch, short = 'v')]
    pub verbose: bool,
}

/// Ready = every subsystem says so, the datapath is in place and the source's first snapshot
/// reached the maps without error.
fn readiness(st: &Status) -> Result<String, String> {
    let not_ready: Vec<String> = st
        .not_ready()
        .iter()
        .map(|s| match &s.last_error {
            Some(e) => format!("{}: {} (last error: {e})", s.name, s.detail),
            None => format!("{}: {}", s.name, s.detail),
        })
        .collect();
    if !not_ready.is_empty() {
        return Err(not_ready.join("; "));
    }
    if !st.datapath.ready {
        return Err("the datapath is not ready".into());
    }
    let Some(apply) = &st.last_apply else {
        return Err(format!(
            "no snapshot from the source ({}) applied yet",
            st.source
        ));
    };
    if let Some(error) = &apply.error {
        return Err(format!("the last apply failed: {error}"));
    }
    Ok(format!(
        "ready: generation {}, {} services",
        apply.generation, apply.services
    ))
}

/// `ferrite status`: the summary of every subsystem (`--check`: the readiness verdict only).
pub fn status(cmd: &StatusCmd) -> i32 {
    let st: Status = match fetch(&cmd.api_socket, "/v1/status") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if cmd.check {
        return match readiness(&st) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(why) => {
                println!("not ready: {why}");
                1
            }
        };
    }
    let views = fetch::<L2View>(&cmd.api_socket, "/v1/l2").and_then(|l2| {
        fetch::<RoutesView>(&cmd.api_socket, "/v1/routes").map(|routes| (l2, routes))
    });
    let (l2, routes) = match views {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let lines = status_report::report(&st, &l2, &routes);
    if cmd.output == OutputFormat::Json {
        return print_json(&StatusJson {
            status: &st,
            summary: &lines,
        });
    }
    print!("{}", status_report::render(&st, &lines, cmd.verbose));
    0
}

/// `-o json`: the agent's status with the summary lines.
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    status: &'a Status,
    summary: &'a [status_report::Line],
}

#[cfg(test)]
mod tests {
    use super::readiness;
    use crate::api::{ApplyReport, DatapathStatus, Status, Subsystem};

    fn status(ready: bool, apply: Option<ApplyReport>) -> Status {
        Status {
            version: "0".into(),
            node_name: "n".into(),
            source: "kube".into(),
            datapath: DatapathStatus {
                ready,
                ..DatapathStatus::default()
            },
            last_apply: apply,
            source_errors: Vec::new(),
            ..Status::default()
        }
    }

    #[test]
    fn ready_only_after_a_clean_first_apply() {
        assert!(readiness(&status(false, None)).is_err());
        let waiting = readiness(&status(true, None)).unwrap_err();
        assert!(waiting.contains("no snapshot"), "{waiting}");
        let applied = ApplyReport {
            generation: 1,
            services: 3,
            ..ApplyReport::default()
        };
        assert_eq!(
            readiness(&status(true, Some(applied.clone()))).unwrap(),
            "ready: generation 1, 3 services"
        );
        let failed = ApplyReport {
            error: Some("map full".into()),
            ..applied
        };
        assert!(
            readiness(&status(true, Some(failed)))
                .unwrap_err()
                .contains("map full")
        );
    }

    #[test]
    fn a_subsystem_not_ready_is_named_with_its_last_error() {
        let applied = ApplyReport {
            generation: 1,
            ..ApplyReport::default()
        };
        let mut st = status(true, Some(applied));
        st.subsystems = vec![
            Subsystem {
                name: "source".into(),
                ready: true,
                detail: "synced".into(),
                ..Subsystem::default()
            },
            Subsystem {
                name: "datapath".into(),
                ready: false,
                detail: "missing pinned links: tcx_eth0_ingress".into(),
                last_error: Some("pin removed".into()),
                last_error_at_unix_ms: Some(1),
            },
        ];
        let why = readiness(&st).unwrap_err();
        assert_eq!(
            why,
            "datapath: missing pinned links: tcx_eth0_ingress (last error: pin removed)"
        );
        st.subsystems[1].ready = true;
        assert!(readiness(&st).is_ok());
    }
}
