use std::{
    fs::File,
    net::IpAddr,
    os::unix::fs::symlink,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

use super::{TempDir, capture_logs};
use crate::{
    model::{ServiceName, Snapshot},
    source::{dir::DirSource, walk::Fingerprint},
};

fn svc(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}
"
    )
}

const BROKEN: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: not-an-ip}\n";

/// Service names in the source's snapshot, as `namespace/name`.
fn names(source: &DirSource) -> Vec<String> {
    source
        .snapshot()
        .services
        .keys()
        .map(ToString::to_string)
        .collect()
}

/// The cluster IP of `default/name`.
fn cluster_ip(source: &DirSource, name: &str) -> IpAddr {
    source.snapshot().services[&ServiceName::new("default", name)].cluster_ips[0]
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test IP")
}

#[test]
fn scan_reads_nested_manifests_and_skips_hidden_and_other_files() {
    let dir = TempDir::new("nested");
    dir.write("a.yaml", &svc("a", "10.43.0.1"));
    dir.write("sub/b.yml", &svc("b", "10.43.0.2"));
    dir.write(
        "sub/deeper/c.json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"c"}}"#,
    );
    dir.write("D.YAML", &svc("d", "10.43.0.4"));
    dir.write(".hidden.yaml", &svc("hidden", "10.43.0.5"));
    dir.write(".git/x.yaml", &svc("git", "10.43.0.6"));
    dir.write("notes.txt", &svc("txt", "10.43.0.7"));
    let mut source = DirSource::new(dir.path().to_owned());
    assert!(source.rescan());
    assert_eq!(
        names(&source),
        ["default/a", "default/b", "default/c", "default/d"]
    );
    assert!(source.errors().is_empty(), "{:?}", source.errors());
}

#[test]
fn rescan_reports_only_real_changes() {
    let dir = TempDir::new("changes");
    let mut source = DirSource::new(dir.path().to_owned());
    assert!(!source.rescan(), "an empty folder is the empty snapshot");
    dir.write("a.yaml", &svc("a", "10.43.0.1"));
    assert!(source.rescan());
    assert!(!source.rescan(), "nothing changed");
    dir.write("a.yaml", &svc("a", "10.43.0.1"));
    assert!(!source.rescan(), "rewritten with the same content");
    dir.write("a.yaml", &format!("# a comment\n{}", svc("a", "10.43.0.1")));
    assert!(!source.rescan(), "different text, same objects");
    dir.write(
        "ignored.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    assert!(!source.rescan(), "a file of ignored kinds");
}

#[test]
fn same_size_rewrite_within_one_timestamp_tick_is_noticed() {
    // Two writes within one filesystem timestamp tick leave mtime, size and inode unchanged: pin
    // the mtime to make that happen on every filesystem.
    let dir = TempDir::new("racy");
    let mtime = SystemTime::now();
    let write_pinned = |ip: &str| {
        dir.write("a.yaml", &svc("a", ip));
        let file = File::options()
            .write(true)
            .open(dir.join("a.yaml"))
            .expect("open");
        file.set_modified(mtime).expect("set mtime");
    };
    let mut source = DirSource::new(dir.path().to_owned());
    write_pinned("10.43.0.1");
    assert!(source.rescan());
    write_pinned("10.43.0.2");
    assert!(source.rescan());
    assert_eq!(cluster_ip(&source, "a"), ip("10.43.0.2"));
}

#[test]
fn racy_window_covers_only_recent_past_mtimes() {
    let fingerprint = |mtime_ns| Fingerprint {
        mtime_ns,
        size: 1,
        inode: 1,
        device: 1,
    };
    let now: i128 = 1_700_000_000 * 1_000_000_000;
    assert!(fingerprint(now).is_racy(now));
    assert!(fingerprint(now - 1_999_999_999).is_racy(now));
    assert!(!fingerprint(now - 2_000_000_000).is_racy(now));
    assert!(
        !fingerprint(now + 1).is_racy(now),
        "a future mtime changes on any write"
    );
}

#[test]
fn broken_file_keeps_last_good_content_while_others_update() {
    let dir = TempDir::new("broken");
    dir.write("a.yaml", &svc("a", "10.43.0.1"));
    dir.write("b.yaml", &svc("b", "10.43.0.2"));
    let mut source = DirSource::new(dir.path().to_owned());
    assert!(source.rescan());

    dir.write("a.yaml", BROKEN);
    dir.write("b.yaml", &svc("b", "10.43.0.22"));
    let (changes, logs) = capture_logs(|| [source.rescan(), source.rescan(), source.rescan()]);
    assert_eq!(changes, [true, false, false]);
    assert_eq!(
        cluster_ip(&source, "a"),
        ip("10.43.0.1"),
        "last good content of a.yaml"
    );
    assert_eq!(
        cluster_ip(&source, "b"),
        ip("10.43.0.22"),
        "b.yaml still updates"
    );
    assert_eq!(
        logs.matches("rejected manifest").count(),
        1,
        "one warning:\n{logs}"
    );
    assert!(
        logs.contains("a.yaml") && logs.contains("not-an-ip"),
        "{logs}"
    );
    let errors = source.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, dir.join("a.yaml"));
    assert_eq!(
        errors[0].message,
        "document 1 (Service a): spec.clusterIP: `not-an-ip` is not an IP address"
    );

    dir.write("a.yaml", &svc("a", "10.43.0.11"));
    assert!(source.rescan());
    assert_eq!(cluster_ip(&source, "a"), ip("10.43.0.11"));
    assert!(source.errors().is_empty());
}

