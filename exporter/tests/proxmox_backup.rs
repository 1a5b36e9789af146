//! The `backup` collector over fixtures/proxmox-host reproduces every value of
//! fixtures/proxmox-host/expected-backup.md and none of its traps, directly and through the
//! binary; reads the task archive incrementally (new bytes only, across a rotation, a line
//! still being written, a task archived after it was taken from `active`); names the file of
//! every bad input and still serves the rest. Runs as any user. The cost test is `#[ignore]`:
//! `cargo test --release -p metrics-exporter --test proxmox_backup -- --ignored --nocapture`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use metrics_exporter::collectors::Collector;
use metrics_exporter::collectors::proxmox::backup::BackupCollector;
use metrics_exporter::collectors::proxmox::synthetic;
use metrics_exporter::model::SnapshotBuilder;

/// What expected-backup.md derives for one local guest.
struct Expected {
    vmid: &'static str,
    name: &'static str,
    kind: &'static str,
    success: Option<f64>,
    attempt: Option<f64>,
    failed: Option<f64>,
    duration: Option<f64>,
    covered: f64,
}

/// Task ends (index end-time field, hex): T2 674EF31D, T3 674FAB9F, T4 67501AC5, T5 67502DD0.
const T2_END: f64 = 1_733_227_293.0;
const T3_END: f64 = 1_733_274_527.0;
const T4_END: f64 = 1_733_302_981.0;
const T5_END: f64 = 1_733_307_856.0;

const EXPECTED: [Expected; 4] = [
    Expected {
        vmid: "101",
        name: "web",
        kind: "lxc",
        success: Some(T5_END),
        attempt: Some(T5_END),
        failed: Some(0.0),
        duration: Some(65.0),
        covered: 1.0,
    },
    Expected {
        vmid: "102",
        name: "db",
        kind: "lxc",
        success: Some(T2_END),
        attempt: Some(T5_END),
        failed: Some(1.0),
        duration: Some(90.0),
        covered: 1.0,
    },
    Expected {
        vmid: "103",
        name: "ci-runner",
        kind: "lxc",
        success: None,
        attempt: None,
        failed: None,
        duration: None,
        covered: 0.0,
    },
    Expected {
        vmid: "200",
        name: "win11",
        kind: "qemu",
        success: Some(T3_END),
        attempt: Some(T4_END),
        failed: Some(1.0),
        duration: Some(270.0),
        covered: 1.0,
    },
];

const SUCCESS: &str = "pve_guest_backup_last_success_timestamp_seconds";
const ATTEMPT: &str = "pve_guest_backup_last_attempt_timestamp_seconds";
const FAILED: &str = "pve_guest_backup_last_failed";
const DURATION: &str = "pve_guest_backup_last_duration_seconds";
const COVERED: &str = "pve_guest_backup_covered";
const FAMILIES: [&str; 5] = [SUCCESS, ATTEMPT, FAILED, DURATION, COVERED];

fn fixture_root() -> PathBuf {
    fixture("proxmox-host")
}

/// One collection as exposition series, and the collector's result.
fn collect(collector: &mut BackupCollector) -> (Vec<Series>, Result<(), String>) {
    let mut out = SnapshotBuilder::new();
    let result = collector.collect(&mut out).map_err(|e| e.to_string());
    let snapshot = Arc::new(out.finish(Arc::default(), SystemTime::now(), 1));
    let text = metrics_exporter::encode::prometheus::encode_text(&snapshot);
    (parse_exposition(&text), result)
}

/// Every value of `expected` in `series`, and no backup series of another guest.
fn check(series: &[Series], expected: &[Expected]) -> usize {
    let mut checked = 0;
    for e in expected {
        let id = [("container_id", e.vmid), ("host_name", e.name), ("type", e.kind)];
        for (metric, want) in [
            (SUCCESS, e.success),
            (ATTEMPT, e.attempt),
            (FAILED, e.failed),
            (DURATION, e.duration),
            (COVERED, Some(e.covered)),
        ] {
            assert_eq!(value(series, metric, &id), want, "{} {metric}", e.vmid);
            checked += 1;
        }
    }
    for (name, labels, _) in series.iter().filter(|s| FAMILIES.contains(&s.0.as_str())) {
        let id = labels["container_id"].as_str();
        assert!(
            expected.iter().any(|e| e.vmid == id),
            "{name} for guest {id}, which is not a local guest"
        );
    }
    checked
}

