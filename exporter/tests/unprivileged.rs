//! The binary inside a user namespace (`unshare -U -r`), as in an unprivileged LXC container:
//! it starts, serves /metrics and /health, and reports real values.

mod common;

use std::process::Command;

use common::*;

fn userns_available() -> bool {
    Command::new("unshare")
        .args(["-U", "-r", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn serves_inside_a_user_namespace() {
    if !require_command("unshare") || !require("unprivileged user namespaces (unshare -U -r)", userns_available()) {
        return;
    }
    let mut command = Command::new("unshare");
    command.args(["-U", "-r"]).arg(binary());
    let mut exporter = Exporter::start_with(
        command,
        &[("PLATFORM".into(), "auto".into()), ("LOG_LEVEL".into(), "info".into())],
    );
    let series = parse_exposition(&exporter.get("/metrics").text());
    let mem_total = value(&series, "node_memory_total_bytes", &[]).expect("memory series");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(mem_total, kb * 1024.0);
    assert!(value(&series, "node_processes", &[]).unwrap() > 0.0);
    assert_eq!(exporter.get("/health").status, 200);
    let status = exporter.get("/status").json();
    assert!(
        status["collectors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "cpu")
    );
    assert_eq!(exporter.terminate().code(), Some(0));
}
