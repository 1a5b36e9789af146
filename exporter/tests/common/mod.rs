//! Shared test support: the binary under test, fixture paths, a raw HTTP/1.1 client (so that
//! tests control every byte: slow clients, oversized heads), a parser of the exposition text,
//! and the rule for tests that need privileges (in CI a missing capability fails the test).
#![allow(dead_code)]

pub mod prometheus;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_metrics-exporter"))
}

pub fn fixture(tree: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(tree)
}

/// A writable copy of fixture `tree` (symlinks kept, as pmxcfs's etc/pve links need) at
/// `<temp dir>/host`, for tests that damage or change it; removed with the returned directory.
pub fn fixture_copy(tree: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixture(tree))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {} {}", fixture(tree).display(), root.display());
    (dir, root)
}

/// CPU time of the calling thread in microseconds (the cost tests' clock: what a collection
/// costs, not how long a loaded machine made it wait).
pub fn thread_cpu_micros() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

/// How many guests a cost test's synthetic host has: `SYNTHETIC_GUESTS`, else 1000 (the size
/// the issues' cost targets are stated for).
pub fn synthetic_guest_count() -> usize {
    std::env::var("SYNTHETIC_GUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when the test may run. Outside CI a missing privilege skips loudly; in CI it fails.
pub fn require(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("this test needs {what}, which CI must provide");
    }
    eprintln!("SKIPPED (not in CI): this test needs {what}");
    false
}

pub fn require_command(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    require(&format!("the command {program}"), found)
}

/// A command that sees only `env` and the caller's PATH: what the exporter reads is exactly
/// what the test set, never a variable of the machine running the tests.
pub trait OnlyEnv {
    fn only_env(&mut self, env: &[(String, String)]) -> &mut Self;
}

impl OnlyEnv for Command {
    fn only_env(&mut self, env: &[(String, String)]) -> &mut Self {
        self.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// An unused loopback port (bound then released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Environment that points every path at a fixture tree.
pub fn fixture_env(tree: &str, platform: &str) -> Vec<(String, String)> {
    let root = fixture(tree);
    vec![
        ("PLATFORM".into(), platform.into()),
        ("PROC_PATH".into(), root.join("proc").display().to_string()),
        ("SYS_PATH".into(), root.join("sys").display().to_string()),
        ("CGROUP_PATH".into(), root.join("sys/fs/cgroup").display().to_string()),
        ("PVE_PATH".into(), root.join("etc/pve").display().to_string()),
        ("EBPF".into(), "off".into()),
        ("LOG_LEVEL".into(), "warn".into()),
    ]
}

/// A running exporter, killed on drop.
pub struct Exporter {
    pub child: Child,
    pub address: SocketAddr,
}

impl Exporter {
    /// Starts the binary serving on a free loopback port and waits until /metrics answers 200.
    pub fn start(env: &[(String, String)]) -> Exporter {
        Self::start_with(Command::new(binary()), env)
    }

    /// Like `start`, with a prepared command (e.g. wrapped in `unshare`).
    pub fn start_with(command: Command, env: &[(String, String)]) -> Exporter {
        Self::start_ready(command, env, |address| {
            get(address, "/metrics").is_ok_and(|r| r.status == 200)
        })
    }

    /// Like `start_with`, ready when `ready(address)` says so (e.g. over TLS).
    pub fn start_ready(mut command: Command, env: &[(String, String)], ready: impl Fn(SocketAddr) -> bool) -> Exporter {
        let port = free_port();
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDRESS", "127.0.0.1")
            .env("METRICS_PORT", port.to_string())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = command.spawn().expect("start metrics-exporter");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut exporter = Exporter { child, address };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = exporter.child.try_wait() {
                let mut stderr = String::new();
                exporter.child.stderr.take().unwrap().read_to_string(&mut stderr).ok();
                panic!("exporter exited early with {status}: {stderr}");
            }
            if ready(address) {
                return exporter;
            }
            assert!(Instant::now() < deadline, "exporter did not serve /metrics within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> Response {
        get(self.address, path).unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill with a valid pid and signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "exporter did not exit within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut text).ok();
        }
        text
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unused_imports)] // each test binary uses a different part of the common module
pub use guest_rig::exposition::{Series, names, parse_exposition, value};
#[allow(unused_imports)]
pub use guest_rig::http::{Response, get, parse_response, raw, request};

/// (rx_bytes, rx_packets, tx_bytes, tx_packets) of `dev` in a `/proc/net/dev` text. Written
/// independently of the exporter's parser, because tests use it as ground truth.
pub fn interface_counters(net_dev: &str, dev: &str) -> (u64, u64, u64, u64) {
    let line = net_dev
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{dev}:")))
        .unwrap_or_else(|| panic!("{dev} not in /proc/net/dev"));
    let f: Vec<u64> = line
        .split_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0], f[1], f[8], f[9])
}

/// The cgroup2 mount point of this machine (found in /proc/self/mountinfo, never assumed).
pub fn cgroup2_mount() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts = metrics_exporter::parse::mountinfo::parse(&text).unwrap();
    PathBuf::from(
        &mounts
            .iter()
            .rev()
            .find(|m| m.fs_type == "cgroup2")
            .expect("a cgroup2 mount")
            .mount_point,
    )
}

/// On a hybrid machine, the cgroup v1 directories (memory, pids) that mirror a test cgroup
/// `name` at the root of each v1 hierarchy whose controller cgroup2 lacks.
pub fn v1_counterparts(cgroup2: &std::path::Path, name: &str) -> Vec<PathBuf> {
    use metrics_exporter::collectors::proxmox::layout;
    let v2_controllers = std::fs::read_to_string(cgroup2.join("cgroup.controllers")).unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    layout::v1_mounts(&mountinfo)
        .into_iter()
        .filter(|m| m.root == "/" && m.controllers.iter().any(|c| c == "memory" || c == "pids"))
        .filter(|m| {
            !m.controllers
                .iter()
                .any(|c| v2_controllers.split_whitespace().any(|x| x == c))
        })
        .map(|m| PathBuf::from(&m.mount_point).join(name))
        .collect()
}

/// Runs a command that must succeed and returns its standard output; a failure panics with
/// its standard error.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`run_ok`] inside the network namespace `ns` (one `ip netns add` made, under /run/netns).
pub fn in_netns(ns: &str, args: &[&str]) -> String {
    let netns = format!("--net=/run/netns/{ns}");
    let mut all = vec![netns.as_str()];
    all.extend_from_slice(args);
    run_ok("nsenter", &all)
}

/// Removes a cgroup subtree this test created: every process in it is killed, then the
/// directories go deepest first (a cgroup is removable once its last task has exited).
pub fn remove_cgroup_tree(root: &std::path::Path) {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        out.push(dir.to_path_buf());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut dirs = Vec::new();
    walk(root, &mut dirs);
    for dir in dirs.iter().rev() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: a plain signal to a process in a cgroup this test created.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    for dir in dirs.iter().rev() {
        for _ in 0..50 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