/// A copy of what the collector reads (etc/pve with its links, var/log/pve/tasks) in a
/// temporary directory, and a collector over it.
fn copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for sub in ["etc", "var/log/pve"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(
                fixture_root()
                    .join(sub)
                    .join(if sub == "etc" { "pve" } else { "tasks" }),
            )
            .arg(root.join(sub))
            .status()
            .unwrap();
        assert!(status.success());
    }
    (dir, root)
}

fn collector(root: &Path) -> BackupCollector {
    BackupCollector::new(&synthetic::environment_for_tree(root))
}

fn tasks(root: &Path) -> PathBuf {
    root.join("var/log/pve/tasks")
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Writes a task log where Proxmox puts it and returns the UPID.
fn task(root: &Path, pid: u32, start: u64, id: &str, log: &str) -> String {
    let upid = format!("UPID:pve1:{pid:08X}:00A00000:{start:08X}:vzdump:{id}:root@pam:");
    let dir = tasks(root).join(format!("{start:X}").chars().last().unwrap().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&upid), log).unwrap();
    upid
}

const FINISHED_103: &str = "INFO: starting new backup job: vzdump 103 --mode stop\n\
                            INFO: Starting Backup of VM 103 (lxc)\n\
                            INFO: Finished Backup of VM 103 (00:00:12)\n\
                            INFO: Backup job finished successfully\n\
                            TASK OK\n";

#[test]
fn every_expected_value_from_the_fixture_and_none_of_the_traps() {
    let mut c = collector(&fixture_root());
    let (series, result) = collect(&mut c);
    assert_eq!(check(&series, &EXPECTED), 20);
    // The truncated index line is named with its file and place, and one more problem (the
    // task log without a TASK line) is counted.
    let error = result.unwrap_err();
    assert!(
        error.contains("var/log/pve/tasks/index: byte 75: end time \"6750\" is not 8 hex digits"),
        "{error}"
    );
    assert!(error.ends_with("(and 1 more problems)"), "{error}");
    // index.1 and index whole, and the five finished vzdump tasks' logs: not the truncated
    // line's, not the running task's.
    let archive = ["index", "index.1"]
        .iter()
        .map(|f| std::fs::metadata(tasks(&fixture_root()).join(f)).unwrap().len())
        .sum::<u64>();
    assert_eq!(c.bytes_read(), archive);
    assert_eq!(c.logs_parsed(), 5);

    // Nothing changed: nothing is read, no error, the same values.
    let (series, result) = collect(&mut c);
    result.unwrap();
    check(&series, &EXPECTED);
    assert_eq!((c.bytes_read(), c.logs_parsed()), (archive, 5));
}

/// `guests` and `backup` made from one environment scan the guest configs once per collection
/// (`collectors::proxmox::local_configs`): a config written between the two collectors of a
/// collection is seen by both in the next one, never by one of them only. Before the scan
/// was shared, `backup` listed guest 150 in the first collection already.
#[test]
fn backup_takes_the_config_scan_guests_made_in_the_same_collection() {
    let (_dir, root) = copy();
    let env = synthetic::environment_for_tree(&root);
    let mut guests = metrics_exporter::collectors::proxmox::create("guests", &env).unwrap();
    let mut backup = BackupCollector::new(&env);
    let covered_150 = |series: &[Series]| value(series, COVERED, &[("container_id", "150")]);

    guests.collect(&mut SnapshotBuilder::new()).unwrap();
    std::fs::write(root.join("etc/pve/lxc/150.conf"), "hostname: late\n").unwrap();
    // The fixture's truncated index line makes the first collection report an error.
    let (series, _) = collect(&mut backup);
    check(&series, &EXPECTED);
    assert_eq!(covered_150(&series), None, "backup scanned again within the collection");

    // Next collection: `guests` scans and finds it, `backup` takes that scan. The job
    // backup-nightly (`all 1`, `exclude 101,102,103`) covers it.
    guests.collect(&mut SnapshotBuilder::new()).unwrap();
    let (series, result) = collect(&mut backup);
    result.unwrap();
    assert_eq!(covered_150(&series), Some(1.0));
    let name = series
        .iter()
        .find(|s| s.0 == COVERED && s.1["container_id"] == "150")
        .map(|s| s.1["host_name"].clone());
    assert_eq!(name.as_deref(), Some("late"));

    // A `backup` alone (its own environment) scans on every collection.
    std::fs::remove_file(root.join("etc/pve/lxc/150.conf")).unwrap();
    let mut alone = collector(&root);
    let (series, _) = collect(&mut alone);
    assert_eq!(covered_150(&series), None);
    std::fs::write(root.join("etc/pve/lxc/150.conf"), "hostname: late\n").unwrap();
    let (series, _) = collect(&mut alone);
    assert_eq!(covered_150(&series), Some(1.0));
}

