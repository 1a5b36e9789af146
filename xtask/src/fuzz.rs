//! `cargo xtask fuzz [--minutes N | --seconds N] [TARGET...]`: builds the cargo-fuzz targets of
//! `fuzz/` once (nightly, AddressSanitizer), seeds each target's corpus from the matching files
//! of `fixtures/`, runs every target for the time given and prints a table of runs, execs/s,
//! corpus size and result. Fails on any crash, leak, out-of-memory or timeout, naming the
//! reproducer libFuzzer wrote.
//!
//! Corpora and artifacts live under the cargo target directory (`<target>/fuzz/`), never in the
//! repository: the fixtures are the committed seeds, copied again on every run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{run, workspace_root};

/// Every target of `fuzz/Cargo.toml` and the fixture paths that seed it: a fixture file seeds a
/// target when its path relative to `fixtures/` ends with one of the suffixes.
const TARGETS: &[(&str, &[&str])] = &[
    ("meminfo", &["/meminfo"]),
    ("proc_stat", &["proc/stat"]),
    ("loadavg", &["/loadavg"]),
    ("netdev", &["net/dev"]),
    ("mountinfo", &["/mountinfo"]),
    (
        "pressure",
        &[
            ".pressure",
            "pressure/cpu",
            "pressure/io",
            "pressure/memory",
            "pressure/irq",
        ],
    ),
    ("cgroup_cpu_stat", &["/cpu.stat"]),
    (
        "cgroup_flat_keyed",
        &[
            "/memory.stat",
            "/memory.events",
            "/pids.events",
            "/cgroup.events",
            "/memory.oom_control",
            "/cgroup.stat",
        ],
    ),
    ("cgroup_io_stat", &["/io.stat"]),
    (
        "cgroup_single_value",
        &[
            "/memory.current",
            "/memory.max",
            "/memory.high",
            "/memory.swap.max",
            "/memory.swap.current",
            "/memory.limit_in_bytes",
            "/memory.usage_in_bytes",
            "/pids.max",
            "/pids.current",
            "/cpu.max",
            "/cpu.cfs_quota_us",
            "/cpu.cfs_period_us",
            "/cgroup.procs",
        ],
    ),
    ("cgroup_v1_cpu", &["/cpu.stat", "/cpuacct.stat"]),
    (
        "cgroup_v1_blkio",
        &[
            "/blkio.throttle.io_service_bytes_recursive",
            "/blkio.throttle.io_serviced_recursive",
        ],
    ),
    ("cgroup_subtree_shape", &["/cgroup.stat"]),
    ("pve_guest_config", &[".conf"]),
    ("pve_json", &["/.members", "/.vmlist", "/.version", "/manager_status"]),
    ("pve_corosync", &["/corosync.conf"]),
    (
        "pve_section_config",
        &["/storage.cfg", "/replication.cfg", "/jobs.cfg", "/resources.cfg"],
    ),
    ("pve_state", &["/.rrd", "/pve-replication-state.json"]),
    (
        "pve_tasks",
        &["/tasks/index", "/tasks/index.1", "/tasks/active", "@pam:"],
    ),
    ("pve_jobs", &["/jobs.cfg", "/user.cfg", "/vzdump.cron"]),
    ("proc_pid_stat", &["self/stat", "/1/stat", "/stat"]),
    ("proc_pid_files", &["/cgroup", "/status"]),
    ("diskstats", &["/diskstats"]),
    ("zfs_kstat", &["/arcstats", "zfs/rpool/state", "zfs/tank/state"]),
    ("dpkg_status", &["dpkg/status", "/subscription"]),
    ("web_config", &["/web.yml"]),
];

/// Per input: far above any parse of a kernel file (microseconds), far below a hang.
const TIMEOUT_SECONDS: u32 = 5;
/// The parsers hold at most a few copies of a small file.
const RSS_LIMIT_MB: u32 = 1024;

pub fn run_fuzz(args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60;
    let mut wanted = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--minutes" | "--seconds" => {
                let n: u64 = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("{arg} needs a whole number"))?;
                seconds = if arg == "--minutes" { n * 60 } else { n };
            }
            name if TARGETS.iter().any(|(t, _)| *t == name) => wanted.push(name.to_owned()),
            other => bail!(
                "unknown fuzz argument {other:?}; targets: {}",
                TARGETS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(" ")
            ),
        }
    }
    if wanted.is_empty() {
        wanted = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    }
    fuzz(&wanted, Duration::from_secs(seconds))
}

