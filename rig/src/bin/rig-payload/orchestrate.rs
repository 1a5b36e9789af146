//! The run inside the VM: cgroup2 controllers down the tree; container 101 (`lxc/101/ns`, its
//! own network namespace, `veth101i0` on bridge `vmbr0`, limits on `lxc/101` as `pct set`
//! writes them), container 102 (the one that stops and starts again), container 103 (systemd's
//! layout under `ns`) and "VM" 200 (processes in `qemu.slice/200.scope`, `tap200i0`); real block
//! IO, page cache, traffic, an OOM kill and task churn inside them; the Proxmox config tree; the
//! exporter in host mode with eBPF, and once inside container 101 with lxcfs; and the comparison
//! of each value it exported with the payload's own reads of the raw files
//! ([`guest_rig::truth`]), read just before and just after the collection that produced it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use guest_rig::cgroups::{Hierarchies, Limits};
use guest_rig::exposition::{Series, parse_exposition, value};
use guest_rig::http;
use guest_rig::pve::{self, GuestConfig, Net};
use guest_rig::report::{Expect, Report};
use guest_rig::truth::{self, CgroupTruth, NetCounters};
use guest_rig::vm::{EXPORTER_PATH, SCRATCH_DISK};

use crate::work::{self, Netns, read, write};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PVE_PATH: &str = "/etc/pve";
const NODE: &str = "pve1";
const CONTROLLERS: &str = "+cpuset +cpu +io +memory +pids";
const BRIDGE: &str = "vmbr0";
const BRIDGE_ADDRESS: &str = "10.99.0.1";
const CT_ADDRESS: &str = "10.99.0.101";
const METRICS_ADDRESS: &str = "127.0.0.1:9100";

/// Blocks of 4 KiB the container writes and reads back with O_DIRECT.
const IO_BLOCKS: usize = 256;
/// MiB the container reads through the page cache (its file pages; the limit is 64 MiB).
const CACHE_MIB: usize = 8;
/// The VM's NIC: its MAC (the source of its frames) and the address the host sends to.
const VM_MAC: &str = "BC:24:11:00:02:00";
const VM_ADDRESS: &str = "10.99.0.200";
const VM_READY: &str = "/run/rig-tap-ready";
/// Frames the VM sends to the bridge.
const VM_FRAMES: usize = 40;
/// Created by the page-cache reader once its reads are done.
const CACHE_READY: &str = "/run/rig-cache-ready";
/// Datagrams (and their size) the container sends to the bridge address and receives back.
const DATAGRAMS: usize = 50;
const DATAGRAM_BYTES: usize = 1000;
/// Processes the container forks (each execs and exits) while the exporter's eBPF runs.
const CHILDREN: usize = 5;

/// Creates `relative` and its parents, enabling every controller in each parent's
/// `cgroup.subtree_control` on the way down (as systemd and pve-lxc-syscalld leave it).
fn make_cgroup(relative: &str) -> anyhow::Result<PathBuf> {
    let mut path = PathBuf::from(CGROUP_ROOT);
    for part in relative.split('/') {
        write(&path.join("cgroup.subtree_control"), CONTROLLERS)?;
        path.push(part);
        if !path.exists() {
            std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        }
    }
    Ok(path)
}

