//! Every checked-in file of `k3s-addon/` is what `ferrite manifests` prints from the Rust types:
//! `crds.yaml` (the CRDs), `ferrite.yaml` (the whole addon: CRDs, RBAC, DaemonSet) and
//! `servicemonitor.yaml` (the Prometheus Operator's ServiceMonitor for the agents' metrics).

use std::process::Command;

fn generated(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(args)
        .output()
        .expect("run ferrite manifests");
    assert!(out.status.success(), "ferrite {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn assert_checked_in(file: &str, args: &[&str]) {
    let path = format!("{}/k3s-addon/{file}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert!(
        generated(args) == committed,
        "k3s-addon/{file} is out of date: regenerate it with `ferrite {} > k3s-addon/{file}`",
        args.join(" ")
    );
}

#[test]
fn k3s_addon_crds_match_the_generated_crds() {
    assert_checked_in("crds.yaml", &["manifests", "crds"]);
}

#[test]
fn k3s_addon_manifest_matches_the_generated_addon() {
    assert_checked_in("ferrite.yaml", &["manifests", "all"]);
}

#[test]
fn k3s_addon_service_monitor_matches_the_generated_one() {
    assert_checked_in("servicemonitor.yaml", &["manifests", "servicemonitor"]);
}

#[test]
fn every_checked_in_addon_file_is_generated() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/k3s-addon");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("k3s-addon/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["crds.yaml", "ferrite.yaml", "servicemonitor.yaml"],
        "a file in k3s-addon/ that no test compares with `ferrite manifests`"
    );
}
