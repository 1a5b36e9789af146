//! Collectors `diskstats`, `zfs` and `pve_node` over fixtures/proxmox-host reproduce every value
//! of its expected-node-info.md and none of its traps, directly and through the binary; older
//! kernels' diskstats formats; bad input (a truncated diskstats line, a garbage arcstats line,
//! garbage and unreadable certificates) costs only its own series, with an error naming the
//! file; no ZFS module means no series and no error; and `diskstats` on this machine agrees
//! with an independent read of /proc/diskstats. Runs as any user.

mod common;
mod node_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use metrics_exporter::collectors::{Collector, Environment, proxmox};
use metrics_exporter::model::{Snapshot, SnapshotBuilder};
use metrics_exporter::platform::Platform;
use node_common::{env_at, get, label_sets, value};

fn host_root() -> PathBuf {
    node_common::fixture("proxmox-host")
}

fn host() -> Environment {
    env_at(&host_root(), Platform::Proxmox)
}

fn create(name: &str, env: &Environment) -> Box<dyn Collector> {
    metrics_exporter::collectors::create(name, env).unwrap_or_else(|| panic!("no collector {name}"))
}

/// One collection: what it produced and its error, if any (the samples of a failing collector
/// are kept, as the engine keeps them).
fn run(c: &mut dyn Collector) -> (Snapshot, Option<String>) {
    let mut b = SnapshotBuilder::new();
    let error = c.collect(&mut b).err().map(|e| e.to_string());
    (b.finish(Arc::default(), SystemTime::now(), 1), error)
}

fn collect_ok(name: &str, env: &Environment) -> Snapshot {
    let (s, error) = run(create(name, env).as_mut());
    assert_eq!(error, None, "{name}");
    s
}

/// Copies fixtures/proxmox-host (symlinks as symlinks) into a temporary directory.
fn host_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", host_root().display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

// ------------------------------------------------------------------------------- diskstats

const DEVICES: [&str; 7] = ["nvme0n1", "sda", "sdb", "dm-0", "dm-1", "zd0", "zd16"];

/// Per device: reads, read bytes, read s, writes, written bytes, write s, io_now, io s,
/// weighted io s (expected-node-info.md section 1).
const DISK_VALUES: [(&str, [f64; 9]); 7] = [
    (
        "nvme0n1",
        [
            8412044.0,
            354229866496.0,
            1911.822,
            19250111.0,
            762127417344.0,
            12880.44,
            3.0,
            5120.044,
            15012.377,
        ],
    ),
    (
        "sda",
        [
            1204411.0,
            51941151744.0,
            520.441,
            3310448.0,
            108257730560.0,
            4400.117,
            0.0,
            1880.223,
            5102.004,
        ],
    ),
    (
        "sdb",
        [
            90122.0,
            10486043648.0,
            211.004,
            44012.0,
            6041825280.0,
            330.551,
            0.0,
            188.044,
            541.555,
        ],
    ),
    (
        "dm-0",
        [3044.0, 12468224.0, 1.802, 11204.0, 45891584.0, 9.12, 0.0, 4.011, 10.922],
    ),
    (
        "dm-1",
        [
            1290112.0,
            51897401344.0,
            610.044,
            5990412.0,
            108211837952.0,
            52101.334,
            0.0,
            1901.122,
            52711.378,
        ],
    ),
    (
        "zd0",
        [
            220114.0,
            20537802752.0,
            90.441,
            1102331.0,
            16947429376.0,
            1201.44,
            0.0,
            610.112,
            1291.881,
        ],
    ),
    (
        "zd16",
        [
            4011.0,
            962617344.0,
            2.201,
            80112.0,
            2253426688.0,
            60.114,
            1.0,
            21.004,
            62.315,
        ],
    ),
];

const DISK_NAMES: [&str; 9] = [
    "node_disk_reads_completed_total",
    "node_disk_read_bytes_total",
    "node_disk_read_time_seconds_total",
    "node_disk_writes_completed_total",
    "node_disk_written_bytes_total",
    "node_disk_write_time_seconds_total",
    "node_disk_io_now",
    "node_disk_io_time_seconds_total",
    "node_disk_io_time_weighted_seconds_total",
];

