//! The served binary in Proxmox mode over test-created guest cgroups on this kernel: with eBPF
//! loaded (as root, and as a non-root user holding only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)
//! it serves the eBPF-only guest series with exact task counts; inside `unshare -U -r` it falls
//! back to cgroupfs with the reason, and with EBPF=on it refuses to start. `--once` and
//! `--check-config` make no bpf() call at all (strace), and `--once` has no eBPF series.
//! Needs root; in CI (CI=true) a missing privilege fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Root tests here share nothing but the machine; one at a time keeps the counts clean.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A guest cgroup `lxc/<vmid>/ns` under a subtree of our own, with one shell in it that waits
/// on a FIFO and then forks `/bin/true` `forks` times. Removed (processes killed) on drop.
struct Guest {
    subtree: PathBuf,
    fifo: PathBuf,
    done: PathBuf,
    shell: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Guest {
    fn new(tag: &str, vmid: u32, forks: u32) -> Guest {
        let subtree = cgroup2_mount().join(format!("metrics-exporter-bin-{tag}-{}", std::process::id()));
        let ns = subtree.join(format!("lxc/{vmid}/ns"));
        std::fs::create_dir_all(&ns).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("go");
        let done = dir.path().join("done");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // Builtins only until the loop: `read` from the FIFO blocks without forking.
        let script = format!(
            "echo $$ > {procs}; read x < {fifo}; i=0; while [ $i -lt {forks} ]; do /bin/true; i=$((i+1)); done; echo ok > {done}; exec sleep 600",
            procs = ns.join("cgroup.procs").display(),
            fifo = fifo.display(),
            done = done.display(),
        );
        let shell = Command::new("sh").args(["-c", &script]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(ns.join("cgroup.procs"))
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the guest shell never joined its cgroup");
            std::thread::sleep(Duration::from_millis(10));
        }
        Guest {
            subtree,
            fifo,
            done,
            shell: Some(shell),
            _dir: dir,
        }
    }

    /// Lets the shell run its loop and waits until it finished.
    fn run_forks(&self) {
        std::fs::write(&self.fifo, "go\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.done.exists() {
            assert!(Instant::now() < deadline, "the fork loop did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn env(&self, pve: &Path) -> Vec<(String, String)> {
        vec![
            ("PLATFORM".into(), "proxmox".into()),
            ("CGROUP_PATH".into(), self.subtree.display().to_string()),
            ("PVE_PATH".into(), pve.display().to_string()),
            ("ENABLED_COLLECTORS".into(), "guests".into()),
            ("LOG_LEVEL".into(), "warn".into()),
        ]
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut shell) = self.shell.take() {
            // The shell exec'd sleep: killing it empties the cgroup.
            let _ = shell.kill();
            let _ = shell.wait();
        }
        // Remove only what we created, deepest first.
        let mut dirs = Vec::new();
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk(&e.path(), out);
                    }
                }
            }
            out.push(dir.to_path_buf());
        }
        walk(&self.subtree, &mut dirs);
        for dir in dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect(exporter: &Exporter) -> Vec<Series> {
    let r = request(exporter.address, "POST", "/collect?wait", &[]).unwrap();
    assert_eq!(r.status, 200);
    parse_exposition(&exporter.get("/metrics").text())
}

fn privileged() -> bool {
    require("root (eBPF and cgroup creation)", is_root())
}

fn check_loaded_and_counting(mut command: Command, tag: &str) {
    let guest = Guest::new(tag, 901, 20);
    let pve = tempfile::tempdir().unwrap();
    command.stderr(Stdio::piped());
    let exporter = Exporter::start_with(command, &guest.env(pve.path()));
    let status = exporter.get("/status").json();
    assert_eq!(
        status["exporter"]["components"]["ebpf"]["state"]["enabled"], true,
        "{}",
        status["exporter"]
    );
    let first = parse_exposition(&exporter.get("/metrics").text());
    let labels = [("container_id", "901"), ("type", "lxc")];
    assert_eq!(value(&first, "metrics_exporter_ebpf_enabled", &[]), Some(1.0));
    assert_eq!(
        value(&first, "container_tasks_forked_total", &labels),
        Some(0.0),
        "counts start at the slot"
    );
    guest.run_forks();
    let series = collect(&exporter);
    assert_eq!(value(&series, "container_tasks_forked_total", &labels), Some(20.0));
    assert_eq!(value(&series, "container_tasks_exits_total", &labels), Some(20.0));
    // 20 execs of /bin/true and the final exec of sleep.
    assert_eq!(value(&series, "container_tasks_execs_total", &labels), Some(21.0));
    // The cgroupfs series keep their names beside the eBPF ones.
    assert!(value(&series, "container_cpu_usage_seconds_total", &labels).unwrap() > 0.0);
    assert!(value(&series, "container_runqueue_latency_seconds_count", &labels).unwrap() >= 20.0);
    assert!(
        series
            .iter()
            .any(|s| s.0 == "metrics_exporter_build_info" && s.1["ebpf"] == "yes")
    );
}

