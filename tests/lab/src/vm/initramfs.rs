//! The VM's initramfs: busybox-static as `/bin/busybox` (applet links are made by `/init`), the
//! static ferrite as `/bin/ferrite`, kernel modules under `/lib/modules/` with their load order
//! in `/etc/ferrite-vm/modules`, the package's `/boot/config-RELEASE`, and the scenario's files. Uncompressed: the kernel unpacks a
//! plain cpio fastest and qemu loads it into guest memory directly.

use std::fs;
use std::path::Path;

use super::cpio::Cpio;
use super::kmod::ModuleTree;
use super::{Kernel, VmError};

/// One file of the scenario: path in the guest, permission bits, contents.
pub type GuestFile = (String, u32, Vec<u8>);

/// Where the module load order goes (one file name under `/lib/modules/` per line).
pub const MODULE_LIST: &str = "etc/ferrite-vm/modules";

/// Directories every boot needs (mount points and the CLI's defaults).
const DIRS: [&str; 14] = [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "root",
    "var/log",
    "var/lib",
    "etc/cni/net.d",
    "opt/cni/bin",
];

/// What went into an initramfs.
#[derive(Debug)]
pub struct Contents {
    pub bytes: u64,
    /// Module names in load order.
    pub modules: Vec<String>,
}

/// Writes the initramfs for `kernel` with `ferrite`, `modules` (and their dependencies) and
/// `files` to `out`.
pub fn write(
    kernel: &Kernel,
    ferrite: &Path,
    modules: &[&str],
    files: &[GuestFile],
    out: &Path,
) -> Result<Contents, VmError> {
    let read = |p: &Path| fs::read(p).map_err(VmError::io(format!("read {}", p.display())));
    let mut c = Cpio::new();
    for d in DIRS {
        c.dir(d);
    }
    // The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
    c.char_dev("dev/console", 5, 1);
    c.file("bin/busybox", 0o755, &read(&kernel.busybox)?);
    c.file("bin/ferrite", 0o755, &read(ferrite)?);
    // What the package installs on a Debian node: `ferrite doctor` reads the kernel config.
    let config = format!("boot/config-{}", kernel.release);
    c.file(&config, 0o644, &read(&kernel.root.join(&config))?);
    let tree = ModuleTree::scan(&kernel.modules)?;
    let loaded = tree.closure(modules)?;
    let mut order = String::new();
    for m in &loaded {
        c.file(&format!("lib/modules/{}.ko", m.name), 0o644, &m.data);
        order.push_str(&m.name);
        order.push_str(".ko\n");
    }
    c.file(MODULE_LIST, 0o644, order.as_bytes());
    for (path, mode, data) in files {
        c.file(path, *mode, data);
    }
    let bytes = c.finish();
    fs::write(out, &bytes).map_err(VmError::io(format!("write {}", out.display())))?;
    Ok(Contents {
        bytes: bytes.len() as u64,
        modules: loaded.into_iter().map(|m| m.name).collect(),
    })
}
