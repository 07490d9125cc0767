//! Booting a kernel + initramfs under qemu with TCG: no disk, no host network — two virtio NICs
//! on one qemu hub (the node's LAN NIC and the outside client's), the serial console into a
//! file. The guest powers off at the end of `/init` (`-no-reboot` turns a reboot or a panic into
//! an exit too); the host kills qemu at the deadline.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Arch, Kernel, VmError};
use crate::child::Child;

/// MAC addresses of the two NICs: the node's (`52:54:00:60:00:01`) and the client's.
pub const NODE_MAC: &str = "52:54:00:60:00:01";
pub const CLIENT_MAC: &str = "52:54:00:60:00:0a";

/// One finished boot.
#[derive(Debug)]
pub struct Boot {
    /// Everything the guest wrote to its serial console.
    pub console: String,
    /// From spawning qemu to its exit.
    pub elapsed: Duration,
}

/// The qemu command line for `kernel` with `initrd`, console into `console`.
#[must_use]
pub fn command(kernel: &Kernel, initrd: &Path, console: &Path, memory_mb: u32) -> Command {
    let (program, _) = kernel.arch.qemu();
    let mut c = Command::new(program);
    match kernel.arch {
        Arch::X86_64 => c.args(["-M", "pc", "-cpu", "qemu64"]),
        Arch::Aarch64 => c.args(["-M", "virt", "-cpu", "cortex-a72"]),
    };
    c.args(["-accel", "tcg", "-smp", "2"])
        .args(["-m", &memory_mb.to_string()])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-chardev")
        .arg(format!("file,id=console,path={}", console.display()))
        .args(["-serial", "chardev:console"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 quiet rdinit=/init",
            kernel.arch.console()
        ));
    for (id, mac) in [("lan0", NODE_MAC), ("lan1", CLIENT_MAC)] {
        c.arg("-netdev")
            .arg(format!("hubport,id={id},hubid=0"))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev={id},mac={mac}"));
    }
    c
}

/// Boots and waits for qemu to exit, at most `deadline`.
pub fn boot(
    kernel: &Kernel,
    initrd: &Path,
    work: &Path,
    memory_mb: u32,
    deadline: Duration,
) -> Result<Boot, VmError> {
    let (program, package) = kernel.arch.qemu();
    let console = work.join("console.log");
    let qemu_log = work.join("qemu.log");
    let _ = fs::remove_file(&console);
    let log = fs::File::create(&qemu_log)
        .map_err(VmError::io(format!("create {}", qemu_log.display())))?;
    let log_err = log.try_clone().map_err(VmError::io("dup the qemu log"))?;
    let mut cmd = command(kernel, initrd, &console, memory_mb);
    cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
    let start = Instant::now();
    let mut child = Child::spawn(&mut cmd).map_err(|e| match e {
        crate::cmd::CommandError::NotFound { .. } => VmError::Missing {
            what: program.to_owned(),
            hint: format!("apt-get install {package} (make setup does)"),
        },
        other => other.into(),
    })?;
    let status = child
        .wait_timeout(deadline)
        .map_err(|e| VmError::Other(e.to_string()))?;
    let elapsed = start.elapsed();
    if status.is_none() {
        let _ = child.kill();
    }
    let console_text = read_lossy(&console);
    match status {
        None => Err(VmError::Timeout {
            arch: kernel.arch,
            after: deadline,
            console: console_text,
        }),
        Some(s) if !s.success() => Err(VmError::Other(format!(
            "{program} exited with {s}: {}\nconsole:\n{console_text}",
            read_lossy(&qemu_log).trim()
        ))),
        Some(_) => Ok(Boot {
            console: console_text,
            elapsed,
        }),
    }
}

/// The file as text without carriage returns and ANSI colour sequences (the agent's log, shown
/// on the console on failure, is coloured).
fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| strip_ansi(&String::from_utf8_lossy(&b).replace('\r', "")))
        .unwrap_or_default()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in @..~
            if chars.next() == Some('[') {
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn colour_sequences_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
            "2026  INFO x"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