/// No `last_*` series for guest 150 (its coverage may be there).
fn assert_no_results_for_150(series: &[Series], why: &str) {
    for family in FAMILIES.iter().filter(|f| **f != COVERED) {
        assert!(
            !series.iter().any(|s| s.0 == *family && s.1["container_id"] == "150"),
            "{family} {why}"
        );
    }
}

/// Proxmox gives a destroyed guest's vmid to the next new guest. A VM that took the number of a
/// container backed up before is not served the container's results, nor a VM the results of
/// the VM that had the number before it was created (`meta: ctime`); its own backup is. Before
/// results carried their guest's type and were held against the VM's creation time, each new
/// guest showed the old one's results.
#[test]
fn a_reused_vmid_does_not_inherit_the_other_guest_types_backups() {
    let (_dir, root) = copy();
    let mut c = collector(&root);
    // The fixture's traps fail the first collection only.
    assert!(collect(&mut c).1.is_err());
    let start = 0x6750_9000u64;
    let upid = task(
        &root,
        0x9000,
        start,
        "150",
        "INFO: Starting Backup of VM 150 (lxc)\nINFO: Finished Backup of VM 150 (00:00:07)\nTASK OK\n",
    );
    append(&tasks(&root).join("index"), &format!("{upid} {:08X} OK\n", start + 8));
    let success = |series: &[Series], kind: &str| {
        value(
            series,
            SUCCESS,
            &[("container_id", "150"), ("host_name", "reused"), ("type", kind)],
        )
    };
    let pve = root.join("etc/pve");
    std::fs::write(pve.join("lxc/150.conf"), "hostname: reused\n").unwrap();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(success(&series, "lxc"), Some((start + 8) as f64));

    // The container is destroyed and a VM gets 150.
    std::fs::remove_file(pve.join("lxc/150.conf")).unwrap();
    std::fs::write(pve.join("qemu-server/150.conf"), "name: reused\n").unwrap();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_no_results_for_150(&series, "of the container served for the VM");
    // The job backup-nightly (`all 1`, `exclude 101,102,103`) covers the VM all the same.
    assert_eq!(
        value(&series, COVERED, &[("container_id", "150"), ("type", "qemu")]),
        Some(1.0)
    );

    // The VM's own backup fails: that is its record.
    let start = 0x6750_A000u64;
    let upid = task(
        &root,
        0xA000,
        start,
        "150",
        "INFO: Starting Backup of VM 150 (qemu)\nERROR: Backup of VM 150 failed - no space left\nTASK ERROR: job errors\n",
    );
    append(
        &tasks(&root).join("index"),
        &format!("{upid} {:08X} job errors\n", start + 5),
    );
    let (series, result) = collect(&mut c);
    result.unwrap();
    let id = [("container_id", "150"), ("host_name", "reused"), ("type", "qemu")];
    assert_eq!(value(&series, ATTEMPT, &id), Some((start + 5) as f64));
    assert_eq!(value(&series, FAILED, &id), Some(1.0));
    assert_eq!(
        success(&series, "qemu"),
        None,
        "the container's success is not the VM's"
    );

    // That VM is destroyed too and a new one gets 150. qemu-server wrote its creation time in
    // `meta:`: the old VM's failure ended before it and is not the new VM's.
    let created = 0x6750_B000u64;
    std::fs::write(
        pve.join("qemu-server/150.conf"),
        format!("meta: creation-qemu=9.0.2,ctime={created}\nname: reused\n"),
    )
    .unwrap();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_no_results_for_150(&series, "of the VM destroyed before served for the new one");
    // Its own first backup is its record.
    let start = created + 0x100;
    let upid = task(
        &root,
        0xB100,
        start,
        "150",
        "INFO: Starting Backup of VM 150 (qemu)\nINFO: Finished Backup of VM 150 (00:00:30)\nTASK OK\n",
    );
    append(&tasks(&root).join("index"), &format!("{upid} {:08X} OK\n", start + 31));
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(success(&series, "qemu"), Some((start + 31) as f64));
    assert_eq!(value(&series, FAILED, &id), Some(0.0));
    assert_eq!(value(&series, DURATION, &id), Some(30.0));
}

