//! ferrite on Debian 12's own 6.1 kernels, x86_64 and arm64, under qemu (TCG): the kernel and
//! its modules from Debian's packages (`scripts/fetch-kernels.sh`), an initramfs of busybox and
//! the static binary of `make cross`, and one node's scenario inside the VM
//! (`tests/lab/src/vm/init.sh`): the shipped agent on a `dir:` folder, a pod through the CNI
//! plugin, a ClusterIP through the socket LB, a NodePort and a LoadBalancer IP from a client
//! netns that resolves the IP by ARP (exactly one answer), an open connection that survives an
//! agent restart, and `ferrite doctor`. Run with `make test-kernels`.

use std::path::Path;

use ferrite_lab::vm::{Arch, scenario};

fn run(arch: Arch) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vm = scenario::for_workspace(workspace, arch).unwrap_or_else(|e| panic!("{e}"));
    let run = vm.run().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{arch} VM on {}: initramfs {} bytes (built in {:?}, modules {}), qemu ran {:?}",
        vm.kernel.release,
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
    run(Arch::X86_64);
}

#[test]
fn vm_debian12_aarch64() {
    run(Arch::Aarch64);
}
