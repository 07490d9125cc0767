//! The checks, pure functions of [`Inputs`].

use super::{Check, Inputs, k3s};
use crate::cni::install::CONFLIST_NAME;
use crate::datapath::probe::{Impact, missing_line};

/// `uname -r` → (major, minor).
#[must_use]
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn is_pi(i: &Inputs) -> bool {
    i.model
        .as_deref()
        .is_some_and(|m| m.contains("Raspberry Pi"))
}

fn kernel(i: &Inputs) -> Check {
    match kernel_version(&i.kernel_release) {
        None => Check::warn(
            "kernel",
            format!("cannot parse the kernel release {:?}", i.kernel_release),
            "check `uname -r`: ferrite needs Linux 5.15 or newer",
        ),
        Some(v) if v < (5, 15) => Check::fail(
            "kernel",
            format!("Linux {} is older than 5.15", i.kernel_release),
            "upgrade the kernel to 5.15 or newer (e.g. Ubuntu 22.04's 5.15, Debian 12's 6.1)",
        ),
        Some(v) if v < (5, 18) => Check::warn(
            "kernel",
            format!(
                "Linux {}: below 5.18 a service without endpoints refuses connect() with EPERM \
                 instead of ECONNREFUSED, and --xdp is unavailable",
                i.kernel_release
            ),
            "nothing needed; a 5.18+ kernel restores ECONNREFUSED and XDP",
        ),
        Some(_) => Check::ok("kernel", format!("Linux {}", i.kernel_release)),
    }
}

/// `CONFIG_NAME` in the config text: "y", "m" or None.
fn config_value<'a>(config: &'a str, name: &str) -> Option<&'a str> {
    config.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::trim)
    })
}

fn kernel_config(i: &Inputs) -> Check {
    let Some((source, text)) = &i.kernel_config else {
        return Check::warn(
            "kernel-config",
            format!(
                "neither /proc/config.gz nor /boot/config-{} is readable",
                i.kernel_release
            ),
            "`modprobe configs` (for /proc/config.gz) or install the kernel's config file; \
             the eBPF probes below still tell what works",
        );
    };
    let legacy = kernel_version(&i.kernel_release).is_some_and(|v| v < (6, 6));
    let mut wanted = vec![
        ("CONFIG_BPF_SYSCALL", false),
        ("CONFIG_CGROUP_BPF", false),
        ("CONFIG_VETH", true),
    ];
    if legacy {
        // The legacy TC attach: clsact qdisc + cls_bpf filter.
        wanted.push(("CONFIG_NET_SCH_INGRESS", true));
        wanted.push(("CONFIG_NET_CLS_BPF", true));
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(name, module_ok)| match config_value(text, name) {
            Some("y") => false,
            Some("m") => !module_ok,
            _ => true,
        })
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        return Check::fail(
            "kernel-config",
            format!("{source} lacks {}", missing.join(", ")),
            format!(
                "use a kernel built with {} (the distribution's standard kernels have them)",
                missing.join(", ")
            ),
        );
    }
    if config_value(text, "CONFIG_BPF_JIT") != Some("y") {
        return Check::warn(
            "kernel-config",
            format!("{source}: no CONFIG_BPF_JIT: eBPF runs interpreted (slow)"),
            "use a kernel with CONFIG_BPF_JIT=y, and `sysctl net.core.bpf_jit_enable=1`",
        );
    }
    Check::ok(
        "kernel-config",
        format!("{source}: eBPF, cgroup BPF, veth present"),
    )
}

fn btf(i: &Inputs) -> Check {
    if i.btf {
        Check::ok("btf", "/sys/kernel/btf/vmlinux present")
    } else {
        Check::warn(
            "btf",
            "the kernel has no BTF (/sys/kernel/btf/vmlinux): ferrite's programs do not need it",
            "nothing needed for ferrite; for bpftool's and other tools' BTF features use a \
             kernel with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

fn mounted<'a>(mounts: &'a str, fstype: &str) -> Option<&'a str> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, target, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then_some(target)
    })
}

fn cgroup2(i: &Inputs) -> Check {
    match mounted(&i.mounts, "cgroup2") {
        Some(at) => Check::ok("cgroup2", format!("cgroup v2 mounted at {at}")),
        None => Check::warn(
            "cgroup2",
            "no cgroup v2 hierarchy is mounted: the agent mounts one under /run/ferrite",
            "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2, the default of current \
             distributions) so containers and ferrite share one hierarchy",
        ),
    }
}

fn bpffs(i: &Inputs) -> Check {
    let at_sys = i.mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some("/sys/fs/bpf") && f.next() == Some("bpf")
    });
    if at_sys {
        Check::ok("bpffs", "bpffs mounted at /sys/fs/bpf")
    } else {
        Check::warn(
            "bpffs",
            "no bpffs at /sys/fs/bpf: the agent mounts it, but a DaemonSet's mount would not \
             outlive its pod",
            "`mount -t bpf bpf /sys/fs/bpf` and add `bpf /sys/fs/bpf bpf defaults 0 0` to \
             /etc/fstab (systemd mounts it by default)",
        )
    }
}