#[test]
fn a_task_log_without_a_task_line_is_named_and_its_guest_lines_used() {
    let (_dir, root) = copy();
    // Without the truncated line, the cut-off log is the one problem left.
    let index = tasks(&root).join("index");
    let text = std::fs::read_to_string(&index).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.ends_with(" 6750"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(kept.lines().count(), 4);
    std::fs::write(&index, kept).unwrap();
    let (series, result) = collect(&mut collector(&root));
    let error = result.unwrap_err();
    assert!(
        error.contains("tasks/0/UPID:pve1:0002D001:0095C3E0:67502820:vzdump::root@pam:")
            && error.contains("without a TASK line")
            && error.contains("'unexpected status'"),
        "{error}"
    );
    check(&series, &EXPECTED);
}

#[test]
fn the_binary_serves_every_value_and_the_other_collectors() {
    let out = Command::new(binary())
        .arg("--once")
        .envs(fixture_env("proxmox-host", "proxmox"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let series = parse_exposition(&String::from_utf8_lossy(&out.stdout));
    check(&series, &EXPECTED);
    let success = |c: &str| value(&series, "metrics_exporter_collector_success", &[("collector", c)]);
    // The fixture's bad index line fails this collection of `backup`, and only `backup`.
    assert_eq!(success("backup"), Some(0.0));
    assert_eq!(success("guests"), Some(1.0));
    assert_eq!(success("cluster"), Some(1.0));
    assert!(stderr.contains("var/log/pve/tasks/index: byte "), "{stderr}");
    // The catalogue lists it for Proxmox only.
    let info = metrics_exporter::collectors::CATALOGUE
        .iter()
        .find(|c| c.name == "backup")
        .unwrap();
    assert_eq!(info.platforms, &[metrics_exporter::platform::Platform::Proxmox]);
}

#[test]
fn new_tasks_are_read_from_the_new_bytes_only_across_rotations() {
    let (_dir, root) = copy();
    let mut c = collector(&root);
    // The fixture's traps fail the first collection only.
    assert!(collect(&mut c).1.is_err());
    let index = tasks(&root).join("index");
    let before = c.bytes_read();

    // A new task for 103: only its line is read, and its log once.
    let start = 0x6750_4000;
    let upid = task(&root, 0x4000, start, "103", FINISHED_103);
    let line = format!("{upid} {:08X} OK\n", start + 20);
    append(&index, &line);
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(c.bytes_read() - before, line.len() as u64);
    assert_eq!(c.logs_parsed(), 6);
    let mut expected = EXPECTED;
    expected[2].success = Some((start + 20) as f64);
    expected[2].attempt = Some((start + 20) as f64);
    expected[2].failed = Some(0.0);
    expected[2].duration = Some(12.0);
    check(&series, &expected);

    // Bytes already read are not read again: garbage written over them (same size, same
    // inode) changes nothing and is no error.
    let text = std::fs::read(&index).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&vec![b'#'; text.len() - 1])
        })
        .unwrap();
    let read = c.bytes_read();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(c.bytes_read(), read);
    check(&series, &expected);
    std::fs::write(&index, &text).unwrap();

    // A line being written (no newline yet) is no result and no error until it is complete.
    let start = 0x6750_5000;
    let upid = task(
        &root,
        0x5000,
        start,
        "101",
        "INFO: Starting Backup of VM 101 (lxc)\nERROR: Backup of VM 101 failed - no space left on device\nTASK ERROR: job errors\n",
    );
    let line = format!("{upid} {:08X} job errors\n", start + 5);
    let (head, tail) = line.split_at(line.len() / 2);
    append(&index, head);
    let (series, result) = collect(&mut c);
    result.unwrap();
    check(&series, &expected);
    append(&index, tail);
    let (series, result) = collect(&mut c);
    result.unwrap();
    expected[0].attempt = Some((start + 5) as f64);
    expected[0].failed = Some(1.0);
    check(&series, &expected);
    let parsed = c.logs_parsed();

    // Rotation: one more task is appended, then Proxmox renames index to index.1 (the old
    // index.1 is gone) before this collection: the rest of index.1 is read, not all of it.
    let start = 0x6750_6000;
    let upid = task(
        &root,
        0x6000,
        start,
        "200",
        "INFO: Starting Backup of VM 200 (qemu)\nINFO: Finished Backup of VM 200 (00:07:01)\nTASK OK\n",
    );
    let line = format!("{upid} {:08X} OK\n", start + 430);
    append(&index, &line);
    std::fs::rename(&index, tasks(&root).join("index.1")).unwrap();
    let read = c.bytes_read();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(
        c.bytes_read() - read,
        line.len() as u64,
        "only the rest of the rotated file"
    );
    assert_eq!(c.logs_parsed(), parsed + 1);
    expected[3].success = Some((start + 430) as f64);
    expected[3].attempt = Some((start + 430) as f64);
    expected[3].failed = Some(0.0);
    expected[3].duration = Some(421.0);
    check(&series, &expected);

    // Until a task ends there is no new index; then it starts over and is read from its start.
    let (_, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(c.bytes_read() - read, line.len() as u64);
    let start = 0x6750_7000;
    let upid = task(
        &root,
        0x7000,
        start,
        "",
        "INFO: Starting Backup of VM 102 (lxc)\nINFO: Finished Backup of VM 102 (00:01:00)\nTASK OK\n",
    );
    let line = format!("{upid} {:08X} OK\n", start + 61);
    std::fs::write(&index, &line).unwrap();
    let read = c.bytes_read();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(c.bytes_read() - read, line.len() as u64);
    expected[1].success = Some((start + 61) as f64);
    expected[1].attempt = Some((start + 61) as f64);
    expected[1].failed = Some(0.0);
    expected[1].duration = Some(60.0);
    check(&series, &expected);

    // An index rewritten shorter in place (same inode) is read again from its start.
    append(
        &index,
        "UPID:pve1:00007001:00A00000:67507100:qmstart:200:root@pam: 67507102 OK\n",
    );
    collect(&mut c).1.unwrap();
    let start = 0x6750_8000;
    let upid = task(
        &root,
        0x8000,
        start,
        "102",
        "INFO: Starting Backup of VM 102 (lxc)\nINFO: Finished Backup of VM 102 (00:00:02)\nTASK OK\n",
    );
    let short = format!("{upid} {:08X} OK\n", start + 3);
    assert!((short.len() as u64) < std::fs::metadata(&index).unwrap().len());
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&index)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(short.as_bytes())
        })
        .unwrap();
    let (series, result) = collect(&mut c);
    result.unwrap();
    expected[1].success = Some((start + 3) as f64);
    expected[1].attempt = Some((start + 3) as f64);
    expected[1].duration = Some(2.0);
    check(&series, &expected);
}

