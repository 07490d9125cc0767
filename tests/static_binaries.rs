//! The static musl binaries `make static` / `make cross` produce: statically linked, within the
//! size budget, and runnable — the arm64 one under qemu-aarch64-static. `make test` builds both
//! before running this, so a dependency that breaks static linking or cross-compiling fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The budget from DESIGN.md: ≤12 MB stripped, static, per architecture.
const SIZE_BUDGET: u64 = 12 * 1024 * 1024;

fn binary(target: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/{target}/release/ferrite"));
    assert!(
        p.is_file(),
        "{} is missing: run `make cross` (make test does) first",
        p.display()
    );
    p
}

fn file_description(p: &Path) -> String {
    let out = Command::new("file")
        .arg("-b")
        .arg(p)
        .output()
        .unwrap_or_else(|e| panic!("running `file`: {e} (apt-get install file)"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_static(p: &Path, arch_word: &str) {
    let desc = file_description(p);
    assert!(
        desc.contains(arch_word),
        "{}: not {arch_word}: {desc}",
        p.display()
    );
    assert!(
        desc.contains("statically linked") || desc.contains("static-pie linked"),
        "{}: not static: {desc}",
        p.display()
    );
    let size = std::fs::metadata(p).expect("stat binary").len();
    assert!(
        size <= SIZE_BUDGET,
        "{}: {size} bytes exceeds the 12 MB budget",
        p.display()
    );
}

#[test]
fn x86_64_static_binary_runs() {
    let p = binary("x86_64-unknown-linux-musl");
    check_static(&p, "x86-64");
    let out = Command::new(&p)
        .args(["version", "-o", "json"])
        .output()
        .expect("run binary");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version JSON");
    assert_eq!(v["arch"], "x86_64");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn aarch64_static_binary_runs_under_qemu() {
    let p = binary("aarch64-unknown-linux-musl");
    check_static(&p, "ARM aarch64");
    let out = Command::new("qemu-aarch64-static")
        .args([
            p.as_os_str(),
            "version".as_ref(),
            "-o".as_ref(),
            "json".as_ref(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("qemu-aarch64-static: {e} (apt-get install qemu-user-static)"));
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version JSON");
    assert_eq!(v["arch"], "aarch64");
}
