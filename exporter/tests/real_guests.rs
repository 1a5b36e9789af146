//! Real guests on this machine (issue 11, points 1 and 3): the rig (crate `guest-rig`) brings up
//! LXC containers A (privileged busybox on a loop-mounted raw image, limits as `pct set` writes
//! them), B (unprivileged, subvol dir), C (Debian with systemd as PID 1) and QEMU guests VM1 (one
//! tap) and VM2 (two taps), laid out as Proxmox VE lays them out, with a PVE_PATH tree for them.
//! The test makes them work (a CPU burner under a quota, direct IO on A's loop device, a memory
//! hog killed by the OOM killer, bounded pings on the rig's bridge, a known number of execs),
//! runs the real exporter binary in host mode (PLATFORM=proxmox, EBPF=on) and compares each
//! exported value with the rig's own read of the kernel's files (`guest_rig::truth`, written
//! independently of the exporter's parsers), read just before and just after the collection
//! the scrape shows. Then it stops and restarts a container (churn), runs `--once` on the host,
//! and runs the exporter inside A, B and C (lxc-attach) against their own view.
//!
//! Every comparison goes into a `guest_rig::report::Report`, printed as a table (the closing
//! note copies it) before the test asserts that all passed, with the rig's set-up and teardown
//! time and the whole test's time.
//!
//! Needs root and the rig's packages (`cargo xtask setup`): outside CI it skips loudly; in CI
//! (CI=true) it fails. The rig removes everything it made, also on failure (its Drop).

// This test uses a part of the shared support; the rest (re-exports for other tests) is unused here.
#[allow(unused_imports)]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Exporter, OnlyEnv, Series, binary, is_root, parse_exposition, require, value};
use guest_rig::cgroups::Hierarchies;
use guest_rig::report::{Expect, Report};
use guest_rig::rig::{Description, RIG_ROOT, Rig, Role};
use guest_rig::truth::{self, CgroupTruth, NetCounters};
use guest_rig::{http, lxc};

/// Everything the rig reads at one moment.
struct World {
    cgroups: BTreeMap<u32, CgroupTruth>,
    /// The host's /proc/net/dev (host side of every veth and tap).
    host_net: BTreeMap<String, NetCounters>,
    /// Each running container's own /proc/<init>/net/dev (the guest side).
    guest_net: BTreeMap<u32, BTreeMap<String, NetCounters>>,
}

fn read_world(rig: &Rig) -> World {
    let d = &rig.description;
    let mut cgroups = BTreeMap::new();
    let mut guest_net = BTreeMap::new();
    for c in &d.containers {
        cgroups.insert(c.spec.vmid, truth::read_cgroup(&rig.cgroups, &c.spec.cgroup()));
        if let Ok(pid) = lxc::init_pid(&d.lxcpath, &c.spec.name()) {
            guest_net.insert(c.spec.vmid, truth::net_dev(Some(pid)));
        }
    }
    for v in &d.vms {
        cgroups.insert(v.spec.vmid, truth::read_cgroup(&rig.cgroups, &v.spec.cgroup()));
    }
    World {
        cgroups,
        host_net: truth::net_dev(None),
        guest_net,
    }
}

/// One scrape whose collection happened between two reads of the world: `POST /collect`, then
/// `/metrics` only counts when it shows that collection (a periodic one may slip in between).
fn bracketed<T>(address: SocketAddr, mut read: impl FnMut() -> T) -> (T, Vec<Series>, T) {
    for _ in 0..10 {
        let before = read();
        let collect = http::request(address, "POST", "/collect?wait", &[]).expect("POST /collect");
        assert_eq!(collect.status, 200, "POST /collect: {}", collect.text());
        let sequence = collect.json()["sequence"].as_f64().expect("sequence");
        let after = read();
        let metrics = http::get(address, "/metrics").expect("GET /metrics");
        let series = parse_exposition(&metrics.text());
        if value(&series, "metrics_exporter_collections_total", &[]) == Some(sequence) {
            return (before, series, after);
        }
    }
    panic!("ten scrapes in a row showed a later collection than the one asked for");
}