#[test]
fn a_running_task_counts_once_it_ended_and_active_results_are_not_counted_twice() {
    let (_dir, root) = copy();
    let mut c = collector(&root);
    // The fixture's traps fail the first collection only.
    assert!(collect(&mut c).1.is_err());
    let parsed = c.logs_parsed();
    // The running task T6 (101) ends: its log gets its TASK line, active lists it ended but
    // not yet archived. That is a result now.
    let t6 = "UPID:pve1:0003100A:009A0123:67503630:vzdump:101:root@pam:";
    append(
        &tasks(&root).join("0").join(t6),
        "INFO: Backup job finished successfully\nTASK OK\n",
    );
    let active = tasks(&root).join("active");
    let text = std::fs::read_to_string(&active).unwrap();
    let end = 0x6750_3660u64;
    std::fs::write(
        &active,
        text.replace(&format!("{t6} 0\n"), &format!("{t6} 0 {end:08X} OK\n")),
    )
    .unwrap();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(c.logs_parsed(), parsed + 1);
    let mut expected = EXPECTED;
    expected[0].success = Some(end as f64);
    expected[0].attempt = Some(end as f64);
    expected[0].duration = Some(44.0);
    check(&series, &expected);
    // Archived: the index line is read, its log not parsed again.
    append(&tasks(&root).join("index"), &format!("{t6} {end:08X} OK\n"));
    std::fs::write(
        &active,
        text.replace(&format!("{t6} 0\n"), &format!("{t6} 1 {end:08X} OK\n")),
    )
    .unwrap();
    let (series, result) = collect(&mut c);
    result.unwrap();
    assert_eq!(c.logs_parsed(), parsed + 1);
    check(&series, &expected);
}