fn tc_attach(i: &Inputs) -> Check {
    let probed = i.probes.as_ref().and_then(|p| {
        p.iter()
            .find(|p| p.feature == crate::datapath::probe::Feature::Tcx && p.error.is_none())
            .map(|p| p.available)
    });
    let by_version = kernel_version(&i.kernel_release).map(|v| v >= (6, 6));
    match probed.or(by_version) {
        Some(true) => Check::ok("tc-attach", "TCX links (Linux 6.6+)"),
        Some(false) => Check::ok(
            "tc-attach",
            "no TCX: legacy TC (clsact qdisc + cls_bpf filters; XDP over netlink)",
        ),
        None => Check::warn(
            "tc-attach",
            "cannot tell whether the kernel has TCX",
            "run `ferrite doctor` as root to probe it",
        ),
    }
}

fn memlock(i: &Inputs) -> Check {
    const NEEDED: u64 = 64 << 20;
    if kernel_version(&i.kernel_release).is_some_and(|v| v >= (5, 11)) {
        return Check::ok(
            "memlock",
            "eBPF memory is charged to the memory cgroup (5.11+)",
        );
    }
    match i.memlock {
        Some(limit) if limit < NEEDED => Check::fail(
            "memlock",
            format!(
                "RLIMIT_MEMLOCK is {} KiB: too low for the maps before 5.11",
                limit >> 10
            ),
            "set LimitMEMLOCK=infinity in ferrite.service (the package does), or `ulimit -l unlimited`",
        ),
        _ => Check::ok("memlock", "RLIMIT_MEMLOCK is high enough"),
    }
}

/// `/proc/cgroups` → the enabled subsystems.
fn enabled_controllers(proc_cgroups: &str) -> Vec<&str> {
    proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then_some(f[0])
        })
        .collect()
}

fn cgroup_controllers(i: &Inputs) -> Check {
    let enabled = enabled_controllers(&i.proc_cgroups);
    let missing: Vec<&str> = ["cpu", "cpuset", "memory", "pids"]
        .into_iter()
        .filter(|c| !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return Check::ok("cgroup-controllers", "cpu, cpuset, memory, pids enabled");
    }
    let detail = format!(
        "cgroup controllers disabled: {} (k3s's kubelet needs them)",
        missing.join(", ")
    );
    if missing.contains(&"memory") && is_pi(i) {
        return Check::fail(
            "cgroup-controllers",
            detail,
            "append `cgroup_memory=1 cgroup_enable=memory` to the single line of \
             /boot/firmware/cmdline.txt (Raspberry Pi OS bookworm; /boot/cmdline.txt before), \
             then reboot",
        );
    }
    let disabled_by_cmdline: Vec<&str> = i
        .cmdline
        .split_whitespace()
        .filter(|w| w.starts_with("cgroup_disable="))
        .collect();
    let fix = if disabled_by_cmdline.is_empty() {
        format!(
            "enable {} in the kernel (cgroup_enable={} on the kernel command line), then reboot",
            missing.join(", "),
            missing.join(",")
        )
    } else {
        format!(
            "remove {} from the kernel command line (/etc/default/grub, then update-grub), \
             then reboot",
            disabled_by_cmdline.join(" ")
        )
    };
    Check::fail("cgroup-controllers", detail, fix)
}

const DROP_IN: &str = "/etc/rancher/k3s/config.yaml.d/90-ferrite.yaml";

fn k3s_checks(i: &Inputs) -> Vec<Check> {
    if !i.k3s.installed {
        return vec![Check::warn(
            "k3s",
            "k3s not found (no /etc/rancher/k3s, no k3s unit)",
            "fine for `ferrite agent --source dir:`; for a cluster install k3s with \
             --flannel-backend=none --disable-network-policy --disable-kube-proxy \
             --disable=servicelb (the deb/rpm's drop-in sets them)",
        )];
    }
    let f = k3s::resolve(&i.k3s);
    let mut out: Vec<Check> = f
        .errors
        .iter()
        .map(|(path, e)| {
            Check::fail(
                "k3s-config",
                format!("{path} is not valid YAML: {e}"),
                format!("fix {path}: k3s refuses to start with it"),
            )
        })
        .collect();
    let restart = "and restart k3s (`systemctl restart k3s` or k3s-agent)";
    out.push(match f.flannel_backend.as_deref() {
        Some("none") => Check::ok("k3s-flannel", "flannel-backend: none"),
        other => Check::fail(
            "k3s-flannel",
            format!(
                "flannel is on (flannel-backend: {}): two CNIs would fight over pod networking",
                other.unwrap_or("vxlan, k3s's default")
            ),
            format!("set `flannel-backend: none` in {DROP_IN} (remove any --flannel-backend from the k3s unit) {restart}"),
        ),
    });
    out.push(if f.disable_kube_proxy {
        Check::ok("k3s-kube-proxy", "disable-kube-proxy: true")
    } else {
        Check::fail(
            "k3s-kube-proxy",
            "kube-proxy is on: its iptables rules and ferrite's eBPF would both translate services",
            format!("set `disable-kube-proxy: true` in {DROP_IN} {restart}"),
        )
    });
    out.push(if f.disable_network_policy {
        Check::ok("k3s-network-policy", "disable-network-policy: true")
    } else {
        Check::fail(
            "k3s-network-policy",
            "k3s's network policy controller is on (kube-router iptables rules)",
            format!("set `disable-network-policy: true` in {DROP_IN} {restart}"),
        )
    });
    out.push(if f.disable.contains("servicelb") {
        Check::ok("k3s-servicelb", "servicelb disabled")
    } else {
        Check::fail(
            "k3s-servicelb",
            "k3s's servicelb (klipper-lb) is on: it would also claim LoadBalancer services",
            format!("add `disable+: [servicelb]` to {DROP_IN} {restart}"),
        )
    });
    out
}

