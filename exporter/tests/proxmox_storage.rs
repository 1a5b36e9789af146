//! The `storage` and `replication` collectors over fixtures/proxmox-host reproduce every value
//! of fixtures/proxmox-host/expected-storage.md, and none of its traps, both in-process and
//! through the binary. Bad input (invalid replication state, a truncated `.rrd` line, a hung
//! storage mount, an unreadable file) costs only the series it feeds and is reported naming the
//! file. Runs as any user.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use metrics_exporter::collectors::node::filesystem::{FsStats, StatFn};
use metrics_exporter::collectors::proxmox::replication::ReplicationCollector;
use metrics_exporter::collectors::proxmox::storage::StorageCollector;
use metrics_exporter::collectors::proxmox::synthetic;
use metrics_exporter::collectors::{Collector, Environment};
use metrics_exporter::model::{Snapshot, SnapshotBuilder, Value};

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/proxmox-host")
}

fn collect_with(collector: &mut dyn Collector) -> (Snapshot, Result<(), String>) {
    let mut out = SnapshotBuilder::new();
    let result = collector.collect(&mut out).map_err(|e| e.to_string());
    (out.finish(Arc::default(), SystemTime::now(), 1), result)
}

/// Every series of a snapshot as (name, labels, value), the shape the exposition parser gives,
/// so one set of checks serves the collector and the binary.
fn series_of(snap: &Snapshot, names: &[&str]) -> Vec<common::Series> {
    let mut out = Vec::new();
    for name in names {
        let Some(family) = snap.family(name) else { continue };
        for sample in &family.samples {
            let labels: BTreeMap<String, String> = family
                .desc
                .labels
                .iter()
                .zip(sample.labels.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let Value::Number(v) = sample.value else {
                panic!("{name}: not a number")
            };
            out.push((name.to_string(), labels, v));
        }
    }
    out
}

const STORAGE_NAMES: &[&str] = &[
    "pve_storage_info",
    "pve_storage_size_bytes",
    "pve_storage_used_bytes",
    "pve_storage_avail_bytes",
];
const REPLICATION_NAMES: &[&str] = &[
    "pve_replication_info",
    "pve_replication_disabled",
    "pve_replication_last_sync_timestamp_seconds",
    "pve_replication_last_try_timestamp_seconds",
    "pve_replication_duration_seconds",
    "pve_replication_failures",
];

/// The value of the one series of `name` whose labels include every pair of `want`; `None`
/// when there is none (more than one is a failure).
fn value(series: &[common::Series], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = series
        .iter()
        .filter(|(n, labels, _)| n == name && want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
        .collect();
    assert!(found.len() <= 1, "{name} {want:?}: {found:?}");
    found.first().copied()
}

/// The values of label `label` over every series of `name`.
fn label_values(series: &[common::Series], name: &str, label: &str) -> BTreeSet<String> {
    series
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, labels, _)| labels[label].clone())
        .collect()
}

/// statvfs(3) of `path` by libc directly (not the exporter's wrapper): size, used, avail bytes
/// as Proxmox's df computes them.
fn independent_statvfs(path: &Path) -> (f64, f64, f64) {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer of the right size.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    // SAFETY: statvfs returned 0, so it filled the struct.
    let s = unsafe { buf.assume_init() };
    let bytes = |n: u64| (u128::from(n) * u128::from(s.f_frsize)) as f64;
    (bytes(s.f_blocks), bytes(s.f_blocks - s.f_bfree), bytes(s.f_bavail))
}