/// (series, device, value) of the merged, discard and flush columns.
const DISK_EXTRA: &[(&str, &str, f64)] = &[
    ("node_disk_reads_merged_total", "nvme0n1", 1204.0),
    ("node_disk_reads_merged_total", "sda", 88120.0),
    ("node_disk_reads_merged_total", "sdb", 3011.0),
    ("node_disk_reads_merged_total", "zd0", 0.0),
    ("node_disk_writes_merged_total", "nvme0n1", 6002114.0),
    ("node_disk_writes_merged_total", "sda", 2650112.0),
    ("node_disk_writes_merged_total", "sdb", 90117.0),
    ("node_disk_writes_merged_total", "dm-1", 0.0),
    ("node_disk_discards_completed_total", "nvme0n1", 402115.0),
    ("node_disk_discards_merged_total", "nvme0n1", 0.0),
    ("node_disk_discarded_sectors_total", "nvme0n1", 1604455680.0),
    ("node_disk_discard_time_seconds_total", "nvme0n1", 10.221),
    ("node_disk_discards_completed_total", "zd0", 1204.0),
    ("node_disk_discarded_sectors_total", "zd0", 2200112.0),
    ("node_disk_discard_time_seconds_total", "zd0", 0.088),
    ("node_disk_discards_completed_total", "sda", 0.0),
    ("node_disk_flush_requests_total", "nvme0n1", 2210033.0),
    ("node_disk_flush_requests_time_seconds_total", "nvme0n1", 220.144),
    ("node_disk_flush_requests_total", "sda", 402211.0),
    ("node_disk_flush_requests_time_seconds_total", "sda", 90.112),
    ("node_disk_flush_requests_total", "sdb", 2211.0),
    ("node_disk_flush_requests_time_seconds_total", "sdb", 4.801),
    ("node_disk_flush_requests_total", "zd0", 99011.0),
    ("node_disk_flush_requests_time_seconds_total", "zd0", 4.021),
    ("node_disk_flush_requests_total", "zd16", 4402.0),
    ("node_disk_flush_requests_time_seconds_total", "zd16", 0.201),
    ("node_disk_flush_requests_total", "dm-0", 0.0),
];

const NOT_DEVICES: [&str; 7] = ["loop0", "nvme0n1p1", "sda1", "sda2", "sda3", "sdb1", "zd16p1"];

fn close(a: f64, b: f64) -> bool {
    node_common::close(a, b)
}

#[test]
fn disks_of_the_fixture() {
    let s = collect_ok("diskstats", &host());
    for name in DISK_NAMES.iter().chain(DISK_EXTRA.iter().map(|(n, _, _)| n)) {
        let mut devices: Vec<String> = label_sets(&s, name).into_iter().map(|l| l[0].clone()).collect();
        devices.sort();
        let mut expected: Vec<String> = DEVICES.iter().map(|d| d.to_string()).collect();
        expected.sort();
        assert_eq!(
            devices, expected,
            "{name}: whole devices only, no loop device, no partition"
        );
    }
    for (device, values) in DISK_VALUES {
        for (name, want) in DISK_NAMES.iter().zip(values) {
            let got = get(&s, name, &[device]);
            assert!(close(got, want), "{name}{{device={device}}} = {got}, expected {want}");
        }
    }
    for &(name, device, want) in DISK_EXTRA {
        let got = get(&s, name, &[device]);
        assert!(close(got, want), "{name}{{device={device}}} = {got}, expected {want}");
    }
    for trap in NOT_DEVICES {
        assert_eq!(value(&s, "node_disk_read_bytes_total", &[trap]), None, "{trap}");
    }
}

/// A tree with only proc/diskstats and sys/block entries.
fn disk_tree(diskstats: &str, whole: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(dir.path().join("proc/diskstats"), diskstats).unwrap();
    for name in whole {
        std::fs::create_dir_all(dir.path().join("sys/block").join(name)).unwrap();
    }
    dir
}

