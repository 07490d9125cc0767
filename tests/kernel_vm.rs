//! ferrite on Debian 12's own 6.1 kernels, x86_64 and arm64, and on Debian's 6.12 (x86_64,
//! Debian 13's kernel line: netkit pod devices), under qemu (TCG): the kernel and
//! its modules from Debian's packages (`scripts/fetch-kernels.sh`), an initramfs of busybox and
//! the static binary of `make cross`, and one node's scenario inside the VM
//! (`tests/lab/src/vm/init.sh`): the shipped agent on a `dir:` folder, a pod through the CNI
//! plugin, a ClusterIP through the socket LB, a NodePort and a LoadBalancer IP from a client
//! netns that resolves the IP by ARP (exactly one answer), the pod device the kernel allows
//! (netkit on 6.12, veth on 6.1) carrying BPF host routing, an open connection that survives an
//! agent restart, and `ferrite doctor`. Run with `make test-kernels`.

use std::path::Path;

use ferrite_lab::vm::{Arch, Line, scenario};

fn run(arch: Arch, line: Line) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vm = scenario::for_workspace(workspace, arch, line).unwrap_or_else(|e| panic!("{e}"));
    let run = vm.run().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{arch} VM on {line} {} (netkit: {}): initramfs {} bytes (built in {:?}, modules {}), qemu ran {:?}",
        vm.kernel.release,
        vm.kernel.netkit,
        run.initramfs_bytes,
        run.build,
        run.modules.join(" "),
        run.elapsed
    );
    for (step, detail) in &run.steps {
        eprintln!("  {step:<10} {detail}");
    }
}

#[test]
fn vm_debian12_x86_64() {
    run(Arch::X86_64, Line::Debian12);
}

#[test]
fn vm_debian12_aarch64() {
    run(Arch::Aarch64, Line::Debian12);
}

/// Debian's 6.12 kernel builds netkit in: the pod is a netkit pair and host routing runs there.
#[test]
fn vm_debian12_linux612_x86_64() {
    run(Arch::X86_64, Line::Linux612);
}