#[test]
fn file_broken_from_the_start_contributes_nothing() {
    let dir = TempDir::new("broken-new");
    dir.write("a.yaml", BROKEN);
    dir.write("b.yaml", &svc("b", "10.43.0.2"));
    let mut source = DirSource::new(dir.path().to_owned());
    assert!(source.rescan());
    assert_eq!(names(&source), ["default/b"]);
    assert_eq!(source.errors().len(), 1);
    dir.write("a.yaml", &format!("{BROKEN}# still broken, differently\n"));
    let (changed, logs) = capture_logs(|| source.rescan());
    assert!(!changed);
    assert!(logs.is_empty(), "same problem, no new warning: {logs}");
}

#[test]
fn deleted_file_drops_its_objects_and_errors() {
    let dir = TempDir::new("deleted");
    dir.write("a.yaml", &svc("a", "10.43.0.1"));
    dir.write("b.yaml", &svc("b", "10.43.0.2"));
    dir.write("c.yaml", BROKEN);
    let mut source = DirSource::new(dir.path().to_owned());
    assert!(source.rescan());
    dir.remove("a.yaml");
    dir.remove("c.yaml");
    assert!(source.rescan());
    assert_eq!(names(&source), ["default/b"]);
    assert!(source.errors().is_empty());
    dir.remove("b.yaml");
    assert!(source.rescan());
    assert_eq!(source.snapshot(), Snapshot::default());
}

#[test]
fn duplicate_objects_first_path_wins() {
    let dir = TempDir::new("duplicates");
    dir.write("b.yaml", &svc("x", "10.43.0.2"));
    dir.write("a.yaml", &svc("x", "10.43.0.1"));
    let mut source = DirSource::new(dir.path().to_owned());
    let (_, logs) = capture_logs(|| {
        source.rescan();
        dir.write("c.yaml", &svc("y", "10.43.0.3"));
        source.rescan()
    });
    assert_eq!(cluster_ip(&source, "x"), ip("10.43.0.1"));
    assert_eq!(logs.matches("defined more than once").count(), 1, "{logs}");
    assert!(logs.contains("a.yaml") && logs.contains("b.yaml"), "{logs}");

    dir.remove("a.yaml");
    assert!(source.rescan());
    assert_eq!(
        cluster_ip(&source, "x"),
        ip("10.43.0.2"),
        "the other definition takes over"
    );
}

#[test]
fn duplicate_within_one_file_uses_the_first_document() {
    let dir = TempDir::new("duplicates-in-file");
    dir.write(
        "a.yaml",
        &format!("{}---\n{}", svc("x", "10.43.0.1"), svc("x", "10.43.0.9")),
    );
    let mut source = DirSource::new(dir.path().to_owned());
    assert!(source.rescan());
    assert_eq!(cluster_ip(&source, "x"), ip("10.43.0.1"));
}

#[test]
fn missing_root_is_empty_until_it_appears() {
    let parent = TempDir::new("missing");
    let root = parent.join("manifests");
    let mut source = DirSource::new(root.clone());
    let (changes, logs) = capture_logs(|| [source.rescan(), source.rescan()]);
    assert_eq!(changes, [false, false]);
    assert_eq!(
        logs.matches("does not exist").count(),
        1,
        "warned once:\n{logs}"
    );
    assert_eq!(source.errors()[0].path, root);

    parent.write("manifests/a.yaml", &svc("a", "10.43.0.1"));
    assert!(source.rescan());
    assert_eq!(names(&source), ["default/a"]);
    assert!(source.errors().is_empty());

    std::fs::remove_dir_all(&root).expect("remove root");
    assert!(source.rescan(), "a vanished root is empty");
    assert_eq!(source.snapshot(), Snapshot::default());
}