/// Microseconds as the seconds a correct exporter prints. The bounds are widened by 1e-9 s so
/// that `usec * 1e-6` and `usec / 1e6` (which may differ in the last bit) both pass; no
/// counter moves by less than a microsecond.
fn between_usec(before: Option<f64>, after: Option<f64>) -> Option<Expect> {
    let (b, a) = (before? / 1e6, after? / 1e6);
    Some(Expect::Between(b.min(a) - 1e-9, b.max(a) + 1e-9))
}

fn between(before: Option<u64>, after: Option<u64>) -> Option<Expect> {
    let (b, a) = (before? as f64, after? as f64);
    Some(Expect::Between(b.min(a), b.max(a)))
}

/// A gauge that moves while it is read: near the later read.
fn near(after: Option<u64>, relative: f64, absolute: f64) -> Option<Expect> {
    Some(Expect::Near {
        value: after? as f64,
        relative,
        absolute,
    })
}

fn equal_or_absent(v: Option<u64>) -> Expect {
    v.map_or(Expect::Absent, |v| Expect::Equal(v as f64))
}

struct Checker<'a> {
    report: &'a mut Report,
    series: &'a [Series],
}

impl Checker<'_> {
    fn check(&mut self, guest: &str, quantity: &str, metric: &str, labels: &[(&str, &str)], expect: Option<Expect>) {
        let exporter = value(self.series, metric, labels);
        let expect = expect.unwrap_or_else(|| panic!("{guest} {quantity}: the rig could not read the kernel's value"));
        self.report
            .push(guest, &format!("{quantity} ({metric})"), exporter, expect);
    }
}