fn cni_dirs(i: &Inputs) -> Check {
    let c = &i.cni;
    match (&c.conf_files, c.bin_dir_exists) {
        (Some(_), true) => Check::ok(
            "cni-dirs",
            format!("conf dir {}, bin dir {}", c.conf_dir, c.bin_dir),
        ),
        (conf, bin) => Check::warn(
            "cni-dirs",
            format!(
                "{}{}",
                if conf.is_none() {
                    format!("{} does not exist; ", c.conf_dir)
                } else {
                    String::new()
                },
                if bin {
                    String::new()
                } else {
                    format!("{} does not exist", c.bin_dir)
                }
            ),
            "nothing needed if k3s has not run yet: the agent creates them and installs the \
             plugin and conflist there; otherwise check containerd's CNI settings",
        ),
    }
}

fn is_cni_config(name: &str) -> bool {
    [".conf", ".conflist", ".json"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn cni_conflists(i: &Inputs) -> Check {
    let Some(files) = &i.cni.conf_files else {
        return Check::ok("cni-conflists", "no CNI conf dir yet");
    };
    let mut others: Vec<&String> = files
        .iter()
        .filter(|f| is_cni_config(f) && f.as_str() != CONFLIST_NAME)
        .collect();
    others.sort();
    let before: Vec<&str> = others
        .iter()
        .filter(|f| f.as_str() < CONFLIST_NAME)
        .map(|f| f.as_str())
        .collect();
    let dir = &i.cni.conf_dir;
    if !before.is_empty() {
        return Check::fail(
            "cni-conflists",
            format!(
                "{} in {dir} sort before {CONFLIST_NAME}: containerd uses the first, so pods \
                 would not get ferrite's network",
                before.join(", ")
            ),
            format!(
                "move them out of the way: `mkdir -p /root/cni-backup && mv {} /root/cni-backup/`",
                before
                    .iter()
                    .map(|f| format!("{dir}/{f}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    }
    if !others.is_empty() {
        let names: Vec<&str> = others.iter().map(|f| f.as_str()).collect();
        return Check::warn(
            "cni-conflists",
            format!(
                "{} in {dir}: unused while {CONFLIST_NAME} sorts first",
                names.join(", ")
            ),
            "remove leftovers of other CNIs (e.g. flannel's 10-flannel.conflist) once ferrite runs",
        );
    }
    Check::ok("cni-conflists", format!("no other CNI config in {dir}"))
}

fn features(i: &Inputs) -> Vec<Check> {
    let Some(probes) = &i.probes else {
        return vec![Check::warn(
            "ebpf-features",
            "not probed: needs root",
            "run `sudo ferrite doctor` to load the probe programs",
        )];
    };
    let mut out = Vec::new();
    for p in probes {
        let f = p.feature;
        if let Some(e) = &p.error {
            out.push(Check::warn(
                "ebpf-features",
                format!("probing {} failed: {e}", f.name()),
                "run as root (CAP_BPF, CAP_SYS_ADMIN, CAP_NET_ADMIN)",
            ));
        } else if !p.available {
            out.push(match f.impact() {
                Impact::Required => Check::fail(
                    "ebpf-features",
                    missing_line(f),
                    "upgrade to a kernel with it (Linux 5.15 or newer)",
                ),
                Impact::Degrades => Check::warn(
                    "ebpf-features",
                    format!("no {} (Linux {}+): {}", f.name(), f.since(), f.without()),
                    format!("nothing needed; Linux {}+ has it", f.since()),
                ),
                Impact::Informational => continue,
            });
        }
    }
    if out.is_empty() {
        out.push(Check::ok(
            "ebpf-features",
            "every eBPF feature ferrite uses is there",
        ));
    }
    out
}

/// Every check, in the order they print.
#[must_use]
pub fn run(i: &Inputs) -> Vec<Check> {
    let mut out = vec![
        kernel(i),
        kernel_config(i),
        btf(i),
        cgroup2(i),
        bpffs(i),
        tc_attach(i),
        memlock(i),
        cgroup_controllers(i),
    ];
    out.extend(features(i));
    out.extend(k3s_checks(i));
    out.push(cni_dirs(i));
    out.push(cni_conflists(i));
    out
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
