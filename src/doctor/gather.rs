//! Reading the node into [`Inputs`] (the only IO of `ferrite doctor`; nothing is changed and
//! no API server is contacted).

use std::path::{Path, PathBuf};

use super::{CniInputs, Inputs, K3sInputs};

const K3S_CONFIG: &str = "/etc/rancher/k3s/config.yaml";
const K3S_CONFIG_D: &str = "/etc/rancher/k3s/config.yaml.d";
const K3S_UNITS: [&str; 4] = [
    "/etc/systemd/system/k3s.service",
    "/etc/systemd/system/k3s-agent.service",
    "/lib/systemd/system/k3s.service",
    "/usr/lib/systemd/system/k3s.service",
];
const K3S_BINARY: &str = "/usr/local/bin/k3s";

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The gzip member's deflate payload, inflated (RFC 1952 header: magic, method 8, flags).
fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    const FHCRC: u8 = 2;
    if data.len() < 18 || data[..3] != [0x1f, 0x8b, 8] {
        return None;
    }
    let flags = data[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([*data.get(at)?, *data.get(at + 1)?]));
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += data.get(at..)?.iter().position(|b| *b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    miniz_oxide::inflate::decompress_to_vec(data.get(at..)?).ok()
}

fn kernel_config(release: &str) -> Option<(String, String)> {
    if let Some(text) = std::fs::read("/proc/config.gz")
        .ok()
        .and_then(|gz| gunzip(&gz))
        .and_then(|raw| String::from_utf8(raw).ok())
    {
        return Some(("/proc/config.gz".into(), text));
    }
    let boot = format!("/boot/config-{release}");
    read(&boot).map(|t| (boot, t))
}

fn memlock() -> Option<u64> {
    // SAFETY: all-zero is a valid rlimit.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit fills the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut r) };
    (rc == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

fn k3s() -> K3sInputs {
    let mut config_files = Vec::new();
    if let Some(t) = read(K3S_CONFIG) {
        config_files.push((K3S_CONFIG.to_owned(), t));
    }
    let mut drop_ins: Vec<PathBuf> = std::fs::read_dir(K3S_CONFIG_D)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect()
        })
        .unwrap_or_default();
    drop_ins.sort();
    for p in drop_ins {
        if let Some(t) = read(&p) {
            config_files.push((p.display().to_string(), t));
        }
    }
    let mut unit_commands = Vec::new();
    for unit in K3S_UNITS {
        let Some(text) = read(unit) else { continue };
        // ExecStart may continue over backslash-newlines.
        let joined = text.replace("\\\n", " ");
        if let Some(line) = joined
            .lines()
            .find_map(|l| l.trim().strip_prefix("ExecStart="))
        {
            unit_commands.push((unit.to_owned(), line.to_owned()));
        }
    }
    let installed = !config_files.is_empty()
        || !unit_commands.is_empty()
        || Path::new(K3S_BINARY).exists()
        || Path::new(crate::cni::install::K3S_AGENT_DIR).is_dir();
    K3sInputs {
        installed,
        config_files,
        unit_commands,
    }
}

fn cni(conf: Option<PathBuf>, bin: Option<PathBuf>) -> CniInputs {
    let containerd =
        crate::cni::containerd::read(Path::new(crate::cni::containerd::K3S_CONTAINERD_CONFIG))
            .ok()
            .flatten();
    let (conf_dir, bin_dir) = crate::cni::install::detect_dirs(conf, bin, containerd, Path::is_dir);
    let conf_files = std::fs::read_dir(&conf_dir).ok().map(|d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    });
    CniInputs {
        conf_dir: conf_dir.display().to_string(),
        conf_files,
        bin_dir_exists: bin_dir.is_dir(),
        bin_dir: bin_dir.display().to_string(),
    }
}

/// Reads this node. `probe`: also load the eBPF probe programs (root only).
#[must_use]
pub fn gather(cni_conf_dir: Option<PathBuf>, cni_bin_dir: Option<PathBuf>, probe: bool) -> Inputs {
    let kernel_release = read("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Inputs {
        kernel_config: kernel_config(&kernel_release),
        kernel_release,
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        mounts: read("/proc/mounts").unwrap_or_default(),
        proc_cgroups: read("/proc/cgroups").unwrap_or_default(),
        cmdline: read("/proc/cmdline").unwrap_or_default(),
        model: read("/proc/device-tree/model").map(|m| m.trim_end_matches('\0').to_owned()),
        memlock: memlock(),
        k3s: k3s(),
        cni: cni(cni_conf_dir, cni_bin_dir),
        probes: probe.then(crate::datapath::probe::probe_kernel),
    }
}

#[cfg(test)]
mod tests {
    use super::gunzip;

    #[test]
    fn gunzip_reads_a_gzip_member_with_a_file_name() {
        // `printf 'CONFIG_BPF=y\n' | gzip -n` with FNAME "config" set by hand.
        let deflated = miniz_oxide::deflate::compress_to_vec(b"CONFIG_BPF=y\n", 6);
        let mut gz = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(b"config\0");
        gz.extend_from_slice(&deflated);
        gz.extend_from_slice(&[0; 8]);
        assert_eq!(gunzip(&gz).as_deref(), Some(&b"CONFIG_BPF=y\n"[..]));
        assert_eq!(gunzip(b"not gzip at all, not at all"), None);
    }
}
