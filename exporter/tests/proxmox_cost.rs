//! Collection cost of the `guests` collector per guest, printed for the closing report:
//! over a synthetic host tree of systemd containers and VMs (any user; `cgroup.stat` as Linux
//! 6.11+ and as 6.8 print it) and over N real cgroups on this kernel (root).
//! Both are `#[ignore]`: run with
//! `cargo test --release -p metrics-exporter --test proxmox_cost -- --ignored --nocapture
//! --test-threads=1` (`SYNTHETIC_GUESTS=1000` for one size of synthetic tree only).

mod common;

use std::time::Instant;

use metrics_exporter::collectors::proxmox::synthetic::{self, CgroupStatFormat};
use metrics_exporter::collectors::proxmox::{self};
use metrics_exporter::model::SnapshotBuilder;

/// CPU time (user + system) of this thread, in microseconds.
fn thread_cpu_usec() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

/// Steady-state collections measured per case: a multiple of every "each N collections"
/// period of the collector (limits every 8), so that the mean includes their share.
const ROUNDS: usize = 32;

/// Wall and CPU µs of steady-state collections.
struct Measured {
    best_wall: f64,
    best_cpu: f64,
    /// Over all rounds: includes the collections that do periodic work, which the best of
    /// them leaves out.
    mean_cpu: f64,
}

fn measure(collector: &mut dyn metrics_exporter::collectors::Collector, rounds: usize) -> Measured {
    collector
        .collect(&mut SnapshotBuilder::new())
        .expect("first collection");
    let mut m = Measured {
        best_wall: f64::MAX,
        best_cpu: f64::MAX,
        mean_cpu: 0.0,
    };
    for _ in 0..rounds {
        let (t, c) = (Instant::now(), thread_cpu_usec());
        let mut out = SnapshotBuilder::new();
        collector.collect(&mut out).expect("collection");
        let cpu = thread_cpu_usec() - c;
        let wall = t.elapsed().as_secs_f64() * 1e6;
        m.best_wall = m.best_wall.min(wall);
        m.best_cpu = m.best_cpu.min(cpu);
        m.mean_cpu += cpu / rounds as f64;
    }
    m
}

/// The kernel's share: the files this process keeps open under `roots` (the collector's) and
/// reads on every collection (not the limit files, read every eighth), each read once with
/// pread, best of `rounds`, in CPU µs, and how many files that is.
fn pread_floor(roots: &[&std::path::Path], rounds: usize) -> (f64, usize) {
    // The collector's own descriptors, by number (pread leaves their offsets alone): a second
    // descriptor per file would not fit under this machine's RLIMIT_NOFILE at 1000 guests.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse().ok()?,
                std::fs::read_link(e.path()).ok()?,
            ))
        })
        .filter(|(_, p): &(i32, std::path::PathBuf)| roots.iter().any(|r| p.starts_with(r)) && p.is_file())
        .filter(|(_, p)| {
            let name = p.file_name().unwrap().to_str().unwrap();
            ![
                "cpu.max",
                "memory.max",
                "memory.high",
                "memory.swap.max",
                "pids.max",
                "memory.limit_in_bytes",
            ]
            .contains(&name)
        })
        .map(|(fd, _)| fd)
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let c = thread_cpu_usec();
        for &fd in &fds {
            // SAFETY: pread into a buffer we own, of its length, on a descriptor of this
            // process that stays open (the collector holds it) while this runs.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            assert!(n >= 0, "pread of descriptor {fd} failed");
        }
        best = best.min(thread_cpu_usec() - c);
    }
    (best, fds.len())
}

#[test]
#[ignore = "measurement: prints per-guest collection cost over a synthetic host tree"]
fn synthetic_collection_cost() {
    // SYNTHETIC_GUESTS=1000 measures one size only (writing a tree of 1000 guests takes a while).
    let sizes: Vec<usize> = match std::env::var("SYNTHETIC_GUESTS") {
        Ok(n) => vec![n.parse().expect("SYNTHETIC_GUESTS is a number")],
        Err(_) => vec![10, 100, 1000],
    };
    for format in [CgroupStatFormat::Linux6_11, CgroupStatFormat::Linux6_8] {
        for &n in &sizes {
            synthetic_cost(n, format);
        }
    }
}

