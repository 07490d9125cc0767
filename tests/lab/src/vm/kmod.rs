//! Kernel modules from a kernel package's `lib/modules/RELEASE/kernel/` tree: which files a set of
//! modules needs (the `depends=` of each module's `.modinfo` section, followed transitively) and
//! in which order `insmod` must load them (dependencies first). The package ships no
//! `modules.dep` (depmod writes it at install time), so the dependencies are read from the
//! modules themselves. `.ko.xz` / `.ko.zst` are decompressed with `xz` / `zstd`. A module the
//! kernel has built in (listed in `modules.builtin`, as `virtio_pci` is in Debian's 6.12 cloud
//! kernel) needs no file and is not loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::VmError;
use crate::cmd;

/// Every module file of a tree by module name (`-` and `_` are the same in module names).
#[derive(Debug)]
pub struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
    /// Modules built into the kernel image (`modules.builtin`).
    builtin: BTreeSet<String>,
}

/// The module names of a `modules.builtin` file (`kernel/drivers/virtio/virtio_pci.ko` per line).
fn builtin_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter_map(module_name)
        .collect()
}

/// One module to put into the initramfs.
#[derive(Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Uncompressed `.ko` bytes.
    pub data: Vec<u8>,
}

/// `nf-conntrack` and `nf_conntrack` name the same module.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file: `veth.ko`, `veth.ko.xz` → `veth`.
fn module_name(file: &str) -> Option<String> {
    let stem = file
        .strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
        .or_else(|| file.strip_suffix(".ko.zst"))?;
    Some(canonical(stem))
}

impl ModuleTree {
    /// Indexes `dir` (`.../lib/modules/RELEASE`) recursively.
    pub fn scan(dir: &Path) -> Result<Self, VmError> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            let entries = fs::read_dir(&d).map_err(VmError::io(format!("read {}", d.display())))?;
            for entry in entries {
                let entry = entry.map_err(VmError::io(format!("read {}", d.display())))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .map_err(VmError::io(format!("stat {}", path.display())))?;
                if kind.is_dir() {
                    stack.push(path);
                } else if let Some(name) = entry.file_name().to_str().and_then(module_name) {
                    files.insert(name, path);
                }
            }
        }
        if files.is_empty() {
            return Err(VmError::Missing {
                what: format!("kernel modules under {}", dir.display()),
                hint: "run scripts/fetch-kernels.sh (make setup does)".into(),
            });
        }
        let builtin = fs::read_to_string(dir.join("modules.builtin"))
            .map(|t| builtin_names(&t))
            .unwrap_or_default();
        Ok(Self { files, builtin })
    }

    /// `wanted` and everything they depend on, dependencies before dependents, each once.
    pub fn closure(&self, wanted: &[&str]) -> Result<Vec<Module>, VmError> {
        let mut deps = BTreeMap::new();
        let mut data = BTreeMap::new();
        let roots: Vec<String> = wanted
            .iter()
            .map(|w| canonical(w))
            .filter(|w| !self.builtin.contains(w))
            .collect();
        let mut todo = roots.clone();
        while let Some(name) = todo.pop() {
            if data.contains_key(&name) || self.builtin.contains(&name) {
                continue;
            }
            let path = self.files.get(&name).ok_or_else(|| VmError::Missing {
                what: format!("kernel module {name}"),
                hint: "it must be built as a module (=m) of the kernel package".into(),
            })?;
            let bytes = read_module(path)?;
            let needs = depends(&bytes).map_err(|e| {
                VmError::Other(format!("{}: not a kernel module: {e}", path.display()))
            })?;
            let needs: Vec<String> = needs
                .into_iter()
                .filter(|n| !self.builtin.contains(n))
                .collect();
            todo.extend(needs.iter().cloned());
            deps.insert(name.clone(), needs);
            data.insert(name, bytes);
        }
        Ok(load_order(&roots, &deps)
            .into_iter()
            .map(|name| {
                let data = data.remove(&name).expect("read above");
                Module { name, data }
            })
            .collect())
    }
}

