//! The rig's own reads of the kernel's numbers for a guest, written independently of the
//! exporter's parsers: what the tests compare the exporter's values with.
//!
//! Reads, for a guest cgroup `<rel>` (`lxc/<vmid>`, `qemu.slice/<vmid>.scope`):
//! - cgroup2 `<rel>/cpu.stat` (usage/user/system usec), `{cpu,memory,io}.pressure`,
//!   `cgroup.procs` of `<rel>` and every cgroup below it;
//! - on a hybrid host the v1 files: `cpu/<rel>/cpu.stat` (nr_periods, nr_throttled,
//!   throttled_time ns), `memory/<rel>/memory.{usage_in_bytes,stat,limit_in_bytes,
//!   memsw.limit_in_bytes}`, `memory.oom_control` of `<rel>` and every memcg below it (v1
//!   counts a kill only in the victim's memcg), `blkio/<rel>/blkio.throttle.io_service_bytes_recursive`
//!   and `io_serviced_recursive`, `pids/<rel>/pids.{current,max}`;
//! - on pure cgroup2 the same quantities from `memory.current`, `memory.stat`, `memory.max`,
//!   `memory.swap.{current,max}`, `memory.events` (hierarchical), `io.stat`, `pids.*`;
//! - `/proc/net/dev` (host side) and `/proc/<pid>/net/dev` (a guest's network namespace).
//!
//! Produces [`CgroupTruth`] and [`NetCounters`]. Parsers are pure and tested on text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cgroups::Hierarchies;

/// v1 reports "no limit" as PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// `key value` lines (cpu.stat, memory.stat, memory.events, memory.oom_control).
pub fn parse_flat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// A PSI file: `(some|full) total` in microseconds.
pub fn parse_pressure(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let kind = l.split_whitespace().next()?;
            let total = l.split_whitespace().find_map(|w| w.strip_prefix("total="))?;
            Some((kind.to_owned(), total.parse().ok()?))
        })
        .collect()
}

/// Read and write counts of one block device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Io {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// v1 `blkio.throttle.*_recursive` lines `MAJ:MIN Read N` into per-device (read, write).
pub fn parse_blkio(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [device, op, value] = words[..] else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        let entry = out.entry(device.to_owned()).or_default();
        match op {
            "Read" => entry.0 = value,
            "Write" => entry.1 = value,
            _ => {}
        }
    }
    out
}

/// v2 `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… wios=…`.
pub fn parse_io_stat(text: &str) -> BTreeMap<String, Io> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(device) = words.next() else {
            continue;
        };
        let mut io = Io::default();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rbytes" => io.read_bytes = v,
                "wbytes" => io.write_bytes = v,
                "rios" => io.reads = v,
                "wios" => io.writes = v,
                _ => {}
            }
        }
        out.insert(device.to_owned(), io);
    }
    out
}

/// Counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// `/proc/net/dev`: name to counters.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, NetCounters> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            (v.len() >= 16).then(|| {
                (
                    name.trim().to_owned(),
                    NetCounters {
                        rx_bytes: v[0],
                        rx_packets: v[1],
                        tx_bytes: v[8],
                        tx_packets: v[9],
                    },
                )
            })
        })
        .collect()
}

