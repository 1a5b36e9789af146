//! The node collectors on this machine's real /proc and /sys, checked against independent
//! reads (the files themselves, `df`). Runs as any user; Linux only.

mod node_common;

use std::path::Path;

use metrics_exporter::collectors::Environment;
use metrics_exporter::platform::{self, Platform};
use node_common::*;

fn real() -> Environment {
    let proc_path = Path::new("/proc").to_path_buf();
    let mounts = platform::read_mounts(&proc_path).unwrap();
    Environment {
        platform: Platform::Host,
        cgroup_path: platform::cgroup2_mount(&mounts, &proc_path),
        proc_path,
        sys_path: "/sys".into(),
        root_path: "/".into(),
        pve_path: "/etc/pve".into(),
        mounts,
        local_configs: Default::default(),
    }
}

#[test]
fn mem_total_matches_proc_meminfo() {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    let s = collect("memory", &real());
    assert_eq!(get(&s, "node_memory_total_bytes", &[]), (kb * 1024) as f64);
    let avail = get(&s, "node_memory_available_bytes", &[]);
    assert!(avail > 0.0 && avail <= (kb * 1024) as f64);
}

#[test]
fn root_filesystem_size_matches_df() {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size,used,avail", "/"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "df failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let (size, used, avail) = (fields[0], fields[1], fields[2]);
    let s = collect("filesystem", &real());
    let series = label_sets(&s, "node_filesystem_size_bytes");
    let root = series
        .iter()
        .find(|l| l[1] == "/")
        .unwrap_or_else(|| panic!("no / in {series:?}"));
    let labels: Vec<&str> = root.iter().map(String::as_str).collect();
    assert_eq!(get(&s, "node_filesystem_size_bytes", &labels), size);
    // Used and available move while tests write files: allow 64 MiB.
    let slack = 64.0 * 1024.0 * 1024.0;
    assert!((get(&s, "node_filesystem_usage_bytes", &labels) - used).abs() < slack);
    assert!((get(&s, "node_filesystem_avail_bytes", &labels) - avail).abs() < slack);
}

fn lo_stat(name: &str) -> f64 {
    let path = format!("/sys/class/net/lo/statistics/{name}");
    std::fs::read_to_string(&path).unwrap().trim().parse().unwrap()
}

#[test]
fn loopback_counters_between_two_sysfs_reads() {
    // Send something over lo so the counters are not trivially zero.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"ping", sock.local_addr().unwrap()).unwrap();
    let names = ["rx_bytes", "rx_packets", "tx_bytes", "tx_packets"];
    let before: Vec<f64> = names.iter().map(|n| lo_stat(n)).collect();
    let s = collect("network", &real());
    let after: Vec<f64> = names.iter().map(|n| lo_stat(n)).collect();
    let ours = [
        get(&s, "node_network_receive_bytes_total", &["lo"]),
        get(&s, "node_network_receive_packets_total", &["lo"]),
        get(&s, "node_network_transmit_bytes_total", &["lo"]),
        get(&s, "node_network_transmit_packets_total", &["lo"]),
    ];
    for i in 0..names.len() {
        assert!(
            before[i] <= ours[i] && ours[i] <= after[i],
            "{}: {} <= {} <= {}",
            names[i],
            before[i],
            ours[i],
            after[i]
        );
    }
    assert!(ours[1] > 0.0);
}

#[test]
fn process_count_close_to_proc_dirs() {
    let count = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count() as f64
    };
    let before = count();
    let s = collect("process", &real());
    let after = count();
    let ours = get(&s, "node_processes", &[]);
    let (lo, hi) = (before.min(after), before.max(after));
    assert!(
        ours >= lo - 20.0 && ours <= hi + 20.0,
        "{ours} not near {before}/{after}"
    );
    assert!(get(&s, "node_processes_threads", &[]) >= ours);
}

#[test]
fn cpu_and_load_are_present_and_sane() {
    let s = collect("cpu", &real());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let series = label_sets(&s, "node_cpu_seconds_total");
    assert!(series.len() >= 8 && series.len().is_multiple_of(8), "{}", series.len());
    assert!(series.len() / 8 >= cpus.min(1));
    assert!(get(&s, "node_cpu_seconds_total", &["0", "idle"]) > 0.0);
    let s = collect("load", &real());
    assert!(get(&s, "node_load1", &[]) >= 0.0);
}