#[test]
fn coverage_follows_jobs_cron_and_pools_when_they_change() {
    let (_dir, root) = copy();
    let pve = root.join("etc/pve");
    let mut c = collector(&root);
    // The fixture's traps fail the first collection only.
    assert!(collect(&mut c).1.is_err());
    // A legacy cron line for 103 (the fixture's only cron line is disabled).
    append(
        &pve.join("vzdump.cron"),
        "0 5 * * *           root vzdump 103 --mode stop\n",
    );
    let (series, result) = collect(&mut c);
    result.unwrap();
    let mut expected = EXPECTED;
    expected[2].covered = 1.0;
    check(&series, &expected);
    // 101 leaves pool prod: backup-prod no longer covers it.
    let users = std::fs::read_to_string(pve.join("user.cfg")).unwrap();
    std::fs::write(
        pve.join("user.cfg"),
        users.replace(
            "pool:prod:Production web%3A nginx:101,300::",
            "pool:prod:Production web%3A nginx:300::",
        ),
    )
    .unwrap();
    let (series, result) = collect(&mut c);
    result.unwrap();
    expected[0].covered = 0.0;
    check(&series, &expected);
    // No job files at all: nothing is covered (0, not absent: there are no jobs).
    for f in ["jobs.cfg", "vzdump.cron", "user.cfg"] {
        std::fs::remove_file(pve.join(f)).unwrap();
    }
    let (series, result) = collect(&mut c);
    result.unwrap();
    for e in &mut expected {
        e.covered = 0.0;
    }
    check(&series, &expected);
}