/// Checks the storages of expected-storage.md in `run()`'s series. The dir storage `local`
/// is the machine's own filesystem under the fixture tree: it is compared with a statvfs made
/// just before and just after `run`: exactly when the filesystem did not change in between,
/// else the exporter's used and avail must lie between the two (other processes write to it).
fn check_storage(mut run: impl FnMut() -> Vec<common::Series>) {
    let vz = fixture_root().join("var/lib/vz");
    let mut attempts = 0;
    let series = loop {
        attempts += 1;
        let before = independent_statvfs(&vz);
        let series = run();
        let after = independent_statvfs(&vz);
        let local = [("storage", "local"), ("type", "dir")];
        let got = (
            value(&series, "pve_storage_size_bytes", &local).expect("local size"),
            value(&series, "pve_storage_used_bytes", &local).expect("local used"),
            value(&series, "pve_storage_avail_bytes", &local).expect("local avail"),
        );
        assert_eq!(got.0, before.0, "size of {}", vz.display());
        if before == after && got == before {
            break series;
        }
        // Equal before and after but not what the exporter saw: the filesystem changed and
        // changed back meanwhile (a file written and removed; CI failed once this way). An
        // exporter that is wrong on a quiet filesystem fails below after 20 measurements.
        // The filesystem changed while the exporter ran: its answer must lie between the two
        // (used and avail move by the blocks written meanwhile; bfree instead of bavail, or a
        // statvfs of another filesystem, would be far outside). Else measure again.
        let between = |x: f64, a: f64, b: f64| a.min(b) <= x && x <= a.max(b);
        if before != after && between(got.1, before.1, after.1) && between(got.2, before.2, after.2) {
            break series;
        }
        assert!(
            attempts < 20,
            "{}: exporter said {got:?}, statvfs before {before:?} and after {after:?}, 20 times",
            vz.display()
        );
    };

    // Info: every storage enabled on pve1, content as written, shared by flag or by type.
    let info: BTreeSet<(String, String, String, String)> = series
        .iter()
        .filter(|(n, _, _)| n == "pve_storage_info")
        .map(|(_, l, v)| {
            assert_eq!(*v, 1.0);
            (
                l["storage"].clone(),
                l["type"].clone(),
                l["content"].clone(),
                l["shared"].clone(),
            )
        })
        .collect();
    let expected_info: BTreeSet<(String, String, String, String)> = [
        ("local", "dir", "iso,vztmpl,backup", "0"),
        ("local-lvm", "lvmthin", "rootdir,images", "0"),
        ("local-zfs", "zfspool", "images,rootdir", "0"),
        ("tank", "zfspool", "images", "0"),
        ("nas", "nfs", "backup,iso", "1"),
        ("pbs-store", "pbs", "backup", "1"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(info, expected_info, "old-lvm is disabled, fast is for pve2 only");

    // .rrd values: this node's lines only, both key formats, U absent, no avail.
    let zfs = [("storage", "local-zfs"), ("type", "zfspool")];
    assert_eq!(value(&series, "pve_storage_size_bytes", &zfs), Some(483183820800.0));
    assert_eq!(
        value(&series, "pve_storage_used_bytes", &zfs),
        Some(127708233728.0),
        "pve1's line, not pve2's 300647710720"
    );
    let lvm = [("storage", "local-lvm"), ("type", "lvmthin")];
    assert_eq!(value(&series, "pve_storage_size_bytes", &lvm), Some(374538764288.0));
    assert_eq!(value(&series, "pve_storage_used_bytes", &lvm), Some(51498522624.0));
    let tank = [("storage", "tank"), ("type", "zfspool")];
    assert_eq!(value(&series, "pve_storage_size_bytes", &tank), Some(1073741824000.0));
    assert_eq!(
        value(&series, "pve_storage_used_bytes", &tank),
        None,
        "U is unknown, not 0"
    );

    let measured = |name| label_values(&series, name, "storage");
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        measured("pve_storage_size_bytes"),
        set(&["local", "local-lvm", "local-zfs", "tank"]),
        "nas is not mounted (a statvfs would measure /), pbs-store has no .rrd line, old-lvm is disabled, fast is pve2's"
    );
    assert_eq!(
        measured("pve_storage_used_bytes"),
        set(&["local", "local-lvm", "local-zfs"])
    );
    assert_eq!(
        measured("pve_storage_avail_bytes"),
        set(&["local"]),
        ".rrd has no avail"
    );
}

fn check_replication(series: &[common::Series]) {
    let job = |id: &str, name: &str, kind: &str, job: &str| {
        [
            ("container_id", id.to_string()),
            ("host_name", name.to_string()),
            ("type", kind.to_string()),
            ("job_id", job.to_string()),
            ("target", "pve2".to_string()),
        ]
    };
    let pairs = |labels: &[(&'static str, String)]| -> Vec<(&'static str, String)> { labels.to_vec() };
    let get = |name: &str, labels: &[(&'static str, String)], extra: &[(&'static str, &str)]| {
        let mut want: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        want.extend_from_slice(extra);
        value(series, name, &want)
    };
    let web = pairs(&job("101", "web", "lxc", "101-0"));
    let win = pairs(&job("200", "win11", "qemu", "200-0"));
    let db = pairs(&job("102", "db", "lxc", "102-0"));

    assert_eq!(get("pve_replication_info", &web, &[("schedule", "*/15")]), Some(1.0));
    assert_eq!(get("pve_replication_info", &win, &[("schedule", "22:30")]), Some(1.0));
    assert_eq!(
        get("pve_replication_info", &db, &[("schedule", "*/15")]),
        Some(1.0),
        "schedule defaults to */15"
    );
    assert_eq!(get("pve_replication_disabled", &web, &[]), Some(0.0));
    assert_eq!(get("pve_replication_disabled", &win, &[]), Some(0.0));
    assert_eq!(get("pve_replication_disabled", &db, &[]), Some(1.0));

    assert_eq!(
        get("pve_replication_last_sync_timestamp_seconds", &web, &[]),
        Some(1733389200.0)
    );
    assert_eq!(
        get("pve_replication_last_try_timestamp_seconds", &web, &[]),
        Some(1733389200.0)
    );
    assert_eq!(get("pve_replication_duration_seconds", &web, &[]), Some(4.21));
    assert_eq!(get("pve_replication_failures", &web, &[]), Some(0.0));

    assert_eq!(
        get("pve_replication_last_sync_timestamp_seconds", &win, &[]),
        Some(1733347800.0)
    );
    assert_eq!(
        get("pve_replication_last_try_timestamp_seconds", &win, &[]),
        Some(1733389500.0)
    );
    assert_eq!(get("pve_replication_duration_seconds", &win, &[]), Some(2.05));
    assert_eq!(get("pve_replication_failures", &win, &[]), Some(3.0));

    for name in &REPLICATION_NAMES[2..] {
        assert_eq!(
            get(name, &db, &[]),
            None,
            "{name}: job 102-0 never ran (no state entry)"
        );
    }
    assert_eq!(
        label_values(series, "pve_replication_info", "job_id"),
        ["101-0", "102-0", "200-0"].iter().map(|s| s.to_string()).collect(),
        "300-0 belongs to a guest on pve2"
    );
    for name in REPLICATION_NAMES {
        assert_eq!(
            label_values(series, name, "target"),
            BTreeSet::from(["pve2".to_string()]),
            "{name}: the state of 101 to pve3 has no job"
        );
    }
}

#[test]
fn storage_collector_over_the_fixture() {
    let env = synthetic::environment_for_tree(&fixture_root());
    let mut collector = StorageCollector::new(&env);
    check_storage(|| {
        let (snap, result) = collect_with(&mut collector);
        result.unwrap();
        series_of(&snap, STORAGE_NAMES)
    });
}

#[test]
fn replication_collector_over_the_fixture() {
    let env = synthetic::environment_for_tree(&fixture_root());
    let mut collector = ReplicationCollector::new(&env);
    let (snap, result) = collect_with(&mut collector);
    result.unwrap();
    check_replication(&series_of(&snap, REPLICATION_NAMES));
    // Unchanged files are not parsed again, and give the same series.
    let (again, result) = collect_with(&mut collector);
    result.unwrap();
    assert_eq!(
        series_of(&again, REPLICATION_NAMES),
        series_of(&snap, REPLICATION_NAMES)
    );
}

#[test]
fn the_binary_over_the_fixture() {
    let run = || {
        let out = Command::new(common::binary())
            .arg("--once")
            .env("ENABLED_COLLECTORS", "storage,replication")
            .envs(common::fixture_env("proxmox-host", "proxmox"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stderr.contains("storage") && !stderr.contains("replication"),
            "{stderr}"
        );
        common::parse_exposition(&String::from_utf8_lossy(&out.stdout))
    };
    let mut last = Vec::new();
    check_storage(|| {
        last = run();
        last.clone()
    });
    check_replication(&last);
}

// ---- bad input -------------------------------------------------------------------------

/// A copy of the fixture's files these collectors read, in a temporary tree.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = fixture_root();
    for rel in [
        "etc/pve/.members",
        "etc/pve/.vmlist",
        "etc/pve/.rrd",
        "etc/pve/storage.cfg",
        "etc/pve/replication.cfg",
        "etc/pve/nodes/pve1/lxc/101.conf",
        "etc/pve/nodes/pve1/lxc/102.conf",
        "etc/pve/nodes/pve1/qemu-server/200.conf",
        "var/lib/pve-manager/pve-replication-state.json",
        "proc/self/mountinfo",
    ] {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(rel), &to).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("var/lib/vz")).unwrap();
    std::os::unix::fs::symlink("nodes/pve1/lxc", dir.path().join("etc/pve/lxc")).unwrap();
    std::os::unix::fs::symlink("nodes/pve1/qemu-server", dir.path().join("etc/pve/qemu-server")).unwrap();
    dir
}

fn env_at(root: &Path) -> Environment {
    synthetic::environment_for_tree(root)
}

#[test]
fn invalid_replication_state_is_reported_and_the_jobs_still_listed() {
    let dir = tree();
    let state = dir.path().join("var/lib/pve-manager/pve-replication-state.json");
    std::fs::write(&state, "{\"101\": {\"local/pve2\": {\"last_sync\": 17333").unwrap();
    let mut collector = ReplicationCollector::new(&env_at(dir.path()));
    let (snap, result) = collect_with(&mut collector);
    let error = result.unwrap_err();
    assert!(error.contains(&state.display().to_string()), "{error}");
    assert!(error.contains("invalid replication state JSON"), "{error}");
    let series = series_of(&snap, REPLICATION_NAMES);
    assert_eq!(label_values(&series, "pve_replication_info", "job_id").len(), 3);
    assert!(label_values(&series, "pve_replication_last_sync_timestamp_seconds", "job_id").is_empty());

    // Fixed: the next collection reads it again (a parse error is not cached).
    std::fs::copy(
        fixture_root().join("var/lib/pve-manager/pve-replication-state.json"),
        &state,
    )
    .unwrap();
    let (snap, result) = collect_with(&mut collector);
    result.unwrap();
    check_replication(&series_of(&snap, REPLICATION_NAMES));
}

#[test]
fn unreadable_files_are_reported_naming_them() {
    // A directory where a file should be: reading fails for root too (EISDIR).
    let dir = tree();
    let state = dir.path().join("var/lib/pve-manager/pve-replication-state.json");
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let (snap, result) = collect_with(&mut ReplicationCollector::new(&env_at(dir.path())));
    let error = result.unwrap_err();
    assert!(error.contains(&state.display().to_string()), "{error}");
    assert_eq!(
        label_values(&series_of(&snap, REPLICATION_NAMES), "pve_replication_info", "job_id").len(),
        3
    );

    let cfg = dir.path().join("etc/pve/storage.cfg");
    std::fs::remove_file(&cfg).unwrap();
    std::fs::create_dir(&cfg).unwrap();
    let (snap, result) = collect_with(&mut StorageCollector::new(&env_at(dir.path())));
    let error = result.unwrap_err();
    assert!(error.contains(&cfg.display().to_string()), "{error}");
    assert!(snap.family("pve_storage_info").is_none());
}

/// A storage.cfg as an administrator may leave it: `local` removed and a storage without a
/// `content` line. Proxmox still has `dir: local` at /var/lib/vz (pve-storage puts it back) and
/// gives the storage its type's default content; so does the collector.
#[test]
fn local_and_default_content_as_proxmox_reads_storage_cfg() {
    let dir = tree();
    std::fs::write(
        dir.path().join("etc/pve/storage.cfg"),
        "zfspool: local-zfs\n\tpool rpool/data\n\tsparse\n\n\
         lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n",
    )
    .unwrap();
    let (snap, result) = collect_with(&mut StorageCollector::new(&env_at(dir.path())));
    result.unwrap();
    let series = series_of(&snap, STORAGE_NAMES);
    let info: BTreeSet<(String, String, String, String)> = series
        .iter()
        .filter(|s| s.0 == "pve_storage_info")
        .map(|(_, l, _)| {
            (
                l["storage"].clone(),
                l["type"].clone(),
                l["content"].clone(),
                l["shared"].clone(),
            )
        })
        .collect();
    let row = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned(), "0".to_owned());
    assert_eq!(
        info,
        BTreeSet::from([
            row("local", "dir", "backup,images,iso,rootdir,snippets,vztmpl"),
            row("local-lvm", "lvmthin", "images,rootdir"),
            row("local-zfs", "zfspool", "images,rootdir"),
        ])
    );
    // The restored local is measured like any dir storage: statvfs of <root>/var/lib/vz.
    let local = [("storage", "local"), ("type", "dir")];
    let (size, _, _) = independent_statvfs(&dir.path().join("var/lib/vz"));
    assert_eq!(value(&series, "pve_storage_size_bytes", &local), Some(size));
}

