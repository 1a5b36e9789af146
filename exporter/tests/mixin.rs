//! The monitoring mixin (mixin/: Grafana dashboards, Prometheus recording and alert rules) and
//! the README's OpenTelemetry Collector example, proven against real tools:
//! - `promtool check rules` is clean and `promtool test rules` passes; every alert has a unit
//!   test in which it fires for one series and stays silent for another;
//! - a real Prometheus (Debian's `prometheus`, on loopback, its own temp storage, killed on
//!   drop) scrapes the real exporter binary over fixtures/proxmox-host and, as root, over the
//!   real-guest rig (LXC containers and QEMU guests, eBPF on), loads the rules, and every
//!   dashboard expression (variables substituted) and every rule expression returns data; one
//!   that returns nothing fails the test with its panel's title. What cannot exist in a source
//!   must be absent there instead: eBPF series over the fixture (no kernel programs); over the
//!   rig (a standalone node whose PVE_PATH holds guest configs only) cluster, storage,
//!   replication, certificate, lock, HA and snapshot series and backup results, and the series
//!   read from this machine's own files (ZFS, /etc/subscription) where they are absent;
//! - the README's collector config parses as YAML and its pipeline refers only to receivers,
//!   processors and exporters it defines (no collector binary exists in Debian to validate it).
//!
//! YAML is read through python3's PyYAML (Debian's python3-yaml, which `cargo xtask setup`
//! brings with llvm-22-dev's llvm-22-tools) into JSON; Prometheus parses
//! the rule files itself and the test reads them back from its `/api/v1/rules`.

#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::{Exporter, fixture_env, is_root, require, require_command};
use guest_rig::http;
use serde_json::Value as Json;

fn mixin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mixin")
}

