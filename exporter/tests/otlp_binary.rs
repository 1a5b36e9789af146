//! The binary with EXPORT_FORMAT=prometheus,otlp: one collection reaches both outputs with
//! equal values, /health follows the collector (healthy, then not once it is gone), and
//! SIGTERM still exits 0 while exports fail. As root on the real kernel: a guest's counters
//! start when its first process started, the host's at boot.

mod common;
mod otlp_support;

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as PointValue;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Exporter, fixture_env, parse_exposition, value};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use otlp_support::{Receiver, eventually};

/// The value of the `system.network.io` point for `interface` and `direction` in `received`.
fn network_io(received: &[otlp_support::Received], interface: &str, direction: &str) -> Option<f64> {
    let attr = |kv: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str| {
        kv.iter()
            .find(|a| a.key == key)
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    };
    let last = received.last()?;
    for resource in &last.request.resource_metrics {
        for scope in &resource.scope_metrics {
            for metric in scope.metrics.iter().filter(|m| m.name == "system.network.io") {
                let Some(Data::Sum(sum)) = &metric.data else { continue };
                for point in &sum.data_points {
                    if attr(&point.attributes, "network.interface.name").as_deref() == Some(interface)
                        && attr(&point.attributes, "network.io.direction").as_deref() == Some(direction)
                    {
                        return match point.value {
                            Some(PointValue::AsDouble(v)) => Some(v),
                            Some(PointValue::AsInt(v)) => Some(v as f64),
                            None => None,
                        };
                    }
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_otlp_carry_the_same_values_and_health_follows_the_collector() {
    let receiver = Receiver::start().await;
    let mut env = fixture_env("lxc-container", "lxc");
    env.push(("EXPORT_FORMAT".into(), "prometheus,otlp".into()));
    env.push(("OTEL_ENDPOINT".into(), receiver.endpoint()));
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "500".into()));
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    let mut exporter = tokio::task::spawn_blocking(move || Exporter::start(&env))
        .await
        .unwrap();

    eventually("an OTLP export", || !receiver.received().is_empty()).await;
    let otlp = network_io(&receiver.received(), "eth0", "receive");
    let series = parse_exposition(&exporter.get("/metrics").text());
    let prometheus = value(&series, "node_network_receive_bytes_total", &[("device", "eth0")]);
    assert_eq!(prometheus, Some(27908331540.0));
    assert_eq!(otlp, prometheus);
    assert_eq!(
        network_io(&receiver.received(), "eth0", "transmit"),
        Some(318442907166.0)
    );
    let health = exporter.get("/health").json();
    assert_eq!(health["export_format"], "prometheus,otlp");
    assert_eq!(health["exporter_healthy"], true);

    // The collector goes away: exports fail and /health says so, collection goes on.
    receiver.stop().await;
    let address = exporter.address;
    eventually("exporter_healthy false", || {
        common::get(address, "/health")
            .map(|r| r.json()["exporter_healthy"] == false)
            .unwrap_or(false)
    })
    .await;
    let status = exporter.get("/status").json();
    assert_eq!(status["exporter"]["components"]["otlp"]["healthy"], false);
    assert_eq!(exporter.get("/metrics").status, 200);
    let status = tokio::task::spawn_blocking(move || exporter.terminate()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The cgroups and processes the root test made, removed on drop (also on failure): its
/// processes are killed, then its cgroup directories removed deepest first.
struct Guests {
    roots: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Guests {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for root in &self.roots {
            let mut dirs = Vec::new();
            fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&entry.path(), out);
                    }
                }
                out.push(dir.to_path_buf());
            }
            walk(root, &mut dirs);
            for dir in dirs {
                // A killed process leaves its cgroup a moment after wait() returns.
                for _ in 0..100 {
                    match std::fs::remove_dir(&dir) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => break,
                    }
                }
            }
        }
    }
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` text, read by the test itself.
fn starttime(stat: &str) -> u64 {
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// `btime` of `/proc/stat`, read by the test itself.
fn btime() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The start time of the first `metric` point (with `cpu.mode` = `user`) of the resource whose
/// `container.id` is `container` (`None`: the node) in the newest export that has one.
fn cpu_start(received: &[otlp_support::Received], container: Option<&str>, metric: &str) -> Option<u64> {
    let attr = |kv: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str| {
        kv.iter()
            .find(|a| a.key == key)
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    };
    let find = |request: &ExportMetricsServiceRequest| {
        let resource = request.resource_metrics.iter().find(|r| {
            let attributes = r.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            attr(attributes, "container.id").as_deref() == container
        })?;
        let metric = resource.scope_metrics[0].metrics.iter().find(|m| m.name == metric)?;
        let Some(Data::Sum(sum)) = &metric.data else {
            return None;
        };
        sum.data_points
            .iter()
            .find(|p| attr(&p.attributes, "cpu.mode").as_deref() == Some("user"))
            .map(|p| p.start_time_unix_nano)
    };
    received.iter().rev().find_map(|r| find(&r.request))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_counters_start_with_the_guests_first_process_root() {
    if !common::require("root", common::is_root()) {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let cgroup2 = common::cgroup2_mount();
    let pid = std::process::id();
    let name = format!("metrics-exporter-otlp-start-{pid}");
    let base = cgroup2.join(&name);
    let v1 = common::v1_counterparts(&cgroup2, &name);
    let mut guests = Guests {
        roots: std::iter::once(base.clone()).chain(v1.iter().cloned()).collect(),
        children: Vec::new(),
    };
    // Pure cgroup2: the guests' interface files exist only with the controllers enabled
    // down the test's subtree.
    let enable = |dir: &Path| {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = available
            .split_whitespace()
            .filter(|c| ["cpu", "memory", "pids", "io"].contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" ")).unwrap();
        }
    };
    let vmid = 7_500_000 + pid % 100_000;
    let (ct, vm) = (format!("lxc/{vmid}"), format!("qemu.slice/{}.scope", vmid + 1));
    for root in &guests.roots {
        for dir in [format!("{ct}/ns/init.scope"), vm.clone()] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
    }
    for dir in ["", "lxc", "qemu.slice", ct.as_str(), &format!("{ct}/ns")] {
        enable(&base.join(dir));
    }
    // The container's init (in ns/init.scope, as systemd places itself) and, a moment later,
    // a process in ns/.lxc as lxc-attach makes; the VM's one process.
    let mut spawn = |rel: &str| {
        let mut script = String::new();
        for root in std::iter::once(&base).chain(&v1) {
            script.push_str(&format!(
                "echo $$ > '{}/cgroup.procs' || exit 1; ",
                root.join(rel).display()
            ));
        }
        script.push_str("exec sleep 600");
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        guests.children.push(child);
        pid
    };
    let init = spawn(&format!("{ct}/ns/init.scope"));
    std::thread::sleep(Duration::from_millis(50));
    for root in std::iter::once(&base).chain(&v1) {
        std::fs::create_dir_all(root.join(format!("{ct}/ns/.lxc"))).unwrap();
    }
    spawn(&format!("{ct}/ns/.lxc"));
    let qemu = spawn(&vm);
    let deadline = Instant::now() + Duration::from_secs(10);
    while [format!("{ct}/ns/init.scope"), format!("{ct}/ns/.lxc"), vm.clone()]
        .iter()
        .any(|rel| {
            std::fs::read_to_string(base.join(rel).join("cgroup.procs"))
                .unwrap_or_default()
                .trim()
                .is_empty()
        })
    {
        assert!(
            Instant::now() < deadline,
            "the test's processes did not join their cgroups"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The truth, read by the test: btime and each process's starttime.
    let boot = btime();
    let start_of = |pid: u32| {
        let ticks = starttime(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
        boot * 1_000_000_000 + ticks * 1_000_000_000 / hz
    };
    let (init_start, qemu_start) = (start_of(init), start_of(qemu));

    let receiver = Receiver::start().await;
    let pve = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = [
        ("PLATFORM", "proxmox".to_owned()),
        ("PROC_PATH", "/proc".to_owned()),
        ("SYS_PATH", "/sys".to_owned()),
        ("CGROUP_PATH", base.display().to_string()),
        ("PVE_PATH", pve.path().display().to_string()),
        ("ENABLED_COLLECTORS", "cpu,guests".to_owned()),
        ("EBPF", "off".to_owned()),
        ("LOG_LEVEL", "warn".to_owned()),
        ("EXPORT_FORMAT", "prometheus,otlp".to_owned()),
        ("OTEL_ENDPOINT", receiver.endpoint()),
        ("COLLECTION_INTERVAL", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut exporter = tokio::task::spawn_blocking(move || Exporter::start(&env))
        .await
        .unwrap();
    let (ct_id, vm_id) = (vmid.to_string(), (vmid + 1).to_string());
    eventually("both guests exported", || {
        let received = receiver.received();
        cpu_start(&received, Some(&ct_id), "container.cpu.time").is_some()
            && cpu_start(&received, Some(&vm_id), "container.cpu.time").is_some()
    })
    .await;
    let received = receiver.received();
    assert_eq!(
        cpu_start(&received, Some(&ct_id), "container.cpu.time"),
        Some(init_start),
        "the container's counters start with its init"
    );
    assert_eq!(
        cpu_start(&received, Some(&vm_id), "container.cpu.time"),
        Some(qemu_start),
        "the VM's counters start with its process"
    );
    assert_eq!(
        cpu_start(&received, None, "system.cpu.time"),
        Some(boot * 1_000_000_000),
        "the host's CPU counters start at boot"
    );
    // /metrics serves the container's start as a gauge: the same instant, in seconds.
    let series = parse_exposition(&exporter.get("/metrics").text());
    assert_eq!(
        value(&series, "pve_guest_start_time_seconds", &[("container_id", &ct_id)]),
        Some(Duration::from_nanos(init_start).as_secs_f64())
    );
    let status = tokio::task::spawn_blocking(move || exporter.terminate()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    drop(guests);
}