/// The host-mode comparisons of one guest against the world before and after the collection.
fn host_checks(
    c: &mut Checker,
    guest: &str,
    vmid: u32,
    nics: &[(String, Option<String>)],
    before: &World,
    after: &World,
) {
    let id = vmid.to_string();
    let l = [("container_id", id.as_str())];
    let (b, a) = (&before.cgroups[&vmid], &after.cgroups[&vmid]);
    c.check(
        guest,
        "cpu usage",
        "container_cpu_usage_seconds_total",
        &l,
        between_usec(b.cpu_usage_usec.map(|v| v as f64), a.cpu_usage_usec.map(|v| v as f64)),
    );
    c.check(
        guest,
        "cpu user",
        "container_cpu_user_seconds_total",
        &l,
        between_usec(b.cpu_user_usec.map(|v| v as f64), a.cpu_user_usec.map(|v| v as f64)),
    );
    c.check(
        guest,
        "cpu system",
        "container_cpu_system_seconds_total",
        &l,
        between_usec(b.cpu_system_usec.map(|v| v as f64), a.cpu_system_usec.map(|v| v as f64)),
    );
    match a.cpu_limit_cores {
        Some(cores) => {
            c.check(
                guest,
                "cpu limit (cores)",
                "container_spec_cpu_limit_cores",
                &l,
                Some(Expect::Equal(cores)),
            );
            c.check(
                guest,
                "cfs periods",
                "container_cpu_cfs_periods_total",
                &l,
                between(b.cpu_periods, a.cpu_periods),
            );
            c.check(
                guest,
                "cfs throttled periods",
                "container_cpu_cfs_throttled_periods_total",
                &l,
                between(b.cpu_throttled_periods, a.cpu_throttled_periods),
            );
            c.check(
                guest,
                "cfs throttled time",
                "container_cpu_cfs_throttled_seconds_total",
                &l,
                between_usec(b.cpu_throttled_usec, a.cpu_throttled_usec),
            );
        }
        None => c.check(
            guest,
            "cpu limit (none)",
            "container_spec_cpu_limit_cores",
            &l,
            Some(Expect::Absent),
        ),
    }
    let usage = a.memory_usage;
    c.check(
        guest,
        "memory usage",
        "container_memory_usage_bytes",
        &l,
        near(usage, 0.05, 1048576.0),
    );
    let working_set = usage.zip(a.memory_inactive_file).map(|(u, i)| u.saturating_sub(i));
    c.check(
        guest,
        "working set",
        "container_memory_working_set_bytes",
        &l,
        near(working_set, 0.05, 1048576.0),
    );
    let gui = usage.zip(a.memory_file).map(|(u, f)| u.saturating_sub(f));
    c.check(
        guest,
        "GUI memory (usage - cache)",
        "container_memory_pve_used_bytes",
        &l,
        near(gui, 0.05, 1048576.0),
    );
    c.check(guest, "swap used", "container_memory_swap", &l, between(b.swap, a.swap));
    c.check(
        guest,
        "memory limit",
        "container_spec_memory_limit_bytes",
        &l,
        Some(equal_or_absent(a.memory_limit)),
    );
    c.check(
        guest,
        "swap limit",
        "container_spec_memory_swap_limit_bytes",
        &l,
        Some(equal_or_absent(a.swap_limit)),
    );
    c.check(
        guest,
        "OOM kills (every memcg of the guest)",
        "container_oom_kills_total",
        &l,
        between(b.oom_kills, a.oom_kills),
    );
    for (resource, word) in [("cpu", "cpu"), ("memory", "memory"), ("io", "io")] {
        for (kind, metric_kind) in [("some", "waiting"), ("full", "stalled")] {
            let key = (resource.to_owned(), kind.to_owned());
            let metric = format!("container_pressure_{word}_{metric_kind}_seconds_total");
            let expect = between_usec(
                b.pressure.get(&key).map(|v| *v as f64),
                a.pressure.get(&key).map(|v| *v as f64),
            );
            if expect.is_some() {
                c.check(guest, &format!("{resource} pressure {kind}"), &metric, &l, expect);
            }
        }
    }
    for (device, io) in &a.io {
        if io.read_bytes + io.write_bytes == 0 {
            continue;
        }
        let io_before = b.io.get(device).copied().unwrap_or_default();
        let ld = [("container_id", id.as_str()), ("device", device.as_str())];
        let q = |what: &str| format!("{what} on {device}");
        c.check(
            guest,
            &q("bytes read"),
            "container_fs_reads_bytes_total",
            &ld,
            between(Some(io_before.read_bytes), Some(io.read_bytes)),
        );
        c.check(
            guest,
            &q("bytes written"),
            "container_fs_writes_bytes_total",
            &ld,
            between(Some(io_before.write_bytes), Some(io.write_bytes)),
        );
        c.check(
            guest,
            &q("reads"),
            "container_fs_reads_total",
            &ld,
            between(Some(io_before.reads), Some(io.reads)),
        );
        c.check(
            guest,
            &q("writes"),
            "container_fs_writes_total",
            &ld,
            between(Some(io_before.writes), Some(io.writes)),
        );
    }
    c.check(guest, "tasks", "container_threads", &l, between(b.tasks, a.tasks));
    c.check(
        guest,
        "tasks limit",
        "container_threads_max",
        &l,
        Some(equal_or_absent(a.tasks_max)),
    );
    c.check(
        guest,
        "processes",
        "container_processes",
        &l,
        between(Some(b.processes as u64), Some(a.processes as u64)),
    );

    for (index, (host_dev, guest_dev)) in nics.iter().enumerate() {
        let net = format!("net{index}");
        let li = [("container_id", id.as_str()), ("interface", net.as_str())];
        let (hb, ha) = (before.host_net.get(host_dev), after.host_net.get(host_dev));
        let q = |what: &str, end: &str| format!("{net} {what} (guest view; {end})");
        // The guest receives what the host side transmits, and the other way round; the guest
        // side (where the rig can read it) counts from the guest's own view.
        let mut ends = vec![(format!("host side {host_dev}"), hb, ha, true)];
        if let Some(name) = guest_dev {
            let gb = before.guest_net.get(&vmid).and_then(|n| n.get(name));
            let ga = after.guest_net.get(&vmid).and_then(|n| n.get(name));
            ends.push((format!("guest side {name}"), gb, ga, false));
        }
        for (end, b, a, host_view) in ends {
            type Field = fn(&guest_rig::truth::NetCounters) -> u64;
            let quantities: [(&str, &str, Field, Field); 4] = [
                (
                    "received bytes",
                    "container_network_receive_bytes_total",
                    |n| n.tx_bytes,
                    |n| n.rx_bytes,
                ),
                (
                    "received packets",
                    "container_network_receive_packets_total",
                    |n| n.tx_packets,
                    |n| n.rx_packets,
                ),
                (
                    "sent bytes",
                    "container_network_transmit_bytes_total",
                    |n| n.rx_bytes,
                    |n| n.tx_bytes,
                ),
                (
                    "sent packets",
                    "container_network_transmit_packets_total",
                    |n| n.rx_packets,
                    |n| n.tx_packets,
                ),
            ];
            for (what, metric, from_host, from_guest) in quantities {
                let field = if host_view { from_host } else { from_guest };
                c.check(guest, &q(what, &end), metric, &li, between(b.map(field), a.map(field)));
            }
        }
        // The lead's scheme: `interface` is Proxmox's netN; the in-guest name and the host
        // device are on an info series of the guest.
        let found = c.series.iter().any(|(name, labels, _)| {
            name.ends_with("_info")
                && labels.get("container_id") == Some(&id)
                && labels.values().any(|v| *v == net)
                && labels.values().any(|v| v == host_dev)
                && guest_dev.as_ref().is_none_or(|g| labels.values().any(|v| v == g))
        });
        let names = match guest_dev {
            Some(g) => format!("{g}, {host_dev}"),
            None => host_dev.clone(),
        };
        c.report.push(
            guest,
            &format!("{net} info series naming {names} (an *_info series)"),
            found.then_some(1.0),
            Expect::Equal(1.0),
        );
    }
}

