//! Broken inputs give a clear `CollectError` naming the file, never a panic or a made-up
//! value; and a hung statvfs does not hold up the collection.

mod node_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter::collectors::Environment;
use metrics_exporter::collectors::node::filesystem::{FilesystemCollector, FsStats, StatFn};
use metrics_exporter::error::CollectError;
use metrics_exporter::model::SnapshotBuilder;
use metrics_exporter::platform::Platform;
use node_common::*;

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc/net")).unwrap();
    std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
    std::fs::create_dir_all(dir.path().join("sys/fs/cgroup")).unwrap();
    dir
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn fails(name: &str, env: &Environment) -> CollectError {
    let mut c = collector(name, env);
    let mut b = SnapshotBuilder::new();
    match c.collect(&mut b) {
        Ok(()) => panic!("{name} accepted bad input"),
        Err(e) => e,
    }
}

#[test]
fn truncated_meminfo() {
    let dir = tree();
    let real = std::fs::read_to_string(fixture("proxmox-host").join("proc/meminfo")).unwrap();
    write(
        dir.path(),
        "proc/meminfo",
        &real[..real.find("SwapTotal").unwrap() + 14],
    );
    let e = fails("memory", &env_at(dir.path(), Platform::Host));
    assert!(
        matches!(e, CollectError::Parse { ref path, .. } if path.ends_with("proc/meminfo")),
        "{e}"
    );
}

#[test]
fn garbage_net_dev() {
    let dir = tree();
    write(dir.path(), "proc/net/dev", "Inter-|\n face |bytes\n  eth0: 12 x\n");
    let e = fails("network", &env_at(dir.path(), Platform::Host));
    assert!(e.to_string().contains("proc/net/dev"), "{e}");
    write(dir.path(), "proc/net/dev", "\u{0}\u{1}binary garbage");
    assert!(matches!(
        fails("network", &env_at(dir.path(), Platform::Host)),
        CollectError::Parse { .. }
    ));
}

#[test]
fn cpu_stat_missing_keys() {
    let dir = tree();
    write(dir.path(), "sys/fs/cgroup/cpu.stat", "usage_usec 100\nuser_usec 60\n");
    let e = fails("cpu", &env_at(dir.path(), Platform::Lxc));
    let text = e.to_string();
    assert!(text.contains("cpu.stat") && text.contains("system_usec"), "{text}");
}

#[test]
fn missing_proc_stat_is_vanished_not_zero() {
    let dir = tree();
    assert!(fails("cpu", &env_at(dir.path(), Platform::Host)).is_vanished());
    assert!(fails("load", &env_at(dir.path(), Platform::Host)).is_vanished());
}

#[test]
fn cgroup_subtree_that_vanishes() {
    let dir = tree();
    let cg = dir.path().join("sys/fs/cgroup");
    write(dir.path(), "sys/fs/cgroup/cgroup.procs", "");
    write(dir.path(), "sys/fs/cgroup/pids.current", "3\n");
    write(dir.path(), "sys/fs/cgroup/a.slice/cgroup.procs", "1\n2\n");
    // A child whose directory is there but whose files are gone: what a cgroup removed
    // between readdir and read looks like. Its processes are gone with it.
    std::fs::create_dir_all(cg.join("gone.scope")).unwrap();
    write(
        dir.path(),
        "sys/fs/cgroup/with\\x2dbackslash.slice/cgroup.procs",
        "2\n7\n",
    );
    let env = env_at(dir.path(), Platform::Lxc);
    let s = collect("process", &env);
    assert_eq!(get(&s, "node_processes", &[]), 3.0, "distinct PIDs 1, 2, 7");
    assert_eq!(get(&s, "node_processes_threads", &[]), 3.0);

    // The namespace root itself vanishing is an error that says so, not zero processes.
    std::fs::remove_dir_all(&cg).unwrap();
    let e = fails("process", &env);
    assert!(e.is_vanished(), "{e}");
    assert!(e.to_string().contains("cgroup.procs"), "{e}");
    // And memory/cpu/pressure do not fall back to host files.
    assert!(fails("cpu", &env).is_vanished());
}

#[test]
fn malformed_cgroup_procs_is_a_parse_error() {
    let dir = tree();
    write(dir.path(), "sys/fs/cgroup/cgroup.procs", "1\nnot-a-pid\n");
    let e = fails("process", &env_at(dir.path(), Platform::Lxc));
    assert!(matches!(e, CollectError::Parse { .. }), "{e}");
}

#[test]
fn pressure_without_psi_is_absent_and_a_broken_file_is_an_error() {
    let dir = tree();
    let env = env_at(dir.path(), Platform::Host);
    let s = collect("pressure", &env);
    assert_eq!(s.series_count(), 0, "no PSI files: no series, never zeros");
    write(
        dir.path(),
        "proc/pressure/memory",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=5000000\n",
    );
    write(dir.path(), "proc/pressure/io", "some avg10=0.00 avg60=");
    let mut c = collector("pressure", &env);
    let mut b = SnapshotBuilder::new();
    let e = c.collect(&mut b).unwrap_err();
    assert!(e.to_string().contains("pressure/io"), "{e}");
    // What was readable is still reported.
    let s = b.finish(Default::default(), std::time::SystemTime::now(), 1);
    assert_eq!(get(&s, "node_pressure_memory_waiting_seconds_total", &[]), 5.0);
}