#[test]
fn older_kernel_formats() {
    // 4.18-5.4: 15 statistics (discards, no flushes).
    let tree = disk_tree(
        "   8       0 sda 10 1 2000 30 40 2 8000 50 0 60 80 5 1 64 7\n   8      16 sdb 11 0 100 1 0 0 0 0 2 3 4 0 0 0 0\n",
        &["sda", "sdb"],
    );
    let s = collect_ok("diskstats", &env_at(tree.path(), Platform::Host));
    assert_eq!(get(&s, "node_disk_read_bytes_total", &["sda"]), 2000.0 * 512.0);
    assert_eq!(get(&s, "node_disk_discarded_sectors_total", &["sda"]), 64.0);
    assert_eq!(get(&s, "node_disk_discard_time_seconds_total", &["sda"]), 0.007);
    assert_eq!(get(&s, "node_disk_discards_completed_total", &["sdb"]), 0.0);
    assert_eq!(value(&s, "node_disk_flush_requests_total", &["sda"]), None);
    // Before 4.18: 11.
    let tree = disk_tree("   8      16 sdb 11 0 100 1 0 0 0 0 2 3 4\n", &["sdb"]);
    let s = collect_ok("diskstats", &env_at(tree.path(), Platform::Host));
    assert_eq!(get(&s, "node_disk_io_now", &["sdb"]), 2.0);
    assert_eq!(get(&s, "node_disk_io_time_weighted_seconds_total", &["sdb"]), 0.004);
    assert_eq!(value(&s, "node_disk_discards_completed_total", &["sdb"]), None);
    assert_eq!(value(&s, "node_disk_flush_requests_total", &["sdb"]), None);
}

#[test]
fn a_device_name_with_a_slash_is_found_in_sysfs() {
    // The kernel prints `cciss/c0d0`; sysfs names the entry `cciss!c0d0`.
    let tree = disk_tree(
        "104 0 cciss/c0d0 1 0 8 0 0 0 0 0 0 0 0\n104 1 cciss/c0d0p1 1 0 8 0 0 0 0 0 0 0 0\n",
        &["cciss!c0d0"],
    );
    let s = collect_ok("diskstats", &env_at(tree.path(), Platform::Host));
    assert_eq!(label_sets(&s, "node_disk_read_bytes_total"), [["cciss/c0d0"]]);
}

#[test]
fn a_truncated_line_costs_its_device_only() {
    let text = std::fs::read_to_string(host_root().join("proc/diskstats")).unwrap();
    // The file cut in the middle of sdb's line, then the lines after it.
    let cut = text.replace(
        " 8      16 sdb 90122 3011 20480554 211004 44012 90117 11800440 330551 0 188044 541555 0 0 0 0 2211 4801\n",
        " 8      16 sdb 90122 3011 2048\n",
    );
    assert_ne!(cut, text);
    let tree = host_copy();
    std::fs::write(tree.path().join("proc/diskstats"), cut).unwrap();
    let (s, error) = run(create("diskstats", &env_at(tree.path(), Platform::Proxmox)).as_mut());
    let error = error.expect("an error for the malformed line");
    assert!(
        error.contains(&tree.path().join("proc/diskstats").display().to_string()),
        "{error}"
    );
    assert!(
        error.contains("1 malformed line") && error.contains("sdb 90122 3011 2048"),
        "{error}"
    );
    assert_eq!(value(&s, "node_disk_read_bytes_total", &["sdb"]), None);
    assert_eq!(get(&s, "node_disk_read_bytes_total", &["zd16"]), 962617344.0);
    assert_eq!(label_sets(&s, "node_disk_read_bytes_total").len(), 6);
}

#[test]
fn without_sysfs_no_guess() {
    // Partitions cannot be told from disks without /sys/block: an error naming it, no series.
    let tree = disk_tree("8 0 sda 1 0 8 0 0 0 0 0 0 0 0\n8 1 sda1 1 0 8 0 0 0 0 0 0 0 0\n", &[]);
    let (s, error) = run(create("diskstats", &env_at(tree.path(), Platform::Host)).as_mut());
    assert!(error.unwrap().contains("sys/block"));
    assert!(s.families.is_empty());
}

#[test]
fn nothing_in_a_container() {
    let env = env_at(&host_root(), Platform::Lxc);
    let mut c = create("diskstats", &env);
    let (s, error) = run(c.as_mut());
    assert_eq!(error, None);
    assert!(s.families.is_empty());
    assert!(c.notes()[0].contains("host's"), "{:?}", c.notes());
}

