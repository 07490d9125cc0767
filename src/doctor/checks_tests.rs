//! Fixture nodes for the doctor's checks.

use super::super::{CniInputs, Inputs, K3sInputs, Level, Report};
use super::*;
use crate::datapath::probe::{Feature, Probed};

const PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t0\t80\t1
cpu\t0\t80\t1
memory\t0\t80\t1
pids\t0\t80\t1
";

const CONFIG: &str = "CONFIG_BPF_SYSCALL=y
CONFIG_BPF_JIT=y
CONFIG_CGROUP_BPF=y
CONFIG_VETH=m
CONFIG_NET_SCH_INGRESS=m
CONFIG_NET_CLS_BPF=m
CONFIG_DEBUG_INFO_BTF=y
";

const MOUNTS: &str = "sysfs /sys sysfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0
bpf /sys/fs/bpf bpf rw 0 0
";

fn probes(missing: &[Feature]) -> Vec<Probed> {
    Feature::ALL
        .into_iter()
        .map(|feature| Probed {
            feature,
            available: !missing.contains(&feature),
            error: None,
        })
        .collect()
}

/// Debian 12 (6.1) with the deb's k3s drop-in: everything ferrite needs.
fn debian12() -> Inputs {
    Inputs {
        kernel_release: "6.1.0-18-cloud-amd64".into(),
        kernel_config: Some(("/boot/config-6.1.0-18-cloud-amd64".into(), CONFIG.into())),
        btf: true,
        mounts: MOUNTS.into(),
        proc_cgroups: PROC_CGROUPS.into(),
        cmdline: "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet".into(),
        model: None,
        memlock: Some(8 << 20),
        k3s: K3sInputs {
            installed: true,
            config_files: vec![(
                "/etc/rancher/k3s/config.yaml.d/90-ferrite.yaml".into(),
                "flannel-backend: none\ndisable-network-policy: true\n\
                 disable-kube-proxy: true\ndisable+: [servicelb]\n"
                    .into(),
            )],
            unit_commands: vec![(
                "/etc/systemd/system/k3s.service".into(),
                "/usr/local/bin/k3s server".into(),
            )],
        },
        cni: CniInputs {
            conf_dir: "/var/lib/rancher/k3s/agent/etc/cni/net.d".into(),
            conf_files: Some(vec!["05-ferrite.conflist".into()]),
            bin_dir: "/var/lib/rancher/k3s/data/cni".into(),
            bin_dir_exists: true,
        },
        probes: Some(probes(&[Feature::Tcx])),
    }
}

fn find<'a>(checks: &'a [super::super::Check], name: &str) -> &'a super::super::Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[test]
fn a_prepared_debian_12_node_passes_with_legacy_tc() {
    let checks = run(&debian12());
    let r = Report::new(checks.clone());
    assert!(r.ok, "{checks:#?}");
    assert!(find(&checks, "tc-attach").detail.contains("legacy"));
    for c in &checks {
        assert!(c.level != Level::Fail, "{c:?}");
        assert_eq!(
            c.fix.is_some(),
            c.level != Level::Ok,
            "every non-ok check says what to do: {c:?}"
        );
    }
}

#[test]
fn a_raspberry_pi_without_the_memory_cgroup_is_told_to_edit_cmdline_txt() {
    let mut pi = debian12();
    pi.kernel_release = "6.12.25+rpt-rpi-2712".into();
    pi.model = Some("Raspberry Pi 5 Model B Rev 1.0".into());
    pi.proc_cgroups = PROC_CGROUPS.replace("memory\t0\t80\t1", "memory\t0\t80\t0");
    pi.cmdline = "console=serial0,115200 cgroup_disable=memory root=PARTUUID=1 rootwait".into();
    let checks = run(&pi);
    let c = find(&checks, "cgroup-controllers");
    assert_eq!(c.level, Level::Fail);
    assert!(c.detail.contains("memory"), "{c:?}");
    let fix = c.fix.as_deref().unwrap();
    assert!(
        fix.contains("cgroup_enable=memory") && fix.contains("/boot/firmware/cmdline.txt"),
        "{fix}"
    );
    assert!(!Report::new(checks).ok);
    // Not a Pi: the cmdline flag that disables it is named.
    let mut x86 = pi;
    x86.model = None;
    let c = run(&x86);
    let fix = find(&c, "cgroup-controllers").fix.clone().unwrap();
    assert!(fix.contains("cgroup_disable=memory"), "{fix}");
}

#[test]
fn a_kernel_without_btf_warns_but_does_not_block() {
    let mut n = debian12();
    n.btf = false;
    n.probes = Some(probes(&[Feature::Tcx, Feature::Btf]));
    let checks = run(&n);
    let c = find(&checks, "btf");
    assert_eq!(c.level, Level::Warn);
    assert!(c.fix.as_deref().unwrap().contains("CONFIG_DEBUG_INFO_BTF"));
    assert!(Report::new(checks).ok);
}

