//! Kernel VMs: ferrite on Debian 12's own 6.1 kernels (x86_64 and arm64) and on Debian's 6.12
//! (x86_64: Debian 13's kernel line, the first with netkit) under qemu with TCG.
//!
//! The kernel and its modules come from the Debian package `scripts/fetch-kernels.sh` unpacked
//! under `/var/cache/ferrite-kernels/<arch>[-6.12]/` ([`Kernel`]). [`initramfs`] packs a cpio newc
//! archive ([`cpio`]) of busybox-static, the static ferrite binary, the modules the scenario
//! needs with their dependencies ([`kmod`]), the agent's args exactly as the shipped DaemonSet
//! has them (source and paths rewritten, [`crate::shipped`]), a `dir:` folder with a `Node`
//! for the VM itself, and `/init` ([`scenario`]), which runs one node's scenario across network
//! namespaces and prints `FERRITE-VM:` markers on the serial console. [`qemu`] boots it with two
//! virtio NICs on one qemu hub (the node's LAN NIC and an outside client's, no host network)
//! and returns the console; every path of `/init` ends in a power-off, and the host kills qemu
//! after a deadline too.

pub mod cpio;
pub mod initramfs;
pub mod kmod;
pub mod qemu;
pub mod scenario;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::CommandError;
use crate::shipped::ShippedError;

/// Where `scripts/fetch-kernels.sh` unpacks kernels (`$FERRITE_KERNEL_CACHE` overrides).
pub const DEFAULT_KERNEL_CACHE: &str = "/var/cache/ferrite-kernels";

/// Failure to build or run a VM, or a scenario that did not pass.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A prerequisite is not installed.
    #[error("{what} is missing: {hint}")]
    Missing { what: String, hint: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Shipped(#[from] ShippedError),
    /// qemu ran past the host-side deadline and was killed.
    #[error("the {arch} VM did not power off within {after:?}; console:\n{console}")]
    Timeout {
        arch: Arch,
        after: Duration,
        console: String,
    },
    /// The scenario reported failures or did not report every step.
    #[error("the {arch} VM scenario failed: {reason}; console:\n{console}")]
    Scenario {
        arch: Arch,
        reason: String,
        console: String,
    },
    #[error("{0}")]
    Other(String),
}

impl VmError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> VmError {
        let what = what.into();
        move |source| VmError::Io { what, source }
    }
}

/// The guest architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        })
    }
}

impl Arch {
    /// Debian's name of the architecture.
    #[must_use]
    pub fn deb(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Aarch64 => "arm64",
        }
    }

    /// The musl target `make cross` builds the static binary for.
    #[must_use]
    pub fn musl_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-musl",
            Self::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The qemu system emulator and the Debian package that has it.
    #[must_use]
    pub fn qemu(self) -> (&'static str, &'static str) {
        match self {
            Self::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Self::Aarch64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// The serial console device of the guest.
    #[must_use]
    pub fn console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            Self::Aarch64 => "ttyAMA0",
        }
    }
}

/// Which of Debian's kernel lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    /// Debian 12's own 6.1.
    Debian12,
    /// 6.12, Debian 13's kernel line as Debian 12 carries it (`linux-image-6.12-cloud-amd64`).
    Linux612,
}

impl Line {
    /// The cache folder of `arch`'s kernel of this line, as `scripts/fetch-kernels.sh` names it
    /// (also its argument).
    #[must_use]
    pub fn cache_dir(self, arch: Arch) -> String {
        match self {
            Self::Debian12 => arch.deb().to_owned(),
            Self::Linux612 => format!("{}-6.12", arch.deb()),
        }
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Debian12 => "Debian 12's 6.1",
            Self::Linux612 => "Debian's 6.12",
        })
    }
}

/// A kernel package unpacked by `scripts/fetch-kernels.sh`.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub arch: Arch,
    pub line: Line,
    /// `uname -r`, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    /// The unpacked package (`boot/`, `lib/modules/`).
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    /// `lib/modules/RELEASE`.
    pub modules: PathBuf,
    /// A static busybox for the guest architecture.
    pub busybox: PathBuf,
    /// The package's config builds netkit in (`CONFIG_NETKIT=y`): the CNI plugin's
    /// `podDevice: auto` must make netkit pairs there.
    pub netkit: bool,
}

impl Kernel {
    /// The cached kernel of `arch` and `line`, or [`VmError::Missing`] naming what to run.
    pub fn cached(arch: Arch, line: Line) -> Result<Self, VmError> {
        let cache = std::env::var_os("FERRITE_KERNEL_CACHE")
            .map_or_else(|| PathBuf::from(DEFAULT_KERNEL_CACHE), PathBuf::from);
        Self::in_cache(&cache, arch, line)
    }

    /// The kernel of `arch` and `line` under `cache`.
    pub fn in_cache(cache: &Path, arch: Arch, line: Line) -> Result<Self, VmError> {
        let dir = cache.join(line.cache_dir(arch));
        let fetch = format!(
            "run `scripts/fetch-kernels.sh {}` (make setup does; it needs apt-get and dpkg-deb)",
            line.cache_dir(arch)
        );
        let missing = |what: String| VmError::Missing {
            what,
            hint: fetch.clone(),
        };
        let release = std::fs::read_to_string(dir.join("release"))
            .map(|s| s.trim().to_owned())
            .map_err(|_| missing(format!("{line} {} kernel ({})", arch.deb(), dir.display())))?;
        let root = dir.join("root");
        let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
        let modules = root.join(format!("lib/modules/{release}"));
        for p in [&vmlinuz, &modules] {
            if !p.exists() {
                return Err(missing(p.display().to_string()));
            }
        }
        let busybox = match arch {
            Arch::X86_64 => PathBuf::from("/bin/busybox"),
            Arch::Aarch64 => dir.join("busybox"),
        };
        if !busybox.is_file() {
            return Err(match arch {
                Arch::X86_64 => VmError::Missing {
                    what: "/bin/busybox".into(),
                    hint: "apt-get install busybox-static (make setup does)".into(),
                },
                Arch::Aarch64 => missing(format!("arm64 busybox ({})", busybox.display())),
            });
        }
        let config = std::fs::read_to_string(root.join(format!("boot/config-{release}")))
            .map_err(|_| missing(format!("boot/config-{release} in {}", root.display())))?;
        Ok(Self {
            arch,
            line,
            netkit: config.lines().any(|l| l.trim() == "CONFIG_NETKIT=y"),
            release,
            root,
            vmlinuz,
            modules,
            busybox,
        })
    }
}

/// The static ferrite binary `make cross` built for `arch` under `workspace`'s target dir.
pub fn static_ferrite(workspace: &Path, arch: Arch) -> Result<PathBuf, VmError> {
    let p = workspace.join(format!("target/{}/release/ferrite", arch.musl_target()));
    if p.is_file() {
        Ok(p)
    } else {
        Err(VmError::Missing {
            what: p.display().to_string(),
            hint: "run `make cross` (make test and make test-kernels do)".into(),
        })
    }
}
