//! `ferrite status` and `ferrite services`: read a running agent's API.

use std::fmt::Write as _;
use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use crate::api::{ServiceView, Status, client};

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(client::get(socket, route))
        .map_err(|e| e.to_string())
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

#[expect(
    clippy::too_many_lines,
    reason = "one row per subsystem, in display order"
)]
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
    if cmd.output == OutputFormat::Json {
        return print_json(&st);
    }
    let mut rows = vec![
        vec!["version".into(), st.version.clone()],
        vec!["node".into(), st.node_name.clone()],
        vec!["source".into(), st.source.clone()],
        vec![
            "datapath".into(),
            format!(
                "{} (bpf-root {}, cgroup {}{})",
                if st.datapath.ready {
                    "ready"
                } else {
                    "not ready"
                },
                st.datapath.bpf_root,
                st.datapath.cgroup,
                if st.datapath.adopted {
                    ", adopted pinned links"
                } else {
                    ""
                }
            ),
        ],
    ];
    if !st.datapath.tc_attach.is_empty() {
        rows.push(vec!["tc attach".into(), st.datapath.tc_attach.clone()]);
    }
    for d in &st.datapath.degraded {
        rows.push(vec!["kernel".into(), d.clone()]);
    }
    for d in &st.datapath.devices {
        let hook = st
            .datapath
            .ingress
            .iter()
            .find(|i| i.device == d.name)
            .map_or("", |i| i.hook.as_str());
        rows.push(vec![
            format!("device {}", d.name),
            format!(
                "{} ({hook} ingress): {}",
                st.datapath.device_selection,
                d.addresses.join(", ")
            ),
        ]);
    }
    for s in &st.subsystems {
        let mut line = format!(
            "{}: {}",
            if s.ready { "ready" } else { "NOT READY" },
            s.detail
        );
        if let Some(e) = &s.last_error {
            let _ = write!(line, " (last error: {e})");
        }
        rows.push(vec![format!("subsystem {}", s.name), line]);
    }
    if let Some(m) = &st.masquerade {
        rows.push(vec!["masquerade".into(), masq_row(m)]);
    }
    if let Some(a) = &st.last_apply {
        rows.push(vec![
            "last apply".into(),
            format!(
                "generation {}: {} services, {} frontends, {} backends, {} ops in {} µs{}",
                a.generation,
                a.services,
                a.frontends,
                a.backends,
                a.ops,
                a.duration_us,
                a.error
                    .as_ref()
                    .map(|e| format!(" — error: {e}"))
                    .unwrap_or_default()
            ),
        ]);
    }
    for e in &st.source_errors {
        rows.push(vec![
            "source error".into(),
            format!("{}: {}", e.path, e.message),
        ]);
    }
    print!("{}", table(&["FIELD", "VALUE"], &rows));
    0
}

/// `on: 12 SNAT flows; pod CIDRs 10.244.1.0/24, …; exclude …` or `off`.
fn masq_row(m: &crate::api::MasqStatus) -> String {
    if !m.enabled {
        return "off".into();
    }
    let mut row = format!(
        "on: {} SNAT flows; pod CIDRs {}",
        m.snat_flows,
        if m.pod_cidrs.is_empty() {
            "none known".into()
        } else {
            m.pod_cidrs.join(", ")
        }
    );
    if !m.exclude.is_empty() {
        row.push_str("; exclude ");
        row.push_str(&m.exclude.join(", "));
    }
    row
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
            subsystems: Vec::new(),
            masquerade: None,
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