fn files_in(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(mixin_dir().join(dir))
        .unwrap_or_else(|e| panic!("mixin/{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.{extension} in mixin/{dir}");
    files
}

fn rule_files() -> Vec<PathBuf> {
    files_in("rules", "yaml")
}

/// YAML text as JSON, through python3's PyYAML; None (after `require`) where it is missing.
fn yaml_to_json(text: &str) -> Option<Json> {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)";
    let usable = Command::new("python3")
        .args(["-c", "import yaml"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !require("python3 with PyYAML (Debian's python3-yaml)", usable) {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not YAML: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn promtool_check_rules_is_clean() {
    if !require_command("promtool") {
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .args(rule_files())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules:\n{text}");
    assert!(!text.contains("WARNING"), "promtool check rules warns:\n{text}");
}

#[test]
fn promtool_unit_tests_pass() {
    if !require_command("promtool") {
        return;
    }
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .args(files_in("tests", "yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Label sets of an input series selector `name{a="b", ...}` without `__name__` and `le`:
/// which guest, node or collector the series belongs to.
fn series_identity(selector: &str) -> Vec<(String, String)> {
    let inner = selector
        .split_once('{')
        .and_then(|(_, rest)| rest.rsplit_once('}'))
        .map_or("", |(inner, _)| inner);
    let mut labels: Vec<(String, String)> = inner
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .filter(|(k, _)| k != "le")
        .collect();
    labels.sort();
    labels
}

/// promtool only proves the alerts its tests name. Every alert of mixin/rules must have a test
/// case where it fires, and that case must hold a series of another guest (or node) than the
/// ones it fires for: promtool fails on an unexpected alert, so that series proves silence.
#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let mut alerts = Vec::new();
    for file in rule_files() {
        let Some(rules) = yaml_to_json(&std::fs::read_to_string(&file).unwrap()) else {
            return;
        };
        for group in rules["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                if let Some(name) = rule["alert"].as_str() {
                    alerts.push(name.to_owned());
                }
            }
        }
    }
    assert!(alerts.len() >= 9, "alerts: {alerts:?}");
    let mut proven = Vec::new();
    for file in files_in("tests", "yaml") {
        let Some(tests) = yaml_to_json(&std::fs::read_to_string(&file).unwrap()) else {
            return;
        };
        for case in tests["tests"].as_array().unwrap() {
            let identities: Vec<_> = case["input_series"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| series_identity(s["series"].as_str().unwrap()))
                .collect();
            for test in case["alert_rule_test"].as_array().into_iter().flatten() {
                let expected = test["exp_alerts"].as_array().cloned().unwrap_or_default();
                if expected.is_empty() {
                    continue;
                }
                let fired: Vec<_> = expected
                    .iter()
                    .map(|a| {
                        let mut labels: Vec<(String, String)> = a["exp_labels"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .filter(|(k, _)| !["severity", "resource"].contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                            .collect();
                        labels.sort();
                        labels
                    })
                    .collect();
                if identities.iter().any(|id| !fired.contains(id)) {
                    proven.push(test["alertname"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    let unproven: Vec<_> = alerts.iter().filter(|a| !proven.contains(a)).collect();
    assert!(
        unproven.is_empty(),
        "alerts without a firing test beside a silent series: {unproven:?}"
    );
}

/// Where a dashboard expression comes from: the dashboard file and the panel (or variable).
#[derive(Debug, Clone)]
struct Query {
    origin: String,
    expr: String,
}

/// Every query of a dashboard: each panel's targets (rows' nested panels included) and each
/// query variable's `label_values(selector, label)`, as the PromQL Grafana's variable asks
/// (`group by (label) (selector)`).
fn dashboard_queries(file: &str, dashboard: &Json) -> Vec<Query> {
    fn panels(file: &str, list: &Json, out: &mut Vec<Query>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: {title}: target without expr"));
                out.push(Query {
                    origin: format!("{file}: panel \"{title}\""),
                    expr: expr.to_owned(),
                });
            }
            panels(file, &panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(file, &dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap();
        let text = variable["query"]["query"].as_str().unwrap();
        let args = text
            .strip_prefix("label_values(")
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{file}: variable {name}: not label_values(...): {text}"));
        let (selector, label) = args.rsplit_once(',').unwrap();
        out.push(Query {
            origin: format!("{file}: variable \"{name}\""),
            expr: format!("group by ({}) ({selector})", label.trim()),
        });
    }
    out
}

fn all_dashboard_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for file in files_in("dashboards", "json") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Json =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.extend(dashboard_queries(&name, &dashboard));
    }
    out
}

fn load_dashboard(name: &str) -> Json {
    let path = mixin_dir().join("dashboards").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What the issue asks of the dashboards' shape: the three variables, every panel on the
/// chosen data source with a query, the overview's row repeated per guest holding the
/// quantities it names (run-queue latency as a heatmap of the histogram's buckets), and the
/// detail dashboard's single guest.
#[test]
fn dashboards_have_the_variables_and_a_row_per_guest() {
    for name in ["proxmox-host-overview.json", "proxmox-guest-detail.json"] {
        let dashboard = load_dashboard(name);
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        let names: Vec<&str> = variables.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["datasource", "instance", "container_id"], "{name}");
        assert_eq!(variables[0]["type"], "datasource", "{name}");
        assert_eq!(variables[0]["query"], "prometheus", "{name}");
        let multi = variables[2]["multi"] == true;
        assert_eq!(multi, name.contains("overview"), "{name}: container_id multi-valued");
        let panels = dashboard["panels"].as_array().unwrap();
        for panel in panels.iter().filter(|p| p["type"] != "row") {
            let title = panel["title"].as_str().unwrap();
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{name}: {title}");
            assert!(
                panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "{name}: {title} has no query"
            );
        }
        let heatmap = panels
            .iter()
            .find(|p| p["type"] == "heatmap")
            .unwrap_or_else(|| panic!("{name}: no heatmap"));
        assert_eq!(heatmap["targets"][0]["format"], "heatmap");
        assert!(
            heatmap["targets"][0]["expr"]
                .as_str()
                .unwrap()
                .contains("container_runqueue_latency_seconds_bucket")
        );
    }
    let overview = load_dashboard("proxmox-host-overview.json");
    let panels = overview["panels"].as_array().unwrap();
    let row = panels
        .iter()
        .position(|p| p["type"] == "row" && p["repeat"] == "container_id")
        .expect("a row repeated over container_id");
    let in_row: Vec<&str> = panels[row + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "CPU against its limit",
        "CPU throttling",
        "Memory against its limit",
        "Swap",
        "Pressure (PSI some)",
        "Disk IO",
        "Network",
        "OOM kills",
        "Run-queue latency",
        "Task churn",
    ] {
        assert!(in_row.contains(&wanted), "the guest row lacks {wanted}: {in_row:?}");
    }
    // Issue 12's series: storage, ZFS, disks, certificates, backups and replication on the host
    // overview; a guest's backup, lock and snapshots on its detail dashboard.
    let storage_row = panels
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "Storage and backups")
        .expect("a \"Storage and backups\" row");
    let in_row: Vec<(&str, &str)> = panels[storage_row + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .map(|p| (p["title"].as_str().unwrap(), p["type"].as_str().unwrap()))
        .collect();
    for wanted in [
        ("Storage usage", "bargauge"),
        ("Storages", "table"),
        ("Certificate expiry", "table"),
        ("ZFS ARC", "timeseries"),
        ("ZFS pools", "stat"),
        ("Disk throughput per device", "timeseries"),
        ("Disk busy per device", "timeseries"),
        ("Backups", "table"),
        ("Replication", "table"),
    ] {
        assert!(in_row.contains(&wanted), "the storage row lacks {wanted:?}: {in_row:?}");
    }
    let detail = load_dashboard("proxmox-guest-detail.json");
    let stat = detail["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Backup, lock and snapshots")
        .expect("the guest detail has a backup, lock and snapshots panel");
    assert_eq!(stat["type"], "stat");
    let exprs: Vec<&str> = stat["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    for series in [
        "pve_guest_backup_last_success_timestamp_seconds",
        "pve_guest_backup_last_failed",
        "pve_guest_snapshots",
        "pve_guest_lock",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(series)),
            "the backup, lock and snapshots panel does not show {series}: {exprs:?}"
        );
    }
}

/// Grafana's variables replaced as Grafana would for one node and the guests chosen.
fn substitute(expr: &str, instance: &str, guests: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${datasource}", "")
        .replace("$instance", instance)
        .replace("$container_id", guests)
}

/// An alert's expression with its top-level comparisons made `bool`: `x > 0.9` becomes
/// `x > bool 0.9`, which returns a sample for every series the comparison looks at, firing or
/// not. Label matchers (`{a!="b"}`), strings and range selectors are left alone.
fn with_bool_comparisons(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let (mut braces, mut brackets, mut quote) = (0, 0, None::<char>);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 1;
            } else if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ => {}
        }
        let next = chars.get(i + 1).copied();
        let operator = match (c, next) {
            ('=' | '!' | '>' | '<', Some('=')) => 2,
            ('>' | '<', _) => 1,
            _ => 0,
        };
        if operator > 0 && braces == 0 && brackets == 0 {
            out.extend(&chars[i..i + operator]);
            i += operator;
            let rest: String = chars[i..].iter().collect();
            if !rest.trim_start().starts_with("bool") {
                out.push_str(" bool");
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[test]
fn what_unless_removes_does_not_make_an_expression_empty() {
    let rig = Source::Rig {
        hybrid: false,
        host: HostFiles {
            zfs_arc: false,
            zfs_pools: false,
            subscription_due: false,
        },
    };
    let never = "pve_guest_backup_covered == bool 1 unless on (instance, container_id) pve_guest_backup_last_success_timestamp_seconds";
    assert!(!rig.cannot_have(never));
    assert!(rig.cannot_have("pve_guest_backup_last_failed == bool 1"));
    assert!(rig.cannot_have("pve_storage_used_bytes unless on (instance) up"));
    assert!(Source::Fixture.cannot_have("rate(container_tasks_forked_total[5m])"));
}

#[test]
fn comparisons_become_bool_outside_matchers() {
    assert_eq!(with_bool_comparisons("x > 0.9"), "x > bool 0.9");
    assert_eq!(
        with_bool_comparisons(r#"up{job="a",x!="b"} == 0"#),
        r#"up{job="a",x!="b"} == bool 0"#
    );
    assert_eq!(
        with_bool_comparisons("time() - t >= 600 and y <= bool 2"),
        "time() - t >= bool 600 and y <= bool 2"
    );
    assert_eq!(
        with_bool_comparisons(r#"rate(a{b=~"<x>"}[5m]) < 1"#),
        r#"rate(a{b=~"<x>"}[5m]) < bool 1"#
    );
    assert_eq!(with_bool_comparisons("sum(x)"), "sum(x)");
}

/// A Prometheus server of Debian's package (tests/common/prometheus.rs) scraping one exporter
/// every second and evaluating the mixin's rules every second.
fn start_prometheus(exporter: SocketAddr) -> Prometheus {
    let rules: Vec<String> = rule_files().iter().map(|p| format!("  - {}", p.display())).collect();
    // The job name is the one the alert rules and the README's scrape config use.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\nscrape_configs:\n  - job_name: metrics-exporter\n    static_configs:\n      - targets: ['{exporter}']\n",
        rules.join("\n")
    );
    Prometheus::start(&config, exporter.to_string(), |_| {})
}

impl Prometheus {
    /// Every rule Prometheus loaded: (group, name, expr, is_alert, health, last error).
    fn rules(&self) -> Vec<LoadedRule> {
        let body = http::get(self.address, "/api/v1/rules").unwrap().json();
        let mut out = Vec::new();
        for group in body["data"]["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                out.push(LoadedRule {
                    name: rule["name"].as_str().unwrap().to_owned(),
                    expr: rule["query"].as_str().unwrap().to_owned(),
                    alert: rule["type"] == "alerting",
                    health: rule["health"].as_str().unwrap_or("").to_owned(),
                    error: rule["lastError"].as_str().unwrap_or("").to_owned(),
                    labels: rule["labels"].clone(),
                    annotations: rule["annotations"].clone(),
                });
            }
        }
        out
    }
}

#[derive(Debug)]
struct LoadedRule {
    name: String,
    expr: String,
    alert: bool,
    health: String,
    error: String,
    labels: Json,
    annotations: Json,
}

/// What one source of series cannot have, so its expressions must come back empty there.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// fixtures/proxmox-host: no eBPF programs (run-queue latency, task and socket counters).
    Fixture,
    /// The real-guest rig: a standalone node, no cluster series; on a hybrid cgroup layout no
    /// `memory.events` (cgroup v1 has none), so no `container_memory_events_total`. Its PVE_PATH
    /// has guest configs only: no storage.cfg, replication, certificates, HA, locks or
    /// snapshots, and no vzdump task ever names its guests (no backup results; coverage is 0,
    /// as for any guest without a job). ZFS and the subscription come from this machine's own
    /// files (the file-tree root is `/`), so they are expected where those files exist.
    Rig { hybrid: bool, host: HostFiles },
}

/// Which of the files the rig's exporter reads from this machine's own root exist here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HostFiles {
    /// /proc/spl/kstat/zfs/arcstats: the ZFS module is loaded.
    zfs_arc: bool,
    /// A pool's /proc/spl/kstat/zfs/<pool>/state.
    zfs_pools: bool,
    /// /etc/subscription with a next due date (a Proxmox node with a subscription).
    subscription_due: bool,
}

impl HostFiles {
    fn read() -> HostFiles {
        let zfs = std::path::Path::new("/proc/spl/kstat/zfs");
        let zfs_pools = std::fs::read_dir(zfs)
            .map(|dir| dir.flatten().any(|e| e.path().join("state").is_file()))
            .unwrap_or(false);
        // The exporter's own parser: one reading of the file's format.
        let subscription_due = std::fs::read_to_string("/etc/subscription").is_ok_and(|text| {
            metrics_exporter::parse::pve_subscription::parse(&text)
                .is_ok_and(|s| s.is_some_and(|s| s.next_due.is_some()))
        });
        HostFiles {
            zfs_arc: zfs.join("arcstats").is_file(),
            zfs_pools,
            subscription_due,
        }
    }
}

impl Source {
    fn cannot_have(self, expr: &str) -> bool {
        // `a unless b` has data only where `a` has: what `b` names cannot make it empty (a
        // guest with no backup on record is what ProxmoxGuestNeverBackedUp looks for).
        let expr = expr.split(" unless ").next().unwrap_or(expr);
        match self {
            Source::Fixture => ["container_runqueue_latency", "container_tasks_", "container_socket_"]
                .iter()
                .any(|m| expr.contains(m)),
            Source::Rig { hybrid, host } => {
                let rig_pve_path = [
                    "pve_cluster_",
                    "pve_storage_",
                    "pve_replication_",
                    "pve_certificate_",
                    "pve_guest_lock",
                    "pve_guest_ha_state",
                    "pve_guest_snapshot_oldest_",
                    "pve_guest_backup_last_",
                ];
                rig_pve_path.iter().any(|m| expr.contains(m))
                    || (hybrid && expr.contains("container_memory_events_total"))
                    || (!host.zfs_arc && expr.contains("node_zfs_arc_"))
                    || (!host.zfs_pools && expr.contains("node_zfs_zpool_"))
                    || (!host.subscription_due && expr.contains("pve_subscription_next_due_"))
            }
        }
    }
}

/// Every dashboard and rule expression against `prometheus`: each returns data, or, where the
/// source cannot have the series, nothing. Polls until all answer (the first scrapes and rule
/// evaluations take a few seconds) or 40 s have passed, then fails with every offender.
fn every_expression_answers(prometheus: &Prometheus, source: Source) {
    let started = Instant::now();
    let rules = prometheus.rules();
    let alerts = rules.iter().filter(|r| r.alert).count();
    let records = rules.len() - alerts;
    assert!(alerts >= 9 && records >= 9, "rules loaded: {rules:?}");
    for rule in rules.iter().filter(|r| r.alert && r.labels["severity"].is_string()) {
        for key in ["summary", "description"] {
            let text = rule.annotations[key].as_str().unwrap_or("");
            assert!(!text.is_empty(), "{}: no {key}", rule.name);
            if rule.name.starts_with("ProxmoxGuest") {
                for label in ["$labels.container_id", "$labels.host_name"] {
                    assert!(
                        text.contains(label),
                        "{}: {key} does not name the guest by {label}",
                        rule.name
                    );
                }
            }
        }
    }

    // The running guests this node reports: what Grafana's "All" would select.
    let deadline = Instant::now() + Duration::from_secs(40);
    let guests = loop {
        let running = prometheus
            .query(r#"pve_guest_info{status="running"}"#)
            .unwrap_or_default();
        if !running.is_empty() {
            let ids: Vec<&str> = running
                .iter()
                .map(|s| s["metric"]["container_id"].as_str().unwrap())
                .collect();
            break ids.join("|");
        }
        assert!(Instant::now() < deadline, "no running guest scraped within 40 s");
        std::thread::sleep(Duration::from_millis(500));
    };

    let mut queries: Vec<Query> = all_dashboard_queries()
        .into_iter()
        .map(|q| Query {
            expr: substitute(&q.expr, &prometheus.instance, &guests),
            ..q
        })
        .collect();
    for rule in &rules {
        queries.push(Query {
            origin: format!("{} {}", if rule.alert { "alert" } else { "recording rule" }, rule.name),
            expr: if rule.alert {
                with_bool_comparisons(&rule.expr)
            } else {
                rule.expr.clone()
            },
        });
    }
    assert!(queries.len() > 60, "only {} expressions", queries.len());

    let failures = loop {
        let mut failures = Vec::new();
        for q in &queries {
            let must_be_empty = source.cannot_have(&q.expr);
            match prometheus.query(&q.expr) {
                Err(e) => failures.push(format!("{}: {e}\n    {}", q.origin, q.expr)),
                Ok(result) if result.is_empty() && !must_be_empty => {
                    failures.push(format!("{}: no data\n    {}", q.origin, q.expr))
                }
                Ok(result) if !result.is_empty() && must_be_empty => failures.push(format!(
                    "{}: data where {source:?} has none ({} series)\n    {}",
                    q.origin,
                    result.len(),
                    q.expr
                )),
                Ok(_) => {}
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let answered = queries.iter().filter(|q| !source.cannot_have(&q.expr)).count();
    println!(
        "{source:?}: {answered} expressions returned data, {} were empty as they must be, {} failed ({:.1} s after Prometheus was ready)",
        queries.len() - answered,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{source:?}:\n  {}", failures.join("\n  "));

    let unhealthy: Vec<_> = prometheus
        .rules()
        .into_iter()
        .filter(|r| r.health != "ok" || !r.error.is_empty())
        .map(|r| format!("{} ({}): {}", r.name, r.health, r.error))
        .collect();
    assert!(
        unhealthy.is_empty(),
        "rules Prometheus could not evaluate: {unhealthy:?}"
    );
}

fn prometheus_available() -> bool {
    require_command("prometheus")
}

#[test]
fn every_expression_returns_data_over_the_proxmox_fixture() {
    if !prometheus_available() {
        return;
    }
    let mut env = fixture_env("proxmox-host", "proxmox");
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    let exporter = Exporter::start(&env);
    let prometheus = start_prometheus(exporter.address);
    every_expression_answers(&prometheus, Source::Fixture);
}

#[test]
fn every_expression_returns_data_over_the_real_guest_rig() {
    if !require("root", is_root()) || !prometheus_available() {
        return;
    }
    if let Some(why) = guest_rig::rig::unavailable() {
        require(&why, false);
        return;
    }
    use guest_rig::rig::{RIG_ROOT, Rig};
    let dir = PathBuf::from(RIG_ROOT).join(format!("mixin-{}", std::process::id()));
    let rig = Rig::up(&dir).unwrap_or_else(|e| panic!("rig up: {e:#}"));
    let d = rig.description.clone();
    let mut env = d.exporter_env();
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    env.push(("LOG_LEVEL".into(), "warn".into()));
    let exporter = Exporter::start(&env);
    let prometheus = start_prometheus(exporter.address);
    oom_kill_fires_its_alert(&rig, &prometheus);
    let hybrid = guest_rig::cgroups::Hierarchies::read().unwrap().hybrid();
    let host = HostFiles::read();
    every_expression_answers(&prometheus, Source::Rig { hybrid, host });
    drop(prometheus);
    drop(exporter);
    let cgroups = rig.cgroups.clone();
    rig.down();
    let left = d.leftovers(&cgroups);
    assert!(left.is_empty(), "the rig left behind: {left:?}");
}

/// A real OOM kill in container A (a 400 MB read buffer under its 256 MiB limit) after
/// Prometheus has scraped A's counter: ProxmoxGuestOOMKilled fires for A, naming it by vmid and
/// name, and for no other guest of the rig.
fn oom_kill_fires_its_alert(rig: &guest_rig::rig::Rig, prometheus: &Prometheus) {
    use guest_rig::rig::Role;
    let d = &rig.description;
    let a = d.container(Role::A);
    let vmid = a.spec.vmid.to_string();
    let counter = format!(r#"container_oom_kills_total{{container_id="{vmid}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus.query(&counter).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "A's OOM counter was not scraped within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let hog = guest_rig::lxc::attach_command(
        rig.lxcpath(),
        a.spec.vmid,
        &[],
        &["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=400M", "count=1"],
    )
    .output()
    .unwrap();
    assert!(!hog.status.success(), "the memory hog was not killed: {hog:?}");
    let ours: Vec<String> = d
        .containers
        .iter()
        .map(|c| c.spec.vmid)
        .chain(d.vms.iter().map(|v| v.spec.vmid))
        .map(|v| v.to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let firing = loop {
        let body = http::get(prometheus.address, "/api/v1/alerts").unwrap().json();
        let firing: Vec<Json> = body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|alert| alert["labels"]["alertname"] == "ProxmoxGuestOOMKilled" && alert["state"] == "firing")
            .filter(|alert| {
                alert["labels"]["container_id"]
                    .as_str()
                    .is_some_and(|id| ours.iter().any(|o| o == id))
            })
            .cloned()
            .collect();
        if !firing.is_empty() {
            break firing;
        }
        assert!(
            Instant::now() < deadline,
            "ProxmoxGuestOOMKilled did not fire for A within 20 s of the kill"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let ids: Vec<&str> = firing
        .iter()
        .map(|alert| alert["labels"]["container_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [vmid.as_str()], "the alert fired for other guests than A");
    let description = firing[0]["annotations"]["description"].as_str().unwrap();
    let name = &a.config.name;
    assert!(
        description.contains(&format!("guest {vmid} ({name})")),
        "the description does not name A: {description}"
    );
    println!("ProxmoxGuestOOMKilled fired for A: {description}");
}

/// The README's collector config: the first ```yaml block of its OTLP section.
fn readme_collector_config() -> String {
    let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("OpenTelemetry (OTLP)"))
        .expect("README has an OpenTelemetry (OTLP) section");
    let block = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the OTLP section has a yaml block")
        .0;
    block.to_owned()
}

/// Without a collector binary (Debian has none), what the collector's own config check would
/// refuse first: YAML syntax, an OTLP gRPC receiver on the exporter's default port, and a
/// metrics pipeline naming only components defined above it.
#[test]
fn readme_collector_config_parses_and_its_pipeline_is_complete() {
    let Some(config) = yaml_to_json(&readme_collector_config()) else {
        return;
    };
    let grpc = &config["receivers"]["otlp"]["protocols"]["grpc"];
    assert!(grpc.is_object(), "no otlp grpc receiver: {config}");
    assert!(
        grpc["endpoint"].as_str().is_some_and(|e| e.ends_with(":4317")),
        "the receiver is not on 4317, the exporter's default: {grpc}"
    );
    let pipeline = &config["service"]["pipelines"]["metrics"];
    assert!(pipeline.is_object(), "no metrics pipeline: {config}");
    for (kind, required) in [("receivers", true), ("processors", false), ("exporters", true)] {
        let names = pipeline[kind].as_array().cloned().unwrap_or_default();
        assert!(!required || !names.is_empty(), "the pipeline has no {kind}");
        for name in names {
            let name = name.as_str().unwrap();
            assert!(
                config[kind].get(name).is_some(),
                "the pipeline's {kind} entry {name} is not defined in {kind}"
            );
        }
    }
}