#[test]
fn configmap_style_symlinks_are_followed_once() {
    // A mounted ConfigMap: visible files are symlinks through `..data` into a hidden timestamped
    // directory, and an update swaps `..data`.
    let dir = TempDir::new("configmap");
    dir.write("..2024_01_01/svc.yaml", &svc("a", "10.43.0.1"));
    symlink("..2024_01_01", dir.join("..data")).expect("symlink ..data");
    symlink("..data/svc.yaml", dir.join("svc.yaml")).expect("symlink svc.yaml");
    symlink(".", dir.join("loop")).expect("symlink loop");
    let mut source = DirSource::new(dir.path().to_owned());
    let (changed, logs) = capture_logs(|| source.rescan());
    assert!(changed);
    assert_eq!(names(&source), ["default/a"]);
    assert!(logs.is_empty(), "no duplicates through the loop: {logs}");

    dir.write("..2024_01_02/svc.yaml", &svc("a", "10.43.0.2"));
    symlink("..2024_01_02", dir.join("..data_tmp")).expect("symlink ..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    assert!(source.rescan());
    assert_eq!(cluster_ip(&source, "a"), ip("10.43.0.2"));
}

#[test]
fn a_single_file_can_be_the_root() {
    let dir = TempDir::new("single");
    dir.write("all.manifest", &svc("a", "10.43.0.1"));
    let mut source = DirSource::new(dir.join("all.manifest"));
    assert!(source.rescan());
    assert_eq!(names(&source), ["default/a"]);
}

#[test]
fn error_handle_follows_scans() {
    let dir = TempDir::new("handle");
    dir.write("a.yaml", BROKEN);
    let mut source = DirSource::new(dir.path().to_owned());
    let handle = source.error_handle();
    assert!(handle.current().is_empty(), "nothing scanned yet");
    source.rescan();
    let errors = handle.current();
    assert_eq!(errors.len(), 1);
    let json = serde_json::to_value(&errors[0]).expect("serializable");
    assert_eq!(json["path"], dir.join("a.yaml").display().to_string());
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|m| m.contains("not-an-ip")),
        "{json}"
    );
    dir.remove("a.yaml");
    source.rescan();
    assert!(handle.current().is_empty());
}

#[tokio::test]
async fn run_publishes_initial_and_changed_snapshots_until_receivers_are_gone() {
    let dir = TempDir::new("run");
    dir.write("a.yaml", &svc("a", "10.43.0.1"));
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let source = DirSource::new(dir.path().to_owned());
    let task = tokio::spawn(source.run(tx, Duration::from_millis(20)));
    let wait = Duration::from_secs(5);

    tokio::time::timeout(wait, rx.changed())
        .await
        .expect("initial snapshot")
        .expect("sender alive");
    assert_eq!(rx.borrow_and_update().services.len(), 1);

    dir.write("b.yaml", &svc("b", "10.43.0.2"));
    tokio::time::timeout(wait, rx.changed())
        .await
        .expect("changed snapshot")
        .expect("sender alive");
    assert_eq!(rx.borrow_and_update().services.len(), 2);

    drop(rx);
    tokio::time::timeout(wait, task)
        .await
        .expect("run stops")
        .expect("run did not panic");
}

#[test]
fn file_error_paths_are_full_paths() {
    let dir = TempDir::new("paths");
    dir.write("sub/a.yaml", BROKEN);
    let mut source = DirSource::new(dir.path().to_owned());
    source.rescan();
    assert_eq!(
        source.errors()[0].path,
        Path::new(dir.path()).join("sub/a.yaml")
    );
}

#[test]
fn a_file_nested_to_stall_the_parser_is_rejected_at_once_and_the_others_are_read() {
    let dir = TempDir::new("nested-brackets");
    // With a merge key (`<<`) serde_yaml_ng builds a YAML tree first: 100,000 nested `[` took it
    // 14 s (debug build) before it reported the recursion limit.
    dir.write(
        "bomb.yaml",
        &format!("<<: x\nspec: {}", "[".repeat(100_000)),
    );
    dir.write("web.yaml", &svc("web", "10.43.0.9"));
    let mut source = DirSource::new(dir.path().to_owned());
    let started = std::time::Instant::now();
    assert!(source.rescan());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(names(&source), ["default/web"]);
    let errors = source.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].path.ends_with("bomb.yaml"), "{errors:?}");
    assert!(
        errors[0].message.starts_with("line 2: flow collections"),
        "{errors:?}"
    );
}