#[test]
fn unreadable_files_are_named_and_cost_only_what_depends_on_them() {
    let (_dir, root) = copy();
    let pve = root.join("etc/pve");
    // Directories where files should be: unreadable even for root.
    let t3 = tasks(&root).join("0/UPID:pve1:0002A0B1:008E1F02:674FA990:vzdump::root@pam:");
    std::fs::remove_file(&t3).unwrap();
    std::fs::create_dir(&t3).unwrap();
    std::fs::remove_file(pve.join("jobs.cfg")).unwrap();
    std::fs::create_dir(pve.join("jobs.cfg")).unwrap();
    let mut c = collector(&root);
    let (series, result) = collect(&mut c);
    let error = result.unwrap_err();
    // The first problem in full (T3's log), the others counted.
    assert!(error.contains(&format!("{}: Is a directory", t3.display())), "{error}");
    assert!(error.contains("more problems"), "{error}");
    // Without T3's log: 200's last success is T1's (index.1: end 674E5A42, 00:04:00), 101 and
    // 102 keep what other tasks say; coverage is unknown, so absent, not 0.
    for (name, _, _) in &series {
        assert_ne!(name, COVERED);
    }
    let id = [("container_id", "200")];
    assert_eq!(value(&series, SUCCESS, &id), Some(1_733_188_162.0));
    assert_eq!(value(&series, DURATION, &id), Some(240.0));
    assert_eq!(value(&series, ATTEMPT, &id), Some(T4_END));
    assert_eq!(value(&series, SUCCESS, &[("container_id", "101")]), Some(T5_END));
    // jobs.cfg stays unreadable: named on every collection; the task log was read once.
    let (_, result) = collect(&mut c);
    let error = result.unwrap_err();
    assert!(error.contains(&pve.join("jobs.cfg").display().to_string()), "{error}");
    // An unreadable index.1 at start: named; index itself still read.
    let (_dir, root) = copy();
    let rotated = tasks(&root).join("index.1");
    std::fs::remove_file(&rotated).unwrap();
    std::fs::create_dir(&rotated).unwrap();
    let (series, result) = collect(&mut collector(&root));
    let error = result.unwrap_err();
    assert!(
        error.contains(&format!("{}: Is a directory", rotated.display())),
        "{error}"
    );
    // 102's success was in index.1 (T2): absent now; its failed attempt (T5) is in index.
    let id = [("container_id", "102")];
    assert_eq!(value(&series, SUCCESS, &id), None);
    assert_eq!(value(&series, ATTEMPT, &id), Some(T5_END));
}

/// The `guests` collection at 1000 guests against `backup` in steady state (the archive
/// unchanged: one stat of each file it follows; the guest configs are the scan `guests` made
/// in the same collection), in CPU µs.
#[test]
#[ignore]
fn steady_state_cost_against_guests_at_1000_guests() {
    let guests = synthetic_guest_count();
    let dir = tempfile::tempdir().unwrap();
    let host = synthetic::generate(dir.path(), &synthetic::Spec::new(guests)).unwrap();
    let env = host.environment();
    let archive = std::fs::metadata(dir.path().join("var/log/pve/tasks/index"))
        .unwrap()
        .len();
    assert!((40_000..=50_000).contains(&archive), "index of {archive} bytes");
    let mut g = metrics_exporter::collectors::proxmox::create("guests", &env).unwrap();
    let mut b = BackupCollector::new(&env);
    let cpu = common::thread_cpu_micros;
    let first = cpu();
    b.collect(&mut SnapshotBuilder::new()).unwrap();
    let first = cpu() - first;
    g.collect(&mut SnapshotBuilder::new()).unwrap();
    let (mut best_g, mut best_b, mut mean_g, mut mean_b) = (f64::MAX, f64::MAX, 0.0, 0.0);
    let rounds = 32;
    for _ in 0..rounds {
        let t = cpu();
        g.collect(&mut SnapshotBuilder::new()).unwrap();
        let guests_cpu = cpu() - t;
        let t = cpu();
        let mut out = SnapshotBuilder::new();
        b.collect(&mut out).unwrap();
        let backup_cpu = cpu() - t;
        assert!(out.series_count() >= 4 * guests, "{} series", out.series_count());
        best_g = f64::min(best_g, guests_cpu);
        best_b = f64::min(best_b, backup_cpu);
        mean_g += guests_cpu / rounds as f64;
        mean_b += backup_cpu / rounds as f64;
    }
    let read = b.bytes_read();
    b.collect(&mut SnapshotBuilder::new()).unwrap();
    assert_eq!(b.bytes_read(), read, "steady state reads no archive byte");
    eprintln!(
        "{guests} guests, index {archive} bytes, {} task logs: backup first collection {first:.0} µs; steady state backup {best_b:.0} µs (mean {mean_b:.0}) vs guests {best_g:.0} µs (mean {mean_g:.0}): {:.2}% (mean {:.2}%)",
        b.logs_parsed(),
        100.0 * best_b / best_g,
        100.0 * mean_b / mean_g
    );
    assert!(mean_b <= 0.05 * mean_g, "backup costs more than 5% of guests");
}