/// The interfaces of a network namespace as its member process `pid` sees them (`None` for
/// the reader's own namespace).
pub fn net_dev(pid: Option<i32>) -> BTreeMap<String, NetCounters> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/net/dev"),
        None => "/proc/net/dev".to_owned(),
    };
    parse_net_dev(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Everything the rig reads of one guest cgroup at one moment. `None` is "not there".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupTruth {
    pub cpu_usage_usec: Option<u64>,
    pub cpu_user_usec: Option<u64>,
    pub cpu_system_usec: Option<u64>,
    pub cpu_periods: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_usec: Option<f64>,
    /// Quota in cores (quota / period); `None` without a quota.
    pub cpu_limit_cores: Option<f64>,
    pub memory_usage: Option<u64>,
    pub memory_inactive_file: Option<u64>,
    /// All file cache (v1 total_cache; v2 memory.stat file).
    pub memory_file: Option<u64>,
    pub swap: Option<u64>,
    pub memory_limit: Option<u64>,
    /// Swap alone (v1: memsw limit - memory limit; v2 memory.swap.max).
    pub swap_limit: Option<u64>,
    pub oom_kills: Option<u64>,
    /// (`cpu`|`memory`|`io`, `some`|`full`) to microseconds.
    pub pressure: BTreeMap<(String, String), u64>,
    pub io: BTreeMap<String, Io>,
    pub tasks: Option<u64>,
    pub tasks_max: Option<u64>,
    pub processes: usize,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// Every directory at and below `dir`.
pub fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Distinct PIDs in `cgroup.procs` of `dir` and below.
pub fn processes_below(dir: &Path) -> usize {
    let mut pids = std::collections::BTreeSet::new();
    for d in subtree(dir) {
        for pid in read(&d.join("cgroup.procs")).unwrap_or_default().lines() {
            pids.insert(pid.trim().to_owned());
        }
    }
    pids.len()
}

/// Reads one guest cgroup (`relative` to each hierarchy's mount).
pub fn read_cgroup(cgroups: &Hierarchies, relative: &str) -> CgroupTruth {
    let mut t = CgroupTruth::default();
    let Some(unified) = cgroups.unified().map(|u| u.join(relative)) else {
        return t;
    };
    let cpu = parse_flat(&read(&unified.join("cpu.stat")).unwrap_or_default());
    t.cpu_usage_usec = cpu.get("usage_usec").copied();
    t.cpu_user_usec = cpu.get("user_usec").copied();
    t.cpu_system_usec = cpu.get("system_usec").copied();
    for resource in ["cpu", "memory", "io"] {
        let p = parse_pressure(&read(&unified.join(format!("{resource}.pressure"))).unwrap_or_default());
        for (kind, usec) in p {
            t.pressure.insert((resource.to_owned(), kind), usec);
        }
    }
    t.processes = processes_below(&unified);

    match cgroups.v1("cpu") {
        Some(root) => {
            let dir = root.join(relative);
            let stat = parse_flat(&read(&dir.join("cpu.stat")).unwrap_or_default());
            t.cpu_periods = stat.get("nr_periods").copied();
            t.cpu_throttled_periods = stat.get("nr_throttled").copied();
            t.cpu_throttled_usec = stat.get("throttled_time").map(|ns| *ns as f64 / 1000.0);
            let quota: Option<i64> = read(&dir.join("cpu.cfs_quota_us")).and_then(|s| s.trim().parse().ok());
            let period = read_u64(&dir.join("cpu.cfs_period_us"));
            if let (Some(q), Some(p)) = (quota, period)
                && q > 0
            {
                t.cpu_limit_cores = Some(q as f64 / p as f64);
            }
        }
        None => {
            t.cpu_periods = cpu.get("nr_periods").copied();
            t.cpu_throttled_periods = cpu.get("nr_throttled").copied();
            t.cpu_throttled_usec = cpu.get("throttled_usec").map(|u| *u as f64);
            if let Some(max) = read(&unified.join("cpu.max"))
                && let Some((q, p)) = max.trim().split_once(' ')
                && let (Ok(q), Ok(p)) = (q.parse::<f64>(), p.parse::<f64>())
            {
                t.cpu_limit_cores = Some(q / p);
            }
        }
    }

    match cgroups.v1("memory") {
        Some(root) => {
            let dir = root.join(relative);
            t.memory_usage = read_u64(&dir.join("memory.usage_in_bytes"));
            let stat = parse_flat(&read(&dir.join("memory.stat")).unwrap_or_default());
            t.memory_inactive_file = stat.get("total_inactive_file").copied();
            t.memory_file = stat.get("total_cache").copied();
            t.swap = stat.get("total_swap").copied();
            let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
            t.memory_limit = limit;
            let memsw = read_u64(&dir.join("memory.memsw.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
            t.swap_limit = match (memsw, limit) {
                (Some(memsw), Some(limit)) => Some(memsw.saturating_sub(limit)),
                (Some(memsw), None) => Some(memsw),
                _ => None,
            };
            let kills: Vec<u64> = subtree(&dir)
                .iter()
                .filter_map(|d| read(&d.join("memory.oom_control")))
                .filter_map(|text| parse_flat(&text).get("oom_kill").copied())
                .collect();
            t.oom_kills = (!kills.is_empty()).then(|| kills.iter().sum());
        }
        None => {
            t.memory_usage = read_u64(&unified.join("memory.current"));
            let stat = parse_flat(&read(&unified.join("memory.stat")).unwrap_or_default());
            t.memory_inactive_file = stat.get("inactive_file").copied();
            t.memory_file = stat.get("file").copied();
            t.swap = read_u64(&unified.join("memory.swap.current"));
            t.memory_limit = read_u64(&unified.join("memory.max"));
            t.swap_limit = read_u64(&unified.join("memory.swap.max"));
            t.oom_kills = read(&unified.join("memory.events")).and_then(|e| parse_flat(&e).get("oom_kill").copied());
        }
    }

    match cgroups.v1("blkio") {
        Some(root) => {
            let dir = root.join(relative);
            let bytes = parse_blkio(&read(&dir.join("blkio.throttle.io_service_bytes_recursive")).unwrap_or_default());
            let ops = parse_blkio(&read(&dir.join("blkio.throttle.io_serviced_recursive")).unwrap_or_default());
            for (device, (r, w)) in bytes {
                let (reads, writes) = ops.get(&device).copied().unwrap_or_default();
                t.io.insert(
                    device,
                    Io {
                        read_bytes: r,
                        write_bytes: w,
                        reads,
                        writes,
                    },
                );
            }
        }
        None => t.io = parse_io_stat(&read(&unified.join("io.stat")).unwrap_or_default()),
    }

    let pids = cgroups.v1("pids").map(|r| r.join(relative)).unwrap_or(unified);
    t.tasks = read_u64(&pids.join("pids.current"));
    t.tasks_max = read_u64(&pids.join("pids.max"));
    t
}

/// v1 `cpuacct` of a cgroup, in seconds: user and system from `cpuacct.stat` (USER_HZ ticks;
/// the kernel scales its tick-sampled split to the exact total there, with `cputime_adjust`,
/// as cgroup2's `cpu.stat` user_usec/system_usec are) and the exact total `cpuacct.usage` (ns).
/// `cpuacct.usage_user`/`usage_sys` are the unscaled samples and may differ by several ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cpuacct {
    pub user: f64,
    pub system: f64,
    pub usage: f64,
}

/// `None` when the cpuacct controller is not a v1 hierarchy or the cgroup is gone.
pub fn read_cpuacct(cgroups: &Hierarchies, relative: &str) -> Option<Cpuacct> {
    let dir = cgroups.v1("cpuacct")?.join(relative);
    let stat = parse_flat(&read(&dir.join("cpuacct.stat"))?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(Cpuacct {
        user: *stat.get("user")? as f64 / hz,
        system: *stat.get("system")? as f64 / hz,
        usage: read_u64(&dir.join("cpuacct.usage"))? as f64 / 1e9,
    })
}

/// `(major, minor)` of a block device node such as /dev/loop3, as `MAJ:MIN`.
pub fn device_number(device: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(device).ok()?.rdev();
    Some(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
}

/// `statvfs` size of the filesystem at `path`, in bytes (f_blocks × f_frsize).
pub fn filesystem_size(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes only into the zeroed struct we pass; c is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_blocks * s.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        let cpu = parse_flat("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\n");
        assert_eq!(cpu["usage_usec"], 1500);
        assert_eq!(cpu["nr_periods"], 7);
        let p = parse_pressure(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=45\n",
        );
        assert_eq!(p["some"], 123);
        assert_eq!(p["full"], 45);
        let b = parse_blkio("7:0 Read 2097152\n7:0 Write 4096\n7:0 Sync 1\n7:0 Total 2101248\nTotal 2101248\n");
        assert_eq!(b["7:0"], (2097152, 4096));
        assert_eq!(b.len(), 1);
        let io = parse_io_stat("254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(
            io["254:0"],
            Io {
                read_bytes: 10,
                write_bytes: 20,
                reads: 1,
                writes: 2
            }
        );
    }

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
veth9101i0:    1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0\n";
        let n = parse_net_dev(text);
        assert_eq!(
            n["veth9101i0"],
            NetCounters {
                rx_bytes: 1000,
                rx_packets: 10,
                tx_bytes: 2000,
                tx_packets: 20
            }
        );
    }

    #[test]
    fn own_cgroup_reads() {
        // This process's own filesystem has a size; a missing cgroup reads as nothing.
        assert!(filesystem_size(Path::new("/")).is_some_and(|s| s > 0));
        let h = Hierarchies::read().unwrap();
        let t = read_cgroup(&h, "no/such/cgroup/of/the/rig");
        assert_eq!(t.cpu_usage_usec, None);
        assert_eq!(t.memory_usage, None);
        assert_eq!(t.processes, 0);
    }
}
