//! Unit tests of the `dir:` source: pure parsing, and scans of temporary folders.

mod cluster;
mod dir;
mod endpoint_slice;
mod lb_service;
mod manifest;
mod service;
mod spec;

use std::{
    cell::RefCell,
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Once,
        atomic::{AtomicUsize, Ordering},
    },
};

use super::{
    manifest::{ParseError, parse_manifest},
    objects::Object,
};
use crate::model::{EndpointSlice, Service};

fn parse(text: &str) -> Result<Vec<Object>, ParseError> {
    parse_manifest(Path::new("test.yaml"), text)
}

fn parse_ok(text: &str) -> Vec<Object> {
    parse(text).unwrap_or_else(|error| panic!("unexpected error: {error}"))
}

/// The error message for `text`, which must be rejected.
fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(objects) => panic!("expected an error, got {objects:?}"),
        Err(error) => error.to_string(),
    }
}

fn services(objects: &[Object]) -> Vec<&Service> {
    objects
        .iter()
        .filter_map(|object| match object {
            Object::Service(service) => Some(service),
            _ => None,
        })
        .collect()
}

fn slices(objects: &[Object]) -> Vec<&EndpointSlice> {
    objects
        .iter()
        .filter_map(|object| match object {
            Object::EndpointSlice(slice) => Some(slice),
            _ => None,
        })
        .collect()
}

/// The only Service in `text`.
fn one_service(text: &str) -> Service {
    let objects = parse_ok(text);
    match services(&objects)[..] {
        [service] => service.clone(),
        ref other => panic!("expected one Service, got {other:?}"),
    }
}

/// The only `EndpointSlice` in `text`.
fn one_slice(text: &str) -> EndpointSlice {
    let objects = parse_ok(text);
    match slices(&objects)[..] {
        [slice] => slice.clone(),
        ref other => panic!("expected one EndpointSlice, got {other:?}"),
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ferrite-source-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("create parent");
        fs::write(path, content).expect("write file");
    }

    fn remove(&self, relative: &str) {
        fs::remove_file(self.join(relative)).expect("remove file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Warnings logged on this thread while running `f`.
///
/// A process-wide subscriber writes into a per-thread buffer: scoped (`with_default`) subscribers
/// race with other test threads over tracing's per-callsite interest cache.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    struct ThreadBuffer;
    impl Write for ThreadBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            CAPTURED.with_borrow_mut(|buffer| {
                if let Some(buffer) = buffer {
                    buffer.extend_from_slice(bytes);
                }
            });
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    thread_local! {
        static CAPTURED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| ThreadBuffer)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in unit tests");
    });
    CAPTURED.set(Some(Vec::new()));
    let result = f();
    let logs = CAPTURED.take().unwrap_or_default();
    (result, String::from_utf8(logs).expect("UTF-8 logs"))
}