/// This machine's /proc/diskstats read around a collection: every exported value lies between
/// the two reads, and the devices are this machine's whole devices minus loop/ram/zram/fd.
#[test]
fn this_machines_disks() {
    let env = env_at(Path::new("/"), Platform::Host);
    let env = Environment {
        proc_path: "/proc".into(),
        sys_path: "/sys".into(),
        ..env
    };
    let read = || -> std::collections::BTreeMap<String, Vec<u64>> {
        std::fs::read_to_string("/proc/diskstats")
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[2].to_owned(), f[3..].iter().map(|v| v.parse().unwrap()).collect())
            })
            .collect()
    };
    let before = read();
    let s = collect_ok("diskstats", &env);
    let after = read();
    let mut whole: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            let digits_after = |p: &str| {
                n.strip_prefix(p)
                    .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
            };
            !["loop", "ram", "zram", "fd"].iter().any(|p| digits_after(p)) && before.contains_key(n)
        })
        .collect();
    whole.sort();
    let mut exported: Vec<String> = label_sets(&s, "node_disk_read_bytes_total")
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    exported.sort();
    assert_eq!(exported, whole);
    assert!(!exported.is_empty(), "this machine has no disk in /proc/diskstats");
    for device in &exported {
        let (b, a) = (&before[device], &after[device]);
        for (name, index, scale) in [
            ("node_disk_reads_completed_total", 0, 1.0),
            ("node_disk_read_bytes_total", 2, 512.0),
            ("node_disk_writes_completed_total", 4, 1.0),
            ("node_disk_written_bytes_total", 6, 512.0),
            ("node_disk_io_time_seconds_total", 9, 0.001),
        ] {
            let got = get(&s, name, &[device]);
            let (low, high) = (b[index] as f64 * scale, a[index] as f64 * scale);
            assert!(
                low - 1e-9 <= got && got <= high + 1e-9,
                "{name}{{{device}}} = {got}, reads {low}..{high}"
            );
        }
        println!("{device}: read {} bytes, written {} bytes", b[2] * 512, b[6] * 512);
    }
}

// ------------------------------------------------------------------------------------- zfs

const ARC_VALUES: &[(&str, f64)] = &[
    ("node_zfs_arc_size", 3284109952.0),
    ("node_zfs_arc_c", 3489660928.0),
    ("node_zfs_arc_c_min", 521696640.0),
    ("node_zfs_arc_c_max", 8347146240.0),
    ("node_zfs_arc_data_size", 2460312064.0),
    ("node_zfs_arc_metadata_size", 598212608.0),
    ("node_zfs_arc_hdr_size", 41557120.0),
    ("node_zfs_arc_dbuf_size", 91438080.0),
    ("node_zfs_arc_dnode_size", 70983680.0),
    ("node_zfs_arc_bonus_size", 21606400.0),
    ("node_zfs_arc_mru_size", 1104220160.0),
    ("node_zfs_arc_mfu_size", 1851392000.0),
    ("node_zfs_arc_l2_size", 0.0),
    ("node_zfs_arc_hits", 189579105.0),
    ("node_zfs_arc_iohits", 49556.0),
    ("node_zfs_arc_misses", 3005805.0),
    ("node_zfs_arc_demand_data_hits", 48112044.0),
    ("node_zfs_arc_demand_data_misses", 1904118.0),
    ("node_zfs_arc_demand_metadata_hits", 140224507.0),
    ("node_zfs_arc_demand_metadata_misses", 402337.0),
    ("node_zfs_arc_prefetch_data_hits", 1022144.0),
    ("node_zfs_arc_prefetch_data_misses", 611230.0),
    ("node_zfs_arc_prefetch_metadata_hits", 220410.0),
    ("node_zfs_arc_prefetch_metadata_misses", 88120.0),
    ("node_zfs_arc_mru_hits", 61408882.0),
    ("node_zfs_arc_mfu_hits", 128158219.0),
    ("node_zfs_arc_l2_hits", 0.0),
    ("node_zfs_arc_l2_misses", 0.0),
    ("node_zfs_arc_memory_throttles_total", 0.0),
];

const STATES: [&str; 7] = [
    "online",
    "degraded",
    "faulted",
    "offline",
    "removed",
    "unavail",
    "suspended",
];

fn check_pools(s: &Snapshot) {
    for (pool, current) in [("rpool", "online"), ("tank", "degraded")] {
        for state in STATES {
            let want = if state == current { 1.0 } else { 0.0 };
            assert_eq!(get(s, "node_zfs_zpool_state", &[pool, state]), want, "{pool} {state}");
        }
    }
    assert_eq!(
        label_sets(s, "node_zfs_zpool_state").len(),
        14,
        "two pools, seven states each"
    );
}