/// An NFS storage is active only when its own export is mounted at its path, as pve-storage's
/// `nfs_is_mounted` checks (source `server:export`, type nfs*, mount point): another server's
/// export mounted there is not this storage, and a statvfs would measure that other export.
#[test]
fn an_nfs_storage_counts_only_its_own_export() {
    let dir = tree();
    std::fs::create_dir_all(dir.path().join("mnt/pve/nas")).unwrap();
    let mountinfo = dir.path().join("proc/self/mountinfo");
    let base = std::fs::read_to_string(&mountinfo).unwrap();
    let nas = [("storage", "nas"), ("type", "nfs")];
    let mut collector = StorageCollector::new(&env_at(dir.path()));
    for (source, active) in [
        ("192.168.1.51:/export/pve", false),
        ("192.168.1.50:/export/other", false),
        ("192.168.1.50:/export/pve", true),
        ("192.168.1.50:/export/pve/", true),
    ] {
        std::fs::write(
            &mountinfo,
            format!(
                "{base}1600 28 0:60 / /mnt/pve/nas rw,relatime shared:700 - nfs4 {source} rw,vers=4.2,addr=192.168.1.50\n"
            ),
        )
        .unwrap();
        let (snap, result) = collect_with(&mut collector);
        result.unwrap();
        let series = series_of(&snap, STORAGE_NAMES);
        assert_eq!(
            value(&series, "pve_storage_size_bytes", &nas).is_some(),
            active,
            "mounted from {source}"
        );
        assert_eq!(value(&series, "pve_storage_info", &[("storage", "nas")]), Some(1.0));
    }
}

