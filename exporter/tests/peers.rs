//! The exporter against the tools users run beside it, all on loopback: `promtool check
//! metrics` on the real output, a real Prometheus server scraping it (target up), and
//! node_exporter's textfile collector reading PROMETHEUS_FILE without a scrape error.
//! The peers come from Debian's prometheus and prometheus-node-exporter packages, which
//! `cargo xtask test` installs.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host_env() -> Vec<(String, String)> {
    vec![
        ("PLATFORM".into(), "host".into()),
        ("EBPF".into(), "off".into()),
        ("LOG_LEVEL".into(), "warn".into()),
    ]
}

fn promtool_check(text: &[u8]) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
fn promtool_finds_nothing_in_real_output() {
    if !require_command("promtool") {
        return;
    }
    let exporter = Exporter::start(&host_env());
    let text = exporter.get("/metrics").body;
    let (ok, report) = promtool_check(&text);
    assert!(ok && report.trim().is_empty(), "promtool check metrics: {report}");
    // The fixture outputs too, whose label values carry spaces and escapes.
    for (tree, platform) in [("lxc-container", "lxc"), ("proxmox-host", "proxmox")] {
        let out = Command::new(binary())
            .arg("--once")
            .envs(fixture_env(tree, platform))
            .output()
            .unwrap();
        let (ok, report) = promtool_check(&out.stdout);
        assert!(
            ok && report.trim().is_empty(),
            "{tree}: promtool check metrics: {report}"
        );
    }
}

#[test]
fn a_real_prometheus_scrapes_it_with_the_target_up() {
    if !require_command("prometheus") {
        return;
    }
    let exporter = Exporter::start(&host_env());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: metrics-exporter\n    static_configs:\n      - targets: ['{}']\n",
            exporter.address
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let target = loop {
        if let Ok(r) = get(api, "/api/v1/targets")
            && r.status == 200
        {
            let v = r.json();
            let target = v["data"]["activeTargets"][0].clone();
            if target["health"] == "up" {
                break target;
            }
            if target["health"] == "down" {
                panic!("Prometheus reports the target down: {}", target["lastError"]);
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the target within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(target["lastError"], "");
    // The samples arrived: query one of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(api, "/api/v1/query?query=node_memory_total_bytes").unwrap();
        let v = r.json();
        if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
            assert!(value.parse::<f64>().unwrap() > 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "node_memory_total_bytes never arrived: {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn node_exporter_textfile_collector_reads_the_prom_file() {
    if !require_command("prometheus-node-exporter") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics-exporter.prom");
    let mut env = host_env();
    env.push(("PROMETHEUS_FILE".into(), file.display().to_string()));
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    let exporter = Exporter::start(&env);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(Instant::now() < deadline, "PROMETHEUS_FILE was not written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    let port = free_port();
    let _node_exporter = Killed(
        Command::new("prometheus-node-exporter")
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!("--collector.textfile.directory={}", dir.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter"),
    );
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Several scrapes while the file is being rewritten every second: never an error.
    let mut scrapes = 0;
    while scrapes < 5 {
        match get(address, "/metrics") {
            Ok(r) if r.status == 200 => {
                let series = parse_exposition(&r.text());
                assert_eq!(
                    value(&series, "node_textfile_scrape_error", &[]),
                    Some(0.0),
                    "{}",
                    r.text()
                );
                assert!(value(&series, "node_memory_total_bytes", &[]).unwrap() > 0.0);
                scrapes += 1;
                std::thread::sleep(Duration::from_millis(400));
            }
            _ => {
                assert!(Instant::now() < deadline, "node_exporter did not answer");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    drop(exporter);
}
