//! Every node collector, created through `node::create`, against the two fixture trees; the
//! expected values come from the fixtures' expected.json (and expected.md where it says more).

mod node_common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter::collectors::CATALOGUE;
use metrics_exporter::collectors::node::filesystem::{self, FilesystemCollector, FsStats};
use metrics_exporter::platform::Platform;
use node_common::*;
use serde_json::Value as Json;

fn expected(tree: &str) -> Json {
    let text = std::fs::read_to_string(fixture(tree).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn num(j: &Json) -> f64 {
    j.as_f64().unwrap_or_else(|| panic!("not a number: {j}"))
}

fn lxc() -> metrics_exporter::collectors::Environment {
    env_at(&fixture("lxc-container"), Platform::Lxc)
}

fn host() -> metrics_exporter::collectors::Environment {
    env_at(&fixture("proxmox-host"), Platform::Proxmox)
}

#[test]
fn every_catalogue_name_has_a_collector() {
    let env = lxc();
    // Node collectors apply to plain hosts; the Proxmox ones (guests, cluster) do not.
    for info in CATALOGUE {
        let c = metrics_exporter::collectors::create(info.name, &env).unwrap();
        assert_eq!(c.name(), info.name);
        let is_node = metrics_exporter::collectors::node::create(info.name, &env).is_some();
        assert_eq!(is_node, info.platforms.contains(&Platform::Host), "{}", info.name);
    }
    assert!(metrics_exporter::collectors::node::create("nonsense", &env).is_none());
}

// ---------------------------------------------------------------- LXC container

#[test]
fn lxc_memory_is_the_containers() {
    let e = expected("lxc-container");
    let s = collect("memory", &lxc());
    assert_eq!(get(&s, "node_memory_total_bytes", &[]), 2147483648.0);
    assert_eq!(get(&s, "node_memory_available_bytes", &[]), 1733681152.0);
    assert_eq!(get(&s, "node_memory_free_bytes", &[]), 910553088.0);
    assert_eq!(get(&s, "node_memory_usage_bytes", &[]), 413802496.0);
    assert_eq!(get(&s, "node_memory_swap_total_bytes", &[]), 536870912.0);
    assert_eq!(get(&s, "node_memory_swap_free_bytes", &[]), 532676608.0);
    for (metric, key) in [
        ("node_memory_total_bytes", "memory_total_bytes"),
        ("node_memory_available_bytes", "memory_available_bytes"),
        ("node_memory_free_bytes", "memory_free_bytes"),
        ("node_memory_usage_bytes", "memory_usage_bytes"),
        ("node_memory_swap_total_bytes", "swap_total_bytes"),
        ("node_memory_swap_free_bytes", "swap_free_bytes"),
    ] {
        assert_eq!(get(&s, metric, &[]), num(&e[key]), "{metric}");
    }
    let notes = collector("memory", &lxc()).notes().join(" ");
    assert!(notes.contains("lxcfs"), "{notes}");
}

#[test]
fn lxc_memory_without_lxcfs_comes_from_the_cgroup_and_never_from_the_host() {
    let mut env = lxc();
    env.mounts.retain(|m| m.mount_point != "/proc/meminfo");
    let c = collector("memory", &env);
    let notes = c.notes().join(" ");
    assert!(
        notes.contains("not an lxcfs mount") && notes.contains("memory.current"),
        "{notes}"
    );
    let s = collect("memory", &env);
    // memory.current 1236930560 - (active_file 331685888 + inactive_file 491442176)
    assert_eq!(get(&s, "node_memory_usage_bytes", &[]), 413802496.0);
    // memory.max is "max" at the namespace root: no total, free or available at all.
    for absent in [
        "node_memory_total_bytes",
        "node_memory_free_bytes",
        "node_memory_available_bytes",
    ] {
        assert_eq!(value(&s, absent, &[]), None, "{absent}");
    }
}

#[test]
fn lxc_cpu_is_cpu_stat_user_and_system_only() {
    let e = expected("lxc-container");
    let s = collect("cpu", &lxc());
    assert_eq!(get(&s, "node_cpu_seconds_total", &["user"]), 31278.598398);
    assert_eq!(get(&s, "node_cpu_seconds_total", &["system"]), 14811.836854);
    assert_eq!(
        get(&s, "node_cpu_seconds_total", &["user"]),
        num(&e["cpu_user_seconds"])
    );
    let user_plus_system =
        get(&s, "node_cpu_seconds_total", &["user"]) + get(&s, "node_cpu_seconds_total", &["system"]);
    // usage_usec is accounted separately from user_usec + system_usec: they differ by 1 µs here.
    assert!(
        (user_plus_system - num(&e["cpu_seconds_total"])).abs() < 2e-6,
        "{user_plus_system}"
    );
    let modes = label_sets(&s, "node_cpu_seconds_total");
    assert_eq!(modes, [["user"], ["system"]]);
    assert_eq!(s.family("node_cpu_seconds_total").unwrap().desc.labels, ["mode"]);
}

#[test]
fn lxc_has_no_load_series_and_says_why() {
    let c = collector("load", &lxc());
    assert!(c.notes().join(" ").contains("host's"));
    let s = collect("load", &lxc());
    assert_eq!(s.series_count(), 0);
    for absent in expected("lxc-container")["_absent"].as_array().unwrap() {
        let name = format!("node_{}", absent.as_str().unwrap());
        assert!(s.family(&name).is_none());
    }
}

#[test]
fn lxc_processes_and_threads() {
    let e = expected("lxc-container");
    let s = collect("process", &lxc());
    assert_eq!(get(&s, "node_processes", &[]), 20.0);
    assert_eq!(get(&s, "node_processes_threads", &[]), 24.0);
    assert_eq!(get(&s, "node_processes", &[]), num(&e["processes"]));
    assert_eq!(get(&s, "node_processes_threads", &[]), num(&e["threads"]));
}

#[test]
fn lxc_network_is_the_containers_interfaces() {
    let e = expected("lxc-container");
    let s = collect("network", &lxc());
    let devices: Vec<_> = label_sets(&s, "node_network_receive_bytes_total").concat();
    assert_eq!(devices, ["lo", "eth0", "eth1"]);
    check_net(&s, &e["net"]);
    assert_eq!(get(&s, "node_network_transmit_bytes_total", &["eth0"]), 318442907166.0);
}

fn check_net(s: &metrics_exporter::model::Snapshot, net: &Json) {
    let mut checked = 0;
    for (dev, counters) in net.as_object().unwrap() {
        for (key, expected) in counters.as_object().unwrap() {
            let (dir, what) = key.split_once('_').unwrap();
            let dir = if dir == "rx" { "receive" } else { "transmit" };
            let name = format!("node_network_{dir}_{what}_total");
            assert_eq!(get(s, &name, &[dev]), num(expected), "{name}{{device={dev}}}");
            checked += 1;
        }
    }
    assert!(checked >= 24, "only {checked} values checked");
}

#[test]
fn lxc_pressure_from_the_namespace_root_with_cpu_full() {
    let s = collect("pressure", &lxc());
    assert_eq!(get(&s, "node_pressure_cpu_waiting_seconds_total", &[]), 1871.004556);
    assert_eq!(get(&s, "node_pressure_cpu_stalled_seconds_total", &[]), 1288.101224);
    assert_eq!(get(&s, "node_pressure_memory_waiting_seconds_total", &[]), 48.702991);
    assert_eq!(get(&s, "node_pressure_memory_stalled_seconds_total", &[]), 31.95011);
    assert_eq!(get(&s, "node_pressure_io_waiting_seconds_total", &[]), 211.201448);
    assert_eq!(get(&s, "node_pressure_io_stalled_seconds_total", &[]), 187.102119);
}

fn selection(env: &metrics_exporter::collectors::Environment) -> Vec<[String; 3]> {
    let mounts = metrics_exporter::platform::read_mounts(&env.proc_path).unwrap();
    filesystem::select_mounts(&mounts)
        .into_iter()
        .map(|m| [m.mount_point.clone(), m.fs_type.clone(), m.source.clone()])
        .collect()
}

fn expected_fs(list: &Json) -> Vec<[String; 3]> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| ["mountpoint", "fstype", "device"].map(|k| f[k].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn lxc_filesystem_selection() {
    let got = selection(&lxc());
    let want = expected_fs(&expected("lxc-container")["filesystems"]);
    let sorted = |mut v: Vec<[String; 3]>| {
        v.sort();
        v
    };
    assert_eq!(sorted(got.clone()), sorted(want));
    assert!(got.iter().any(|f| f[0] == "/srv/www data"));
}

/// A fake statvfs: every path answers with fixed numbers, so the emitted series (labels and
/// arithmetic) can be checked on the fixture's mount table.
#[test]
fn lxc_filesystem_collector_emits_the_selected_mounts() {
    let env = lxc();
    let root = env.root_path.clone();
    let stat: filesystem::StatFn = Arc::new(move |p: &Path| {
        assert!(p.starts_with(&root), "statvfs outside the tree: {}", p.display());
        Ok(FsStats {
            blocks: 1000,
            bfree: 400,
            bavail: 300,
            frsize: 4096,
        })
    });
    let mut c = FilesystemCollector::with_statvfs(&env, stat, Duration::from_secs(2));
    let s = run(&mut c);
    let labels = ["/dev/mapper/pve-vm--101--disk--1", "/srv/www data", "ext4"];
    assert_eq!(get(&s, "node_filesystem_size_bytes", &labels), 4096000.0);
    assert_eq!(get(&s, "node_filesystem_usage_bytes", &labels), 600.0 * 4096.0);
    assert_eq!(get(&s, "node_filesystem_avail_bytes", &labels), 300.0 * 4096.0);
    assert_eq!(label_sets(&s, "node_filesystem_size_bytes").len(), 4);
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_timeouts_total", &[]), 0.0);
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_hung_mounts", &[]), 0.0);
}

/// The real statvfs on the fixture tree: mount points that do not exist there (ENOENT) are
/// skipped, the ones that do exist as directories are reported.
#[test]
fn lxc_filesystem_collector_with_real_statvfs_skips_missing_paths() {
    let s = collect("filesystem", &lxc());
    let root = fixture("lxc-container");
    for labels in label_sets(&s, "node_filesystem_size_bytes") {
        assert!(root.join(labels[1].trim_start_matches('/')).exists(), "{labels:?}");
    }
    assert_eq!(get(&s, "metrics_exporter_filesystem_statvfs_timeouts_total", &[]), 0.0);
}

// ---------------------------------------------------------------- Proxmox host

#[test]
fn host_cpu_per_cpu_modes_sum_to_expected() {
    let e = &expected("proxmox-host")["host"];
    let s = collect("cpu", &host());
    let hz = metrics_exporter::collectors::node::cpu::ticks_per_second();
    assert_eq!(hz, 100.0, "the fixture is written for USER_HZ 100");
    let modes = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    for mode in modes {
        let sum = get(&s, "node_cpu_seconds_total", &["0", mode]) + get(&s, "node_cpu_seconds_total", &["1", mode]);
        let want = num(&e["cpu_seconds"][mode]);
        assert!((sum - want).abs() < 1e-6, "{mode}: {sum} != {want}");
    }
    assert_eq!(get(&s, "node_cpu_seconds_total", &["0", "user"]), 131112.16);
    assert_eq!(
        label_sets(&s, "node_cpu_seconds_total").len(),
        16,
        "2 CPUs x 8 modes, no guest mode"
    );
    assert!(value(&s, "node_cpu_seconds_total", &["0", "guest"]).is_none());
}

#[test]
fn host_memory() {
    let e = &expected("proxmox-host")["host"];
    let s = collect("memory", &host());
    assert_eq!(get(&s, "node_memory_total_bytes", &[]), 16694292480.0);
    assert_eq!(get(&s, "node_memory_free_bytes", &[]), 3735529472.0);
    assert_eq!(get(&s, "node_memory_available_bytes", &[]), 8290040832.0);
    assert_eq!(get(&s, "node_memory_usage_bytes", &[]), 8404251648.0);
    assert_eq!(
        get(&s, "node_memory_swap_total_bytes", &[]),
        num(&e["swap_total_bytes"])
    );
    assert_eq!(get(&s, "node_memory_swap_free_bytes", &[]), num(&e["swap_free_bytes"]));
}

#[test]
fn host_load() {
    let s = collect("load", &host());
    assert_eq!(get(&s, "node_load1", &[]), 0.74);
    assert_eq!(get(&s, "node_load5", &[]), 0.81);
    assert_eq!(get(&s, "node_load15", &[]), 0.77);
}

#[test]
fn host_network() {
    let e = &expected("proxmox-host")["host"];
    let s = collect("network", &host());
    assert_eq!(label_sets(&s, "node_network_receive_bytes_total").len(), 10);
    check_net(&s, &e["net"]);
    // The /proc/net/dev drop column (rx_dropped 12774 + rx_missed_errors 211).
    assert_eq!(get(&s, "node_network_receive_drop_total", &["eno1"]), 12985.0);
}

#[test]
fn host_pressure_has_no_cpu_stalled() {
    let s = collect("pressure", &host());
    assert_eq!(get(&s, "node_pressure_cpu_waiting_seconds_total", &[]), 4475.687443);
    assert!(s.family("node_pressure_cpu_stalled_seconds_total").is_none());
    assert_eq!(get(&s, "node_pressure_memory_waiting_seconds_total", &[]), 2006.834267);
    assert_eq!(get(&s, "node_pressure_memory_stalled_seconds_total", &[]), 1410.738271);
    assert_eq!(get(&s, "node_pressure_io_waiting_seconds_total", &[]), 7175.549665);
    assert_eq!(get(&s, "node_pressure_io_stalled_seconds_total", &[]), 6240.024568);
    assert!(
        collector("pressure", &host())
            .notes()
            .join(" ")
            .contains("zero by kernel design")
    );
}

#[test]
fn host_processes() {
    let s = collect("process", &host());
    // The host tree holds one numeric /proc directory (1); loadavg says 2/389.
    assert_eq!(get(&s, "node_processes", &[]), 1.0);
    assert_eq!(get(&s, "node_processes_threads", &[]), 389.0);
}

#[test]
fn host_filesystem_selection() {
    let got = selection(&host());
    let want = expected_fs(&expected("proxmox-host")["host"]["filesystems"]);
    assert_eq!(got, want);
    assert!(got.iter().any(|f| f[0] == "/mnt/media library"));
    assert!(!got.iter().any(|f| f[0] == "/etc/pve"));
}

#[test]
fn plain_host_platform_reads_proc_too() {
    let env = env_at(&fixture("proxmox-host"), Platform::Host);
    let s = collect("load", &env);
    assert_eq!(get(&s, "node_load1", &[]), 0.74);
    let s = collect("cpu", &env);
    assert_eq!(label_sets(&s, "node_cpu_seconds_total").len(), 16);
}

// ------------------------------------- LXC container on a host with cgroup v1 controllers only

/// The container of `fixtures/lxc-container-cgroup-v1` as the exporter sees it at start: the
/// cgroup2 hierarchy is looked up in the mount table (there is none), never assumed.
fn lxc_v1() -> metrics_exporter::collectors::Environment {
    let mut env = env_at(&fixture("lxc-container-cgroup-v1"), Platform::Lxc);
    env.cgroup_path = metrics_exporter::platform::cgroup2_mount(&env.mounts, &env.proc_path);
    assert_eq!(env.cgroup_path, None, "the fixture has no cgroup2 mount");
    env
}

#[test]
fn lxc_without_cgroup2_takes_cpu_from_the_v1_cpuacct_hierarchy() {
    let env = lxc_v1();
    let c = collector("cpu", &env);
    let notes = c.notes().join(" ");
    assert!(notes.contains("sys/fs/cgroup/cpuacct/cpuacct.stat"), "{notes}");
    let s = collect("cpu", &env);
    // cpuacct.stat: user 106, system 19 (USER_HZ ticks).
    let hz = metrics_exporter::collectors::node::cpu::ticks_per_second();
    assert_eq!(get(&s, "node_cpu_seconds_total", &["user"]), 106.0 / hz);
    assert_eq!(get(&s, "node_cpu_seconds_total", &["system"]), 19.0 / hz);
    assert_eq!(label_sets(&s, "node_cpu_seconds_total"), [["user"], ["system"]]);
    // The split is of the cgroup's whole CPU time: within a tick per mode of cpuacct.usage.
    let usage_ns: f64 =
        std::fs::read_to_string(fixture("lxc-container-cgroup-v1").join("sys/fs/cgroup/cpuacct/cpuacct.usage"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let sum = get(&s, "node_cpu_seconds_total", &["user"]) + get(&s, "node_cpu_seconds_total", &["system"]);
    assert!((sum - usage_ns / 1e9).abs() <= 2.0 / hz, "{sum} vs {}", usage_ns / 1e9);
}

#[test]
fn lxc_without_cgroup2_counts_its_pid_namespace_and_v1_pids() {
    let env = lxc_v1();
    let s = collect("process", &env);
    // proc/{1,23,26,27,112}: init, syslogd, getty, init (console), the reader.
    assert_eq!(get(&s, "node_processes", &[]), 5.0);
    // sys/fs/cgroup/pids/pids.current.
    assert_eq!(get(&s, "node_processes_threads", &[]), 6.0);
    // Without the v1 pids hierarchy the thread count is absent, the process count is not.
    let mut no_pids = env.clone();
    no_pids.mounts.retain(|m| m.mount_point != "/sys/fs/cgroup/pids");
    let c = collector("process", &no_pids);
    assert!(c.notes().join(" ").contains("absent"), "{:?}", c.notes());
    let s = collect("process", &no_pids);
    assert_eq!(get(&s, "node_processes", &[]), 5.0);
    assert_eq!(value(&s, "node_processes_threads", &[]), None);
}

#[test]
fn lxc_without_cgroup2_has_no_pressure_and_says_why() {
    let env = lxc_v1();
    let c = collector("pressure", &env);
    assert!(c.notes().join(" ").contains("cgroup2"), "{:?}", c.notes());
    // Succeeds with nothing: /proc/pressure in a container is the host's.
    let s = collect("pressure", &env);
    assert_eq!(s.series_count(), 0, "{:?}", names(&s));
}

#[test]
fn lxc_without_any_cgroup_mount_cpu_fails_and_names_both_hierarchies() {
    let mut env = lxc_v1();
    env.mounts.retain(|m| m.fs_type != "cgroup");
    let mut b = metrics_exporter::model::SnapshotBuilder::new();
    let e = collector("cpu", &env).collect(&mut b).unwrap_err().to_string();
    assert!(e.contains("cgroup2") && e.contains("cpuacct"), "{e}");
    // Processes still come from the PID namespace.
    assert_eq!(get(&collect("process", &env), "node_processes", &[]), 5.0);
}

fn mount_points(env: &metrics_exporter::collectors::Environment) -> Vec<[String; 3]> {
    let mut got = selection(env);
    got.sort();
    got
}

#[test]
fn bind_mounts_of_one_filesystem_are_one_filesystem_at_the_mount_nearest_the_root() {
    // The busybox template binds the host's /usr/lib and /usr/lib64 (one device, 254:0) at
    // /lib, /usr/lib, /lib64 and /usr/lib64; the root is the raw image on /dev/loop0.
    let s = |a: &str, b: &str, c: &str| [a.to_owned(), b.to_owned(), c.to_owned()];
    assert_eq!(
        mount_points(&lxc_v1()),
        [s("/", "ext4", "/dev/loop0"), s("/lib", "ext4", "/dev/vda")]
    );
    // On directory storage the root is a subvol directory of that same device: one filesystem.
    let dir = env_at(&fixture("lxc-container-dir-storage"), Platform::Lxc);
    assert_eq!(mount_points(&dir), [s("/", "ext4", "/dev/vda")]);
}

/// LXC 5 on a hybrid host mounts cgroup2 at /sys/fs/cgroup/unified beside the v1 hierarchies
/// (seen on this project's machine): the unified root has `cgroup.procs` but no pids
/// controller, so threads come from the v1 pids hierarchy.
#[test]
fn lxc_on_a_hybrid_host_takes_threads_from_v1_pids_where_cgroup2_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture("lxc-container-cgroup-v1").join("."))
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
    // The line LXC 5.0.2 printed there, and the unified root's processes.
    let mountinfo = root.join("proc/self/mountinfo");
    let mut text = std::fs::read_to_string(&mountinfo).unwrap();
    text.push_str("109 99 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:36 - cgroup2 none rw\n");
    std::fs::write(&mountinfo, text).unwrap();
    std::fs::create_dir_all(root.join("sys/fs/cgroup/unified")).unwrap();
    std::fs::write(root.join("sys/fs/cgroup/unified/cgroup.procs"), "1\n23\n26\n27\n112\n").unwrap();
    let mut env = env_at(root, Platform::Lxc);
    env.cgroup_path = metrics_exporter::platform::cgroup2_mount(&env.mounts, &env.proc_path);
    assert_eq!(env.cgroup_path, Some(root.join("sys/fs/cgroup/unified")));
    let s = collect("process", &env);
    assert_eq!(get(&s, "node_processes", &[]), 5.0);
    assert_eq!(get(&s, "node_processes_threads", &[]), 6.0);
}