#[test]
fn a_truncated_rrd_line_costs_only_its_storage() {
    let dir = tree();
    let rrd = dir.path().join("etc/pve/.rrd");
    let text = std::fs::read_to_string(&rrd).unwrap();
    let text = text.replace(
        "pve-storage-9.0/pve1/local-lvm:1733390070:374538764288:51498522624",
        "pve-storage-9.0/pve1/local-lvm:1733390070:3745",
    );
    std::fs::write(&rrd, text).unwrap();
    let (snap, result) = collect_with(&mut StorageCollector::new(&env_at(dir.path())));
    let error = result.unwrap_err();
    assert!(
        error.contains(&rrd.display().to_string()) && error.contains("line 3"),
        "{error}"
    );
    let series = series_of(&snap, STORAGE_NAMES);
    assert_eq!(
        label_values(&series, "pve_storage_size_bytes", "storage"),
        ["local", "local-zfs", "tank"].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(label_values(&series, "pve_storage_info", "storage").len(), 6);
}

/// Releases the blocked statvfs threads when the test ends, also on failure.
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Drop for Gate {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

#[test]
fn a_storage_on_a_hung_mount_is_reported_and_not_asked_again() {
    let dir = tree();
    let gate = Gate(Arc::new((Mutex::new(false), Condvar::new())));
    let calls = Arc::new(Mutex::new(Vec::<PathBuf>::new()));
    let (open, calls2) = (gate.0.clone(), calls.clone());
    let stat: StatFn = Arc::new(move |path: &Path| {
        calls2.lock().unwrap().push(path.to_path_buf());
        let (lock, cvar) = &*open;
        let _released = cvar.wait_while(lock.lock().unwrap(), |open| !*open).unwrap();
        Ok(FsStats {
            blocks: 1,
            bfree: 1,
            bavail: 1,
            frsize: 1,
        })
    });
    let mut collector = StorageCollector::with_statvfs(&env_at(dir.path()), stat, Duration::from_millis(200));
    let vz = dir.path().join("var/lib/vz");
    for round in 0..2 {
        let (snap, result) = collect_with(&mut collector);
        let error = result.unwrap_err();
        assert!(error.contains(&vz.display().to_string()), "round {round}: {error}");
        assert!(error.contains("no answer"), "{error}");
        let series = series_of(&snap, STORAGE_NAMES);
        assert_eq!(
            label_values(&series, "pve_storage_size_bytes", "storage"),
            ["local-lvm", "local-zfs", "tank"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "round {round}: the .rrd storages are still served"
        );
    }
    assert_eq!(*calls.lock().unwrap(), vec![vz], "the hung path was asked once");
    drop(gate);
}