#[test]
fn root_binary_serves_ebpf_guest_series_with_exact_task_counts() {
    let _serial = serial();
    if !privileged() {
        return;
    }
    check_loaded_and_counting(Command::new(binary()), "root");
}

#[test]
fn binary_loads_as_non_root_with_exactly_bpf_perfmon_net_admin() {
    let _serial = serial();
    if !privileged() || !require_command("setpriv") {
        return;
    }
    let caps = "+bpf,+perfmon,+net_admin";
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg(binary());
    check_loaded_and_counting(command, "setpriv");
}

#[test]
fn user_namespace_falls_back_with_the_reason_and_ebpf_on_refuses() {
    prove_refused_in_namespace(&["-U", "-r"], ("userns", 902), "errno 1", "permission_denied");
}

/// In a cgroup namespace of its own (`unshare --cgroup`, as in a container or Docker's default
/// `--cgroupns=private`) the guests' levels the exporter sees are not the kernel's: the programs
/// would count every guest as doing nothing. So the exporter does not load them, says why, and
/// serves the guest from cgroupfs; EBPF=on refuses to start. Before this check, a systemd unit
/// in a container loaded them and served 0 forks, execs and exits for a busy guest.
#[test]
fn cgroup_namespace_falls_back_with_the_reason_and_ebpf_on_refuses() {
    prove_refused_in_namespace(&["--cgroup"], ("cgroupns", 903), "cgroup namespace", "unsupported");
}

/// The binary run under `unshare <unshare_args>` with a fake guest: with EBPF=auto it serves the
/// guest from cgroupfs without the eBPF series, and `metrics_exporter_ebpf_enabled 0` and
/// /status give the reason (containing `reason`, of kind `kind`); with EBPF=on it tries, is
/// refused, and does not start, saying why.
fn prove_refused_in_namespace(unshare_args: &[&str], (name, vmid): (&str, u32), reason: &str, kind: &str) {
    let _serial = serial();
    if !privileged() || !require_command("unshare") {
        return;
    }
    let guest = Guest::new(name, vmid, 0);
    let pve = tempfile::tempdir().unwrap();
    let mut command = Command::new("unshare");
    command.args(unshare_args).arg(binary());
    let exporter = Exporter::start_with(command, &guest.env(pve.path()));
    let series = parse_exposition(&exporter.get("/metrics").text());
    let enabled = series
        .iter()
        .find(|s| s.0 == "metrics_exporter_ebpf_enabled")
        .expect("ebpf_enabled");
    assert_eq!(enabled.2, 0.0);
    assert!(enabled.1["reason"].contains(reason), "{:?}", enabled.1);
    // The same guest series come from cgroupfs.
    let id = vmid.to_string();
    assert!(
        value(
            &series,
            "container_cpu_usage_seconds_total",
            &[("container_id", id.as_str())]
        )
        .is_some()
    );
    assert!(!names(&series).contains("container_tasks_forked_total"));
    let status = exporter.get("/status").json();
    assert_eq!(
        status["exporter"]["components"]["ebpf"]["state"]["reason"]["kind"],
        kind
    );
    drop(exporter);

    // The service with EBPF=on tries, is refused, and does not start.
    let mut command = Command::new("unshare");
    command
        .args(unshare_args)
        .arg(binary())
        .env("EBPF", "on")
        .env("LISTEN_ADDRESS", "127.0.0.1")
        .env("METRICS_PORT", free_port().to_string())
        .envs(guest.env(pve.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (status, stderr) = run_bounded(command, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("EBPF=on but the eBPF programs cannot run") && stderr.contains(reason),
        "{stderr}"
    );
}

/// Runs a command that should exit by itself; kills it (and fails) after `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> (std::process::ExitStatus, String) {
    wait_bounded(&mut command.spawn().unwrap(), limit)
}

/// SIGKILLs a process we started (through strace) when dropped, also on failure: a tracer that
/// dies detaches its tracee, which would keep running.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill with a pid of our own grandchild (a reaped pid is not reused while the
        // test still holds strace, its parent, unreaped).
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Waits for a child that should exit by itself, with its stderr; kills it (and fails) after
/// `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut stderr).ok();
            }
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `strace -f -e trace=bpf -o <file>` around the binary: the bpf() calls the process makes.
struct BpfTrace {
    _dir: tempfile::TempDir,
    file: PathBuf,
}

impl BpfTrace {
    fn new() -> BpfTrace {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bpf.trace");
        BpfTrace { _dir: dir, file }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("strace");
        command
            .args(["-f", "-qq", "-e", "trace=bpf", "-o"])
            .arg(&self.file)
            .arg(binary())
            .args(args);
        command
    }

    /// The traced bpf() calls (strace writes one `bpf(BPF_...` line per call).
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.file)
            .unwrap()
            .lines()
            .filter(|l| l.contains("bpf("))
            .map(str::to_owned)
            .collect()
    }
}

fn env_with(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
    env
}

