//! `ferrite doctor`.

use std::path::PathBuf;

use argh::FromArgs;

use super::output::{OutputFormat, table};
use crate::doctor::{Level, Report, checks, gather};

/// Check this node for what ferrite needs (kernel, cgroups, bpffs, k3s flags, CNI dirs), offline;
/// exit 1 on a blocking problem. Every failed check says what to do.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "doctor")]
pub struct DoctorCmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
    /// CNI conf dir to check (default: what the agent would use)
    #[argh(option)]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI bin dir to check (default: what the agent would use)
    #[argh(option)]
    pub cni_bin_dir: Option<PathBuf>,
}

pub fn run(cmd: &DoctorCmd) -> i32 {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let inputs = gather(cmd.cni_conf_dir.clone(), cmd.cni_bin_dir.clone(), root);
    let report = Report::new(checks::run(&inputs));
    let code = i32::from(!report.ok);
    if cmd.output == OutputFormat::Json {
        let printed = super::query::print_json(&report);
        return if printed == 0 { code } else { printed };
    }
    let mut rows = Vec::new();
    for c in &report.checks {
        rows.push(vec![
            c.level.as_str().to_owned(),
            c.name.to_owned(),
            c.detail.clone(),
        ]);
        if let Some(fix) = &c.fix
            && c.level != Level::Ok
        {
            rows.push(vec![String::new(), String::new(), format!("→ {fix}")]);
        }
    }
    print!("{}", table(&["STATUS", "CHECK", "DETAIL"], &rows));
    println!(
        "{}",
        if report.ok {
            "no blocking problem"
        } else {
            "blocking problems found (FAIL above)"
        }
    );
    code
}