/// The CI smoke run of `cargo xtask test`: every target for a few seconds.
pub fn smoke() -> anyhow::Result<()> {
    let all: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    fuzz(&all, Duration::from_secs(5))
}

struct Outcome {
    target: String,
    runs: Option<u64>,
    execs_per_second: Option<u64>,
    corpus: usize,
    result: Result<(), String>,
}

fn fuzz(targets: &[String], each: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    ensure_cargo_fuzz()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("fuzz");
    let target_dir_str = target_dir.to_str().context("target directory is not UTF-8")?;
    // AYA_BUILD_SKIP: the parsers need no eBPF object, and the eBPF build must not inherit the
    // sanitizer flags cargo-fuzz sets.
    run(
        "cargo",
        &["+nightly", "fuzz", "build", "--target-dir", target_dir_str],
        &[("AYA_BUILD_SKIP", "1")],
    )?;
    let built = started.elapsed();
    eprintln!("fuzz build took {:.0} s", built.as_secs_f64());
    let binaries = target_dir.join(host_triple()?).join("release");
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(target, &binaries, &target_dir, each)?);
    }
    println!(
        "\n{:<22} {:>12} {:>9} {:>7}  result",
        "target", "runs", "execs/s", "corpus"
    );
    for o in &outcomes {
        let show = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let result = match &o.result {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.clone(),
        };
        println!(
            "{:<22} {:>12} {:>9} {:>7}  {result}",
            o.target,
            show(o.runs),
            show(o.execs_per_second),
            o.corpus
        );
    }
    println!(
        "{} targets x {} s; build {:.0} s; total {:.0} s",
        outcomes.len(),
        each.as_secs(),
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.target)))
        .collect();
    if !failed.is_empty() {
        bail!("fuzzing found failures:\n{}", failed.join("\n"));
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        run("cargo", &["install", "cargo-fuzz", "--locked"], &[])?;
    }
    Ok(())
}

fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("cannot run rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host")
}

fn run_target(target: &str, binaries: &Path, work: &Path, each: Duration) -> anyhow::Result<Outcome> {
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    fs::create_dir_all(&artifacts).with_context(|| format!("cannot create {}", artifacts.display()))?;
    let seeded = seed(target, &corpus)?;
    let log_path = work.join("artifacts").join(format!("{target}.log"));
    let log = fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    eprintln!(
        "fuzzing {target} for {} s ({seeded} seeds from fixtures/)",
        each.as_secs()
    );
    let artifact_prefix = format!("{}/", artifacts.display());
    let status = Command::new(binaries.join(target))
        .arg(&corpus)
        .arg(format!("-max_total_time={}", each.as_secs()))
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-artifact_prefix={artifact_prefix}"))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("cannot start fuzz target {target} (built?)"))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let result = if status.success() {
        Ok(())
    } else {
        // libFuzzer prints "Test unit written to <path>" for the input that failed.
        let reproducer = text
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("no reproducer written");
        Err(format!(
            "FAILED ({status}); reproducer {reproducer}; log {}; replay: {} {reproducer}",
            log_path.display(),
            binaries.join(target).display()
        ))
    };
    Ok(Outcome {
        target: target.to_owned(),
        runs: stat("stat::number_of_executed_units:"),
        execs_per_second: stat("stat::average_exec_per_sec:"),
        corpus: fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0),
        result,
    })
}

/// Copies the fixtures matching `target` into its corpus; returns how many.
fn seed(target: &str, corpus: &Path) -> anyhow::Result<usize> {
    let suffixes = TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, s)| *s)
        .unwrap_or(&[]);
    let fixtures = workspace_root().join("fixtures");
    let mut stack = vec![fixtures.clone()];
    let mut count = 0;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(&fixtures)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if suffixes.iter().any(|s| relative.ends_with(s)) {
                let name = format!("seed-{}", relative.replace('/', "_"));
                fs::copy(&path, corpus.join(name)).with_context(|| format!("cannot copy {}", path.display()))?;
                count += 1;
            }
        }
    }
    if count == 0 {
        // libFuzzer starts from an empty input then; say so rather than fail.
        eprintln!("warning: no fixture seeds target {target}");
    }
    Ok(count)
}