#[test]
fn zfs_of_the_fixture() {
    let s = collect_ok("zfs", &host());
    for &(name, want) in ARC_VALUES {
        assert_eq!(get(&s, name, &[]), want, "{name}");
    }
    let arc_families = s
        .families
        .iter()
        .filter(|f| f.desc.name.starts_with("node_zfs_arc_"))
        .count();
    assert_eq!(arc_families, ARC_VALUES.len(), "only the chosen entries");
    assert!(s.family("node_zfs_arc_hash_collisions").is_none());
    check_pools(&s);
}

#[test]
fn no_zfs_module_no_series_no_error() {
    let tree = disk_tree("", &[]);
    let env = env_at(tree.path(), Platform::Proxmox);
    let mut c = create("zfs", &env);
    let (s, error) = run(c.as_mut());
    assert_eq!(error, None);
    assert!(s.families.is_empty());
    let notes = c.notes().join(" ");
    assert!(
        notes.contains("not loaded") && notes.contains("spl/kstat/zfs"),
        "{notes}"
    );
}

#[test]
fn a_garbage_arcstats_line_costs_its_entry() {
    let tree = host_copy();
    let path = tree.path().join("proc/spl/kstat/zfs/arcstats");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replace(
        "c_max                           4    8347146240\n",
        "c_max                           4    83471garbage\n\u{1}\u{2} nonsense\n",
    );
    assert_ne!(broken, text);
    std::fs::write(&path, broken).unwrap();
    // A state file that is not a state.
    std::fs::create_dir(tree.path().join("proc/spl/kstat/zfs/bad")).unwrap();
    std::fs::write(tree.path().join("proc/spl/kstat/zfs/bad/state"), "ONLINE and more\n").unwrap();
    let (s, error) = run(create("zfs", &env_at(tree.path(), Platform::Proxmox)).as_mut());
    let error = error.expect("an error");
    assert!(
        error.contains(&path.display().to_string()) && error.contains("2 malformed line"),
        "{error}"
    );
    assert!(error.contains("1 more problem"), "{error}");
    assert_eq!(value(&s, "node_zfs_arc_c_max", &[]), None);
    assert_eq!(get(&s, "node_zfs_arc_size", &[]), 3284109952.0);
    assert_eq!(get(&s, "node_zfs_arc_c_min", &[]), 521696640.0);
    assert_eq!(value(&s, "node_zfs_zpool_state", &["bad", "online"]), None);
    check_pools(&s);
}

#[test]
fn a_pool_in_an_unlisted_state() {
    let tree = disk_tree("", &[]);
    let pool = tree.path().join("proc/spl/kstat/zfs/moving");
    std::fs::create_dir_all(&pool).unwrap();
    std::fs::write(pool.join("state"), "TRANSITIONING\n").unwrap();
    let s = collect_ok("zfs", &env_at(tree.path(), Platform::Proxmox));
    for state in STATES {
        assert_eq!(get(&s, "node_zfs_zpool_state", &["moving", state]), 0.0);
    }
    assert_eq!(get(&s, "node_zfs_zpool_state", &["moving", "transitioning"]), 1.0);
    assert_eq!(
        value(&s, "node_zfs_arc_size", &[]),
        None,
        "no arcstats file, no ARC series"
    );
}

// -------------------------------------------------------------------------------- pve_node

const CERTIFICATES: [(&str, f64); 3] = [
    ("pve-ssl.pem", 1780485631.0),
    ("pveproxy-ssl.pem", 1739858531.0),
    ("pve-root-ca.pem", 1988702045.0),
];

fn check_node_info(s: &Snapshot) {
    assert_eq!(label_sets(s, "pve_version_info"), [["8.3.0"]]);
    assert_eq!(get(s, "pve_version_info", &["8.3.0"]), 1.0);
    for (name, want) in CERTIFICATES {
        assert_eq!(
            get(s, "pve_certificate_expiry_timestamp_seconds", &[name]),
            want,
            "{name}"
        );
    }
    assert_eq!(label_sets(s, "pve_subscription_info"), [["active", "c"]]);
    assert_eq!(get(s, "pve_subscription_next_due_timestamp_seconds", &[]), 1804982400.0);
    assert_eq!(get(s, "pve_subscription_checked_timestamp_seconds", &[]), 1733313600.0);
}

