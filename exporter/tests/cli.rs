//! The binary's command line and start-up: --version, --help, --check-config, --once over the
//! LXC fixture (every value of fixtures/lxc-container/expected.md), and exit status 2 with one
//! clear line for every invalid variable.

mod common;

use std::process::{Command, Output};

use common::*;

fn run(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(binary())
        .args(args)
        .only_env(env)
        .output()
        .expect("run metrics-exporter")
}

fn with(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.into(), value.into()));
    env
}

#[test]
fn version_and_help() {
    let out = run(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("metrics-exporter {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (name, default, _) in metrics_exporter::config::VARIABLES {
        assert!(help.contains(name), "--help lacks {name}");
        assert!(
            help.contains(&format!("default: {default}")),
            "--help lacks the default of {name}"
        );
    }
    let out = run(&["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_invalid_variable_exits_2_with_one_line() {
    let cases = [
        ("COLLECTION_INTERVAL", "0"),
        ("METRICS_PORT", "http"),
        ("LISTEN_ADDRESS", "example"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "yaml"),
        ("PLATFORM", "windows"),
        ("EBPF", "sometimes"),
        ("ENABLED_COLLECTORS", "memory,nonsense"),
        ("PROC_PATH", "relative/proc"),
        ("OTEL_INSECURE", "kinda"),
        ("EXPORT_FORMAT", "statsd"),
    ];
    for (variable, value) in cases {
        let out = run(&["--once"], &[(variable.to_string(), value.to_string())]);
        assert_eq!(out.status.code(), Some(2), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{variable}: {stderr}");
        assert!(stderr.contains(&format!("invalid {variable}={value:?}")), "{stderr}");
        assert!(stderr.contains("accepted values: "), "{stderr}");
    }
    // An unknown collector lists the valid ones.
    let out = run(&["--once"], &[("ENABLED_COLLECTORS".into(), "gpu".into())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in metrics_exporter::collectors::names() {
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn otlp_is_rejected_until_it_exists() {
    if metrics_exporter::config::OTLP_AVAILABLE {
        return;
    }
    let out = run(&["--once"], &[("EXPORT_FORMAT".into(), "otlp".into())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("otlp is not available"));
}

#[test]
fn prometheus_file_in_a_missing_directory_is_a_start_up_error() {
    let env = vec![(
        "PROMETHEUS_FILE".to_string(),
        "/nonexistent-dir-xyz/metrics.prom".to_string(),
    )];
    let out = run(&["--once"], &env);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid PROMETHEUS_FILE=") && stderr.contains("/nonexistent-dir-xyz"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_platform_and_evidence() {
    let env = with(fixture_env("lxc-container", "auto"), "ENABLED_COLLECTORS", "memory");
    let out = run(&["--check-config"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["platform"]["platform"], "lxc-container");
    assert_eq!(report["platform"]["forced"], false);
    let findings: Vec<String> = report["platform"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["finding"].as_str().unwrap().to_owned())
        .collect();
    assert!(findings.contains(&"container=lxc".to_string()), "{findings:?}");
    assert_eq!(report["identity"]["host_name"], "web");
    assert_eq!(report["identity"]["container_id"], "101");
    assert_eq!(report["identity"]["instance"], "web:101");
    assert_eq!(report["config"]["collection_interval"], 30);
    assert_eq!(report["enabled_collectors"], serde_json::json!(["memory"]));

    let forced = run(&["--check-config"], &with(env, "PLATFORM", "host"));
    let report: serde_json::Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(report["platform"]["platform"], "host");
    assert_eq!(report["platform"]["forced"], true);
}

#[test]
fn once_over_the_container_fixture_reproduces_expected_values() {
    let out = run(&["--once"], &fixture_env("lxc-container", "lxc"));
    let text = String::from_utf8_lossy(&out.stdout);
    let series = parse_exposition(&text);
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&series, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
    };
    // Identity labels on node series, instance in its own info series.
    let memory = series.iter().find(|s| s.0 == "node_memory_total_bytes").unwrap();
    assert_eq!(memory.1.get("host_name").map(String::as_str), Some("web"));
    assert_eq!(memory.1.get("container_id").map(String::as_str), Some("101"));
    assert!(!memory.1.contains_key("instance"));
    assert_eq!(v("metrics_exporter_instance_info", &[("instance", "web:101")]), 1.0);

    assert_eq!(v("node_memory_total_bytes", &[]), 2147483648.0);
    assert_eq!(v("node_memory_available_bytes", &[]), 1733681152.0);
    assert_eq!(v("node_memory_free_bytes", &[]), 910553088.0);
    assert_eq!(v("node_memory_usage_bytes", &[]), 413802496.0);
    assert_eq!(v("node_cpu_seconds_total", &[("mode", "user")]), 31278.598398);
    assert_eq!(v("node_cpu_seconds_total", &[("mode", "system")]), 14811.836854);
    assert_eq!(value(&series, "node_cpu_seconds_total", &[("mode", "idle")]), None);
    assert_eq!(v("node_processes", &[]), 20.0);
    assert_eq!(v("node_processes_threads", &[]), 24.0);
    assert_eq!(
        v("node_network_receive_bytes_total", &[("device", "eth0")]),
        27908331540.0
    );
    assert_eq!(
        v("node_network_transmit_bytes_total", &[("device", "eth0")]),
        318442907166.0
    );
    assert_eq!(
        v("node_network_receive_packets_total", &[("device", "eth1")]),
        10337902.0
    );
    assert_eq!(v("node_network_transmit_packets_total", &[("device", "lo")]), 2201447.0);
    for absent in ["node_load1", "node_load5", "node_load15"] {
        assert!(
            !names(&series).contains(absent),
            "{absent} must be absent in a container"
        );
    }
    // Host values never leak: the host's MemTotal and /proc/stat are not in the output.
    assert!(!text.contains("16694292480"));
}

#[test]
fn once_fails_when_every_collector_fails() {
    let env = vec![
        ("PROC_PATH".to_string(), "/nonexistent-proc".to_string()),
        ("PLATFORM".to_string(), "host".to_string()),
        ("ENABLED_COLLECTORS".to_string(), "memory,load".to_string()),
        ("EBPF".to_string(), "off".to_string()),
    ];
    let out = run(&["--once"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let series = parse_exposition(&text);
    assert_eq!(
        value(
            &series,
            "metrics_exporter_collector_success",
            &[("collector", "memory")]
        ),
        Some(0.0)
    );
}

/// Copies a fixture tree (symlinks kept) into a temporary directory for damaging.
fn copy_tree(tree: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixture(tree))
        .arg(dir.path().join("t"))
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

#[test]
fn damaged_files_fail_their_collector_only() {
    let dir = copy_tree("lxc-container");
    let root = dir.path().join("t");
    std::fs::write(root.join("proc/meminfo"), "MemTotal:        2097").unwrap();
    std::fs::write(root.join("proc/net/dev"), "garbage\n\u{0}\u{1}binary junk").unwrap();
    std::fs::remove_file(root.join("sys/fs/cgroup/cpu.stat")).unwrap();
    let env = vec![
        ("PLATFORM".to_string(), "lxc".to_string()),
        ("PROC_PATH".to_string(), root.join("proc").display().to_string()),
        ("SYS_PATH".to_string(), root.join("sys").display().to_string()),
        (
            "CGROUP_PATH".to_string(),
            root.join("sys/fs/cgroup").display().to_string(),
        ),
        ("EBPF".to_string(), "off".to_string()),
    ];
    let out = run(&["--once"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let series = parse_exposition(&text);
    let success = |c: &str| value(&series, "metrics_exporter_collector_success", &[("collector", c)]);
    assert_eq!(success("memory"), Some(0.0));
    assert_eq!(success("network"), Some(0.0));
    assert_eq!(success("cpu"), Some(0.0));
    assert_eq!(success("process"), Some(1.0));
    assert_eq!(value(&series, "node_processes", &[]), Some(20.0));
    assert!(
        !names(&series).contains("node_memory_total_bytes"),
        "no made-up memory values"
    );
    assert!(
        !names(&series).contains("node_cpu_seconds_total"),
        "no made-up cpu values"
    );
    // The log names the failing paths.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("proc/meminfo"), "{stderr}");
    assert!(stderr.contains("proc/net/dev"), "{stderr}");
    assert!(stderr.contains("cpu.stat"), "{stderr}");
}

#[test]
fn text_logs_carry_no_colour_codes_into_a_pipe() {
    // Every collector fails here, so the run logs warnings; stderr is a pipe, not a terminal.
    let env = vec![
        ("PROC_PATH".to_string(), "/nonexistent-proc".to_string()),
        ("PLATFORM".to_string(), "host".to_string()),
        ("ENABLED_COLLECTORS".to_string(), "memory,load".to_string()),
        ("EBPF".to_string(), "off".to_string()),
        ("LOG_FORMAT".to_string(), "text".to_string()),
        ("LOG_LEVEL".to_string(), "debug".to_string()),
    ];
    let out = run(&["--once"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("nonexistent-proc"),
        "expected the failures to be logged as text:\n{stderr}"
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "ANSI escape codes in a piped log:\n{stderr:?}"
    );
}

#[test]
fn check_config_says_what_the_service_would_do_with_ebpf() {
    // Inside a container no collector counts per guest: nothing to load for.
    let env = with(fixture_env("lxc-container", "auto"), "EBPF", "auto");
    let out = run(&["--check-config"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ebpf = &report["ebpf"];
    assert_eq!(ebpf["mode"], "auto", "{ebpf}");
    assert_eq!(ebpf["would_load"], false, "{ebpf}");
    assert_eq!(ebpf["kind"], "not_needed", "{ebpf}");
    assert_eq!(ebpf["start_would_fail"], false, "{ebpf}");

    // A Proxmox host with the guests collector, but EBPF=off.
    let env = with(
        with(fixture_env("proxmox-host", "proxmox"), "ENABLED_COLLECTORS", "guests"),
        "EBPF",
        "off",
    );
    let out = run(&["--check-config"], &env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ebpf"]["would_load"], false);
    assert_eq!(report["ebpf"]["kind"], "disabled");
    assert_eq!(report["ebpf"]["reason"], "EBPF=off");
}

#[test]
fn check_config_in_a_user_namespace_says_the_kernel_would_refuse() {
    let userns = Command::new("unshare")
        .args(["-U", "-r", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !require("unprivileged user namespaces (unshare -U -r)", userns) {
        return;
    }
    let env = with(
        with(fixture_env("proxmox-host", "proxmox"), "ENABLED_COLLECTORS", "guests"),
        "EBPF",
        "on",
    );
    let out = Command::new("unshare")
        .args(["-U", "-r"])
        .arg(binary())
        .arg("--check-config")
        .only_env(&env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ebpf = &report["ebpf"];
    assert_eq!(ebpf["mode"], "on", "{ebpf}");
    assert_eq!(ebpf["would_load"], false, "{ebpf}");
    assert_eq!(ebpf["kind"], "permission_denied", "{ebpf}");
    assert!(ebpf["reason"].as_str().unwrap().contains("user namespace"), "{ebpf}");
    // EBPF=on: the service would refuse to start, and --once refuses now.
    assert_eq!(ebpf["start_would_fail"], true, "{ebpf}");
    let once = Command::new("unshare")
        .args(["-U", "-r"])
        .arg(binary())
        .arg("--once")
        .only_env(&env)
        .output()
        .unwrap();
    assert_eq!(once.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&once.stderr);
    assert!(
        stderr.contains("EBPF=on but the eBPF programs cannot run") && stderr.contains("user namespace"),
        "{stderr}"
    );
}

/// The environment of a fixture tree whose cgroup hierarchies the exporter must find itself
/// (no CGROUP_PATH), as it does in a real container.
fn fixture_env_found_cgroups(tree: &str) -> Vec<(String, String)> {
    let mut env = fixture_env(tree, "auto");
    env.retain(|(k, _)| k != "CGROUP_PATH");
    env
}

#[test]
fn container_id_from_directory_storage_and_from_a_raw_image_on_a_loop_device() {
    for (tree, id, evidence) in [
        (
            "lxc-container-dir-storage",
            "9102",
            "rootfs subvol directory /tmp/b-lxc/images/9102/subvol-9102-disk-0.subvol",
        ),
        (
            "lxc-container-cgroup-v1",
            "9101",
            "rootfs image /tmp/b-lxc/images/9101/vm-9101-disk-0.raw on /dev/loop0",
        ),
    ] {
        let out = run(&["--check-config"], &fixture_env_found_cgroups(tree));
        assert!(out.status.success(), "{tree}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["platform"]["platform"], "lxc-container", "{tree}");
        assert_eq!(
            report["identity"]["container_id"], id,
            "{tree}: {}",
            report["identity_sources"]
        );
        assert_eq!(report["identity"]["instance"], format!("{id}:{id}"), "{tree}");
        assert_eq!(report["identity_sources"]["container_id"], evidence, "{tree}");
    }
}

#[test]
fn a_loop_device_without_a_proxmox_image_behind_it_gives_no_container_id_and_says_why() {
    let dir = copy_tree("lxc-container-cgroup-v1");
    let root = dir.path().join("t");
    std::fs::write(root.join("sys/block/loop0/loop/backing_file"), "/root/scratch.img\n").unwrap();
    let mut env = fixture_env_found_cgroups("lxc-container-cgroup-v1");
    for (k, v) in env.iter_mut() {
        if k == "PROC_PATH" || k == "SYS_PATH" {
            *v = v.replace(
                &fixture("lxc-container-cgroup-v1").display().to_string(),
                &root.display().to_string(),
            );
        }
    }
    let out = run(&["--check-config"], &env);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["identity"]["container_id"], serde_json::Value::Null);
    let why = report["identity_sources"]["container_id"].as_str().unwrap();
    assert!(
        why.contains("/root/scratch.img") && why.contains("CONTAINER_ID"),
        "{why}"
    );
}

#[test]
fn once_in_a_container_without_cgroup2_reports_cpu_processes_and_one_filesystem_per_device() {
    let out = run(&["--once"], &fixture_env_found_cgroups("lxc-container-cgroup-v1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    let series = parse_exposition(&text);
    let success = |c: &str| value(&series, "metrics_exporter_collector_success", &[("collector", c)]);
    for collector in ["cpu", "process", "pressure", "memory", "filesystem", "network"] {
        assert_eq!(success(collector), Some(1.0), "{collector}: {stderr}");
    }
    let hz = metrics_exporter::collectors::node::cpu::ticks_per_second();
    assert_eq!(
        value(&series, "node_cpu_seconds_total", &[("mode", "user")]),
        Some(106.0 / hz)
    );
    assert_eq!(
        value(&series, "node_cpu_seconds_total", &[("mode", "system")]),
        Some(19.0 / hz)
    );
    assert_eq!(value(&series, "node_processes", &[]), Some(5.0));
    assert_eq!(value(&series, "node_processes_threads", &[]), Some(6.0));
    assert!(
        !names(&series).iter().any(|n| n.starts_with("node_pressure_")),
        "no pressure without cgroup2:\n{text}"
    );
    // lxcfs's MemTotal: the 256 MiB limit of the container's v1 memory cgroup.
    assert_eq!(value(&series, "node_memory_total_bytes", &[]), Some(268435456.0));
    // The four binds of /dev/vda are one filesystem, at /lib; the root is the loop device.
    let mut filesystems: Vec<(String, String)> = series
        .iter()
        .filter(|s| s.0 == "node_filesystem_size_bytes")
        .map(|s| (s.1["mountpoint"].clone(), s.1["device"].clone()))
        .collect();
    filesystems.sort();
    assert_eq!(
        filesystems,
        [
            ("/".to_owned(), "/dev/loop0".to_owned()),
            ("/lib".to_owned(), "/dev/vda".to_owned())
        ]
    );
    // The identity labels are on the node series.
    let cpu = series.iter().find(|s| s.0 == "node_cpu_seconds_total").unwrap();
    assert_eq!(cpu.1.get("container_id").map(String::as_str), Some("9101"));
}