#[test]
fn check_config_and_once_make_no_bpf_call_while_the_service_does() {
    let _serial = serial();
    if !privileged() || !require_command("strace") {
        return;
    }
    let guest = Guest::new("nobpf", 903, 0);
    let pve = tempfile::tempdir().unwrap();
    let env = env_with(guest.env(pve.path()), "EBPF", "auto");

    // Control: the service under the same tracer makes bpf() calls (it loads the programs).
    let serve = BpfTrace::new();
    let mut exporter = Exporter::start_with(serve.command(&[]), &env);
    let status = exporter.get("/status").json();
    assert_eq!(
        status["exporter"]["components"]["ebpf"]["state"]["enabled"], true,
        "{}",
        status["exporter"]
    );
    // SIGTERM to the exporter itself (strace's child): strace then exits with it. Signalling
    // strace instead would detach it and leave the exporter running.
    let strace_pid = exporter.child.id();
    let children = std::fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children")).unwrap();
    let exporter_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let guard = KillOnDrop(exporter_pid);
    // SAFETY: kill with a pid read from our own child's children and a valid signal.
    unsafe { libc::kill(exporter_pid, libc::SIGTERM) };
    let (status, _) = wait_bounded(&mut exporter.child, Duration::from_secs(15));
    std::mem::forget(guard);
    assert!(status.success(), "{status}");
    assert!(!serve.calls().is_empty(), "the tracer saw no bpf() call of the service");

    let check = BpfTrace::new();
    let out = check.command(&["--check-config"]).only_env(&env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = check.calls();
    assert!(
        calls.is_empty(),
        "--check-config made {} bpf() calls, the first: {}",
        calls.len(),
        calls[0]
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ebpf = &report["ebpf"];
    assert_eq!(ebpf["mode"], "auto", "{ebpf}");
    // Root on this kernel: the service just loaded them, so the plan says it would.
    assert_eq!(ebpf["would_load"], true, "{ebpf}");
    assert!(ebpf["reason"].is_string(), "{ebpf}");

    let once = BpfTrace::new();
    let out = once.command(&["--once"]).only_env(&env).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = once.calls();
    assert!(
        calls.is_empty(),
        "--once made {} bpf() calls, the first: {}",
        calls.len(),
        calls[0]
    );
}

#[test]
fn once_exports_no_ebpf_counters_and_says_why() {
    let _serial = serial();
    if !privileged() {
        return;
    }
    let guest = Guest::new("once", 904, 0);
    let pve = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .arg("--once")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EBPF", "auto")
        .envs(guest.env(pve.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let series = parse_exposition(&text);
    let labels = [("container_id", "904"), ("type", "lxc")];
    // The cgroupfs series are there...
    assert!(
        value(&series, "container_cpu_usage_seconds_total", &labels).is_some(),
        "{text}"
    );
    // ...and no eBPF-only series, which would be 0 after no observation window.
    for absent in [
        "container_tasks_forked_total",
        "container_tasks_execs_total",
        "container_tasks_exits_total",
        "container_runqueue_latency_seconds_count",
    ] {
        assert!(!names(&series).contains(absent), "{absent} in --once output:\n{text}");
    }
    let enabled = series
        .iter()
        .find(|s| s.0 == "metrics_exporter_ebpf_enabled")
        .expect("metrics_exporter_ebpf_enabled");
    assert_eq!(enabled.2, 0.0);
    assert!(enabled.1["reason"].contains("--once"), "{:?}", enabled.1);
    assert!(
        series
            .iter()
            .any(|s| s.0 == "metrics_exporter_build_info" && s.1["ebpf"] == "no")
    );
}

/// `--check-config`'s judgement agrees with what the service then does, for a non-root user
/// holding the three capabilities the programs need, and holding one fewer.
#[test]
fn check_config_plan_agrees_with_the_service_for_capability_sets() {
    let _serial = serial();
    if !privileged() || !require_command("setpriv") {
        return;
    }
    let guest = Guest::new("plan", 905, 0);
    let pve = tempfile::tempdir().unwrap();
    let env = env_with(guest.env(pve.path()), "EBPF", "auto");
    for (caps, loads) in [("+bpf,+perfmon,+net_admin", true), ("+bpf,+net_admin", false)] {
        let as_user = || {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(format!("--inh-caps=-all,{caps}"))
                .arg(format!("--ambient-caps=-all,{caps}"))
                .arg(format!("--bounding-set=-all,{caps}"))
                .arg(binary());
            command
        };
        let out = as_user().arg("--check-config").only_env(&env).output().unwrap();
        assert!(out.status.success(), "{caps}: {}", String::from_utf8_lossy(&out.stderr));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let plan = &plan["ebpf"];
        assert_eq!(plan["would_load"], loads, "{caps}: {plan}");
        if !loads {
            assert!(plan["reason"].as_str().unwrap().contains("CAP_PERFMON"), "{plan}");
        }
        let exporter = Exporter::start_with(as_user(), &env);
        let status = exporter.get("/status").json();
        assert_eq!(
            status["exporter"]["components"]["ebpf"]["state"]["enabled"], loads,
            "{caps}: the plan said {plan}, the service: {}",
            status["exporter"]["components"]["ebpf"]
        );
    }
}