#[test]
fn node_facts_of_the_fixture() {
    let env = host();
    assert!(proxmox::create("pve_node", &env).is_some());
    let mut c = create("pve_node", &env);
    let (s, error) = run(c.as_mut());
    assert_eq!(error, None);
    check_node_info(&s);
    // The same values from the cache, when nothing changed.
    let (again, error) = run(c.as_mut());
    assert_eq!(error, None);
    check_node_info(&again);
}

#[test]
fn changed_files_are_read_again_and_missing_ones_are_absent() {
    let tree = host_copy();
    let env = env_at(tree.path(), Platform::Proxmox);
    let mut c = create("pve_node", &env);
    check_node_info(&run(c.as_mut()).0);
    let status = tree.path().join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).unwrap();
    std::fs::write(
        &status,
        text.replace("Version: 8.3.0\nReplaces", "Version: 8.3.1\nReplaces"),
    )
    .unwrap();
    std::fs::remove_file(tree.path().join("etc/pve/nodes/pve1/pveproxy-ssl.pem")).unwrap();
    std::fs::remove_file(tree.path().join("etc/subscription")).unwrap();
    let (s, error) = run(c.as_mut());
    assert_eq!(error, None);
    assert_eq!(label_sets(&s, "pve_version_info"), [["8.3.1"]]);
    assert_eq!(
        value(&s, "pve_certificate_expiry_timestamp_seconds", &["pveproxy-ssl.pem"]),
        None
    );
    assert_eq!(
        get(&s, "pve_certificate_expiry_timestamp_seconds", &["pve-ssl.pem"]),
        1780485631.0
    );
    assert!(s.family("pve_subscription_info").is_none());
    assert!(s.family("pve_subscription_next_due_timestamp_seconds").is_none());
}

