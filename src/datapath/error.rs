use std::path::PathBuf;

/// Datapath failures, each naming the file, map or program involved.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the eBPF object (maps pinned under {pin_dir}): {source}")]
    Load {
        pin_dir: PathBuf,
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF program {name} is missing from the embedded object")]
    MissingProgram { name: &'static str },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("map {name} is missing from the embedded object")]
    MissingMap { name: &'static str },
    #[error("pinning link {path}: {source}")]
    Pin {
        path: PathBuf,
        source: Box<aya::pin::PinError>,
    },
    #[error("link {path}: {source}")]
    Link {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted and mounting one at {path} failed: {source}")]
    NoCgroup2 {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mounting bpffs at {path}: {source} (is the kernel built with CONFIG_BPF_SYSCALL?)")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl DatapathError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