/// A flat-keyed file's `key` (memory.events, memory.events.local).
fn flat(path: &Path, key: &str) -> anyhow::Result<u64> {
    truth::parse_flat(&read(path)?)
        .get(key)
        .copied()
        .with_context(|| format!("{} has no {key}", path.display()))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("starting ip")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `ip` inside the network namespace of `pid` (busybox nsenter, then iproute2).
fn ip_in(pid: u32, args: &[&str]) -> anyhow::Result<()> {
    let pid = pid.to_string();
    let mut full = vec!["-t", pid.as_str(), "-n", "ip"];
    full.extend(args);
    let output = Command::new("nsenter")
        .args(&full)
        .output()
        .context("starting nsenter")?;
    if !output.status.success() {
        bail!(
            "nsenter {} failed: {}",
            full.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// One guest: its cgroup, its processes (killed when the VM powers off).
struct Guest {
    vmid: u32,
    kind: &'static str,
    relative: String,
    dir: PathBuf,
    processes: Vec<Child>,
}

impl Guest {
    fn label(&self) -> String {
        format!("{}/{}", self.kind, self.vmid)
    }

    /// Where its tasks run: `ns` below a container, the scope itself for a VM.
    fn tasks_dir(&self) -> PathBuf {
        if self.kind == "lxc" {
            self.dir.join("ns")
        } else {
            self.dir.clone()
        }
    }

    fn container(cgroups: &Hierarchies, vmid: u32, limits: Limits) -> anyhow::Result<Guest> {
        let relative = format!("lxc/{vmid}");
        let dir = make_cgroup(&relative)?;
        make_cgroup(&format!("{relative}/ns"))?;
        limits.apply(cgroups, &relative)?;
        let mut guest = Guest {
            vmid,
            kind: "lxc",
            relative,
            dir,
            processes: Vec::new(),
        };
        // The container's init: its own network namespace, sleeping.
        guest.start(Netns::New, "sleep", &[])?;
        Ok(guest)
    }

    /// A container with systemd's layout under `ns` (what a Debian guest with systemd as PID 1
    /// makes): init in `ns/init.scope`, one sleeper per service in `ns/system.slice/<name>`,
    /// an empty `ns/user.slice`; controllers enabled down to the leaves, so `ns` itself holds
    /// no process.
    fn systemd_container(cgroups: &Hierarchies, vmid: u32, limits: Limits, services: &[&str]) -> anyhow::Result<Guest> {
        let relative = format!("lxc/{vmid}");
        let dir = make_cgroup(&relative)?;
        limits.apply(cgroups, &relative)?;
        let init_scope = make_cgroup(&format!("{relative}/ns/init.scope"))?;
        make_cgroup(&format!("{relative}/ns/user.slice"))?;
        let mut guest = Guest {
            vmid,
            kind: "lxc",
            relative,
            dir,
            processes: vec![work::spawn(&init_scope, Netns::New, "sleep", &[])?],
        };
        for service in services {
            guest.start_service(service)?;
        }
        Ok(guest)
    }

    /// A sleeper in `ns/system.slice/<service>` (created here).
    fn start_service(&mut self, service: &str) -> anyhow::Result<()> {
        let leaf = make_cgroup(&format!("{}/ns/system.slice/{service}", self.relative))?;
        let child = work::spawn(&leaf, self.netns(), "sleep", &[])?;
        self.processes.push(child);
        Ok(())
    }

    fn vm(cgroups: &Hierarchies, vmid: u32, limits: Limits) -> anyhow::Result<Guest> {
        let relative = format!("qemu.slice/{vmid}.scope");
        let dir = make_cgroup(&relative)?;
        limits.apply(cgroups, &relative)?;
        Ok(Guest {
            vmid,
            kind: "qemu",
            relative,
            dir,
            processes: Vec::new(),
        })
    }

    fn init_pid(&self) -> u32 {
        self.processes[0].id()
    }

    fn start(&mut self, netns: Netns, role: &str, args: &[&str]) -> anyhow::Result<()> {
        let child = work::spawn(&self.tasks_dir(), netns, role, args)?;
        self.processes.push(child);
        Ok(())
    }

    /// Runs a role in the guest to its end; its exit status.
    fn run(&self, netns: Netns, role: &str, args: &[&str]) -> anyhow::Result<std::process::ExitStatus> {
        Ok(work::spawn(&self.tasks_dir(), netns, role, args)?.wait()?)
    }

    /// Stops every process and removes the cgroups, as `pct stop` leaves a host.
    fn stop(&mut self) -> anyhow::Result<()> {
        for child in &mut self.processes {
            child.kill()?;
            child.wait()?;
        }
        self.processes.clear();
        if self.kind == "lxc" {
            std::fs::remove_dir(self.dir.join("ns"))?;
        }
        std::fs::remove_dir(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    fn netns(&self) -> Netns {
        if self.kind == "lxc" {
            Netns::Of(self.init_pid())
        } else {
            Netns::Host
        }
    }
}

/// The container's network: `veth<vmid>i0` on the bridge, its peer `eth0` in the container's
/// namespace with a private address (nothing is routed anywhere).
fn connect(guest: &Guest) -> anyhow::Result<()> {
    let host = format!("veth{}i0", guest.vmid);
    let pid = guest.init_pid().to_string();
    ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pid,
    ])?;
    ip(&["link", "set", &host, "master", BRIDGE, "up"])?;
    ip_in(
        guest.init_pid(),
        &["addr", "add", &format!("{CT_ADDRESS}/24"), "dev", "eth0"],
    )?;
    ip_in(guest.init_pid(), &["link", "set", "eth0", "up"])?;
    ip_in(guest.init_pid(), &["link", "set", "lo", "up"])?;
    Ok(())
}

/// The exporter's environment: Proxmox host mode over the VM's real files.
fn exporter_command() -> Command {
    let mut command = Command::new(EXPORTER_PATH);
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("PLATFORM", "proxmox")
        .env("PROC_PATH", "/proc")
        .env("SYS_PATH", "/sys")
        .env("CGROUP_PATH", CGROUP_ROOT)
        .env("PVE_PATH", PVE_PATH)
        .env("EBPF", "on")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null());
    command
}

fn once() -> anyhow::Result<Vec<Series>> {
    let output = exporter_command()
        .arg("--once")
        .output()
        .context("starting the exporter")?;
    if !output.status.success() {
        bail!(
            "metrics-exporter --once exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_exposition(&String::from_utf8_lossy(&output.stdout)))
}

/// lxcfs serving at [`work::LXCFS_MOUNT`] (in the VM's root cgroup, as on a host).
fn start_lxcfs() -> anyhow::Result<Child> {
    std::fs::create_dir_all(work::LXCFS_MOUNT)?;
    let child = Command::new(guest_rig::vm::LXCFS_PATH)
        .args(["-f", work::LXCFS_MOUNT])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting lxcfs")?;
    wait_for(&format!("{}/proc/meminfo", work::LXCFS_MOUNT))?;
    Ok(child)
}

/// `--once` of the exporter inside container 101, as it runs there: in the container's cgroup
/// (`ns`) and network namespace, with a cgroup namespace rooted at `ns` and cgroup2 mounted
/// again in its own mount namespace (what LXC's `lxc.mount.auto = cgroup` gives a container).
/// lxcfs's files over /proc, so the platform is detected from them (no PLATFORM); CONTAINER_ID
/// is given: the VM's containers have no rootfs volume to derive it from.
fn once_inside(container: &Guest) -> anyhow::Result<Vec<Series>> {
    let mut command = Command::new(guest_rig::vm::PAYLOAD_PATH);
    command
        .args(["as-container", EXPORTER_PATH, "--once"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CONTAINER_ID", container.vmid.to_string())
        .env("CGROUP_PATH", CGROUP_ROOT)
        .env("EBPF", "off")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = work::spawn_command(&container.tasks_dir(), container.netns(), command)?.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "the exporter inside {} exited with {}: {}",
            container.label(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_exposition(&String::from_utf8_lossy(&output.stdout)))
}

/// The container's own view: CPU, processes, tasks and pressure of its cgroup namespace root.
/// `guest_limit` is memory.max of `lxc/101`, where `pct set` writes it (ns has none).
fn check_inside(report: &mut Report, series: &[Series], b: &CgroupTruth, a: &CgroupTruth, guest_limit: Option<u64>) {
    let guest = "inside lxc/101";
    for (mode, before, after) in [
        ("user", b.cpu_user_usec, a.cpu_user_usec),
        ("system", b.cpu_system_usec, a.cpu_system_usec),
    ] {
        report.push(
            guest,
            &format!("cpu {mode}, ns cpu.stat (node_cpu_seconds_total)"),
            value(series, "node_cpu_seconds_total", &[("mode", mode)]),
            match (seconds(before), seconds(after)) {
                (Some(b), Some(a)) => Expect::Between(b, a),
                _ => Expect::Absent,
            },
        );
    }
    let key = ("cpu".to_owned(), "some".to_owned());
    report.push(
        guest,
        "cpu pressure some, ns cpu.pressure (node_pressure_cpu_waiting_seconds_total)",
        value(series, "node_pressure_cpu_waiting_seconds_total", &[]),
        match (
            seconds(b.pressure.get(&key).copied()),
            seconds(a.pressure.get(&key).copied()),
        ) {
            (Some(b), Some(a)) => Expect::Between(b, a),
            _ => Expect::Absent,
        },
    );
    report.push(
        guest,
        "platform detected (metrics_exporter_build_info{platform})",
        value(series, "metrics_exporter_build_info", &[("platform", "lxc-container")]),
        Expect::Equal(1.0),
    );
    report.push(
        guest,
        "memory total = the limit of lxc/101, via lxcfs (node_memory_total_bytes)",
        value(series, "node_memory_total_bytes", &[]),
        match guest_limit {
            Some(limit) => Expect::Equal(limit as f64),
            None => Expect::Absent,
        },
    );
    // The exporter counts itself: it is one more process, and at least one more task, of ns.
    report.push(
        guest,
        "processes of ns, the exporter included (node_processes)",
        value(series, "node_processes", &[]),
        Expect::Equal(b.processes as f64 + 1.0),
    );
    report.push(
        guest,
        "tasks of ns, the exporter's included (node_processes_threads)",
        value(series, "node_processes_threads", &[]),
        Expect::AtLeast(b.tasks.unwrap_or(0) as f64 + 1.0),
    );
}

/// The exporter serving on loopback; collections only when asked (POST /collect), so that the
/// payload's reads bracket exactly one collection.
struct Exporter {
    child: Child,
    address: std::net::SocketAddr,
}

impl Exporter {
    fn start() -> anyhow::Result<Exporter> {
        let address: std::net::SocketAddr = METRICS_ADDRESS.parse()?;
        let child = exporter_command()
            .env("LISTEN_ADDRESS", "127.0.0.1")
            .env("METRICS_PORT", address.port().to_string())
            .env("COLLECTION_INTERVAL", "3600")
            .spawn()
            .context("starting the exporter")?;
        let mut exporter = Exporter { child, address };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = exporter.child.try_wait()? {
                bail!("the exporter exited at start with {status}");
            }
            if http::get(address, "/metrics").is_ok_and(|r| r.status == 200) {
                return Ok(exporter);
            }
            if Instant::now() > deadline {
                bail!("the exporter did not serve /metrics within 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn collect(&self) -> anyhow::Result<()> {
        let response = http::request(self.address, "POST", "/collect?wait", &[])?;
        if response.status != 200 {
            bail!("POST /collect answered {}: {}", response.status, response.text());
        }
        Ok(())
    }

    fn scrape(&self) -> anyhow::Result<Vec<Series>> {
        let response = http::get(self.address, "/metrics")?;
        if response.status != 200 {
            bail!("GET /metrics answered {}", response.status);
        }
        Ok(parse_exposition(&response.text()))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the payload reads around one collection.
struct Reads {
    guests: Vec<CgroupTruth>,
    /// Per guest: `memory.events` (hierarchical) and `memory.high` as the kernel prints them
    /// (the two memory files [`truth`] does not read).
    memory_events: Vec<std::collections::BTreeMap<String, u64>>,
    memory_high: Vec<Option<String>>,
    host_net: std::collections::BTreeMap<String, NetCounters>,
    ct_net: std::collections::BTreeMap<String, NetCounters>,
}

fn read_all(cgroups: &Hierarchies, guests: &[&Guest], container: &Guest) -> Reads {
    Reads {
        guests: guests
            .iter()
            .map(|g| truth::read_cgroup(cgroups, &g.relative))
            .collect(),
        memory_events: guests
            .iter()
            .map(|g| truth::parse_flat(&read(&g.dir.join("memory.events")).unwrap_or_default()))
            .collect(),
        memory_high: guests
            .iter()
            .map(|g| read(&g.dir.join("memory.high")).ok().map(|t| t.trim().to_owned()))
            .collect(),
        host_net: truth::net_dev(None),
        ct_net: truth::net_dev(Some(container.init_pid() as i32)),
    }
}

/// Pushes checks of one guest's exported series against the reads before and after.
struct Checker<'a> {
    report: &'a mut Report,
    series: &'a [Series],
    guest: String,
    labels: Vec<(&'static str, String)>,
}

impl Checker<'_> {
    fn exported(&self, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        labels.extend_from_slice(extra);
        value(self.series, name, &labels)
    }

    /// A counter: between the two reads; absent when the file does not have it.
    fn counter(&mut self, quantity: &str, name: &str, extra: &[(&str, &str)], before: Option<f64>, after: Option<f64>) {
        let expect = match (before, after) {
            (Some(b), Some(a)) => Expect::Between(b, a),
            _ => Expect::Absent,
        };
        let exported = self.exported(name, extra);
        self.report
            .push(&self.guest, &format!("{quantity} ({name})"), exported, expect);
    }

    /// A gauge that moves: near the middle of the two reads, within 5 % or their spread.
    fn gauge(&mut self, quantity: &str, name: &str, before: Option<f64>, after: Option<f64>) {
        let expect = match (before, after) {
            (Some(b), Some(a)) => Expect::Near {
                value: (a + b) / 2.0,
                relative: 0.05,
                absolute: (a - b).abs() / 2.0,
            },
            _ => Expect::Absent,
        };
        let exported = self.exported(name, &[]);
        self.report
            .push(&self.guest, &format!("{quantity} ({name})"), exported, expect);
    }

    /// A limit: the file's value (unchanged between the reads), absent for `max`.
    fn limit(&mut self, quantity: &str, name: &str, before: Option<f64>, after: Option<f64>) {
        let expect = match (before, after) {
            (Some(b), Some(a)) if a == b => Expect::Equal(a),
            (Some(b), Some(a)) => Expect::Between(b.min(a), b.max(a)),
            _ => Expect::Absent,
        };
        let exported = self.exported(name, &[]);
        self.report
            .push(&self.guest, &format!("{quantity} ({name})"), exported, expect);
    }

    fn expect(&mut self, quantity: &str, name: &str, extra: &[(&str, &str)], expect: Expect) {
        let exported = self.exported(name, extra);
        self.report
            .push(&self.guest, &format!("{quantity} ({name})"), exported, expect);
    }
}

fn seconds(usec: Option<u64>) -> Option<f64> {
    usec.map(|u| u as f64 / 1e6)
}

fn float(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// The cgroupfs checks of one guest.
fn check_cgroup(c: &mut Checker, b: &CgroupTruth, a: &CgroupTruth, device: &str) {
    c.counter(
        "cpu usage",
        "container_cpu_usage_seconds_total",
        &[],
        seconds(b.cpu_usage_usec),
        seconds(a.cpu_usage_usec),
    );
    c.counter(
        "cpu user",
        "container_cpu_user_seconds_total",
        &[],
        seconds(b.cpu_user_usec),
        seconds(a.cpu_user_usec),
    );
    c.counter(
        "cpu system",
        "container_cpu_system_seconds_total",
        &[],
        seconds(b.cpu_system_usec),
        seconds(a.cpu_system_usec),
    );
    c.counter(
        "cfs periods",
        "container_cpu_cfs_periods_total",
        &[],
        float(b.cpu_periods),
        float(a.cpu_periods),
    );
    c.counter(
        "cfs throttled periods",
        "container_cpu_cfs_throttled_periods_total",
        &[],
        float(b.cpu_throttled_periods),
        float(a.cpu_throttled_periods),
    );
    c.counter(
        "cfs throttled time",
        "container_cpu_cfs_throttled_seconds_total",
        &[],
        b.cpu_throttled_usec.map(|u| u / 1e6),
        a.cpu_throttled_usec.map(|u| u / 1e6),
    );
    c.limit(
        "cpu limit",
        "container_spec_cpu_limit_cores",
        b.cpu_limit_cores,
        a.cpu_limit_cores,
    );

    c.gauge(
        "memory usage",
        "container_memory_usage_bytes",
        float(b.memory_usage),
        float(a.memory_usage),
    );
    let working_set = |t: &CgroupTruth| Some(t.memory_usage?.saturating_sub(t.memory_inactive_file?) as f64);
    c.gauge(
        "working set",
        "container_memory_working_set_bytes",
        working_set(b),
        working_set(a),
    );
    let gui = |t: &CgroupTruth| Some(t.memory_usage?.saturating_sub(t.memory_file?) as f64);
    c.gauge(
        "GUI memory (current - file)",
        "container_memory_pve_used_bytes",
        gui(b),
        gui(a),
    );
    c.gauge("swap", "container_memory_swap", float(b.swap), float(a.swap));
    c.limit(
        "memory limit",
        "container_spec_memory_limit_bytes",
        float(b.memory_limit),
        float(a.memory_limit),
    );
    c.limit(
        "swap limit",
        "container_spec_memory_swap_limit_bytes",
        float(b.swap_limit),
        float(a.swap_limit),
    );
    c.counter(
        "OOM kills (memory.events, hierarchical)",
        "container_oom_kills_total",
        &[],
        float(b.oom_kills),
        float(a.oom_kills),
    );

    for resource in ["cpu", "memory", "io"] {
        for (kind, word) in [("some", "waiting"), ("full", "stalled")] {
            let key = (resource.to_owned(), kind.to_owned());
            c.counter(
                &format!("{resource} pressure {kind}"),
                &format!("container_pressure_{resource}_{word}_seconds_total"),
                &[],
                seconds(b.pressure.get(&key).copied()),
                seconds(a.pressure.get(&key).copied()),
            );
        }
    }

    let io = |t: &CgroupTruth, f: fn(&truth::Io) -> u64| t.io.get(device).map(|io| f(io) as f64);
    let dev = [("device", device)];
    type Field = fn(&truth::Io) -> u64;
    let quantities: [(&str, &str, Field); 4] = [
        ("IO read bytes", "container_fs_reads_bytes_total", |i| i.read_bytes),
        ("IO written bytes", "container_fs_writes_bytes_total", |i| i.write_bytes),
        ("IO reads", "container_fs_reads_total", |i| i.reads),
        ("IO writes", "container_fs_writes_total", |i| i.writes),
    ];
    for (quantity, name, field) in quantities {
        c.counter(quantity, name, &dev, io(b, field), io(a, field));
    }

    let (low, high) = (b.tasks.min(a.tasks), b.tasks.max(a.tasks));
    c.counter(
        "tasks (pids.current)",
        "container_threads",
        &[],
        float(low),
        float(high),
    );
    c.limit(
        "pids limit",
        "container_threads_max",
        float(b.tasks_max),
        float(a.tasks_max),
    );
    let (low, high) = (b.processes.min(a.processes), b.processes.max(a.processes));
    c.counter(
        "processes",
        "container_processes",
        &[],
        Some(low as f64),
        Some(high as f64),
    );
}

/// `memory.events` per event, and the soft limit `memory.high` (absent when it says `max`).
fn check_memory_events(c: &mut Checker, b: &Reads, a: &Reads, guest: usize) {
    for event in ["high", "max", "oom"] {
        let count = |r: &Reads| r.memory_events[guest].get(event).map(|v| *v as f64);
        c.counter(
            &format!("memory.events {event}"),
            "container_memory_events_total",
            &[("event", event)],
            count(b),
            count(a),
        );
    }
    let high = |r: &Reads| r.memory_high[guest].as_deref().and_then(|t| t.parse::<f64>().ok());
    c.limit(
        &format!(
            "soft limit (memory.high {:?})",
            a.memory_high[guest].as_deref().unwrap_or("missing")
        ),
        "container_spec_memory_soft_limit_bytes",
        high(b),
        high(a),
    );
}

/// Interface counters of the container in its own view: what `eth0` counted in its namespace,
/// and the host side `veth<vmid>i0` swapped (host receive is what the guest sent).
/// A VM's tap has no guest end the payload can read (QEMU's descriptor is the other end):
/// `guest_end` is false there.
fn check_network(c: &mut Checker, b: &Reads, a: &Reads, host: &str, guest_end: bool) {
    let interface = [("interface", "net0")];
    type Field = fn(&NetCounters) -> u64;
    let quantities: [(&str, &str, Field, Field); 4] = [
        (
            "received bytes",
            "container_network_receive_bytes_total",
            |n| n.rx_bytes,
            |n| n.tx_bytes,
        ),
        (
            "received packets",
            "container_network_receive_packets_total",
            |n| n.rx_packets,
            |n| n.tx_packets,
        ),
        (
            "sent bytes",
            "container_network_transmit_bytes_total",
            |n| n.tx_bytes,
            |n| n.rx_bytes,
        ),
        (
            "sent packets",
            "container_network_transmit_packets_total",
            |n| n.tx_packets,
            |n| n.rx_packets,
        ),
    ];
    for (quantity, name, guest_field, host_field) in quantities {
        let guest = |r: &Reads| r.ct_net.get("eth0").map(|n| guest_field(n) as f64);
        let host_end = |r: &Reads| r.host_net.get(host).map(|n| host_field(n) as f64);
        if guest_end {
            c.counter(
                &format!("{quantity}, guest end eth0"),
                name,
                &interface,
                guest(b),
                guest(a),
            );
        }
        c.counter(
            &format!("{quantity}, host end {host}"),
            name,
            &interface,
            host_end(b),
            host_end(a),
        );
    }
}

fn guest_checker<'a>(report: &'a mut Report, series: &'a [Series], guest: &Guest) -> Checker<'a> {
    Checker {
        report,
        series,
        guest: guest.label(),
        labels: vec![
            ("container_id", guest.vmid.to_string()),
            ("type", guest.kind.to_owned()),
        ],
    }
}

fn guest_configs() -> Vec<GuestConfig> {
    let container = |vmid: u32, nets: Vec<Net>| GuestConfig {
        vmid,
        lxc: true,
        name: format!("ct{vmid}"),
        memory_mib: 64,
        swap_mib: Some(32),
        cores: 1,
        cpulimit: Some(0.2),
        nets,
        tags: vec!["rig".into()],
        unprivileged: false,
        rootfs: None,
    };
    vec![
        container(
            101,
            vec![Net {
                mac: "BC:24:11:00:01:01".into(),
                bridge: BRIDGE.into(),
                guest_name: Some("eth0".into()),
                address: Some(CT_ADDRESS.into()),
            }],
        ),
        container(102, vec![]),
        container(103, vec![]),
        GuestConfig {
            vmid: 200,
            lxc: false,
            name: "vm200".into(),
            memory_mib: 128,
            swap_mib: None,
            cores: 1,
            cpulimit: Some(0.3),
            nets: vec![Net {
                mac: VM_MAC.into(),
                bridge: BRIDGE.into(),
                guest_name: None,
                address: None,
            }],
            tags: vec![],
            unprivileged: false,
            rootfs: None,
        },
    ]
}

fn limits_of(config: &GuestConfig) -> Limits {
    Limits {
        memory_mib: Some(config.memory_mib),
        swap_mib: config.swap_mib,
        cpulimit: config.cpulimit,
        pids_max: Some(64),
    }
}

/// Waits (bounded) for a workload to create `ready`.
fn wait_for(ready: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(ready).exists() {
        if Instant::now() > deadline {
            bail!("{ready} did not appear within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Prints how long the run took so far, so that a slow phase shows on the console.
fn phase(start: Instant, what: &str) {
    eprintln!("rig-payload: {:6.2} s {what}", start.elapsed().as_secs_f64());
}

pub fn run() -> anyhow::Result<Report> {
    let start = Instant::now();
    let mut report = Report::new("cgroup2");
    let cgroups = Hierarchies::read()?;
    if cgroups.hybrid() || cgroups.unified() != Some(Path::new(CGROUP_ROOT)) {
        bail!("expected a pure cgroup2 hierarchy at {CGROUP_ROOT}, found {cgroups:?}");
    }
    let configs = guest_configs();
    let config = |vmid: u32| configs.iter().find(|c| c.vmid == vmid).expect("configured");

    // Guests and their steady workloads: burners under CPU quotas small enough to throttle.
    let mut ct = Guest::container(&cgroups, 101, limits_of(config(101)))?;
    let mut churned = Guest::container(&cgroups, 102, limits_of(config(102)))?;
    churned.start(churned.netns(), "burn", &[])?;
    // A soft limit on one guest (raw `lxc.cgroup2.memory.high`): the others say `max`.
    write(&churned.dir.join("memory.high"), "50331648")?;
    let mut systemd = Guest::systemd_container(
        &cgroups,
        103,
        limits_of(config(103)),
        &[
            "systemd-journald.service",
            "cron.service",
            "ssh.service",
            "dbus.service",
        ],
    )?;
    let mut vm = Guest::vm(&cgroups, 200, limits_of(config(200)))?;
    vm.start(Netns::Host, "burn", &[])?;
    vm.start(Netns::Host, "sleep", &[])?;

    phase(start, "guests started");
    // Network: the bridge, the container's veth, bounded UDP both ways.
    ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{BRIDGE_ADDRESS}/24"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    connect(&ct)?;
    // The VM's NIC: a tap on the bridge that the VM's process holds, as QEMU does.
    ip(&["tuntap", "add", "dev", "tap200i0", "mode", "tap"])?;
    ip(&["link", "set", "tap200i0", "master", BRIDGE, "up"])?;
    let bridge_mac = read(Path::new("/sys/class/net").join(BRIDGE).join("address").as_path())?;
    vm.start(
        Netns::Host,
        "tap",
        &["tap200i0", bridge_mac.trim(), &VM_FRAMES.to_string(), VM_READY],
    )?;
    wait_for(VM_READY)?;
    // Unicast to the VM's MAC (learnt by the bridge from its frames): only the tap sees it.
    ip(&["neigh", "add", VM_ADDRESS, "lladdr", VM_MAC, "dev", BRIDGE])?;
    let receiver = std::net::UdpSocket::bind((BRIDGE_ADDRESS, 9999))?;
    let sent = ct.run(
        ct.netns(),
        "udp-send",
        &[
            &format!("{BRIDGE_ADDRESS}:9999"),
            &DATAGRAMS.to_string(),
            &DATAGRAM_BYTES.to_string(),
        ],
    )?;
    if !sent.success() {
        bail!("udp-send in the container failed: {sent}");
    }
    receiver.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buffer = [0u8; 2048];
    for i in 0..DATAGRAMS {
        receiver
            .recv_from(&mut buffer)
            .with_context(|| format!("datagram {i} from the container did not arrive"))?;
    }
    for _ in 0..DATAGRAMS {
        receiver.send_to(&buffer[..DATAGRAM_BYTES], (VM_ADDRESS, 9))?;
    }
    // Answers to a port nobody listens on: the container's stack replies port unreachable.
    for _ in 0..DATAGRAMS {
        receiver.send_to(&buffer[..DATAGRAM_BYTES], (CT_ADDRESS, 9))?;
    }

    phase(start, "traffic done");
    // Block IO with O_DIRECT from inside the container's cgroup.
    let io = ct.run(ct.netns(), "io", &[SCRATCH_DISK, &IO_BLOCKS.to_string()])?;
    if !io.success() {
        bail!("block IO in the container failed: {io}");
    }
    let device = truth::device_number(Path::new(SCRATCH_DISK)).context("no scratch disk")?;

    phase(start, "block IO done");
    // A memory hog in `ns`, killed under memory.max of lxc/101.
    let hog = ct.run(ct.netns(), "hog", &["256"])?;
    use std::os::unix::process::ExitStatusExt;
    if hog.signal() != Some(libc::SIGKILL) {
        bail!("the memory hog was not OOM-killed: {hog}");
    }
    let (hierarchical, local, ns_local) = (
        flat(&ct.dir.join("memory.events"), "oom_kill")?,
        flat(&ct.dir.join("memory.events.local"), "oom_kill")?,
        flat(&ct.dir.join("ns/memory.events.local"), "oom_kill")?,
    );
    eprintln!(
        "rig-payload: OOM kill counted in lxc/101 memory.events {hierarchical}, its .local {local}, ns .local {ns_local}"
    );
    if (hierarchical, local, ns_local) != (1, 0, 1) {
        bail!("expected the kill in ns only (1, 0, 1), read ({hierarchical}, {local}, {ns_local})");
    }
    // Page cache charged to the container (buffered reads of the same disk), after the hog so
    // that its reclaim does not drop it: usage, working set and the GUI's figure then differ.
    ct.start(
        ct.netns(),
        "cache",
        &[SCRATCH_DISK, &CACHE_MIB.to_string(), CACHE_READY],
    )?;
    wait_for(CACHE_READY)?;
    phase(start, "traffic, IO, page cache and OOM kill done");
    pve::write_tree(Path::new(PVE_PATH), NODE, &configs, 1_764_900_000)?;

    // --once has no observation window: eBPF counters must be absent there.
    let once = once()?;
    report.push(
        "lxc/101",
        "--once: eBPF forks absent (container_tasks_forked_total)",
        value(&once, "container_tasks_forked_total", &[("container_id", "101")]),
        Expect::Absent,
    );

    let _lxcfs = start_lxcfs()?;
    let ns = format!("{}/ns", ct.relative);
    let before = truth::read_cgroup(&cgroups, &ns);
    let inside = once_inside(&ct)?;
    let after = truth::read_cgroup(&cgroups, &ns);
    let guest_limit = truth::read_cgroup(&cgroups, &ct.relative).memory_limit;
    check_inside(&mut report, &inside, &before, &after, guest_limit);
    phase(start, "exporter --once done");
    let exporter = Exporter::start()?;
    phase(start, "exporter serving, eBPF loaded");
    // Task churn the eBPF programs must count: CHILDREN forks by one process that the rig
    // started in `ns` (its exec and exit count too).
    let children = ct.run(ct.netns(), "children", &[&CHILDREN.to_string()])?;
    if !children.success() {
        bail!("children in the container failed: {children}");
    }
    // The container's burner starts only now: under its 0.2-core quota it would slow every
    // workload above to a crawl. Its exec is the second one the programs see in `ns`.
    ct.start(ct.netns(), "burn", &[])?;
    std::thread::sleep(Duration::from_millis(1500));

    let guests = [&ct, &churned, &vm, &systemd];
    phase(start, "children done");
    let before = read_all(&cgroups, &guests, &ct);
    exporter.collect()?;
    phase(start, "collection done");
    let after = read_all(&cgroups, &guests, &ct);
    let series = exporter.scrape()?;
    phase(start, "first collection compared");
    if before.guests[0].memory_file.unwrap_or(0) == 0 {
        bail!("lxc/101 has no file cache: its usage and GUI memory would not differ");
    }
    if before.guests[0].cpu_throttled_periods.unwrap_or(0) == 0 {
        bail!("lxc/101 was never throttled: its quota does not bite, the throttling checks would prove nothing");
    }
    {
        let mut c = guest_checker(&mut report, &series, &vm);
        check_network(&mut c, &before, &after, "tap200i0", false);
    }
    // memory.events is hierarchical: the kill in `ns` (its .local count) is the guest's.
    report.push(
        "lxc/101",
        "OOM kills in ns (ns memory.events.local) counted for the guest (container_oom_kills_total)",
        value(
            &series,
            "container_oom_kills_total",
            &[("container_id", "101"), ("type", "lxc")],
        ),
        Expect::Equal(ns_local as f64),
    );
    for (i, guest) in guests.iter().enumerate() {
        let mut c = guest_checker(&mut report, &series, guest);
        check_cgroup(&mut c, &before.guests[i], &after.guests[i], &device);
        check_memory_events(&mut c, &before, &after, i);
        // Only guests with a burner ran in the window (103's services sleep throughout).
        if guest.vmid != systemd.vmid {
            c.expect(
                "run-queue latency observed",
                "container_runqueue_latency_seconds_count",
                &[],
                Expect::AtLeast(1.0),
            );
        }
    }
    {
        let mut c = guest_checker(&mut report, &series, &ct);
        check_network(&mut c, &before, &after, "veth101i0", true);
        c.expect(
            "eBPF forks",
            "container_tasks_forked_total",
            &[],
            Expect::Equal(CHILDREN as f64),
        );
        c.expect(
            "eBPF execs",
            "container_tasks_execs_total",
            &[],
            Expect::Equal(CHILDREN as f64 + 2.0),
        );
        c.expect(
            "eBPF exits",
            "container_tasks_exits_total",
            &[],
            Expect::Equal(CHILDREN as f64 + 1.0),
        );
    }
    report.push(
        "exporter",
        "eBPF loaded (metrics_exporter_ebpf_enabled)",
        value(&series, "metrics_exporter_ebpf_enabled", &[]),
        Expect::Equal(1.0),
    );

    // A service starts in the systemd guest: a new cgroup in its subtree, whose process the
    // next collection counts.
    systemd.start_service("late.service")?;
    let reshape_before = truth::read_cgroup(&cgroups, &systemd.relative);
    exporter.collect()?;
    let reshape_after = truth::read_cgroup(&cgroups, &systemd.relative);
    let reshaped = exporter.scrape()?;
    {
        let mut c = guest_checker(&mut report, &reshaped, &systemd);
        c.counter(
            "a service started: processes",
            "container_processes",
            &[],
            Some(reshape_before.processes as f64),
            Some(reshape_after.processes as f64),
        );
        c.counter(
            "a service started: tasks",
            "container_threads",
            &[],
            float(reshape_before.tasks),
            float(reshape_after.tasks),
        );
    }

    // Churn: container 102 stops (its cgroup goes), then starts again (a new cgroup).
    let usage_before_stop = after.guests[1].cpu_usage_usec.context("102 has no usage")? as f64 / 1e6;
    churned.stop()?;
    exporter.collect()?;
    let stopped = exporter.scrape()?;
    {
        let mut c = guest_checker(&mut report, &stopped, &churned);
        c.expect(
            "stopped: cpu usage",
            "container_cpu_usage_seconds_total",
            &[],
            Expect::Absent,
        );
        c.expect(
            "stopped: memory usage",
            "container_memory_usage_bytes",
            &[],
            Expect::Absent,
        );
        c.expect("stopped: processes", "container_processes", &[], Expect::Absent);
        c.expect(
            "stopped: eBPF forks",
            "container_tasks_forked_total",
            &[],
            Expect::Absent,
        );
        c.expect(
            "stopped: info series stays",
            "pve_guest_info",
            &[("status", "stopped")],
            Expect::Equal(1.0),
        );
    }
    let mut restarted = Guest::container(&cgroups, 102, limits_of(config(102)))?;
    restarted.start(restarted.netns(), "burn", &[])?;
    std::thread::sleep(Duration::from_millis(500));
    let before = truth::read_cgroup(&cgroups, &restarted.relative);
    exporter.collect()?;
    let after = truth::read_cgroup(&cgroups, &restarted.relative);
    let started = exporter.scrape()?;
    {
        let mut c = guest_checker(&mut report, &started, &restarted);
        c.counter(
            "restarted: cpu usage from the new cgroup",
            "container_cpu_usage_seconds_total",
            &[],
            seconds(before.cpu_usage_usec),
            seconds(after.cpu_usage_usec),
        );
        c.expect(
            "restarted: cpu usage below the stopped one's",
            "container_cpu_usage_seconds_total",
            &[],
            Expect::Between(0.0, usage_before_stop),
        );
        c.expect(
            "restarted: info series running",
            "pve_guest_info",
            &[("status", "running")],
            Expect::Equal(1.0),
        );
    }
    drop(exporter);
    phase(start, "churn done");
    Ok(report)
}
