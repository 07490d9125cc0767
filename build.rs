//! Compiles the eBPF programs in `bpf/ebpf` (nightly + bpf-linker, through aya-build) so the
//! agent can embed them with `include_bytes_aligned!`.
//!
//! The objects are built with full debug info because bpf-linker derives their BTF from it; the
//! loader needs `.BTF`/`.BTF.ext` but never the DWARF `.debug_*` sections, which are ~80 % of
//! each object. Every embedded object is stripped of them here (`llvm-objcopy --strip-debug`
//! keeps `.BTF` and `.BTF.ext`), which takes ~1.4 MB off the static binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The `[[bin]]` objects of `bpf/ebpf`, as `src/datapath/mod.rs` embeds them.
const OBJECTS: [&str; 8] = [
    "ferrite-host",
    "ferrite-xdp",
    "ferrite-l2",
    "ferrite-sock",
    "ferrite-pod",
    "ferrite-tunnel",
    "ferrite-podeg",
    "ferrite-podnk",
];

fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "ferrite-ebpf",
        root_dir: "bpf/ebpf",
        ..Default::default()
    };
    println!("cargo:rerun-if-changed=bpf/abi");
    aya_build::build_ebpf([package], aya_build::Toolchain::default())?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR is not set")?);
    let objcopy = find_objcopy()?;
    for name in OBJECTS {
        strip_debug(&objcopy, &out_dir.join(name))?;
    }
    Ok(())
}

/// `llvm-objcopy` of the LLVM the toolchain pins (DESIGN.md: LLVM 22), on PATH or where Debian
/// installs it.
fn find_objcopy() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("llvm-objcopy"),
        PathBuf::from("llvm-objcopy-22"),
        PathBuf::from("/usr/lib/llvm-22/bin/llvm-objcopy"),
    ];
    for candidate in candidates {
        if Command::new(&candidate)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
        {
            return Ok(candidate);
        }
    }
    bail!("llvm-objcopy not found (install llvm-22: `make setup` does) to strip the eBPF objects")
}

/// Replaces `object` with a copy without DWARF. The copy is written beside it and renamed over
/// it, so the hard link aya-build made to its own target directory keeps the unstripped object.
fn strip_debug(objcopy: &Path, object: &Path) -> anyhow::Result<()> {
    let stripped = object.with_extension("stripped");
    let status = Command::new(objcopy)
        .arg("--strip-debug")
        .arg(object)
        .arg(&stripped)
        .status()
        .with_context(|| format!("running {} on {}", objcopy.display(), object.display()))?;
    if !status.success() {
        bail!(
            "{} --strip-debug {} failed: {status}",
            objcopy.display(),
            object.display()
        );
    }
    std::fs::rename(&stripped, object)
        .with_context(|| format!("renaming {} to {}", stripped.display(), object.display()))
}
