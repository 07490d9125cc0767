//! Compiles the eBPF programs in `bpf/ebpf` (nightly + bpf-linker, through aya-build) so the
//! agent can embed them with `include_bytes_aligned!`.
fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "ferrite-ebpf",
        root_dir: "bpf/ebpf",
        ..Default::default()
    };
    println!("cargo:rerun-if-changed=bpf/abi");
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