/// What the exporter read from the rig's PVE_PATH tree for one guest.
fn config_checks(c: &mut Checker, guest: &str, config: &guest_rig::pve::GuestConfig, node: &str) {
    let id = config.vmid.to_string();
    let l = [("container_id", id.as_str())];
    let tags = config.tags.join(";");
    c.check(
        guest,
        "config: name, node, tags, running",
        "pve_guest_info",
        &[
            ("container_id", &id),
            ("host_name", &config.name),
            ("node", node),
            ("tags", &tags),
            ("status", "running"),
        ],
        Some(Expect::Equal(1.0)),
    );
    c.check(
        guest,
        "config: cores",
        "pve_guest_config_cpus",
        &l,
        Some(Expect::Equal(config.cores as f64)),
    );
    c.check(
        guest,
        "config: memory",
        "pve_guest_config_memory_bytes",
        &l,
        Some(Expect::Equal((config.memory_mib * 1024 * 1024) as f64)),
    );
}

fn nics_of(d: &Description, role: Role) -> (u32, Vec<(String, Option<String>)>) {
    match role {
        Role::Vm1 | Role::Vm2 => {
            let v = d.vm(role);
            (
                v.spec.vmid,
                (0..v.spec.macs.len()).map(|i| (v.spec.tap(i), None)).collect(),
            )
        }
        _ => {
            let c = d.container(role);
            (c.spec.vmid, vec![(c.spec.veth(), Some("eth0".to_owned()))])
        }
    }
}

/// Runs a shell line inside a rig container and returns its stdout (the test's workloads).
fn sh_in(rig: &Rig, vmid: u32, script: &str) -> String {
    lxc::attach_output(rig.lxcpath(), vmid, &["/bin/sh", "-c", script]).unwrap_or_else(|e| panic!("{e:#}"))
}

fn counter(series: &[Series], metric: &str, vmid: u32) -> Option<f64> {
    value(series, metric, &[("container_id", &vmid.to_string())])
}

/// Copies the exporter binary into a container's rootfs (host side) at /opt/metrics-exporter.
fn install_exporter(rootfs: &Path) -> &'static str {
    let dir = rootfs.join("opt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(binary(), dir.join("metrics-exporter")).unwrap();
    "/opt/metrics-exporter"
}

/// Which cgroup view the container has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// As LXC 5 mounts it on a hybrid host: the v1 hierarchies and cgroup2 at unified.
    AsMounted,
    /// The v1 hierarchies only (older LXC, or a container that unmounted cgroup2): CPU must
    /// come from v1 cpuacct and processes from the PID namespace's /proc.
    WithoutCgroup2,
}

