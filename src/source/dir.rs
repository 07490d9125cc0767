//! The `dir:PATH` source: every `*.yaml`, `*.yml` and `*.json` file under a folder, polled for
//! changes.
//!
//! Each file is parsed on its own and is atomic: when it becomes invalid, the objects it last held
//! stay in force and the problem is logged once (and reported by [`DirSource::errors`]) until the
//! file changes. Unchanged files are not read again: a file is re-read when its fingerprint
//! (mtime, size, inode, device) changes, or while its mtime is too recent to trust.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    hash::{DefaultHasher, Hasher},
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Serialize, Serializer};
use tokio::{sync::watch, time::MissedTickBehavior};
use tracing::{debug, error, info, warn};

use super::{
    manifest::{self, ParseError},
    merge,
    objects::{Object, ObjectKey},
    walk::{self, Fingerprint},
};
use crate::model::Snapshot;

/// Files larger than this are rejected without being read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Files larger than this are parsed on a thread of their own, given [`PARSE_TIMEOUT`].
const INLINE_PARSE_BYTES: usize = 64 << 10;
/// Longest a file's parse may hold up the scan: past it the file is reported and the other files
/// are applied (the abandoned parse ends on its own; its result is dropped and the file is read
/// again when it changes).
pub const PARSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lower bound for the polling interval given to [`DirSource::run`].
const MIN_POLL: Duration = Duration::from_millis(10);

/// A file (or directory) the source could not use, for the API to show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileError {
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// What is wrong, without the path (e.g. `document 2 (Service web): spec.ports[0].port is
    /// required`).
    pub message: String,
}

fn serialize_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&path.display())
}

/// The source's current [`FileError`]s, readable from other tasks
/// (see [`DirSource::error_handle`]).
#[derive(Clone, Debug)]
pub struct ErrorHandle {
    rx: watch::Receiver<Vec<FileError>>,
}

impl ErrorHandle {
    /// A handle on another source's errors (the `kube` source reports in the same shape).
    pub(super) fn from_receiver(rx: watch::Receiver<Vec<FileError>>) -> Self {
        Self { rx }
    }

    /// The errors as of the latest scan (empty when all is well).
    pub fn current(&self) -> Vec<FileError> {
        self.rx.borrow().clone()
    }
}

/// Why a file's content was not taken.
#[derive(Debug, thiserror::Error)]
enum FileProblem {
    #[error("cannot read: {0}")]
    Read(io::Error),
    #[error("file is {size} bytes; manifests are limited to {MAX_FILE_BYTES} bytes")]
    TooLarge { size: u64 },
    #[error("not UTF-8 text: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("{}", .0.message())]
    Parse(ParseError),
    #[error(
        "not parsed within {} s; abandoned until the file changes",
        PARSE_TIMEOUT.as_secs()
    )]
    Timeout,
    #[error("cannot start a parser thread: {0}")]
    Thread(io::Error),
}

#[derive(Debug)]
struct FileState {
    fingerprint: Fingerprint,
    /// Hash of the content last read; `None` until the file has been read, and after a read error
    /// (so that the file is retried on every scan).
    content_hash: Option<u64>,
    /// The objects of the last content that parsed.
    objects: Vec<Object>,
    /// Why the current content was rejected.
    error: Option<String>,
}

/// The `dir:` source. Its errors are available from [`DirSource::errors`] and, from other tasks,
/// through an [`ErrorHandle`].
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Directories (or files) that could not be listed, with the reason.
    unreadable: BTreeMap<PathBuf, String>,
    root_missing: bool,
    snapshot: Snapshot,
    /// Objects defined more than once (warned about once).
    duplicates: BTreeSet<ObjectKey>,
    errors_tx: watch::Sender<Vec<FileError>>,
}

