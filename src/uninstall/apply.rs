//! The IO of `ferrite uninstall`: runs the [`Step`]s of the plan, records what it did and every
//! error, and never stops early.

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tracing::{info, warn};

use super::links::{self, PROGRAM_PREFIX};
use super::{Report, Step};
use crate::datapath::{DatapathConfig, cleanup, obj_get};

/// Runs every step; a step's failure is recorded and the next step runs anyway.
#[must_use]
pub fn apply(steps: &[Step]) -> Report {
    let mut report = Report::default();
    let names = links::program_names();
    for step in steps {
        match step {
            Step::DetachPinnedLinks(dir) => detach_pinned(dir, &names, &mut report),
            Step::DetachCgroupPrograms(cgroup) => detach_cgroup(cgroup, &names, &mut report),
            Step::RemovePins(root) => remove_pins(root, &mut report),
            Step::RemoveFile { what, path } => remove_file(what, path, &mut report),
            Step::RemovePodNetwork => remove_pod_network(&mut report),
        }
    }
    report
}

/// ferrite's routes and VXLAN device (see [`crate::routing::kernel::cleanup`]).
fn remove_pod_network(report: &mut Report) {
    let target = Path::new("pod network");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report.failed("starting the netlink runtime", target, e),
    };
    let (removed, errors) = rt.block_on(crate::routing::kernel::cleanup());
    for r in removed {
        info!(removed = %r, "pod network");
        report.done("removed", &r, target, None);
    }
    for e in errors {
        report.failed("removing the pod network", target, e);
    }
}

fn program_of(names: &std::collections::BTreeMap<u32, String>, prog_id: u32) -> String {
    names
        .get(&prog_id)
        .cloned()
        .unwrap_or_else(|| format!("program {prog_id}"))
}

/// BPF_LINK_DETACH of every link pinned in `dir`: the hook is free at once, even if a process
/// (a stuck agent) still holds the link. The pins themselves go in [`remove_pins`].
fn detach_pinned(dir: &Path, names: &std::collections::BTreeMap<u32, String>, report: &mut Report) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => return report.failed("listing pinned links", dir, e),
    };
    for entry in entries.flatten() {
        let pin = entry.path();
        if crate::datapath::is_netlink_pin(&pin) {
            // A legacy tc filter or netlink XDP program: taken off its device, pin and all.
            match crate::datapath::remove_hook(&pin) {
                Ok(_) => report.done("detached", "netlink attachment", &pin, None),
                Err(e) => report.failed("detaching netlink attachment", &pin, e),
            }
            continue;
        }
        let fd = match obj_get(&pin) {
            Ok(fd) => fd,
            Err(e) => {
                report.failed("opening pinned link", &pin, e);
                continue;
            }
        };
        let program = links::info(fd.as_fd()).map_or_else(
            |_| "unknown program".to_owned(),
            |f| program_of(names, f.prog_id),
        );
        match links::detach(fd.as_fd()) {
            Ok(()) => {
                info!(pin = %pin.display(), program, "detached");
                report.done("detached", "link", &pin, Some(program));
            }
            // A map pinned among the links, or a link type without detach: unpinning is all.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                warn!(pin = %pin.display(), error = %e, "cannot detach; removing the pin only");
            }
            Err(e) => report.failed("detaching link", &pin, e),
        }
    }
}

/// Every link of a ferrite program on `cgroup`, pinned or not, wherever its pin lives.
fn detach_cgroup(
    cgroup: &Path,
    names: &std::collections::BTreeMap<u32, String>,
    report: &mut Report,
) {
    let ino = match std::fs::metadata(cgroup) {
        Ok(m) => m.ino(),
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => return report.failed("stat of cgroup", cgroup, e),
    };
    let all = match links::all() {
        Ok(all) => all,
        Err(e) => return report.failed("listing BPF links", cgroup, e),
    };
    for (fd, facts) in all {
        let program = program_of(names, facts.prog_id);
        if facts.cgroup_id != Some(ino) || !program.starts_with(PROGRAM_PREFIX) {
            continue;
        }
        match links::detach(fd.as_fd()) {
            Ok(()) => {
                info!(cgroup = %cgroup.display(), link = facts.id, program, "detached");
                report.done(
                    "detached",
                    "cgroup link",
                    cgroup,
                    Some(format!("link {} {program}", facts.id)),
                );
            }
            Err(e) => report.failed(&format!("detaching link {}", facts.id), cgroup, e),
        }
    }
}

/// Every pin under the bpf root, then its directories (the datapath's own cleanup).
fn remove_pins(root: &Path, report: &mut Report) {
    let cfg = DatapathConfig {
        bpf_root: root.to_owned(),
        cgroup: root.to_owned(),
        maglev_entries: 0,
        tc: crate::datapath::TcBackend::default(),
        features: crate::datapath::probe::Choices::default(),
    };
    let (removed, errors) = cleanup(&cfg);
    for pin in removed {
        report.done("removed", "pin", &pin, None);
    }
    for e in errors {
        report.failed("removing pins", root, e);
    }
}

fn remove_file(what: &str, path: &Path, report: &mut Report) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            info!(path = %path.display(), what, "removed");
            report.done("removed", what, path, None);
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => report.failed(&format!("removing {what}"), path, e),
    }
}
