//! `k3s-addon/crds.yaml` is what `ferrite manifests crds` prints from the Rust CRD types.

use std::process::Command;

#[test]
fn k3s_addon_crds_match_the_generated_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["manifests", "crds"])
        .output()
        .expect("run ferrite manifests crds");
    assert!(out.status.success(), "{out:?}");
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/k3s-addon/crds.yaml");
    let committed = std::fs::read_to_string(path).expect("read k3s-addon/crds.yaml");
    assert!(
        generated == committed,
        "k3s-addon/crds.yaml is out of date: regenerate it with \
         `ferrite manifests crds > k3s-addon/crds.yaml`"
    );
}