fn synthetic_cost(n: usize, format: CgroupStatFormat) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = synthetic::Spec::new(n);
    spec.cgroup_stat = format;
    let host = synthetic::generate(dir.path(), &spec).unwrap();
    let cgroups: usize = host.guests.iter().map(|g| g.cgroups).sum();
    let mut c = proxmox::create("guests", &host.environment()).unwrap();
    let m = measure(c.as_mut(), ROUNDS);
    println!(
        "synthetic tree N={n} ({cgroups} guest cgroups), cgroup.stat as Linux {}: {:.0} µs wall, {:.0} µs CPU per collection (best of {ROUNDS}); {:.2} µs CPU per guest (mean {:.2})",
        format.as_str(),
        m.best_wall,
        m.best_cpu,
        m.best_cpu / n as f64,
        m.mean_cpu / n as f64,
    );
    // What the kernel alone charges for the files read on every collection.
    let (floor, files) = pread_floor(&[dir.path()], 10);
    println!(
        "  kernel floor: one pread of each of the {files} files kept open = {floor:.0} µs CPU; {:.2} µs per guest",
        floor / n as f64
    );
}

/// Creates `n` LXC-shaped guests as real cgroups (`lxc/<vmid>/ns/{init.scope,system.slice/
/// a.service}`, v1 counterparts on a hybrid machine) under a subtree of this test's own, with
/// one sleeping process in each guest, and measures collections over them. Removes everything.
#[test]
#[ignore = "measurement (root): prints per-guest collection cost over N real cgroups"]
fn real_cgroup_collection_cost() {
    if !common::require("root", common::is_root()) {
        return;
    }
    use metrics_exporter::collectors::Environment;
    use metrics_exporter::platform::{self, Platform};
    use std::path::{Path, PathBuf};

    let proc_path = PathBuf::from("/proc");
    let mounts = platform::read_mounts(&proc_path).unwrap();
    let cgroup2 = platform::cgroup2_mount(&mounts, &proc_path).expect("cgroup2 mount");
    let name = format!("metrics-exporter-cost-{}", std::process::id());
    let v1: Vec<PathBuf> = common::v1_counterparts(&cgroup2, &name);
    let base = cgroup2.join(&name);

    struct Cleanup(Vec<PathBuf>, Vec<std::process::Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for c in &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            for root in &self.0 {
                let mut dirs = Vec::new();
                fn walk(d: &Path, out: &mut Vec<PathBuf>) {
                    if let Ok(entries) = std::fs::read_dir(d) {
                        for e in entries.flatten() {
                            if e.file_type().is_ok_and(|t| t.is_dir()) {
                                walk(&e.path(), out);
                            }
                        }
                    }
                    out.push(d.to_path_buf());
                }
                walk(root, &mut dirs);
                for d in dirs {
                    for _ in 0..100 {
                        if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            }
        }
    }
    let mut cleanup = Cleanup(
        std::iter::once(base.clone()).chain(v1.iter().cloned()).collect(),
        Vec::new(),
    );

    let mut previous = 0;
    for n in [10usize, 100, 1000] {
        for i in previous..n {
            let vmid = 100 + i;
            let mut leaf = Vec::new();
            for root in &cleanup.0 {
                for rel in ["ns/init.scope", "ns/system.slice/a.service"] {
                    let d = root.join(format!("lxc/{vmid}/{rel}"));
                    std::fs::create_dir_all(&d).unwrap();
                    if rel == "ns/init.scope" {
                        leaf.push(d);
                    }
                }
            }
            let mut script = String::new();
            for d in &leaf {
                script.push_str(&format!("echo $$ > '{}/cgroup.procs' || exit 1; ", d.display()));
            }
            script.push_str("exec sleep 600");
            cleanup
                .1
                .push(std::process::Command::new("sh").args(["-c", &script]).spawn().unwrap());
        }
        previous = n;
        let env = Environment {
            platform: Platform::Proxmox,
            proc_path: proc_path.clone(),
            sys_path: "/sys".into(),
            root_path: "/".into(),
            cgroup_path: Some(base.clone()),
            pve_path: base.join("no-pve"),
            mounts: mounts.clone(),
            local_configs: Default::default(),
        };
        let mut c = proxmox::create("guests", &env).unwrap();
        let m = measure(c.as_mut(), ROUNDS);
        println!(
            "real cgroups N={n}: {:.0} µs wall, {:.0} µs CPU per collection (best of {ROUNDS}); {:.2} µs CPU per guest (mean {:.2}) ({:?})",
            m.best_wall,
            m.best_cpu,
            m.best_cpu / n as f64,
            m.mean_cpu / n as f64,
            c.notes()
        );
        let roots: Vec<&Path> = cleanup.0.iter().map(|p| p.as_path()).collect();
        let (floor, files) = pread_floor(&roots, 10);
        println!(
            "  kernel floor: one pread of each of the {files} files kept open = {floor:.0} µs CPU; {:.2} µs per guest",
            floor / n as f64
        );
    }
}
