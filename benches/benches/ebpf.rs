//! What the eBPF side costs (root; `cargo bench -p benches --bench ebpf`):
//! - `ebpf_map_read/{10,100,1000}`: reading every guest's counters from the mmap-ed,
//!   per-CPU-striped array (goal: at most 50 ns per guest at 1000 guests);
//! - `ebpf_sched_switch_cost`: kernel time per `sched_switch` run from the kernel's bpf stats
//!   while a guest's pinned pipe ping-pong switches (goal: at most 130 ns; an empty program
//!   costs ~51 ns here, which is the stats' own overhead);
//! - `ebpf_pingpong_pinned/{without,with}_programs`: a round trip of a two-thread pipe
//!   ping-pong pinned to CPU 0, inside a guest cgroup, with bpf stats off (goal: at most 4%
//!   slower with the programs attached). A summary of alternating runs prints the slowdown.
//!
//! The ping-pong runs in a child process (this binary with `MEX_PINGPONG=<round trips>`)
//! started inside the guest cgroup and pinned with `taskset -c 0`. Cgroups are created below
//! the cgroup2 mount in a directory of this process's own and removed at the end.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use exporter::ebpf::{EbpfRuntime, LoadOptions};

fn main() {
    if let Ok(n) = std::env::var("MEX_PINGPONG") {
        let elapsed = pingpong(n.parse().expect("MEX_PINGPONG round trips"));
        println!("{}", elapsed.as_nanos());
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "ebpf benchmarks: CI=true but not root"
        );
        eprintln!("ebpf benchmarks: NOT RUN: they load eBPF programs and create cgroups, which needs root");
        return;
    }
    let tree = Tree::new();
    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    map_read(&mut c, &tree);
    sched_switch_cost(&mut c, &tree);
    pingpong_slowdown(&mut c, &tree);
    c.final_summary();
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The benchmark's own cgroup subtree; removed on drop (after its processes are gone).
struct Tree {
    root: PathBuf,
    mount: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = text
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
            })
            .expect("a cgroup2 mount");
        let root = mount.join(format!("mex-bench-{}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        Tree { root, mount }
    }

    fn guest(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn runtime(&self, stats: bool) -> EbpfRuntime {
        let mut options = LoadOptions::new(&self.mount);
        options.enable_stats = stats;
        EbpfRuntime::load(&options).expect("loading the eBPF programs")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

fn map_read(c: &mut Criterion, tree: &Tree) {
    let mut rt = tree.runtime(false);
    let mut group = c.benchmark_group("ebpf_map_read");
    let mut assigned = 0;
    let mut buf = Vec::new();
    for n in [10usize, 100, 1000] {
        while assigned < n {
            let dir = tree.guest(&format!("g{assigned}"));
            rt.assign(&assigned.to_string(), &dir).unwrap();
            assigned += 1;
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                rt.read_into(&mut buf);
                std::hint::black_box(&buf);
            })
        });
    }
    group.finish();
}

/// Runs `round_trips` of the ping-pong in a child process inside `cgroup`, pinned to CPU 0;
/// returns the child's own measurement.
fn pingpong_in(cgroup: &Path, round_trips: u64) -> Duration {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec taskset -c 0 \"$0\"",
            cgroup.display()
        ))
        .arg(exe)
        .env("MEX_PINGPONG", round_trips.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping-pong child: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Duration::from_nanos(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// Two threads passing one byte back and forth through two pipes.
fn pingpong(round_trips: u64) -> Duration {
    let (mut r1, mut w1) = std::io::pipe().unwrap();
    let (mut r2, mut w2) = std::io::pipe().unwrap();
    let echo = std::thread::spawn(move || {
        let mut b = [0u8];
        for _ in 0..round_trips {
            r1.read_exact(&mut b).unwrap();
            w2.write_all(&b).unwrap();
        }
    });
    let mut b = [1u8];
    let start = Instant::now();
    for _ in 0..round_trips {
        w1.write_all(&b).unwrap();
        r2.read_exact(&mut b).unwrap();
    }
    let elapsed = start.elapsed();
    echo.join().unwrap();
    elapsed
}

fn sched_switch_stats(rt: &EbpfRuntime) -> (u64, u64) {
    let stats = rt.self_stats();
    assert!(stats.bpf_stats_enabled, "bpf stats: {:?}", stats.bpf_stats_error);
    let p = stats.programs.iter().find(|p| p.name == "sched_switch").unwrap();
    (p.run_count, p.run_time_ns)
}

fn sched_switch_cost(c: &mut Criterion, tree: &Tree) {
    let mut rt = tree.runtime(true);
    let guest = tree.guest("switch-cost");
    let slot = rt.assign("switch-cost", &guest).unwrap();
    c.bench_function("ebpf_sched_switch_cost", |b| {
        // The "time" reported per iteration is the kernel's average run time of the program
        // per sched_switch, from bpf stats, over the switches of the ping-pong.
        b.iter_custom(|iters| {
            let (count0, time0) = sched_switch_stats(&rt);
            pingpong_in(&guest, (iters / 2).max(2_000));
            let (count1, time1) = sched_switch_stats(&rt);
            let per_event = (time1 - time0) as f64 / (count1 - count0) as f64;
            Duration::from_nanos((per_event * iters as f64) as u64)
        })
    });
    let (count, time) = sched_switch_stats(&rt);
    let cpu = rt.read(slot).map(|r| r.cpu_seconds()).unwrap_or_default();
    println!(
        "ebpf_sched_switch_cost: overall {:.1} ns per run over {count} runs (guest CPU {cpu:.2} s)",
        time as f64 / count as f64
    );
    for p in rt.self_stats().programs.iter().filter(|p| p.run_count > 0) {
        println!(
            "  {}: {} runs, {:.1} ns per run",
            p.name,
            p.run_count,
            p.run_time_ns as f64 / p.run_count as f64
        );
    }
}

fn bpf_stats_enabled_sysctl() -> String {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn pingpong_slowdown(c: &mut Criterion, tree: &Tree) {
    let guest = tree.guest("pingpong");
    assert_eq!(
        bpf_stats_enabled_sysctl(),
        "0",
        "kernel.bpf_stats_enabled must be 0 for this measurement"
    );
    let mut group = c.benchmark_group("ebpf_pingpong_pinned");
    group.bench_function("without_programs", |b| {
        b.iter_custom(|iters| pingpong_in(&guest, iters.max(1_000)))
    });
    {
        let mut rt = tree.runtime(false);
        rt.assign("pingpong", &guest).unwrap();
        group.bench_function("with_programs", |b| {
            b.iter_custom(|iters| pingpong_in(&guest, iters.max(1_000)))
        });
    }
    group.finish();

    // Alternating runs, so that drift of the machine hits both sides alike.
    let round_trips = 200_000;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        without.push(pingpong_in(&guest, round_trips).as_nanos() as f64 / round_trips as f64);
        let mut rt = tree.runtime(false);
        rt.assign("pingpong", &guest).unwrap();
        with.push(pingpong_in(&guest, round_trips).as_nanos() as f64 / round_trips as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut without), median(&mut with));
    println!(
        "ebpf_pingpong_pinned summary: {a:.0} ns per round trip without programs, {b:.0} ns with: {:+.2}% (bpf_stats_enabled={})",
        (b / a - 1.0) * 100.0,
        bpf_stats_enabled_sysctl()
    );
}
