//! Listing the manifest files under a `dir:` root.
//!
//! Entries whose name starts with `.` are skipped at every level (this skips the `..data` and
//! `..2024_...` directories of a mounted `ConfigMap`, whose visible files are symlinks into them).
//! Symlinks to files and directories are followed; a directory reached twice (a symlink loop) is
//! listed once.

use std::{
    collections::{BTreeMap, HashSet},
    fs::{self, Metadata},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use tracing::debug;

/// Extensions of manifest files (compared case-insensitively).
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];
/// How deep below the root directories are listed.
const MAX_DEPTH: usize = 32;
/// Files modified this recently may change again within the same timestamp tick without their
/// fingerprint changing (coarse filesystem clocks), so their content is re-checked.
const RACY_NANOS: i128 = 2_000_000_000;

/// What `stat` says about a file; a change means the file must be read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub mtime_ns: i128,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
}

impl Fingerprint {
    pub fn of(metadata: &Metadata) -> Self {
        Self {
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
            size: metadata.size(),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }

    /// Whether the file was modified so recently (relative to `now_ns`, nanoseconds since the
    /// epoch) that an unchanged fingerprint does not prove unchanged content. A modification time
    /// in the future is not racy: any write moves it back to the present.
    pub fn is_racy(&self, now_ns: i128) -> bool {
        (0..RACY_NANOS).contains(&(now_ns - self.mtime_ns))
    }
}

#[derive(Debug, Default)]
pub struct Listing {
    /// The root does not exist (or a parent of it is not a directory).
    pub root_missing: bool,
    /// Manifest files by full path.
    pub files: BTreeMap<PathBuf, Fingerprint>,
    /// Paths that could not be listed or examined, with the reason. What was known about files at
    /// or under them must be kept: their absence from `files` does not mean they were deleted.
    pub unreadable: BTreeMap<PathBuf, String>,
}

/// Lists `root`: a directory (recursively), or a single file of any name.
pub fn list(root: &Path) -> Listing {
    let mut listing = Listing::default();
    match fs::metadata(root) {
        Err(error) if is_missing(&error) => listing.root_missing = true,
        Err(error) => {
            listing
                .unreadable
                .insert(root.to_owned(), error.to_string());
        }
        Ok(metadata) if metadata.is_dir() => {
            let mut walker = Walker {
                listing: &mut listing,
                visited: HashSet::new(),
            };
            walker.directory(root, &metadata, 0);
        }
        Ok(metadata) => {
            listing
                .files
                .insert(root.to_owned(), Fingerprint::of(&metadata));
        }
    }
    listing
}

fn is_missing(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| {
            EXTENSIONS
                .iter()
                .any(|known| ext.eq_ignore_ascii_case(known))
        })
}

struct Walker<'a> {
    listing: &'a mut Listing,
    /// (device, inode) of directories already listed.
    visited: HashSet<(u64, u64)>,
}

impl Walker<'_> {
    fn directory(&mut self, dir: &Path, metadata: &Metadata, depth: usize) {
        if !self.visited.insert((metadata.dev(), metadata.ino())) {
            debug!(dir = %dir.display(), "directory already listed (symlink loop); skipping");
            return;
        }
        if depth > MAX_DEPTH {
            self.unreadable(
                dir,
                format!("nested more than {MAX_DEPTH} directories deep"),
            );
            return;
        }
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) => return self.unreadable(dir, error.to_string()),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => return self.unreadable(dir, error.to_string()),
            };
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            // `fs::metadata` follows symlinks.
            match fs::metadata(&path) {
                Err(error) if is_missing(&error) => {
                    debug!(path = %path.display(), "skipping dangling symlink or vanished entry");
                }
                Err(error) => self.unreadable(&path, error.to_string()),
                Ok(metadata) if metadata.is_dir() => self.directory(&path, &metadata, depth + 1),
                Ok(metadata) if metadata.is_file() && is_manifest(&path) => {
                    self.listing.files.insert(path, Fingerprint::of(&metadata));
                }
                Ok(_) => {}
            }
        }
    }

    fn unreadable(&mut self, path: &Path, reason: String) {
        self.listing.unreadable.insert(path.to_owned(), reason);
    }
}