/// Post-order over the dependency graph from `roots`: every module after all it depends on.
fn load_order(roots: &[String], deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    fn visit(
        n: &str,
        deps: &BTreeMap<String, Vec<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(n.to_owned()) {
            return;
        }
        for d in deps.get(n).into_iter().flatten() {
            visit(d, deps, seen, out);
        }
        out.push(n.to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in roots {
        visit(r, deps, &mut seen, &mut out);
    }
    out
}

fn read_module(path: &Path) -> Result<Vec<u8>, VmError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        None => fs::read(path).map_err(VmError::io(format!("read {}", path.display()))),
        Some(tool) => Ok(cmd::run(Command::new(tool).arg("-dc").arg(path))?.stdout),
    }
}

/// The `depends=` list of an ELF64 little-endian module's `.modinfo` section.
fn depends(elf: &[u8]) -> Result<Vec<String>, String> {
    let modinfo = section(elf, ".modinfo")?;
    Ok(modinfo
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|b| *b == b','))
        .filter(|d| !d.is_empty())
        .map(|d| canonical(&String::from_utf8_lossy(d)))
        .collect())
}

fn section<'a>(elf: &'a [u8], wanted: &str) -> Result<&'a [u8], String> {
    let u16_at = |at: usize| -> Result<usize, String> {
        elf.get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| format!("truncated at {at}"))
    };
    let u32_at = |at: usize| -> Result<usize, String> {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| format!("truncated at {at}"))
    };
    let u64_at = |at: usize| -> Result<usize, String> {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| format!("truncated at {at}"))
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not an ELF64 little-endian file".into());
    }
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let header = |i: usize| shoff + i * shentsize;
    let bytes = |i: usize| -> Result<&'a [u8], String> {
        let (off, size) = (u64_at(header(i) + 0x18)?, u64_at(header(i) + 0x20)?);
        elf.get(off..off + size)
            .ok_or_else(|| format!("section {i} out of bounds"))
    };
    let names = bytes(shstrndx)?;
    for i in 0..shnum {
        let at = u32_at(header(i))?;
        let name = names
            .get(at..)
            .and_then(|n| n.split(|b| *b == 0).next())
            .unwrap_or_default();
        if name == wanted.as_bytes() {
            return bytes(i);
        }
    }
    Err(format!("no {wanted} section"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE file with sections: null, .modinfo, .shstrtab.
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = f.len();
        f.extend_from_slice(modinfo);
        let strtab_off = f.len();
        f.extend_from_slice(shstrtab);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, modinfo_off, modinfo.len());
        sh(10, strtab_off, shstrtab.len());
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn depends_come_from_the_modinfo_section() {
        let elf = elf_with_modinfo(b"license=GPL\0depends=stp,llc\0intree=Y\0name=bridge\0");
        assert_eq!(depends(&elf).unwrap(), ["stp", "llc"]);
        let none = elf_with_modinfo(b"depends=\0name=veth\0");
        assert!(depends(&none).unwrap().is_empty());
        assert!(depends(b"not an elf").is_err());
        let mut cut = elf_with_modinfo(b"depends=x\0");
        cut.truncate(100);
        assert!(depends(&cut).is_err());
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let deps: BTreeMap<String, Vec<String>> = [
            ("bridge", vec!["stp", "llc"]),
            ("stp", vec!["llc"]),
            ("llc", vec![]),
            ("veth", vec![]),
            ("virtio_net", vec!["net_failover"]),
            ("net_failover", vec!["failover"]),
            ("failover", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        let roots = ["veth", "bridge", "virtio_net", "llc"].map(str::to_owned);
        assert_eq!(
            load_order(&roots, &deps),
            [
                "veth",
                "llc",
                "stp",
                "bridge",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
    }

    #[test]
    fn builtin_modules_need_no_file() {
        let names = builtin_names(
            "kernel/fs/binfmt_script.ko\nkernel/drivers/virtio/virtio_pci.ko\n\nkernel/x/virtio-ring.ko\n",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["binfmt_script", "virtio_pci", "virtio_ring"]
        );
        let tree = ModuleTree {
            files: BTreeMap::new(),
            builtin: ["virtio_pci".to_owned()].into(),
        };
        assert_eq!(tree.closure(&["virtio-pci"]).unwrap(), []);
        assert!(
            tree.closure(&["veth"]).is_err(),
            "a module neither built in nor on disk"
        );
    }

    #[test]
    fn module_names_ignore_dash_and_compression() {
        assert_eq!(module_name("veth.ko").as_deref(), Some("veth"));
        assert_eq!(
            module_name("virtio-rng.ko.xz").as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(module_name("x.ko.zst").as_deref(), Some("x"));
        assert_eq!(module_name("modules.order"), None);
    }
}
