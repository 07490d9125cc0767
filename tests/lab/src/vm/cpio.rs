//! A cpio archive in the "newc" format (`070701`), the format the kernel unpacks an initramfs
//! from: directories, regular files, symlinks and device nodes, parents always before their
//! children.

use std::collections::BTreeSet;

/// `S_IFDIR`, `S_IFREG`, `S_IFLNK`.
const DIR: u32 = 0o040_000;
const REG: u32 = 0o100_000;
const LNK: u32 = 0o120_000;
const CHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

/// An archive being written in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (and its missing parents), mode 0755.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, DIR | 0o755, 2, &[]);
        self.dirs.insert(path.to_owned());
    }

    /// A regular file with permission bits `perm` (e.g. `0o755`); parents are created.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        self.parent(path);
        self.entry(path, REG | (perm & 0o7777), 1, data);
    }

    /// A symlink `path` → `target`; parents are created.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/');
        self.parent(path);
        self.entry(path, LNK | 0o777, 1, target.as_bytes());
    }

    /// A character device node (e.g. `dev/console`, 5:1), mode 0600; parents are created.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        let path = path.trim_start_matches('/');
        self.parent(path);
        self.entry_with_rdev(path, CHR | 0o600, 1, &[], (major, minor));
    }

    /// The archive with its trailer.
    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, 1, &[]);
        self.buf
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) {
        self.entry_with_rdev(name, mode, nlink, data, (0, 0));
    }

    fn entry_with_rdev(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        data: &[u8],
        (rmajor, rminor): (u32, u32),
    ) {
        let ino = if name == TRAILER {
            0
        } else {
            self.next_ino += 1;
            self.next_ino
        };
        let size = u32::try_from(data.len()).expect("initramfs entries are < 4 GiB");
        let namesize = u32::try_from(name.len() + 1).expect("short names");
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, namesize, 0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// Header + name and the data are each padded to 4 bytes.
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_nodes_carry_their_numbers() {
        let mut c = Cpio::new();
        c.char_dev("dev/console", 5, 1);
        let buf = c.finish();
        // The second entry (after `dev`): rdevmajor and rdevminor are fields 9 and 10.
        // The first header (110 bytes) + "dev\0", padded to 4: the second starts at 116.
        let at = 116;
        assert_eq!(&buf[at + 6 + 9 * 8..at + 6 + 11 * 8], b"0000000500000001");
        assert_eq!(parse(&buf)[1].1, CHR | 0o600);
    }

    /// (name, mode, data) of every entry, read back the way the kernel's unpacker does.
    fn parse(buf: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let field = |at: usize, i: usize| {
            let s = std::str::from_utf8(&buf[at + 6 + i * 8..at + 14 + i * 8]).unwrap();
            usize::from_str_radix(s, 16).unwrap()
        };
        let align = |n: usize| n.div_ceil(4) * 4;
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&buf[at..at + 6], b"070701", "magic at {at}");
            let (mode, size, namesize) = (field(at, 1), field(at, 6), field(at, 11));
            let name = std::str::from_utf8(&buf[at + 110..at + 110 + namesize - 1])
                .unwrap()
                .to_owned();
            assert_eq!(buf[at + 110 + namesize - 1], 0, "NUL after the name");
            let data_at = align(at + 110 + namesize);
            let data = buf[data_at..data_at + size].to_vec();
            at = align(data_at + size);
            if name == TRAILER {
                assert_eq!(at, buf.len(), "nothing after the trailer");
                return out;
            }
            out.push((name, u32::try_from(mode).unwrap(), data));
        }
    }

    #[test]
    fn entries_round_trip_with_parents_first() {
        let mut c = Cpio::new();
        c.file("/bin/busybox", 0o755, b"\x7fELF...");
        c.symlink("bin/sh", "busybox");
        c.file("etc/ferrite-vm/manifests/a.yaml", 0o644, b"kind: Node\n");
        c.dir("proc");
        c.dir("bin");
        let entries = parse(&c.finish());
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "etc",
                "etc/ferrite-vm",
                "etc/ferrite-vm/manifests",
                "etc/ferrite-vm/manifests/a.yaml",
                "proc"
            ]
        );
        assert_eq!(entries[0].1, DIR | 0o755);
        assert_eq!(
            entries[1],
            ("bin/busybox".into(), REG | 0o755, b"\x7fELF...".to_vec())
        );
        assert_eq!(
            entries[2],
            ("bin/sh".into(), LNK | 0o777, b"busybox".to_vec())
        );
        assert_eq!(entries[6].2, b"kind: Node\n");
    }

    #[test]
    fn headers_and_data_are_four_byte_aligned() {
        for len in 0..9 {
            let mut c = Cpio::new();
            c.file("x", 0o644, &vec![b'a'; len]);
            let buf = c.finish();
            assert!(buf.len().is_multiple_of(4));
            assert_eq!(parse(&buf)[0].2.len(), len);
        }
    }
}