#[test]
fn lxc_without_cgroup_refuses_rather_than_reading_host_files() {
    let dir = tree();
    std::fs::remove_dir_all(dir.path().join("sys/fs/cgroup")).unwrap();
    // Host-looking files are there; they must not be used.
    write(
        dir.path(),
        "proc/stat",
        "cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n",
    );
    write(
        dir.path(),
        "proc/meminfo",
        &std::fs::read_to_string(fixture("proxmox-host").join("proc/meminfo")).unwrap(),
    );
    write(dir.path(), "proc/loadavg", "0.50 0.40 0.30 2/999 4242\n");
    write(
        dir.path(),
        "proc/pressure/cpu",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
    // Two processes in the container's PID namespace.
    write(dir.path(), "proc/1/comm", "init\n");
    write(dir.path(), "proc/42/comm", "sh\n");
    let env = env_at(dir.path(), Platform::Lxc);
    assert!(env.cgroup_path.is_none());
    for name in ["cpu", "memory"] {
        assert!(matches!(fails(name, &env), CollectError::Other(_)), "{name}");
    }
    // Processes are the PID namespace's (a container's /proc is its own); the thread count
    // would need the pids cgroup, and /proc/loadavg's is the host's: absent.
    let s = collect("process", &env);
    assert_eq!(get(&s, "node_processes", &[]), 2.0);
    assert_eq!(value(&s, "node_processes_threads", &[]), None);
    // /proc/pressure in a container is the host's: no pressure at all, and no failure.
    assert_eq!(collect("pressure", &env).series_count(), 0);
}

/// One mount whose statvfs blocks for a minute: the collection returns at the deadline, the
/// mount is counted as timed out, and the next collection does not call statvfs on it again
/// while the first call is still blocked.
#[test]
fn hung_statvfs_is_bounded_and_not_repeated() {
    let dir = tree();
    let mountinfo = "\
1 0 8:1 / / rw - ext4 /dev/sda1 rw
2 1 0:50 / /mnt/nfs rw - nfs4 server:/export rw
3 1 8:2 / /data rw - xfs /dev/sda2 rw
";
    write(dir.path(), "proc/self/mountinfo", mountinfo);
    let env = env_at(dir.path(), Platform::Host);
    let calls: Arc<Mutex<HashMap<PathBuf, usize>>> = Arc::default();
    let finished = Arc::new(AtomicUsize::new(0));
    let (calls2, finished2) = (calls.clone(), finished.clone());
    let stat: StatFn = Arc::new(move |path: &Path| {
        *calls2.lock().unwrap().entry(path.to_path_buf()).or_default() += 1;
        if path.ends_with("mnt/nfs") {
            std::thread::sleep(Duration::from_secs(60));
        }
        finished2.fetch_add(1, Ordering::SeqCst);
        Ok(FsStats {
            blocks: 10,
            bfree: 5,
            bavail: 4,
            frsize: 1024,
        })
    });
    let deadline = Duration::from_millis(300);
    let mut c = FilesystemCollector::with_statvfs(&env, stat, deadline);

    let start = Instant::now();
    let s = run(&mut c);
    let took = start.elapsed();
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "took {took:?}"
    );
    assert_eq!(
        label_sets(&s, "node_filesystem_size_bytes").len(),
        2,
        "/ and /data reported"
    );
    assert!(
        value(
            &s,
            "node_filesystem_size_bytes",
            &["server:/export", "/mnt/nfs", "nfs4"]
        )
        .is_none()
    );
    assert_eq!(
        get(&s, "node_filesystem_size_bytes", &["/dev/sda2", "/data", "xfs"]),
        10240.0
    );
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_timeouts_total", &[]), 1.0);
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_hung_mounts", &[]), 1.0);

    // Second collection: the hung mount is skipped without a new call, and the others
    // answer at once (no waiting on the hung one).
    let start = Instant::now();
    let s = run(&mut c);
    assert!(start.elapsed() < deadline, "took {:?}", start.elapsed());
    let nfs = dir.path().join("mnt/nfs");
    assert_eq!(
        calls.lock().unwrap()[&nfs],
        1,
        "statvfs queued a second call on a hung mount"
    );
    assert_eq!(calls.lock().unwrap()[&dir.path().join("data")], 2);
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_timeouts_total", &[]), 2.0);
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_hung_mounts", &[]), 1.0);
    assert_eq!(c.hung_mounts(), 1);
    assert!(
        metrics_exporter::collectors::Collector::notes(&c)
            .join(" ")
            .contains("mnt/nfs")
    );
    assert_eq!(finished.load(Ordering::SeqCst), 4);
}

/// A statvfs that is slow but finishes is retried once it has returned.
#[test]
fn slow_statvfs_is_retried_after_it_returns() {
    let dir = tree();
    write(
        dir.path(),
        "proc/self/mountinfo",
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n",
    );
    let env = env_at(dir.path(), Platform::Host);
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let stat: StatFn = Arc::new(move |_: &Path| {
        if calls2.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(FsStats {
            blocks: 8,
            bfree: 2,
            bavail: 1,
            frsize: 512,
        })
    });
    let mut c = FilesystemCollector::with_statvfs(&env, stat, Duration::from_millis(100));
    let s = run(&mut c);
    assert!(label_sets(&s, "node_filesystem_size_bytes").is_empty());
    std::thread::sleep(Duration::from_millis(400));
    let s = run(&mut c);
    assert_eq!(
        get(&s, "node_filesystem_usage_bytes", &["/dev/sda1", "/", "ext4"]),
        3072.0
    );
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_hung_mounts", &[]), 0.0);
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_timeouts_total", &[]), 1.0);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
