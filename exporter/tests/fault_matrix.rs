//! The fault matrix of issue 14 (point 5), each fault made real and the binary run through it:
//!
//! - PROMETHEUS_FILE on a full filesystem (a 1 MiB tmpfs the test mounts and unmounts): one
//!   error line naming the file and ENOSPC, the file component and /health's `exporter_healthy`
//!   false, the previous file intact and no temporary file left, and recovery once space returns.
//! - PVE_PATH unreadable (a copy of the fixture's /etc/pve with mode 000, the exporter run as
//!   `nobody` through setpriv, since root ignores modes): the Proxmox collectors report the
//!   path and EACCES, and node and guest resource metrics (from cgroupfs) are still served.
//! - The listening port already in use: one line naming the address, exit status 1.
//! - A collector stuck in a read (PVE_PATH/.version a FIFO with no writer, so open() blocks as
//!   on a hung mount): the collection ends at the collector's deadline, the other collectors and
//!   scrapes go on, the stuck one is reported as timed out (self metrics, /status) and is not
//!   called again until its read returns; then it recovers.
//! - The OTLP collector unreachable (nobody listens on the endpoint's loopback port) for
//!   `SOAK_OTLP_OUTAGE_SECONDS` (30 here; `cargo xtask soak otlp-outage --minutes 10` runs the
//!   same test for 10 minutes): RSS within +1 MB of its value after warm-up, the export queue
//!   bounded (self metrics), and, once a real OTLP/gRPC receiver appears on that port, samples
//!   delivered within one collection interval.
//!
//! Tests that mount or change users need root (`require`): outside CI they skip loudly.
//! Everything they make is removed by Drop guards, also on failure. Nothing asserts a duration.

mod common;
mod otlp_support;

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Polls `condition` every 100 ms for at most `limit`; the bound only keeps a broken exporter
/// from hanging the test.
fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrape(exporter: &Exporter) -> Vec<Series> {
    let response = exporter.get("/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    parse_exposition(&response.text())
}

fn collections(series: &[Series]) -> f64 {
    value(series, "metrics_exporter_collections_total", &[]).expect("collections_total")
}

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "fault-matrix"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem of `path`'s directory: writes zeros until ENOSPC.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Written pages may still fit in the last partial block: make sure the next write fails.
    let _ = file.flush();
}

fn health(exporter: &Exporter) -> serde_json::Value {
    exporter.get("/health").json()
}

#[test]
fn prometheus_file_on_a_full_filesystem_keeps_the_previous_file_and_recovers() {
    if !require("root (to mount a tmpfs)", is_root()) {
        return;
    }
    let tmpfs = Tmpfs::mount("1m");
    let file = tmpfs.path().join("metrics.prom");
    let filler = tmpfs.path().join("filler");
    let mut env = fixture_env("lxc-container", "lxc");
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    env.push(("PROMETHEUS_FILE".into(), file.display().to_string()));
    env.push(("LOG_FORMAT".into(), "text".into()));
    env.push(("LOG_LEVEL".into(), "info".into()));
    let mut exporter = Exporter::start(&env);
    wait_for("the file written", Duration::from_secs(20), || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("metrics_exporter_collections_total"))
    });
    assert_eq!(health(&exporter)["exporter_healthy"], true);

    fill(&filler);
    wait_for("exporter_healthy false", Duration::from_secs(20), || {
        health(&exporter)["exporter_healthy"] == false
    });
    let before = std::fs::read_to_string(&file).unwrap();
    let kept = parse_exposition(&before);
    let kept_sequence = collections(&kept);
    // Two more collections fail to write: the file stays the complete one written before.
    let failing_from = collections(&scrape(&exporter));
    wait_for("two more collections", Duration::from_secs(20), || {
        collections(&scrape(&exporter)) >= failing_from + 2.0
    });
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "the previous file is intact"
    );
    assert!(
        before.ends_with('\n') && kept.len() > 20,
        "a whole exposition: {} series",
        kept.len()
    );
    let mut names: Vec<String> = std::fs::read_dir(tmpfs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["filler", "metrics.prom"], "no temporary file left behind");
    let status = exporter.get("/status").json();
    let component = &status["exporter"]["components"]["prometheus_file"];
    assert_eq!(component["healthy"], false, "{component}");
    let last_error = component["state"]["state"]["last_error"].as_str().unwrap();
    assert!(last_error.contains("No space left on device"), "{last_error}");
    let series = scrape(&exporter);
    assert!(value(&series, "metrics_exporter_file_writes_total", &[("result", "failure")]).unwrap() >= 2.0);

    // Space returns: the next collection writes the file and the exporter is healthy again.
    std::fs::remove_file(&filler).unwrap();
    wait_for("exporter_healthy true again", Duration::from_secs(20), || {
        health(&exporter)["exporter_healthy"] == true
    });
    let after = parse_exposition(&std::fs::read_to_string(&file).unwrap());
    assert!(collections(&after) > kept_sequence + 2.0, "written again");

    assert!(exporter.terminate().success());
    let stderr = exporter.stderr();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot write PROMETHEUS_FILE"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "one line when it starts failing, not one per collection:\n{stderr}"
    );
    assert!(
        errors[0].contains(&file.display().to_string()) && errors[0].contains("No space left on device"),
        "names the file and ENOSPC: {}",
        errors[0]
    );
    assert!(stderr.contains("PROMETHEUS_FILE written again"), "{stderr}");
}