#[test]
fn k3s_with_flannel_still_on_fails_naming_the_drop_in() {
    let mut n = debian12();
    n.k3s.config_files = vec![(
        "/etc/rancher/k3s/config.yaml".into(),
        "write-kubeconfig-mode: \"0644\"\n".into(),
    )];
    let checks = run(&n);
    for name in [
        "k3s-flannel",
        "k3s-kube-proxy",
        "k3s-network-policy",
        "k3s-servicelb",
    ] {
        let c = find(&checks, name);
        assert_eq!(c.level, Level::Fail, "{c:?}");
        assert!(
            c.fix.as_deref().unwrap().contains("90-ferrite.yaml"),
            "{c:?}"
        );
    }
    assert!(find(&checks, "k3s-flannel").detail.contains("vxlan"));
    // The unit's command line overrides the drop-in.
    let mut n = debian12();
    n.k3s.unit_commands[0].1 =
        "/usr/local/bin/k3s server --flannel-backend=wireguard-native".into();
    let c = run(&n);
    assert!(find(&c, "k3s-flannel").detail.contains("wireguard-native"));
}

#[test]
fn other_cni_conflists_that_sort_before_ours_block() {
    let mut n = debian12();
    n.cni.conf_files = Some(vec![
        "00-multus.conf".into(),
        "05-ferrite.conflist".into(),
        "10-flannel.conflist".into(),
        "README".into(),
    ]);
    let checks = run(&n);
    let c = find(&checks, "cni-conflists");
    assert_eq!(c.level, Level::Fail);
    assert!(
        c.detail.contains("00-multus.conf") && !c.detail.contains("10-flannel"),
        "{c:?}"
    );
    assert!(
        c.fix
            .as_deref()
            .unwrap()
            .contains("/var/lib/rancher/k3s/agent/etc/cni/net.d/00-multus.conf")
    );
    // Only ones that sort after: a warning about leftovers.
    n.cni.conf_files = Some(vec![
        "05-ferrite.conflist".into(),
        "10-flannel.conflist".into(),
    ]);
    let c = run(&n);
    assert_eq!(find(&c, "cni-conflists").level, Level::Warn);
}

#[test]
fn old_kernels_fail_and_5_15_degrades() {
    let mut n = debian12();
    n.kernel_release = "5.10.0-28-amd64".into();
    n.memlock = Some(64 << 10);
    let c = run(&n);
    assert_eq!(find(&c, "kernel").level, Level::Fail);
    assert_eq!(
        find(&c, "memlock").level,
        Level::Fail,
        "before 5.11 memlock counts"
    );
    n.kernel_release = "5.15.0-91-generic".into();
    n.probes = Some(probes(&[
        Feature::Tcx,
        Feature::SetRetval,
        Feature::XdpLoadBytes,
    ]));
    let c = run(&n);
    assert_eq!(find(&c, "kernel").level, Level::Warn);
    assert_eq!(find(&c, "memlock").level, Level::Ok);
    assert!(Report::new(c.clone()).ok, "{c:#?}");
    let degraded: Vec<&str> = c
        .iter()
        .filter(|c| c.name == "ebpf-features")
        .map(|c| c.detail.as_str())
        .collect();
    assert_eq!(degraded.len(), 3, "{degraded:?}");
}

#[test]
fn a_missing_required_feature_or_config_option_blocks() {
    let mut n = debian12();
    n.probes = Some(probes(&[Feature::Tcx, Feature::LpmTrie]));
    let c = run(&n);
    let f = c
        .iter()
        .find(|c| c.name == "ebpf-features" && c.level == Level::Fail)
        .unwrap();
    assert!(f.detail.contains("LPM trie maps (Linux 4.11+)"), "{f:?}");
    let mut n = debian12();
    n.kernel_config = Some((
        "/proc/config.gz".into(),
        CONFIG.replace("CONFIG_NET_CLS_BPF=m\n", ""),
    ));
    let c = find(&run(&n), "kernel-config").clone();
    assert_eq!(c.level, Level::Fail);
    assert!(c.detail.contains("CONFIG_NET_CLS_BPF"), "{c:?}");
    // On 6.6+ (TCX) cls_bpf is not needed.
    n.kernel_release = "6.8.0-45-generic".into();
    assert_eq!(find(&run(&n), "kernel-config").level, Level::Ok);
}

#[test]
fn without_k3s_or_root_the_doctor_says_what_it_could_not_check() {
    let mut n = debian12();
    n.k3s = K3sInputs::default();
    n.probes = None;
    let c = run(&n);
    assert_eq!(find(&c, "k3s").level, Level::Warn);
    assert_eq!(find(&c, "ebpf-features").level, Level::Warn);
    assert!(Report::new(c).ok);
    assert_eq!(kernel_version("6.12.25+rpt-rpi-2712"), Some((6, 12)));
    assert_eq!(kernel_version("garbage"), None);
}