#[test]
fn garbage_and_unreadable_certificates_cost_their_series() {
    let tree = host_copy();
    // Written through the `local` symlink, the path Proxmox and the error name.
    let garbage = tree.path().join("etc/pve/local/pve-ssl.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    // A directory where the file should be: unreadable for root too.
    let unreadable = tree.path().join("etc/pve/pve-root-ca.pem");
    std::fs::remove_file(&unreadable).unwrap();
    std::fs::create_dir(&unreadable).unwrap();
    let (s, error) = run(create("pve_node", &env_at(tree.path(), Platform::Proxmox)).as_mut());
    let error = error.expect("an error");
    assert!(error.contains(&garbage.display().to_string()), "{error}");
    assert!(error.contains("1 more problem"), "{error}");
    assert_eq!(
        label_sets(&s, "pve_certificate_expiry_timestamp_seconds"),
        [["pveproxy-ssl.pem"]]
    );
    assert_eq!(label_sets(&s, "pve_version_info"), [["8.3.0"]]);
    assert_eq!(label_sets(&s, "pve_subscription_info"), [["active", "c"]]);
}

// ---------------------------------------------------------------------------------- binary

fn binary_output(env: Vec<(String, String)>) -> (Vec<common::Series>, String, String) {
    let out = Command::new(common::binary()).arg("--once").envs(env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        common::parse_exposition(&text),
        text,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tree_env(root: &Path) -> Vec<(String, String)> {
    let mut env = common::fixture_env("proxmox-host", "proxmox");
    for (_, value) in &mut env {
        *value = value.replace(&host_root().display().to_string(), &root.display().to_string());
    }
    env
}

#[test]
fn the_binary_over_the_fixture() {
    let (series, text, _) = binary_output(common::fixture_env("proxmox-host", "proxmox"));
    let v = |name: &str, labels: &[(&str, &str)]| {
        common::value(&series, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?}"))
    };
    for (device, values) in DISK_VALUES {
        for (name, want) in DISK_NAMES.iter().zip(values) {
            assert!(close(v(name, &[("device", device)]), want), "{name} {device}");
        }
    }
    for &(name, device, want) in DISK_EXTRA {
        assert!(close(v(name, &[("device", device)]), want), "{name} {device}");
    }
    for trap in NOT_DEVICES {
        assert_eq!(
            common::value(&series, "node_disk_read_bytes_total", &[("device", trap)]),
            None
        );
    }
    for &(name, want) in ARC_VALUES {
        assert_eq!(v(name, &[]), want, "{name}");
    }
    for (pool, current) in [("rpool", "online"), ("tank", "degraded")] {
        for state in STATES {
            let want = if state == current { 1.0 } else { 0.0 };
            assert_eq!(v("node_zfs_zpool_state", &[("zpool", pool), ("state", state)]), want);
        }
    }
    assert_eq!(v("pve_version_info", &[("version", "8.3.0")]), 1.0);
    for (name, want) in CERTIFICATES {
        assert_eq!(
            v("pve_certificate_expiry_timestamp_seconds", &[("certificate", name)]),
            want
        );
    }
    assert_eq!(v("pve_subscription_info", &[("status", "active"), ("level", "c")]), 1.0);
    assert_eq!(v("pve_subscription_next_due_timestamp_seconds", &[]), 1804982400.0);
    assert_eq!(v("pve_subscription_checked_timestamp_seconds", &[]), 1733313600.0);
    for collector in ["diskstats", "zfs", "pve_node"] {
        assert_eq!(
            v("metrics_exporter_collector_success", &[("collector", collector)]),
            1.0,
            "{collector}"
        );
    }
    // The subscription key is nowhere in the output.
    assert!(!text.contains("pve2c-3f2a0cd4a3") && !text.contains("3f2a0cd4a3"));
    // Series of the node carry the node's identity.
    let size = series.iter().find(|s| s.0 == "node_zfs_arc_size").unwrap();
    assert_eq!(size.1.get("host_name").map(String::as_str), Some("pve1"));
}

#[test]
fn the_binary_over_bad_input_serves_everything_else() {
    let tree = host_copy();
    let root = tree.path();
    let diskstats = root.join("proc/diskstats");
    let text = std::fs::read_to_string(&diskstats).unwrap();
    // Two statistics lost from zd16's line: 15 are left, a valid count on a 4.18 kernel, but
    // the other lines have 17.
    std::fs::write(
        &diskstats,
        text.replace(" 230      16 zd16 4011 0 1880112", " 230      16 zd16 4011"),
    )
    .unwrap();
    let arcstats = root.join("proc/spl/kstat/zfs/arcstats");
    let text = std::fs::read_to_string(&arcstats).unwrap();
    std::fs::write(
        &arcstats,
        text.replace("hits                            4    189579105\n", "hits 4 1 2 3\n"),
    )
    .unwrap();
    let pem = root.join("etc/pve/local/pveproxy-ssl.pem");
    std::fs::write(&pem, "garbage\n").unwrap();
    let (series, _, stderr) = binary_output(tree_env(root));
    let v = |name: &str, labels: &[(&str, &str)]| common::value(&series, name, labels);
    assert_eq!(v("node_disk_read_bytes_total", &[("device", "zd16")]), None);
    assert_eq!(
        v("node_disk_read_bytes_total", &[("device", "zd0")]),
        Some(20537802752.0)
    );
    assert_eq!(v("node_zfs_arc_hits", &[]), None);
    assert_eq!(v("node_zfs_arc_misses", &[]), Some(3005805.0));
    assert_eq!(
        v("node_zfs_zpool_state", &[("zpool", "tank"), ("state", "degraded")]),
        Some(1.0)
    );
    assert_eq!(
        v(
            "pve_certificate_expiry_timestamp_seconds",
            &[("certificate", "pveproxy-ssl.pem")]
        ),
        None
    );
    assert_eq!(
        v(
            "pve_certificate_expiry_timestamp_seconds",
            &[("certificate", "pve-ssl.pem")]
        ),
        Some(1780485631.0)
    );
    assert_eq!(v("pve_version_info", &[("version", "8.3.0")]), Some(1.0));
    for collector in ["diskstats", "zfs", "pve_node"] {
        assert_eq!(
            v("metrics_exporter_collector_success", &[("collector", collector)]),
            Some(0.0),
            "{collector}"
        );
    }
    // The other collectors are untouched by these files.
    assert_eq!(
        v("metrics_exporter_collector_success", &[("collector", "memory")]),
        Some(1.0)
    );
    for path in [&diskstats, &arcstats, &pem] {
        assert!(
            stderr.contains(&path.display().to_string()),
            "stderr does not name {}: {stderr}",
            path.display()
        );
    }
}