/// The in-container view: the exporter run inside the container as a server (scraped from the
/// host over the rig's bridge) and once with `--once`.
fn inside_checks(report: &mut Report, rig: &Rig, role: Role, port: u16, view: View) {
    let d = &rig.description;
    let c = d.container(role);
    let vmid = c.spec.vmid;
    let guest = match view {
        View::AsMounted => format!("inside lxc/{vmid} ({role:?})"),
        View::WithoutCgroup2 => format!("inside lxc/{vmid} ({role:?}) without cgroup2"),
    };
    if view == View::WithoutCgroup2 {
        sh_in(rig, vmid, "umount /sys/fs/cgroup/unified");
    }
    let path = install_exporter(&c.spec.rootfs);
    let address: SocketAddr = SocketAddr::new(c.spec.address.into(), port);
    let port_text = port.to_string();
    let listen = c.spec.address.to_string();
    let env = [
        ("METRICS_PORT", port_text.as_str()),
        ("LISTEN_ADDRESS", listen.as_str()),
        ("COLLECTION_INTERVAL", "60"),
        ("EBPF", "off"),
        ("LOG_LEVEL", "warn"),
    ];
    let mut server = lxc::attach_spawn(rig.lxcpath(), vmid, &env, &[path]).expect("start the exporter inside");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http::get(address, "/metrics").is_ok_and(|r| r.status == 200) {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("the exporter inside {vmid} exited with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the exporter inside {vmid} did not serve within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The container's cgroup namespace root is `lxc/<vmid>/ns`: its view of itself.
    let ns = format!("{}/ns", c.spec.cgroup());
    let ((before, cpuacct_before), series, (after, cpuacct_after)) = bracketed(address, || {
        (
            truth::read_cgroup(&rig.cgroups, &ns),
            truth::read_cpuacct(&rig.cgroups, &ns),
        )
    });
    let meminfo = sh_in(rig, vmid, "cat /proc/meminfo");
    let meminfo_kib = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    let mut ch = Checker {
        report,
        series: &series,
    };
    let none: [(&str, &str); 0] = [];
    ch.check(
        &guest,
        "platform lxc-container",
        "metrics_exporter_build_info",
        &[("platform", "lxc-container")],
        Some(Expect::Equal(1.0)),
    );
    ch.check(
        &guest,
        "container_id from the root mount",
        "metrics_exporter_instance_info",
        &[("container_id", &vmid.to_string())],
        Some(Expect::Equal(1.0)),
    );
    let limit = truth::read_cgroup(&rig.cgroups, &c.spec.cgroup()).memory_limit;
    ch.check(
        &guest,
        "memory total = the container's limit",
        "node_memory_total_bytes",
        &none,
        limit.map(|l| Expect::Equal(l as f64)),
    );
    ch.check(
        &guest,
        "memory total = lxcfs MemTotal",
        "node_memory_total_bytes",
        &none,
        meminfo_kib("MemTotal").map(|v| Expect::Equal(v as f64)),
    );
    ch.check(
        &guest,
        "swap total = lxcfs SwapTotal",
        "node_memory_swap_total_bytes",
        &none,
        meminfo_kib("SwapTotal").map(|v| Expect::Equal(v as f64)),
    );
    match view {
        View::AsMounted => {
            ch.check(
                &guest,
                "cpu user from the container's cgroup (cpu.stat)",
                "node_cpu_seconds_total",
                &[("mode", "user")],
                between_usec(
                    before.cpu_user_usec.map(|v| v as f64),
                    after.cpu_user_usec.map(|v| v as f64),
                ),
            );
            ch.check(
                &guest,
                "cpu system from the container's cgroup (cpu.stat)",
                "node_cpu_seconds_total",
                &[("mode", "system")],
                between_usec(
                    before.cpu_system_usec.map(|v| v as f64),
                    after.cpu_system_usec.map(|v| v as f64),
                ),
            );
        }
        View::WithoutCgroup2 => {
            // cpuacct.stat: the split cgroup2's cpu.stat would give (see truth::Cpuacct).
            let ticks = |pick: fn(&truth::Cpuacct) -> f64| {
                let (b, a) = (pick(&cpuacct_before?), pick(&cpuacct_after?));
                Some(Expect::Between(b.min(a) - 1e-9, b.max(a) + 1e-9))
            };
            ch.check(
                &guest,
                "cpu user from v1 cpuacct.stat",
                "node_cpu_seconds_total",
                &[("mode", "user")],
                ticks(|c| c.user),
            );
            ch.check(
                &guest,
                "cpu system from v1 cpuacct.stat",
                "node_cpu_seconds_total",
                &[("mode", "system")],
                ticks(|c| c.system),
            );
        }
    }
    for (name, labels, value) in &series {
        if name == "metrics_exporter_collector_success" {
            let collector = labels.get("collector").map_or("?", String::as_str);
            ch.report.push(
                &guest,
                &format!("collector {collector} succeeds (metrics_exporter_collector_success)"),
                Some(*value),
                Expect::Equal(1.0),
            );
        }
    }
    ch.check(
        &guest,
        "processes (its cgroup subtree)",
        "node_processes",
        &none,
        between(Some(before.processes as u64), Some(after.processes as u64)),
    );
    ch.check(
        &guest,
        "threads (pids.current; ±2: the exporter's own pool threads come and go around a collection)",
        "node_processes_threads",
        &none,
        before
            .tasks
            .zip(after.tasks)
            .map(|(b, a)| Expect::Between(b.min(a) as f64 - 2.0, b.max(a) as f64 + 2.0)),
    );
    // Each filesystem of a block device once, at its mount point nearest the root (the busybox
    // template bind-mounts the host's /lib, /usr/lib… from one device). Virtual filesystems
    // (`tmpfs`, …) share a source name across distinct instances: not counted.
    let mut per_device: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, labels, _) in &series {
        if name == "node_filesystem_size_bytes"
            && let Some(device) = labels.get("device")
            && device.starts_with("/dev/")
        {
            *per_device.entry(device.as_str()).or_default() += 1;
        }
    }
    for (device, count) in &per_device {
        ch.report.push(
            &guest,
            &format!("filesystem {device} reported once (node_filesystem_size_bytes series)"),
            Some(*count as f64),
            Expect::Equal(1.0),
        );
    }
    if c.loop_device.is_some() {
        let size = truth::filesystem_size(&c.spec.rootfs);
        ch.check(
            &guest,
            "root filesystem size (the raw image's ext4)",
            "node_filesystem_size_bytes",
            &[("mountpoint", "/")],
            size.map(|s| Expect::Equal(s as f64)),
        );
    }
    // Stop the server from inside and let lxc-attach reap it: killing lxc-attach first would
    // leave a zombie in the container's PID namespace (its parent is outside), which the next
    // process count would see.
    let _ = lxc::attach_output(
        rig.lxcpath(),
        vmid,
        &["/bin/sh", "-c", "kill $(pidof metrics-exporter) 2>/dev/null; true"],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // `--once` inside: the same identity without a server.
    let once = lxc::attach_env_output(
        rig.lxcpath(),
        vmid,
        &[("EBPF", "off"), ("LOG_LEVEL", "error")],
        &[path, "--once"],
    )
    .expect("--once inside");
    let once = parse_exposition(&once);
    let mut ch = Checker { report, series: &once };
    ch.check(
        &guest,
        "--once: platform lxc-container",
        "metrics_exporter_build_info",
        &[("platform", "lxc-container")],
        Some(Expect::Equal(1.0)),
    );
    ch.check(
        &guest,
        "--once: memory total = limit",
        "node_memory_total_bytes",
        &none,
        limit.map(|l| Expect::Equal(l as f64)),
    );
}

/// A rig taken down by another process (`cargo xtask rig down`, or after a crash) from its
/// state file alone leaves nothing behind: the same unwinding as the Drop that runs on failure.
#[test]
fn rig_down_from_its_state_file() {
    if !require("root", is_root()) {
        return;
    }
    if let Some(why) = guest_rig::rig::unavailable() {
        require(&why, false);
        return;
    }
    let dir = PathBuf::from(RIG_ROOT).join(format!("test-down-{}", std::process::id()));
    let rig = Rig::up(&dir).unwrap_or_else(|e| panic!("rig up: {e:#}"));
    let cgroups = rig.cgroups.clone();
    let description = rig.keep();
    assert!(description.leftovers(&cgroups).len() > 10, "the rig is up");
    Rig::down_dir(&dir).unwrap();
    let left = description.leftovers(&cgroups);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn real_guests_hybrid() {
    let test_started = Instant::now();
    if !require("root", is_root()) {
        return;
    }
    if let Some(why) = guest_rig::rig::unavailable() {
        require(&why, false);
        return;
    }
    let layout = if Hierarchies::read().unwrap().hybrid() {
        "hybrid"
    } else {
        "cgroup2"
    };
    let dir = PathBuf::from(RIG_ROOT).join(format!("test-{}", std::process::id()));
    let mut rig = Rig::up(&dir).unwrap_or_else(|e| panic!("rig up: {e:#}"));
    let setup = rig.setup;
    let d = rig.description.clone();
    let (a, b) = (d.container(Role::A).spec.vmid, d.container(Role::B).spec.vmid);
    let mut report = Report::new(layout);

    let mut env = d.exporter_env();
    env.push(("COLLECTION_INTERVAL".into(), "5".into()));
    env.push(("LOG_LEVEL".into(), "warn".into()));
    let exporter = Exporter::start(&env);

    // Workloads. A burns CPU under its 0.2-core quota while the rest runs.
    let mut burner = lxc::attach_spawn(
        rig.lxcpath(),
        a,
        &[],
        &["/bin/sh", "-c", "timeout 4 sh -c 'while :; do :; done'; true"],
    )
    .unwrap();
    // Real block IO on A's loop device (direct: no page cache in between).
    sh_in(
        &rig,
        a,
        "dd if=/dev/zero of=/rig-io bs=64k count=64 oflag=direct 2>/dev/null && dd if=/rig-io of=/dev/null bs=64k iflag=direct 2>/dev/null && rm /rig-io",
    );
    // A memory hog above A's 256 MiB limit: the OOM killer ends it (exit status 137).
    let hog = lxc::attach_command(
        rig.lxcpath(),
        a,
        &[],
        &["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=400M", "count=1"],
    )
    .output()
    .unwrap();
    assert!(!hog.status.success(), "the memory hog was not killed: {hog:?}");
    // Bounded traffic on the rig's bridge: A to the bridge, to B and to C. The VMs have no OS
    // and no NIC driver: QEMU reads nothing from their taps, and tun counts a frame sent to the
    // guest only when QEMU reads it, so their counters stay at what the kernel says (a frame
    // or two): still compared.
    let bridge = d.bridge.address().to_string();
    for target in [
        bridge.as_str(),
        &d.container(Role::B).spec.address.to_string(),
        &d.container(Role::C).spec.address.to_string(),
    ] {
        sh_in(&rig, a, &format!("ping -c 200 -A -q -W 1 {target} >/dev/null"));
    }
    burner.wait().unwrap();

    // eBPF: the counters of the first scrape, then a known number of fork+exec+exit in A.
    let (before, series, after) = bracketed(exporter.address, || read_world(&rig));
    let mut checker = Checker {
        report: &mut report,
        series: &series,
    };
    for role in [Role::A, Role::B, Role::C, Role::Vm1, Role::Vm2] {
        let (vmid, nics) = nics_of(&d, role);
        let kind = if matches!(role, Role::Vm1 | Role::Vm2) {
            "qemu"
        } else {
            "lxc"
        };
        let guest = format!("{kind}/{vmid} ({role:?})");
        host_checks(&mut checker, &guest, vmid, &nics, &before, &after);
        let config = match role {
            Role::Vm1 | Role::Vm2 => &d.vm(role).config,
            _ => &d.container(role).config,
        };
        config_checks(&mut checker, &guest, config, &d.node);
    }
    assert!(
        after.cgroups[&a].oom_kills.unwrap_or(0) >= 1,
        "the rig saw no OOM kill in A"
    );
    assert!(
        after.cgroups[&a].cpu_throttled_periods.unwrap_or(0) >= 1,
        "A's burner was never throttled"
    );
    let forks0 = counter(&series, "container_tasks_forked_total", a);
    let execs0 = counter(&series, "container_tasks_execs_total", a);
    let exits0 = counter(&series, "container_tasks_exits_total", a);
    const RUNS: u32 = 50;
    sh_in(
        &rig,
        a,
        &format!("i=0; while [ $i -lt {RUNS} ]; do /bin/true; i=$((i+1)); done"),
    );
    let (_, series, _) = bracketed(exporter.address, || ());
    let guest_a = format!("lxc/{a} (A)");
    for (what, metric, base) in [
        ("forks", "container_tasks_forked_total", forks0),
        ("execs", "container_tasks_execs_total", execs0),
        ("exits", "container_tasks_exits_total", exits0),
    ] {
        report.push(
            &guest_a,
            &format!("eBPF {what} after {RUNS} runs of /bin/true ({metric})"),
            counter(&series, metric, a),
            Expect::AtLeast(base.unwrap_or(f64::INFINITY) + RUNS as f64),
        );
    }
    for (guest, vmid) in [
        (guest_a.clone(), a),
        (
            format!("qemu/{} (Vm1)", d.vm(Role::Vm1).spec.vmid),
            d.vm(Role::Vm1).spec.vmid,
        ),
    ] {
        report.push(
            &guest,
            "eBPF run-queue latency observed (container_runqueue_latency_seconds_count)",
            counter(&series, "container_runqueue_latency_seconds_count", vmid),
            Expect::AtLeast(1.0),
        );
    }

    // `--once` on the host: no observation window, so no eBPF counters.
    let once = Command::new(binary()).only_env(&env).arg("--once").output().unwrap();
    assert!(
        once.status.success(),
        "--once: {}",
        String::from_utf8_lossy(&once.stderr)
    );
    let once = parse_exposition(&String::from_utf8_lossy(&once.stdout));
    report.push(
        &guest_a,
        "--once on the host: guest CPU present (container_cpu_usage_seconds_total)",
        counter(&once, "container_cpu_usage_seconds_total", a).map(|_| 1.0),
        Expect::Equal(1.0),
    );
    for metric in [
        "container_tasks_forked_total",
        "container_tasks_execs_total",
        "container_tasks_exits_total",
        "container_runqueue_latency_seconds_count",
    ] {
        report.push(
            &guest_a,
            &format!("--once on the host: no eBPF counter ({metric})"),
            counter(&once, metric, a),
            Expect::Absent,
        );
    }

    // Inside the containers.
    let port = 9464;
    for role in [Role::A, Role::B, Role::C] {
        inside_checks(&mut report, &rig, role, port, View::AsMounted);
    }
    // Last for A: the same without its cgroup2 mount.
    inside_checks(&mut report, &rig, Role::A, port, View::WithoutCgroup2);

    // Churn: B stops, its series go at the next collection; it starts again, its counters
    // start again as a new series (below what the stopped one had reached).
    let (_, series, _) = bracketed(exporter.address, || ());
    let usage_before_stop = counter(&series, "container_cpu_usage_seconds_total", b).expect("B's CPU before the stop");
    rig.stop_container(b).unwrap();
    let (_, series, _) = bracketed(exporter.address, || ());
    let guest_b = format!("lxc/{b} (B)");
    report.push(
        &guest_b,
        "stopped: cpu usage gone (container_cpu_usage_seconds_total)",
        counter(&series, "container_cpu_usage_seconds_total", b),
        Expect::Absent,
    );
    report.push(
        &guest_b,
        "stopped: memory gone (container_memory_usage_bytes)",
        counter(&series, "container_memory_usage_bytes", b),
        Expect::Absent,
    );
    report.push(
        &guest_b,
        "stopped: info says stopped (pve_guest_info)",
        value(
            &series,
            "pve_guest_info",
            &[("container_id", &b.to_string()), ("status", "stopped")],
        ),
        Expect::Equal(1.0),
    );
    rig.start_container(b).unwrap();
    let (before, series, after) = bracketed(exporter.address, || {
        truth::read_cgroup(&rig.cgroups, &format!("lxc/{b}"))
    });
    report.push(
        &guest_b,
        "restarted: cpu usage of the new cgroup (container_cpu_usage_seconds_total)",
        counter(&series, "container_cpu_usage_seconds_total", b),
        between_usec(
            before.cpu_usage_usec.map(|v| v as f64),
            after.cpu_usage_usec.map(|v| v as f64),
        )
        .unwrap(),
    );
    report.push(
        &guest_b,
        "restarted: counter below the stopped series' last value",
        counter(&series, "container_cpu_usage_seconds_total", b),
        Expect::Between(0.0, usage_before_stop),
    );
    report.push(
        &guest_b,
        "restarted: info says running (pve_guest_info)",
        value(
            &series,
            "pve_guest_info",
            &[("container_id", &b.to_string()), ("status", "running")],
        ),
        Expect::Equal(1.0),
    );

    drop(exporter);
    let cgroups = rig.cgroups.clone();
    let teardown = rig.down();
    let left = d.leftovers(&cgroups);
    assert!(left.is_empty(), "the rig left behind: {left:?}");
    println!("{}", report.table());
    println!(
        "real-guest rig ({layout}): set-up {:.1} s, teardown {:.1} s, whole test {:.1} s, {} checks, {} failed",
        setup.as_secs_f64(),
        teardown.as_secs_f64(),
        test_started.elapsed().as_secs_f64(),
        report.checks.len(),
        report.failures().len()
    );
    report.assert_all_passed();
}
