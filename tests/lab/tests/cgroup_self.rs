//! A cgroup that holds the test process itself: dropping it must move this process back to
//! the parent cgroup rather than kill it. Its own test binary, because while this process
//! sits in the cgroup every process it spawns would land there too.

use ferrite_lab::Cgroup;

#[test]
fn drop_moves_this_process_out_instead_of_killing_it() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs it as root)"
    );
    let cgroup = Cgroup::new("flt").unwrap();
    cgroup.add_pid(std::process::id()).unwrap();
    let name = cgroup
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(mine.contains(&name), "{mine}");
    let path = cgroup.path().to_owned();
    drop(cgroup);
    assert!(!path.exists());
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(!mine.contains(&name), "{mine}");
}