impl DirSource {
    /// A source reading `root`, a directory (or a single manifest file). Nothing is read until
    /// [`rescan`](Self::rescan) or [`run`](Self::run).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            files: BTreeMap::new(),
            unreadable: BTreeMap::new(),
            root_missing: false,
            snapshot: Snapshot::default(),
            duplicates: BTreeSet::new(),
            errors_tx: watch::Sender::new(Vec::new()),
        }
    }

    /// Looks at every file again, reads and parses the changed ones, and returns whether the merged
    /// snapshot changed.
    pub fn rescan(&mut self) -> bool {
        let listing = walk::list(&self.root);
        self.note_root(listing.root_missing);
        self.note_unreadable(listing.unreadable);

        let mut objects_changed = false;
        let unreadable = &self.unreadable;
        self.files.retain(|path, state| {
            let keep = listing.files.contains_key(path)
                || unreadable.keys().any(|dir| path.starts_with(dir));
            if !keep {
                debug!(file = %path.display(), objects = state.objects.len(), "manifest removed");
                objects_changed |= !state.objects.is_empty();
            }
            keep
        });
        let now = now_ns();
        for (path, fingerprint) in listing.files {
            objects_changed |= self.refresh(&path, fingerprint, now);
        }

        let changed = objects_changed && self.merge();
        self.publish_errors();
        changed
    }

    /// Everything the folder currently defines (each file's last good content, merged).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }

    /// Files rejected in their current state, unreadable directories, and a missing root; sorted by
    /// path.
    pub fn errors(&self) -> Vec<FileError> {
        let mut errors = Vec::new();
        if self.root_missing {
            errors.push(FileError {
                path: self.root.clone(),
                message: "does not exist (treated as empty until it appears)".into(),
            });
        }
        errors.extend(self.unreadable.iter().map(|(path, reason)| FileError {
            path: path.clone(),
            message: reason.clone(),
        }));
        errors.extend(self.files.iter().filter_map(|(path, state)| {
            let message = state.error.clone()?;
            Some(FileError {
                path: path.clone(),
                message,
            })
        }));
        errors.sort_by(|a, b| a.path.cmp(&b.path));
        errors
    }

    /// A handle on [`errors`](Self::errors) as of the latest scan, also while [`run`](Self::run)
    /// owns the source. Take it before calling `run`.
    pub fn error_handle(&self) -> ErrorHandle {
        ErrorHandle {
            rx: self.errors_tx.subscribe(),
        }
    }

    /// Scans now and then every `poll`, sending the snapshot after the first scan and after every
    /// scan that changed it. Scans run on tokio's blocking pool. Returns when every receiver of
    /// `tx` is gone.
    pub async fn run(mut self, tx: watch::Sender<Arc<Snapshot>>, poll: Duration) {
        let root = self.root.clone();
        let mut ticker = tokio::time::interval(poll.max(MIN_POLL));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tokio::select! {
                biased;
                () = tx.closed() => break,
                _ = ticker.tick() => {}
            }
            let scan = tokio::task::spawn_blocking(move || {
                let changed = self.rescan();
                (self, changed)
            });
            let changed;
            (self, changed) = match scan.await {
                Ok(done) => done,
                Err(join_error) => {
                    error!(
                        root = %root.display(),
                        error = %join_error,
                        "manifest scan failed; the dir source stops"
                    );
                    return;
                }
            };
            if changed || first {
                first = false;
                let snapshot = self.snapshot();
                debug!(
                    services = snapshot.services.len(),
                    endpoint_slices = snapshot.endpoint_slices.len(),
                    "publishing snapshot"
                );
                tx.send_replace(Arc::new(snapshot));
            }
        }
        debug!(root = %root.display(), "no snapshot receivers left; the dir source stops");
    }

    /// Reads `path` if it may have changed; returns whether its objects changed.
    fn refresh(&mut self, path: &Path, fingerprint: Fingerprint, now_ns: i128) -> bool {
        if let Some(state) = self.files.get(path)
            && state.fingerprint == fingerprint
            && state.content_hash.is_some()
            && !fingerprint.is_racy(now_ns)
        {
            return false;
        }
        if fingerprint.size > MAX_FILE_BYTES {
            let problem = FileProblem::TooLarge {
                size: fingerprint.size,
            };
            return self.record(path, fingerprint, None, Err(problem));
        }
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // Deleted between listing and reading.
                return self
                    .files
                    .remove(path)
                    .is_some_and(|state| !state.objects.is_empty());
            }
            Err(error) => {
                return self.record(path, fingerprint, None, Err(FileProblem::Read(error)));
            }
        };
        let hash = content_hash(&bytes);
        if let Some(state) = self.files.get_mut(path)
            && state.content_hash == Some(hash)
        {
            state.fingerprint = fingerprint;
            return false;
        }
        let result = match String::from_utf8(bytes) {
            Ok(text) => parse_in_time(path, text),
            Err(error) => Err(FileProblem::NotUtf8(error.utf8_error())),
        };
        self.record(path, fingerprint, Some(hash), result)
    }

    /// Stores the outcome of reading a file; returns whether its objects changed.
    fn record(
        &mut self,
        path: &Path,
        fingerprint: Fingerprint,
        content_hash: Option<u64>,
        result: Result<Vec<Object>, FileProblem>,
    ) -> bool {
        let state = self
            .files
            .entry(path.to_owned())
            .or_insert_with(|| FileState {
                fingerprint,
                content_hash: None,
                objects: Vec::new(),
                error: None,
            });
        state.fingerprint = fingerprint;
        state.content_hash = content_hash;
        match result {
            Ok(objects) => {
                if state.error.take().is_some() {
                    info!(
                        file = %path.display(),
                        objects = objects.len(),
                        "manifest accepted again"
                    );
                } else {
                    debug!(file = %path.display(), objects = objects.len(), "manifest read");
                }
                let changed = state.objects != objects;
                state.objects = objects;
                changed
            }
            Err(problem) => {
                let message = problem.to_string();
                if state.error.as_ref() != Some(&message) {
                    warn!(
                        file = %path.display(),
                        kept_objects = state.objects.len(),
                        "rejected manifest: {message}; keeping its last good content",
                    );
                }
                state.error = Some(message);
                false
            }
        }
    }

    /// Rebuilds the merged snapshot; returns whether it changed.
    fn merge(&mut self) -> bool {
        let merged = merge::merge(
            self.files
                .iter()
                .map(|(path, state)| (path.as_path(), state.objects.as_slice())),
        );
        for (key, duplicate) in &merged.duplicates {
            if !self.duplicates.contains(key) {
                let (kind, name) = key;
                let ignored: Vec<_> = duplicate
                    .ignored
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect();
                warn!(
                    "{kind} {name} is defined more than once; using the one in {} and ignoring \
                     the one(s) in {}",
                    duplicate.used.display(),
                    ignored.join(", "),
                );
            }
        }
        self.duplicates = merged.duplicates.into_keys().collect();
        if merged.snapshot == self.snapshot {
            return false;
        }
        self.snapshot = merged.snapshot;
        true
    }

    fn note_root(&mut self, missing: bool) {
        if missing && !self.root_missing {
            warn!(
                root = %self.root.display(),
                "manifest directory does not exist; treating it as empty until it appears",
            );
        } else if !missing && self.root_missing {
            info!(root = %self.root.display(), "manifest directory appeared");
        }
        self.root_missing = missing;
    }

    fn note_unreadable(&mut self, unreadable: BTreeMap<PathBuf, String>) {
        for (path, reason) in &unreadable {
            if self.unreadable.get(path) != Some(reason) {
                warn!(
                    path = %path.display(),
                    "cannot list: {reason}; keeping what was read from it before",
                );
            }
        }
        for path in self.unreadable.keys() {
            if !unreadable.contains_key(path) {
                info!(path = %path.display(), "readable again");
            }
        }
        self.unreadable = unreadable;
    }

    fn publish_errors(&self) {
        let errors = self.errors();
        self.errors_tx.send_if_modified(|current| {
            if *current == errors {
                return false;
            }
            *current = errors;
            true
        });
    }
}

/// Parses `text`; a large file on a thread of its own, waited for at most [`PARSE_TIMEOUT`].
fn parse_in_time(path: &Path, text: String) -> Result<Vec<Object>, FileProblem> {
    if text.len() <= INLINE_PARSE_BYTES {
        return manifest::parse_manifest(path, &text).map_err(FileProblem::Parse);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("ferrite-parse".into())
        .spawn(move || {
            // The receiver is gone when the scan gave up on this file.
            let _ = tx.send(manifest::parse_manifest(&owned, &text));
        })
        .map_err(FileProblem::Thread)?;
    match rx.recv_timeout(PARSE_TIMEOUT) {
        Ok(result) => result.map_err(FileProblem::Parse),
        Err(_) => Err(FileProblem::Timeout),
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// Nanoseconds since the epoch (0 if the clock is before it).
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i128::try_from(since.as_nanos()).unwrap_or(i128::MAX)
        })
}
