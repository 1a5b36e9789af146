//! `container_processes` follows processes that start, exit or move anywhere in a guest's
//! subtree at the next collection, with `cgroup.stat` as Linux 6.8 prints it (Proxmox VE 8:
//! `nr_descendants` only, so a change of an inner cgroup's controllers is invisible there) and
//! as 6.11+ prints it. Over a synthetic host whose files the tests change as the kernel would.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use metrics_exporter::collectors::Collector;
use metrics_exporter::collectors::proxmox::synthetic::{self, CgroupStatFormat, SyntheticHost};
use metrics_exporter::collectors::proxmox::{self};
use metrics_exporter::model::{SnapshotBuilder, Value};

/// `container_processes` of the one guest after a collection.
fn processes(collector: &mut dyn Collector, vmid: u32) -> f64 {
    let mut out = SnapshotBuilder::new();
    collector.collect(&mut out).expect("collection");
    let snap = out.finish(Arc::default(), SystemTime::now(), 1);
    let family = snap.family("container_processes").expect("container_processes");
    let id = family.desc.labels.iter().position(|l| *l == "container_id").unwrap();
    let values: Vec<f64> = family
        .samples
        .iter()
        .filter(|s| *s.labels[id] == *vmid.to_string())
        .map(|s| match s.value {
            Value::Number(n) => n,
            Value::Histogram(_) => panic!("histogram"),
        })
        .collect();
    assert_eq!(values.len(), 1, "{values:?}");
    values[0]
}

fn host(dir: &Path, format: CgroupStatFormat) -> SyntheticHost {
    let mut spec = synthetic::Spec::new(1);
    spec.cgroup_stat = format;
    let host = synthetic::generate(dir, &spec).unwrap();
    assert_eq!(host.guests[0].kind.as_str(), "lxc");
    host
}

fn append(path: &Path, pid: u32) {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(&format!("{pid}\n"));
    std::fs::write(path, text).unwrap();
}

fn remove(path: &Path, pid: u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| *l != pid.to_string())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, text, "{pid} was not in {}", path.display());
    std::fs::write(path, kept).unwrap();
}

/// The first PID of a `cgroup.procs`.
fn first_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A process forked in a service, one exiting, one moving between two services: each seen at
/// the next collection, in both formats.
#[test]
fn processes_starting_exiting_and_moving_between_leaves_are_counted_at_the_next_collection() {
    for format in [CgroupStatFormat::Linux6_8, CgroupStatFormat::Linux6_11] {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path(), format);
        let g = &host.guests[0];
        let system = host.cgroup_dir(g.kind, g.vmid).join("ns/system.slice");
        let mut c = proxmox::create("guests", &host.environment()).unwrap();
        let before = processes(c.as_mut(), g.vmid);
        assert_eq!(before, g.processes as f64);

        let cron = system.join("cron.service/cgroup.procs");
        append(&cron, 90_001);
        assert_eq!(processes(c.as_mut(), g.vmid), before + 1.0, "{format:?}: fork in cron");
        remove(&cron, 90_001);
        assert_eq!(processes(c.as_mut(), g.vmid), before, "{format:?}: exit in cron");

        let ssh = system.join("ssh.service/cgroup.procs");
        let pid = first_pid(&ssh);
        remove(&ssh, pid);
        append(&cron, pid);
        assert_eq!(processes(c.as_mut(), g.vmid), before, "{format:?}: moved, not doubled");
        remove(&cron, pid);
        assert_eq!(
            processes(c.as_mut(), g.vmid),
            before - 1.0,
            "{format:?}: exit after move"
        );
    }
}

/// systemd (or an admin) disables the controllers of `system.slice`, and a process moves
/// into it. On 6.8 no count of `cgroup.stat` changes: the process must still be counted at
/// the next collection. (Before, the 6.8 case walked the subtree only every sixteenth
/// collection and missed it until then.)
#[test]
fn a_process_moved_into_an_inner_cgroup_is_counted_at_the_next_collection_on_6_8() {
    let dir = tempfile::tempdir().unwrap();
    let host = host(dir.path(), CgroupStatFormat::Linux6_8);
    let g = &host.guests[0];
    let guest = host.cgroup_dir(g.kind, g.vmid);
    let system = guest.join("ns/system.slice");
    let stat = std::fs::read_to_string(guest.join("cgroup.stat")).unwrap();
    assert!(!stat.contains("nr_subsys_"), "{stat}");
    let mut c = proxmox::create("guests", &host.environment()).unwrap();
    let before = processes(c.as_mut(), g.vmid);
    // A few collections, so that nothing is still due from the start.
    for _ in 0..3 {
        assert_eq!(processes(c.as_mut(), g.vmid), before);
    }

    std::fs::write(system.join("cgroup.subtree_control"), "").unwrap();
    let ssh = system.join("ssh.service/cgroup.procs");
    let pid = first_pid(&ssh);
    remove(&ssh, pid);
    append(&system.join("cgroup.procs"), pid);
    append(&system.join("cgroup.procs"), 90_002);
    assert_eq!(std::fs::read_to_string(guest.join("cgroup.stat")).unwrap(), stat);
    assert_eq!(processes(c.as_mut(), g.vmid), before + 1.0);
    // And `ns`, two levels up, likewise.
    std::fs::write(guest.join("ns/cgroup.subtree_control"), "").unwrap();
    append(&guest.join("ns/cgroup.procs"), 90_003);
    assert_eq!(processes(c.as_mut(), g.vmid), before + 2.0);
}

/// A new cgroup (a service started) with a process in it: `nr_descendants` changes in both
/// formats and the subtree is walked again at the next collection; the process is counted.
/// When it goes (stopped), its cgroup's removal is seen and the count drops.
#[test]
fn a_process_in_a_new_cgroup_is_counted_at_the_next_collection() {
    for format in [CgroupStatFormat::Linux6_8, CgroupStatFormat::Linux6_11] {
        let dir = tempfile::tempdir().unwrap();
        let host = host(dir.path(), format);
        let g = &host.guests[0];
        let guest = host.cgroup_dir(g.kind, g.vmid);
        let mut c = proxmox::create("guests", &host.environment()).unwrap();
        let before = processes(c.as_mut(), g.vmid);

        // What the kernel changes: a directory, and the counts of every ancestor's cgroup.stat
        // (only the guest cgroup's is read).
        let unit = guest.join("ns/system.slice/nginx.service");
        std::fs::create_dir(&unit).unwrap();
        std::fs::write(unit.join("cgroup.procs"), "90004\n90005\n").unwrap();
        let bump = |delta: i64| {
            let path = guest.join("cgroup.stat");
            let text = std::fs::read_to_string(&path).unwrap();
            let changed: String = text
                .lines()
                .map(|line| match line.split_once(' ') {
                    Some((
                        key @ ("nr_descendants" | "nr_subsys_memory" | "nr_subsys_pids" | "nr_subsys_perf_event"),
                        v,
                    )) => {
                        format!("{key} {}\n", v.parse::<i64>().unwrap() + delta)
                    }
                    _ => format!("{line}\n"),
                })
                .collect();
            std::fs::write(path, changed).unwrap();
        };
        bump(1);
        assert_eq!(processes(c.as_mut(), g.vmid), before + 2.0, "{format:?}: new service");
        std::fs::remove_dir_all(&unit).unwrap();
        bump(-1);
        assert_eq!(processes(c.as_mut(), g.vmid), before, "{format:?}: service gone");
    }
}