/// A copy of the fixture host's /etc/pve, at `<the returned dir>/pve`.
fn pve_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixture("proxmox-host").join("etc/pve"))
        .arg(dir.path().join("pve"))
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// Whether `nobody` can read `path` (the fixtures live under the checkout, which may not be).
fn nobody_can_read(path: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "test", "-r"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn unreadable_pve_path_is_a_clear_proxmox_error_and_resources_are_still_served() {
    if !require("root (to run the exporter as nobody)", is_root()) || !require_command("setpriv") {
        return;
    }
    // The whole fixture host, copied where `nobody` can read it (the checkout may not be).
    let tree = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tree.path().join("proxmox-host");
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixture("proxmox-host"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let pve = root.join("etc/pve");
    for readable in ["etc/pve/lxc/101.conf", "sys/fs/cgroup/lxc/101/cpu.stat", "proc/meminfo"] {
        assert!(nobody_can_read(&root.join(readable)), "{readable} readable before");
    }
    let fixture_root = fixture("proxmox-host").display().to_string();
    let mut env = fixture_env("proxmox-host", "proxmox");
    for (_, value) in &mut env {
        if let Some(rest) = value.strip_prefix(&fixture_root) {
            *value = format!("{}{rest}", root.display());
        }
    }
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    // What the service sees when it lacks the www-data group (or pmxcfs is not mounted for it).
    std::fs::set_permissions(&pve, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(binary());
    let exporter = Exporter::start_with(command, &env);
    let series = scrape(&exporter);

    // The collectors that read PVE_PATH fail, each naming the path and EACCES; every other
    // one (node resources from /proc and /sys, each guest's from cgroupfs) succeeds.
    let outcomes: Vec<(String, f64)> = series
        .iter()
        .filter(|(name, _, _)| name == "metrics_exporter_collector_success")
        .map(|(_, labels, v)| (labels["collector"].clone(), *v))
        .collect();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|(_, v)| *v == 0.0)
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        failed.contains(&"cluster") && failed.contains(&"guests"),
        "{outcomes:?}"
    );
    for (name, _) in outcomes.iter().filter(|(_, v)| *v == 1.0) {
        assert!(!["cluster", "guests"].contains(&name.as_str()));
    }
    for must in ["cpu", "memory", "network", "pressure"] {
        assert!(
            outcomes.iter().any(|(n, v)| n == must && *v == 1.0),
            "{must}: {outcomes:?}"
        );
    }
    let status = exporter.get("/status").json();
    for collector in &failed {
        let entry = status["collectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == *collector)
            .unwrap_or_else(|| panic!("{collector} in /status"));
        let error = entry["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&pve.display().to_string()) && error.contains("Permission denied"),
            "{collector}: names the path and EACCES: {error}"
        );
    }
    assert!(value(&series, "node_memory_total_bytes", &[]).is_some());
    let guest_cpu: Vec<&Series> = series
        .iter()
        .filter(|(name, labels, _)| {
            name == "container_cpu_usage_seconds_total" && labels.get("container_id").is_some_and(|id| id == "101")
        })
        .collect();
    assert!(!guest_cpu.is_empty(), "guest 101's CPU is still served from cgroupfs");
    drop(exporter);
    std::fs::set_permissions(&pve, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_port_in_use_is_one_line_naming_the_address_and_exit_status_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut env = fixture_env("lxc-container", "lxc");
    env.push(("LISTEN_ADDRESS".into(), "127.0.0.1".into()));
    env.push(("METRICS_PORT".into(), port.to_string()));
    let mut child = Command::new(binary())
        .only_env(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the exporter still runs with its port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(
        lines[0].contains(&format!("127.0.0.1:{port}")) && lines[0].contains("Address already in use"),
        "{}",
        lines[0]
    );
    drop(taken);
}

/// A FIFO at `path` (no writer: whoever opens it for reading blocks), replaced on drop by
/// nothing, so a blocked reader of the test's never stays behind.
struct Fifo {
    path: PathBuf,
}

impl Fifo {
    fn make(path: &Path) -> Fifo {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(
            unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
            0,
            "mkfifo {}",
            path.display()
        );
        Fifo {
            path: path.to_path_buf(),
        }
    }

    /// Unblocks the readers: opens the FIFO for writing (they return from open()), puts
    /// `replacement` in its place, then closes, so they read end-of-file and later opens read
    /// the regular file.
    fn release(&self, replacement: &[u8]) {
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags_nonblock()
            .open(&self.path);
        let staged = self.path.with_extension("staged");
        std::fs::write(&staged, replacement).unwrap();
        std::fs::rename(&staged, &self.path).unwrap();
        drop(writer);
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // A blocked open() of this FIFO returns once a writer appears.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags_nonblock()
            .open(&self.path);
    }
}

trait NonBlocking {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlocking for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

#[test]
fn a_collector_stuck_in_a_read_times_out_alone_and_recovers() {
    let copy = pve_copy();
    let pve = copy.path().join("pve");
    let version = pve.join(".version");
    let original = std::fs::read(&version).unwrap();
    std::fs::remove_file(&version).unwrap();
    let fifo = Fifo::make(&version);
    let mut env = fixture_env("proxmox-host", "proxmox");
    for (key, value) in &mut env {
        if key == "PVE_PATH" {
            *value = pve.display().to_string();
        }
    }
    // The deadline is half the interval, at least 5 s.
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    env.push(("LOG_FORMAT".into(), "text".into()));
    env.push(("LOG_LEVEL".into(), "info".into()));
    let mut exporter = Exporter::start(&env);
    let series = scrape(&exporter);
    let pid = exporter.child.id();
    let cluster = [("collector", "cluster")];
    assert_eq!(
        value(&series, "metrics_exporter_collector_success", &cluster),
        Some(0.0)
    );
    assert!(value(&series, "metrics_exporter_collector_timeouts_total", &cluster).unwrap() >= 1.0);
    assert!(
        value(&series, "pve_pmxcfs_start_time_seconds", &[]).is_none(),
        "absent, not 0"
    );
    // The others were collected in the same collection, guests included.
    for collector in ["cpu", "memory", "guests"] {
        assert_eq!(
            value(
                &series,
                "metrics_exporter_collector_success",
                &[("collector", collector)]
            ),
            Some(1.0),
            "{collector}"
        );
    }
    // Later collections do not wait for it again, and it holds one thread, not one per tick.
    let first = collections(&series);
    wait_for("five more collections", Duration::from_secs(30), || {
        collections(&scrape(&exporter)) >= first + 5.0
    });
    let series = scrape(&exporter);
    assert_eq!(
        value(&series, "metrics_exporter_collector_success", &cluster),
        Some(0.0)
    );
    assert!(
        value(&series, "metrics_exporter_collector_timeouts_total", &cluster).unwrap() >= first + 5.0 - 1.0,
        "counted in every collection it missed"
    );
    // One worker for the others and the one its hung call holds: none per missed tick.
    assert_eq!(collector_threads(pid), 2, "collector threads");
    let status = exporter.get("/status").json();
    let entry = status["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cluster")
        .unwrap();
    assert!(
        entry["last_error"].as_str().unwrap().starts_with("timed out"),
        "{entry}"
    );
    assert_eq!(entry["timed_out"], true, "{entry}");
    // POST /collect is answered too (the loop is not blocked).
    let collect = request(exporter.address, "POST", "/collect?wait", &[]).unwrap();
    assert_eq!(collect.status, 200, "{}", collect.text());

    // The read returns: the collector comes back and succeeds.
    fifo.release(&original);
    wait_for("cluster succeeds again", Duration::from_secs(30), || {
        value(&scrape(&exporter), "metrics_exporter_collector_success", &cluster) == Some(1.0)
    });
    let series = scrape(&exporter);
    assert!(value(&series, "pve_pmxcfs_start_time_seconds", &[]).is_some());
    assert!(exporter.terminate().success());
    let stderr = exporter.stderr();
    assert!(
        stderr.contains("collector returned from a call that passed its deadline"),
        "{stderr}"
    );
}

/// Threads of process `pid` named `collector` (the engine's workers).
fn collector_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|task| {
            let comm = task.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "collector")
        })
        .count()
}

/// Resident set size of process `pid` in bytes (VmRSS of /proc/<pid>/status).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Seconds from the environment variable `name` (the soaks set it), else `default`.
fn seconds_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const OTLP_QUEUE_CAPACITY: f64 = metrics_exporter::otlp::config::DEFAULT_QUEUE_CAPACITY as f64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_outage_keeps_memory_and_queue_bounded_and_recovers_within_an_interval() {
    let outage = Duration::from_secs(seconds_from_env("SOAK_OTLP_OUTAGE_SECONDS", 30));
    let interval = Duration::from_secs(1);
    let endpoint = otlp_support::free_port();
    let mut env = fixture_env("lxc-container", "lxc");
    env.push(("EXPORT_FORMAT".into(), "prometheus,otlp".into()));
    env.push(("OTEL_ENDPOINT".into(), endpoint.to_string()));
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "500".into()));
    env.push(("COLLECTION_INTERVAL".into(), interval.as_secs().to_string()));
    let exporter = Exporter::start(&env);
    let started = Instant::now();
    let pid = exporter.child.id();
    let queued = |series: &[Series]| value(series, "metrics_exporter_otlp_queued_batches", &[]).expect("queue gauge");

    // Warm-up: the queue fills to its capacity (every later batch replaces the oldest), and a
    // few more collections run so that the allocator has seen a whole cycle.
    wait_for("the export queue full", outage, || {
        queued(&scrape(&exporter)) >= OTLP_QUEUE_CAPACITY
    });
    let full_at = collections(&scrape(&exporter));
    wait_for("three more collections", outage, || {
        collections(&scrape(&exporter)) >= full_at + 3.0
    });
    let baseline_rss = rss_bytes(pid);
    let baseline_at = started.elapsed();
    let (mut max_rss, mut max_queue) = (baseline_rss, 0.0f64);
    while started.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_rss = max_rss.max(rss_bytes(pid));
        max_queue = max_queue.max(queued(&scrape(&exporter)));
    }
    let end_rss = rss_bytes(pid);
    let series = scrape(&exporter);
    let dropped = value(&series, "metrics_exporter_otlp_dropped_batches_total", &[]).unwrap();
    let in_outage = collections(&series);
    assert_eq!(
        value(&series, "metrics_exporter_otlp_exports_total", &[("result", "success")]).unwrap_or(0.0),
        0.0
    );
    assert_eq!(exporter.get("/health").json()["exporter_healthy"], false);

    // A real OTLP/gRPC receiver appears on the endpoint.
    let before = collections(&scrape(&exporter));
    let receiver = otlp_support::Receiver::start_on(endpoint, Vec::new()).await;
    let appeared = Instant::now();
    let bound = Instant::now() + Duration::from_secs(120);
    while receiver.received().is_empty() {
        assert!(
            Instant::now() < bound,
            "nothing delivered within 120 s of the receiver appearing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovery = appeared.elapsed();
    let after = collections(&scrape(&exporter));
    wait_for("exporter_healthy again", Duration::from_secs(30), || {
        exporter.get("/health").json()["exporter_healthy"] == true
    });

    println!(
        "otlp outage: {:.0} s with interval {} s ({} collections); RSS after warm-up ({:.0} s) {} KiB, at the end {} KiB, max {} KiB; \
         queue max {max_queue} of {OTLP_QUEUE_CAPACITY}, dropped {dropped} batches; receiver appeared after collection {before}, \
         first delivery {:.3} s later, after collection {after}",
        started.elapsed().as_secs_f64(),
        interval.as_secs(),
        in_outage,
        baseline_at.as_secs_f64(),
        baseline_rss / 1024,
        end_rss / 1024,
        max_rss / 1024,
        recovery.as_secs_f64(),
    );
    assert!(
        end_rss <= baseline_rss + 1024 * 1024,
        "RSS {end_rss} grew by more than 1 MiB over {baseline_rss} during the outage"
    );
    assert!(max_queue <= OTLP_QUEUE_CAPACITY, "queue bounded: {max_queue}");
    assert!(
        dropped >= 1.0,
        "batches beyond the queue are dropped and counted: {dropped}"
    );
    // Within one interval, counted in collections: at most one collection starts between the
    // receiver appearing and the first delivery (one more for this test's polling).
    assert!(
        after <= before + 2.0,
        "recovered after collection {after}, the receiver appeared after collection {before}"
    );
}
